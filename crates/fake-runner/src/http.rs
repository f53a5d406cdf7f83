//! The client side of the simulator's runner protocol (docs/sim-protocol.md), over plain HTTP.
//!
//! The server is derived from `--url` (scheme, host and port). Proxies come from `http_proxy` /
//! `https_proxy` / `no_proxy` (lower case wins). A static agent in a busybox container has no
//! working `getaddrinfo` for names, so host names are looked up in `/etc/hosts` first.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Env;
use secrecy::{ExposeSecret, SecretString};

/// Longest response body we read (a job's event payload is the largest).
const BODY_LIMIT: u64 = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of a call that is not a long poll.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum HttpError {
    /// The server answered with a status we do not expect.
    Status { status: u16, message: String },
    /// No answer: connection refused, reset, timeout, proxy failure.
    Transport(String),
    /// An answer we cannot parse.
    Decode(String),
    /// `--url` cannot be used.
    BadUrl(String),
}

impl HttpError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            HttpError::Transport(_) => true,
            HttpError::Decode(_) | HttpError::BadUrl(_) => false,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server's message of a status error.
    pub fn message(&self) -> Option<&str> {
        match self {
            HttpError::Status { message, .. } => Some(message),
            _ => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Status { status, message } => write!(f, "http status {status}: {message}"),
            HttpError::Transport(e) => write!(f, "connection failed: {e}"),
            HttpError::Decode(e) => write!(f, "unexpected answer: {e}"),
            HttpError::BadUrl(e) => write!(f, "invalid url: {e}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Scheme, host and port of the server, taken from `--url` or `.runner`'s `serverUrl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub scheme: String,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl ServerUrl {
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| HttpError::BadUrl(format!("'{url}' has no scheme")))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(HttpError::BadUrl(format!("unsupported scheme '{scheme}'"))),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| HttpError::BadUrl(format!("'{url}' has a bad IPv6 host")))?;
            let port = after.strip_prefix(':');
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(HttpError::BadUrl(format!("'{url}' has no host")));
        }
        let port = match port {
            None | Some("") => default_port,
            Some(p) => p
                .parse()
                .map_err(|_| HttpError::BadUrl(format!("'{url}' has a bad port")))?,
        };
        Ok(Self {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn host_for_url(&self, host: &str) -> String {
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        }
    }

    /// `scheme://host:port`, the base of every runner-protocol call.
    pub fn base(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme,
            self.host_for_url(&self.host),
            self.port
        )
    }
}

/// The proxy for calls to `server`, if any: `http_proxy`/`https_proxy` by scheme (lower case
/// wins over upper case) unless `no_proxy`/`NO_PROXY` matches the host.
pub fn select_proxy(server: &ServerUrl, env: &Env) -> Option<String> {
    let var = |lower: &str, upper: &str| {
        env.get(lower)
            .or_else(|| env.get(upper))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let proxy = if server.scheme == "https" {
        var("https_proxy", "HTTPS_PROXY")
    } else {
        var("http_proxy", "HTTP_PROXY")
    }?;
    if let Some(no_proxy) = var("no_proxy", "NO_PROXY") {
        if no_proxy_matches(&no_proxy, &server.host, server.port) {
            return None;
        }
    }
    Some(proxy)
}

/// `no_proxy` entries: `*`, exact hosts or IPs, `host:port`, domain suffixes (`.x.com`,
/// `*.x.com` and `x.com` match `x.com` and its subdomains) and IPv4 CIDRs.
pub fn no_proxy_matches(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let host_ip: Option<IpAddr> = host.parse().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            let entry = entry.to_ascii_lowercase();
            if entry == "*" {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                return match (host_ip, net.parse::<Ipv4Addr>(), bits.parse::<u32>()) {
                    (Some(IpAddr::V4(ip)), Ok(net), Ok(bits)) if bits <= 32 => {
                        let mask = if bits == 0 {
                            0
                        } else {
                            u32::MAX << (32 - bits)
                        };
                        u32::from(ip) & mask == u32::from(net) & mask
                    }
                    _ => false,
                };
            }
            let (entry_host, entry_port) = match entry.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                    (h.to_string(), p.parse::<u16>().ok())
                }
                _ => (entry.clone(), None),
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            let entry_host = entry_host.trim_start_matches('[').trim_end_matches(']');
            let domain = entry_host.trim_start_matches('*').trim_start_matches('.');
            if domain.is_empty() {
                return false;
            }
            if let (Some(ip), Ok(entry_ip)) = (host_ip, domain.parse::<IpAddr>()) {
                return ip == entry_ip;
            }
            host == domain || host.ends_with(&format!(".{domain}"))
        })
}

