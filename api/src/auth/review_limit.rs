//! A brake in front of TokenReview: an `/agent/v1` bearer token that the
//! shared secret does not explain costs one call to the Kubernetes API
//! server, so anyone who can reach the API could make it hammer the API
//! server with garbage tokens. Tokens that passed a review recently go
//! through at once; unknown ones are limited per client address and
//! overall; tokens refused recently are refused again without a review.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Reviews of unknown tokens one client address may cause: a burst, then
/// one per second. An agent needs one review per token rotation; a node
/// (one address) may hold a few agents' worth of pods restarting at once.
const PER_CLIENT_BURST: f64 = 20.0;
const PER_CLIENT_PER_SECOND: f64 = 1.0;
/// Reviews of unknown tokens all clients together may cause.
const OVERALL_BURST: f64 = 50.0;
const OVERALL_PER_SECOND: f64 = 20.0;
/// How long a reviewed token passes without the limiter, and how long a
/// refused one is refused without a review.
const REMEMBER_ACCEPTED: Duration = Duration::from_secs(300);
const REMEMBER_REFUSED: Duration = Duration::from_secs(60);
/// Bounds the memory an attacker can make this use.
const MAX_ENTRIES: usize = 10_000;

/// What to do with a token the shared secret does not explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Reviewed and accepted recently: review (the review cache answers).
    Known,
    /// Unknown, within the limits: review it.
    Review,
    /// Refused by a review moments ago: refuse without asking again.
    RecentlyRefused,
    /// Too many unknown tokens: refuse without a review.
    Limited,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, burst: f64, per_second: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type TokenHash = [u8; 32];

struct Inner {
    accepted: HashMap<TokenHash, Instant>,
    refused: HashMap<TokenHash, Instant>,
    clients: HashMap<IpAddr, Bucket>,
    overall: Bucket,
}

pub struct ReviewLimiter {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReviewLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The counts only: the keys are token hashes and client addresses.
        let mut out = f.debug_struct("ReviewLimiter");
        if let Ok(inner) = self.inner.lock() {
            out.field("accepted", &inner.accepted.len())
                .field("refused", &inner.refused.len())
                .field("clients", &inner.clients.len());
        }
        out.finish_non_exhaustive()
    }
}

impl Default for ReviewLimiter {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                accepted: HashMap::new(),
                refused: HashMap::new(),
                clients: HashMap::new(),
                overall: Bucket::full(OVERALL_BURST, Instant::now()),
            }),
        }
    }
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

impl ReviewLimiter {
    /// Decides before a review; `client` is the peer address when known.
    pub fn check(&self, client: Option<IpAddr>, token: &str) -> Decision {
        self.check_at(client, token, Instant::now())
    }

    fn check_at(&self, client: Option<IpAddr>, token: &str, now: Instant) -> Decision {
        let key = hash(token);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.accepted.get(&key).is_some_and(|until| *until > now) {
            return Decision::Known;
        }
        if inner.refused.get(&key).is_some_and(|until| *until > now) {
            return Decision::RecentlyRefused;
        }
        if inner.clients.len() >= MAX_ENTRIES {
            // Full buckets are the same as no bucket: forget those.
            inner.clients.retain(|_, b| {
                now.saturating_duration_since(b.at).as_secs_f64() * PER_CLIENT_PER_SECOND
                    < PER_CLIENT_BURST
            });
            if inner.clients.len() >= MAX_ENTRIES {
                inner.clients.clear();
            }
        }
        if let Some(client) = client {
            let bucket = inner
                .clients
                .entry(client)
                .or_insert_with(|| Bucket::full(PER_CLIENT_BURST, now));
            if !bucket.take(PER_CLIENT_BURST, PER_CLIENT_PER_SECOND, now) {
                return Decision::Limited;
            }
        }
        if !inner.overall.take(OVERALL_BURST, OVERALL_PER_SECOND, now) {
            return Decision::Limited;
        }
        Decision::Review
    }

    /// Records a review's outcome.
    pub fn reviewed(&self, token: &str, accepted: bool) {
        let now = Instant::now();
        let key = hash(token);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, ttl) = if accepted {
            (&mut inner.accepted, REMEMBER_ACCEPTED)
        } else {
            (&mut inner.refused, REMEMBER_REFUSED)
        };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(key, now + ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_tokens_are_limited_per_client_and_known_ones_pass() {
        let limiter = ReviewLimiter::default();
        let start = Instant::now();
        let attacker: IpAddr = "10.0.0.66".parse().unwrap();
        let agent: IpAddr = "10.0.0.7".parse().unwrap();
        let reviews = (0..100)
            .filter(|i| {
                limiter.check_at(Some(attacker), &format!("garbage-{i}"), start) == Decision::Review
            })
            .count();
        assert_eq!(reviews, PER_CLIENT_BURST as usize);
        // Another client is not starved by the first.
        assert_eq!(
            limiter.check_at(Some(agent), "agent-token", start),
            Decision::Review
        );
        limiter.reviewed("agent-token", true);
        for _ in 0..100 {
            assert_eq!(
                limiter.check_at(Some(agent), "agent-token", start),
                Decision::Known
            );
        }
        limiter.reviewed("garbage-0", false);
        assert_eq!(
            limiter.check_at(Some(attacker), "garbage-0", start),
            Decision::RecentlyRefused
        );
        // The bucket refills: one more review a second later.
        let later = start + Duration::from_secs(1);
        assert_eq!(
            limiter.check_at(Some(attacker), "garbage-x", later),
            Decision::Review
        );
        assert_eq!(
            limiter.check_at(Some(attacker), "garbage-y", later),
            Decision::Limited
        );
    }

    #[test]
    fn many_addresses_meet_the_overall_limit() {
        let limiter = ReviewLimiter::default();
        let now = Instant::now();
        let reviews = (0..1000u32)
            .filter(|i| {
                let ip = IpAddr::from(i.to_be_bytes());
                limiter.check_at(Some(ip), &format!("t{i}"), now) == Decision::Review
            })
            .count();
        assert_eq!(reviews, OVERALL_BURST as usize);
    }
}
