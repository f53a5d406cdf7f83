//! Remove: registration first, GitHub's "busy" means skip; a healthy runner is looked inside
//! and frozen before its registration goes; the instance last.

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};

use super::{FlushMode, RunnerManager};
use crate::events::RunnerRemoved;
use crate::guest;
use crate::model::RunnerName;
use crate::plan::{Removal, RemovalReason};
use crate::provider::{DeleteOutcome, ProviderError, RegistryError};

/// How one removal ended.
#[derive(Debug)]
pub(super) enum RemoveOutcome {
    Removed,
    SkippedBusy,
    Failed(RemoveError),
}

/// Why a removal failed; the runner keeps its slot until a later pass removes it.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("looking for a running job inside the instance before deregistering")]
    Quiesce(#[source] QuiesceError),
    #[error("deleting github registration {id}")]
    Registration {
        id: u64,
        #[source]
        source: RegistryError,
    },
    #[error("deleting instance")]
    Instance(#[source] ProviderError),
    #[error("instance deleted but github still reports registration {id} busy after {waited:?}")]
    StillBusy { id: u64, waited: Duration },
}

/// Why `guest/quiesce.sh` could not say whether a job runs.
#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    #[error("the check exited with {exit_code}: {stderr}")]
    Exit { exit_code: i32, stderr: String },
    #[error(transparent)]
    Provider(ProviderError),
}

/// Whether a removal is quiesced (looked inside for a running job, then frozen) before it is
/// deregistered: the runners removed although healthy (scale-down, an idle-only flush). Only
/// these candidates are looked at, so it costs a few execs, not one per runner.
pub(super) fn needs_quiesce(reason: RemovalReason, mode: FlushMode) -> bool {
    match reason {
        RemovalReason::ScaleDown | RemovalReason::Recycled | RemovalReason::Outdated => true,
        RemovalReason::Flush => mode == FlushMode::IdleOnly,
        _ => false,
    }
}

impl RunnerManager {
    pub(super) async fn remove_all(
        &self,
        removals: &[Removal],
        mode: FlushMode,
    ) -> Vec<RemoveOutcome> {
        let removals = self.recheck_unregistered(removals).await;
        let removals: Vec<_> = removals
            .iter()
            .map(|removal| self.remove_runner(removal, mode))
            .collect();
        stream::iter(removals)
            .buffered(self.config.create_concurrency.max(1) * 2)
            .collect()
            .await
    }

    /// An instance planned for removal without a registration may have registered since the
    /// observation (an install left running by a killed process): look again, once per pass and
    /// only when there is such a removal, so that it too goes registration-first and a job it
    /// took is seen as busy. If GitHub cannot be asked, they go ahead as planned.
    pub(super) async fn recheck_unregistered(&self, removals: &[Removal]) -> Vec<Removal> {
        if !removals
            .iter()
            .any(|r| r.registration.is_none() && r.has_instance)
        {
            return removals.to_vec();
        }
        let fresh: std::collections::BTreeMap<RunnerName, u64> = match self
            .list_owned_registrations()
            .await
        {
            Ok(all) => all.into_iter().map(|(name, r)| (name, r.id)).collect(),
            Err(error) => {
                tracing::warn!(message = "Could not re-check registrations before removing.", error = %crate::provider::Chain(&error));
                return removals.to_vec();
            }
        };
        removals
            .iter()
            .map(|r| match (r.registration, fresh.get(&r.name)) {
                (None, Some(&id)) if r.has_instance => Removal {
                    registration: Some(id),
                    ..r.clone()
                },
                _ => r.clone(),
            })
            .collect()
    }