/// Looks `host` up in an `/etc/hosts` text.
pub fn hosts_lookup(hosts: &str, host: &str) -> Option<IpAddr> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        fields
            .any(|name| name.eq_ignore_ascii_case(host))
            .then_some(ip)
    })
}

/// `POST /_runner/register` body.
#[derive(Debug, Serialize)]
pub struct RegisterRequest {
    pub url: String,
    pub name: String,
    /// The custom labels; the simulator adds the defaults unless `no_default_labels`.
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_group: Option<String>,
    pub ephemeral: bool,
    pub replace: bool,
    pub no_default_labels: bool,
    pub work: String,
}

/// `POST /_runner/register` answer.
#[derive(Deserialize)]
pub struct Registration {
    pub agent_id: u64,
    pub agent_name: String,
    #[serde(default)]
    pub pool_id: u64,
    #[serde(default)]
    pub pool_name: String,
    #[serde(default)]
    pub server_url: String,
    pub credential: String,
}

/// A job, as `GET /_runner/poll` delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub job_id: u64,
    #[serde(default)]
    pub run_id: u64,
    pub script: String,
    #[serde(default = "default_job_timeout")]
    pub timeout_seconds: u64,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub event_name: String,
    #[serde(default)]
    pub event: serde_json::Value,
}

