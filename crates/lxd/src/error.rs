//! The one error type of the crate.

use std::time::Duration;

/// What can go wrong talking to LXD or Incus. Server errors keep the server's message and code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (HTTP 404, or a missing image alias found after a failed create).
    #[error("{what} not found: {message}")]
    NotFound { what: String, message: String },
    /// The object already exists (HTTP 409, or a duplicate reported inside an operation).
    #[error("{what} already exists: {message}")]
    Conflict { what: String, message: String },
    /// The instance must be running for this call (exec on a stopped instance).
    #[error("instance {instance} is not running")]
    NotRunning { instance: String },
    /// An exec's standard streams could not be connected, so the command was not started (the
    /// server runs it only once its stdin, stdout and stderr are connected, and gives up after
    /// 10 s): the exec may be repeated.
    #[error("{what}: its streams could not be connected: {message}")]
    StreamsNotConnected { what: String, message: String },
    /// A background operation finished with `Failure` or `Cancelled`.
    #[error("operation {what} failed: {message}")]
    OperationFailed { what: String, message: String },
    /// The server refused the request for another reason (400, 403, 412, 500…).
    #[error("{what}: server error {code}: {message}")]
    Api {
        what: String,
        code: u16,
        message: String,
    },
    /// A call or an operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The socket or connection failed.
    #[error("{what}: transport error")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something this client does not understand.
    #[error("{what}: unexpected response: {message}")]
    Protocol { what: String, message: String },
    /// An argument was rejected before any call was made.
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    /// No daemon socket was found, or the TLS material could not be loaded.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True for errors worth retrying later: timeouts and transport failures.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Transport { .. })
    }

    /// Classifies a server error (HTTP code or operation status code, and message) for `what`.
    pub(crate) fn from_server(what: &str, code: u16, message: &str) -> Error {
        let what = what.to_owned();
        let message = message.to_owned();
        let lower = message.to_ascii_lowercase();
        if code == 404 {
            Error::NotFound { what, message }
        } else if code == 409
            || lower.contains("already exists")
            || lower.contains("unique constraint failed")
        {
            Error::Conflict { what, message }
        } else {
            Error::Api {
                what,
                code,
                message,
            }
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
