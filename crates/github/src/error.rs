//! The one error type of the client.

use std::time::Duration;

use time::OffsetDateTime;

use crate::stats::EndpointKind;
use crate::types::Runner;

/// Everything a GitHub call can fail with. Messages are GitHub's own where it gave one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401: bad or expired credentials.
    #[error("github rejected the credentials: {message}")]
    Unauthorized { message: String },
    /// 403 that is not rate limiting: missing permission.
    #[error("github refused the request: {message}")]
    Forbidden { message: String },
    /// 404 (GitHub may also answer 404 for a resource hidden by missing permission).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// 409. For JIT configs, `existing` is the runner already registered under the name, if any.
    #[error("conflict: {message}")]
    Conflict {
        message: String,
        existing: Option<Box<Runner>>,
    },
    /// 422 other than "runner busy".
    #[error("validation failed: {message}")]
    Validation {
        message: String,
        errors: Vec<String>,
    },
    /// 422 on delete: the runner is still running a job. Retry later.
    #[error("runner is busy: {message}")]
    RunnerBusy { message: String },
    /// Rate limited and the required wait exceeds the configured maximum.
    #[error("rate limited by github until {until}")]
    RateLimited {
        until: OffsetDateTime,
        wait: Duration,
    },
    /// 5xx after retries.
    #[error("github server error {status}: {message}")]
    Server { status: u16, message: String },
    /// Any other unexpected status.
    #[error("unexpected github response {status}: {message}")]
    Unexpected { status: u16, message: String },
    /// Connection, TLS or protocol failure.
    #[error("request to github failed")]
    Transport(#[source] reqwest::Error),
    /// The call did not finish within the per-call timeout.
    #[error("request to github timed out after {after:?}")]
    Timeout { after: Duration },
    /// The response body did not have the documented shape.
    #[error("decoding the {endpoint} response")]
    Decode {
        endpoint: EndpointKind,
        #[source]
        source: serde_json::Error,
    },
    /// Signing the GitHub App JWT failed.
    #[error("signing the github app jwt")]
    Jwt(#[source] jsonwebtoken::errors::Error),
    /// The operation does not exist at the client's scope (e.g. webhooks of an enterprise:
    /// GitHub has no enterprise hooks API).
    #[error("{operation} is not available for {scope}: {reason}")]
    Unsupported {
        operation: &'static str,
        scope: String,
        reason: &'static str,
    },
    /// The client configuration is unusable.
    #[error("invalid github client configuration: {reason}")]
    Config { reason: String },
}

impl Error {
    /// 404: the resource is gone (or hidden).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Worth retrying the same call later without changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Server { .. }
                | Self::Transport(_)
                | Self::Timeout { .. }
                | Self::RateLimited { .. }
                | Self::RunnerBusy { .. }
        )
    }
}
