//! The transport: one reqwest client (unix socket or HTTPS with a pinned server certificate), the
//! response envelope decoded in one place, and waiting on background operations.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::types::{Operation, ServerInfo};

mod envelope;

pub(crate) use envelope::{decode, decode_envelope, op_result, OperationRef, Reply};

/// Timeouts applied to every call. Nothing waits without a bound.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Connecting to the socket or host.
    pub connect: Duration,
    /// One plain request (GET, a POST that returns at once, a file transfer).
    pub request: Duration,
    /// A background operation (create, start, stop, delete, exec, image import), end to end.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
            operation: Duration::from_secs(180),
        }
    }
}

/// A private key in PEM form. It never shows in Debug or Display.
#[derive(Clone)]
pub struct PrivateKeyPem(Vec<u8>);

impl PrivateKeyPem {
    /// Wraps PEM bytes.
    pub fn new(pem: impl Into<Vec<u8>>) -> Self {
        PrivateKeyPem(pem.into())
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem(<redacted>)")
    }
}

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The local unix socket.
    Unix(PathBuf),
    /// A remote server or cluster member over HTTPS, authenticated by a client certificate. The
    /// server must present exactly the pinned certificate (self-signed certificates are normal here;
    /// the host name is not checked, the pin is).
    Https {
        /// For example `https://10.0.0.5:8443`.
        url: url::Url,
        client_cert_pem: Vec<u8>,
        client_key_pem: PrivateKeyPem,
        server_cert_pem: Vec<u8>,
    },
}

impl Endpoint {
    /// The first socket found by the usual rules (see [`discover_socket`]).
    pub fn discover() -> Result<Endpoint> {
        discover_socket(|k| std::env::var_os(k).map(PathBuf::from), |p| p.exists())
            .map(Endpoint::Unix)
            .ok_or_else(|| {
                Error::Config(
                    "no LXD or Incus socket found (set INCUS_SOCKET or LXD_SOCKET, \
                     or start one: sudo ./scripts/incus-env.sh up)"
                        .into(),
                )
            })
    }
}

/// The socket lookup order of the `incus` and `lxc` clients: `INCUS_SOCKET`, `INCUS_DIR/unix.socket`,
/// `/run/incus/unix.socket`, `/var/lib/incus/unix.socket`, then `LXD_SOCKET`, `LXD_DIR/unix.socket`,
/// the snap path and `/var/lib/lxd/unix.socket`. Variables name candidates even if the file is missing
/// (an explicit choice wins); the fixed paths are taken only if they exist.
pub fn discover_socket(
    env: impl Fn(&str) -> Option<PathBuf>,
    exists: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    if let Some(p) = env("INCUS_SOCKET").filter(|p| !p.as_os_str().is_empty()) {
        return Some(p);
    }
    if let Some(p) = env("LXD_SOCKET").filter(|p| !p.as_os_str().is_empty()) {
        return Some(p);
    }
    if let Some(d) = env("INCUS_DIR").filter(|p| !p.as_os_str().is_empty()) {
        return Some(d.join("unix.socket"));
    }
    if let Some(d) = env("LXD_DIR").filter(|p| !p.as_os_str().is_empty()) {
        return Some(d.join("unix.socket"));
    }
    [
        "/run/incus/unix.socket",
        "/var/lib/incus/unix.socket",
        "/var/snap/lxd/common/lxd/unix.socket",
        "/var/lib/lxd/unix.socket",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| exists(p))
}

/// A connected client. Cheap to clone (one `Arc`), `Send + Sync`: share it between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    project: Option<Arc<str>>,
}

struct Inner {
    http: reqwest::Client,
    /// The unix socket, where the client talks over one (exec websockets dial it directly).
    socket: Option<PathBuf>,
    base: String,
    endpoint: String,
    server: ServerInfo,
    timeouts: Timeouts,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.inner.endpoint)
            .field("server", &self.inner.server.flavour)
            .field("version", &self.inner.server.version)
            .field("project", &self.project)
            .finish()
    }
}

impl Client {
    /// Connects to the first socket found (see [`discover_socket`]).
    pub async fn discover() -> Result<Client> {
        Client::connect(Endpoint::discover()?, Timeouts::default()).await
    }

