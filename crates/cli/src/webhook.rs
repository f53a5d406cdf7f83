//! GitHub `workflow_job` webhooks: signature check, payload, and what a delivery asks for.
//!
//! Deliveries are hints (they can be late or lost); the periodic reconcile stays the safety
//! net. The payload is GitHub's, with many fields we do not read, so unlike our own config it
//! is parsed leniently: only the fields below must be present and well-typed.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::secret::Secret;

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`): HMAC-SHA256 of the raw body with the secret,
/// compared in constant time.
pub fn signature_is_valid(secret: &Secret, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_digest) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// `X-Hub-Signature-256` for `body` (used by tests and the demo).
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The part of a `workflow_job` delivery we use.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJobEvent {
    pub action: String,
    pub workflow_job: WorkflowJob,
}

/// A missing `Option` field is `None`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkflowJob {
    pub id: u64,
    #[serde(default)]
    pub run_id: u64,
    /// RFC 3339; when GitHub queued the job.
    pub created_at: Option<String>,
    /// RFC 3339; when a runner picked it up (GitHub repeats `created_at` while queued).
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// The `runs-on` labels.
    pub labels: Vec<String>,
    /// `None` while queued.
    pub runner_name: Option<String>,
}

/// The label sets of this manager's runners (one per pool), compared case-insensitively.
#[derive(Debug, Clone)]
pub struct LabelMatcher {
    pools: Vec<BTreeSet<String>>,
}

impl LabelMatcher {
    /// One set of labels (one pool).
    pub fn new<I, S>(labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::any_of([labels
            .into_iter()
            .map(|l| l.as_ref().to_ascii_lowercase())
            .collect()])
    }

    /// Several pools' label sets (already lowercased, as [`manager::pool::PoolDemand`] holds
    /// them): a job matches when one pool has all its labels.
    pub fn any_of(pools: impl IntoIterator<Item = BTreeSet<String>>) -> Self {
        Self {
            pools: pools.into_iter().collect(),
        }
    }

    /// Whether one of our pools can take a job with these `runs-on` labels: it has every one.
    pub fn matches(&self, job_labels: &[String]) -> bool {
        self.pools
            .iter()
            .any(|labels| manager::pool::labels_match(labels, job_labels))
    }
}

/// The job-table event of a delivery; `None` for actions that want no runner (`waiting`) or
/// that the table does not track. Timestamps that are missing or unreadable fall back to
/// `now` (created) or to nothing (started, completed).
pub fn job_event(
    payload: &WorkflowJobEvent,
    delivery: Option<&str>,
    now: time::OffsetDateTime,
) -> Option<manager::jobs::JobEvent> {
    let state = manager::jobs::JobState::from_action(&payload.action)?;
    let job = &payload.workflow_job;
    let parse = |value: &Option<String>| {
        value.as_deref().and_then(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    let queued = state == manager::jobs::JobState::Queued;
    Some(manager::jobs::JobEvent {
        delivery: delivery.map(str::to_owned),
        job_id: job.id,
        run_id: job.run_id,
        state,
        facts: manager::jobs::JobFacts {
            labels: job.labels.clone(),
            runner_name: job.runner_name.clone().filter(|n| !n.is_empty()),
            created_at: parse(&job.created_at).unwrap_or(now),
            // While queued, GitHub's `started_at` repeats `created_at`: not a start.
            started_at: if queued { None } else { parse(&job.started_at) },
            completed_at: parse(&job.completed_at),
        },
    })
}

/// What a `workflow_job` delivery asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobAction {
    /// A queued job our runners can take: reconcile now.
    Reconcile { job_id: u64 },
    /// A job finished on one of our runners: reconcile now to clean it up and replace it.
    Cleanup { job_id: u64, runner: String },
    /// A queued job for other runners.
    NotOurLabels,
    /// A finished job that ran elsewhere.
    NotOurRunner,
    /// `waiting`, `in_progress` and unknown actions.
    Ignored,
}

/// Decides what a delivery asks for. `runner_prefix` is `<app_name>-<unit>-`.
pub fn job_action(
    event: &WorkflowJobEvent,
    labels: &LabelMatcher,
    runner_prefix: &str,
) -> JobAction {
    let job = &event.workflow_job;
    match event.action.as_str() {
        "queued" if labels.matches(&job.labels) => JobAction::Reconcile { job_id: job.id },
        "queued" => JobAction::NotOurLabels,
        "completed" => match &job.runner_name {
            Some(runner) if runner.starts_with(runner_prefix) => JobAction::Cleanup {
                job_id: job.id,
                runner: runner.clone(),
            },
            _ => JobAction::NotOurRunner,
        },
        _ => JobAction::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretExt;

    fn secret(value: &str) -> Secret {
        Secret::non_empty(value).expect("non-empty")
    }

    #[test]
    fn github_test_vector() {
        // GitHub Docs "Validating webhook deliveries".
        let secret = secret("It's a Secret to Everybody");
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(&secret, b"Hello, World!"), expected);
        assert!(signature_is_valid(
            &secret,
            b"Hello, World!",
            Some(expected)
        ));
    }

    #[test]
    fn rejects_bad_signatures() {
        let secret = secret("It's a Secret to Everybody");
        let good = sign(&secret, b"Hello, World!");
        for header in [
            None,
            Some(""),
            Some("sha256="),
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            Some("sha256=zz"),
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18"),
        ] {
            assert!(
                !signature_is_valid(&secret, b"Hello, World!", header),
                "{header:?}"
            );
        }
        assert!(!signature_is_valid(&secret, b"Hello, World?", Some(&good)));
        assert!(!signature_is_valid(
            &self::secret("other"),
            b"Hello, World!",
            Some(&good)
        ));
    }

    fn event(action: &str, labels: &[&str], runner: Option<&str>) -> WorkflowJobEvent {
        WorkflowJobEvent {
            action: action.into(),
            workflow_job: WorkflowJob {
                run_id: 0,
                created_at: None,
                started_at: None,
                completed_at: None,
                id: 7,
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                runner_name: runner.map(str::to_owned),
            },
        }
    }

    #[test]
    fn decides_by_action_labels_and_runner() {
        let labels = LabelMatcher::new(["self-hosted", "github-runner", "jammy", "GPU"]);
        let prefix = "github-runner-0-";
        let check = |event: WorkflowJobEvent, expected: JobAction| {
            assert_eq!(job_action(&event, &labels, prefix), expected, "{event:?}");
        };
        check(
            event("queued", &["self-hosted", "jammy"], None),
            JobAction::Reconcile { job_id: 7 },
        );
        check(
            event("queued", &["Self-Hosted", "gpu"], None),
            JobAction::Reconcile { job_id: 7 },
        );
        check(
            event("queued", &["self-hosted", "windows"], None),
            JobAction::NotOurLabels,
        );
        check(event("queued", &[], None), JobAction::NotOurLabels);
        check(
            event("completed", &["self-hosted"], Some("github-runner-0-ab12")),
            JobAction::Cleanup {
                job_id: 7,
                runner: "github-runner-0-ab12".into(),
            },
        );
        check(
            event("completed", &["self-hosted"], Some("github-runner-1-ab12")),
            JobAction::NotOurRunner,
        );
        check(
            event("completed", &["self-hosted"], None),
            JobAction::NotOurRunner,
        );
        check(
            event(
                "in_progress",
                &["self-hosted"],
                Some("github-runner-0-ab12"),
            ),
            JobAction::Ignored,
        );
        check(event("waiting", &["self-hosted"], None), JobAction::Ignored);
    }

    proptest::proptest! {
        #[test]
        fn only_the_exact_body_and_secret_verify(
            key in "[ -~]{1,40}",
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            flip in proptest::num::usize::ANY,
        ) {
            let secret = match Secret::non_empty(key) { Some(secret) => secret, None => return Ok(()) };
            let signature = sign(&secret, &body);
            proptest::prop_assert!(signature_is_valid(&secret, &body, Some(&signature)));
            if !body.is_empty() {
                let mut tampered = body.clone();
                let index = flip % tampered.len();
                tampered[index] ^= 0x01;
                proptest::prop_assert!(!signature_is_valid(&secret, &tampered, Some(&signature)));
            }
            let mut other = body.clone();
            other.push(b'x');
            proptest::prop_assert!(!signature_is_valid(&secret, &other, Some(&signature)));
        }
    }

    #[test]
    fn parses_the_reference_payload() {
        let body = r#"{ "action": "queued",
          "workflow_job": { "id": 2832853555, "run_id": 940463255, "run_attempt": 1, "name": "build",
            "status": "queued", "conclusion": null, "labels": ["self-hosted", "jammy"],
            "runner_id": null, "runner_name": null, "created_at": "2026-01-22T12:00:00Z" },
          "repository": { "full_name": "octo-org/app" }, "installation": { "id": 42 } }"#;
        let event: WorkflowJobEvent = serde_json::from_str(body).expect("valid payload");
        assert_eq!(event.action, "queued");
        assert_eq!(event.workflow_job.id, 2_832_853_555);
        assert_eq!(event.workflow_job.labels, ["self-hosted", "jammy"]);
        assert_eq!(event.workflow_job.runner_name, None);
        // Missing timestamps are `None`.
        assert_eq!(event.workflow_job.started_at, None);
        assert_eq!(event.workflow_job.completed_at, None);
    }
}
