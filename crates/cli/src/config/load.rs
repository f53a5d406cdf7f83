//! Loading: reading the file, then validating the raw values into [`Config`], every problem collected.

use super::*;
use crate::secret::SecretExt;

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

pub(super) fn parse_raw(text: &str) -> Result<RawConfig, ConfigError> {
    let deserializer =
        toml::de::Deserializer::parse(text).map_err(|err| syntax_error(text, &err))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let key = err.path().to_string();
        ConfigError::Invalid(vec![serde_key_error(&key, err.inner().message())])
    })
}

/// Turns a serde error into a key error, naming the unknown key itself for unknown fields.
pub(super) fn serde_key_error(path: &str, message: &str) -> KeyError {
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
pub(super) fn friendly_serde_message(message: &str) -> String {
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
pub(super) fn syntax_error(text: &str, err: &toml::de::Error) -> ConfigError {
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

pub(super) struct Validator<'a> {
    pub(super) base_dir: &'a Path,
    pub(super) env: &'a dyn Environment,
    pub(super) errors: &'a mut Errors,
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
        let repo_scope = repo_scope(raw.github.path.as_deref());
        let quantity_set = raw.runners.quantity.is_some();
        let lxd = self.lxd(raw.lxd);
        let github = self.github(raw.github);
        let runners = self.runners(raw.runners);
        let proxy = self.proxy(raw.proxy);
        let policy = self.policy(raw.policy);
        let metrics = self.metrics(raw.metrics);
        let server = self.server(raw.server);
        let cluster = self.cluster(raw.cluster);
        let defaults = PoolDefaults {
            lxd: lxd.as_ref(),
            runners: runners.as_ref(),
            repo_scope,
            quantity_set,
            cluster: cluster.as_ref(),
        };
        let scaling: Vec<_> = raw
            .pools
            .iter()
            .map(|p| (p.scaling.unwrap_or_default(), p.scale_set_name.clone()))
            .collect();
        let pools = self.pools(raw.pools, &defaults);
        let scale_sets = self.scale_sets(
            &scaling,
            pools.as_deref(),
            app_name.as_deref(),
            raw.scaleset,
        );
        let demand = self.demand(raw.demand);
        let images = self.images(raw.images);
        let ha = self.ha(raw.ha);
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
            pools: pools?,
            demand: demand?,
            images: images?,
            scale_sets: scale_sets?,
            cluster: cluster?,
            ha: ha?,
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

    pub(super) fn url(&mut self, key: &str, value: &str, schemes: &[&str]) -> Option<Url> {
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
            Ok(text) => match Secret::non_empty(text) {
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
        let inline = inline.and_then(|raw| Secret::non_empty(raw.0));
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
                    .and_then(Secret::non_empty)
                    .map(|secret| (secret, SecretSource::Env(env_name))),
            ),
        }
    }

    fn github(&mut self, raw: RawGitHub) -> Option<GitHubConfig> {
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
        Some(GitHubConfig {
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
        app: Option<RawGitHubApp>,
    ) -> Option<GitHubCredentials> {
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
            Some((token, source)) => Some(GitHubCredentials::Token { token, source }),
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

    fn github_app(&mut self, app: RawGitHubApp) -> Option<GitHubCredentials> {
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
        Some(GitHubCredentials::App {
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
            Some(image) => self.image_alias("lxd.image", image),
        };
        let storage_path = self.optional_path("lxd.storage_path", raw.storage_path);
        let target = match raw.target {
            Some(target) => self.placement_target("lxd.target", target).map(Some),
            None => Some(None),
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
        let labels = self.labels("runners.labels", raw.labels.unwrap_or_default(), 3);
        let labels_ok = labels.is_some();
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
            labels: labels.unwrap_or_default(),
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
        let delivery = self.delivery(raw.public_url, raw.hook_id);
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
            public_url: delivery.public_url?,
            hook_id: delivery.hook_id?,
        })
    }
}

pub(super) fn size(text: &str) -> Size {
    text.parse().expect("built-in default sizes are valid")
}

/// The web URL that goes with an API URL: github.com for api.github.com, `https://HOST` for a
/// GitHub Enterprise Server API (`https://HOST/api/v3`), else the API URL itself (a simulator).
pub(super) fn default_web_url(api_url: &Url) -> Url {
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

pub(super) fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some(REDACTED_PASSWORD));
    }
    shown.to_string()
}
