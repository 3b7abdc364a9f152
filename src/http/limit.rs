//! Per-source rate limits (`rate_limit = N` in a source): a token bucket
//! per source holding up to N deliveries, refilled at N per second.
//! Deliveries beyond it are answered `429` with `Retry-After`, before any
//! body is read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::Source;

pub struct RateLimits {
    buckets: HashMap<String, Mutex<Bucket>>,
}

struct Bucket {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimits {
    pub fn new<'a>(sources: impl IntoIterator<Item = &'a Source>) -> Self {
        let buckets = sources
            .into_iter()
            .filter_map(|source| {
                let per_second = f64::from(source.rate_limit?);
                let bucket = Bucket {
                    per_second,
                    tokens: per_second,
                    refilled: Instant::now(),
                };
                Some((source.name().to_owned(), Mutex::new(bucket)))
            })
            .collect();
        Self { buckets }
    }

    /// Takes one delivery from the source's allowance; `false` when none is
    /// left. A source without a limit always has one.
    pub fn take(&self, source: &str) -> bool {
        self.take_at(source, Instant::now())
    }

    fn take_at(&self, source: &str, now: Instant) -> bool {
        let Some(bucket) = self.buckets.get(source) else {
            return true;
        };
        let mut bucket = bucket.lock().expect("a rate limit lock");
        let refill = now.saturating_duration_since(bucket.refilled).as_secs_f64() * bucket.per_second;
        bucket.tokens = (bucket.tokens + refill).min(bucket.per_second);
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            return false;
        }
        bucket.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    #[test]
    fn a_limited_source_gets_its_burst_then_its_rate_and_others_are_free() {
        let text = r#"
listen = "127.0.0.1:0"
store = "sqlite://unused.db"
admin_token = "admin"

[[sources]]
name = "limited"
kind = "treez"
tokens = ["t"]
rate_limit = 3

[[sources]]
name = "free"
kind = "vagaro"
tokens = ["t"]
"#;
        let config = Config::from_toml("test", text, std::iter::empty()).unwrap();
        let limits = RateLimits::new(&config.sources);
        let start = limits.buckets["limited"].lock().unwrap().refilled;
        let taken = (0..10).filter(|_| limits.take_at("limited", start)).count();
        assert_eq!(taken, 3, "the burst");
        let third = start + Duration::from_millis(334);
        assert!(limits.take_at("limited", third), "one more a third of a second later");
        assert!(!limits.take_at("limited", third));
        let later = third + Duration::from_secs(60);
        assert_eq!(
            (0..10).filter(|_| limits.take_at("limited", later)).count(),
            3,
            "never more than the burst"
        );
        assert!((0..100).all(|_| limits.take("free")));
    }
}
