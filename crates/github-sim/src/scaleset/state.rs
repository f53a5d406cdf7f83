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

use std::collections::HashSet;

use super::*;
use crate::scaleset::{AcquireMode, ScaleSetConfig};

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

#[derive(Debug)]
struct QueueToken {
    session_id: String,
    expires: Instant,
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
    queue_tokens: HashMap<String, QueueToken>,
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
            queue_tokens: HashMap::new(),
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

    // ---------------------------------------------------------------- messages

    /// One job message of `kind` for `job_id`, from the job and its scale-set record.
    fn ss_job_message(&self, job_id: u64, kind: &'static str) -> Option<Value> {
        let job = self.jobs.get(&job_id)?;
        let ss = self.scalesets.jobs.get(&job_id)?;
        let repo = self.job_repo(job.scope.as_ref());
        let (owner, repo_name) = repo.split_once('/').unwrap_or((repo.as_str(), ""));
        let mut message = json!({
            "messageType": kind,
            "runnerRequestId": ss.request_id,
            "jobId": ss.uuid,
            "ownerName": owner,
            "repositoryName": repo_name,
            "workflowRunId": job.run_id,
            "jobWorkflowRef": format!(
                "{repo}/.github/workflows/{}.yml@refs/heads/main",
                job.workflow.to_ascii_lowercase().replace(' ', "-")
            ),
            "jobDisplayName": job.name,
            "eventName": job.event_name,
            "requestLabels": job.labels,
            "queueTime": rfc3339(job.created_at),
        });
        let fields = message.as_object_mut()?;
        if kind == "JobAvailable" {
            fields.insert(
                "acquireJobUrl".into(),
                json!(format!(
                    "{}_apis/runtime/runnerscalesets/{}/acquirejobs",
                    crate::scaleset::TENANT_PATH,
                    ss.set_id
                )),
            );
        }
        if let Some(t) = ss.scale_set_assign_time {
            fields.insert("scaleSetAssignTime".into(), json!(rfc3339(t)));
        }
        let with_runner = matches!(kind, "JobStarted" | "JobCompleted")
            && job.runner_id.is_some()
            && ss.runner_assign_time.is_some();
        if with_runner {
            fields.insert("runnerId".into(), json!(job.runner_id));
            fields.insert("runnerName".into(), json!(job.runner_name));
            if let Some(t) = ss.runner_assign_time {
                fields.insert("runnerAssignTime".into(), json!(rfc3339(t)));
            }
        }
        if kind == "JobCompleted" {
            let now = self.clock.wall(self.clock.now());
            fields.insert(
                "finishTime".into(),
                json!(rfc3339(job.completed_at.unwrap_or(now))),
            );
            fields.insert("result".into(), json!(ss.result));
        }
        Some(message)
    }

    /// `JobAvailable` messages of the jobs offered to a set (the legacy `acquirablejobs`).
    pub(crate) fn ss_offered_messages(&self, set_id: u64) -> Vec<Value> {
        self.scalesets
            .jobs
            .iter()
            .filter(|(_, j)| j.set_id == set_id && j.state == SsJobState::Offered)
            .filter_map(|(id, _)| self.ss_job_message(*id, "JobAvailable"))
            .collect()
    }

    /// Appends a job message to its set's log: to the newest message if no poll has handed it
    /// out yet and it has room, else as a new message.
    fn ss_send(&mut self, job_id: u64, kind: &'static str) {
        let Some(message) = self.ss_job_message(job_id, kind) else {
            return;
        };
        let Some(ss) = self.scalesets.jobs.get_mut(&job_id) else {
            return;
        };
        ss.history.push(kind);
        let set_id = ss.set_id;
        let Some(set) = self.scalesets.sets.get_mut(&set_id) else {
            return;
        };
        match set.messages.back_mut() {
            Some(last) if last.deliveries == 0 && last.jobs.len() < MAX_JOBS_PER_MESSAGE => {
                last.jobs.push(message);
            }
            _ => {
                let id = self.scalesets.next_message_id;
                self.scalesets.next_message_id += 1;
                set.messages.push_back(Message {
                    id,
                    jobs: vec![message],
                    deliveries: 0,
                });
            }
        }
        set.notify.notify_waiters();
    }

