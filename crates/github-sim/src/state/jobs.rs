//! The job queue: enqueue, match to runners, assign, pick up, complete and reap.

use super::*;

/// Output kept per job (bytes); longer output is truncated.
const MAX_OUTPUT: usize = 1 << 20;

/// Job status as the admin API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for (or assigned to, but not yet picked up by) a runner.
    Queued,
    /// Picked up by a runner.
    InProgress,
    /// Finished.
    Completed,
}

/// A job to enqueue through the admin API or [`crate::SimHandle::enqueue_job`]. Every field may
/// be left out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSpec {
    /// `runs-on` labels; a runner must have all of them (case-insensitive).
    pub labels: Vec<String>,
    /// Shell script run with `sh`.
    pub script: String,
    /// Job timeout (default 360 s); `timeout` is accepted too.
    #[serde(alias = "timeout")]
    pub timeout_seconds: Option<u64>,
    /// `owner/repo`, `org` or `enterprises/slug`; default: any runner of any scope.
    pub scope: Option<String>,
    /// Restricts the job to a runner group by name (`runs-on: {group: ...}`).
    pub runner_group: Option<String>,
    /// Event name (default `push`).
    pub event_name: Option<String>,
    /// Event payload (default: a small push event).
    pub event: Option<Value>,
    /// Workflow name (default `CI`).
    pub workflow: Option<String>,
    /// Job name (default `build`).
    pub name: Option<String>,
}

impl JobSpec {
    /// A job with these labels and script.
    pub fn new(labels: &[&str], script: impl Into<String>) -> Self {
        Self {
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            script: script.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    pub workflow: String,
    pub labels: Vec<String>,
    pub script: String,
    pub timeout_seconds: u64,
    pub scope: Option<Scope>,
    pub runner_group: Option<String>,
    pub event_name: String,
    pub event: Value,
    pub head_sha: String,
    pub status: JobStatus,
    pub conclusion: Option<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub runner_group_name: Option<String>,
    pub exit_code: Option<i32>,
    pub output: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    pub delivered_at: Option<Instant>,
    /// Its runner was deregistered by a REST `DELETE` while it ran (the busy-lie fault).
    pub killed_by_deletion: bool,
}

/// A job as the admin API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub job_id: u64,
    /// Workflow run id.
    pub run_id: u64,
    /// Job name.
    pub name: String,
    /// `runs-on` labels.
    pub labels: Vec<String>,
    /// Status.
    pub status: JobStatus,
    /// `success`, `failure` or `cancelled` once completed.
    pub conclusion: Option<String>,
    /// Runner that got the job.
    pub runner_name: Option<String>,
    /// Its id.
    pub runner_id: Option<u64>,
    /// Exit code of the script.
    pub exit_code: Option<i32>,
    /// Output of the script (stdout and stderr).
    pub output: String,
    /// Creation time.
    pub created_at: String,
    /// Time the runner picked it up.
    pub started_at: Option<String>,
    /// Completion time.
    pub completed_at: Option<String>,
    /// The job was killed because its runner was deleted through the REST API while it ran
    /// (only possible under the busy-lie fault, `POST /_sim/faults/busy-lie`). It then ended
    /// `failure`, with a `##[error]` line saying so at the end of `output`.
    #[serde(default)]
    pub killed_by_deletion: bool,
}

impl State {
    // ---------------------------------------------------------------- jobs

    /// Queues a job and assigns it if a runner can take it now.
    pub(crate) fn enqueue(&mut self, spec: JobSpec) -> Result<(u64, u64), String> {
        let (id, run_id) = self.queue_job(spec)?;
        if !self.ss_claim(id) {
            self.assign_job(id);
        }
        Ok((id, run_id))
    }

