//! `workflow_job` webhook events to send, the webhooks they go through and the record of
//! deliveries (GitHub's webhook deliveries API is served from it, see `rest/hooks.rs`).
//!
//! Model: while a webhook target is configured, every configured repository has one repository
//! hook (id = the repository's id, its position in `SimConfig::repos` from 1) and every
//! organisation one organisation hook (id = [`ORG_HOOK_ID_BASE`] + the organisation's id), all
//! with `config.url` = the target. An event is sent **once** and its delivery is listed under
//! every hook that covers it (the repository's and its owner organisation's); GitHub would make
//! one delivery per hook, with the same `guid`.

use std::collections::BTreeMap;

use super::*;

/// Organisation hook ids are this plus the organisation's id.
pub const ORG_HOOK_ID_BASE: u64 = 10_000;

/// A webhook delivery attempt, as `GET /_sim/webhooks/deliveries` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// `X-GitHub-Delivery` (GitHub's `guid`; a redelivery keeps it).
    pub delivery_id: String,
    /// `queued`, `in_progress` or `completed`.
    pub action: String,
    /// Job id.
    pub job_id: u64,
    /// Receiver's status, if it answered.
    pub status: Option<u16>,
    /// Transport error, if any.
    pub error: Option<String>,
    /// GitHub's numeric delivery id (increasing with each attempt).
    #[serde(default)]
    pub id: u64,
    /// The hooks whose deliveries list shows this attempt.
    #[serde(default)]
    pub hook_ids: Vec<u64>,
    /// Whether this attempt is a redelivery.
    #[serde(default)]
    pub redelivery: bool,
    /// GitHub's `status_code` (0 when the receiver did not answer).
    #[serde(default)]
    pub status_code: u16,
    /// GitHub's `status`: `OK`, `Invalid HTTP Response: 503`, `failed to connect to host`, …
    #[serde(default)]
    pub status_message: String,
}

/// A webhook to send (built under the lock, sent by the delivery task).
#[derive(Debug)]
pub(crate) struct WebhookEvent {
    pub target: WebhookTarget,
    pub action: String,
    pub job_id: u64,
    pub payload: Value,
    /// `Some` for a redelivery: the original guid.
    pub guid: Option<String>,
    pub redelivery: bool,
    /// Hooks covering the event; the first one names itself in `X-GitHub-Hook-ID`.
    pub hook_ids: Vec<u64>,
    /// `X-GitHub-Hook-Installation-Target-{Type,ID}` of the first hook.
    pub target_type: &'static str,
    pub target_id: u64,
    pub repository_id: Option<u64>,
    pub installation_id: Option<u64>,
}

/// One delivery attempt with everything GitHub's deliveries API shows.
#[derive(Clone, Debug)]
pub(crate) struct HookDelivery {
    pub id: u64,
    pub guid: String,
    pub hook_ids: Vec<u64>,
    pub delivered_at: OffsetDateTime,
    pub redelivery: bool,
    /// Seconds.
    pub duration: f64,
    pub status: String,
    pub status_code: u16,
    pub event: String,
    pub action: String,
    pub job_id: u64,
    pub installation_id: Option<u64>,
    pub repository_id: Option<u64>,
    pub url: String,
    pub request_headers: Vec<(String, String)>,
    pub payload: Value,
    pub response_headers: BTreeMap<String, String>,
    pub response_body: Option<String>,
    /// Transport error (admin view only).
    pub error: Option<String>,
    /// Receiver's status, if it answered (admin view only).
    pub answered: Option<u16>,
    pub target_type: &'static str,
    pub target_id: u64,
}

/// What the delivery task learned from one attempt.
#[derive(Debug)]
pub(crate) struct AttemptOutcome {
    pub status_code: u16,
    pub status: String,
    pub answered: Option<u16>,
    pub error: Option<String>,
    pub response_headers: BTreeMap<String, String>,
    pub response_body: Option<String>,
    pub duration: f64,
}

/// A configured hook.
#[derive(Clone, Debug)]
pub(crate) struct HookInfo {
    pub id: u64,
    pub scope: Scope,
}

impl State {
    // ---------------------------------------------------------------- webhooks

    /// The repository id the simulator reports: its position in the configuration, from 1
    /// (an unconfigured repository is 999).
    pub(crate) fn repository_id(&self, full_name: &str) -> u64 {
        self.config
            .repos
            .iter()
            .position(|r| r == full_name)
            .map_or(999, |i| i as u64 + 1)
    }

