//! Runner registrations: register, look up, heartbeat, long polls, remove and their views.

use super::*;

/// A registered runner.
#[derive(Debug)]
pub(crate) struct Runner {
    pub id: u64,
    pub name: String,
    pub scope: Scope,
    pub group_id: u64,
    pub labels: Vec<Label>,
    pub ephemeral: bool,
    pub jit: bool,
    pub version: Option<String>,
    pub credential: Secret,
    pub last_seen: Option<Instant>,
    /// Set by `/_runner/offline`; cleared by the next poll.
    pub stopped: bool,
    pub active_polls: u32,
    pub job: Option<u64>,
    /// The runner's process is frozen (SIGSTOP, as a manager does before deregistering it): a
    /// job assigned to it is not acquired (handed over) until it is thawed; a deletion then
    /// gives the job back to the queue.
    pub frozen: bool,
    pub notify: Arc<Notify>,
    pub registered_at: Instant,
    /// The runner scale set it was made for (`generatejitconfig`), if any.
    pub scale_set: Option<u64>,
}

/// A runner as the admin API shows it (every scope).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerView {
    /// Runner id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// Scope path (`owner/repo`, `org`, `enterprises/slug`).
    pub scope: String,
    /// Runner group id.
    pub runner_group_id: u64,
    /// `online` or `offline`.
    pub status: String,
    /// Running (or assigned) a job.
    pub busy: bool,
    /// Single-use.
    pub ephemeral: bool,
    /// Registered through JIT.
    pub jit: bool,
    /// Labels.
    pub labels: Vec<Label>,
    /// Version, once the runner has connected.
    pub version: Option<String>,
    /// Last poll.
    pub last_seen: Option<String>,
    /// Id of the job it holds.
    pub job_id: Option<u64>,
    /// Frozen: takes no job until thawed (`POST /_sim/runners/freeze`).
    #[serde(default)]
    pub frozen: bool,
}

/// Why a runner-side registration failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegisterError {
    #[error("Could not find any self-hosted runner group named \"{0}\".")]
    UnknownGroup(String),
    #[error("A runner exists with the same name {0}.")]
    NameExists(String),
}

/// A registration request (runner side or JIT).
#[derive(Debug)]
pub(crate) struct NewRunner {
    pub scope: Scope,
    pub name: String,
    pub group_id: u64,
    pub labels: Vec<Label>,
    pub ephemeral: bool,
    pub jit: bool,
}

impl State {
    // ---------------------------------------------------------------- runners

    pub(crate) fn runner_online(&self, runner: &Runner, now: Instant) -> bool {
        if runner.stopped {
            return false;
        }
        if runner.active_polls > 0 {
            return true;
        }
        let silence = self.config.silence_timeout;
        if runner
            .last_seen
            .is_some_and(|seen| now.saturating_duration_since(seen) < silence)
        {
            return true;
        }
        // A runner executing a job does not poll; it stays online until the job's deadline.
        runner
            .job
            .and_then(|id| self.jobs.get(&id))
            .and_then(|job| job.delivered_at.map(|at| (at, job.timeout_seconds)))
            .is_some_and(|(at, timeout)| now < at + Duration::from_secs(timeout) + silence)
    }

    pub(crate) fn runner(&self, id: u64) -> Option<&Runner> {
        self.runners.get(&id)
    }

    /// Why a job ends when its runner stops talking, as GitHub words it.
    pub(crate) fn lost_communication(&self, id: u64) -> String {
        let name = self.runner(id).map(|r| r.name.as_str()).unwrap_or_default();
        format!("The self-hosted runner: {name} lost communication with the server.")
    }

    pub(crate) fn runner_by_credential(&self, credential: &str) -> Option<&Runner> {
        self.credentials
            .get(credential)
            .and_then(|id| self.runners.get(id))
    }

    pub(crate) fn runner_id_by_name(&self, scope: &Scope, name: &str) -> Option<u64> {
        self.names.get(&(scope.clone(), name.to_owned())).copied()
    }

    /// Runners of one scope, by id.
    pub(crate) fn scope_runners(&self, scope: &Scope) -> impl Iterator<Item = &Runner> {
        let scope = scope.clone();
        self.runners.values().filter(move |r| r.scope == scope)
    }

    /// Registers a runner; `replace` removes a runner of the same name first.
    pub(crate) fn register(
        &mut self,
        new: NewRunner,
        replace: bool,
    ) -> Result<(u64, Secret), RegisterError> {
        if let Some(existing) = self.runner_id_by_name(&new.scope, &new.name) {
            if !replace {
                return Err(RegisterError::NameExists(new.name));
            }
            self.remove_runner(existing);
        }
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let credential = Secret::new(format!("simcred_{}", random_string(ALNUM, 40)));
        self.issued
            .runner_credentials
            .push(credential.expose().to_owned());
        self.names.insert((new.scope.clone(), new.name.clone()), id);
        self.credentials.insert(credential.expose().to_owned(), id);
        self.runners.insert(
            id,
            Runner {
                id,
                name: new.name,
                scope: new.scope,
                group_id: new.group_id,
                labels: new.labels,
                ephemeral: new.ephemeral || new.jit,
                jit: new.jit,
                version: None,
                credential: credential.clone(),
                last_seen: None,
                stopped: false,
                active_polls: 0,
                job: None,
                frozen: false,
                notify: Arc::new(Notify::new()),
                registered_at: self.clock.now(),
                scale_set: None,
            },
        );
        Ok((id, credential))
    }

