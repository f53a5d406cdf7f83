//! Scale-set state: the per-set message log and the statistics.

use super::*;

impl State {
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
    pub(super) fn ss_send(&mut self, job_id: u64, kind: &'static str) {
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
}
