//! Job events: the hooks' records pulled from a removed runner's instance become the
//! `runner_start` and `runner_stop` events.

use super::RunnerManager;
use crate::events::{JobContext, RunnerStart, RunnerStop};
use crate::guest::{INSTALLED_FILE, POLICY_REFUSED_FILE, POST_JOB_FILE, PRE_JOB_FILE};

impl RunnerManager {
    /// Pulls the hooks' job records and emits `runner_start`/`runner_stop`; best effort.
    pub(super) async fn collect_job_events(&self, name: &str) {
        let pull = |path: &'static str| async move {
            self.provider
                .pull_file(name, path)
                .await
                .ok()
                .flatten()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        let (pre, post, refused, installed) = tokio::join!(
            pull(PRE_JOB_FILE),
            pull(POST_JOB_FILE),
            pull(POLICY_REFUSED_FILE),
            pull(INSTALLED_FILE)
        );
        let records = JobRecords {
            pre_job: pre,
            post_job: post,
            policy_refused: refused.is_some(),
            installed_at: installed,
        };
        if let Some((mut start, stop)) = job_events(name, &records, self.telemetry.now()) {
            // The job table knows how long the job waited, from GitHub's timestamps.
            start.queue_duration = self
                .jobs
                .job_on_runner(name)
                .ok()
                .flatten()
                .and_then(|job| job.queue_time())
                .map(|d| d.as_secs());
            start.emit(&self.telemetry);
            stop.emit(&self.telemetry);
        }
    }
}

/// The hooks' records pulled from an instance.
#[derive(Debug, Clone, Default)]
pub struct JobRecords {
    pub pre_job: Option<String>,
    pub post_job: Option<String>,
    pub policy_refused: bool,
    pub installed_at: Option<String>,
}

#[derive(serde::Deserialize)]
struct PreJob {
    timestamp: i64,
    #[serde(flatten)]
    job: JobContext,
}

#[derive(serde::Deserialize)]
struct PostJob {
    timestamp: i64,
}

/// The `runner_start` and `runner_stop` events for a runner that took a job; `None` if it never did.
pub fn job_events(name: &str, records: &JobRecords, now: i64) -> Option<(RunnerStart, RunnerStop)> {
    let pre: PreJob = serde_json::from_str(records.pre_job.as_deref()?.trim()).ok()?;
    let post: Option<PostJob> = records
        .post_job
        .as_deref()
        .and_then(|p| serde_json::from_str(p.trim()).ok());
    let installed: Option<i64> = records
        .installed_at
        .as_deref()
        .and_then(|s| s.trim().parse().ok());
    let idle = installed.map_or(0, |i| (pre.timestamp - i).max(0));
    let (status, end) = match (&post, records.policy_refused) {
        (_, true) => (
            "repo-policy-check-failure",
            post.as_ref().map_or(now, |p| p.timestamp),
        ),
        (Some(p), false) => ("normal", p.timestamp),
        (None, false) => ("abnormal", now),
    };
    let start = RunnerStart {
        name: name.to_owned(),
        timestamp: pre.timestamp,
        job: pre.job.clone(),
        idle: u64::try_from(idle).unwrap_or(0),
        queue_duration: None,
    };
    let stop = RunnerStop {
        name: name.to_owned(),
        timestamp: end,
        job: pre.job,
        status: status.to_owned(),
        job_duration: u64::try_from(end - pre.timestamp).unwrap_or(0),
    };
    Some((start, stop))
}