    /// The statistics of a set, from state (never from the messages).
    pub(crate) fn ss_statistics(&self, set_id: u64) -> Value {
        let (mut available, mut assigned, mut running) = (0u64, 0u64, 0u64);
        for job in self.scalesets.jobs.values().filter(|j| j.set_id == set_id) {
            match job.state {
                SsJobState::Offered => available += 1,
                SsJobState::Assigned { .. } => assigned += 1,
                SsJobState::Running { .. } => {
                    assigned += 1;
                    running += 1;
                }
                _ => {}
            }
        }
        let (mut registered, mut busy) = (0u64, 0u64);
        for runner in self
            .runners
            .values()
            .filter(|r| r.scale_set == Some(set_id))
        {
            registered += 1;
            busy += u64::from(runner.job.is_some());
        }
        let stats = |a, q, s, r, reg, b, i| {
            json!({
                "totalAvailableJobs": a,
                "totalAcquiredJobs": q,
                "totalAssignedJobs": s,
                "totalRunningJobs": r,
                "totalRegisteredRunners": reg,
                "totalBusyRunners": b,
                "totalIdleRunners": i,
            })
        };
        if self.scalesets.faults.statistics_zero {
            return stats(0, 0, 0, 0, 0, 0, 0);
        }
        stats(
            available,
            0,
            assigned,
            running,
            registered,
            busy,
            registered - busy,
        )
    }

    /// The oldest message of the set with an id above `last`, as an envelope (fresh
    /// statistics); counts the delivery.
    pub(crate) fn ss_next_message(&mut self, set_id: u64, last: i64) -> Option<Value> {
        let statistics = self.ss_statistics(set_id);
        let set = self.scalesets.sets.get_mut(&set_id)?;
        let message = set.messages.iter_mut().find(|m| m.id > last)?;
        message.deliveries += 1;
        let body = serde_json::to_string(&message.jobs).unwrap_or_default();
        Some(json!({
            "messageId": message.id,
            "messageType": "RunnerScaleSetJobMessages",
            "statistics": statistics,
            "body": body,
        }))
    }

