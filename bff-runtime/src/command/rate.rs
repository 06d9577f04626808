//! Per-user command rate limits, per pod: a token bucket for each user (the token's
//! `sub`; anonymous callers share one), refilled at `commandsPerUserPerMinute` and
//! holding at most `commandBurst`. A command past it is refused before anything is
//! looked up or produced, with the time until the next token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Users tracked at once before full buckets (users idle long enough to have
/// every token back) are forgotten: their state is the same as a new user's.
const TRACKED: usize = 100_000;

pub struct RateLimits {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        RateLimits {
            per_second: f64::from(per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token of `user`'s bucket, or says how long until there is one.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= TRACKED && !buckets.contains_key(user) {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
        }
        let bucket = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            return Ok(());
        }
        *bucket = Bucket { tokens, at: now };
        Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_user() {
        let limits = RateLimits::new(60, 3); // a token a second, three at most
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limits.take("alice", start), Ok(()));
        }
        let wait = limits.take("alice", start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(limits.take("bob", start), Ok(()), "each user has a bucket");
        let later = start + Duration::from_millis(1500);
        assert_eq!(limits.take("alice", later), Ok(()));
        let wait = limits.take("alice", later).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limits.take("alice", much_later), Ok(()));
        }
        assert!(
            limits.take("alice", much_later).is_err(),
            "never more than the burst"
        );
    }
}
