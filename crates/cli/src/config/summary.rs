//! What `check-config` prints: the config with no secret value.

use super::*;

/// A redacted view of the config, for `check-config` and logs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigSummary {
    pub runner_name_prefix: String,
    pub state_dir: String,
    pub github_path: String,
    pub github_scope: &'static str,
    pub runner_group: String,
    pub github_auth: String,
    pub api_url: String,
    pub web_url: String,
    pub lxd_endpoint: String,
    pub image: String,
    pub instance_type: &'static str,
    pub storage: String,
    pub target: Option<String>,
    pub quantity: u32,
    pub cpu: u32,
    pub memory: String,
    pub disk: String,
    pub labels: Vec<String>,
    pub registration: &'static str,
    pub proxy: Vec<String>,
    pub policy: String,
    pub events_log: Option<String>,
    pub listen: String,
    pub api_token: &'static str,
    pub webhook_secret: &'static str,
    pub reconcile_interval_seconds: u64,
    /// `server.public_url` (a password masked); `None` when not set.
    pub public_url: Option<String>,
    pub hook_id: Option<u64>,
    /// The pools of `[[pools]]`; empty for the single-pool form.
    pub pools: Vec<PoolSummary>,
    pub demand: DemandSummary,
    /// Where `check-config --route` sends a job; absent without `--route`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteSummary>,
}

/// One pool of `[[pools]]`, with its fallbacks applied.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PoolSummary {
    pub name: String,
    pub image: String,
    pub instance_type: &'static str,
    pub cpu: u32,
    pub memory: String,
    pub disk: String,
    pub profiles: Vec<String>,
    /// Every label its runners have on GitHub (lowercased, sorted), this host's OS and
    /// architecture included: what a job's `runs-on` is matched against.
    pub labels: Vec<String>,
    pub runner_group: String,
    pub registration: &'static str,
    pub min_idle: usize,
    pub max: usize,
    pub priority: i32,
    /// `plain` or `baked`.
    pub image_mode: &'static str,
}

/// `[demand]`, in seconds (`max_idle_age_seconds` 0: never).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DemandSummary {
    pub queued_stale_seconds: u64,
    pub max_idle_age_seconds: u64,
    pub delivery_check_seconds: u64,
    pub queued_expiry_seconds: u64,
}

impl Config {
    pub fn summary(&self) -> ConfigSummary {
        let set = |secret: &Option<Secret>| {
            if secret.is_some() {
                "set"
            } else {
                "not set (disabled)"
            }
        };
        ConfigSummary {
            runner_name_prefix: self.runner_name_prefix(),
            state_dir: self.state_dir.display().to_string(),
            github_path: self.github.path.to_string(),
            github_scope: self.github.path.kind(),
            runner_group: self
                .github
                .path
                .group()
                .unwrap_or(DEFAULT_RUNNER_GROUP)
                .to_owned(),
            github_auth: match &self.github.credentials {
                GitHubCredentials::Token { source, .. } => format!("token from {source}"),
                GitHubCredentials::App {
                    app_id,
                    installation_id,
                    private_key_file,
                    ..
                } => format!(
                    "GitHub App {app_id}, installation {}, key {}",
                    installation_id.map_or("looked up".to_owned(), |id| id.to_string()),
                    private_key_file.display()
                ),
            },
            api_url: self.github.api_url.to_string(),
            web_url: self.github.web_url.to_string(),
            lxd_endpoint: match &self.lxd.endpoint {
                LxdEndpoint::Discover => "unix socket, discovered".to_owned(),
                LxdEndpoint::Socket(path) => format!("unix socket {}", path.display()),
                LxdEndpoint::Https { url, .. } => format!("{url} (TLS client certificate)"),
            },
            image: self.lxd.image.clone(),
            instance_type: self.lxd.instance_type.as_str(),
            storage: self.lxd.storage_path.as_ref().map_or_else(
                || "default pool".to_owned(),
                |path| format!("dir pool \"runner\" at {}", path.display()),
            ),
            target: self.lxd.target.clone(),
            quantity: self.runners.quantity,
            cpu: self.runners.cpu,
            memory: self.runners.memory.to_string(),
            disk: self.runners.disk.to_string(),
            labels: self.runner_labels(),
            registration: self.runners.registration.as_str(),
            proxy: [
                self.proxy.http.as_ref().map(|url| format!("http={url}")),
                self.proxy.https.as_ref().map(|url| format!("https={url}")),
                self.proxy
                    .no_proxy
                    .as_ref()
                    .map(|hosts| format!("no_proxy={hosts}")),
            ]
            .into_iter()
            .flatten()
            .collect(),
            policy: self.policy.as_ref().map_or_else(
                || "disabled".to_owned(),
                |policy| {
                    format!(
                        "{} (token from {})",
                        policy.url, policy.service_token_source
                    )
                },
            ),
            events_log: self
                .metrics
                .issue_metrics
                .then(|| self.metrics.events_log.display().to_string()),
            listen: self.server.listen.to_string(),
            api_token: set(&self.server.api_token),
            webhook_secret: set(&self.server.webhook_secret),
            reconcile_interval_seconds: self.server.reconcile_interval.as_secs(),
            public_url: self.server.public_url.as_ref().map(redact_url),
            hook_id: self.server.hook_id,
            pools: self
                .pools
                .iter()
                .map(|pool| self.pool_summary(pool))
                .collect(),
            demand: DemandSummary {
                queued_stale_seconds: self.demand.settings.stale_after.as_secs(),
                max_idle_age_seconds: self
                    .demand
                    .settings
                    .max_idle_age
                    .map_or(0, |age| age.as_secs()),
                delivery_check_seconds: self.demand.delivery_check_interval.as_secs(),
                queued_expiry_seconds: self.demand.queued_expiry.as_secs(),
            },
            route: None,
        }
    }

    fn pool_summary(&self, pool: &PoolSpec) -> PoolSummary {
        let (os, arch) = manager::runner_bin::platform();
        let (min_idle, max) = match pool.sizing {
            Sizing::Fixed(quantity) => (quantity, quantity),
            Sizing::Demand { min_idle, max } => (min_idle, max),
        };
        PoolSummary {
            name: pool.name.to_string(),
            image: pool.image.clone(),
            instance_type: pool.instance_type.as_str(),
            cpu: pool.resources.cpu,
            memory: pool.resources.memory.to_string(),
            disk: pool.resources.disk.to_string(),
            profiles: pool.profiles.clone(),
            labels: pool
                .all_labels(&self.app_name, os, arch)
                .into_iter()
                .collect(),
            runner_group: pool
                .runner_group
                .as_deref()
                .or(self.github.path.group())
                .unwrap_or(DEFAULT_RUNNER_GROUP)
                .to_owned(),
            registration: pool.registration.as_str(),
            min_idle,
            max,
            priority: pool.priority,
            image_mode: pool.image_mode.as_str(),
        }
    }
}
