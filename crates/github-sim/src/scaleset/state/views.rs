//! Scale-set state: the JSON views of the test hooks.

use super::*;

impl State {
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
