//! The HTTP core: headers, auth, rate-limit waits, retries, ETag cache and error mapping.
//! Endpoint methods live in `endpoints.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, ETAG, IF_NONE_MATCH, LINK};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use url::Url;

use crate::auth::{AppSigner, Auth, CachedToken};
use crate::error::Error;
use crate::rate_limit;
use crate::scope::Scope;
use crate::secret::Secret;
use crate::stats::{CallStats, EndpointKind, StatsRecorder};
use crate::types::RateLimit;
use crate::wire::{AccessTokenWire, ErrorBodyWire, InstallationWire};

/// The API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";
/// At most this many rate-limit waits per call before giving up with `RateLimited`.
const MAX_RATE_LIMIT_WAITS: u32 = 3;
/// ETag cache entries kept before the cache is cleared (list URLs differ per name filter).
const ETAG_CACHE_CAP: usize = 256;
/// Safety bound when following `Link: rel="next"`.
pub(crate) const MAX_PAGES: usize = 500;

/// Proxy settings for the manager's own GitHub traffic. With `None` in `ClientConfig`,
/// no proxy is used (the process environment is deliberately ignored).
/// The URLs may carry a password: Debug shows them with it masked.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    pub http: Option<String>,
    pub https: Option<String>,
    /// Comma-separated hosts, domains and CIDRs that bypass the proxy (`NO_PROXY` syntax).
    pub no_proxy: Option<String>,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |url: &Option<String>| {
            url.as_deref().map(|u| match url::Url::parse(u) {
                Ok(mut parsed) if parsed.password().is_some() => {
                    let _ = parsed.set_password(Some("redacted"));
                    parsed.to_string()
                }
                Ok(parsed) if !parsed.username().is_empty() => {
                    let mut parsed = parsed;
                    let _ = parsed.set_username("redacted");
                    parsed.to_string()
                }
                Ok(parsed) => parsed.to_string(),
                Err(_) => "<unparsable>".to_owned(),
            })
        };
        f.debug_struct("ProxyConfig")
            .field("http", &masked(&self.http))
            .field("https", &masked(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// Bounded exponential backoff for idempotent calls on 5xx, transport errors and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Everything needed to build a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.github.com`, `https://HOST/api/v3`, or the simulator.
    pub api_url: Url,
    /// `https://github.com`; `config.sh --url` is built from it.
    pub web_url: Url,
    pub scope: Scope,
    pub auth: Auth,
    pub user_agent: String,
    /// Per-attempt timeout, covering connect, request and body.
    pub timeout: Duration,
    pub proxy: Option<ProxyConfig>,
    pub retry: RetryPolicy,
    /// A rate-limit wait longer than this fails the call with `Error::RateLimited`.
    pub max_rate_limit_wait: Duration,
}

impl ClientConfig {
    /// A config with defaults: 30 s timeout, no proxy, 3 retries, rate-limit waits up to 5 minutes.
    pub fn new(api_url: Url, web_url: Url, scope: Scope, auth: Auth) -> Self {
        Self {
            api_url,
            web_url,
            scope,
            auth,
            user_agent: concat!("runner-manager/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(30),
            proxy: None,
            retry: RetryPolicy::default(),
            max_rate_limit_wait: Duration::from_secs(5 * 60),
        }
    }
}

/// A GitHub REST client for one runner scope. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    http: reqwest::Client,
    api_base: String,
    api_url: Url,
    pub(crate) web_url: Url,
    pub(crate) scope: Scope,
    pub(crate) prefix: String,
    auth: AuthState,
    timeout: Duration,
    retry: RetryPolicy,
    max_rate_limit_wait: Duration,
    budget: Mutex<Option<RateLimit>>,
    etags: Mutex<HashMap<String, CachedPage>>,
    stats: StatsRecorder,
}

#[derive(Debug)]
enum AuthState {
    Token(HeaderValue),
    App {
        signer: AppSigner,
        installation_id: tokio::sync::OnceCell<u64>,
        token: tokio::sync::Mutex<Option<CachedToken>>,
    },
}

#[derive(Debug, Clone)]
struct CachedPage {
    etag: HeaderValue,
    body: Bytes,
    link: Option<String>,
}

/// Whether a call may be repeated after a 5xx or transport failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Idempotent,
    Never,
}

