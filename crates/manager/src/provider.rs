//! The two outside systems, as the manager sees them.
//!
//! [`InstanceProvider`] is LXD/Incus, [`RunnerRegistry`] is GitHub. Both speak the manager's own
//! types; adapters in `adapters/` translate from the wire crates. Every call made through these
//! traits must be bounded by a timeout in the implementation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::model::{InstanceType, Owner, Resources, RunnerName, Secret};

/// A failure of the instance provider.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("instance {0} not found")]
    NotFound(String),
    #[error("{what} timed out")]
    Timeout { what: String },
    /// The instance cannot take the call yet (not running, or a VM whose agent is not up):
    /// nothing was done, so the call may be repeated.
    #[error("{what}: the instance is not ready")]
    NotReady { what: String },
    /// Anything else; `source` says why (an LXD error with its own chain, or the provider's
    /// words).
    #[error("{what} failed")]
    Failed {
        what: String,
        #[source]
        source: BoxError,
    },
    /// The request can never succeed as it is: something it names is missing (an image alias, a
    /// profile, a storage pool, a project...) or the server refuses it (forbidden, invalid).
    /// Repeating it cannot help until an operator changes the configuration: never retried.
    #[error(transparent)]
    Permanent(Box<PermanentError>),
}

/// What [`ProviderError::Permanent`] tells: `server` says which server answered, `message` what
/// it said, `hint` what to do (how to list what is there).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem} on {server} (the server said: {message}); {hint}")]
pub struct PermanentError {
    pub what: String,
    pub problem: Problem,
    pub server: String,
    pub message: String,
    pub hint: String,
}

/// The cause behind a provider or registry error: whatever the adapter got, its own chain kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its `source()` chain, joined with ": " (`creating instance r-1 failed: ...:
/// connection refused`). Errors in this crate leave their source out of their own message, so
/// each cause is written once, here, where a report or a log line is made.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// [`Chain`] as a `String`.
pub fn render_chain(error: &(dyn std::error::Error + 'static)) -> String {
    Chain(error).to_string()
}

impl ProviderError {
    /// A failure the provider describes in words.
    pub fn failed(what: impl Into<String>, message: impl ToString) -> Self {
        Self::Failed {
            what: what.into(),
            source: message.to_string().into(),
        }
    }

    /// A failure caused by `source`, whose chain is kept.
    pub fn caused_by(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Failed {
            what: what.into(),
            source: Box::new(source),
        }
    }

    /// True for [`ProviderError::Permanent`]: an error the same request will meet again.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }

    /// The details of a [`ProviderError::Permanent`].
    pub fn permanent(&self) -> Option<&PermanentError> {
        match self {
            Self::Permanent(details) => Some(details),
            _ => None,
        }
    }
}

/// Why a request can never succeed as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A named object the request needs does not exist. `name` is `None` when neither the
    /// request nor the server named it.
    Missing {
        kind: ResourceKind,
        name: Option<String>,
    },
    /// The server refuses this client the request (HTTP 403).
    Forbidden,
    /// The server rejected the request as invalid.
    Invalid,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing {
                kind,
                name: Some(name),
            } => write!(f, "{} {name:?} not found", kind.as_str()),
            Self::Missing { kind, name: None } => write!(f, "{} not found", kind.as_str()),
            Self::Forbidden => f.write_str("forbidden"),
            Self::Invalid => f.write_str("rejected as invalid"),
        }
    }
}

/// The kinds of provider objects a creation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    ImageAlias,
    Image,
    Profile,
    StoragePool,
    Project,
    Network,
    /// A cluster member named by a creation's target.
    ClusterMember,
    /// A cluster group named by a creation's target (`@group`).
    ClusterGroup,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageAlias => "image alias",
            Self::Image => "image",
            Self::Profile => "profile",
            Self::StoragePool => "storage pool",
            Self::Project => "project",
            Self::Network => "network",
            Self::ClusterMember => "cluster member",
            Self::ClusterGroup => "cluster group",
        }
    }
}

/// A failure of the runner registry (GitHub).
#[derive(Debug, thiserror::Error)]
/// Each variant keeps GitHub's error as its `source` (the message GitHub gave with a refusal,
/// the DNS, connection or TLS failure behind a failed request); render with [`Chain`].
pub enum RegistryError {
    #[error("github rate limit exhausted while {what}")]
    RateLimited {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("github refused the credentials while {what}")]
    Unauthorized {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("{what} timed out")]
    Timeout {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("{what} failed")]
    Failed {
        what: String,
        #[source]
        source: BoxError,
    },
}

impl RegistryError {
    /// A failure the registry describes in words.
    pub fn failed(what: impl Into<String>, message: impl ToString) -> Self {
        Self::Failed {
            what: what.into(),
            source: message.to_string().into(),
        }
    }

    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Timeout { .. } => "timeout",
            Self::Failed { .. } => "failed",
        }
    }
}

