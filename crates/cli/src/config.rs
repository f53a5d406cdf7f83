//! The config file: parsed once into a validated [`Config`].
//!
//! Parsing has two steps. Serde reads the TOML into `Raw*` structs that reject unknown keys
//! (`deny_unknown_fields`), with the key path of any type error tracked by
//! `serde_path_to_error`. Validation then turns the raw values into closed types, collecting
//! every problem as a [`KeyError`] that names the full key (`runners.memory`) and the reason.
//!
//! Secrets (`github.token`, `policy.service_token`, `server.api_token`, `server.webhook_secret`,
//! the App private key) can also come from a `*_file` key or an environment variable. A key in the
//! file wins over the environment. Their values are held in [`Secret`] and never appear in
//! errors. Relative paths are resolved against the config file's directory.
//!
//! Values the manager uses are parsed straight into the manager's own types, with the manager's
//! rules, so there is one definition of each and nothing is turned back into a string to be
//! parsed again: the scope and its runner group ([`GitHubPath`]), sizes ([`Size`]),
//! [`InstanceType`], [`RegistrationMode`] and the proxies ([`ProxySettings`], whose URLs keep their
//! credentials for where they are used and mask them everywhere else).

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use url::Url;

pub use manager::model::DEFAULT_RUNNER_GROUP;
pub use manager::{GitHubPath, InstanceType, ProxySettings, ProxyUrl, RegistrationMode, Size};

use crate::secret::Secret;

/// Where the config file is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/runner-manager/config.toml";
/// The environment variable that overrides [`DEFAULT_CONFIG_PATH`].
pub const CONFIG_PATH_ENV: &str = "RUNNER_MANAGER_CONFIG";
/// Environment fallbacks for secrets that are not set in the file.
pub const GITHUB_TOKEN_ENV: &str = "RUNNER_MANAGER_GITHUB_TOKEN";
pub const SERVICE_TOKEN_ENV: &str = "RUNNER_MANAGER_SERVICE_TOKEN";
pub const API_TOKEN_ENV: &str = "RUNNER_MANAGER_API_TOKEN";
pub const WEBHOOK_SECRET_ENV: &str = "RUNNER_MANAGER_WEBHOOK_SECRET";

/// Replaces a password in URLs that are shown (`[redacted]` would be percent-encoded).
const REDACTED_PASSWORD: &str = "redacted";
const MAX_QUANTITY: u32 = 10_000;
const MAX_CPU: u32 = 1_024;
const MAX_UNIT: u32 = 99_999;
const MAX_APP_NAME: usize = 40;
const MAX_LABELS: usize = 100;
const INTERVAL_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;

// ---------------------------------------------------------------------------------------------
// Validated types
// ---------------------------------------------------------------------------------------------

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Runners are named `<app_name>-<unit>-<suffix>`.
    pub app_name: String,
    pub unit: u32,
    /// Runner binary cache and other local state.
    pub state_dir: PathBuf,
    pub github: GithubConfig,
    pub lxd: LxdConfig,
    pub runners: RunnersConfig,
    /// Proxies for the manager's GitHub traffic and the runners' environment.
    pub proxy: ProxySettings,
    /// The pre-job policy check service; `None` when `policy.url` is empty.
    pub policy: Option<PolicyConfig>,
    pub metrics: MetricsConfig,
    pub server: ServerConfig,
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    /// Where runners register, with the runner group of an organisation or enterprise
    /// (`github.path` and `github.runner_group`).
    pub path: GitHubPath,
    pub credentials: GithubCredentials,
    /// REST base URL, e.g. `https://api.github.com/` or `https://HOST/api/v3`.
    pub api_url: Url,
    /// What `config.sh --url` is built from, e.g. `https://github.com/`.
    pub web_url: Url,
}

