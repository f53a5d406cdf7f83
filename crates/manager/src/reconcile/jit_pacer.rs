//! JIT registrations paced under GitHub's secondary rate limit, and when the rest may go.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// JIT registrations sent per rolling minute. GitHub's secondary limit is 80 content-creating
/// requests per minute; the rest of the shortfall waits for a later pass instead of being
/// refused (and counted as abuse).
pub const JIT_PER_MINUTE: usize = 70;

/// The rolling window [`JIT_PER_MINUTE`] counts in.
const WINDOW: Duration = Duration::from_secs(60);

/// When each recent `generate-jitconfig` was sent.
#[derive(Debug, Default)]
pub(super) struct JitPacer {
    sent: VecDeque<Instant>,
}

/// What [`JitPacer::admit`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pacing {
    /// Registrations that may be sent now (counted as sent).
    pub admitted: usize,
    /// When some had to wait: how long until the window frees a slot.
    pub wait: Option<Duration>,
}

impl JitPacer {
    /// Admits up to `planned` registrations at `now` and counts them as sent.
    pub(super) fn admit(&mut self, planned: usize, now: Instant) -> Pacing {
        while self
            .sent
            .front()
            .is_some_and(|sent| now.saturating_duration_since(*sent) >= WINDOW)
        {
            self.sent.pop_front();
        }
        let budget = JIT_PER_MINUTE.saturating_sub(self.sent.len());
        let admitted = planned.min(budget);
        if admitted < planned {
            tracing::info!(
                message = "Pacing JIT registrations; the rest waits for the next pass.",
                planned,
                budget
            );
        }
        self.sent.extend(std::iter::repeat_n(now, admitted));
        let wait = (admitted < planned).then(|| {
            let oldest = self.sent.front().copied().unwrap_or(now);
            (oldest + WINDOW).saturating_duration_since(now)
        });
        Pacing { admitted, wait }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_budget_and_says_when_the_window_frees() {
        let t0 = Instant::now();
        let mut pacer = JitPacer::default();
        assert_eq!(
            pacer.admit(50, t0),
            Pacing {
                admitted: 50,
                wait: None
            }
        );
        let t1 = t0 + Duration::from_secs(20);
        // 20 left in the window; the other 30 wait until the first 50 leave it, 40 s later.
        assert_eq!(
            pacer.admit(50, t1),
            Pacing {
                admitted: 20,
                wait: Some(Duration::from_secs(40))
            }
        );
        assert_eq!(
            pacer.admit(1, t1 + Duration::from_secs(10)),
            Pacing {
                admitted: 0,
                wait: Some(Duration::from_secs(30))
            }
        );
        // Once the first 50 are out of the window, 50 more go.
        assert_eq!(
            pacer.admit(50, t0 + WINDOW),
            Pacing {
                admitted: 50,
                wait: None
            }
        );
        assert_eq!(pacer.admit(0, t0 + WINDOW).wait, None);
    }
}
