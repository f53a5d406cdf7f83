//! One pass over every pool: observe once, plan each pool ([`crate::demand::plan_fleet`]),
//! remove, then create every pool's shortfall in one bounded stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use time::OffsetDateTime;

use super::create::Prepared;
use super::remove::RemoveOutcome;
use super::{
    count_states, failed_step_requeue, Failure, FlushMode, ManagerError, PassState, PoolReport,
    ReconcileReport, RunnerManager,
};
use crate::demand::{plan_fleet, FleetPlan};
use crate::events::{JobChanged, PoolSized};
use crate::model::{RegistrationMode, RunnerName, Secret};
use crate::plan::{Desired, Removal, RemovalReason};
use crate::pool::{PoolName, PoolSpec, QueuedJob, Sizing};
use crate::runner_bin::RunnerBinError;

/// How long completed jobs and seen delivery GUIDs stay in the job table. GitHub's delivery
/// log (what the daemon's recovery reads) covers 3 days.
const JOB_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A creation's result: the runner, or its name and the error rendered with its causes.
type CreateResult = Result<RunnerName, (RunnerName, String)>;

/// What [`RunnerManager::remove_and_create`] did, in completion order: each removal by its
/// index, each creation by its pool's index with the canary image it launched from.
#[derive(Default)]
struct Executed {
    removals: Vec<(usize, RemoveOutcome)>,
    creations: Vec<(usize, Option<String>, CreateResult)>,
}