/// How runner-manager authenticates to GitHub.
#[derive(Debug, Clone)]
pub enum GithubCredentials {
    /// A personal access token.
    Token { token: Secret, source: SecretSource },
    /// A GitHub App; the installation is looked up when `installation_id` is not given.
    App {
        app_id: u64,
        installation_id: Option<u64>,
        private_key: Secret,
        private_key_file: PathBuf,
    },
}

/// Where a secret came from (shown instead of the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The key itself, in the config file.
    ConfigKey(&'static str),
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConfigKey(key) => write!(f, "config key {key}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "env {name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LxdConfig {
    pub endpoint: LxdEndpoint,
    /// Image alias on the server (or `remote:alias`).
    pub image: String,
    /// The default is `virtual-machine`, as in the seed's charm: a VM isolates untrusted jobs
    /// (and their Docker daemon) from the host. `container` starts faster and needs no KVM; the
    /// demo uses it.
    pub instance_type: InstanceType,
    /// The seed's `lxd_storage_path`: a dir pool `runner` there; `None` = the default pool.
    pub storage_path: Option<PathBuf>,
    /// Cluster member to place instances on.
    pub target: Option<String>,
}

/// How to reach LXD/Incus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LxdEndpoint {
    /// Find the socket: `INCUS_SOCKET`, `LXD_SOCKET`, then the usual paths.
    Discover,
    Socket(PathBuf),
    Https {
        url: Url,
        client_cert: PathBuf,
        client_key: PathBuf,
        server_cert: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct RunnersConfig {
    /// Target number of runners (the seed's `virtual-machines`).
    pub quantity: u32,
    pub cpu: u32,
    pub memory: Size,
    pub disk: Size,
    /// Extra labels beside `self-hosted`, `app_name` and `image`.
    pub labels: Vec<String>,
    /// `token` (the default, as the seed does) or `jit`.
    pub registration: RegistrationMode,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub url: Url,
    pub service_token: Secret,
    pub service_token_source: SecretSource,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Append one JSON line per runner event to `events_log` (shipped to Loki).
    pub issue_metrics: bool,
    pub events_log: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Bearer token for the POST endpoints; `None` disables them (every call gets 401).
    pub api_token: Option<Secret>,
    /// Secret of the `workflow_job` webhook; `None` disables `/webhook` (every call gets 401).
    pub webhook_secret: Option<Secret>,
    pub reconcile_interval: Duration,
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The full key, e.g. `runners.memory` or `runners.labels[2]`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TOML syntax error at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", join_errors(.0))]
    Invalid(Vec<KeyError>),
}

fn join_errors(errors: &[KeyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ConfigError {
    /// The keys this error names (empty for read and syntax errors).
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Self::Invalid(errors) => errors.iter().map(|e| e.key.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

#[derive(Default)]
struct Errors(Vec<KeyError>);

impl Errors {
    fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(KeyError {
            key: key.into(),
            reason: reason.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (serde) types
// ---------------------------------------------------------------------------------------------

/// A string that may be a secret: a type error never echoes the value.
struct RawSecret(String);

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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app_name: Option<String>,
    unit: Option<u32>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    github: RawGithub,
    #[serde(default)]
    lxd: RawLxd,
    #[serde(default)]
    runners: RawRunners,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    server: RawServer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGithub {
    path: Option<String>,
    runner_group: Option<String>,
    token: Option<RawSecret>,
    token_file: Option<PathBuf>,
    api_url: Option<String>,
    web_url: Option<String>,
    app: Option<RawGithubApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGithubApp {
    app_id: Option<u64>,
    installation_id: Option<u64>,
    private_key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLxd {
    socket: Option<PathBuf>,
    url: Option<String>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    server_cert: Option<PathBuf>,
    image: Option<String>,
    instance_type: Option<InstanceType>,
    storage_path: Option<PathBuf>,
    target: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRunners {
    quantity: Option<u32>,
    cpu: Option<u32>,
    memory: Option<Size>,
    disk: Option<Size>,
    labels: Option<Vec<String>>,
    registration: Option<RegistrationMode>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    http: Option<RawSecret>,
    https: Option<RawSecret>,
    no_proxy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    url: Option<String>,
    service_token: Option<RawSecret>,
    service_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    issue_metrics: Option<bool>,
    events_log: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    api_token: Option<RawSecret>,
    api_token_file: Option<PathBuf>,
    webhook_secret: Option<RawSecret>,
    webhook_secret_file: Option<PathBuf>,
    reconcile_interval_seconds: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Reads the outside world for [`Config::parse`]: the environment and secret files.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn file_exists(&self, path: &Path) -> bool {
        path.is_file()
    }
}

/// The real process environment and file system.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Config {
    /// Reads and validates the config file at `path`, with the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base_dir, &ProcessEnvironment)
    }

    /// Parses and validates config text; relative paths are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path, env: &dyn Environment) -> Result<Self, ConfigError> {
        let raw = parse_raw(text)?;
        let mut errors = Errors::default();
        let validator = Validator {
            base_dir,
            env,
            errors: &mut errors,
        };
        let config = validator.config(raw);
        match config {
            Some(config) if errors.0.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid(errors.0)),
        }
    }

    /// All labels of this manager's runners: `self-hosted`, `app_name`, `image`, then the extra
    /// labels, without case-insensitive duplicates.
    pub fn runner_labels(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        [
            "self-hosted",
            self.app_name.as_str(),
            self.lxd.image.as_str(),
        ]
        .into_iter()
        .chain(self.runners.labels.iter().map(String::as_str))
        .filter(|label| seen.insert(label.to_ascii_lowercase()))
        .map(str::to_owned)
        .collect()
    }

    /// The prefix of every runner name this manager owns: `<app_name>-<unit>-`.
    pub fn runner_name_prefix(&self) -> String {
        format!("{}-{}-", self.app_name, self.unit)
    }
}

fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|err| syntax_error(text, &err))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        ConfigError::Invalid(vec![serde_key_error(&key, err.inner().message())])
    })
}

/// Turns a serde error into a key error, naming the unknown key itself for unknown fields.
fn serde_key_error(path: &str, message: &str) -> KeyError {
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or_default();
        let expected = rest
            .split_once(", ")
            .map(|(_, expected)| format!(" ({expected})"))
            .unwrap_or_default();
        // serde_path_to_error already records the unknown key itself as the last segment.
        let base = if parent == name {
            ""
        } else {
            parent.strip_suffix(&format!(".{name}")).unwrap_or(parent)
        };
        // A key that is not a bare TOML key ("" or "a.b") is shown quoted, as TOML writes it.
        let bare = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let shown = if bare {
            name.to_owned()
        } else {
            format!("\"{}\"", name.escape_debug())
        };
        return KeyError {
            key: if base.is_empty() {
                shown
            } else {
                format!("{base}.{shown}")
            },
            reason: format!("unknown key{expected}"),
        };
    }
    KeyError {
        key: if parent.is_empty() {
            "(top level)".to_owned()
        } else {
            parent.to_owned()
        },
        reason: friendly_serde_message(message),
    }
}

/// Rewords serde messages that name our internal types.
fn friendly_serde_message(message: &str) -> String {
    if message == "wanted string or table" {
        return "invalid type, expected a string".to_owned();
    }
    match message.find("expected struct Raw") {
        Some(index) => format!("{}expected a table", &message[..index]),
        None => message
            .replace("expected path string", "expected a path string")
            .replace("expected u32", "expected a non-negative integer")
            .replace("expected u64", "expected a non-negative integer"),
    }
}

/// A syntax error with line and column, without the offending source line (which could hold a
/// secret).
fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err
        .span()
        .map(|span| span.start)
        .unwrap_or(0)
        .min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    ConfigError::Syntax {
        line,
        column,
        message: err.message().trim().to_owned(),
    }
}

struct Validator<'a> {
    base_dir: &'a Path,
    env: &'a dyn Environment,
    errors: &'a mut Errors,
}

impl Validator<'_> {
    fn config(mut self, raw: RawConfig) -> Option<Config> {
        let app_name = self.app_name(raw.app_name.unwrap_or_else(|| "github-runner".into()));
        let unit = raw.unit.unwrap_or(0);
        if unit > MAX_UNIT {
            self.errors
                .push("unit", format!("must be at most {MAX_UNIT}"));
        }
        let state_dir = self.path(
            "state_dir",
            raw.state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/runner-manager")),
        );
        let lxd = self.lxd(raw.lxd);
        let github = self.github(raw.github);
        let runners = self.runners(raw.runners);
        let proxy = self.proxy(raw.proxy);
        let policy = self.policy(raw.policy);
        let metrics = self.metrics(raw.metrics);
        let server = self.server(raw.server);
        Some(Config {
            app_name: app_name?,
            unit,
            state_dir: state_dir?,
            github: github?,
            lxd: lxd?,
            runners: runners?,
            proxy,
            policy: policy?,
            metrics: metrics?,
            server: server?,
        })
    }

    fn app_name(&mut self, name: String) -> Option<String> {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let reason = if name.is_empty() {
            Some("must not be empty".to_owned())
        } else if name.len() > MAX_APP_NAME {
            Some(format!("must be at most {MAX_APP_NAME} characters"))
        } else if !valid_chars
            || !name.starts_with(|c: char| c.is_ascii_lowercase())
            || name.ends_with('-')
        {
            Some(format!(
                "invalid name \"{name}\": use lowercase letters, digits and '-', starting with a letter and not ending with '-' (it becomes part of instance names)"
            ))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.errors.push("app_name", reason);
                None
            }
            None => Some(name),
        }
    }

    /// Resolves a path against the config directory; empty paths are errors.
    fn path(&mut self, key: &str, path: PathBuf) -> Option<PathBuf> {
        if path.as_os_str().is_empty() {
            self.errors.push(key, "must not be empty");
            return None;
        }
        Some(self.base_dir.join(path))
    }

    fn optional_path(&mut self, key: &str, path: Option<PathBuf>) -> Option<Option<PathBuf>> {
        match path {
            None => Some(None),
            Some(path) => self.path(key, path).map(Some),
        }
    }

    fn existing_file(&mut self, key: &str, path: PathBuf) -> Option<PathBuf> {
        let path = self.path(key, path)?;
        if self.env.file_exists(&path) {
            Some(path)
        } else {
            self.errors
                .push(key, format!("file {} does not exist", path.display()));
            None
        }
    }

    fn url(&mut self, key: &str, value: &str, schemes: &[&str]) -> Option<Url> {
        match Url::parse(value) {
            Ok(url) if schemes.contains(&url.scheme()) && url.has_host() => Some(url),
            Ok(url) => {
                self.errors.push(
                    key,
                    format!(
                        "unsupported URL \"{}\": expected {}",
                        redact_url(&url),
                        schemes
                            .iter()
                            .map(|s| format!("{s}://HOST"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                );
                None
            }
            Err(err) => {
                self.errors.push(key, format!("invalid URL: {err}"));
                None
            }
        }
    }

    fn secret_file(&mut self, key: &str, path: PathBuf) -> Option<(Secret, PathBuf)> {
        let path = self.path(key, path)?;
        match self.env.read_file(&path) {
            Ok(text) => match Secret::new(text) {
                Some(secret) => Some((secret, path)),
                None => {
                    self.errors
                        .push(key, format!("file {} is empty", path.display()));
                    None
                }
            },
            Err(err) => {
                self.errors
                    .push(key, format!("reading {}: {err}", path.display()));
                None
            }
        }
    }

    /// A secret from `<key>`, `<key>_file` or the environment variable, in that order.
    /// `Ok(None)` when none is set; `None` on an error (already recorded).
    fn secret(
        &mut self,
        key: &'static str,
        file_key: &'static str,
        env_name: &'static str,
        inline: Option<RawSecret>,
        file: Option<PathBuf>,
    ) -> Option<Option<(Secret, SecretSource)>> {
        let inline = inline.and_then(|raw| Secret::new(raw.0));
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.errors
                    .push(key, format!("set either {key} or {file_key}, not both"));
                None
            }
            (Some(secret), None) => Some(Some((secret, SecretSource::ConfigKey(key)))),
            (None, Some(path)) => {
                let (secret, path) = self.secret_file(file_key, path)?;
                Some(Some((secret, SecretSource::File(path))))
            }
            (None, None) => Some(
                self.env
                    .var(env_name)
                    .and_then(Secret::new)
                    .map(|secret| (secret, SecretSource::Env(env_name))),
            ),
        }
    }

    fn github(&mut self, raw: RawGithub) -> Option<GithubConfig> {
        // The group is checked first (the path is parsed with it) but reported after the path.
        let group = match raw.runner_group.as_deref() {
            None => Some(DEFAULT_RUNNER_GROUP),
            Some(group) if group.trim().is_empty() || group.chars().any(char::is_control) => None,
            Some(group) => Some(group),
        };
        let path = match raw.path.as_deref() {
            None => {
                self.errors.push(
                    "github.path",
                    "missing: set \"owner/repo\", an organisation or \"enterprises/<slug>\"",
                );
                None
            }
            Some(path) => match GitHubPath::parse(path, group.unwrap_or(DEFAULT_RUNNER_GROUP)) {
                Ok(path) => Some(path),
                Err(err) => {
                    self.errors.push("github.path", err.to_string());
                    None
                }
            },
        };
        let group_ok = match (group, &path) {
            (None, _) => {
                self.errors
                    .push("github.runner_group", "must be a non-empty group name");
                false
            }
            (Some(group), Some(path @ GitHubPath::Repo { .. }))
                if group != DEFAULT_RUNNER_GROUP =>
            {
                self.errors.push(
                    "github.runner_group",
                    format!(
                        "runner groups exist only for an organisation or enterprise, but github.path \"{path}\" is a repository"
                    ),
                );
                false
            }
            _ => true,
        };
        let credentials = self.github_credentials(raw.token, raw.token_file, raw.app);
        let api_url = match raw.api_url.as_deref() {
            None => Url::parse("https://api.github.com").ok(),
            Some(url) => self.url("github.api_url", url, &["https", "http"]),
        };
        let web_url = match (raw.web_url.as_deref(), &api_url) {
            (Some(url), _) => self.url("github.web_url", url, &["https", "http"]),
            (None, Some(api_url)) => Some(default_web_url(api_url)),
            (None, None) => None,
        };
        Some(GithubConfig {
            path: path.filter(|_| group_ok)?,
            credentials: credentials?,
            api_url: api_url?,
            web_url: web_url?,
        })
    }

    fn github_credentials(
        &mut self,
        token: Option<RawSecret>,
        token_file: Option<PathBuf>,
        app: Option<RawGithubApp>,
    ) -> Option<GithubCredentials> {
        let has_token =
            token.as_ref().is_some_and(|t| !t.0.trim().is_empty()) || token_file.is_some();
        if let Some(app) = app {
            if has_token {
                self.errors.push(
                    "github.app",
                    "set either a token (github.token or github.token_file) or [github.app], not both",
                );
                return None;
            }
            return self.github_app(app);
        }
        let secret = self.secret(
            "github.token",
            "github.token_file",
            GITHUB_TOKEN_ENV,
            token,
            token_file,
        )?;
        match secret {
            Some((token, source)) => Some(GithubCredentials::Token { token, source }),
            None => {
                self.errors.push(
                    "github.token",
                    format!(
                        "missing: set github.token, github.token_file, [github.app] or the environment variable {GITHUB_TOKEN_ENV}"
                    ),
                );
                None
            }
        }
    }

    fn github_app(&mut self, app: RawGithubApp) -> Option<GithubCredentials> {
        let app_id = match app.app_id {
            None => {
                self.errors.push("github.app.app_id", "missing");
                None
            }
            Some(0) => {
                self.errors
                    .push("github.app.app_id", "must be greater than zero");
                None
            }
            Some(id) => Some(id),
        };
        if app.installation_id == Some(0) {
            self.errors
                .push("github.app.installation_id", "must be greater than zero");
        }
        let private_key = match app.private_key_file {
            None => {
                self.errors.push("github.app.private_key_file", "missing");
                None
            }
            Some(path) => {
                let (key, path) = self.secret_file("github.app.private_key_file", path)?;
                if key.expose().contains("PRIVATE KEY-----") {
                    Some((key, path))
                } else {
                    self.errors.push(
                        "github.app.private_key_file",
                        format!("{} is not a PEM private key", path.display()),
                    );
                    None
                }
            }
        };
        let (private_key, private_key_file) = private_key?;
        Some(GithubCredentials::App {
            app_id: app_id?,
            installation_id: app.installation_id.filter(|id| *id > 0),
            private_key,
            private_key_file,
        })
    }

    fn lxd(&mut self, raw: RawLxd) -> Option<LxdConfig> {
        let endpoint = self.lxd_endpoint(&raw);
        let image = match raw.image {
            None => Some("jammy".to_owned()),
            Some(image)
                if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c == ',') =>
            {
                self.errors.push(
                    "lxd.image",
                    format!("invalid image alias \"{image}\": must be non-empty, without spaces or commas"),
                );
                None
            }
            Some(image) => Some(image),
        };
        let storage_path = self.optional_path("lxd.storage_path", raw.storage_path);
        let target = match raw.target {
            Some(target) if target.trim().is_empty() => {
                self.errors
                    .push("lxd.target", "must be a cluster member name");
                None
            }
            target => Some(target),
        };
        Some(LxdConfig {
            endpoint: endpoint?,
            image: image?,
            instance_type: raw.instance_type.unwrap_or(InstanceType::VirtualMachine),
            storage_path: storage_path?,
            target: target?,
        })
    }

    fn lxd_endpoint(&mut self, raw: &RawLxd) -> Option<LxdEndpoint> {
        let tls_key_set =
            raw.client_cert.is_some() || raw.client_key.is_some() || raw.server_cert.is_some();
        match (&raw.socket, &raw.url) {
            (Some(_), Some(_)) => {
                self.errors
                    .push("lxd.url", "set either lxd.socket or lxd.url, not both");
                None
            }
            (Some(socket), None) => {
                if tls_key_set {
                    self.errors.push(
                        "lxd.client_cert",
                        "client_cert, client_key and server_cert apply only with lxd.url",
                    );
                }
                self.path("lxd.socket", socket.clone())
                    .map(LxdEndpoint::Socket)
            }
            (None, None) => {
                if tls_key_set {
                    self.errors.push(
                        "lxd.client_cert",
                        "client_cert, client_key and server_cert apply only with lxd.url",
                    );
                }
                Some(LxdEndpoint::Discover)
            }
            (None, Some(url)) => {
                let url = self.url("lxd.url", url, &["https"]);
                let client_cert = match &raw.client_cert {
                    Some(path) => self.existing_file("lxd.client_cert", path.clone()),
                    None => {
                        self.errors.push(
                            "lxd.client_cert",
                            "missing: lxd.url needs a client certificate",
                        );
                        None
                    }
                };
                let client_key = match &raw.client_key {
                    Some(path) => self.existing_file("lxd.client_key", path.clone()),
                    None => {
                        self.errors
                            .push("lxd.client_key", "missing: lxd.url needs a client key");
                        None
                    }
                };
                let server_cert = match &raw.server_cert {
                    Some(path) => self
                        .existing_file("lxd.server_cert", path.clone())
                        .map(Some),
                    None => Some(None),
                };
                Some(LxdEndpoint::Https {
                    url: url?,
                    client_cert: client_cert?,
                    client_key: client_key?,
                    server_cert: server_cert?,
                })
            }
        }
    }

    fn runners(&mut self, raw: RawRunners) -> Option<RunnersConfig> {
        let quantity = raw.quantity.unwrap_or(1);
        if quantity > MAX_QUANTITY {
            self.errors.push(
                "runners.quantity",
                format!("must be at most {MAX_QUANTITY} (GitHub's limit per runner group)"),
            );
        }
        let cpu = raw.cpu.unwrap_or(2);
        if cpu == 0 || cpu > MAX_CPU {
            self.errors
                .push("runners.cpu", format!("must be between 1 and {MAX_CPU}"));
        }
        let mut labels = Vec::new();
        let mut labels_ok = true;
        let raw_labels = raw.labels.unwrap_or_default();
        if raw_labels.len() > MAX_LABELS - 3 {
            self.errors.push(
                "runners.labels",
                format!(
                    "at most {} extra labels (GitHub allows {MAX_LABELS})",
                    MAX_LABELS - 3
                ),
            );
            labels_ok = false;
        }
        for (index, label) in raw_labels.into_iter().enumerate() {
            if label.is_empty()
                || label.len() > 100
                || label
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                self.errors.push(
                    format!("runners.labels[{index}]"),
                    format!(
                        "invalid label \"{}\": 1 to 100 characters, without spaces or commas",
                        label.escape_debug()
                    ),
                );
                labels_ok = false;
            } else {
                labels.push(label);
            }
        }
        let quantity_ok = quantity <= MAX_QUANTITY;
        let cpu_ok = cpu > 0 && cpu <= MAX_CPU;
        if !(quantity_ok && cpu_ok && labels_ok) {
            return None;
        }
        Some(RunnersConfig {
            quantity,
            cpu,
            memory: raw.memory.unwrap_or_else(|| size("7GiB")),
            disk: raw.disk.unwrap_or_else(|| size("10GiB")),
            labels,
            registration: raw.registration.unwrap_or(RegistrationMode::Token),
        })
    }

    fn proxy(&mut self, raw: RawProxy) -> ProxySettings {
        let mut proxy_url = |key: &str, value: Option<RawSecret>| {
            let value = value.map(|v| v.0).filter(|v| !v.trim().is_empty())?;
            // The value may hold credentials: the manager's reasons never echo it.
            ProxyUrl::parse(&value)
                .map_err(|err| self.errors.push(key, err.to_string()))
                .ok()
        };
        let http = proxy_url("proxy.http", raw.http);
        let https = proxy_url("proxy.https", raw.https);
        let no_proxy = match raw.no_proxy {
            Some(value)
                if value
                    .chars()
                    .any(|c| c.is_whitespace() && c != ' ' || c.is_control()) =>
            {
                self.errors.push(
                    "proxy.no_proxy",
                    "must be a comma-separated list of hosts, without control characters",
                );
                None
            }
            Some(value) => Some(value.replace(' ', "")).filter(|v| !v.is_empty()),
            None => None,
        };
        ProxySettings {
            http,
            https,
            no_proxy,
        }
    }

    fn policy(&mut self, raw: RawPolicy) -> Option<Option<PolicyConfig>> {
        let url = raw
            .url
            .filter(|url| !url.trim().is_empty())
            .map(|url| self.url("policy.url", url.trim(), &["https", "http"]));
        let token = self.secret(
            "policy.service_token",
            "policy.service_token_file",
            SERVICE_TOKEN_ENV,
            raw.service_token,
            raw.service_token_file,
        );
        match (url, token) {
            (None, Some(Some((_, source)))) if source != SecretSource::Env(SERVICE_TOKEN_ENV) => {
                self.errors.push(
                    "policy.service_token",
                    "set, but policy.url is empty: set the url of the policy service too",
                );
                None
            }
            (None, Some(_)) => Some(None),
            (Some(Some(url)), Some(Some((service_token, service_token_source)))) => {
                Some(Some(PolicyConfig {
                    url,
                    service_token,
                    service_token_source,
                }))
            }
            (Some(Some(_)), Some(None)) => {
                self.errors.push(
                    "policy.service_token",
                    format!(
                        "missing: policy.url needs policy.service_token, policy.service_token_file or the environment variable {SERVICE_TOKEN_ENV}"
                    ),
                );
                None
            }
            _ => None,
        }
    }

    fn metrics(&mut self, raw: RawMetrics) -> Option<MetricsConfig> {
        let events_log = self.path(
            "metrics.events_log",
            raw.events_log
                .unwrap_or_else(|| PathBuf::from("/var/log/github-runner-metrics.log")),
        );
        Some(MetricsConfig {
            issue_metrics: raw.issue_metrics.unwrap_or(false),
            events_log: events_log?,
        })
    }

    fn server(&mut self, raw: RawServer) -> Option<ServerConfig> {
        let listen = match raw.listen.as_deref() {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some(listen) => match listen.parse::<SocketAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.errors.push(
                        "server.listen",
                        format!("invalid address \"{listen}\": expected IP:PORT, e.g. 127.0.0.1:9464 or [::]:9464"),
                    );
                    None
                }
            },
        };
        let api_token = self.secret(
            "server.api_token",
            "server.api_token_file",
            API_TOKEN_ENV,
            raw.api_token,
            raw.api_token_file,
        );
        let webhook_secret = self.secret(
            "server.webhook_secret",
            "server.webhook_secret_file",
            WEBHOOK_SECRET_ENV,
            raw.webhook_secret,
            raw.webhook_secret_file,
        );
        let interval = raw.reconcile_interval_seconds.unwrap_or(300);
        if !INTERVAL_RANGE.contains(&interval) {
            self.errors.push(
                "server.reconcile_interval_seconds",
                format!(
                    "must be between {} and {} seconds",
                    INTERVAL_RANGE.start(),
                    INTERVAL_RANGE.end()
                ),
            );
            return None;
        }
        Some(ServerConfig {
            listen: listen?,
            api_token: api_token?.map(|(secret, _)| secret),
            webhook_secret: webhook_secret?.map(|(secret, _)| secret),
            reconcile_interval: Duration::from_secs(interval),
        })
    }
}

fn size(text: &str) -> Size {
    text.parse().expect("built-in default sizes are valid")
}

/// The web URL that goes with an API URL: github.com for api.github.com, `https://HOST` for a
/// GitHub Enterprise Server API (`https://HOST/api/v3`), else the API URL itself (a simulator).
fn default_web_url(api_url: &Url) -> Url {
    if api_url.host_str() == Some("api.github.com") {
        if let Ok(url) = Url::parse("https://github.com") {
            return url;
        }
    }
    let mut web = api_url.clone();
    let path = web.path().trim_end_matches('/').to_owned();
    if let Some(stripped) = path.strip_suffix("/api/v3") {
        web.set_path(if stripped.is_empty() { "/" } else { stripped });
    }
    web
}

fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some(REDACTED_PASSWORD));
    }
    shown.to_string()
}

// ---------------------------------------------------------------------------------------------
// Summary (what `check-config` prints): no secret values
// ---------------------------------------------------------------------------------------------

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
                GithubCredentials::Token { source, .. } => format!("token from {source}"),
                GithubCredentials::App {
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
        }
    }
}
