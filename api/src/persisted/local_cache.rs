//! The in-process LRU in front of the shared table: a hit costs a hash
//! map look-up under a mutex, no database round trip. A hash names one
//! text forever, so an entry never goes stale; another replica evicting
//! it from the table costs nothing here (this replica may go on serving
//! it until its own LRU drops it).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::hash::QueryHash;

/// At most this many entries, and at most `MAX_BYTES` of query text: a
/// replica's working set of a few hundred operations fits many times over,
/// and 2,000 queries of the largest stored size (64 KiB) would not fit, so
/// the bytes bound is the one that holds memory down.
const MAX_ENTRIES: usize = 2_000;
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// What an entry costs beyond its text (key, links, `Arc` header), roughly.
const ENTRY_OVERHEAD: usize = 128;

#[derive(Debug)]
pub(super) struct LocalCache {
    inner: Mutex<Inner>,
    touch_interval: Duration,
    max_bytes: usize,
}

#[derive(Debug)]
struct Inner {
    entries: LruCache<QueryHash, Entry>,
    bytes: usize,
}

#[derive(Debug)]
struct Entry {
    query: Arc<str>,
    registered: bool,
    /// When this replica last recorded a use in the table.
    touched: Instant,
}

/// A hit.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub query: Arc<str>,
    pub registered: bool,
    /// The use is due to be recorded in the table (the last record is
    /// older than the touch interval); the caller does it.
    pub touch_due: bool,
}

impl LocalCache {
    pub(super) fn new(touch_interval: Duration) -> Self {
        Self::with_bounds(touch_interval, MAX_ENTRIES, MAX_BYTES)
    }

    fn with_bounds(touch_interval: Duration, max_entries: usize, max_bytes: usize) -> Self {
        let max_entries = NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner: Mutex::new(Inner {
                entries: LruCache::new(max_entries),
                bytes: 0,
            }),
            touch_interval,
            max_bytes,
        }
    }

    /// The entry, now the most recently used; `touch_due` is set (and the
    /// entry counted as touched) at most once per touch interval.
    pub(super) fn get(&self, hash: &QueryHash) -> Option<Cached> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = inner.entries.get_mut(hash)?;
        let now = Instant::now();
        let touch_due = now.duration_since(entry.touched) >= self.touch_interval;
        if touch_due {
            entry.touched = now;
        }
        Some(Cached {
            query: entry.query.clone(),
            registered: entry.registered,
            touch_due,
        })
    }

    /// Whether `hash` is here, without making it more recent.
    pub(super) fn contains(&self, hash: &QueryHash) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.contains(hash)
    }

    /// Adds or replaces an entry whose use was just recorded in the table,
    /// then drops the least recently used ones beyond the bounds.
    pub(super) fn insert(&self, hash: QueryHash, query: Arc<str>, registered: bool) {
        let cost = cost(&query);
        if cost > self.max_bytes {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = Entry {
            query,
            registered,
            touched: Instant::now(),
        };
        inner.bytes += cost;
        // `push` returns the replaced entry, or the one evicted for room.
        if let Some((_, gone)) = inner.entries.push(hash, entry) {
            inner.bytes -= cost_of(&gone);
        }
        while inner.bytes > self.max_bytes {
            match inner.entries.pop_lru() {
                Some((_, gone)) => inner.bytes -= cost_of(&gone),
                None => break,
            }
        }
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.inner.lock().unwrap().bytes
    }
}

fn cost(query: &str) -> usize {
    query.len() + ENTRY_OVERHEAD
}

fn cost_of(entry: &Entry) -> usize {
    cost(&entry.query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: usize) -> QueryHash {
        QueryHash::of(&format!("query Q{i} {{ me {{ sub }} }}"))
    }

    #[test]
    fn the_least_recently_used_goes_first() {
        let cache = LocalCache::with_bounds(Duration::from_secs(60), 3, usize::MAX);
        for i in 0..3 {
            cache.insert(hash(i), format!("q{i}").into(), false);
        }
        assert!(cache.get(&hash(0)).is_some());
        cache.insert(hash(3), "q3".into(), false);
        assert!(cache.contains(&hash(0)), "used recently: kept");
        assert!(!cache.contains(&hash(1)), "the least recently used: gone");
        assert!(cache.contains(&hash(2)) && cache.contains(&hash(3)));
    }

    #[test]
    fn the_bytes_stay_bounded_and_accounted() {
        let max = 10 * (1_000 + ENTRY_OVERHEAD);
        let cache = LocalCache::with_bounds(Duration::from_secs(60), 1_000, max);
        for i in 0..100 {
            cache.insert(hash(i), "x".repeat(1_000).into(), false);
            assert!(cache.bytes() <= max, "{} bytes", cache.bytes());
        }
        assert_eq!(cache.bytes(), max);
        // Replacing an entry does not count it twice.
        cache.insert(hash(99), "y".repeat(1_000).into(), true);
        assert_eq!(cache.bytes(), max);
        assert!(cache.get(&hash(99)).is_some_and(|c| c.registered));
        // One larger than the whole budget is not kept at all.
        cache.insert(hash(1_000), "z".repeat(max).into(), false);
        assert!(!cache.contains(&hash(1_000)));
        assert_eq!(cache.bytes(), max);
    }

    #[test]
    fn a_use_is_due_for_recording_once_per_interval() {
        let cache = LocalCache::with_bounds(Duration::from_millis(50), 10, usize::MAX);
        cache.insert(hash(0), "q".into(), false);
        assert!(!cache.get(&hash(0)).unwrap().touch_due, "just recorded");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&hash(0)).unwrap().touch_due);
        assert!(!cache.get(&hash(0)).unwrap().touch_due, "once, not per hit");
    }
}
