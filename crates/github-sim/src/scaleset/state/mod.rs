//! Scale-set state: scale sets, sessions, admin and queue tokens, the per-set message log, the
//! per-set job life cycle and the statistics. A submodule of `state` (this file lives with the
//! rest of the scale-set code), so it shares the job queue and the runner table.
//!
//! A queued job whose labels a scale set has (all of them, ignoring case) and whose scope and
//! group allow the set is claimed by the set with the lowest id, and leaves the runner queue.
//! Its life in the set: `Pending` → (`Offered` → `acquirejobs` in GHES mode) → `Assigned` (while
//! the set's assigned jobs are below the capacity of its last poll) → `Running` on an idle
//! online runner of the set (`JobStarted`) → `Done` (`JobCompleted`). An assigned job that no
//! runner takes in `assign_timeout` is cancelled (`JobCompleted{canceled}`) and goes back to
//! `Pending` after a growing delay, at most `max_reassignments` times.
//!
//! Here: the types, the sets and the claims; `messages.rs` (the message log and the statistics),
//! `pump.rs` (the rules that move jobs), `sessions.rs` (sessions and queue tokens), `views.rs`.

use std::collections::HashSet;

use super::*;
use crate::scaleset::{AcquireMode, ScaleSetConfig};

mod messages;
mod pump;
mod sessions;
mod views;

/// Messages per envelope (GitHub truncates larger batches).
const MAX_JOBS_PER_MESSAGE: usize = 50;

/// The first message id (GitHub's fresh sets start at 100000001).
const FIRST_MESSAGE_ID: i64 = 100_000_001;

/// Faults specific to the protocol (`POST /_sim/scalesets/faults`). Status faults (5xx, 429
/// with `Retry-After`) on any endpoint go through `POST /_sim/faults`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleSetFaults {
    /// The next N queue GETs answer 200 with an empty body (the broker's `EOF` bug).
    pub empty_body: u32,
    /// Every envelope (and session) carries all-zero statistics while jobs are assigned (the
    /// ARC #3420 bug), until cleared.
    pub statistics_zero: bool,
    /// The next N session creations and refreshes answer an empty `messageQueueUrl`.
    pub empty_queue_url: u32,
}

/// Where a job stands in its scale set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SsJobState {
    /// Claimed by the set, waiting for capacity.
    Pending,
    /// `JobAvailable` sent (GHES), waiting for `acquirejobs`.
    Offered,
    /// `JobAssigned` sent, waiting for a runner of the set.
    Assigned { since: Instant },
    /// On a runner of the set (`JobStarted` sent).
    Running { runner_id: u64 },
    /// Cancelled by the re-assignment timeout; pending again at `at`.
    Requeued { at: Instant },
    /// `JobCompleted` sent (or the job was finished outside the set).
    Done,
}

impl SsJobState {
    fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Offered => "available",
            Self::Assigned { .. } => "assigned",
            Self::Running { .. } => "running",
            Self::Requeued { .. } => "requeued",
            Self::Done => "completed",
        }
    }
}

/// A job claimed by a scale set.
#[derive(Debug)]
pub(crate) struct SsJob {
    pub set_id: u64,
    /// `jobId` of the messages (a UUID, as on github.com).
    pub uuid: String,
    /// `runnerRequestId` (0 in hosted mode).
    pub request_id: i64,
    pub state: SsJobState,
    pub scale_set_assign_time: Option<OffsetDateTime>,
    /// When the last `JobAvailable` was sent (GHES).
    pub offered_at: Option<Instant>,
    pub runner_assign_time: Option<OffsetDateTime>,
    /// Re-assignments after a cancel (at most `max_reassignments`).
    pub reassignments: u32,
    pub result: Option<String>,
    /// Message types sent for it, in order.
    pub history: Vec<&'static str>,
}

#[derive(Debug)]
pub(crate) struct Message {
    pub id: i64,
    pub jobs: Vec<Value>,
    /// Times handed out by a poll (a handed-out message never changes).
    pub deliveries: u32,
}

#[derive(Debug)]
pub(crate) struct ScaleSet {
    pub id: u64,
    pub name: String,
    pub scope: Scope,
    pub group_id: u64,
    pub group_name: String,
    pub labels: Vec<String>,
    pub disable_update: bool,
    pub created_on: OffsetDateTime,
    /// `X-ScaleSetMaxCapacity` of the last poll (`None` before the first one: nothing assigned).
    pub capacity: Option<i64>,
    pub messages: VecDeque<Message>,
    pub acked: u64,
    pub notify: Arc<Notify>,
    pub session: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub id: String,
    pub set_id: u64,
    pub owner: String,
    pub last_active: Instant,
    pub active_polls: u32,
    pub polls: u64,
}

