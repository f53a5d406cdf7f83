//! `workflow_job` webhook events to send and the record of deliveries.

use super::*;

/// A webhook delivery attempt, as `GET /_sim/webhooks/deliveries` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `X-GitHub-Delivery`.
    pub delivery_id: String,
    /// `queued`, `in_progress` or `completed`.
    pub action: String,
    /// Job id.
    pub job_id: u64,
    /// Receiver's status, if it answered.
    pub status: Option<u16>,
    /// Transport error, if any.
    pub error: Option<String>,
}

/// A webhook to send (built under the lock, sent by the delivery task).
#[derive(Debug)]
pub(crate) struct WebhookEvent {
    pub target: WebhookTarget,
    pub action: String,
    pub job_id: u64,
    pub payload: Value,
}

impl State {
    // ---------------------------------------------------------------- webhooks

    pub(super) fn emit(&mut self, job_id: u64, action: &str) {
        let Some(target) = self.webhook.clone() else {
            return;
        };
        let Some(job) = self.jobs.get(&job_id) else {
            return;
        };
        let repo = self.job_repo(job.scope.as_ref());
        let owner = repo.split('/').next().unwrap_or_default().to_owned();
        let repo_name = repo.split('/').nth(1).unwrap_or_default().to_owned();
        let status = match job.status {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
        };
        let queued = job.status == JobStatus::Queued;
        let mut payload = json!({
            "action": action,
            "workflow_job": {
                "id": job.id,
                "run_id": job.run_id,
                "run_attempt": 1,
                "run_url": format!("https://api.github.com/repos/{repo}/actions/runs/{}", job.run_id),
                "name": job.name,
                "workflow_name": job.workflow,
                "head_branch": "main",
                "head_sha": job.head_sha,
                "status": status,
                "conclusion": job.conclusion,
                "labels": job.labels,
                "created_at": rfc3339(job.created_at),
                "started_at": job.started_at.map(rfc3339).unwrap_or_else(|| rfc3339(job.created_at)),
                "completed_at": job.completed_at.map(rfc3339),
                "runner_id": if queued { None } else { job.runner_id },
                "runner_name": if queued { None } else { job.runner_name.clone() },
                "runner_group_id": if queued { None } else { job.runner_group_id },
                "runner_group_name": if queued { None } else { job.runner_group_name.clone() },
                "steps": [],
            },
            "repository": {
                "id": 1,
                "name": repo_name,
                "full_name": repo,
                "private": true,
                "owner": {"login": owner, "type": if self.config.orgs.iter().any(|o| o.name == owner) { "Organization" } else { "User" }},
            },
            "sender": {"login": owner, "type": "User"},
        });
        if self.config.orgs.iter().any(|o| o.name == owner) {
            payload["organization"] = json!({"login": owner});
        }
        if let Some(id) = self.installation_for(&owner) {
            payload["installation"] = json!({"id": id});
        }
        let event = WebhookEvent {
            target,
            action: action.to_owned(),
            job_id,
            payload,
        };
        // The receiver task only stops at shutdown; a lost event then does not matter.
        let _ = self.webhook_tx.send(event);
    }

    pub(crate) fn record_delivery(&mut self, record: DeliveryRecord) {
        self.deliveries.push(record);
    }

    pub(crate) fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.deliveries.clone()
    }
}
