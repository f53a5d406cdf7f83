//! The raw serde types: what the TOML holds, unknown keys rejected, before validation.

use super::*;

/// A string that may be a secret: a type error never echoes the value.
pub(super) struct RawSecret(pub(super) String);

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(deserializer)? {
            toml::Value::String(value) => Ok(Self(value)),
            other => Err(de::Error::custom(format_args!(
                "invalid type: {}, expected a string",
                other.type_str()
            ))),
        }
    }
}

/// The whole file. Every table may be left out: a missing one is its `Default`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) app_name: Option<String>,
    pub(super) unit: Option<u32>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) github: RawGitHub,
    pub(super) lxd: RawLxd,
    pub(super) runners: RawRunners,
    pub(super) proxy: RawProxy,
    pub(super) policy: RawPolicy,
    pub(super) metrics: RawMetrics,
    pub(super) server: RawServer,
    /// `[[pools]]`; empty for the single-pool form.
    pub(super) pools: Vec<RawPool>,
    pub(super) demand: RawDemand,
    pub(super) images: RawImages,
    pub(super) cluster: RawCluster,
    /// `[scaleset]`: timings of scale-set pools' listeners.
    pub(super) scaleset: RawScaleSet,
    /// `[ha]`: active/standby managers.
    pub(super) ha: RawHa,
}

/// `[scaleset]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScaleSet {
    pub(super) standby_backoff_min_ms: Option<u64>,
    pub(super) standby_backoff_max_ms: Option<u64>,
    pub(super) error_backoff_min_ms: Option<u64>,
    pub(super) error_backoff_max_ms: Option<u64>,
    pub(super) poll_timeout_seconds: Option<u64>,
}

/// `[ha]` as written (validated in `ha.rs`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub(super) enabled: Option<bool>,
    pub(super) lease_seconds: Option<u64>,
    pub(super) renew_seconds: Option<u64>,
    pub(super) manager_id: Option<String>,
}

/// `[cluster]`: placement on an LXD/Incus cluster.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) placement: Option<String>,
    pub(super) overcommit_cpu: Option<f64>,
    pub(super) overcommit_memory: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitHub {
    pub(super) path: Option<String>,
    pub(super) runner_group: Option<String>,
    pub(super) token: Option<RawSecret>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) api_url: Option<String>,
    pub(super) web_url: Option<String>,
    pub(super) app: Option<RawGitHubApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitHubApp {
    pub(super) app_id: Option<u64>,
    pub(super) installation_id: Option<u64>,
    pub(super) private_key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLxd {
    pub(super) socket: Option<PathBuf>,
    pub(super) url: Option<String>,
    pub(super) client_cert: Option<PathBuf>,
    pub(super) client_key: Option<PathBuf>,
    pub(super) server_cert: Option<PathBuf>,
    pub(super) image: Option<String>,
    pub(super) instance_type: Option<InstanceType>,
    pub(super) storage_path: Option<PathBuf>,
    pub(super) target: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRunners {
    pub(super) quantity: Option<u32>,
    pub(super) cpu: Option<u32>,
    pub(super) memory: Option<Size>,
    pub(super) disk: Option<Size>,
    pub(super) labels: Option<Vec<String>>,
    pub(super) registration: Option<RegistrationMode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    pub(super) http: Option<RawSecret>,
    pub(super) https: Option<RawSecret>,
    pub(super) no_proxy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) url: Option<String>,
    pub(super) service_token: Option<RawSecret>,
    pub(super) service_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) issue_metrics: Option<bool>,
    pub(super) events_log: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) api_token: Option<RawSecret>,
    pub(super) api_token_file: Option<PathBuf>,
    pub(super) webhook_secret: Option<RawSecret>,
    pub(super) webhook_secret_file: Option<PathBuf>,
    pub(super) reconcile_interval_seconds: Option<u64>,
    pub(super) public_url: Option<String>,
    pub(super) hook_id: Option<u64>,
}

/// One `[[pools]]` table; unset keys fall back to `[lxd]`, `[runners]` and `[github]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) name: Option<String>,
    pub(super) image: Option<String>,
    pub(super) instance_type: Option<InstanceType>,
    pub(super) cpu: Option<u32>,
    pub(super) memory: Option<Size>,
    pub(super) disk: Option<Size>,
    pub(super) profiles: Option<Vec<String>>,
    pub(super) labels: Option<Vec<String>>,
    pub(super) runner_group: Option<String>,
    pub(super) registration: Option<RegistrationMode>,
    pub(super) min_idle: Option<u32>,
    pub(super) max: Option<u32>,
    pub(super) priority: Option<i32>,
    pub(super) image_mode: Option<manager::pool::ImageMode>,
    /// `webhook` (the default) or `scaleset`.
    pub(super) scaling: Option<manager::scaleset::Scaling>,
    pub(super) scale_set_name: Option<String>,
    pub(super) placement: Option<String>,
    pub(super) target: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawImages {
    pub(super) canary_percent: Option<u32>,
    pub(super) promote_after: Option<u32>,
    pub(super) check_seconds: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDemand {
    pub(super) queued_stale_seconds: Option<u64>,
    pub(super) max_idle_age_seconds: Option<u64>,
    pub(super) delivery_check_seconds: Option<u64>,
    pub(super) queued_expiry_seconds: Option<u64>,
}
