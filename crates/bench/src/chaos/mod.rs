//! Reliability suite, R1 (busy runners) and R3 (GitHub faults), against github-sim with the
//! SIMULATION instance provider (`manager::sim_provider`). The checks are about the manager's
//! decisions against GitHub, so the provider may be simulated; crash and LXD checks are not here.
//!
//! - R1: a job is assigned at a random moment between observe and act (the sim's one-shot
//!   assign-on-delete hook, a job queued just before the pass, and/or a job queued from another
//!   task at a random delay into the pass); the pass scales down or runs `flush(IdleOnly)`.
//!   A *killed* job is one whose runner's instance was deleted while the job was assigned to it,
//!   or one that ended `failure`/`cancelled`.
//! - R1-lie ([`r1_busy_lie`]): R1 with the sim's busy-lie fault armed (`POST
//!   /_sim/faults/busy-lie`): GitHub reports runners that run a job as idle and lets their
//!   `DELETE` through, as operators of other managers have seen. Only a look inside the instance
//!   can then save the job; the sim counts the jobs killed by deletion.
//! - R3: fault storms on the REST endpoints the manager uses (5xx bursts, 403/429 with
//!   `retry-after`, timeouts, dropped connections) during N passes, with runners finishing jobs,
//!   busy and dying around them. Checked: no healthy or busy runner deleted, instances never above
//!   the quantity, bounded retries and `retry-after` honoured, and one pass converges afterwards.
//!
//! Every check ends with a full drain (jobs completed, `reconcile(0)`); whatever instance or
//! registration remains is a *leak*.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use github_sim::{BusyLieSpec, BusyLieStatus, FaultSpec, JobStatus, JobView, RunnerView};
use manager::sim_provider::{SimLatency, SimProvider, SimRunnerHooks};
use manager::{FlushMode, RegistrationMode};
use parking_lot::Mutex;

use crate::agents::SimAgents;
use crate::fleet::{Fleet, REPO};
use crate::outside::Outside;
use crate::tally::Tally;

mod admin;
mod agents;
mod fleet;
mod r1;
mod r3;

pub use admin::*;
pub use agents::*;
pub use fleet::*;
pub use r1::*;
pub use r3::*;

/// REST endpoint keys as the sim counts them.
pub const LIST: &str = "GET /repos/{owner}/{repo}/actions/runners";
pub const DELETE: &str = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}";
pub const REG_TOKEN: &str = "POST /repos/{owner}/{repo}/actions/runners/registration-token";
pub const JIT: &str = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig";

/// Client settings of the suite: GitHub's rules, with shorter constants so a storm takes seconds.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Latency of a "timeout" fault (longer than [`CLIENT_TIMEOUT`]).
pub const TIMEOUT_FAULT_MS: u64 = 2_500;
pub const MAX_RETRIES: usize = 3;

/// A small deterministic PRNG (xorshift64*); the seed is printed so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let i = usize::try_from(self.below(items.len() as u64)).ok()?;
        items.get(i)
    }
}

/// A named counter read from a snapshot (`T`), counted as its growth between two snapshots.
type Counter<T> = (&'static str, fn(&T) -> u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..100).map(|_| a.below(5)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(5)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| *x < 5));
        assert!((0..5).all(|v| xs.contains(&v)), "all values drawn: {xs:?}");
        assert_eq!(a.below(0), 0);
    }
}