    /// Deregisters a runner. A job it was assigned but had not picked up is queued again; a job it
    /// was running fails.
    pub(crate) fn remove_runner(&mut self, id: u64) -> Option<String> {
        self.remove_runner_because(id, "The runner has been removed.")
    }

    /// [`State::remove_runner`], with `reason` appended to the output of a job it was running.
    pub(super) fn remove_runner_because(&mut self, id: u64, reason: &str) -> Option<String> {
        let runner = self.runners.remove(&id)?;
        self.names
            .remove(&(runner.scope.clone(), runner.name.clone()));
        self.credentials.remove(runner.credential.expose());
        runner.notify.notify_waiters();
        runner.notify.notify_one();
        self.ss_forget_runner(id);
        if let Some(job_id) = runner.job {
            self.release_job(job_id, reason);
            self.try_assign();
        }
        Some(runner.name)
    }

    /// Takes a job back from its runner: requeue if not picked up, else fail it.
    pub(super) fn release_job(&mut self, job_id: u64, reason: &str) {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if job.status == JobStatus::Completed {
            return;
        }
        if job.delivered_at.is_none() {
            job.runner_id = None;
            job.runner_name = None;
            job.runner_group_id = None;
            job.runner_group_name = None;
            if !self.ss_release_undelivered(job_id) {
                self.queue.push_front(job_id);
            }
        } else {
            let now = self.clock.now();
            job.status = JobStatus::Completed;
            job.conclusion = Some("failure".to_owned());
            job.output.push_str(reason);
            job.completed_at = Some(self.clock.wall(now));
            self.emit(job_id, "completed");
            self.ss_job_finished(job_id);
        }
    }

    pub(crate) fn set_custom_labels(&mut self, id: u64, custom: Vec<String>) -> Option<Vec<Label>> {
        let mut read_only: Vec<String> = self
            .runners
            .get(&id)?
            .labels
            .iter()
            .filter(|l| l.kind == LabelKind::ReadOnly)
            .map(|l| l.name.clone())
            .collect();
        let no_defaults = true;
        read_only.extend(custom);
        let labels = self.make_labels(&read_only, no_defaults);
        let runner = self.runners.get_mut(&id)?;
        runner.labels = labels.clone();
        self.assign_to_runner(id);
        Some(labels)
    }

    /// A heartbeat from a polling runner.
    pub(crate) fn heartbeat(&mut self, id: u64) {
        let now = self.clock.now();
        let version = self.config.runner_version.clone();
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.last_seen = Some(now);
            runner.stopped = false;
            runner.version.get_or_insert(version);
        }
    }

    pub(crate) fn poll_started(&mut self, id: u64) -> Option<Arc<Notify>> {
        let runner = self.runners.get_mut(&id)?;
        runner.active_polls += 1;
        Some(runner.notify.clone())
    }

    pub(crate) fn poll_ended(&mut self, id: u64) {
        let now = self.clock.now();
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.active_polls = runner.active_polls.saturating_sub(1);
            runner.last_seen = Some(now);
        }
    }

    pub(crate) fn mark_offline(&mut self, id: u64) {
        if let Some(runner) = self.runners.get_mut(&id) {
            runner.stopped = true;
            runner.last_seen = None;
        }
    }

    pub(crate) fn runner_view(&self, runner: &Runner, now: Instant) -> RunnerView {
        RunnerView {
            id: runner.id,
            name: runner.name.clone(),
            scope: runner.scope.path(),
            runner_group_id: runner.group_id,
            status: if self.runner_online(runner, now) {
                "online"
            } else {
                "offline"
            }
            .to_owned(),
            busy: runner.job.is_some(),
            ephemeral: runner.ephemeral,
            jit: runner.jit,
            labels: runner.labels.clone(),
            version: runner.version.clone(),
            last_seen: runner.last_seen.map(|t| rfc3339(self.clock.wall(t))),
            job_id: runner.job,
            frozen: runner.frozen,
        }
    }

    pub(crate) fn runner_views(&self) -> Vec<RunnerView> {
        let now = self.clock.now();
        self.runners
            .values()
            .map(|r| self.runner_view(r, now))
            .collect()
    }

    /// The REST `runner` object.
    pub(crate) fn runner_json(&self, runner: &Runner, now: Instant) -> Value {
        json!({
            "id": runner.id,
            "runner_group_id": runner.group_id,
            "name": runner.name,
            "os": "linux",
            "status": if self.runner_online(runner, now) { "online" } else { "offline" },
            "busy": runner.job.is_some() && !self.busy_hidden(runner),
            "ephemeral": runner.ephemeral,
            "labels": runner.labels,
            "version": runner.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{runner, state};
    use super::super::*;

    #[test]
    fn removing_a_runner_requeues_or_fails_its_job() {
        let mut state = state();
        let a = runner(&mut state, "octo/app", 1, &[], false);
        let (job, _) = state.enqueue(JobSpec::new(&[], "x")).expect("enqueue");
        assert_eq!(state.runner(a).and_then(|r| r.job), Some(job));
        state.remove_runner(a);
        assert_eq!(
            state.job_view(job).map(|j| j.status),
            Some(JobStatus::Queued)
        );
        let b = runner(&mut state, "octo/app", 1, &[], false);
        state.assign_to_runner(b);
        state.take_assigned_job(b).expect("job");
        state.remove_runner(b);
        let view = state.job_view(job).expect("job");
        assert_eq!(view.status, JobStatus::Completed);
        assert_eq!(view.conclusion.as_deref(), Some("failure"));
    }
}
