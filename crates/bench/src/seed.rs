//! The seed's GitHub request pattern, computed from `upstream-behaviour.md` §3 and §7.
//!
//! Listing: one throw-away `GET …/runners?per_page=100` to read `Link rel="last"`, then pages
//! `1..=last` (`last` = max(1, ⌈N/100⌉)), none conditional. Every pass also fetches one remove
//! token (issue 6: "whatever the state"); a pass that creates runners fetches one registration
//! token as well. Health is `ps aux` exec'd in each of the N instances (LXD, not GitHub).

/// Pages of 100 for `n` runners (at least one page, even when empty).
pub fn pages(n: usize) -> u64 {
    n.div_ceil(100).max(1) as u64
}

/// The seed's list GETs for `n` runners: the throw-away call plus every page.
pub fn list_gets(n: usize) -> u64 {
    1 + pages(n)
}

/// The seed's GitHub requests in one idle pass: list GETs + 1 remove-token POST.
pub fn idle_requests(n: usize) -> u64 {
    list_gets(n) + 1
}

/// The seed sends no conditional requests: every request costs one point.
pub fn idle_rate_cost(n: usize) -> u64 {
    idle_requests(n)
}

/// Content-creating POSTs (secondary limit) of one idle seed pass.
pub fn idle_content_creating() -> u64 {
    1
}

/// The seed scaling `from` → `to` runners in one pass: list + registration and remove tokens.
pub fn scale_requests(from: usize) -> u64 {
    list_gets(from) + 2
}

/// Our target for an idle pass: ⌈N/100⌉ requests (at least one), all `304`, so 0 points.
pub fn target_idle_requests(n: usize) -> u64 {
    pages(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_formulas() {
        assert_eq!([list_gets(0), list_gets(10), list_gets(100)], [2, 2, 2]);
        assert_eq!([list_gets(101), list_gets(1000)], [3, 11]);
        assert_eq!(
            [idle_requests(10), idle_requests(100), idle_requests(1000)],
            [3, 3, 12]
        );
        assert_eq!(idle_rate_cost(1000), 12);
        assert_eq!(scale_requests(0), 4);
        assert_eq!(
            [target_idle_requests(10), target_idle_requests(1000)],
            [1, 10]
        );
    }
}
