//! Missed `workflow_job` deliveries, recovered from GitHub's delivery log.
//!
//! GitHub does not retry a failed webhook delivery, and none reaches a daemon that is down.
//! GitHub keeps a log of every delivery of a hook (about three days): on start and then every
//! `demand.delivery_check_seconds`, the daemon pages through it, newest first, down to the
//! window it has not checked yet. A `workflow_job` delivery whose GUID the job table has not
//! seen is fetched and its payload applied as if it had just arrived; only a delivery whose
//! payload cannot be read is asked to be redelivered. Deliveries the daemon received are in
//! the job table already: a check with nothing missed costs one (conditional) list request.

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::ops::{JobRecord, Operations};
use crate::webhook::{job_event, WorkflowJobEvent};

/// Deliveries asked for per page (GitHub's maximum).
const PER_PAGE: u32 = 100;
/// A check reads at most this many pages (10 000 deliveries).
const MAX_PAGES: usize = 100;

/// Which hook's log to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookRef {
    /// `server.hook_id`.
    Id(u64),
    /// Found once by `server.public_url`, the URL GitHub delivers to.
    Url(String),
}

/// What one check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    pub hook_id: u64,
    /// `workflow_job` deliveries in the window.
    pub listed: usize,
    /// Missed ones applied to the job table.
    pub recovered: usize,
    /// Missed ones whose payload could not be read: asked to be redelivered.
    pub redelivered: usize,
}

/// Finds the hook (`Url`) or takes it as configured (`Id`).
pub async fn resolve_hook(client: &github::Client, hook: &HookRef) -> anyhow::Result<u64> {
    match hook {
        HookRef::Id(id) => Ok(*id),
        HookRef::Url(url) => {
            let found = client
                .find_hook_by_url(url)
                .await
                .context("listing the webhooks (GET .../hooks) to find server.public_url")?;
            match found {
                Some(hook) => Ok(hook.id),
                None => anyhow::bail!(
                    "no webhook delivers to server.public_url {url}: check the repository or \
                     organisation's webhooks (Settings > Webhooks, or GET .../hooks), or set \
                     server.hook_id"
                ),
            }
        }
    }
}

/// Reads the hook's log down to `since` and applies the `workflow_job` deliveries the job
/// table has not seen.
pub async fn recover(
    client: &github::Client,
    hook_id: u64,
    ops: &dyn Operations,
    since: OffsetDateTime,
) -> anyhow::Result<RecoveryReport> {
    let mut report = RecoveryReport {
        hook_id,
        ..RecoveryReport::default()
    };
    let mut handled = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client
            .list_deliveries(hook_id, cursor.as_deref(), PER_PAGE)
            .await
            .with_context(|| format!("listing the deliveries of webhook {hook_id}"))?;
        let mut older = false;
        for delivery in &page.deliveries {
            if delivery.delivered_at < since {
                older = true;
                break;
            }
            if delivery.event != "workflow_job" || !handled.insert(delivery.guid.clone()) {
                continue;
            }
            report.listed += 1;
            if ops.seen_delivery(&delivery.guid).await? {
                continue;
            }
            let full = client
                .get_delivery(hook_id, delivery.id)
                .await
                .with_context(|| {
                    format!("reading delivery {} of webhook {hook_id}", delivery.id)
                })?;
            let event = serde_json::from_value::<WorkflowJobEvent>(full.payload.clone())
                .ok()
                .and_then(|payload| {
                    job_event(&payload, Some(&delivery.guid), OffsetDateTime::now_utc())
                });
            match event {
                Some(event) => {
                    if ops.record_job(&event).await? == JobRecord::Applied {
                        tracing::info!(message = "Missed delivery recovered.", guid = %delivery.guid,
                            job_id = event.job_id, action = event.state.as_str());
                    }
                    report.recovered += 1;
                }
                None if full.payload.get("workflow_job").is_none() => {
                    // No payload to read (GitHub may leave it out): let GitHub send it again.
                    client
                        .redeliver(hook_id, delivery.id)
                        .await
                        .with_context(|| format!("redelivering delivery {}", delivery.id))?;
                    report.redelivered += 1;
                }
                // `waiting` and other actions the job table does not track.
                None => {}
            }
        }
        match page.next_cursor {
            Some(next) if !older => cursor = Some(next),
            _ => break,
        }
    }
    Ok(report)
}

/// The daemon's checks: one at start over `first_window` (the job table's horizon), then one
/// every `interval` over what the last one had not seen (with a minute of overlap: GitHub
/// logs a delivery when it is attempted). Deliveries recovered ask for a pass. A failed check
/// is logged and the next one covers its window too.
pub async fn recovery_loop(
    ops: std::sync::Arc<dyn Operations>,
    daemon: crate::daemon::DaemonHandle,
    interval: std::time::Duration,
    first_window: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    const OVERLAP: time::Duration = time::Duration::minutes(1);
    let mut since = OffsetDateTime::now_utc() - first_window;
    loop {
        let started = OffsetDateTime::now_utc();
        match ops.recover_deliveries(since).await {
            Ok(None) => return,
            Ok(Some(report)) => {
                tracing::info!(
                    message = "Webhook delivery log checked.",
                    hook_id = report.hook_id,
                    listed = report.listed,
                    recovered = report.recovered,
                    redelivered = report.redelivered
                );
                if report.recovered > 0 {
                    daemon.trigger(
                        crate::daemon::TriggerSource::Recovery,
                        format!("{} missed delivery(ies) recovered", report.recovered),
                    );
                }
                since = started - OVERLAP;
            }
            Err(err) => {
                tracing::warn!(message = "Checking the webhook delivery log failed.", error = %format!("{err:#}"));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}