    /// Connects and reads `GET /1.0`: the flavour, version and API extensions.
    pub async fn connect(endpoint: Endpoint, timeouts: Timeouts) -> Result<Client> {
        let builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("runner-manager-lxd/", env!("CARGO_PKG_VERSION")));
        let (http, base, desc) = match &endpoint {
            // No idle connections on the socket. The HTTP pool races a new connection against
            // a busy one; when the busy one frees first, the new one is parked in the pool
            // without a byte sent. Incus 6.0 and LXD 5.0 read the first bytes of each accepted
            // unix connection inside their accept loop (STARTTLS detection; later releases do it
            // per connection, with a deadline), so one silent connection holds up every other
            // client of the daemon, its own hooks included, until it speaks or closes: measured
            // 20–90 s stalls and containers failing to start (`forkstart`: the pre-start hook
            // cannot reach the daemon). A connect on the local socket costs microseconds; TLS
            // endpoints keep their pool.
            Endpoint::Unix(path) => (
                builder
                    .pool_max_idle_per_host(0)
                    .unix_socket(path.as_path())
                    .no_proxy()
                    .build(),
                "http://lxd".to_owned(),
                format!("unix:{}", path.display()),
            ),
            Endpoint::Https {
                url,
                client_cert_pem,
                client_key_pem,
                server_cert_pem,
            } => {
                let mut pem = client_cert_pem.clone();
                pem.push(b'\n');
                pem.extend_from_slice(&client_key_pem.0);
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| Error::Config(format!("loading the client certificate: {e}")))?;
                let pinned = reqwest::Certificate::from_pem(server_cert_pem)
                    .map_err(|e| Error::Config(format!("loading the server certificate: {e}")))?;
                (
                    builder
                        .identity(identity)
                        .tls_certs_only([pinned])
                        .tls_danger_accept_invalid_hostnames(true)
                        .https_only(true)
                        .build(),
                    url.as_str().trim_end_matches('/').to_owned(),
                    url.to_string(),
                )
            }
        };
        let http = http.map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        let socket = match &endpoint {
            Endpoint::Unix(path) => Some(path.clone()),
            Endpoint::Https { .. } => None,
        };
        let mut client = Client {
            inner: Arc::new(Inner {
                http,
                socket,
                base,
                endpoint: desc,
                server: ServerInfo::default(),
                timeouts,
            }),
            project: None,
        };
        let what = format!("GET /1.0 on {}", client.inner.endpoint);
        // Another client's silent connection can hold up the daemon's accept loop (see above);
        // this runs once per client, so it gets the operation timeout.
        let server: ServerInfo = client
            .sync(
                &what,
                client
                    .req(Method::GET, "/1.0")
                    .timeout(client.inner.timeouts.operation),
            )
            .await
            .map_err(|e| match e {
                Error::Transport { what, source } => Error::Transport {
                    what: format!(
                        "{what} (is the daemon running? start one with: sudo ./scripts/incus-env.sh up)"
                    ),
                    source,
                },
                e => e,
            })?;
        let inner = Arc::get_mut(&mut client.inner)
            .expect("the client is not shared before connect returns");
        inner.server = server;
        tracing::debug!(endpoint = %inner.endpoint, flavour = ?inner.server.flavour,
            version = %inner.server.version, "connected");
        Ok(client)
    }

    /// The same connection, scoped to `project` (instances, profiles, images and operations).
    pub fn with_project(&self, project: &str) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            project: Some(project.into()),
        }
    }

    /// The project calls are scoped to (`None`: the server's default).
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    /// Where the daemon is, for messages: `unix:/var/lib/incus/unix.socket` or the HTTPS URL.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether the client talks to the daemon over HTTPS (a remote server, as the `incus` and
    /// `lxc` command lines call it) rather than over the local unix socket.
    pub fn is_remote(&self) -> bool {
        self.inner.socket.is_none()
    }

    /// What `GET /1.0` said at connect time.
    pub fn server(&self) -> &ServerInfo {
        &self.inner.server
    }

    /// The timeouts in use.
    pub fn timeouts(&self) -> &Timeouts {
        &self.inner.timeouts
    }

    /// The unix socket, when the client talks over one.
    pub(crate) fn socket(&self) -> Option<&Path> {
        self.inner.socket.as_deref()
    }

    /// Whether [`Client::exec`] can feed a command's standard input ([`ExecRequest::stdin`]):
    /// over the unix socket, yes; over HTTPS, not yet.
    ///
    /// [`ExecRequest::stdin`]: crate::ExecRequest::stdin
    pub fn streams_stdin(&self) -> bool {
        self.inner.socket.is_some()
    }

    /// `X-Incus-` or `X-LXD-`, for the file headers.
    pub(crate) fn header(&self, name: &str) -> String {
        format!("{}{name}", self.inner.server.flavour.header_prefix())
    }

    /// A request on `path` (which starts with `/1.0`), with the request timeout.
    pub(crate) fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.inner
            .http
            .request(method, format!("{}{path}", self.inner.base))
            .timeout(self.inner.timeouts.request)
    }

    /// A request on a project-scoped path.
    pub(crate) fn scoped(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.req(method, path);
        match &self.project {
            Some(p) => rb.query(&[("project", &**p)]),
            None => rb,
        }
    }

    async fn send(&self, what: &str, rb: RequestBuilder) -> Result<reqwest::Response> {
        rb.send().await.map_err(|e| self.transport(what, e))
    }

    fn transport(&self, what: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            Error::Timeout {
                what: what.to_owned(),
                after: self.inner.timeouts.request,
            }
        } else {
            Error::Transport {
                what: what.to_owned(),
                source: e,
            }
        }
    }

    /// Sends and decodes the envelope: sync metadata, an operation reference, or a typed error.
    /// A call answered "Server isn't ready yet" is repeated while that may pass (see
    /// [`Client::not_ready_retry`]).
    pub(crate) async fn call(&self, what: &str, rb: RequestBuilder) -> Result<Reply> {
        self.repeated_while_not_ready(what, rb, |rb| self.call_once(what, rb))
            .await
    }

    /// `once(rb)`, repeated on a clone of `rb` for as long as
    /// [`not_ready_retry`](Self::not_ready_retry) says.
    async fn repeated_while_not_ready<T, F>(
        &self,
        what: &str,
        rb: RequestBuilder,
        once: impl Fn(RequestBuilder) -> F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        let mut rb = rb;
        loop {
            let again = rb.try_clone();
            match once(rb).await {
                Err(e) => match (again, self.not_ready_retry(attempt, &e).await) {
                    (Some(again), Some(delay)) => {
                        tracing::debug!(what, ?delay, error = %e, "member not ready, retrying");
                        tokio::time::sleep(delay).await;
                        rb = again;
                        attempt += 1;
                    }
                    _ => return Err(e),
                },
                ok => return ok,
            }
        }
    }

    /// Whether (and after how long) to repeat a call that failed with `error`, the `attempt`th
    /// repeat. Only Incus's "Server isn't ready yet" is repeated: a cluster member answers it for
    /// about 5–7 s after it restarts (its status already `Online`), and also, misleadingly, for
    /// calls forwarded to a member that is down. So it is repeated with a short bounded backoff
    /// (`NOT_READY_DELAYS`, about 4 s in all) only while the cluster lists no member offline; a
    /// call that needs an offline member fails at once. A standalone server says it while
    /// starting: repeated alike.
    async fn not_ready_retry(&self, attempt: usize, error: &Error) -> Option<Duration> {
        if !error.is_not_ready() {
            return None;
        }
        let delay = Duration::from_millis(*NOT_READY_DELAYS.get(attempt)?);
        if !self.inner.server.clustered {
            return Some(delay);
        }
        let rb = self
            .req(Method::GET, "/1.0/cluster/members")
            .query(&[("recursion", "1")])
            .timeout(MEMBER_CHECK_TIMEOUT);
        match self.call_once("listing cluster members", rb).await {
            Ok(Reply::Sync(v)) => {
                let members: Vec<crate::types::ClusterMember> =
                    decode("listing cluster members", v).ok()?;
                members
                    .iter()
                    .all(|m| m.status == "Online")
                    .then_some(delay)
            }
            _ => None,
        }
    }

    async fn call_once(&self, what: &str, rb: RequestBuilder) -> Result<Reply> {
        let resp = self.send(what, rb).await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| self.transport(what, e))?;
        decode_envelope(what, status, location.as_deref(), &body)
    }

    /// A call that must answer synchronously, decoded into `T`.
    pub(crate) async fn sync<T: DeserializeOwned>(
        &self,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<T> {
        match self.call(what, rb).await? {
            Reply::Sync(v) => decode(what, v),
            Reply::Async(op) => Err(Error::Protocol {
                what: what.to_owned(),
                message: format!("expected a sync answer, got operation {}", op.path),
            }),
        }
    }

    /// [`Client::sync`] on a collection, every item in full (`?recursion=1`).
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        what: &str,
        rb: RequestBuilder,
    ) -> Result<T> {
        self.sync(what, rb.query(&[("recursion", "1")])).await
    }

    /// [`Client::run`] for a request whose only result is success.
    pub(crate) async fn run_done(&self, what: &str, rb: RequestBuilder) -> Result<()> {
        self.run(what, rb).await.map(|_| ())
    }

    /// A call that may start an operation: waits for it and requires success.
    pub(crate) async fn run(&self, what: &str, rb: RequestBuilder) -> Result<Operation> {
        let limit = self.inner.timeouts.operation;
        match self.call(what, rb).await? {
            Reply::Sync(v) => Ok(Operation {
                status: "Success".into(),
                status_code: 200,
                metadata: v,
                ..Operation::default()
            }),
            Reply::Async(op) => {
                let op = self.wait(what, &op, limit).await?;
                op_result(what, op)
            }
        }
    }

    /// Raw bytes (files, exec logs). Errors still come as an envelope. Repeated like
    /// [`Client::call`] while a member is not ready.
    pub(crate) async fn raw(&self, what: &str, rb: RequestBuilder) -> Result<(HeaderMap, Bytes)> {
        self.repeated_while_not_ready(what, rb, |rb| self.raw_once(what, rb))
            .await
    }

    async fn raw_once(&self, what: &str, rb: RequestBuilder) -> Result<(HeaderMap, Bytes)> {
        let resp = self.send(what, rb).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| self.transport(what, e))?;
        if status.is_success() {
            return Ok((headers, body));
        }
        match decode_envelope(what, status, None, &body) {
            Err(e) => Err(e),
            Ok(_) => Err(Error::from_server(what, status.as_u16(), "request failed")),
        }
    }

    /// Waits for an operation until it finishes or `limit` passes. Returns the final
    /// operation whatever its outcome (exec needs `metadata.return` of a failed one too).
    ///
    /// `/wait` answers HTTP 200 either with the operation (LXD 5.0, Incus 7) or with an error
    /// envelope (Incus 6.0, LXD 6) both when the operation failed and when the wait timed out. After
    /// an error envelope the operation is read directly: `Running` means "wait again".
    pub(crate) async fn wait(
        &self,
        what: &str,
        op: &OperationRef,
        limit: Duration,
    ) -> Result<Operation> {
        let deadline = Instant::now() + limit;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: limit,
                });
            }
            let secs = remaining.as_secs().clamp(1, 30);
            let rb = self
                .op_req(&format!("{}/wait", op.path), op)
                .query(&[("timeout", secs.to_string())])
                .timeout(Duration::from_secs(secs + 10));
            let current = match self.call(what, rb).await {
                Ok(Reply::Sync(v)) => decode::<Operation>(what, v)?,
                Ok(Reply::Async(_)) => {
                    return Err(Error::Protocol {
                        what: what.to_owned(),
                        message: "operation wait returned another operation".into(),
                    })
                }
                Err(e @ (Error::Transport { .. } | Error::Timeout { .. })) => return Err(e),
                Err(wait_err) => match self
                    .sync::<Operation>(what, self.op_req(&op.path, op))
                    .await
                {
                    Ok(o) => o,
                    // Purged already (5 s after it finished): the wait error is all there is.
                    Err(Error::NotFound { .. }) => {
                        return Err(Error::OperationFailed {
                            what: what.to_owned(),
                            message: wait_err.to_string(),
                        })
                    }
                    Err(e) => return Err(e),
                },
            };
            if current.is_final() {
                return Ok(current);
            }
        }
    }

    fn op_req(&self, path: &str, op: &OperationRef) -> RequestBuilder {
        let mut rb = self.req(Method::GET, path);
        if !op.query.is_empty() {
            rb = rb.query(&op.query);
        } else if let Some(p) = &self.project {
            rb = rb.query(&[("project", &**p)]);
        }
        rb
    }
}

