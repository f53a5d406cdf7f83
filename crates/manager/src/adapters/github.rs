//! `RunnerRegistry` over `github::Client`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::events::Metrics;
use crate::model::{RunnerName, Secret};
use crate::provider::{
    DeleteOutcome, JitConfig, Registration, RegistryError, RunnerDownload, RunnerRegistry,
};

/// GitHub as a [`RunnerRegistry`]; reports calls and the rate-limit budget into [`Metrics`].
#[derive(Debug, Clone)]
pub struct GithubRegistry {
    client: github::Client,
    /// The runner group of an org scope (`default` when `None`).
    group: Option<String>,
    group_id: Arc<tokio::sync::OnceCell<u64>>,
    metrics: Option<Arc<Metrics>>,
}

impl GithubRegistry {
    pub fn new(
        client: github::Client,
        group: Option<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            client,
            group,
            group_id: Arc::default(),
            metrics,
        }
    }

    pub fn client(&self) -> &github::Client {
        &self.client
    }

    fn record<T>(&self, call: &'static str, result: &Result<T, github::Error>) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let outcome = match result {
            Ok(_) => "ok",
            Err(github::Error::NotFound { .. }) => "not_found",
            Err(github::Error::RunnerBusy { .. }) => "busy",
            Err(github::Error::RateLimited { .. }) => "rate_limited",
            Err(_) => "error",
        };
        metrics
            .github_api_calls_total
            .get_or_create(&vec![
                ("call", call.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        if let Some(rate) = self.client.rate_limit() {
            metrics
                .github_rate_limit_remaining
                .set(i64::try_from(rate.remaining).unwrap_or(i64::MAX));
            metrics
                .github_rate_limit_reset_timestamp_seconds
                .set(rate.reset.unix_timestamp());
        }
    }
}

fn convert(what: &str, error: github::Error) -> RegistryError {
    match error {
        github::Error::Unauthorized { .. } | github::Error::Forbidden { .. } => {
            RegistryError::Unauthorized {
                what: what.to_owned(),
            }
        }
        github::Error::RateLimited { .. } => RegistryError::RateLimited {
            what: what.to_owned(),
        },
        github::Error::Timeout { .. } => RegistryError::Timeout {
            what: what.to_owned(),
        },
        other => RegistryError::failed(what, other),
    }
}

#[async_trait]
impl RunnerRegistry for GithubRegistry {
    async fn list_runners(&self) -> Result<Vec<Registration>, RegistryError> {
        let result = self.client.list_runners(None).await;
        self.record("list_runners", &result);
        Ok(result
            .map_err(|e| convert("listing runners", e))?
            .into_iter()
            .map(|r| Registration {
                id: r.id.0,
                name: r.name,
                online: r.status == github::RunnerStatus::Online,
                busy: r.busy,
                labels: r.labels,
            })
            .collect())
    }

    async fn registration_token(&self) -> Result<Secret, RegistryError> {
        let result = self.client.create_registration_token().await;
        self.record("registration_token", &result);
        let token = result.map_err(|e| convert("creating a registration token", e))?;
        Ok(Secret::new(token.token.expose()))
    }

    async fn remove_token(&self) -> Result<Secret, RegistryError> {
        let result = self.client.create_remove_token().await;
        self.record("remove_token", &result);
        let token = result.map_err(|e| convert("creating a remove token", e))?;
        Ok(Secret::new(token.token.expose()))
    }

    async fn generate_jit(
        &self,
        name: &RunnerName,
        labels: &[String],
    ) -> Result<JitConfig, RegistryError> {
        let group = self.group.clone().unwrap_or_else(|| "default".to_owned());
        let group_id = self
            .group_id
            .get_or_try_init(|| async {
                let result = self.client.runner_group_id(&group).await;
                self.record("runner_group_id", &result);
                result.map_err(|e| convert("resolving the runner group", e))
            })
            .await?;
        let request = github::JitRequest {
            name: name.to_string(),
            labels: labels.to_vec(),
            runner_group_id: *group_id,
            work_folder: None,
        };
        let result = self.client.generate_jitconfig(&request).await;
        self.record("generate_jitconfig", &result);
        let jit = result.map_err(|e| convert("generating a jit config", e))?;
        Ok(JitConfig {
            runner_id: jit.runner.id.0,
            encoded: Secret::new(jit.encoded_jit_config.expose()),
        })
    }

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError> {
        let result = self.client.delete_runner(github::RunnerId(id)).await;
        self.record("delete_runner", &result);
        match result {
            Ok(()) => Ok(DeleteOutcome::Deleted),
            Err(github::Error::NotFound { .. }) => Ok(DeleteOutcome::NotFound),
            Err(github::Error::RunnerBusy { .. }) => Ok(DeleteOutcome::Busy),
            Err(e) => Err(convert("deleting a runner", e)),
        }
    }

    async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, RegistryError> {
        let result = self.client.list_downloads().await;
        self.record("list_downloads", &result);
        Ok(result
            .map_err(|e| convert("listing runner downloads", e))?
            .into_iter()
            .map(|d| RunnerDownload {
                os: d.os,
                architecture: d.architecture,
                download_url: d.download_url,
                filename: d.filename,
                sha256: d.sha256_checksum.unwrap_or_default(),
                temp_download_token: d.temp_download_token.map(|t| Secret::new(t.expose())),
            })
            .collect())
    }
}