/// Why a queue token was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum QueueAuthError {
    Unknown,
    Expired,
}

/// Why a session could not be created.
#[derive(Debug)]
pub(crate) enum SessionError {
    NoSet,
    Conflict(String),
}

/// Why a scale set could not be deleted.
#[derive(Debug)]
pub(crate) enum DeleteSetError {
    NoSet,
    Busy(String),
}

/// The protocol's state.
#[derive(Debug)]
pub(crate) struct ScaleSets {
    pub cfg: ScaleSetConfig,
    pub faults: ScaleSetFaults,
    /// HS256 key of the admin JWTs.
    pub jwt_secret: Vec<u8>,
    /// `jti`s of every admin token handed out, and those revoked by the expire hook.
    pub admin_issued: Vec<String>,
    pub admin_revoked: HashSet<String>,
    next_set_id: u64,
    next_message_id: i64,
    next_request_id: i64,
    pub sets: BTreeMap<u64, ScaleSet>,
    pub sessions: HashMap<String, Session>,
    /// Queue tokens → their session.
    queue_tokens: TokenTable<String>,
    pub jobs: BTreeMap<u64, SsJob>,
    /// Times each job was handed to a runner (pick-up), for exactly-once checks.
    pub runs: BTreeMap<u64, u32>,
    /// Runner → set.
    pub runner_sets: HashMap<u64, u64>,
    /// Runners killed by the test hook, and since when a busy runner has been lost.
    pub killed: HashSet<u64>,
    pub lost_since: HashMap<u64, Instant>,
}

impl ScaleSets {
    pub(crate) fn new(cfg: ScaleSetConfig) -> Self {
        Self {
            cfg,
            faults: ScaleSetFaults::default(),
            jwt_secret: random_string(ALNUM, 48).into_bytes(),
            admin_issued: Vec::new(),
            admin_revoked: HashSet::new(),
            next_set_id: 1,
            next_message_id: FIRST_MESSAGE_ID,
            next_request_id: 10_001,
            sets: BTreeMap::new(),
            sessions: HashMap::new(),
            queue_tokens: TokenTable::default(),
            jobs: BTreeMap::new(),
            runs: BTreeMap::new(),
            runner_sets: HashMap::new(),
            killed: HashSet::new(),
            lost_since: HashMap::new(),
        }
    }
}

/// `succeeded`, `failed` or `canceled` from a REST conclusion.
fn result_of(conclusion: Option<&str>) -> &'static str {
    match conclusion {
        Some("success") => "succeeded",
        Some("cancelled") => "canceled",
        _ => "failed",
    }
}

impl State {
    // ---------------------------------------------------------------- sets

    pub(crate) fn ss(&self) -> &ScaleSets {
        &self.scalesets
    }

    pub(crate) fn ss_mut(&mut self) -> &mut ScaleSets {
        &mut self.scalesets
    }

    /// A scale set of `scope`.
    pub(crate) fn ss_set(&self, scope: &Scope, id: u64) -> Option<&ScaleSet> {
        self.scalesets.sets.get(&id).filter(|s| s.scope == *scope)
    }

    /// Creates a scale set (name unique within its group); `Err` is the conflicting set's id.
    pub(crate) fn ss_create_set(
        &mut self,
        scope: &Scope,
        name: String,
        group: &crate::config::GroupConfig,
        labels: Vec<String>,
        disable_update: bool,
    ) -> Result<u64, u64> {
        if let Some(existing) = self.scalesets.sets.values().find(|s| {
            s.scope == *scope && s.group_id == group.id && s.name.eq_ignore_ascii_case(&name)
        }) {
            return Err(existing.id);
        }
        let id = self.scalesets.next_set_id;
        self.scalesets.next_set_id += 1;
        let now = self.clock.now();
        self.scalesets.sets.insert(
            id,
            ScaleSet {
                id,
                name,
                scope: scope.clone(),
                group_id: group.id,
                group_name: group.name.clone(),
                labels,
                disable_update,
                created_on: self.clock.wall(now),
                capacity: None,
                messages: VecDeque::new(),
                acked: 0,
                notify: Arc::new(Notify::new()),
                session: None,
            },
        );
        self.ss_pump();
        Ok(id)
    }