    /// Acks (deletes) a message of the set; whether it was there.
    pub(crate) fn ss_ack(&mut self, set_id: u64, message_id: i64) -> bool {
        let Some(set) = self.scalesets.sets.get_mut(&set_id) else {
            return false;
        };
        let before = set.messages.len();
        set.messages.retain(|m| m.id != message_id);
        let removed = set.messages.len() < before;
        set.acked += u64::from(removed);
        removed
    }

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
                let name = self
                    .runners
                    .get(&runner_id)
                    .map(|r| r.name.clone())
                    .unwrap_or_default();
                self.remove_runner_because(
                    runner_id,
                    &format!("The self-hosted runner: {name} lost communication with the server."),
                );
                self.ss_forget_runner(runner_id);
            }
        }
    }

    // ---------------------------------------------------------------- hooks from the job queue

    /// A runner of a set polled or freed up: run the rules.
    pub(super) fn ss_runner_ready(&mut self) {
        self.ss_pump();
    }

    /// A scale-set job taken back from a runner before it picked it up: assigned to the set
    /// again. Whether the job is a scale-set job.
    pub(super) fn ss_release_undelivered(&mut self, job_id: u64) -> bool {
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
    pub(super) fn ss_job_delivered(&mut self, job_id: u64) {
        if self.scalesets.jobs.contains_key(&job_id) {
            *self.scalesets.runs.entry(job_id).or_insert(0) += 1;
        }
    }

    /// A scale-set job finished (completed by its runner, or failed when its runner was lost or
    /// removed): `JobCompleted` with the runner.
    pub(super) fn ss_job_finished(&mut self, job_id: u64) {
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

    // ---------------------------------------------------------------- sessions and tokens

    fn ss_issue_queue_token(&mut self, session_id: &str) -> String {
        let now = self.clock.now();
        self.scalesets.queue_tokens.retain(|_, t| t.expires > now);
        let token = format!("simqueue_{}", random_string(ALNUM, 40));
        self.record_scaleset_token(false, &token);
        let expires = now + self.scalesets.cfg.queue_token_ttl;
        self.scalesets.queue_tokens.insert(
            token.clone(),
            QueueToken {
                session_id: session_id.to_owned(),
                expires,
            },
        );
        token
    }

    /// Sessions not polled nor refreshed for `session_timeout` expire.
    fn ss_expire_sessions(&mut self) {
        let now = self.clock.now();
        let timeout = self.scalesets.cfg.session_timeout;
        let stale: Vec<String> = self
            .scalesets
            .sessions
            .values()
            .filter(|s| {
                s.active_polls == 0 && now.saturating_duration_since(s.last_active) >= timeout
            })
            .map(|s| s.id.clone())
            .collect();
        for id in stale {
            self.ss_drop_session(&id);
        }
    }

    /// Removes a session and its queue tokens (the expire hook, DELETE, expiry); whether it
    /// existed.
    pub(crate) fn ss_drop_session(&mut self, session_id: &str) -> bool {
        let Some(session) = self.scalesets.sessions.remove(session_id) else {
            return false;
        };
        self.scalesets
            .queue_tokens
            .retain(|_, t| t.session_id != session_id);
        if let Some(set) = self.scalesets.sets.get_mut(&session.set_id) {
            if set.session.as_deref() == Some(session_id) {
                set.session = None;
            }
            set.notify.notify_waiters();
        }
        true
    }

    /// Creates the set's session: `(session id, queue token)`.
    pub(crate) fn ss_create_session(
        &mut self,
        scope: &Scope,
        set_id: u64,
        owner: String,
    ) -> Result<(String, String), SessionError> {
        self.ss_expire_sessions();
        let Some(set) = self.ss_set(scope, set_id) else {
            return Err(SessionError::NoSet);
        };
        if set.session.is_some() {
            return Err(SessionError::Conflict(set.name.clone()));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock.now();
        self.scalesets.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                set_id,
                owner,
                last_active: now,
                active_polls: 0,
                polls: 0,
            },
        );
        if let Some(set) = self.scalesets.sets.get_mut(&set_id) {
            set.session = Some(id.clone());
        }
        let token = self.ss_issue_queue_token(&id);
        Ok((id, token))
    }

    /// A new queue token for a live session of the set.
    pub(crate) fn ss_refresh_session(&mut self, set_id: u64, session_id: &str) -> Option<String> {
        self.ss_expire_sessions();
        let now = self.clock.now();
        let session = self
            .scalesets
            .sessions
            .get_mut(session_id)
            .filter(|s| s.set_id == set_id)?;
        session.last_active = now;
        Some(self.ss_issue_queue_token(session_id))
    }

    /// The session of a queue token: `(session id, set id)`.
    pub(crate) fn ss_check_queue_token(
        &mut self,
        token: &str,
    ) -> Result<(String, u64), QueueAuthError> {
        self.ss_expire_sessions();
        let now = self.clock.now();
        let t = self
            .scalesets
            .queue_tokens
            .get(token)
            .ok_or(QueueAuthError::Unknown)?;
        if t.expires <= now {
            return Err(QueueAuthError::Expired);
        }
        let session = self
            .scalesets
            .sessions
            .get(&t.session_id)
            .ok_or(QueueAuthError::Unknown)?;
        Ok((session.id.clone(), session.set_id))
    }

    /// Expires every queue token handed out so far (test hook).
    pub(crate) fn ss_expire_queue_tokens(&mut self) -> usize {
        let now = self.clock.now();
        let n = self.scalesets.queue_tokens.len();
        for t in self.scalesets.queue_tokens.values_mut() {
            t.expires = now;
        }
        n
    }

    /// A poll starts (`capacity` from `X-ScaleSetMaxCapacity`): the session is active.
    pub(crate) fn ss_poll_started(&mut self, session_id: &str, set_id: u64, capacity: i64) {
        let now = self.clock.now();
        if let Some(session) = self.scalesets.sessions.get_mut(session_id) {
            session.active_polls += 1;
            session.polls += 1;
            session.last_active = now;
        }
        if let Some(set) = self.scalesets.sets.get_mut(&set_id) {
            set.capacity = Some(capacity);
        }
        self.ss_pump();
    }

    pub(crate) fn ss_poll_ended(&mut self, session_id: &str) {
        let now = self.clock.now();
        if let Some(session) = self.scalesets.sessions.get_mut(session_id) {
            session.active_polls = session.active_polls.saturating_sub(1);
            session.last_active = now;
        }
    }

    /// The set's wake-up for long polls.
    pub(crate) fn ss_notify(&self, set_id: u64) -> Option<Arc<Notify>> {
        self.scalesets.sets.get(&set_id).map(|s| s.notify.clone())
    }

    /// Periodic housekeeping (from [`State::reap`]).
    pub(super) fn ss_reap(&mut self) {
        self.ss_expire_sessions();
        self.ss_pump();
    }

    // ---------------------------------------------------------------- views

    /// A scale-set job for the dump.
    fn ss_job_json(&self, job_id: u64, ss: &SsJob) -> Value {
        let job = self.jobs.get(&job_id);
        json!({
            "job_id": job_id,
            "jobId": ss.uuid,
            "runnerRequestId": ss.request_id,
            "scale_set_id": ss.set_id,
            "state": ss.state.name(),
            "runner_id": match ss.state { SsJobState::Running { runner_id } => Some(runner_id), _ => job.and_then(|j| j.runner_id) },
            "runner_name": job.and_then(|j| j.runner_name.clone()),
            "result": ss.result,
            "reassignments": ss.reassignments,
            "runs": self.scalesets.runs.get(&job_id).copied().unwrap_or(0),
            "messages": ss.history,
            "status": job.map(|j| j.status),
            "conclusion": job.and_then(|j| j.conclusion.clone()),
            "labels": job.map(|j| j.labels.clone()),
        })
    }

    /// The whole scale-set state, for assertions (`GET /_sim/scalesets`).
    pub(crate) fn ss_dump(&self) -> Value {
        let now = self.clock.now();
        let sets: Vec<Value> = self
            .scalesets
            .sets
            .values()
            .map(|set| {
                let jobs: Vec<Value> = self
                    .scalesets
                    .jobs
                    .iter()
                    .filter(|(_, j)| j.set_id == set.id)
                    .map(|(id, j)| self.ss_job_json(*id, j))
                    .collect();
                let runners: Vec<Value> = self
                    .runners
                    .values()
                    .filter(|r| r.scale_set == Some(set.id))
                    .map(|r| {
                        let view = self.runner_view(r, now);
                        json!({
                            "id": r.id,
                            "name": r.name,
                            "status": view.status,
                            "busy": view.busy,
                            "job_id": r.job,
                            "killed": self.scalesets.killed.contains(&r.id),
                        })
                    })
                    .collect();
                json!({
                    "id": set.id,
                    "name": set.name,
                    "scope": set.scope.path(),
                    "runner_group_id": set.group_id,
                    "runner_group_name": set.group_name,
                    "labels": set.labels,
                    "capacity": set.capacity,
                    "session_id": set.session,
                    "statistics": self.ss_statistics(set.id),
                    "messages": self.ss_messages_json(set.id),
                    "acked_messages": set.acked,
                    "jobs": jobs,
                    "runners": runners,
                })
            })
            .collect();
        json!({
            "mode": self.scalesets.cfg.mode,
            "scale_sets": sets,
            "sessions": self.ss_sessions_json(),
            "faults": self.scalesets.faults,
        })
    }

    /// The un-acked messages of a set.
    pub(crate) fn ss_messages_json(&self, set_id: u64) -> Value {
        let messages: Vec<Value> = self
            .scalesets
            .sets
            .get(&set_id)
            .map(|set| {
                set.messages
                    .iter()
                    .map(|m| json!({"messageId": m.id, "deliveries": m.deliveries, "jobs": m.jobs}))
                    .collect()
            })
            .unwrap_or_default();
        Value::Array(messages)
    }

    /// Every live session.
    pub(crate) fn ss_sessions_json(&self) -> Value {
        let now = self.clock.now();
        let mut sessions: Vec<&Session> = self.scalesets.sessions.values().collect();
        sessions.sort_by_key(|s| (s.set_id, s.id.clone()));
        Value::Array(
            sessions
                .into_iter()
                .map(|s| {
                    json!({
                        "sessionId": s.id,
                        "scale_set_id": s.set_id,
                        "ownerName": s.owner,
                        "polls": s.polls,
                        "polling": s.active_polls > 0,
                        "idle_ms": now.saturating_duration_since(s.last_active).as_millis() as u64,
                    })
                })
                .collect(),
        )
    }
}