/// The pauses before each repeat of a call answered "Server isn't ready yet" (4.2 s in all).
const NOT_READY_DELAYS: [u64; 5] = [200, 400, 800, 1200, 1600];

/// How long the member check behind a repeat may take.
const MEMBER_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;

    fn check_discover(env: &[(&str, &str)], existing: &[&str], expected: Option<&str>) {
        let got = discover_socket(
            |k| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| PathBuf::from(v))
            },
            |p| existing.iter().any(|e| Path::new(e) == p),
        );
        assert_eq!(
            got.as_deref(),
            expected.map(Path::new),
            "env {env:?} existing {existing:?}"
        );
    }

    #[test]
    fn socket_discovery_order() {
        check_discover(&[("INCUS_SOCKET", "/x.sock")], &[], Some("/x.sock"));
        check_discover(
            &[("LXD_SOCKET", "/l.sock"), ("INCUS_DIR", "/d")],
            &["/var/lib/incus/unix.socket"],
            Some("/l.sock"),
        );
        check_discover(&[("INCUS_DIR", "/d")], &[], Some("/d/unix.socket"));
        check_discover(&[("LXD_DIR", "/l")], &[], Some("/l/unix.socket"));
        check_discover(&[("INCUS_SOCKET", "")], &[], None);
        check_discover(
            &[],
            &["/var/lib/lxd/unix.socket", "/var/lib/incus/unix.socket"],
            Some("/var/lib/incus/unix.socket"),
        );
        check_discover(
            &[],
            &["/var/lib/lxd/unix.socket"],
            Some("/var/lib/lxd/unix.socket"),
        );
        check_discover(&[], &[], None);
    }

    fn env(status: u16, body: &str) -> Result<Reply> {
        decode_envelope(
            "test call",
            StatusCode::from_u16(status).expect("valid status"),
            None,
            body.as_bytes(),
        )
    }

    #[test]
    fn envelope_kinds() {
        let sync = env(
            200,
            r#"{"type":"sync","status_code":200,"metadata":{"a":1}}"#,
        );
        assert!(matches!(sync, Ok(Reply::Sync(v)) if v["a"] == 1));
        let created = env(201, r#"{"type":"sync","status_code":200,"metadata":{}}"#);
        assert!(matches!(created, Ok(Reply::Sync(_))));
        let op = env(
            202,
            r#"{"type":"async","operation":"/1.0/operations/abc?project=p","metadata":{}}"#,
        );
        match op {
            Ok(Reply::Async(r)) => {
                assert_eq!(r.path, "/1.0/operations/abc");
                assert_eq!(r.query, vec![("project".to_owned(), "p".to_owned())]);
            }
            _ => panic!("expected an operation"),
        }
    }

    #[test]
    fn envelope_errors_are_typed_and_keep_the_message() {
        let nf = env(
            404,
            r#"{"type":"error","error_code":404,"error":"Instance not found"}"#,
        );
        assert!(
            matches!(nf, Err(Error::NotFound { ref message, .. }) if message == "Instance not found")
        );
        let conflict = env(
            409,
            r#"{"type":"error","error_code":409,"error":"Alias \"x\" already exists"}"#,
        );
        assert!(matches!(conflict, Err(Error::Conflict { .. })));
        let dup = env(
            500,
            r#"{"type":"error","error_code":500,"error":"The profile already exists"}"#,
        );
        assert!(matches!(dup, Err(Error::Conflict { .. })));
        let other = env(
            400,
            r#"{"type":"error","error_code":400,"error":"Instance is running"}"#,
        );
        assert!(
            matches!(other, Err(Error::Api { code: 400, ref message, .. }) if message == "Instance is running")
        );
        let not_json = env(502, "bad gateway");
        assert!(matches!(not_json, Err(Error::Api { code: 502, .. })));
        let garbage = env(200, "{");
        assert!(matches!(garbage, Err(Error::Protocol { .. })));
        let no_op = env(202, r#"{"type":"async","metadata":{}}"#);
        assert!(matches!(no_op, Err(Error::Protocol { .. })));
    }

    #[test]
    fn failed_operations_map_duplicates_to_conflict() {
        let failed = |err: &str| Operation {
            status: "Failure".into(),
            status_code: 400,
            err: err.into(),
            ..Operation::default()
        };
        assert!(matches!(
            op_result(
                "create",
                failed("UNIQUE constraint failed: instances.project_id, instances.name")
            ),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            op_result("create", failed("This \"instances\" entry already exists")),
            Err(Error::Conflict { .. })
        ));
        assert!(matches!(
            op_result("start", failed("boom")),
            Err(Error::OperationFailed { ref message, .. }) if message == "boom"
        ));
    }

    #[test]
    fn private_keys_do_not_print() {
        let key = PrivateKeyPem::new("-----BEGIN PRIVATE KEY-----secret");
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn client_is_send_sync_and_cheap() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Client>();
    }
}
