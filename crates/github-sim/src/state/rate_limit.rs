//! Primary and secondary rate-limit buckets per identity.

use super::*;

#[derive(Debug)]
pub(super) struct Bucket {
    used: u32,
    window_start: Instant,
}

/// Rate-limit state of one identity, for the `x-ratelimit-*` headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    pub used: u32,
    pub reset: i64,
}

impl State {
    // ---------------------------------------------------------------- rate limits

    fn bucket(&mut self, identity: &str) -> &mut Bucket {
        let now = self.clock.now();
        let window = self.config.rate_limit_window;
        let bucket = self.buckets.entry(identity.to_owned()).or_insert(Bucket {
            used: 0,
            window_start: now,
        });
        if now >= bucket.window_start + window {
            bucket.used = 0;
            bucket.window_start = now;
        }
        bucket
    }

    pub(crate) fn rate_info(&mut self, identity: &str) -> RateInfo {
        let limit = self.rate_limit;
        let window = self.config.rate_limit_window;
        let clock = self.clock;
        let bucket = self.bucket(identity);
        RateInfo {
            limit,
            remaining: limit.saturating_sub(bucket.used),
            used: bucket.used,
            reset: clock.epoch_secs(bucket.window_start + window),
        }
    }

    /// Charges one point; `Err` (nothing charged) when the budget is exhausted.
    pub(crate) fn rate_charge(&mut self, identity: &str) -> Result<RateInfo, RateInfo> {
        let limit = self.rate_limit;
        let bucket = self.bucket(identity);
        if bucket.used >= limit {
            return Err(self.rate_info(identity));
        }
        bucket.used += 1;
        Ok(self.rate_info(identity))
    }

    pub(crate) fn rate_refund(&mut self, identity: &str) {
        let bucket = self.bucket(identity);
        bucket.used = bucket.used.saturating_sub(1);
    }

    /// Sets the primary budget; `used` overrides the current window's usage.
    pub(crate) fn set_rate_limit(
        &mut self,
        limit: Option<u32>,
        used: Option<u32>,
        secondary: Option<u32>,
    ) {
        if let Some(limit) = limit {
            self.rate_limit = limit;
        }
        if let Some(secondary) = secondary {
            self.secondary_limit = secondary;
        }
        if let Some(used) = used {
            let identities: Vec<String> = self.buckets.keys().cloned().collect();
            for identity in identities {
                self.bucket(&identity).used = used;
            }
            self.bucket("pat").used = used;
        }
    }

    /// Records a content-creating request; `Err(retry_after_secs)` past the per-minute limit.
    pub(crate) fn secondary_charge(&mut self, identity: &str) -> Result<(), u64> {
        let now = self.clock.now();
        let limit = self.secondary_limit as usize;
        let window = Duration::from_secs(60);
        let times = self.secondary.entry(identity.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if times.len() >= limit {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = (oldest + window).saturating_duration_since(now);
            return Err(wait.as_secs().max(1));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::state;

    #[test]
    fn budgets() {
        let mut state = state();
        state.set_rate_limit(Some(2), None, Some(1));
        assert!(state.rate_charge("pat").is_ok());
        assert_eq!(state.rate_charge("pat").map(|i| i.remaining).ok(), Some(0));
        assert!(state.rate_charge("pat").is_err());
        state.rate_refund("pat");
        assert_eq!(state.rate_info("pat").remaining, 1);
        assert_eq!(
            state.rate_info("installation:42").remaining,
            2,
            "separate buckets"
        );
        assert!(state.secondary_charge("pat").is_ok());
        let retry = state.secondary_charge("pat").expect_err("limited");
        assert!((1..=60).contains(&retry));
    }
}
