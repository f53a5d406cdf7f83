//! The job table: what GitHub's `workflow_job` deliveries said about each job, kept in SQLite
//! under the state directory so that demand survives a restart.
//!
//! Deliveries can come twice (a redelivery), late, or out of order: a job's state only moves
//! forward (queued → in progress → completed), and a delivery's GUID is recorded so the same
//! delivery is applied once.

mod store;

pub use self::store::{JobStore, JobStoreError, Recorded};

use time::OffsetDateTime;

/// File name of the job table below the state directory.
pub const JOB_DB_FILE: &str = "jobs.sqlite";

/// A job's state as the deliveries tell it; ordered by progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobState {
    Queued,
    InProgress,
    Completed,
}

impl JobState {
    /// `queued`, `in_progress`, `completed`: the delivery's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    /// The state a delivery's `action` moves a job to; `None` for `waiting` (an environment's
    /// approval, no runner wanted yet) and unknown actions.
    pub fn from_action(action: &str) -> Option<Self> {
        match action {
            "queued" => Some(Self::Queued),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// One `workflow_job` delivery, in the manager's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// `X-GitHub-Delivery` (the delivery's GUID); `None` when unknown.
    pub delivery: Option<String>,
    pub job_id: u64,
    pub run_id: u64,
    pub state: JobState,
    pub facts: JobFacts,
}

/// What GitHub tells of a job besides its ids and state: in a delivery, or as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFacts {
    /// `runs-on`.
    pub labels: Vec<String>,
    /// `None` while queued.
    pub runner_name: Option<String>,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
}

/// A job as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    pub state: JobState,
    pub facts: JobFacts,
    /// When the table last changed this job.
    pub updated_at: OffsetDateTime,
}

impl Job {
    /// Queued → picked up, from GitHub's timestamps; `None` until it started.
    pub fn queue_time(&self) -> Option<std::time::Duration> {
        let started = self.facts.started_at?;
        (started - self.facts.created_at).try_into().ok()
    }
}