    /// The hooks of a (resolved) scope: one while a webhook target is configured.
    pub(crate) fn hooks_of(&self, scope: &Scope) -> Vec<HookInfo> {
        if self.webhook.is_none() {
            return Vec::new();
        }
        let id = match scope {
            Scope::Repo { owner, repo } => {
                let full = format!("{owner}/{repo}");
                self.config
                    .repos
                    .contains(&full)
                    .then(|| self.repository_id(&full))
            }
            Scope::Org(org) => self
                .config
                .orgs
                .iter()
                .find(|o| o.name == *org)
                .map(|o| ORG_HOOK_ID_BASE + o.id),
            Scope::Enterprise(_) => None,
        };
        id.map(|id| HookInfo {
            id,
            scope: scope.clone(),
        })
        .into_iter()
        .collect()
    }

    /// The hooks an event of `full_name` goes through: the repository's, then its owner
    /// organisation's.
    fn hooks_for_repo(&self, full_name: &str) -> Vec<HookInfo> {
        let owner = full_name.split('/').next().unwrap_or_default();
        let repo = full_name.split('/').nth(1).unwrap_or_default();
        let mut hooks = self.hooks_of(&Scope::repo(owner, repo));
        hooks.extend(self.hooks_of(&Scope::org(owner)));
        hooks
    }

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
        let repository_id = self.repository_id(&repo);
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
                "id": repository_id,
                "name": repo_name,
                "full_name": repo,
                "private": true,
                "owner": {"login": owner, "type": if self.config.orgs.iter().any(|o| o.name == owner) { "Organization" } else { "User" }},
            },
            "sender": {"login": owner, "type": "User"},
        });
        let org = self.config.orgs.iter().find(|o| o.name == owner);
        if org.is_some() {
            payload["organization"] = json!({"login": owner});
        }
        let installation_id = self.installation_for(&owner);
        if let Some(id) = installation_id {
            payload["installation"] = json!({"id": id});
        }
        let hooks = self.hooks_for_repo(&repo);
        let (target_type, target_id) = match hooks.first().map(|h| &h.scope) {
            Some(Scope::Org(_)) => ("organization", org.map_or(0, |o| o.id)),
            _ => ("repository", repository_id),
        };
        let event = WebhookEvent {
            target,
            action: action.to_owned(),
            job_id,
            payload,
            guid: None,
            redelivery: false,
            hook_ids: hooks.iter().map(|h| h.id).collect(),
            target_type,
            target_id,
            repository_id: Some(repository_id),
            installation_id,
        };
        // The receiver task only stops at shutdown; a lost event then does not matter.
        let _ = self.webhook_tx.send(event);
    }

    /// Queues a redelivery of delivery `id` through hook `hook_id` (same payload and guid, to the
    /// hook's current URL). `false` if the hook does not list that delivery.
    pub(crate) fn redeliver(&mut self, hook_id: u64, id: u64) -> bool {
        let Some(target) = self.webhook.clone() else {
            return false;
        };
        let Some(original) = self.hook_delivery(hook_id, id).cloned() else {
            return false;
        };
        let event = WebhookEvent {
            target,
            action: original.action,
            job_id: original.job_id,
            payload: original.payload,
            guid: Some(original.guid),
            redelivery: true,
            hook_ids: vec![hook_id],
            target_type: original.target_type,
            target_id: original.target_id,
            repository_id: original.repository_id,
            installation_id: original.installation_id,
        };
        self.webhook_tx.send(event).is_ok()
    }

    /// Records an attempt; returns its delivery id.
    pub(crate) fn record_delivery(
        &mut self,
        event: WebhookEvent,
        guid: String,
        request_headers: Vec<(String, String)>,
        outcome: AttemptOutcome,
    ) -> u64 {
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        let delivered_at = self.clock.wall(self.clock.now());
        self.deliveries.push(HookDelivery {
            id,
            guid,
            hook_ids: event.hook_ids,
            delivered_at,
            redelivery: event.redelivery,
            duration: outcome.duration,
            status: outcome.status,
            status_code: outcome.status_code,
            event: "workflow_job".to_owned(),
            action: event.action,
            job_id: event.job_id,
            installation_id: event.installation_id,
            repository_id: event.repository_id,
            url: event.target.url,
            request_headers,
            payload: event.payload,
            response_headers: outcome.response_headers,
            response_body: outcome.response_body,
            error: outcome.error,
            answered: outcome.answered,
            target_type: event.target_type,
            target_id: event.target_id,
        });
        id
    }

    /// The admin view of every attempt, oldest first.
    pub(crate) fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.deliveries
            .iter()
            .map(|d| DeliveryRecord {
                delivery_id: d.guid.clone(),
                action: d.action.clone(),
                job_id: d.job_id,
                status: d.answered,
                error: d.error.clone(),
                id: d.id,
                hook_ids: d.hook_ids.clone(),
                redelivery: d.redelivery,
                status_code: d.status_code,
                status_message: d.status.clone(),
            })
            .collect()
    }

    /// Deliveries listed under a hook, newest first, with ids below `before` (a cursor) and,
    /// if given, only (non-)redeliveries.
    pub(crate) fn hook_deliveries(
        &self,
        hook_id: u64,
        before: Option<u64>,
        redelivery: Option<bool>,
    ) -> impl Iterator<Item = &HookDelivery> {
        self.deliveries
            .iter()
            .rev()
            .filter(move |d| d.hook_ids.contains(&hook_id))
            .filter(move |d| before.is_none_or(|b| d.id < b))
            .filter(move |d| redelivery.is_none_or(|r| d.redelivery == r))
    }

    pub(crate) fn hook_delivery(&self, hook_id: u64, id: u64) -> Option<&HookDelivery> {
        // Ids increase with the position, so a binary search finds it.
        let index = self.deliveries.binary_search_by_key(&id, |d| d.id).ok()?;
        self.deliveries
            .get(index)
            .filter(|d| d.hook_ids.contains(&hook_id))
    }

    /// The latest attempt through a hook (its `last_response`).
    pub(crate) fn last_hook_delivery(&self, hook_id: u64) -> Option<&HookDelivery> {
        self.hook_deliveries(hook_id, None, None).next()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::state;
    use super::super::*;
    use super::*;

    fn outcome(code: u16) -> AttemptOutcome {
        AttemptOutcome {
            status_code: code,
            status: "OK".into(),
            answered: Some(code),
            error: None,
            response_headers: BTreeMap::new(),
            response_body: None,
            duration: 0.01,
        }
    }

    fn event(hooks: &[u64]) -> WebhookEvent {
        WebhookEvent {
            target: WebhookTarget {
                url: "http://x/hook".into(),
                secret: Secret::new("s"),
            },
            action: "queued".into(),
            job_id: 1,
            payload: json!({"action": "queued"}),
            guid: None,
            redelivery: false,
            hook_ids: hooks.to_vec(),
            target_type: "repository",
            target_id: 1,
            repository_id: Some(1),
            installation_id: None,
        }
    }

    #[test]
    fn hooks_exist_only_with_a_target_and_list_newest_first() {
        let mut state = state();
        assert!(state.hooks_of(&Scope::repo("octo-org", "web")).is_empty());
        state.webhook = Some(WebhookTarget {
            url: "http://x/hook".into(),
            secret: Secret::new("s"),
        });
        let repo_hooks = state.hooks_of(&Scope::repo("octo-org", "web"));
        // `octo-org/web` is the second configured repository (after the default `octo/app`).
        assert_eq!(repo_hooks.iter().map(|h| h.id).collect::<Vec<_>>(), [2]);
        let org_hooks = state.hooks_of(&Scope::org("octo-org"));
        assert_eq!(
            org_hooks.iter().map(|h| h.id).collect::<Vec<_>>(),
            [ORG_HOOK_ID_BASE + 100]
        );
        assert!(state.hooks_of(&Scope::enterprise("acme")).is_empty());
        assert_eq!(
            state
                .hooks_for_repo("octo-org/web")
                .iter()
                .map(|h| h.id)
                .collect::<Vec<_>>(),
            [2, ORG_HOOK_ID_BASE + 100]
        );
        for hooks in [&[1][..], &[1, 2], &[2], &[1]] {
            let id = state.record_delivery(event(hooks), "g".into(), vec![], outcome(200));
            assert!(id >= 1);
        }
        let ids = |before, redelivery| -> Vec<u64> {
            state
                .hook_deliveries(1, before, redelivery)
                .map(|d| d.id)
                .collect()
        };
        assert_eq!(ids(None, None), [4, 2, 1]);
        assert_eq!(ids(Some(4), None), [2, 1]);
        assert_eq!(ids(None, Some(true)), Vec::<u64>::new());
        assert!(
            state.hook_delivery(1, 3).is_none(),
            "not listed under hook 1"
        );
        assert!(state.hook_delivery(2, 3).is_some());
    }
}
