//! Public data types returned by the client (converted by hand from the wire types).

use std::fmt;

use time::OffsetDateTime;

use crate::secret::Secret;

/// A runner id as GitHub assigns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerId(pub u64);

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u64> for RunnerId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

/// Whether the runner's listener is connected to GitHub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunnerStatus {
    Online,
    /// Offline, or any status string GitHub may add later.
    Offline,
}

/// A registered self-hosted runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub id: RunnerId,
    pub name: String,
    /// `linux`, `windows`, `macos`; empty when GitHub omitted it (fresh JIT runners).
    pub os: String,
    pub status: RunnerStatus,
    pub busy: bool,
    pub ephemeral: bool,
    pub labels: Vec<String>,
    pub runner_group_id: Option<u64>,
    /// `None` until the runner first connected.
    pub version: Option<String>,
}

/// A registration or remove token. Valid for one hour and reusable within it.
#[derive(Debug, Clone)]
pub struct RegistrationToken {
    pub token: Secret,
    pub expires_at: OffsetDateTime,
}

/// One entry of the runner downloads list.
#[derive(Debug, Clone)]
pub struct RunnerApplication {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    pub sha256_checksum: Option<String>,
    /// A short-lived bearer token for the download, when GitHub gives one.
    pub temp_download_token: Option<Secret>,
}

/// What to register with `generate_jitconfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRequest {
    pub name: String,
    /// 1 to 100 labels.
    pub labels: Vec<String>,
    pub runner_group_id: u64,
    /// Defaults to `_work` on GitHub's side.
    pub work_folder: Option<String>,
}

/// The result of `generate_jitconfig`: the (offline) runner record and its one-time config.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner: Runner,
    pub encoded_jit_config: Secret,
}

/// A runner group of an organisation or enterprise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerGroup {
    pub id: u64,
    pub name: String,
    pub default: bool,
}

/// The last-known rate-limit budget, from the `x-ratelimit-*` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub used: u64,
    /// When the window resets.
    pub reset: OffsetDateTime,
    /// `core`, `search`, … (`core` when the header is absent).
    pub resource: String,
}
