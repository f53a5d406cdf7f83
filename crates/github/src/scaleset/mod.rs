//! A client of GitHub Actions' **runner scale-set** protocol (the one `actions/scaleset` and
//! ARC's listener speak), per `/work/shared/reference/scaleset-protocol.md`.
//!
//! - Bootstrap: the config URL names the registration target (`https://github.com/ORG`,
//!   `…/OWNER/REPO`, `…/enterprises/ENT`, or a GHES host); the client gets a registration token
//!   from GitHub's REST API with the crate's own [`Client`](crate::Client) (PAT, or App JWT →
//!   installation token), exchanges it (`RemoteAuth`) for the Actions service's base URL and an
//!   admin JWT, and does that again whenever the JWT has less than 60 s left.
//! - Admin calls (`_apis/...`, with `api-version=6.0-preview`): runner groups, scale-set CRUD,
//!   sessions, `acquirejobs`, JIT configs, runners.
//! - The message queue: a long poll (`get_message`) that never blocks other calls on the same
//!   client, acknowledgement (`delete_message`), and a session refresh after a 401.
//! - Retries as the Go client: 1, 2, 4, 8 s (configurable), `Retry-After` on 429/503, never a
//!   4xx except 401/403 at bootstrap. Creating calls (scale set, session, JIT config) are only
//!   retried when the service cannot have processed them (connection refused, 429): a lost
//!   success would otherwise come back as a conflict.
//! - Wire types are private (`wire.rs`); every secret (PAT, registration token, admin token,
//!   queue token, JIT config) is a [`Secret`](crate::Secret) and never logged.

mod client;
mod config;
mod error;
mod http;
mod types;
mod wire;

pub use client::ScaleSetClient;
pub use config::{
    ConfigUrl, ScaleSetConfig, ScaleSetRetry, UserAgentInfo, FORCE_GHES_ENV_VAR,
    SCALESET_API_VERSION,
};
pub use error::{ScaleSetError, ServiceError};
pub use types::{
    JobCompleted, JobInfo, JobMessage, JobResult, JobStarted, Message, NewScaleSet, RemoveRunner,
    ScaleSet, ScaleSetJit, ScaleSetPatch, ScaleSetRunner, Session, Statistics,
};

#[cfg(test)]
mod tests;
