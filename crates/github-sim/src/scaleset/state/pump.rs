//! Scale-set state: the pump (the rules that move jobs) and its hooks from the job queue.

use super::*;

impl State {
    // ---------------------------------------------------------------- the pump

    /// Applies every rule that moves jobs: claims, timeouts, lost runners, offers and
    /// assignments under capacity, runner assignment.
    pub(crate) fn ss_pump(&mut self) {
        if self.scalesets.sets.is_empty() && self.scalesets.jobs.is_empty() {
            return;
        }
        self.ss_claim_queue();
        let now = self.clock.now();
        let cfg = self.scalesets.cfg.clone();
        // Re-assignment timeouts and delays.
        let mut to_cancel = Vec::new();
        let mut to_pend = Vec::new();
        let mut to_reoffer = Vec::new();
        for (job_id, ss) in &self.scalesets.jobs {
            match ss.state {
                SsJobState::Offered
                    if ss.offered_at.is_some_and(|at| {
                        now.saturating_duration_since(at) >= cfg.assign_timeout
                    }) =>
                {
                    to_reoffer.push(*job_id);
                }
                SsJobState::Assigned { since }
                    if now.saturating_duration_since(since) >= cfg.assign_timeout =>
                {
                    to_cancel.push(*job_id);
                }
                SsJobState::Requeued { at } if now >= at => to_pend.push(*job_id),
                _ => {}
            }
        }
        for job_id in to_cancel {
            self.ss_cancel_assignment(job_id, &cfg);
        }
        // A `JobAvailable` nobody acquired (a listener that crashed after its ack) is offered
        // again.
        for job_id in to_reoffer {
            if let Some(ss) = self.scalesets.jobs.get_mut(&job_id) {
                ss.offered_at = Some(now);
            }
            self.ss_send(job_id, "JobAvailable");
        }
        for job_id in to_pend {
            if let Some(ss) = self.scalesets.jobs.get_mut(&job_id) {
                ss.state = SsJobState::Pending;
            }
        }
        self.ss_lost_runners(now, &cfg);
        let set_ids: Vec<u64> = self.scalesets.sets.keys().copied().collect();
        for set_id in set_ids {
            self.ss_offer(set_id, &cfg, now);
            self.ss_assign_runners(set_id, now);
        }
    }

