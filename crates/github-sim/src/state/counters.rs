//! Per-endpoint request counters and the cached list answers of the REST surface.

use super::*;

/// Per-endpoint request counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// Requests received.
    pub count: u64,
    /// Primary rate-limit points charged.
    pub rate_limit_cost: u64,
    /// `304 Not Modified` answers (free).
    pub not_modified: u64,
}

impl State {
    /// A cached list answer for `key`, if caching is on and it is fresh.
    pub(crate) fn cached_list(&mut self, key: &str) -> Option<Value> {
        let ttl = self.config.list_cache;
        if ttl.is_zero() {
            return None;
        }
        let now = self.clock.now();
        self.list_cache
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        self.list_cache.get(key).map(|(_, body)| body.clone())
    }

    pub(crate) fn cache_list(&mut self, key: String, body: Value) {
        if !self.config.list_cache.is_zero() {
            let now = self.clock.now();
            self.list_cache.insert(key, (now, body));
        }
    }

    pub(crate) fn count_request(&mut self, key: &str) {
        self.counters.entry(key.to_owned()).or_default().count += 1;
    }

    pub(crate) fn count_result(&mut self, key: &str, cost: u64, not_modified: bool) {
        let entry = self.counters.entry(key.to_owned()).or_default();
        entry.rate_limit_cost += cost;
        if not_modified {
            entry.not_modified += 1;
        }
    }

    pub(crate) fn counters(&self) -> BTreeMap<String, RequestCount> {
        self.counters.clone()
    }

    pub(crate) fn reset_counters(&mut self) {
        self.counters.clear();
    }
}