/// Which credential a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum As {
    /// The PAT or the App installation token.
    Installation,
    /// The App JWT (installation lookup and token exchange).
    AppJwt,
}

pub(crate) struct Call {
    pub(crate) kind: EndpointKind,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<serde_json::Value>,
    pub(crate) retry: Retry,
    /// Send `If-None-Match` and serve a 304 from the cache.
    pub(crate) conditional: bool,
    pub(crate) auth: As,
}

impl Call {
    pub(crate) fn new(kind: EndpointKind, method: Method, url: Url) -> Self {
        let retry = Retry::Idempotent;
        Self {
            kind,
            method,
            url,
            body: None,
            retry,
            conditional: false,
            auth: As::Installation,
        }
    }

    pub(crate) fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(crate) fn never_retry(mut self) -> Self {
        self.retry = Retry::Never;
        self
    }

    pub(crate) fn conditional(mut self) -> Self {
        self.conditional = true;
        self
    }

    fn with_app_jwt(mut self) -> Self {
        self.auth = As::AppJwt;
        self
    }
}

pub(crate) struct Response {
    pub(crate) link: Option<String>,
    pub(crate) body: Bytes,
}

impl Client {
    /// Builds the client. Fails on an unusable configuration (bad key, proxy URL, user agent,
    /// or a GitHub App on an enterprise scope, which GitHub does not allow).
    pub fn new(config: ClientConfig) -> Result<Self, Error> {
        let http = build_http(&config)?;
        let auth = match &config.auth {
            Auth::Token(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| Error::Config {
                        reason: "the github token contains invalid characters".into(),
                    })?;
                value.set_sensitive(true);
                AuthState::Token(value)
            }
            Auth::App {
                app_id,
                installation_id,
                private_key_pem,
            } => {
                if config.scope.installation_path().is_none() {
                    return Err(Error::Config {
                        reason: "github apps cannot manage enterprise runners; use a token".into(),
                    });
                }
                let cell = tokio::sync::OnceCell::new_with(*installation_id);
                AuthState::App {
                    signer: AppSigner::new(*app_id, private_key_pem)?,
                    installation_id: cell,
                    token: tokio::sync::Mutex::new(None),
                }
            }
        };
        if !matches!(config.api_url.scheme(), "http" | "https") {
            return Err(Error::Config {
                reason: format!("api_url {} is not http(s)", config.api_url),
            });
        }
        let api_base = config.api_url.as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base,
                api_url: config.api_url.clone(),
                web_url: config.web_url.clone(),
                prefix: config.scope.api_prefix(),
                scope: config.scope.clone(),
                auth,
                timeout: config.timeout,
                retry: config.retry,
                max_rate_limit_wait: config.max_rate_limit_wait,
                budget: Mutex::new(None),
                etags: Mutex::new(HashMap::new()),
                stats: StatsRecorder::default(),
            }),
        })
    }

    /// The scope this client manages.
    pub fn scope(&self) -> &Scope {
        &self.inner.scope
    }

    /// The URL to give `config.sh --url`, e.g. `https://github.com/octo-org/app`.
    pub fn registration_url(&self) -> Url {
        let mut url = self.inner.web_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{}", self.inner.scope.web_path()));
        url
    }

    /// The last-known rate-limit budget of the installation/PAT (free to read, for metrics).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.inner.budget.lock().clone()
    }

    /// Call counters by endpoint kind since the client was built.
    pub fn stats(&self) -> CallStats {
        self.inner.stats.snapshot()
    }

    /// `api_url` + `path` (a path starting with `/`).
    pub(crate) fn endpoint(&self, path: &str) -> Result<Url, Error> {
        Url::parse(&format!("{}{path}", self.inner.api_base)).map_err(|e| Error::Config {
            reason: format!("building the url for {path}: {e}"),
        })
    }

    /// Resolves a `Link` URL and refuses one on another origin (the token must not leak).
    pub(crate) fn follow_link(&self, link: &str) -> Result<Url, Error> {
        let url = self
            .inner
            .api_url
            .join(link)
            .map_err(|e| Error::Unexpected {
                status: 200,
                message: format!("invalid Link url: {e}"),
            })?;
        if url.origin() != self.inner.api_url.origin() {
            return Err(Error::Unexpected {
                status: 200,
                message: format!(
                    "Link points at another origin: {}",
                    url.origin().ascii_serialization()
                ),
            });
        }
        Ok(url)
    }

    /// Decodes a response body; a failure counts as an error of the endpoint.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        kind: EndpointKind,
        body: &[u8],
    ) -> Result<T, Error> {
        serde_json::from_slice(body).map_err(|source| {
            self.inner.stats.update(kind, |s| s.errors += 1);
            Error::Decode {
                endpoint: kind,
                source,
            }
        })
    }

    /// Runs one call to completion: auth, budget, rate-limit waits, retries and error mapping.
    pub(crate) async fn execute(&self, call: Call) -> Result<Response, Error> {
        let kind = call.kind;
        let result = self.execute_inner(call).await;
        if result.is_err() {
            self.inner.stats.update(kind, |s| s.errors += 1);
        }
        result
    }

    async fn execute_inner(&self, call: Call) -> Result<Response, Error> {
        let inner = &self.inner;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(inner.retry.min_delay)
            .with_max_delay(inner.retry.max_delay)
            .with_max_times(inner.retry.max_retries)
            .with_jitter()
            .build();
        let mut rate_limit_waits = 0u32;
        let mut refreshed_auth = false;
        loop {
            if call.auth == As::Installation {
                self.respect_budget(call.kind).await?;
            }
            let authorization = self.authorization(call.auth).await?;
            let cached = if call.conditional {
                inner.etags.lock().get(call.url.as_str()).cloned()
            } else {
                None
            };
            let mut request = inner
                .http
                .request(call.method.clone(), call.url.clone())
                .header(AUTHORIZATION, authorization)
                .timeout(inner.timeout);
            if let Some(page) = &cached {
                request = request.header(IF_NONE_MATCH, page.etag.clone());
            }
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            inner.stats.update(call.kind, |s| s.requests += 1);
            let (status, headers, body) = match self.send(request).await {
                Ok(parts) => parts,
                Err(error) => {
                    if call.retry == Retry::Idempotent {
                        if let Some(delay) = backoff.next() {
                            tracing::warn!(endpoint = %call.kind, %error, ?delay, "github call failed, retrying");
                            inner.stats.update(call.kind, |s| s.retries += 1);
                            tokio::time::sleep(delay).await;
                            continue;
                        }
                    }
                    return Err(error);
                }
            };
            tracing::debug!(endpoint = %call.kind, method = %call.method, status = status.as_u16(), "github call");
            if call.auth == As::Installation {
                if let Some(budget) = rate_limit::parse_budget(&headers) {
                    *inner.budget.lock() = Some(budget);
                }
            }
            let link = headers
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if status == StatusCode::NOT_MODIFIED {
                if let Some(page) = cached {
                    inner.stats.update(call.kind, |s| s.not_modified += 1);
                    return Ok(Response {
                        link: page.link,
                        body: page.body,
                    });
                }
            }
            if status.is_success() {
                if call.conditional {
                    self.remember_etag(&call.url, &headers, &body, &link);
                }
                return Ok(Response { link, body });
            }

            let error_body = ErrorBodyWire::parse(&body);
            let message = error_body
                .message
                .clone()
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
            if rate_limit::is_rate_limited(status, &headers, &message) {
                let wait = rate_limit::wait_for(&headers, SystemTime::now(), rate_limit_waits);
                let until = OffsetDateTime::now_utc() + wait;
                if wait > inner.max_rate_limit_wait || rate_limit_waits >= MAX_RATE_LIMIT_WAITS {
                    return Err(Error::RateLimited { until, wait });
                }
                rate_limit_waits += 1;
                inner.stats.update(call.kind, |s| s.rate_limit_waits += 1);
                tracing::warn!(endpoint = %call.kind, ?wait, %message, "rate limited by github, waiting");
                tokio::time::sleep(wait).await;
                // The wait covered the reset: a spent budget from this answer no longer applies.
                let mut current = inner.budget.lock();
                if current.as_ref().is_some_and(|b| b.remaining == 0) {
                    *current = None;
                }
                continue;
            }
            if status == StatusCode::UNAUTHORIZED
                && call.auth == As::Installation
                && !refreshed_auth
            {
                if let AuthState::App { token, .. } = &inner.auth {
                    // The installation token may have been revoked early: fetch a new one once.
                    refreshed_auth = true;
                    *token.lock().await = None;
                    continue;
                }
            }
            if status.is_server_error() && call.retry == Retry::Idempotent {
                if let Some(delay) = backoff.next() {
                    tracing::warn!(endpoint = %call.kind, status = status.as_u16(), ?delay, "github server error, retrying");
                    inner.stats.update(call.kind, |s| s.retries += 1);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            return Err(map_status(
                call.kind,
                status,
                message,
                error_body.error_strings(),
            ));
        }
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Error> {
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        Ok((status, headers, body))
    }

    fn transport_error(&self, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout {
                after: self.inner.timeout,
            }
        } else {
            Error::Transport(error)
        }
    }

    fn remember_etag(&self, url: &Url, headers: &HeaderMap, body: &Bytes, link: &Option<String>) {
        let Some(etag) = headers.get(ETAG) else {
            return;
        };
        let mut cache = self.inner.etags.lock();
        if cache.len() >= ETAG_CACHE_CAP && !cache.contains_key(url.as_str()) {
            cache.clear();
        }
        cache.insert(
            url.to_string(),
            CachedPage {
                etag: etag.clone(),
                body: body.clone(),
                link: link.clone(),
            },
        );
    }

    /// Drops a cached page (e.g. one that failed to decode).
    pub(crate) fn forget_etag(&self, url: &Url) {
        self.inner.etags.lock().remove(url.as_str());
    }

    /// Never hammer: when the last response said the core budget is spent, wait for the reset
    /// (or fail with `RateLimited` if that is longer than allowed) before sending anything.
    async fn respect_budget(&self, kind: EndpointKind) -> Result<(), Error> {
        let spent = self
            .inner
            .budget
            .lock()
            .clone()
            .filter(|b| b.remaining == 0 && b.resource == "core");
        let Some(budget) = spent else { return Ok(()) };
        let wait = rate_limit::until_reset(&budget, SystemTime::now());
        if wait.is_zero() {
            return Ok(());
        }
        let wait = wait + Duration::from_secs(1);
        if wait > self.inner.max_rate_limit_wait {
            return Err(Error::RateLimited {
                until: budget.reset,
                wait,
            });
        }
        self.inner.stats.update(kind, |s| s.rate_limit_waits += 1);
        tracing::warn!(endpoint = %kind, ?wait, "github rate-limit budget spent, waiting for reset");
        tokio::time::sleep(wait).await;
        // Forget the spent budget; the next response reports the new one.
        let mut current = self.inner.budget.lock();
        if current.as_ref() == Some(&budget) {
            *current = None;
        }
        Ok(())
    }

    async fn authorization(&self, auth: As) -> Result<HeaderValue, Error> {
        let secret = match (&self.inner.auth, auth) {
            (AuthState::Token(value), _) => return Ok(value.clone()),
            (AuthState::App { signer, .. }, As::AppJwt) => signer.jwt(SystemTime::now())?,
            (AuthState::App { .. }, As::Installation) => self.installation_token().await?,
        };
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", secret.expose())).map_err(|_| {
                Error::Config {
                    reason: "github returned a token with invalid characters".into(),
                }
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The cached installation token, fetched or refreshed 5 minutes before it expires.
    async fn installation_token(&self) -> Result<Secret, Error> {
        let AuthState::App { token, .. } = &self.inner.auth else {
            return Err(Error::Config {
                reason: "not a github app client".into(),
            });
        };
        let mut cached = token.lock().await;
        if let Some(current) = cached.as_ref().filter(|c| c.is_fresh()) {
            return Ok(current.token.clone());
        }
        let id = self.installation_id().await?;
        let url = self.endpoint(&format!("/app/installations/{id}/access_tokens"))?;
        let call = Call::new(EndpointKind::AppAccessToken, Method::POST, url).with_app_jwt();
        let response = Box::pin(self.execute(call)).await?;
        let wire: AccessTokenWire = self.decode(EndpointKind::AppAccessToken, &response.body)?;
        tracing::info!(installation_id = id, expires_at = %wire.expires_at, "fetched github app installation token");
        let fresh = CachedToken::new(wire.token, wire.expires_at, SystemTime::now());
        let secret = fresh.token.clone();
        *cached = Some(fresh);
        Ok(secret)
    }

    async fn installation_id(&self) -> Result<u64, Error> {
        let AuthState::App {
            installation_id, ..
        } = &self.inner.auth
        else {
            return Err(Error::Config {
                reason: "not a github app client".into(),
            });
        };
        let id = installation_id
            .get_or_try_init(|| async {
                let path = self
                    .inner
                    .scope
                    .installation_path()
                    .ok_or_else(|| Error::Config {
                        reason: "github apps cannot manage enterprise runners".into(),
                    })?;
                let call = Call::new(
                    EndpointKind::AppInstallation,
                    Method::GET,
                    self.endpoint(&path)?,
                )
                .with_app_jwt();
                let response = Box::pin(self.execute(call)).await?;
                let wire: InstallationWire =
                    self.decode(EndpointKind::AppInstallation, &response.body)?;
                tracing::info!(installation_id = wire.id, "found github app installation");
                Ok::<u64, Error>(wire.id)
            })
            .await?;
        Ok(*id)
    }
}

fn map_status(
    kind: EndpointKind,
    status: StatusCode,
    message: String,
    errors: Vec<String>,
) -> Error {
    match status.as_u16() {
        401 => Error::Unauthorized { message },
        403 => Error::Forbidden { message },
        404 => Error::NotFound { message },
        409 => Error::Conflict {
            message,
            existing: None,
        },
        422 if kind == EndpointKind::DeleteRunner
            || message.to_ascii_lowercase().contains("still running a job") =>
        {
            Error::RunnerBusy { message }
        }
        422 => Error::Validation { message, errors },
        s @ 500..=599 => Error::Server { status: s, message },
        s => Error::Unexpected { status: s, message },
    }
}

fn build_http(config: &ClientConfig) -> Result<reqwest::Client, Error> {
    let user_agent = HeaderValue::from_str(config.user_agent.trim())
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::Config {
            reason: "user_agent must be a non-empty header value".into(),
        })?;
    let mut headers = HeaderMap::new();
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/vnd.github+json"),
    );
    headers.insert(
        "x-github-api-version",
        HeaderValue::from_static(API_VERSION),
    );
    let builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .default_headers(headers)
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)));
    let builder = with_proxy(builder, config.proxy.as_ref()).map_err(|which| Error::Config {
        reason: format!("invalid {which} proxy url"),
    })?;
    builder.build().map_err(|e| Error::Config {
        reason: format!("building the http client: {e}"),
    })
}

/// Sets `proxy` on the builder, or no proxy at all when it has neither URL (the process
/// environment is deliberately ignored). Shared by the REST and the scale-set clients. The
/// error names the scheme (`http` / `https`) whose proxy URL is invalid.
pub(crate) fn with_proxy(
    mut builder: reqwest::ClientBuilder,
    proxy: Option<&ProxyConfig>,
) -> Result<reqwest::ClientBuilder, &'static str> {
    let Some(p) = proxy.filter(|p| p.http.is_some() || p.https.is_some()) else {
        return Ok(builder.no_proxy());
    };
    let no_proxy = p
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    if let Some(url) = &p.http {
        let proxy = reqwest::Proxy::http(url.as_str()).map_err(|_| "http")?;
        builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
    }
    if let Some(url) = &p.https {
        let proxy = reqwest::Proxy::https(url.as_str()).map_err(|_| "https")?;
        builder = builder.proxy(proxy.no_proxy(no_proxy));
    }
    Ok(builder)
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = params.split(';').any(|param| {
            param.trim().strip_prefix("rel=").is_some_and(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r == "next")
            })
        });
        is_next.then(|| target.to_owned())
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
