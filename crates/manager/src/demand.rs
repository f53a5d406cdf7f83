//! The pure demand planner: queued jobs routed to pools, each pool's target, and each pool's
//! [`Plan`]. No IO here.
//!
//! - Routing follows GitHub: a job can run on a runner that has every one of its `runs-on`
//!   labels (ignoring case). It goes to the matching pool with the highest priority that has
//!   room (busy runners plus the jobs routed to it so far below `max`); a job no pool matches
//!   is unmatched and creates nothing. Jobs that fewer pools can take are routed first (then
//!   oldest first), so a job any pool can run never takes the last slot of the only pool that
//!   can run another one.
//! - A pool's target is `min(max, busy + routed jobs + min_idle)`, plus one runner for each
//!   routed job queued for longer than `stale_after` (GitHub may have given the runner meant
//!   for it to another job), still within `max`. A fixed pool (the single-pool form) keeps its
//!   quantity.
//! - A pool that is observed but no longer configured drains: target 0, so idle runners go and
//!   busy ones finish their job first ([`plan`] never removes a busy runner).
//! - Everything else (health, what to remove first, never a busy runner) is [`plan`]'s, run
//!   once per pool on that pool's runners.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::plan::{plan, Desired, Observed, Plan, RunnerState};
use crate::pool::{candidates, PoolDemand, PoolName, QueuedJob, Sizing};

/// One pool's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    pub pool: PoolName,
    /// The number of runners wanted.
    pub target: usize,
    /// Busy runners before acting.
    pub busy: usize,
    /// Queued jobs routed to this pool.
    pub queued: usize,
    /// Of those, the ones queued past `stale_after`.
    pub stale: usize,
    /// Observed but no longer configured: going away.
    pub draining: bool,
    pub plan: Plan,
}

/// What a demand pass decided for every pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetPlan {
    /// Configured pools first, in the order given, then draining ones by name.
    pub pools: Vec<PoolPlan>,
    /// Queued jobs that no pool matches.
    pub unmatched: Vec<u64>,
    /// Queued jobs whose matching pools are all at `max`: they wait for a slot.
    pub waiting: Vec<u64>,
}

impl FleetPlan {
    pub fn is_empty(&self) -> bool {
        self.pools.iter().all(|p| p.plan.is_empty())
    }

    pub fn pool(&self, name: &str) -> Option<&PoolPlan> {
        self.pools.iter().find(|p| p.pool.as_str() == name)
    }
}

/// Splits an observation by pool.
pub fn partition(observed: &Observed) -> BTreeMap<PoolName, Observed> {
    let mut by_pool: BTreeMap<PoolName, Observed> = BTreeMap::new();
    // An instance names its pool; a registration of the same runner belongs to the same one
    // even if its labels said otherwise (the instance's keys are the manager's own record).
    let instance_pool: BTreeMap<_, _> = observed
        .instances
        .iter()
        .map(|i| (&i.name, &i.pool))
        .collect();
    for instance in &observed.instances {
        by_pool
            .entry(instance.pool.clone())
            .or_default()
            .instances
            .push(instance.clone());
    }
    for registration in &observed.registrations {
        let pool = instance_pool
            .get(&registration.name)
            .copied()
            .unwrap_or(&registration.pool);
        by_pool
            .entry(pool.clone())
            .or_default()
            .registrations
            .push(registration.clone());
    }
    by_pool
}

/// Routes `jobs` and plans every pool. `tolerances.quantity` is ignored: each pool's target is
/// computed here. `pools` are the configured ones (names unique).
pub fn plan_fleet(
    observed: &Observed,
    pools: &[PoolDemand],
    jobs: &[QueuedJob],
    tolerances: &Desired,
    stale_after: Duration,
    now: OffsetDateTime,
) -> FleetPlan {
    let mut by_pool = partition(observed);
    let busy: BTreeMap<&PoolName, usize> = pools
        .iter()
        .map(|pool| {
            let busy = by_pool.get(&pool.name).map_or(0, |observed| {
                crate::plan::classify(observed, tolerances)
                    .values()
                    .filter(|s| matches!(s, RunnerState::Busy))
                    .count()
            });
            (&pool.name, busy)
        })
        .collect();

    // Route: the jobs fewest pools can take first, then the oldest.
    let mut jobs: Vec<(&QueuedJob, Vec<&PoolDemand>)> = jobs
        .iter()
        .map(|job| (job, candidates(pools, &job.labels)))
        .collect();
    jobs.sort_by_key(|(j, matching)| (matching.len(), j.created_at, j.id));
    let mut routed: BTreeMap<&PoolName, (usize, usize)> = BTreeMap::new();
    let mut unmatched = Vec::new();
    let mut waiting = Vec::new();
    for (job, matching) in jobs {
        if matching.is_empty() {
            unmatched.push(job.id);
            continue;
        }
        let room = matching.into_iter().find(|pool| {
            let used = busy.get(&pool.name).copied().unwrap_or(0)
                + routed.get(&pool.name).map_or(0, |r| r.0);
            used < pool.sizing.max()
        });
        match room {
            Some(pool) => {
                let entry = routed.entry(&pool.name).or_default();
                entry.0 += 1;
                let age: Duration = (now - job.created_at).try_into().unwrap_or(Duration::ZERO);
                if age >= stale_after {
                    entry.1 += 1;
                }
            }
            None => waiting.push(job.id),
        }
    }

    let mut plans = Vec::new();
    for pool in pools {
        let busy = busy.get(&pool.name).copied().unwrap_or(0);
        let (queued, stale) = routed.get(&pool.name).copied().unwrap_or((0, 0));
        let target = match pool.sizing {
            Sizing::Fixed(quantity) => quantity,
            Sizing::Demand { min_idle, max } => (busy + queued + min_idle + stale).min(max),
        };
        let observed = by_pool.remove(&pool.name).unwrap_or_default();
        let desired = Desired {
            quantity: target,
            ..*tolerances
        };
        plans.push(PoolPlan {
            pool: pool.name.clone(),
            target,
            busy,
            queued,
            stale,
            draining: false,
            plan: plan(&observed, &desired),
        });
    }
    for (name, observed) in by_pool {
        let desired = Desired {
            quantity: 0,
            ..*tolerances
        };
        let plan = plan(&observed, &desired);
        let busy = plan
            .states
            .values()
            .filter(|s| matches!(s, RunnerState::Busy))
            .count();
        plans.push(PoolPlan {
            pool: name,
            target: 0,
            busy,
            queued: 0,
            stale: 0,
            draining: true,
            plan,
        });
    }
    FleetPlan {
        pools: plans,
        unmatched,
        waiting,
    }
}

#[cfg(test)]
#[path = "demand_tests.rs"]
mod tests;
