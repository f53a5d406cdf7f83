//! The scaler's decisions, as pure functions of its state and a message. No IO here.
//!
//! - The desired count is `min(max, min_idle + demand)`, where demand is the greatest of the
//!   service's `totalAssignedJobs`, the jobs this listener saw assigned and not completed, and
//!   the runners it knows busy: statistics that read 0 while `JobAssigned` arrives (ARC #3420
//!   and its kin) never take the pool below what it must run.
//! - `JobAvailable` (GHES flow) is acquired only while the set has room below `max`.
//! - `JobStarted` marks the runner busy; `JobCompleted` forgets the job and hands the runner
//!   (when there is one) to the listener for removal.

use std::collections::{BTreeMap, BTreeSet};

use super::{Completed, JobEvent, QueueMessage, Started, Statistics};

/// A pool's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub min_idle: usize,
    pub max: usize,
}

/// What the listener knows between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalerState {
    /// The statistics of the last message (or of the session).
    pub statistics: Statistics,
    /// Jobs seen assigned (or started) and not completed, by job id.
    pub assigned: BTreeSet<String>,
    /// Runners known busy: name → job id.
    pub busy: BTreeMap<String, String>,
    /// `JobAvailable` jobs not acquired yet (no room then): job id → `runner_request_id`.
    pub available: BTreeMap<String, i64>,
}

/// What handling one message decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// `runner_request_id`s to acquire.
    pub acquire: Vec<i64>,
    pub started: Vec<Started>,
    pub completed: Vec<Completed>,
    /// The runner count wanted now.
    pub desired: usize,
}

impl ScalerState {
    /// Starts from a session's statistics.
    pub fn new(statistics: Statistics) -> Self {
        Self {
            statistics,
            ..Self::default()
        }
    }

    /// The jobs the pool must have runners for: the greatest of the service's count, the jobs
    /// seen assigned, and the runners known busy.
    pub fn demand(&self) -> usize {
        usize_of(self.statistics.assigned_jobs)
            .max(self.assigned.len())
            .max(self.busy.len())
    }

    /// `min(max, min_idle + demand)`.
    pub fn desired(&self, limits: Limits) -> usize {
        limits
            .min_idle
            .saturating_add(self.demand())
            .min(limits.max)
    }

    /// Applies one message (already acknowledged): statistics, then the job messages in the
    /// order the S listener handles them (available, started, completed; assigned recorded
    /// first), then the desired count.
    pub fn apply(&mut self, message: &QueueMessage, limits: Limits) -> Decision {
        self.statistics = message.statistics;
        let mut decision = Decision::default();
        for event in &message.jobs {
            match event {
                JobEvent::Available(job) if !self.assigned.contains(&job.job_id) => {
                    self.available
                        .insert(job.job_id.clone(), job.runner_request_id);
                }
                JobEvent::Assigned(job) => {
                    self.available.remove(&job.job_id);
                    self.assigned.insert(job.job_id.clone());
                }
                _ => {}
            }
        }
        for event in &message.jobs {
            if let JobEvent::Started(started) = event {
                let job_id = &started.job.job_id;
                self.assigned.insert(job_id.clone());
                self.busy
                    .insert(started.runner_name.clone(), job_id.clone());
                decision.started.push(started.clone());
            }
        }
        for event in &message.jobs {
            if let JobEvent::Completed(completed) = event {
                let job_id = &completed.job.job_id;
                self.assigned.remove(job_id);
                self.available.remove(job_id);
                if let Some((_, name)) = &completed.runner {
                    self.busy.remove(name);
                }
                // A runner whose job completed without a JobStarted seen here is not busy either.
                self.busy.retain(|_, busy_job| busy_job != job_id);
                decision.completed.push(completed.clone());
            }
        }
        decision.acquire = self.acquirable(limits);
        decision.desired = self.desired(limits);
        decision
    }

    /// The `JobAvailable` jobs to acquire now: oldest request first, while the set has room
    /// below `max` (counting the jobs assigned or acquired already). They stay pending until
    /// [`Self::acquired`] says how the acquisition went.
    pub fn acquirable(&self, limits: Limits) -> Vec<i64> {
        let taken = usize_of(self.statistics.assigned_jobs)
            .saturating_add(usize_of(self.statistics.acquired_jobs))
            .max(self.assigned.len());
        let room = limits.max.saturating_sub(taken);
        let mut ids: Vec<i64> = self.available.values().copied().collect();
        ids.sort_unstable();
        ids.truncate(room);
        ids
    }

    /// The acquisition of `asked` answered: every asked job leaves the pending ones (those won
    /// come back as `JobAssigned`; the others went elsewhere).
    pub fn acquired(&mut self, asked: &[i64]) {
        self.available.retain(|_, id| !asked.contains(id));
    }

    /// Forgets a runner whose instance is gone: it is busy no more (its job, if it did not
    /// finish, comes back as completed or assigned again).
    pub fn forget_runner(&mut self, name: &str) {
        self.busy.remove(name);
    }
}

fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "scaler_tests.rs"]
mod tests;
