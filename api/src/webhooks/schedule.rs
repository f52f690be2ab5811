//! When to try a failed delivery again: at 0, 5 s, 5 min, 30 min, 2 h,
//! 5 h, 10 h and 10 h after the previous attempt, each with up to ±10 %
//! jitter so that many deliveries failing together do not retry together.
//! A `Retry-After` from a 429 or 503 moves the next attempt later, never
//! earlier. Pure functions of their inputs, so tests control the clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Delays before attempts 2, 3, ... (attempt 1 is immediate).
pub const DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];
/// Attempts in all.
pub const MAX_ATTEMPTS: i32 = DELAYS.len() as i32 + 1;
/// A `Retry-After` longer than this is not honoured beyond it.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// An endpoint failing this long without a success is disabled.
pub const DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

/// The time of the next attempt after `attempts` failed ones, or `None`
/// when none is left. `jitter` is in [-1, 1]; `scale` shrinks the schedule
/// (1.0 in production; tests run it faster).
pub fn next_attempt(
    attempts: i32,
    now: DateTime<Utc>,
    retry_after: Option<Duration>,
    jitter: f64,
    scale: f64,
) -> Option<DateTime<Utc>> {
    if !(1..MAX_ATTEMPTS).contains(&attempts) {
        return None;
    }
    let base = DELAYS[(attempts - 1) as usize].as_secs_f64() * scale;
    let mut delay = base * (1.0 + 0.1 * jitter.clamp(-1.0, 1.0));
    if let Some(after) = retry_after {
        delay = delay.max(after.min(MAX_RETRY_AFTER).as_secs_f64());
    }
    Some(now + chrono::Duration::milliseconds((delay * 1000.0) as i64))
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    (date - now).to_std().ok()
}

/// A jitter in [-1, 1] from the kernel's randomness.
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    crate::random::fill(&mut bytes);
    (u32::from_le_bytes(bytes) as f64 / u32::MAX as f64) * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn follows_the_schedule_within_jitter() {
        let expected = [5, 300, 1800, 7200, 18000, 36000, 36000];
        for (i, seconds) in expected.iter().enumerate() {
            let attempts = i as i32 + 1;
            let exact = next_attempt(attempts, t0(), None, 0.0, 1.0).unwrap();
            assert_eq!((exact - t0()).num_seconds(), *seconds);
            let early = next_attempt(attempts, t0(), None, -1.0, 1.0).unwrap();
            let late = next_attempt(attempts, t0(), None, 1.0, 1.0).unwrap();
            let ms = |t: DateTime<Utc>| (t - t0()).num_milliseconds() as f64;
            assert!((ms(early) - 900.0 * *seconds as f64).abs() < 1.0);
            assert!((ms(late) - 1100.0 * *seconds as f64).abs() < 1.0);
        }
        assert_eq!(next_attempt(MAX_ATTEMPTS, t0(), None, 0.0, 1.0), None);
        assert_eq!(MAX_ATTEMPTS, 8);
    }

    #[test]
    fn retry_after_only_delays() {
        let later = next_attempt(1, t0(), Some(Duration::from_secs(120)), 0.0, 1.0).unwrap();
        assert_eq!((later - t0()).num_seconds(), 120);
        let sooner = next_attempt(2, t0(), Some(Duration::from_secs(1)), 0.0, 1.0).unwrap();
        assert_eq!((sooner - t0()).num_seconds(), 300);
        assert_eq!(parse_retry_after("30", t0()), Some(Duration::from_secs(30)));
        let date = (t0() + chrono::Duration::seconds(90)).to_rfc2822();
        assert_eq!(
            parse_retry_after(&date, t0()),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after("soon", t0()), None);
    }
}
