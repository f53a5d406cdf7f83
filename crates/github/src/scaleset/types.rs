//! Public types of the scale-set client (converted by hand from `wire.rs`).

use time::OffsetDateTime;

use crate::secret::Secret;

/// A runner scale set as the Actions service returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSet {
    pub id: u64,
    /// Unique within the runner group; also the set's default label.
    pub name: String,
    pub runner_group_id: u64,
    pub runner_group_name: String,
    /// Label names (all of type `System` on the wire).
    pub labels: Vec<String>,
    /// `RunnerSetting.disableUpdate`.
    pub disable_update: bool,
    /// `createdOn`; `None` when absent or unparsable (requests send Go's zero time).
    pub created_on: Option<OffsetDateTime>,
    /// Present only when the service sent it.
    pub statistics: Option<Statistics>,
}

/// What to create with [`ScaleSetClient::create_scale_set`](super::ScaleSetClient::create_scale_set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScaleSet {
    pub name: String,
    /// `1` is the default group (see [`DEFAULT_RUNNER_GROUP_ID`](crate::DEFAULT_RUNNER_GROUP_ID)).
    pub runner_group_id: u64,
    /// Sent as `System` labels. Empty: the client sends the name as the only label, as the Go
    /// client does. More than one label needs GHES 3.18+ with a feature flag, otherwise the
    /// service silently keeps only the name.
    pub labels: Vec<String>,
    /// `RunnerSetting.disableUpdate`; ARC and the Go example send `true`.
    pub disable_update: bool,
}

impl NewScaleSet {
    /// A set in the default group, labelled with its name, with runner updates disabled.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            runner_group_id: crate::DEFAULT_RUNNER_GROUP_ID,
            labels: Vec::new(),
            disable_update: true,
        }
    }
}

/// A partial update for [`ScaleSetClient::update_scale_set`](super::ScaleSetClient::update_scale_set):
/// `None` fields are not sent (the service merges only what is present).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleSetPatch {
    pub name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub labels: Option<Vec<String>>,
    /// `Some(true)` sends `RunnerSetting: {"disableUpdate": true}`; otherwise `RunnerSetting: {}`
    /// (Go omits a false `disableUpdate`).
    pub disable_update: Option<bool>,
}

/// The counters the service attaches to sessions, messages and (optionally) scale sets.
/// They are current at the message; counting job messages does not give them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Statistics {
    /// Matching jobs waiting to be acquired (GHES acquire flow only).
    pub total_available_jobs: u32,
    /// Acquired by the set, not yet assigned (GHES acquire flow only).
    pub total_acquired_jobs: u32,
    /// **The scaling signal**: jobs assigned to the set, waiting or running.
    pub total_assigned_jobs: u32,
    /// Jobs running (or about to run) on a runner.
    pub total_running_jobs: u32,
    pub total_registered_runners: u32,
    pub total_busy_runners: u32,
    pub total_idle_runners: u32,
}

/// A message session: the one active listener connection of a scale set.
///
/// The queue URL and its access token are private; the token never shows in `Debug`. The client
/// replaces them when the service answers 401 on a queue call (see
/// [`ScaleSetClient::refresh_session`](super::ScaleSetClient::refresh_session)).
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub owner_name: String,
    pub scale_set: ScaleSet,
    /// The statistics at session creation (or at the last refresh).
    pub statistics: Statistics,
    pub(crate) queue_url: url::Url,
    pub(crate) queue_token: Secret,
}

/// One message from the queue: the statistics now, and the job messages (at most 50).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Increasing; pass it as `last_message_id` to the next poll and to `delete_message`.
    pub id: i64,
    pub statistics: Statistics,
    /// In the order the service sent them. Inner message types this client does not know are
    /// skipped.
    pub jobs: Vec<JobMessage>,
}

/// One job message of a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMessage {
    /// GHES flow: a matching job the set may acquire (`acquire_jobs` with its
    /// `runner_request_id`).
    Available(JobInfo),
    /// The job is assigned to the set and waits for one of its runners.
    Assigned(JobInfo),
    /// A runner of the set took the job.
    Started(JobStarted),
    /// The job finished, or was cancelled (also when no runner took it in time).
    Completed(JobCompleted),
}

/// The fields every job message carries. Times are `None` when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInfo {
    /// The input to `acquire_jobs`; **0 on github.com** since 2025: never key on it.
    pub runner_request_id: i64,
    /// Follows one workflow job through Assigned, Started and Completed (a UUID on github.com).
    pub job_id: String,
    pub owner_name: String,
    pub repository_name: String,
    pub workflow_run_id: i64,
    pub job_workflow_ref: String,
    pub job_display_name: String,
    pub event_name: String,
    /// The job's `runs-on`.
    pub request_labels: Vec<String>,
    pub queue_time: Option<OffsetDateTime>,
    pub scale_set_assign_time: Option<OffsetDateTime>,
    pub runner_assign_time: Option<OffsetDateTime>,
    pub finish_time: Option<OffsetDateTime>,
}

/// `JobStarted`: the job runs on one of our runners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStarted {
    pub job: JobInfo,
    /// The id from `generate_jit_config`.
    pub runner_id: u64,
    /// The name given to `generate_jit_config`: the only link to *your* runner.
    pub runner_name: String,
}

/// `JobCompleted`. `runner_id`/`runner_name` are `None` when no runner took the job (a
/// cancelled run, or a re-assignment timeout: the job is then sent again as `Assigned`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCompleted {
    pub job: JobInfo,
    pub result: JobResult,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
}

/// A completed job's `result`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobResult {
    Succeeded,
    Failed,
    /// `canceled` (one l). Does not mean the runner exited.
    Canceled,
    /// Any other value, kept as sent (empty when absent).
    Other(String),
}

impl JobResult {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::Other(other) => other,
        }
    }
}

/// A runner of a scale set, as the service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetRunner {
    pub id: u64,
    pub name: String,
    /// 0 when the service did not say.
    pub scale_set_id: u64,
}

/// The answer of `generate_jit_config`: the runner, **registered at once (offline)**, and its
/// single-use config for `run.sh --jitconfig` (or `ACTIONS_RUNNER_INPUT_JITCONFIG`).
#[derive(Debug, Clone)]
pub struct ScaleSetJit {
    pub runner: ScaleSetRunner,
    /// `encodedJITConfig`. A secret: never log it, never put it on a command line.
    pub encoded: Secret,
}

/// The outcome of `remove_runner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoveRunner {
    /// Removed, or already absent.
    Removed,
    /// The runner is running a job (`JobStillRunningException`): it was left alone.
    JobStillRunning,
}
