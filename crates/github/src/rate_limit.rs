//! Reading `x-ratelimit-*` / `retry-after` and deciding how long GitHub wants us to wait.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use time::OffsetDateTime;

use crate::types::RateLimit;

/// Parses the `x-ratelimit-*` headers; `None` unless limit, remaining and reset are all present.
pub(crate) fn parse_budget(headers: &HeaderMap) -> Option<RateLimit> {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    let limit = num("x-ratelimit-limit")?;
    let remaining = num("x-ratelimit-remaining")?;
    let reset = num("x-ratelimit-reset")?;
    let reset = OffsetDateTime::from_unix_timestamp(i64::try_from(reset).ok()?).ok()?;
    let used = num("x-ratelimit-used").unwrap_or(limit.saturating_sub(remaining));
    let resource = headers
        .get("x-ratelimit-resource")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("core")
        .to_owned();
    Some(RateLimit {
        limit,
        remaining,
        used,
        reset,
        resource,
    })
}

/// `retry-after` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(raw).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a response is GitHub's primary or secondary rate limiting (403 or 429).
pub(crate) fn is_rate_limited(status: StatusCode, headers: &HeaderMap, message: &str) -> bool {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return true;
    }
    if status != StatusCode::FORBIDDEN {
        return false;
    }
    let remaining_zero = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    remaining_zero
        || headers.contains_key(reqwest::header::RETRY_AFTER)
        || message.to_ascii_lowercase().contains("rate limit")
}

/// GitHub's rule: `retry-after` if present; else until reset if remaining is 0;
/// else at least 60 s, doubling for each consecutive secondary limit (`attempt` from 0).
pub(crate) fn wait_for(headers: &HeaderMap, now: SystemTime, attempt: u32) -> Duration {
    if let Some(wait) = parse_retry_after(headers, now) {
        return wait;
    }
    if let Some(budget) = parse_budget(headers) {
        if budget.remaining == 0 {
            return until_reset(&budget, now) + Duration::from_secs(1);
        }
    }
    Duration::from_secs(60).saturating_mul(1u32 << attempt.min(6))
}

/// Time left until the budget resets (zero if already past).
pub(crate) fn until_reset(budget: &RateLimit, now: SystemTime) -> Duration {
    let reset: SystemTime = budget.reset.into();
    reset.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    #[test]
    fn budget_parses() {
        let h = headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4990"),
            ("x-ratelimit-used", "10"),
            ("x-ratelimit-reset", "1000600"),
            ("x-ratelimit-resource", "core"),
        ]);
        let b = parse_budget(&h).expect("complete");
        assert_eq!((b.limit, b.remaining, b.used), (5000, 4990, 10));
        assert_eq!(until_reset(&b, now()), Duration::from_secs(600));
        assert!(parse_budget(&headers(&[("x-ratelimit-limit", "1")])).is_none());
    }

    #[test]
    fn waits_follow_github_rules() {
        let retry = headers(&[
            ("retry-after", "17"),
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-limit", "1"),
            ("x-ratelimit-reset", "1000600"),
        ]);
        assert_eq!(wait_for(&retry, now(), 0), Duration::from_secs(17));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(30));
        assert_eq!(
            wait_for(&headers(&[("retry-after", &date)]), now(), 0),
            Duration::from_secs(30)
        );
        let primary = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-reset", "1000600"),
        ]);
        assert_eq!(wait_for(&primary, now(), 3), Duration::from_secs(601));
        let secondary = headers(&[
            ("x-ratelimit-remaining", "12"),
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-reset", "1000600"),
        ]);
        assert_eq!(wait_for(&secondary, now(), 0), Duration::from_secs(60));
        assert_eq!(wait_for(&secondary, now(), 2), Duration::from_secs(240));
    }

    #[test]
    fn detection() {
        let none = HeaderMap::new();
        assert!(is_rate_limited(StatusCode::TOO_MANY_REQUESTS, &none, ""));
        assert!(is_rate_limited(
            StatusCode::FORBIDDEN,
            &none,
            "You have exceeded a secondary rate limit"
        ));
        assert!(is_rate_limited(
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "0")]),
            "x"
        ));
        assert!(!is_rate_limited(
            StatusCode::FORBIDDEN,
            &headers(&[("x-ratelimit-remaining", "10")]),
            "Resource not accessible by integration"
        ));
        assert!(!is_rate_limited(
            StatusCode::NOT_FOUND,
            &headers(&[("retry-after", "1")]),
            ""
        ));
    }
}
