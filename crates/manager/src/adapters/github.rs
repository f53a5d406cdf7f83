//! `RunnerRegistry` over `github::Client`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::events::Metrics;
use crate::model::Secret;
use crate::provider::{
    DeleteOutcome, JitConfig, JitRequest, Registration, RegistryError, RunnerDownload,
    RunnerRegistry,
};

/// GitHub as a [`RunnerRegistry`]; reports calls and the rate-limit budget into [`Metrics`].
#[derive(Debug, Clone)]
pub struct GitHubRegistry {
    client: github::Client,
    /// The runner group of an organisation or enterprise scope (`default` when `None`; names
    /// match ignoring case, so that finds GitHub's `Default`). Each group a pool names is
    /// resolved once, in `group_ids` (by lowercased name).
    group: Option<String>,
    group_ids: Arc<parking_lot::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<u64>>>>>,
    metrics: Option<Arc<Metrics>>,
}

impl GitHubRegistry {
    pub fn new(
        client: github::Client,
        group: Option<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            client,
            group,
            group_ids: Arc::default(),
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

/// GitHub's error stays the source: the message behind a refusal, the connection or TLS
/// failure behind a failed request.
fn convert(what: &str, error: github::Error) -> RegistryError {
    let what = what.to_owned();
    match error {
        github::Error::Unauthorized { .. } | github::Error::Forbidden { .. } => {
            RegistryError::Unauthorized {
                what,
                source: Box::new(error),
            }
        }
        github::Error::RateLimited { .. } => RegistryError::RateLimited {
            what,
            source: Box::new(error),
        },
        github::Error::Timeout { .. } => RegistryError::Timeout {
            what,
            source: Box::new(error),
        },
        other => RegistryError::Failed {
            what,
            source: Box::new(other),
        },
    }
}

#[async_trait]
impl RunnerRegistry for GitHubRegistry {
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
        Ok(token.token)
    }

    async fn generate_jit(&self, request: &JitRequest) -> Result<JitConfig, RegistryError> {
        let group = request
            .group
            .clone()
            .or_else(|| self.group.clone())
            .unwrap_or_else(|| "default".to_owned());
        let cell = Arc::clone(
            self.group_ids
                .lock()
                .entry(group.to_ascii_lowercase())
                .or_default(),
        );
        let group_id = cell
            .get_or_try_init(|| async {
                let result = self.client.runner_group_id(&group).await;
                self.record("runner_group_id", &result);
                result.map_err(|e| convert("resolving the runner group", e))
            })
            .await?;
        let result = self
            .client
            .generate_jitconfig(&github::JitRequest {
                name: request.name.to_string(),
                labels: request.labels.clone(),
                runner_group_id: *group_id,
                work_folder: None,
            })
            .await;
        self.record("generate_jitconfig", &result);
        let jit = result.map_err(|e| convert("generating a jit config", e))?;
        Ok(JitConfig {
            runner_id: jit.runner.id.0,
            encoded: jit.encoded_jit_config,
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
                temp_download_token: d.temp_download_token,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use github_sim::{Sim, SimConfig, SimHandle};

    use super::*;

    const GROUPS: &str = "GET /orgs/{org}/actions/runner-groups";
    const ENTERPRISE_GROUPS: &str = "GET /enterprises/{enterprise}/actions/runner-groups";

    fn registry(sim: &SimHandle, scope: &str, group: Option<&str>) -> GitHubRegistry {
        let mut config = github::ClientConfig::new(
            url::Url::parse(&sim.api_url()).expect("api url"),
            url::Url::parse(&sim.web_url()).expect("web url"),
            github::Scope::parse(scope).expect("scope"),
            github::Auth::Token(sim.token()),
        );
        config.timeout = Duration::from_secs(10);
        let client = github::Client::new(config).expect("client");
        GitHubRegistry::new(client, group.map(str::to_owned), None)
    }

    /// A runner with a fresh name (`app-0-xxxxxxxx`), in the registry's group.
    fn request() -> JitRequest {
        JitRequest {
            name: crate::model::Owner::new("app", 0)
                .expect("owner")
                .new_runner_name(),
            labels: vec!["self-hosted".to_owned(), "jammy".to_owned()],
            group: None,
        }
    }

    /// Issue 12: the manager's default `runner_group = "default"` on an organisation and an
    /// enterprise. GitHub names the default group `Default`; the lookup ignores case, as
    /// actions/runner does, so JIT registration works with the default config.
    #[tokio::test]
    async fn jit_with_the_default_group_on_org_and_enterprise() {
        let sim = Sim::start(SimConfig::default()).await.expect("sim");
        for (scope, endpoint) in [
            ("octo-org", GROUPS),
            ("enterprises/acme", ENTERPRISE_GROUPS),
        ] {
            for group in [Some("default"), None] {
                sim.reset_request_counts();
                let registry = registry(&sim, scope, group);
                let jit = registry
                    .generate_jit(&request())
                    .await
                    .unwrap_or_else(|e| panic!("{scope} group {group:?}: {e}"));
                let runner = sim
                    .runners()
                    .into_iter()
                    .find(|r| r.id == jit.runner_id)
                    .expect("registered");
                assert_eq!(runner.runner_group_id, 1, "{scope}: GitHub's Default group");
                assert_eq!(sim.request_counts()[endpoint].count, 1, "{scope}");
                registry
                    .delete_registration(jit.runner_id)
                    .await
                    .expect("delete");
            }
        }
    }

    /// The group id is resolved once per registry, not once per created runner, even when the
    /// registrations run concurrently.
    #[tokio::test]
    async fn the_runner_group_is_looked_up_once_for_many_registrations() {
        let sim = Sim::start(SimConfig::default()).await.expect("sim");
        let registry = registry(&sim, "octo-org", Some("default"));
        // Concurrent first, while nothing is cached yet; then one after the other.
        let concurrent: Vec<_> = (0..10)
            .map(|_| {
                let registry = registry.clone();
                tokio::spawn(async move { registry.generate_jit(&request()).await })
            })
            .collect();
        for task in concurrent {
            task.await.expect("task").expect("concurrent jit");
        }
        for _ in 0..5 {
            registry
                .generate_jit(&request())
                .await
                .expect("sequential jit");
        }
        let counts = sim.request_counts();
        assert_eq!(
            counts["POST /orgs/{org}/actions/runners/generate-jitconfig"].count,
            15
        );
        assert_eq!(
            counts[GROUPS].count, 1,
            "one runner-groups request for 15 runners"
        );
    }

    /// An unknown group fails the creation with a message that says what exists and how to
    /// check, and is looked up again on the next creation (nothing wrong is cached).
    #[tokio::test]
    async fn an_unknown_group_names_the_groups_that_exist() {
        let sim = Sim::start(SimConfig::default()).await.expect("sim");
        let registry = registry(&sim, "octo-org", Some("gpu"));
        let error = registry
            .generate_jit(&request())
            .await
            .expect_err("no such group");
        let error = crate::provider::render_chain(&error);
        for part in [
            "runner group \"gpu\" not found in organisation octo-org",
            "\"Default\" (id 1, default)",
            "GET /orgs/octo-org/actions/runner-groups",
        ] {
            assert!(error.contains(part), "{part:?} missing from: {error}");
        }
        registry
            .generate_jit(&request())
            .await
            .expect_err("still no such group");
        assert_eq!(sim.request_counts()[GROUPS].count, 2);
        assert!(sim.runners().is_empty(), "nothing registered");
    }

    /// Issue 13: the cause stays in the chain. A refused connection still says so (the OS
    /// text, under "request to github failed"), and an authorisation error keeps GitHub's
    /// message.
    #[tokio::test]
    async fn errors_keep_their_cause() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let mut config = github::ClientConfig::new(
            url::Url::parse(&url).expect("api url"),
            url::Url::parse(&url).expect("web url"),
            github::Scope::parse("octo-org").expect("scope"),
            github::Auth::Token(github::Secret::new("t0ken")),
        );
        config.retry.max_retries = 0;
        let refused = GitHubRegistry::new(github::Client::new(config).expect("client"), None, None);
        let error = refused.list_runners().await.expect_err("nothing listens");
        assert!(matches!(error, RegistryError::Failed { .. }), "{error:?}");
        let text = crate::provider::render_chain(&error);
        assert!(
            text.starts_with("listing runners failed: request to github failed: ")
                && text.to_ascii_lowercase().contains("connection refused"),
            "{text}"
        );

        let sim = Sim::start(SimConfig::default()).await.expect("sim");
        let mut config = github::ClientConfig::new(
            url::Url::parse(&sim.api_url()).expect("api url"),
            url::Url::parse(&sim.web_url()).expect("web url"),
            github::Scope::parse("octo-org").expect("scope"),
            github::Auth::Token(github::Secret::new("not-the-token")),
        );
        config.timeout = Duration::from_secs(10);
        let unauthorized =
            GitHubRegistry::new(github::Client::new(config).expect("client"), None, None);
        let error = unauthorized
            .list_runners()
            .await
            .expect_err("bad credentials");
        assert!(
            matches!(error, RegistryError::Unauthorized { .. }),
            "{error:?}"
        );
        assert_eq!(
            crate::provider::render_chain(&error),
            "github refused the credentials while listing runners: \
             github rejected the credentials: Bad credentials"
        );
    }
}