/// The state of an instance as the provider reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    Running,
    Stopped,
    /// Being stopped or deleted by an operation still running on the server (one started by a
    /// process that has gone since, typically): it is going away, whatever it still reports.
    Stopping,
    /// Starting, frozen, error...
    Other,
}

/// One instance as listed by the provider (owned or not: the manager filters).
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    pub status: InstanceStatus,
    pub created_at: OffsetDateTime,
    /// The `user.*` config keys.
    pub config: BTreeMap<String, String>,
    /// The cluster member it lives on; `None` on a standalone server.
    pub location: Option<String>,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// A runner's name, or a build instance's (see [`crate::images`]).
    pub name: String,
    /// Image alias.
    pub image: String,
    pub instance_type: InstanceType,
    pub profiles: Vec<String>,
    /// Ownership keys (never secrets).
    pub config: BTreeMap<String, String>,
    pub ephemeral: bool,
    /// Where to create it on a cluster: a member name, or `@group` for a cluster group; `None`
    /// lets the server choose (and is the only value a standalone server accepts).
    pub target: Option<String>,
}

/// A member of an LXD/Incus cluster, as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// The cluster's own view (`status == "Online"`): an offline member is never called.
    pub online: bool,
    /// What the cluster says about it ("No heartbeat for 11.2s"); may be empty.
    pub message: String,
    /// The cluster groups it belongs to.
    pub groups: Vec<String>,
    /// From the server's resources API; `None` when it could not be read (an offline member).
    pub capacity: Option<Capacity>,
}

/// The names of the members the cluster reports offline (`members`: `None` off a cluster).
pub fn offline_members(members: Option<&[Member]>) -> BTreeSet<&str> {
    members
        .into_iter()
        .flatten()
        .filter(|m| !m.online)
        .map(|m| m.name.as_str())
        .collect()
}

/// A member's hardware, from the resources API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// CPU threads.
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Memory in use on the host (all processes, not only instances).
    pub memory_used_bytes: u64,
}

/// What an exec is for. Providers may act on it (the simulated provider answers by purpose); a
/// real provider runs the command whatever it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ExecPurpose {
    /// The health probe (`guest/probe.sh`).
    Probe,
    /// The install: unpack the bundle, register and start the runner.
    Setup,
    /// Baking an image: unpack the runner and the static files; nothing registered.
    Bake,
    /// Stop the runner (`guest/stop.sh`).
    Stop,
    /// Whether a job runs in the instance; if not, freeze the runner (`guest/quiesce.sh`).
    Quiesce,
    /// Thaw a frozen runner (`guest/resume.sh`).
    Resume,
    /// Anything else (tests, benchmarks).
    #[default]
    Other,
}

/// A command run inside an instance. The argv is visible to `ps`: never put a secret in it.
/// The standard input may hold secrets: Debug shows only its length.
#[derive(Clone, Default)]
pub struct ExecRequest {
    pub purpose: ExecPurpose,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// `(uid, gid)`; root when `None`.
    pub user: Option<(u32, u32)>,
    pub cwd: Option<String>,
    /// How long the command may run.
    pub timeout: Duration,
    /// Fed to the command's standard input, then closed. Only for providers whose
    /// [`InstanceProvider::streams_stdin`] is true.
    pub stdin: Option<Vec<u8>>,
}

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("purpose", &self.purpose)
            .field("argv", &self.argv)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("user", &self.user)
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("stdin", &self.stdin.as_ref().map(Vec::len))
            .finish()
    }
}

impl ExecRequest {
    /// `sh -c SCRIPT` as root with a timeout.
    pub fn shell(script: impl Into<String>, timeout: Duration) -> Self {
        Self {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout,
            ..Self::default()
        }
    }

    pub fn as_user(mut self, user: Option<(u32, u32)>) -> Self {
        self.user = user;
        self
    }

    pub fn in_dir(mut self, dir: impl Into<String>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn with_stdin(mut self, input: Vec<u8>) -> Self {
        self.stdin = Some(input);
        self
    }

    pub fn for_purpose(mut self, purpose: ExecPurpose) -> Self {
        self.purpose = purpose;
        self
    }
}

/// The result of [`InstanceProvider::exec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A file to write inside an instance; parent directories are created.
#[derive(Clone)]
pub struct FilePush {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for FilePush {
    // File contents may be secrets: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilePush")
            .field("path", &self.path)
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// LXD/Incus as the manager uses it.
#[async_trait]
pub trait InstanceProvider: Send + Sync {
    /// Instances that may belong to `owner` (the provider may pre-filter; the manager always
    /// re-checks ownership with [`Owner::owns_instance`]).
    async fn list_instances(&self, owner: &Owner) -> Result<Vec<Instance>, ProviderError>;