/// GitHub's default job timeout: 360 minutes.
fn default_job_timeout() -> u64 {
    360 * 60
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conclusion {
    Success,
    Failure,
}

/// `POST /_runner/jobs/{id}/complete` body.
#[derive(Debug, Serialize)]
pub struct Completion {
    pub exit_code: i32,
    pub output: String,
    pub conclusion: Conclusion,
}

/// A connection to the simulator's runner endpoints.
pub struct SimClient {
    agent: ureq::Agent,
    /// Where requests go: the server, with its host name replaced by an `/etc/hosts` address.
    connect_base: String,
    /// The `Host` header when `connect_base` uses a looked-up address.
    host_header: Option<String>,
    proxy: Option<String>,
}

impl SimClient {
    pub fn new(server: &ServerUrl, env: &Env, user_agent: &str) -> Result<Self, HttpError> {
        if server.scheme == "https" {
            return Err(HttpError::BadUrl(
                "https is not supported by the fake runner (it has no TLS); use the simulator's http:// address"
                    .to_string(),
            ));
        }
        let proxy_url = select_proxy(server, env);
        let proxy = proxy_url
            .as_deref()
            .map(|p| ureq::Proxy::new(p).map_err(|e| HttpError::BadUrl(format!("proxy: {e}"))))
            .transpose()?;
        let (connect_base, host_header) =
            if proxy.is_none() && server.host.parse::<IpAddr>().is_err() {
                let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                match hosts_lookup(&hosts, &server.host) {
                    Some(ip) => {
                        let mut via = server.clone();
                        via.host = ip.to_string();
                        let default_port = if server.scheme == "https" { 443 } else { 80 };
                        let header = if server.port == default_port {
                            server.host.clone()
                        } else {
                            format!("{}:{}", server.host, server.port)
                        };
                        (via.base(), Some(header))
                    }
                    None => (server.base(), None),
                }
            } else {
                (server.base(), None)
            };
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(proxy)
            .max_redirects(0)
            .user_agent(user_agent)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(CALL_TIMEOUT))
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            connect_base,
            host_header,
            proxy: proxy_url,
        })
    }

    /// The proxy in use, without credentials, for the diagnostic log.
    pub fn proxy_for_log(&self) -> Option<String> {
        self.proxy.as_ref().map(|p| match p.rsplit_once('@') {
            Some((scheme_user, host)) => match scheme_user.split_once("://") {
                Some((scheme, _)) => format!("{scheme}://***@{host}"),
                None => format!("***@{host}"),
            },
            None => p.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.connect_base, path)
    }

    fn finish(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), HttpError> {
        let mut response = result.map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| HttpError::Transport(format!("reading the answer: {e}")))?;
        Ok((status, body))
    }

    fn post(
        &self,
        path: &str,
        authorization: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<(u16, String), HttpError> {
        let req = self.prepare(self.agent.post(self.url(path)), authorization, timeout);
        self.finish(req.send_json(body))
    }

    /// [`Self::post`] that must be accepted (200, 202 or 204).
    fn post_accepted(
        &self,
        path: &str,
        authorization: &str,
        body: &impl Serialize,
        timeout: Duration,
    ) -> Result<(), HttpError> {
        let (status, text) = self.post(path, authorization, body, timeout)?;
        match status {
            200 | 202 | 204 => Ok(()),
            _ => Err(status_error(status, &text)),
        }
    }

    fn get(
        &self,
        path: &str,
        authorization: &str,
        timeout: Duration,
    ) -> Result<(u16, String), HttpError> {
        let req = self.prepare(self.agent.get(self.url(path)), authorization, timeout);
        self.finish(req.call())
    }

    /// `req` with the headers of every call (and the `Host` override) and `timeout`.
    fn prepare<B>(
        &self,
        req: ureq::RequestBuilder<B>,
        authorization: &str,
        timeout: Duration,
    ) -> ureq::RequestBuilder<B> {
        let mut req = req
            .header("Authorization", authorization)
            .header("Accept", "application/json");
        if let Some(host) = &self.host_header {
            req = req.header("Host", host);
        }
        req.config().timeout_global(Some(timeout)).build()
    }

    /// `POST /_runner/register` with a registration token.
    pub fn register(
        &self,
        token: &SecretString,
        body: &RegisterRequest,
    ) -> Result<Registration, HttpError> {
        let auth = format!("RemoteAuth {}", token.expose_secret());
        let (status, text) = self.post("/_runner/register", &auth, body, CALL_TIMEOUT)?;
        match status {
            200 | 201 => serde_json::from_str(&text).map_err(|e| HttpError::Decode(e.to_string())),
            _ => Err(status_error(status, &text)),
        }
    }

    /// `POST /_runner/remove` with a remove token.
    pub fn remove(&self, token: &SecretString, url: &str, agent_id: u64) -> Result<(), HttpError> {
        let auth = format!("RemoteAuth {}", token.expose_secret());
        let body = serde_json::json!({ "url": url, "agent_id": agent_id });
        self.post_accepted("/_runner/remove", &auth, &body, CALL_TIMEOUT)
    }

    /// `GET /_runner/poll`: a job, or `None` when `wait` passed without one.
    pub fn poll(
        &self,
        credential: &SecretString,
        agent_id: u64,
        wait: Duration,
    ) -> Result<Option<Job>, HttpError> {
        let auth = format!("Bearer {}", credential.expose_secret());
        let path = format!("/_runner/poll?agent_id={agent_id}&wait={}", wait.as_secs());
        let (status, text) = self.get(&path, &auth, wait + Duration::from_secs(20))?;
        match status {
            200 => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| HttpError::Decode(format!("job: {e}"))),
            204 => Ok(None),
            _ => Err(status_error(status, &text)),
        }
    }

    /// `POST /_runner/jobs/{id}/complete`.
    pub fn complete(
        &self,
        credential: &SecretString,
        job_id: u64,
        completion: &Completion,
    ) -> Result<(), HttpError> {
        let auth = format!("Bearer {}", credential.expose_secret());
        let path = format!("/_runner/jobs/{job_id}/complete");
        self.post_accepted(&path, &auth, completion, CALL_TIMEOUT)
    }

    /// `POST /_runner/offline`: the agent is stopping.
    pub fn offline(
        &self,
        credential: &SecretString,
        agent_id: u64,
        timeout: Duration,
    ) -> Result<(), HttpError> {
        let auth = format!("Bearer {}", credential.expose_secret());
        let body = serde_json::json!({ "agent_id": agent_id });
        self.post_accepted("/_runner/offline", &auth, &body, timeout)
    }
}