    /// `JobCompleted{canceled}` without runner, then re-queued after a growing delay, or
    /// cancelled for good after `max_reassignments`.
    fn ss_cancel_assignment(&mut self, job_id: u64, cfg: &ScaleSetConfig) {
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return;
        };
        ss.result = Some("canceled".to_owned());
        ss.runner_assign_time = None;
        let final_cancel = ss.reassignments >= cfg.max_reassignments;
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.runner_id = None;
            job.runner_name = None;
        }
        self.ss_send(job_id, "JobCompleted");
        let now = self.clock.now();
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return;
        };
        if final_cancel {
            ss.state = SsJobState::Done;
            if let Some(job) = self.jobs.get_mut(&job_id) {
                job.status = JobStatus::Completed;
                job.conclusion = Some("cancelled".to_owned());
                job.output
                    .push_str("The job was not acquired by a runner of the scale set in time.");
                job.completed_at = Some(self.clock.wall(now));
            }
            self.emit(job_id, "completed");
        } else {
            ss.reassignments += 1;
            ss.result = None;
            ss.scale_set_assign_time = None;
            let delay = cfg.reassign_delay * ss.reassignments;
            ss.state = SsJobState::Requeued { at: now + delay };
        }
    }

    /// Offers (GHES) or assigns (hosted) pending jobs while the set is under its capacity.
    fn ss_offer(&mut self, set_id: u64, cfg: &ScaleSetConfig, now: Instant) {
        let Some(capacity) = self.scalesets.sets.get(&set_id).and_then(|s| s.capacity) else {
            return;
        };
        let mut used: i64 = 0;
        let mut pending = Vec::new();
        for (job_id, ss) in self
            .scalesets
            .jobs
            .iter()
            .filter(|(_, j)| j.set_id == set_id)
        {
            match ss.state {
                SsJobState::Assigned { .. } | SsJobState::Running { .. } => used += 1,
                SsJobState::Offered if cfg.mode == AcquireMode::Ghes => used += 1,
                SsJobState::Offered => pending.push(*job_id),
                SsJobState::Pending => pending.push(*job_id),
                _ => {}
            }
        }
        for job_id in pending {
            if used >= capacity {
                break;
            }
            used += 1;
            match cfg.mode {
                AcquireMode::Ghes => {
                    if let Some(ss) = self.scalesets.jobs.get_mut(&job_id) {
                        ss.state = SsJobState::Offered;
                        ss.offered_at = Some(now);
                    }
                    self.ss_send(job_id, "JobAvailable");
                }
                AcquireMode::Hosted => self.ss_mark_assigned(job_id, now),
            }
        }
    }

    /// The job is assigned to its set: `JobAssigned`.
    fn ss_mark_assigned(&mut self, job_id: u64, now: Instant) {
        let wall = self.clock.wall(now);
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return;
        };
        ss.state = SsJobState::Assigned { since: now };
        ss.scale_set_assign_time = Some(wall);
        self.ss_send(job_id, "JobAssigned");
    }

    /// `acquirejobs`: the offered jobs of the set among `request_ids` become assigned; returns
    /// the ids won.
    pub(crate) fn ss_acquire(&mut self, set_id: u64, request_ids: &[i64]) -> Vec<i64> {
        let now = self.clock.now();
        let won: Vec<(u64, i64)> = self
            .scalesets
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.set_id == set_id
                    && j.state == SsJobState::Offered
                    && request_ids.contains(&j.request_id)
            })
            .map(|(id, j)| (*id, j.request_id))
            .collect();
        for (job_id, _) in &won {
            self.ss_mark_assigned(*job_id, now);
        }
        self.ss_pump();
        won.into_iter().map(|(_, r)| r).collect()
    }

    /// Gives the set's assigned jobs (oldest first) to its idle runners that are polling now
    /// (a job goes to a runner when the runner polls): `JobStarted`.
    fn ss_assign_runners(&mut self, set_id: u64, now: Instant) {
        let waiting: Vec<u64> = self
            .scalesets
            .jobs
            .iter()
            .filter(|(_, j)| j.set_id == set_id && matches!(j.state, SsJobState::Assigned { .. }))
            .map(|(id, _)| *id)
            .collect();
        for job_id in waiting {
            let candidate = self
                .runners
                .values()
                .filter(|r| {
                    r.scale_set == Some(set_id)
                        && r.job.is_none()
                        && r.active_polls > 0
                        && !r.frozen
                        && !self.scalesets.killed.contains(&r.id)
                        && self.runner_online(r, now)
                })
                .min_by_key(|r| r.id)
                .map(|r| r.id);
            let Some(runner_id) = candidate else {
                return;
            };
            self.assign(job_id, runner_id);
            let wall = self.clock.wall(now);
            if let Some(ss) = self.scalesets.jobs.get_mut(&job_id) {
                ss.state = SsJobState::Running { runner_id };
                ss.runner_assign_time = Some(wall);
            }
            self.ss_send(job_id, "JobStarted");
        }
    }

    /// Busy runners that are lost (killed by the hook, or offline): after `lock_timeout` the
    /// runner goes and its job ends `failed` (or, never picked up, waits for another runner).
    fn ss_lost_runners(&mut self, now: Instant, cfg: &ScaleSetConfig) {
        let mut lost = Vec::new();
        for runner in self.runners.values().filter(|r| r.scale_set.is_some()) {
            let dead =
                self.scalesets.killed.contains(&runner.id) || !self.runner_online(runner, now);
            if runner.job.is_some() && dead {
                lost.push(runner.id);
            }
        }
        self.scalesets.lost_since.retain(|id, _| lost.contains(id));
        for runner_id in lost {
            let since = *self.scalesets.lost_since.entry(runner_id).or_insert(now);
            if now.saturating_duration_since(since) >= cfg.lock_timeout {
                self.scalesets.lost_since.remove(&runner_id);
                let reason = self.lost_communication(runner_id);
                self.remove_runner_because(runner_id, &reason);
                self.ss_forget_runner(runner_id);
            }
        }
    }

    // ---------------------------------------------------------------- hooks from the job queue

    /// A runner of a set polled or freed up: run the rules.
    pub(in crate::state) fn ss_runner_ready(&mut self) {
        self.ss_pump();
    }

    /// A scale-set job taken back from a runner before it picked it up: assigned to the set
    /// again. Whether the job is a scale-set job.
    pub(in crate::state) fn ss_release_undelivered(&mut self, job_id: u64) -> bool {
        let now = self.clock.now();
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return false;
        };
        if ss.state != SsJobState::Done {
            ss.state = SsJobState::Assigned { since: now };
            ss.runner_assign_time = None;
        }
        true
    }

    /// A scale-set job was handed to its runner.
    pub(in crate::state) fn ss_job_delivered(&mut self, job_id: u64) {
        if self.scalesets.jobs.contains_key(&job_id) {
            *self.scalesets.runs.entry(job_id).or_insert(0) += 1;
        }
    }

    /// A scale-set job finished (completed by its runner, or failed when its runner was lost or
    /// removed): `JobCompleted` with the runner.
    pub(in crate::state) fn ss_job_finished(&mut self, job_id: u64) {
        let conclusion = self.jobs.get(&job_id).and_then(|j| j.conclusion.clone());
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return;
        };
        if ss.state == SsJobState::Done {
            return;
        }
        ss.state = SsJobState::Done;
        ss.result = Some(result_of(conclusion.as_deref()).to_owned());
        self.ss_send(job_id, "JobCompleted");
    }

    /// Forgets a removed runner's scale-set bookkeeping.
    pub(crate) fn ss_forget_runner(&mut self, runner_id: u64) {
        self.scalesets.runner_sets.remove(&runner_id);
        self.scalesets.killed.remove(&runner_id);
        self.scalesets.lost_since.remove(&runner_id);
    }

    /// Marks a runner of a set killed (its process and container gone): it takes no job, and
    /// a job it holds ends `failed` after the lock timeout.
    pub(crate) fn ss_kill_runner(&mut self, runner_id: u64) -> bool {
        if self
            .runners
            .get(&runner_id)
            .is_none_or(|r| r.scale_set.is_none())
        {
            return false;
        }
        self.scalesets.killed.insert(runner_id);
        if let Some(runner) = self.runners.get_mut(&runner_id) {
            runner.stopped = true;
            runner.last_seen = None;
            runner.notify.notify_waiters();
        }
        self.ss_pump();
        true
    }

    /// Registers a JIT runner of a set (offline until it polls).
    pub(crate) fn ss_register_runner(
        &mut self,
        set_id: u64,
        name: String,
    ) -> Result<(u64, Secret), RegisterError> {
        let Some(set) = self.scalesets.sets.get(&set_id) else {
            return Err(RegisterError::UnknownGroup(String::new()));
        };
        let (scope, group_id, labels) = (set.scope.clone(), set.group_id, set.labels.clone());
        let labels = self.make_labels(&labels, true);
        let new = NewRunner {
            scope,
            name,
            group_id,
            labels,
            ephemeral: true,
            jit: true,
        };
        let (id, credential) = self.register(new, false)?;
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.scale_set = Some(set_id);
        }
        self.scalesets.runner_sets.insert(id, set_id);
        Ok((id, credential))
    }
}