    /// The cluster's members with their status and capacity; `Ok(None)` when the server is not
    /// clustered. Never hangs on an offline member: the cluster's member list says which are
    /// offline, and those are not asked for their resources.
    async fn cluster_members(&self) -> Result<Option<Vec<Member>>, ProviderError> {
        Ok(None)
    }

    /// Ensures a `dir` storage pool named `runner` at `path`.
    async fn ensure_pool(&self, path: &Path) -> Result<(), ProviderError>;

    /// Ensures the resource profile exists; returns its name
    /// (`cpu-{cpu}-mem-{memory}-disk-{disk}`). `with_pool`: the root disk lives on the `runner` pool.
    async fn ensure_profile(
        &self,
        resources: &Resources,
        instance_type: InstanceType,
        with_pool: bool,
    ) -> Result<String, ProviderError>;

    /// Checks, creating nothing, that instances can be created from `image` (see
    /// [`InstanceSpec::image`]): a missing one gives [`ProviderError::Permanent`] naming it and
    /// saying how to list what is there. Called once per pass that creates, before anything is
    /// registered or created. The default finds nothing to check.
    async fn check_image(&self, _image: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Checks, creating nothing, that each profile exists, like [`Self::check_image`].
    async fn check_profiles(&self, _profiles: &[String]) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Creates the instance and starts it; returns once LXD reports it started. A failure that
    /// a new attempt would meet again (a missing image or profile...) is
    /// [`ProviderError::Permanent`].
    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError>;

    /// Runs a command; a non-zero exit is an `Ok` with that exit code.
    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError>;

    /// Whether [`Self::exec`] can feed [`ExecRequest::stdin`]. When it cannot, files travel by
    /// [`Self::push_file`].
    fn streams_stdin(&self) -> bool {
        false
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError>;

    /// `Ok(None)` when the file does not exist.
    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError>;

    /// Force-stops and deletes; `Ok` when it is already gone.
    async fn delete(&self, name: &str) -> Result<(), ProviderError>;

    // ----------------------------------------------------------------- images (baked pools)

    /// The fingerprint an image alias points at; `None` when there is no such alias.
    async fn image_fingerprint(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        Err(unsupported("resolving an image alias", alias))
    }

    /// The server's images (the manager keeps those whose properties name it).
    async fn list_images(&self) -> Result<Vec<ImageInfo>, ProviderError> {
        Err(unsupported("listing images", "of this provider"))
    }

    /// Stops an instance (cleanly, then forced after a while); it stays, stopped.
    async fn stop(&self, name: &str) -> Result<(), ProviderError> {
        Err(unsupported("stopping an instance", name))
    }

    /// Publishes a stopped instance as an image with `alias` and `properties`; its fingerprint.
    async fn publish(
        &self,
        name: &str,
        _alias: &str,
        _properties: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        Err(unsupported("publishing an image", name))
    }

    /// Replaces an image's properties.
    async fn set_image_properties(
        &self,
        fingerprint: &str,
        _properties: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        Err(unsupported("updating image properties", fingerprint))
    }

    /// Deletes an image and its aliases; `Ok` when it is already gone.
    async fn delete_image(&self, fingerprint: &str) -> Result<(), ProviderError> {
        Err(unsupported("deleting an image", fingerprint))
    }
}

fn unsupported(what: &str, name: &str) -> ProviderError {
    ProviderError::failed(
        format!("{what} {name}"),
        "this instance provider has no image support",
    )
}

/// An image as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub fingerprint: String,
    pub aliases: Vec<String>,
    pub properties: BTreeMap<String, String>,
    pub size: u64,
}

/// A runner registration as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: u64,
    pub name: String,
    pub online: bool,
    pub busy: bool,
    pub labels: Vec<String>,
}

/// The result of deleting a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// GitHub says the runner is running a job (422): leave it alone.
    Busy,
}

/// A JIT configuration for one runner.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner_id: u64,
    pub encoded: Secret,
}

/// One entry of GitHub's runner downloads list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerDownload {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    /// Empty when GitHub gave none (such a download is refused).
    pub sha256: String,
    pub temp_download_token: Option<Secret>,
}

/// A JIT runner to register.
#[derive(Debug, Clone)]
pub struct JitRequest {
    pub name: RunnerName,
    /// All of the runner's labels: a JIT registration has only those it is given.
    pub labels: Vec<String>,
    /// The runner group (organisation and enterprise scopes; names match ignoring case); the
    /// configured group when `None`.
    pub group: Option<String>,
}

/// GitHub's runner API for one repo or org, as the manager uses it.
#[async_trait]
pub trait RunnerRegistry: Send + Sync {
    /// All registrations in the scope (the manager filters by name).
    async fn list_runners(&self) -> Result<Vec<Registration>, RegistryError>;

    async fn registration_token(&self) -> Result<Secret, RegistryError>;

    /// Registers a JIT runner.
    async fn generate_jit(&self, request: &JitRequest) -> Result<JitConfig, RegistryError>;

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError>;

    async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, RegistryError>;
}
