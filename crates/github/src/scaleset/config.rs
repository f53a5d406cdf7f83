//! [`ScaleSetConfig`] and the config URL (§1 of the protocol reference).

use std::time::Duration;

use url::Url;

use super::error::ScaleSetError;
use crate::auth::Auth;
use crate::client::ProxyConfig;
use crate::scope::Scope;

/// The `api-version` query of every admin call (and the `Accept` parameter of the queue poll).
pub const SCALESET_API_VERSION: &str = "6.0-preview";

/// With this environment variable set (any value), every host is treated as GHES.
pub const FORCE_GHES_ENV_VAR: &str = "GITHUB_ACTIONS_FORCE_GHES";

/// Retries of one call: `max_retries` more attempts, waiting `base_delay`, doubling, capped at
/// `max_delay` (defaults: 4 retries, 1 s, 30 s: 1, 2, 4, 8 s as the Go client). On 429 and 503 a
/// `Retry-After` header overrides the delay (capped at `max_retry_after`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleSetRetry {
    pub max_retries: usize,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for ScaleSetRetry {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(5 * 60),
        }
    }
}

/// What goes into the JSON `User-Agent` (keys in the Go client's order: `system`, `version`,
/// `commit_sha`, `scale_set_id`, `subsystem`, `build_version`, `build_commit_sha`, `kind`).
/// `build_version` is this crate's version and `kind` is always `scaleset`; `scale_set_id` is
/// set with [`ScaleSetClient::set_scale_set_id`](super::ScaleSetClient::set_scale_set_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentInfo {
    pub system: String,
    pub version: String,
    pub commit_sha: String,
    pub subsystem: String,
}

impl Default for UserAgentInfo {
    fn default() -> Self {
        Self {
            system: "runner-manager".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit_sha: String::new(),
            subsystem: "listener".to_owned(),
        }
    }
}

/// Everything needed to build a [`ScaleSetClient`](super::ScaleSetClient). Building makes no
/// request.
#[derive(Debug, Clone)]
pub struct ScaleSetConfig {
    /// The registration target: `https://github.com/ORG`, `https://github.com/OWNER/REPO`,
    /// `https://github.com/enterprises/ENT`, or the same on a GHES host (the simulator:
    /// `http://127.0.0.1:PORT/ORG`).
    pub config_url: Url,
    /// PAT or GitHub App (the App's installation token is fetched by the crate's `Client`).
    pub auth: Auth,
    pub user_agent: UserAgentInfo,
    /// Per-attempt timeout of every call except the long poll (connect, request and body).
    pub timeout: Duration,
    /// Per-attempt timeout of the long poll; must exceed the service's ~50 s hold.
    pub poll_timeout: Duration,
    /// `None`: no proxy (the process environment is ignored).
    pub proxy: Option<ProxyConfig>,
    pub retry: ScaleSetRetry,
    /// Treat every host as GHES (REST at `/api/v3`). [`ScaleSetConfig::new`] sets it when
    /// [`FORCE_GHES_ENV_VAR`] is set.
    pub force_ghes: bool,
    /// Re-bootstrap when the admin token has less than this left (the Go client: 60 s).
    pub admin_token_margin: Duration,
}

impl ScaleSetConfig {
    /// Defaults: 30 s per call, 120 s for the long poll, no proxy, retries as the Go client,
    /// `force_ghes` from the environment.
    pub fn new(config_url: Url, auth: Auth) -> Self {
        Self {
            config_url,
            auth,
            user_agent: UserAgentInfo::default(),
            timeout: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(120),
            proxy: None,
            retry: ScaleSetRetry::default(),
            force_ghes: std::env::var_os(FORCE_GHES_ENV_VAR).is_some(),
            admin_token_margin: Duration::from_secs(60),
        }
    }
}

/// A parsed config URL: the scope it registers runners at and the REST API base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    /// The URL as given (sent in the `runner-registration` body).
    pub url: Url,
    pub scope: Scope,
    /// github.com, `www.github.com`, `github.localhost` or `*.ghe.com` (and not forced to GHES).
    pub hosted: bool,
    /// `SCHEME://api.HOST` when hosted, `SCHEME://HOST[:PORT]/api/v3` otherwise.
    pub rest_url: Url,
}

impl ConfigUrl {
    /// Parses the config URL as the Go client does: the path, trimmed of `/` at both ends, is
    /// `ORG`, `enterprises/ENT` (any case) or `OWNER/REPO`; anything else is an error.
    pub fn parse(url: &Url, force_ghes: bool) -> Result<Self, ScaleSetError> {
        let bad = |reason: String| ScaleSetError::Config { reason };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!("config url {url} is not http(s)")));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad(format!("config url {url} has no host")))?
            .to_ascii_lowercase();
        let path = url.path().trim_matches('/');
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let scope_path = match segments.as_slice() {
            [org] => (*org).to_owned(),
            [first, ent] if first.eq_ignore_ascii_case("enterprises") => {
                format!("enterprises/{ent}")
            }
            [owner, repo] => format!("{owner}/{repo}"),
            _ => {
                return Err(bad(format!(
                    "config url {url}: the path must be ORG, OWNER/REPO or enterprises/ENT"
                )))
            }
        };
        let scope = Scope::parse(&scope_path).map_err(|e| bad(format!("config url {url}: {e}")))?;
        let hosted = !force_ghes
            && (matches!(
                host.as_str(),
                "github.com" | "www.github.com" | "github.localhost"
            ) || host.ends_with(".ghe.com"));
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let rest = if hosted {
            let host = host.strip_prefix("www.").unwrap_or(&host);
            format!("{}://api.{host}{port}", url.scheme())
        } else {
            let host = match url.host() {
                Some(url::Host::Ipv6(addr)) => format!("[{addr}]"),
                _ => host.clone(),
            };
            format!("{}://{host}{port}/api/v3", url.scheme())
        };
        let rest_url =
            Url::parse(&rest).map_err(|e| bad(format!("config url {url}: rest url: {e}")))?;
        Ok(Self {
            url: url.clone(),
            scope,
            hosted,
            rest_url,
        })
    }

    /// `SCHEME://HOST[:PORT]`: the web URL of the instance.
    pub(crate) fn web_url(&self) -> Url {
        let mut web = self.url.clone();
        web.set_path("/");
        web.set_query(None);
        web.set_fragment(None);
        web
    }
}