impl RunnerManager {
    /// The pass itself, with the in-process lock held; [`Self::reconcile`] and
    /// [`Self::reconcile_demand`] report it. `only`: act on that pool alone (the others are
    /// observed and planned, not touched).
    pub(super) async fn reconcile_pass(
        &self,
        pass: &mut PassState,
        pools: &[PoolSpec],
        only: Option<&PoolName>,
    ) -> Result<ReconcileReport, ManagerError> {
        let _lock = self.lock_pass().await?;

        // 1. The binary first: without it nothing is touched. It is only read (and re-verified)
        // when the plan creates runners, so an idle pass costs no disk reads. Pools that are
        // all baked need it only for a launch from their base image (no image built yet),
        // which step 3 checks.
        if !self.runner_bin.check()
            && pools
                .iter()
                .any(|p| p.image_mode != crate::pool::ImageMode::Baked)
        {
            return Err(ManagerError::MissingRunnerBinary);
        }

        // 2. The demand (only demand-sized pools read the job table), then both sides; a
        // failure here touches nothing.
        let now = OffsetDateTime::now_utc();
        let jobs = if pools
            .iter()
            .any(|p| matches!(p.sizing, Sizing::Demand { .. }))
        {
            self.queued_jobs(now)?
        } else {
            Vec::new()
        };
        let mut observed = self.observe(pass, true).await?;
        // Baked pools: their images, and which runners run one the pool no longer launches.
        let mut catalog = self.image_catalog(pools).await;
        catalog.mark_outdated(&mut observed);

        // 3. Plan every pool; JIT registrations are paced, the rest of the shortfall waits.
        let tolerances = Desired {
            quantity: 0,
            boot_grace: self.config.boot_grace,
            offline_grace: self.config.offline_grace,
            max_idle_age: self.config.demand.max_idle_age,
        };
        let mut demands: Vec<_> = pools.iter().map(|p| self.pool_demand(p)).collect();
        // Scale-set pools: sized by their listener's count; hands off one whose session
        // another manager holds.
        let hands_off = self.config.scale_sets.size_demands(&mut demands);
        let mut fleet = plan_fleet(
            &observed,
            &demands,
            &jobs,
            &tolerances,
            self.config.demand.stale_after,
            now,
        );
        fleet.pools.retain(|p| !hands_off.contains(&p.pool));
        self.judge_canaries(&mut catalog, &fleet, &observed).await;
        if let Some(only) = only {
            fleet.pools.retain(|p| &p.pool == only);
            if fleet.pools.is_empty() {
                return Err(ManagerError::UnknownPool(only.to_string()));
            }
        }
        // Each pool's creations get their member before anything is created (on a cluster: by
        // the pool's placement and each member's room); what finds no room is the pool's
        // shortfall, reported and retried, never forced.
        let mut placements =
            crate::placement::place_fleet(&fleet, &observed, pools, self.config.overcommit);
        for (pool_plan, placed) in fleet.pools.iter_mut().zip(&placements) {
            pool_plan.plan.create = placed.targets.len();
        }
        let mut paced: Option<Duration> = None;
        for pool_plan in &mut fleet.pools {
            let jit = pools
                .iter()
                .find(|p| p.name == pool_plan.pool)
                .is_some_and(|p| p.registration == RegistrationMode::Jit)
                // A scale set's JIT configs are not REST's content-creating requests.
                && !self.config.scale_sets.is_scale_set(&pool_plan.pool);
            if jit {
                let pacing = pass.jit.admit(pool_plan.plan.create, Instant::now());
                pool_plan.plan.create = pacing.admitted;
                paced = match (paced, pacing.wait) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        for (pool_plan, placed) in fleet.pools.iter().zip(&mut placements) {
            placed.targets.truncate(pool_plan.plan.create);
        }
        let creating: usize = fleet.pools.iter().map(|p| p.plan.create).sum();
        // The tarball is read (and re-verified) only for launches from a base image: a launch
        // from a baked image has the runner already. A corrupt cached tarball fails the pass
        // here, before anything is touched.
        let plain = fleet
            .pools
            .iter()
            .any(|p| p.plan.create > 0 && !catalog.launches_baked(&p.pool));
        let tarball = match (creating, plain) {
            (0, _) => None,
            (_, false) => Some(bytes::Bytes::new()),
            (_, true) => match self.runner_bin.load().await {
                Ok((_, tarball)) => Some(tarball),
                Err(RunnerBinError::Missing) => return Err(ManagerError::MissingRunnerBinary),
                Err(e) => return Err(e.into()),
            },
        };
        let mut report = ReconcileReport {
            delta: fleet
                .pools
                .iter()
                .filter(|p| !p.draining)
                .map(|p| p.plan.delta)
                .sum(),
            counts: count_states(fleet.pools.iter().flat_map(|p| p.plan.states.values())),
            unmatched_jobs: fleet.unmatched.len(),
            waiting_jobs: fleet.waiting.len(),
            ..ReconcileReport::default()
        };
        self.report_plan(&fleet);

        // 4 and 5. Remove unhealthy, orphan, dangling, surplus, recycled and outdated runners
        // (registration first), and create every pool's shortfall, at most
        // `create_concurrency` at once. A pool never has more instances than its cap: a
        // creation starts at once when the pool has room, else when a removal of that pool has
        // deleted an instance; one still waiting when the removals are done (a removal failed:
        // its instance is still there) waits for the next pass.
        let removals: Vec<(usize, Removal)> = fleet
            .pools
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.plan.removals.iter().map(move |r| (i, r.clone())))
            .collect();
        let rechecked = self
            .recheck_unregistered(&removals.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>())
            .await;
        let mut pool_reports: Vec<PoolReport> = fleet
            .pools
            .iter()
            .zip(&placements)
            .map(|(p, placed)| PoolReport {
                pool: p.pool.clone(),
                target: p.target,
                counts: count_states(p.plan.states.values()),
                queued: p.queued,
                created: 0,
                removed: 0,
                draining: p.draining,
                shortfall: placed.shortfall,
                shortfall_reason: placed.reason,
                lost_busy: p
                    .plan
                    .states
                    .iter()
                    .filter(|(_, s)| matches!(s, crate::plan::RunnerState::Lost { busy: true }))
                    .map(|(name, _)| name.clone())
                    .collect(),
            })
            .collect();
        if observed.members.is_some() {
            self.report_placement(&fleet, &placements);
        } else if let Some(spec) = pools.iter().find(|p| {
            p.placement.target.is_some()
                && fleet
                    .pools
                    .iter()
                    .any(|f| f.pool == p.name && f.plan.create > 0)
        }) {
            tracing::warn!(message = "A placement target is ignored: the server is not clustered.",
                pool = %spec.name, target = ?spec.placement.target.as_ref().map(|t| t.as_target()));
        }

        // What every creation of a group shares (nothing to prepare for a pool that creates
        // nothing).
        let token = tokio::sync::OnceCell::<Secret>::new();
        let mut prepared: Vec<(usize, Prepared, usize, Option<String>)> = Vec::new();
        if tarball.is_some() {
            for (i, pool_plan) in fleet.pools.iter().enumerate() {
                if pool_plan.plan.create == 0 {
                    continue;
                }
                let Some(spec) = pools.iter().find(|p| p.name == pool_plan.pool) else {
                    continue;
                };
                let share = self.config.images.canary_share;
                for group in Self::launches(&catalog, &spec.name, pool_plan.plan.create, share) {
                    match self
                        .prepare_creation(spec, group.image.as_ref(), &token)
                        .await
                    {
                        Ok(p) => {
                            let canary = group
                                .canary
                                .then(|| group.image.map(|i| i.fingerprint))
                                .flatten();
                            prepared.push((i, p, group.count, canary))
                        }
                        Err(error) => report.failed.push(Failure::prepare(&error)),
                    }
                }
            }
        }
        // Per pool: the launches not started yet, and the room it has now.
        let mut waiting: Vec<VecDeque<(&Prepared, Option<&String>)>> =
            vec![VecDeque::new(); fleet.pools.len()];
        for (i, p, count, canary) in &prepared {
            waiting[*i].extend(std::iter::repeat_n((p, canary.as_ref()), *count));
        }
        let room: Vec<usize> = fleet
            .pools
            .iter()
            .map(|p| {
                let cap = pools
                    .iter()
                    .find(|s| s.name == p.pool)
                    .map_or(0, |s| s.sizing.max());
                // A lost instance (offline member) does not take a slot: it is replaced, so
                // the pool exceeds its cap by at most its lost runners.
                let instances = observed
                    .instances
                    .iter()
                    .filter(|i| i.pool == p.pool && !i.is_lost())
                    .count();
                cap.saturating_sub(instances)
            })
            .collect();

        let targets: Vec<VecDeque<Option<String>>> = placements
            .iter()
            .map(|p| p.targets.iter().cloned().collect())
            .collect();
        let executed = self
            .remove_and_create(
                &rechecked,
                &removals,
                waiting,
                room,
                targets,
                &tarball.unwrap_or_default(),
            )
            .await;
        let mut failed_canaries = std::collections::BTreeSet::new();
        for (k, outcome) in executed.removals {
            let (pool, removal) = (removals[k].0, &rechecked[k]);
            match outcome {
                RemoveOutcome::Removed => {
                    pool_reports[pool].removed += 1;
                    report.removed.push((removal.name.clone(), removal.reason));
                }
                RemoveOutcome::SkippedBusy => report.skipped_busy.push(removal.name.clone()),
                RemoveOutcome::Failed(error) => report
                    .failed
                    .push(Failure::remove(removal.name.clone(), &error)),
            }
        }
        for (i, canary, result) in executed.creations {
            match result {
                Ok(name) => {
                    self.runner_pools
                        .lock()
                        .insert(name.to_string(), fleet.pools[i].pool.clone());
                    pool_reports[i].created += 1;
                    report.created.push(name)
                }
                Err((name, error)) => {
                    if let Some(canary) = canary {
                        failed_canaries.insert(canary);
                    }
                    report.failed.push(Failure::create(name, error))
                }
            }
        }
        report.created.sort();
        // A canary whose runner could not start is rolled back now.
        self.roll_back_failed(&mut catalog, &failed_canaries).await;
        self.collect_images(&catalog, &observed).await;
        report.pools = pool_reports;

        // 6. Failures counted, and when to come back.
        for failure in &report.failed {
            self.telemetry.metrics.error(failure.action.as_str());
        }
        let failed = if report.failed.is_empty() {
            pass.failing_passes = 0;
            None
        } else {
            pass.failing_passes = pass.failing_passes.saturating_add(1);
            Some(failed_step_requeue(pass.failing_passes))
        };
        // A stale job is re-examined when it turns stale; a waiting job when a slot may free.
        let demand = (!jobs.is_empty())
            .then(|| self.next_stale(&jobs, now))
            .flatten();
        // Runners no member had room for: room may free before the full interval.
        let shortfall = report
            .pools
            .iter()
            .any(|p| p.shortfall > 0)
            .then_some(super::SHORTFALL_REQUEUE);
        report.requeue_after = [paced, failed, demand, shortfall]
            .into_iter()
            .flatten()
            .min();
        Ok(report)
    }

    /// Runs `removals` (`pool_of[k].0` is removal `k`'s pool) and the `waiting` creations
    /// of each pool together, at most `create_concurrency` creations at once. A pool's creation
    /// starts when the pool has `room` (instances below its cap): at once, or when a removal
    /// of that pool has deleted an instance. When creations wait for room, only the removals
    /// that make it start at first ([`removal_order`]), the rest once those creations are done.
    /// Creations that never get room (a removal failed) are left for the next pass.
    async fn remove_and_create<'a>(
        &'a self,
        removals: &'a [Removal],
        pool_of: &[(usize, Removal)],
        mut waiting: Vec<VecDeque<(&'a Prepared, Option<&'a String>)>>,
        mut room: Vec<usize>,
        mut targets: Vec<VecDeque<Option<String>>>,
        tarball: &'a [u8],
    ) -> Executed {
        enum Done {
            Removed(usize, RemoveOutcome),
            Created(usize, Option<String>, CreateResult),
        }
        let mut running: FuturesUnordered<BoxFuture<'a, Done>> = FuturesUnordered::new();
        let (first, mut later) = removal_order(removals, pool_of, &waiting, &room);
        // The removals that make room for a waiting creation start alone, so that the host's
        // time goes to them and then to the creations (a burst's spent runners are many; two
        // waiting jobs need two).
        let mut making_room = first.len();
        let remove = |k: usize| -> BoxFuture<'a, Done> {
            let removal = &removals[k];
            async move { Done::Removed(k, self.remove_runner(removal, FlushMode::IdleOnly).await) }
                .boxed()
        };
        for k in first {
            running.push(remove(k));
        }
        let concurrency = self.config.create_concurrency.max(1);
        let mut creating = 0;
        let mut executed = Executed::default();
        loop {
            // Start what has room, up to the concurrency.
            for (i, queue) in waiting.iter_mut().enumerate() {
                while creating < concurrency && room[i] > 0 {
                    let Some((p, canary)) = queue.pop_front() else {
                        break;
                    };
                    room[i] -= 1;
                    creating += 1;
                    let canary = canary.cloned();
                    // The member placement gave this creation (`None`: the server's choice).
                    let target = targets.get_mut(i).and_then(VecDeque::pop_front).flatten();
                    running.push(
                        async move {
                            Done::Created(i, canary, self.create_runner(p, tarball, target).await)
                        }
                        .boxed(),
                    );
                }
            }
            // The other removals once the room is made and the creations that waited for it
            // are done: jobs wait for those creations, nothing waits for a spent instance.
            if making_room == 0 && creating == 0 {
                running.extend(later.drain(..).map(remove));
            }
            let Some(done) = running.next().await else {
                break;
            };
            match done {
                Done::Removed(k, outcome) => {
                    making_room = making_room.saturating_sub(1);
                    if matches!(outcome, RemoveOutcome::Removed) && removals[k].has_instance {
                        room[pool_of[k].0] += 1;
                    }
                    executed.removals.push((k, outcome));
                }
                Done::Created(i, canary, result) => {
                    creating -= 1;
                    executed.creations.push((i, canary, result));
                }
            }
        }
        executed
    }

    /// The queued jobs of the table, after dropping those GitHub has cancelled by now and
    /// pruning what is older than [`JOB_RETENTION`].
    fn queued_jobs(&self, now: OffsetDateTime) -> Result<Vec<QueuedJob>, ManagerError> {
        let expiry = now - self.config.queued_expiry;
        let expired = self.jobs.expire_queued(expiry, now)?;
        if expired > 0 {
            tracing::info!(
                message = "Queued jobs expired.",
                count = expired,
                older_than_seconds = self.config.queued_expiry.as_secs()
            );
        }
        // Completed jobs and seen deliveries are kept past GitHub's redelivery window (its
        // delivery log covers 3 days), then pruned: the table stays the size of a week's work.
        let pruned = self.jobs.prune(now - JOB_RETENTION)?;
        if pruned > 0 {
            tracing::debug!(message = "Job table pruned.", rows = pruned);
        }
        Ok(self.jobs.queued()?)
    }

    /// When the youngest job that is not stale yet turns stale.
    fn next_stale(&self, jobs: &[QueuedJob], now: OffsetDateTime) -> Option<Duration> {
        jobs.iter()
            .filter_map(|job| {
                let age: Duration = (now - job.created_at).try_into().unwrap_or(Duration::ZERO);
                self.config.demand.stale_after.checked_sub(age)
            })
            .filter(|left| !left.is_zero())
            .min()
    }

    /// On a cluster: each pool's placement, shortfall and runners on offline members.
    fn report_placement(&self, fleet: &FleetPlan, placements: &[crate::placement::PoolPlacement]) {
        for (p, placed) in fleet.pools.iter().zip(placements) {
            let lost = |busy: bool| -> Vec<String> {
                p.plan
                    .states
                    .iter()
                    .filter(|(_, s)| **s == crate::plan::RunnerState::Lost { busy })
                    .map(|(name, _)| name.to_string())
                    .collect()
            };
            crate::events::PoolPlaced {
                pool: p.pool.to_string(),
                placed: placed
                    .per_member()
                    .into_iter()
                    .map(|(m, n)| (m.to_owned(), n))
                    .collect(),
                shortfall: placed.shortfall,
                reason: placed.reason.map(crate::placement::Shortfall::as_str),
                lost_idle: lost(false),
                lost_busy: lost(true),
            }
            .emit(&self.telemetry);
        }
    }

    fn report_plan(&self, fleet: &FleetPlan) {
        for p in &fleet.pools {
            PoolSized {
                pool: p.pool.to_string(),
                desired: p.target,
                counts: count_states(p.plan.states.values()),
                queued: p.queued,
                draining: p.draining,
            }
            .emit(&self.telemetry);
            tracing::info!(
                message = "Planned.",
                pool = %p.pool,
                delta = p.plan.delta,
                removals = p.plan.removals.len(),
                create = p.plan.create
            );
        }
        if !fleet.unmatched.is_empty() {
            tracing::info!(message = "Queued jobs no pool matches.", jobs = ?fleet.unmatched);
        }
        if !fleet.waiting.is_empty() {
            tracing::info!(message = "Queued jobs wait for a pool below max.", jobs = ?fleet.waiting);
        }
    }

    /// Records a `workflow_job` delivery in the job table and reports the change.
    pub fn record_job(
        &self,
        event: &crate::jobs::JobEvent,
    ) -> Result<crate::jobs::Recorded, ManagerError> {
        let recorded = self.jobs.record(event, OffsetDateTime::now_utc())?;
        if let crate::jobs::Recorded::Applied { job, previous } = &recorded {
            use crate::jobs::JobState;
            // The pool of the runner that took it; else the one its labels route to.
            let runner_pool = job
                .facts
                .runner_name
                .as_ref()
                .and_then(|r| self.runner_pools.lock().get(r).cloned());
            let pool = runner_pool
                .or_else(|| self.route(&job.facts.labels))
                .map(|p| p.to_string());
            // Observed once: when the job is first seen started (or finished).
            let started_now = job.state >= JobState::InProgress
                && previous.is_none_or(|p| p < JobState::InProgress);
            JobChanged {
                job_id: job.id,
                state: job.state.as_str(),
                pool,
                queue_time: started_now.then(|| job.queue_time()).flatten(),
                runner: job.facts.runner_name.clone(),
            }
            .emit(&self.telemetry);
        }
        Ok(recorded)
    }
}

