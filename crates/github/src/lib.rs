//! GitHub REST client for self-hosted runners (repository, organisation or enterprise scope).
//!
//! - [`Client`] speaks GitHub's runner endpoints with the mandatory headers, PAT or GitHub App
//!   auth (cached installation tokens), rate-limit waits per GitHub's rules, bounded retries of
//!   idempotent calls, ETag-conditional list calls and a proxy that honours `no_proxy`.
//! - Wire types stay private (`wire`); callers get [`Runner`], [`RegistrationToken`], ….
//! - Webhook recovery (`hooks`): [`Client::list_hooks`], [`Client::find_hook_by_url`],
//!   [`Client::list_deliveries`] (cursor paging), [`Client::get_delivery`] (with the payload) and
//!   [`Client::redeliver`], at repository and organisation scope.
//! - [`Secret`] redacts itself and is meant to be reused by other crates.
//! - [`scaleset`]: a client of GitHub Actions' runner scale-set protocol ([`scaleset::ScaleSetClient`]:
//!   bootstrap from a config URL, scale sets, message sessions and the long-poll queue, JIT runners).
//!
//! Architecture invariant: `generate_jitconfig` is never retried blindly (see its docs).

mod auth;
mod client;
mod endpoints;
mod error;
mod hooks;
mod rate_limit;
pub mod scaleset;
mod scope;
mod secret;
mod stats;
mod types;
mod wire;

pub use auth::{Auth, APP_TOKEN_REFRESH_MARGIN, TOKEN_ENV_VAR};
pub use client::{Client, ClientConfig, ProxyConfig, RetryPolicy, API_VERSION};
pub use endpoints::DEFAULT_RUNNER_GROUP_ID;
pub use error::Error;
pub use hooks::{Delivery, DeliveryPage, DeliverySummary, Hook};
pub use scope::{Scope, ScopeError};
pub use secret::Secret;
pub use stats::{CallStats, EndpointKind, EndpointStats};
pub use types::{
    JitConfig, JitRequest, RateLimit, RegistrationToken, Runner, RunnerApplication, RunnerGroup,
    RunnerId, RunnerStatus,
};