/// A GitHub-style error body (`{"message": ...}`) or the first line of any other body.
fn status_error(status: u16, body: &str) -> HttpError {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            body.lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect()
        });
    HttpError::Status { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        let check = |url: &str, base: &str| {
            assert_eq!(ServerUrl::parse(url).expect(url).base(), base, "{url}");
        };
        check("http://10.0.0.1:8080/owner/repo", "http://10.0.0.1:8080");
        check("http://10.0.0.1/enterprises/e", "http://10.0.0.1:80");
        check("HTTP://Sim.Local:81", "http://sim.local:81");
        check("http://user:pw@10.0.0.2:9/o", "http://10.0.0.2:9");
        check("http://[fd00::1]:8080/o", "http://[fd00::1]:8080");
        check("https://github.com/o/r", "https://github.com:443");
        for bad in ["10.0.0.1:80/o", "ftp://x/o", "http:///o", "http://h:port/o"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn proxy_selection_prefers_lower_case_and_honours_no_proxy() {
        let http = ServerUrl::parse("http://10.1.2.3:8080/o").expect("url");
        let e = env(&[
            ("HTTP_PROXY", "http://upper:1"),
            ("http_proxy", "http://lower:2"),
        ]);
        assert_eq!(select_proxy(&http, &e).as_deref(), Some("http://lower:2"));
        let e = env(&[("HTTP_PROXY", "http://upper:1")]);
        assert_eq!(select_proxy(&http, &e).as_deref(), Some("http://upper:1"));
        let e = env(&[("https_proxy", "http://s:3")]);
        assert_eq!(select_proxy(&http, &e), None);
        let e = env(&[
            ("http_proxy", "http://p:1"),
            ("NO_PROXY", "*"),
            ("no_proxy", "example.com"),
        ]);
        assert_eq!(
            select_proxy(&http, &e).as_deref(),
            Some("http://p:1"),
            "lower-case no_proxy wins"
        );
        let e = env(&[
            ("http_proxy", "http://p:1"),
            ("no_proxy", "localhost,10.0.0.0/8"),
        ]);
        assert_eq!(select_proxy(&http, &e), None);
    }

    #[test]
    fn no_proxy_entries() {
        let cases: &[(&str, &str, u16, bool)] = &[
            ("*", "anything", 80, true),
            ("sim.local", "sim.local", 80, true),
            ("sim.local", "a.sim.local", 80, true),
            (".sim.local", "sim.local", 80, true),
            ("*.sim.local", "b.sim.local", 80, true),
            ("sim.local", "notsim.local", 80, false),
            ("sim.local:8080", "sim.local", 8080, true),
            ("sim.local:8080", "sim.local", 80, false),
            ("10.1.2.3", "10.1.2.3", 80, true),
            ("10.1.2.0/24", "10.1.2.3", 80, true),
            ("10.1.3.0/24", "10.1.2.3", 80, false),
            ("::1", "::1", 80, true),
            (" , ", "x", 80, false),
        ];
        for (list, host, port, expected) in cases {
            assert_eq!(
                no_proxy_matches(list, host, *port),
                *expected,
                "{list} vs {host}:{port}"
            );
        }
    }

    #[test]
    fn hosts_file_lookup() {
        let hosts = "127.0.0.1 localhost\n# 10.9.9.9 sim\n10.0.0.5\tsim.local sim  # comment\n";
        assert_eq!(
            hosts_lookup(hosts, "SIM"),
            Some("10.0.0.5".parse().expect("ip"))
        );
        assert_eq!(
            hosts_lookup(hosts, "localhost"),
            Some("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(hosts_lookup(hosts, "other"), None);
    }

    #[test]
    fn proxy_credentials_are_hidden_from_the_log() {
        let server = ServerUrl::parse("http://10.0.0.1:1/o").expect("url");
        let e = env(&[("http_proxy", "http://user:pw@proxy:3128")]);
        let client = SimClient::new(&server, &e, "ua").expect("client");
        assert_eq!(
            client.proxy_for_log().as_deref(),
            Some("http://***@proxy:3128")
        );
    }

    #[test]
    fn error_bodies() {
        let e = status_error(
            409,
            r#"{"message":"Already exists","documentation_url":"x"}"#,
        );
        assert_eq!(e.to_string(), "http status 409: Already exists");
        assert!(!e.is_retryable());
        assert!(status_error(503, "busy\nmore").is_retryable());
        assert_eq!(
            status_error(503, "busy\nmore").to_string(),
            "http status 503: busy"
        );
    }
}