/// The order of a pass's removals (indices into `removals`; `pool_of[k].0` is removal `k`'s
/// pool): the ones to start first and the ones to start after those. When a pool has more
/// creations `waiting` than `room`, as many of its instance removals as the missing room go
/// first (finished runners first: nothing to look inside), and the rest wait for them. When no
/// creation waits for room, every removal starts at once.
fn removal_order<T>(
    removals: &[Removal],
    pool_of: &[(usize, Removal)],
    waiting: &[VecDeque<T>],
    room: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let mut first = Vec::new();
    for (pool, queue) in waiting.iter().enumerate() {
        let missing = queue
            .len()
            .saturating_sub(room.get(pool).copied().unwrap_or(0));
        let mut candidates: Vec<usize> = (0..removals.len())
            .filter(|&k| pool_of.get(k).is_some_and(|p| p.0 == pool) && removals[k].has_instance)
            .collect();
        candidates.sort_by_key(|&k| (removals[k].reason != RemovalReason::Finished, k));
        first.extend(candidates.into_iter().take(missing));
    }
    if first.is_empty() {
        return ((0..removals.len()).collect(), Vec::new());
    }
    first.sort_unstable();
    let later = (0..removals.len()).filter(|k| !first.contains(k)).collect();
    (first, later)
}