    /// Queues a job (and sends its `queued` webhook) without assigning it.
    fn queue_job(&mut self, spec: JobSpec) -> Result<(u64, u64), String> {
        let scope = match spec.scope.as_deref() {
            None | Some("") => None,
            Some(s) => {
                let parsed = Scope::parse(s).ok_or_else(|| format!("invalid scope {s:?}"))?;
                Some(
                    self.resolve_scope(&parsed)
                        .ok_or_else(|| format!("unknown scope {s:?}"))?,
                )
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let run_id = self.next_run_id;
        self.next_run_id += 1;
        let head_sha = random_string(b"0123456789abcdef", 40);
        let repo = self.job_repo(scope.as_ref());
        let event = spec.event.unwrap_or_else(|| {
            json!({"ref": "refs/heads/main", "after": head_sha, "repository": {"full_name": repo}})
        });
        let now = self.clock.now();
        self.jobs.insert(
            id,
            Job {
                id,
                run_id,
                name: spec.name.unwrap_or_else(|| "build".to_owned()),
                workflow: spec.workflow.unwrap_or_else(|| "CI".to_owned()),
                labels: spec.labels,
                script: spec.script,
                timeout_seconds: spec.timeout_seconds.unwrap_or(360),
                scope,
                runner_group: spec.runner_group,
                event_name: spec.event_name.unwrap_or_else(|| "push".to_owned()),
                event,
                head_sha,
                status: JobStatus::Queued,
                conclusion: None,
                runner_id: None,
                runner_name: None,
                runner_group_id: None,
                runner_group_name: None,
                exit_code: None,
                output: String::new(),
                created_at: self.clock.wall(now),
                started_at: None,
                completed_at: None,
                delivered_at: None,
                killed_by_deletion: false,
            },
        );
        self.queue.push_back(id);
        self.emit(id, "queued");
        Ok((id, run_id))
    }

    /// The repository a job runs for: its repo scope, a configured repo of its org, or the first repo.
    pub(super) fn job_repo(&self, scope: Option<&Scope>) -> String {
        match scope {
            Some(Scope::Repo { owner, repo }) => format!("{owner}/{repo}"),
            Some(Scope::Org(org)) => self
                .config
                .repos
                .iter()
                .find(|r| r.split('/').next() == Some(org.as_str()))
                .cloned()
                .unwrap_or_else(|| format!("{org}/app")),
            _ => self
                .config
                .repos
                .first()
                .cloned()
                .unwrap_or_else(|| "octo/app".to_owned()),
        }
    }

    pub(crate) fn job_view(&self, id: u64) -> Option<JobView> {
        let job = self.jobs.get(&id)?;
        Some(JobView {
            job_id: job.id,
            run_id: job.run_id,
            name: job.name.clone(),
            labels: job.labels.clone(),
            status: job.status,
            conclusion: job.conclusion.clone(),
            runner_name: job.runner_name.clone(),
            runner_id: job.runner_id,
            exit_code: job.exit_code,
            output: job.output.clone(),
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            completed_at: job.completed_at.map(rfc3339),
            killed_by_deletion: job.killed_by_deletion,
        })
    }

    pub(crate) fn job_views(&self) -> Vec<JobView> {
        self.jobs
            .keys()
            .filter_map(|id| self.job_view(*id))
            .collect()
    }

    /// Whether `runner` may take `job`: labels superset (case-insensitive), scope and group.
    fn runner_matches(&self, runner: &Runner, job: &Job) -> bool {
        // A scale set's runners take only the jobs assigned to their set (`scaleset/state/`).
        if runner.scale_set.is_some() {
            return false;
        }
        let has_labels = job.labels.iter().all(|want| {
            runner
                .labels
                .iter()
                .any(|l| l.name.eq_ignore_ascii_case(want))
        });
        if !has_labels {
            return false;
        }
        let group = self.group_ref(&runner.scope, runner.group_id);
        if let Some(wanted) = &job.runner_group {
            if !group
                .as_ref()
                .is_some_and(|g| g.name.eq_ignore_ascii_case(wanted))
            {
                return false;
            }
        }
        let Some(scope) = &job.scope else { return true };
        let scope_ok = match (scope, &runner.scope) {
            (_, Scope::Enterprise(_)) => true,
            (a, b) if a == b => true,
            (Scope::Repo { owner, .. }, Scope::Org(org)) => owner == org,
            _ => false,
        };
        let group_ok = match (scope, group.and_then(|g| g.selected_repositories.as_ref())) {
            (Scope::Repo { owner, repo }, Some(selected)) if runner.scope.has_groups() => {
                selected.contains(&format!("{owner}/{repo}"))
            }
            _ => true,
        };
        scope_ok && group_ok
    }

    /// Assigns every queued job (oldest first) that an online, idle, matching runner can take.
    pub(crate) fn try_assign(&mut self) {
        let queued: Vec<u64> = self.queue.iter().copied().collect();
        for job_id in queued {
            self.assign_job(job_id);
        }
    }

    /// Gives the queued job `job_id` to an online, idle, matching runner: one that is polling right
    /// now is preferred, then the lowest id. Returns whether it was assigned.
    fn assign_job(&mut self, job_id: u64) -> bool {
        let now = self.clock.now();
        let Some(job) = self.jobs.get(&job_id) else {
            return false;
        };
        let candidate = self
            .runners
            .values()
            .filter(|r| {
                r.job.is_none() && self.runner_matches(r, job) && self.runner_online(r, now)
            })
            .min_by_key(|r| (r.active_polls == 0, r.id))
            .map(|r| r.id);
        let Some(runner_id) = candidate else {
            return false;
        };
        self.queue.retain(|id| *id != job_id);
        self.assign(job_id, runner_id);
        true
    }

    /// Gives `runner_id`, if online and idle, the oldest queued job it can take.
    pub(crate) fn assign_to_runner(&mut self, runner_id: u64) {
        let now = self.clock.now();
        let Some(runner) = self.runners.get(&runner_id) else {
            return;
        };
        if runner.scale_set.is_some() {
            self.ss_runner_ready();
            return;
        }
        if runner.job.is_some() || !self.runner_online(runner, now) {
            return;
        }
        let position = self.queue.iter().position(|id| {
            self.jobs
                .get(id)
                .is_some_and(|job| self.runner_matches(runner, job))
        });
        if let Some(job_id) = position.and_then(|p| self.queue.remove(p)) {
            self.assign(job_id, runner_id);
        }
    }

    pub(super) fn assign(&mut self, job_id: u64, runner_id: u64) {
        let Some(runner) = self.runners.get_mut(&runner_id) else {
            return;
        };
        runner.job = Some(job_id);
        runner.notify.notify_one();
        let (name, scope, group_id) = (runner.name.clone(), runner.scope.clone(), runner.group_id);
        let group_name = self.group(&scope, group_id).map(|g| g.name);
        if let Some(job) = self.jobs.get_mut(&job_id) {
            job.runner_id = Some(runner_id);
            job.runner_name = Some(name);
            job.runner_group_id = Some(group_id);
            job.runner_group_name = group_name;
        }
    }

    /// Assigns a queued job matching `runner_id` to it (enqueuing `true` with its custom labels if
    /// none matches). Used by the assign-on-delete hook.
    pub(crate) fn force_assign(&mut self, runner_id: u64) {
        let Some(runner) = self.runners.get(&runner_id) else {
            return;
        };
        if runner.job.is_some() {
            return;
        }
        let found = self.queue.iter().position(|id| {
            self.jobs
                .get(id)
                .is_some_and(|job| self.runner_matches(runner, job))
        });
        let job_id = match found {
            Some(pos) => self.queue.remove(pos),
            None => {
                let labels: Vec<String> = runner.labels.iter().map(|l| l.name.clone()).collect();
                let scope = Some(runner.scope.path());
                let spec = JobSpec {
                    labels,
                    script: "true".to_owned(),
                    scope,
                    ..JobSpec::default()
                };
                let queued = self.queue_job(spec).ok().map(|(id, _)| id);
                self.queue.retain(|q| Some(*q) != queued);
                queued
            }
        };
        if let Some(job_id) = job_id {
            self.assign(job_id, runner_id);
        }
    }

    /// Freezes or thaws the runner named `name` (see [`Runner::frozen`]); `false` if there is no
    /// such runner. A thawed runner's waiting poll takes its assigned job at once.
    pub(crate) fn set_frozen(&mut self, name: &str, frozen: bool) -> bool {
        let Some(runner) = self.runners.values_mut().find(|r| r.name == name) else {
            return false;
        };
        runner.frozen = frozen;
        if !frozen {
            runner.notify.notify_one();
        }
        true
    }

    /// Hands the job assigned to `runner_id` to it, once. Returns the runner-protocol `Job`.
    pub(crate) fn take_assigned_job(&mut self, runner_id: u64) -> Option<Value> {
        let runner = self.runners.get(&runner_id)?;
        if runner.frozen {
            return None;
        }
        let job_id = runner.job?;
        let now = self.clock.now();
        let wall = self.clock.wall(now);
        let repo = {
            let job = self.jobs.get(&job_id)?;
            if job.delivered_at.is_some() {
                return None;
            }
            self.job_repo(job.scope.as_ref())
        };
        let job = self.jobs.get_mut(&job_id)?;
        job.delivered_at = Some(now);
        job.status = JobStatus::InProgress;
        self.ss_job_delivered(job_id);
        let job = self.jobs.get_mut(&job_id)?;
        job.started_at = Some(wall);
        let payload = json!({
            "job_id": job.id,
            "run_id": job.run_id,
            "script": job.script,
            "timeout_seconds": job.timeout_seconds,
            "labels": job.labels,
            "env": {
                "GITHUB_REPOSITORY": repo,
                "GITHUB_EVENT_NAME": job.event_name,
                "GITHUB_WORKFLOW": job.workflow,
                "GITHUB_REF": "refs/heads/main",
                "GITHUB_SHA": job.head_sha,
                "GITHUB_RUN_ID": job.run_id.to_string(),
                "GITHUB_JOB": job.name,
            },
            "event_name": job.event_name,
            "event": job.event,
        });
        self.emit(job_id, "in_progress");
        Some(payload)
    }

    /// Records a job's result. Errors when the job is not the runner's current job.
    pub(crate) fn complete_job(
        &mut self,
        runner_id: u64,
        job_id: u64,
        exit_code: i32,
        output: String,
        conclusion: Option<String>,
    ) -> Result<(), ()> {
        let runner = self.runners.get_mut(&runner_id).ok_or(())?;
        if runner.job != Some(job_id) {
            return Err(());
        }
        runner.job = None;
        let ephemeral = runner.ephemeral;
        let now = self.clock.now();
        let wall = self.clock.wall(now);
        let job = self.jobs.get_mut(&job_id).ok_or(())?;
        job.status = JobStatus::Completed;
        job.exit_code = Some(exit_code);
        let conclusion = conclusion
            .filter(|c| matches!(c.as_str(), "success" | "failure" | "cancelled"))
            .unwrap_or_else(|| if exit_code == 0 { "success" } else { "failure" }.to_owned());
        job.conclusion = Some(conclusion);
        let mut output = output;
        if output.len() > MAX_OUTPUT {
            let mut cut = MAX_OUTPUT;
            while !output.is_char_boundary(cut) {
                cut -= 1;
            }
            output.truncate(cut);
        }
        job.output = output;
        job.completed_at = Some(wall);
        job.started_at.get_or_insert(wall);
        self.emit(job_id, "completed");
        self.ss_job_finished(job_id);
        if ephemeral {
            self.remove_runner(runner_id);
        } else {
            self.assign_to_runner(runner_id);
        }
        Ok(())
    }

    /// Periodic housekeeping: requeue jobs held by runners that went offline before picking them
    /// up, fail jobs whose runner went silent past the job deadline, then assign.
    pub(crate) fn reap(&mut self) {
        let now = self.clock.now();
        let mut requeued = false;
        let mut to_release = Vec::new();
        // A scale set's runners are handled by `ss_reap` (lock timeout).
        for runner in self.runners.values().filter(|r| r.scale_set.is_none()) {
            if let Some(job_id) = runner.job {
                if !self.runner_online(runner, now) {
                    to_release.push((runner.id, job_id));
                }
            }
        }
        for (runner_id, job_id) in to_release {
            if let Some(runner) = self.runners.get_mut(&runner_id) {
                runner.job = None;
            }
            let delivered = self
                .jobs
                .get(&job_id)
                .is_some_and(|j| j.delivered_at.is_some());
            let reason = self.lost_communication(runner_id);
            self.release_job(job_id, &reason);
            if delivered && self.runners.get(&runner_id).is_some_and(|r| r.ephemeral) {
                self.remove_runner(runner_id);
            }
            requeued |= !delivered;
        }
        if requeued {
            self.try_assign();
        }
        // GitHub forgets runners that stay offline too long (14 days; 1 day if ephemeral).
        let stale: Vec<u64> = self
            .runners
            .values()
            .filter(|r| r.job.is_none() && r.active_polls == 0 && !self.runner_online(r, now))
            .filter(|r| {
                let since = r.last_seen.unwrap_or(r.registered_at).max(r.registered_at);
                let limit = if r.ephemeral {
                    self.config.ephemeral_offline_removal
                } else {
                    self.config.offline_removal
                };
                now.saturating_duration_since(since) >= limit
            })
            .map(|r| r.id)
            .collect();
        for id in stale {
            self.remove_runner(id);
        }
        self.ss_reap();
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{runner, state};
    use super::super::*;

    /// Enqueues `spec` with a single runner (`scope`, group, `labels`, `no_default_labels`)
    /// registered; whether the job went to that runner, checked on both sides.
    fn assigned(
        scope: &str,
        group: u64,
        labels: &[&str],
        no_defaults: bool,
        spec: JobSpec,
    ) -> bool {
        let mut state = state();
        let id = runner(&mut state, scope, group, labels, no_defaults);
        let (job, _) = state.enqueue(spec).expect("enqueue");
        let assigned = state.job_view(job).and_then(|j| j.runner_id) == Some(id);
        let busy = state.runner(id).is_some_and(|r| r.job.is_some());
        assert_eq!(assigned, busy, "the job view and the runner agree");
        assigned
    }

    #[test]
    fn job_matching_by_labels() {
        // (runner labels, no_default_labels, job labels, matches); an `octo/app` runner, group 1.
        let cases: &[(&[&str], bool, &[&str], bool)] = &[
            (&[], false, &["self-hosted", "linux", "x64"], true),
            (&["jammy"], false, &["JAMMY"], true),
            (&["jammy"], false, &["jammy", "gpu"], false),
            (&["jammy"], true, &["self-hosted"], false),
        ];
        for (i, (labels, no_defaults, job_labels, expected)) in cases.iter().enumerate() {
            let spec = JobSpec::new(job_labels, "");
            let got = assigned("octo/app", 1, labels, *no_defaults, spec);
            assert_eq!(got, *expected, "case {i}");
        }
    }

    /// (runner scope, group, job scope, job runner group, matches)
    type ScopeCase = (
        &'static str,
        u64,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );

    #[test]
    fn job_matching_by_scope_and_group() {
        // Runners with the default labels, jobs asking for none.
        let cases: &[ScopeCase] = &[
            ("octo/app", 1, Some("octo/app"), None, true),
            ("octo/app", 1, Some("octo-org/web"), None, false),
            ("octo-org", 1, Some("octo-org/web"), None, true),
            ("octo-org", 2, Some("octo-org/web"), None, false),
            ("octo-org", 2, Some("octo-org"), None, true),
            ("octo-org", 1, Some("octo/app"), None, false),
            ("enterprises/acme", 1, Some("octo/app"), None, true),
            ("octo-org", 1, Some("enterprises/acme"), None, false),
            ("octo-org", 2, None, Some("restricted"), true),
            ("octo-org", 1, None, Some("restricted"), false),
        ];
        for (i, (scope, group, job_scope, job_group, expected)) in cases.iter().enumerate() {
            let spec = JobSpec {
                scope: job_scope.map(str::to_owned),
                runner_group: job_group.map(str::to_owned),
                ..JobSpec::default()
            };
            let got = assigned(scope, *group, &[], false, spec);
            assert_eq!(got, *expected, "case {i}");
        }
    }

    #[test]
    fn oldest_job_first_and_one_job_per_runner() {
        let mut state = state();
        let (first, _) = state.enqueue(JobSpec::new(&[], "1")).expect("enqueue");
        let (second, _) = state.enqueue(JobSpec::new(&[], "2")).expect("enqueue");
        let id = runner(&mut state, "octo/app", 1, &[], false);
        state.assign_to_runner(id);
        assert_eq!(state.runner(id).and_then(|r| r.job), Some(first));
        state.assign_to_runner(id);
        assert_eq!(state.job_view(second).and_then(|j| j.runner_id), None);
        let payload = state.take_assigned_job(id).expect("job");
        assert_eq!(payload["script"], "1");
        assert!(state.take_assigned_job(id).is_none(), "handed over once");
        state
            .complete_job(id, first, 0, String::new(), None)
            .expect("complete");
        assert_eq!(state.runner(id).and_then(|r| r.job), Some(second));
        assert!(state
            .complete_job(id, first, 0, String::new(), None)
            .is_err());
    }
}
