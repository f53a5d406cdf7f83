//! [`ScaleSetError`]: everything a scale-set call can fail with.

use std::fmt;
use std::time::Duration;

use super::types::ScaleSetRunner;

/// What the Actions service said when it refused a call: the status, the `typeName` of its
/// `{"typeName","message"}` body (empty for a plain-text body), the message (or the plain-text
/// body) and the `ActivityId` / `X-GitHub-Request-Id` headers, for support requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: u16,
    pub type_name: String,
    pub message: String,
    pub activity_id: Option<String>,
    pub request_id: Option<String>,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}", self.status)?;
        if !self.type_name.is_empty() {
            write!(f, " {}", self.type_name)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(id) = &self.activity_id {
            write!(f, " (ActivityId {id})")?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " (X-GitHub-Request-Id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

/// Everything a [`ScaleSetClient`](super::ScaleSetClient) call can fail with.
///
/// Service errors are mapped by **substring of `typeName`**, whatever the status, as the Go
/// client does; the typed variants keep the service's answer as their source.
#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    /// 409 `RunnerScaleSetSessionConflictException`: another session is active (a crashed
    /// listener's, or a second manager using the same set). Retry with a backoff of 30 s or
    /// more; it clears when the other session is deleted or expires.
    #[error("the scale set already has an active message session")]
    SessionConflict {
        #[source]
        source: ServiceError,
    },
    /// The session is gone (`RunnerScaleSetSessionExpiredException`, or a 404 on refresh for a
    /// session evicted on the service side). Create a new session.
    #[error("the message session is no longer valid")]
    SessionExpired {
        #[source]
        source: ServiceError,
    },
    /// `RunnerScaleSetNotFoundException`: the set was deleted on the service. Re-create it.
    #[error("the runner scale set does not exist")]
    ScaleSetNotFound {
        #[source]
        source: ServiceError,
    },
    /// `AgentExistsException`: a runner with that name is registered. `existing` is that runner
    /// when the client could look it up (same set: remove it and retry; other set: pick
    /// another name).
    #[error("a runner with that name already exists")]
    RunnerExists {
        existing: Option<Box<ScaleSetRunner>>,
        #[source]
        source: ServiceError,
    },
    /// `AgentNotFoundException`.
    #[error("the runner does not exist")]
    RunnerNotFound {
        #[source]
        source: ServiceError,
    },
    /// `JobStillRunningException` on an operation other than `remove_runner` (which answers
    /// [`RemoveRunner::JobStillRunning`](super::RemoveRunner::JobStillRunning) instead), e.g.
    /// deleting a set with a busy runner.
    #[error("a runner is still running a job")]
    JobStillRunning {
        #[source]
        source: ServiceError,
    },
    /// 401/403 left after the bootstrap retries, a 401 left after a fresh admin token, or a
    /// second 401 on a queue call after a session refresh.
    #[error("the actions service rejected the credentials")]
    Unauthorized {
        #[source]
        source: ServiceError,
    },
    /// An attempt did not finish within its timeout (and was not retried, or retries ran out).
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    /// Any other refused call, after retries.
    #[error("{operation} failed: status {status} {type_name}: {message}")]
    Status {
        operation: &'static str,
        status: u16,
        type_name: String,
        message: String,
        activity_id: Option<String>,
    },
    /// No runner group has that name.
    #[error("no runner group is named {name:?}")]
    RunnerGroupNotFound { name: String },
    /// Connection, TLS or protocol failure, after retries.
    #[error("{operation}: request to the actions service failed")]
    Transport {
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The answer did not have the documented shape (also a 200 with an empty body).
    #[error("decoding the {operation} response")]
    Decode {
        operation: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The answer decoded but breaks the protocol (an unknown envelope `messageType`, no
    /// statistics, an empty queue URL or token, an admin token without `exp`, more than one
    /// match for a name, …).
    #[error("invalid {operation} response: {reason}")]
    InvalidResponse {
        operation: &'static str,
        reason: String,
    },
    /// Getting the registration token from GitHub's REST API failed (step 2 of the bootstrap;
    /// also the App installation token of step 1).
    #[error("getting a registration token from github")]
    Bootstrap {
        #[source]
        source: crate::Error,
    },
    /// The client configuration is unusable (config URL, proxy, user agent, credentials).
    #[error("invalid scale-set client configuration: {reason}")]
    Config { reason: String },
}

impl ScaleSetError {
    /// Retrying the same call later, unchanged, cannot succeed: fix the configuration or the
    /// state first (a missing set, a taken name, bad credentials, a 4xx the service will
    /// repeat). Session conflicts and expiries, busy runners, timeouts, transport errors, 5xx,
    /// 429 and malformed answers (broker degradation) are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Config { .. }
            | Self::ScaleSetNotFound { .. }
            | Self::RunnerExists { .. }
            | Self::RunnerNotFound { .. }
            | Self::Unauthorized { .. }
            | Self::RunnerGroupNotFound { .. } => true,
            Self::Bootstrap { source } => !source.is_transient(),
            Self::Status { status, .. } => {
                (400..500).contains(status) && !matches!(status, 408 | 429)
            }
            Self::SessionConflict { .. }
            | Self::SessionExpired { .. }
            | Self::JobStillRunning { .. }
            | Self::Timeout { .. }
            | Self::Transport { .. }
            | Self::Decode { .. }
            | Self::InvalidResponse { .. } => false,
        }
    }

    /// The service's answer, for the variants that carry one.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            Self::SessionConflict { source }
            | Self::SessionExpired { source }
            | Self::ScaleSetNotFound { source }
            | Self::RunnerExists { source, .. }
            | Self::RunnerNotFound { source }
            | Self::JobStillRunning { source }
            | Self::Unauthorized { source } => Some(source),
            _ => None,
        }
    }

    /// Maps a refused call: by substring of `typeName` first, whatever the status, then 401.
    pub(crate) fn from_service(operation: &'static str, error: ServiceError) -> Self {
        let type_name = error.type_name.as_str();
        let has = |needle: &str| type_name.contains(needle);
        if has("RunnerScaleSetSessionConflictException") {
            Self::SessionConflict { source: error }
        } else if has("RunnerScaleSetSessionExpiredException") {
            Self::SessionExpired { source: error }
        } else if has("RunnerScaleSetNotFoundException") {
            Self::ScaleSetNotFound { source: error }
        } else if has("AgentExistsException") {
            Self::RunnerExists {
                existing: None,
                source: error,
            }
        } else if has("AgentNotFoundException") {
            Self::RunnerNotFound { source: error }
        } else if has("JobStillRunningException") {
            Self::JobStillRunning { source: error }
        } else if error.status == 401 {
            Self::Unauthorized { source: error }
        } else {
            Self::Status {
                operation,
                status: error.status,
                type_name: error.type_name,
                message: error.message,
                activity_id: error.activity_id,
            }
        }
    }
}