    /// Deletes a scale set: refused while a runner of the set holds a job; its jobs not on a
    /// runner go back to the queue, its runners and sessions are deleted.
    pub(crate) fn ss_delete_set(&mut self, scope: &Scope, id: u64) -> Result<(), DeleteSetError> {
        if self.ss_set(scope, id).is_none() {
            return Err(DeleteSetError::NoSet);
        }
        let runners: Vec<u64> = self
            .runners
            .values()
            .filter(|r| r.scale_set == Some(id))
            .map(|r| r.id)
            .collect();
        if let Some(busy) = runners
            .iter()
            .filter_map(|r| self.runners.get(r))
            .find(|r| r.job.is_some())
        {
            return Err(DeleteSetError::Busy(busy.name.clone()));
        }
        let returned: Vec<u64> = self
            .scalesets
            .jobs
            .iter()
            .filter(|(_, j)| j.set_id == id && j.state != SsJobState::Done)
            .map(|(job_id, _)| *job_id)
            .collect();
        for job_id in &returned {
            self.scalesets.jobs.remove(job_id);
        }
        for runner_id in runners {
            self.remove_runner(runner_id);
            self.scalesets.runner_sets.remove(&runner_id);
        }
        let sessions: Vec<String> = self
            .scalesets
            .sessions
            .values()
            .filter(|s| s.set_id == id)
            .map(|s| s.id.clone())
            .collect();
        for session in sessions {
            self.ss_drop_session(&session);
        }
        if let Some(set) = self.scalesets.sets.remove(&id) {
            set.notify.notify_waiters();
        }
        let mut returned = returned;
        returned.sort_unstable();
        for job_id in returned {
            self.queue.push_back(job_id);
        }
        self.try_assign();
        self.ss_pump();
        Ok(())
    }

    // ---------------------------------------------------------------- matching and claims

    /// Whether `set` may take `job`: the set has all its labels (ignoring case); its group and
    /// scope allow it.
    fn ss_set_matches(&self, set: &ScaleSet, job: &Job) -> bool {
        // A job always has `runs-on` labels on GitHub; a label-less sim job is no set's.
        if job.labels.is_empty() {
            return false;
        }
        let has_labels = job
            .labels
            .iter()
            .all(|want| set.labels.iter().any(|l| l.eq_ignore_ascii_case(want)));
        if !has_labels {
            return false;
        }
        if let Some(wanted) = &job.runner_group {
            if !set.group_name.eq_ignore_ascii_case(wanted) {
                return false;
            }
        }
        let Some(scope) = &job.scope else { return true };
        let scope_ok = match (scope, &set.scope) {
            (_, Scope::Enterprise(_)) => true,
            (a, b) if a == b => true,
            (Scope::Repo { owner, .. }, Scope::Org(org)) => owner == org,
            _ => false,
        };
        let group = self.group_ref(&set.scope, set.group_id);
        let group_ok = match (scope, group.and_then(|g| g.selected_repositories.as_ref())) {
            (Scope::Repo { owner, repo }, Some(selected)) if set.scope.has_groups() => {
                selected.contains(&format!("{owner}/{repo}"))
            }
            _ => true,
        };
        scope_ok && group_ok
    }

    /// Moves every queued job some scale set matches out of the runner queue into that set.
    fn ss_claim_queue(&mut self) {
        if self.scalesets.sets.is_empty() {
            return;
        }
        let queued: Vec<u64> = self.queue.iter().copied().collect();
        for job_id in queued {
            let Some(job) = self.jobs.get(&job_id) else {
                continue;
            };
            let Some(set_id) = self
                .scalesets
                .sets
                .values()
                .find(|s| self.ss_set_matches(s, job))
                .map(|s| s.id)
            else {
                continue;
            };
            self.queue.retain(|id| *id != job_id);
            let hosted = self.scalesets.cfg.mode == AcquireMode::Hosted;
            let request_id = if hosted {
                0
            } else {
                let id = self.scalesets.next_request_id;
                self.scalesets.next_request_id += 1;
                id
            };
            let uuid = match self.scalesets.jobs.remove(&job_id) {
                Some(old) => old.uuid,
                None => uuid::Uuid::new_v4().to_string(),
            };
            self.scalesets.jobs.insert(
                job_id,
                SsJob {
                    set_id,
                    uuid,
                    request_id,
                    state: SsJobState::Pending,
                    scale_set_assign_time: None,
                    offered_at: None,
                    runner_assign_time: None,
                    reassignments: 0,
                    result: None,
                    history: Vec::new(),
                },
            );
        }
    }

    /// Claims a freshly queued job for a scale set; whether one took it.
    pub(super) fn ss_claim(&mut self, job_id: u64) -> bool {
        self.ss_claim_queue();
        if self.scalesets.jobs.contains_key(&job_id) {
            self.ss_pump();
            true
        } else {
            false
        }
    }
}