#[cfg(test)]
mod removal_order_tests {
    use super::*;
    use crate::model::Owner;

    /// `removals`: one `(pool, reason, has_instance)` each; `waiting` and `room` per pool.
    fn order(
        removals: &[(usize, RemovalReason, bool)],
        waiting: &[usize],
        room: &[usize],
    ) -> (Vec<usize>, Vec<usize>) {
        let owner = Owner::new("app", 0).expect("owner");
        let pool_of: Vec<(usize, Removal)> = removals
            .iter()
            .map(|&(pool, reason, has_instance)| {
                let removal = Removal {
                    name: owner.new_runner_name(),
                    registration: None,
                    has_instance,
                    reason,
                };
                (pool, removal)
            })
            .collect();
        let plain: Vec<Removal> = pool_of.iter().map(|(_, r)| r.clone()).collect();
        let waiting: Vec<VecDeque<()>> = waiting
            .iter()
            .map(|&n| std::iter::repeat_n((), n).collect())
            .collect();
        removal_order(&plain, &pool_of, &waiting, room)
    }

    use RemovalReason::{Dangling, Finished, ScaleDown};

    #[test]
    fn without_a_creation_waiting_for_room_every_removal_starts_at_once() {
        let removals = [
            (0, Finished, true),
            (1, ScaleDown, true),
            (0, Dangling, false),
        ];
        assert_eq!(order(&removals, &[2, 0], &[2, 0]), (vec![0, 1, 2], vec![]));
        assert_eq!(order(&removals, &[0, 0], &[0, 0]), (vec![0, 1, 2], vec![]));
    }

    #[test]
    fn the_missing_room_is_made_first_by_finished_runners_of_that_pool() {
        let removals = [
            (0, ScaleDown, true), // 0: pool 0, looked inside first
            (1, Finished, true),  // 1: the other pool
            (0, Finished, true),  // 2
            (0, Dangling, false), // 3: no instance, makes no room
            (0, Finished, true),  // 4
            (0, Finished, true),  // 5
        ];
        // Pool 0: 3 creations waiting, room for 1: two removals go first.
        assert_eq!(
            order(&removals, &[3, 0], &[1, 0]),
            (vec![2, 4], vec![0, 1, 3, 5])
        );
        // Missing more than the finished ones: the others of the pool follow.
        assert_eq!(
            order(&removals, &[5, 0], &[0, 0]),
            (vec![0, 2, 4, 5], vec![1, 3])
        );
    }

    #[test]
    fn both_pools_short_of_room_get_theirs_first() {
        let removals = [
            (0, Finished, true),
            (1, Finished, true),
            (1, Finished, true),
        ];
        assert_eq!(order(&removals, &[1, 1], &[0, 0]), (vec![0, 1], vec![2]));
    }
}