    /// Race-free removal: the registration goes first and GitHub's "busy" answer means skip. A
    /// healthy runner (scale-down, idle-only flush) is first quiesced in its instance: a job
    /// running there means busy whatever GitHub says, and otherwise the runner is frozen so that
    /// it takes no job while its registration goes; it is thawed again if the registration
    /// stays. When flushing busy runners, the runner is stopped inside its instance (it cancels
    /// its job and reports it, and GitHub then lets the registration go) before the registration
    /// is deleted; only then the instance.
    pub(super) async fn remove_runner(&self, removal: &Removal, mode: FlushMode) -> RemoveOutcome {
        let name = removal.name.as_str();
        let mut still_busy = None;
        if let Some(id) = removal.registration {
            let quiesced = removal.has_instance && needs_quiesce(removal.reason, mode);
            if quiesced {
                match self.quiesce(name).await {
                    Ok(false) => {}
                    Ok(true) => {
                        tracing::warn!(
                            message = "GitHub reports the runner idle but a job runs in its instance; keeping it.",
                            runner = name
                        );
                        return RemoveOutcome::SkippedBusy;
                    }
                    Err(error) => {
                        tracing::warn!(message = "Could not look for a job inside the instance; keeping the runner.", runner = name, error = %crate::provider::Chain(&error));
                        self.resume(name).await;
                        return RemoveOutcome::Failed(RemoveError::Quiesce(error));
                    }
                }
            }
            match self.registry.delete_registration(id).await {
                Ok(DeleteOutcome::Deleted | DeleteOutcome::NotFound) => {}
                Ok(DeleteOutcome::Busy) if mode == FlushMode::IdleOnly => {
                    tracing::info!(
                        message = "Runner is busy, skipping its removal.",
                        runner = name
                    );
                    if quiesced {
                        self.resume(name).await;
                    }
                    return RemoveOutcome::SkippedBusy;
                }
                Ok(DeleteOutcome::Busy) => {
                    if removal.has_instance {
                        self.stop_runner_inside(name).await;
                    }
                    match self.delete_registration_when_released(id).await {
                        Ok(true) => {}
                        Ok(false) => still_busy = Some(id),
                        Err(source) => {
                            return RemoveOutcome::Failed(RemoveError::Registration { id, source })
                        }
                    }
                }
                Err(source) => {
                    tracing::warn!(message = "Runner removal failed.", runner = name, error = %crate::provider::Chain(&source));
                    if quiesced {
                        self.resume(name).await;
                    }
                    return RemoveOutcome::Failed(RemoveError::Registration { id, source });
                }
            }
        }
        if removal.has_instance {
            if self.config.issue_metrics {
                self.collect_job_events(name).await;
            }
            if let Err(error) = self.provider.delete(name).await {
                tracing::warn!(message = "Runner removal failed.", runner = name, error = %crate::provider::Chain(&error));
                return RemoveOutcome::Failed(RemoveError::Instance(error));
            }
        }
        if let Some(id) = still_busy {
            // The instance is gone; the registration is dangling and goes on a later pass.
            return RemoveOutcome::Failed(RemoveError::StillBusy {
                id,
                waited: self.config.busy_stop_timeout,
            });
        }
        RunnerRemoved {
            name: name.to_owned(),
            reason: removal.reason,
        }
        .emit(&self.telemetry);
        RemoveOutcome::Removed
    }

    /// `Ok(true)` when a job runs inside the instance (its job-started record without a
    /// job-completed one, or a live `Runner.Worker`), whatever GitHub's busy flag says: operators
    /// of other managers report it reading `false`, and the delete succeeding, while a job runs.
    /// `Ok(false)`: no job, and the runner is frozen until [`Self::resume`] or its deletion.
    async fn quiesce(&self, name: &str) -> Result<bool, QuiesceError> {
        match self.provider.exec(name, &guest::quiesce()).await {
            Ok(out) if out.exit_code == guest::JOB_RUNNING => Ok(true),
            Ok(out) if out.exit_code == 0 => Ok(false),
            Ok(out) => Err(QuiesceError::Exit {
                exit_code: out.exit_code,
                stderr: out.stderr.trim().to_owned(),
            }),
            Err(error) => Err(QuiesceError::Provider(error)),
        }
    }

    /// Thaws a runner [`Self::quiesce`] froze whose registration stays. If this fails, the probe
    /// thaws it once GitHub shows it offline.
    async fn resume(&self, name: &str) {
        if let Err(error) = self.provider.exec(name, &guest::resume()).await {
            tracing::warn!(message = "Thawing the runner failed.", runner = name, error = %crate::provider::Chain(&error));
        }
    }

    /// Asks the runner to stop: SIGTERM to its process group (start.sh runs in its own session).
    /// actions/runner and the fake runner cancel the running job and report it on SIGTERM.
    async fn stop_runner_inside(&self, name: &str) {
        if let Err(error) = self.provider.exec(name, &guest::stop()).await {
            tracing::warn!(message = "Stopping the runner failed.", runner = name, error = %crate::provider::Chain(&error));
        }
    }

    /// Retries the delete while GitHub says busy, with backoff, up to `busy_stop_timeout`.
    /// `Ok(false)` when it is still busy then.
    async fn delete_registration_when_released(&self, id: u64) -> Result<bool, RegistryError> {
        let deadline = Instant::now() + self.config.busy_stop_timeout;
        let mut delay = Duration::from_millis(250);
        loop {
            tokio::time::sleep(delay).await;
            match self.registry.delete_registration(id).await? {
                DeleteOutcome::Deleted | DeleteOutcome::NotFound => return Ok(true),
                DeleteOutcome::Busy if Instant::now() + delay >= deadline => return Ok(false),
                DeleteOutcome::Busy => delay = (delay * 2).min(Duration::from_secs(5)),
            }
        }
    }
}
