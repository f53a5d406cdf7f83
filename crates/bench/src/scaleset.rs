//! The scale-set benchmark on REAL Incus (`scaleset`): the helpers of the binary.
//!
//! - [`scaleset_pool`] / [`rest_jit_pool`]: the `[[pools]]` table (and `[server]`) of the real
//!   daemon in each mode: a scale-set pool, or a webhook-driven pool with REST JIT
//!   registrations (paced under GitHub's 80 content-creating requests a minute).
//! - [`RequestSplit`]: the simulator's request counts split into REST (GitHub's API: what the
//!   rate limits count), the scale-set admin API and the message queue.

use std::collections::BTreeMap;
use std::path::Path;

use github_sim::RequestCount;

use crate::burst::{pool_table, server_section};
use crate::outside::is_content_creating;

/// A scale-set pool `ss` (`min_idle = 0`, `max`), the listener's test-friendly backoffs and a
/// `[server]` with a backstop pass every `interval_seconds`.
pub fn scaleset_pool(max: u32, port: u16, dir: &Path, interval_seconds: u64) -> String {
    [
        pool_table("ss", "jit", max, "scaling = \"scaleset\"\n"),
        r#"
[scaleset]
standby_backoff_min_ms = 500
standby_backoff_max_ms = 5000
error_backoff_min_ms = 500
error_backoff_max_ms = 5000
poll_timeout_seconds = 120
"#
        .to_owned(),
        server_section(port, dir, interval_seconds),
    ]
    .concat()
}

/// A webhook-driven pool `restjit` with REST JIT registrations (`min_idle = 0`, `max`).
pub fn rest_jit_pool(max: u32, port: u16, dir: &Path, interval_seconds: u64) -> String {
    pool_table("restjit", "jit", max, "") + &server_section(port, dir, interval_seconds)
}

/// Requests by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSplit {
    /// GitHub's REST API (what its rate limits count), 304s excluded.
    pub rest: u64,
    /// Of the REST GETs: conditional ones answered 304 (free).
    pub rest_not_modified: u64,
    /// REST `POST`s GitHub's secondary limit counts (tokens, REST JIT configs).
    pub rest_content_creating: u64,
    /// The scale-set admin API (`/tenant/.../_apis/...` except the queue) and the bootstrap.
    pub admin: u64,
    /// Message-queue polls and acks.
    pub queue: u64,
}

impl RequestSplit {
    /// Splits the sim's counts (`"METHOD /path"` keys); the runner side and downloads are not
    /// the manager's.
    pub fn from_counts(counts: &BTreeMap<String, RequestCount>) -> Self {
        let mut split = Self::default();
        for (key, c) in counts {
            let (method, path) = key.split_once(' ').unwrap_or(("", key));
            if path.starts_with("/_runner/")
                || path.starts_with("/_sim")
                || path.contains("/releases/download/")
            {
                continue;
            }
            if path.contains("/message") {
                split.queue += c.count;
            } else if path.starts_with("/tenant/") || path.ends_with("/runner-registration") {
                split.admin += c.count;
            } else {
                split.rest += c.count - c.not_modified.min(c.count);
                split.rest_not_modified += c.not_modified;
                if is_content_creating(method, path) {
                    split.rest_content_creating += c.count;
                }
            }
        }
        split
    }

    /// Per hour, from a window of `seconds`.
    pub fn per_hour(&self, seconds: f64) -> [f64; 5] {
        let scale = 3600.0 / seconds.max(1e-9);
        [
            self.rest as f64 * scale,
            self.rest_not_modified as f64 * scale,
            self.rest_content_creating as f64 * scale,
            self.admin as f64 * scale,
            self.queue as f64 * scale,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_split_by_kind() {
        let count = |count, not_modified| RequestCount {
            count,
            not_modified,
            ..RequestCount::default()
        };
        let counts = BTreeMap::from([
            ("GET /repos/o/r/actions/runners".to_owned(), count(10, 8)),
            (
                "POST /repos/o/r/actions/runners/generate-jitconfig".to_owned(),
                count(3, 0),
            ),
            (
                "GET /tenant/1/_apis/runtime/runnerscalesets/1/message".to_owned(),
                count(7, 0),
            ),
            (
                "POST /tenant/1/_apis/runtime/runnerscalesets/1/generatejitconfig".to_owned(),
                count(4, 0),
            ),
            ("POST /_runner/poll".to_owned(), count(100, 0)),
        ]);
        let split = RequestSplit::from_counts(&counts);
        assert_eq!(
            split,
            RequestSplit {
                rest: 5,
                rest_not_modified: 8,
                rest_content_creating: 3,
                admin: 4,
                queue: 7,
            }
        );
        assert_eq!(split.per_hour(3600.0)[0], 5.0);
    }
}
