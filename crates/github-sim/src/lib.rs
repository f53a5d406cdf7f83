//! `github-sim`: a stateful GitHub simulator for self-hosted runners.
//!
//! It serves GitHub's REST API for runners (repo, org and enterprise scope, at `/` and at
//! `/api/v3`), GitHub App authentication, rate limits, `workflow_job` webhooks (with the
//! repository and organisation hooks and deliveries API: list, get, redeliver), the runner side of
//! GitHub (`/_runner/`, see `docs/sim-protocol.md`), the Actions-service side of the runner
//! scale-set protocol (`runner-registration`, `/tenant/1/_apis/...`, the message queue) and an
//! admin API for tests (`/_sim/`).
//!
//! State lives behind one lock and is also reachable directly through [`SimHandle`]. Time is
//! tokio's clock, so a paused test clock also drives token expiry, the silence timeout and the
//! rate-limit windows (the `x-ratelimit-reset` epoch follows it).
//!
//! ```no_run
//! # async fn demo() -> Result<(), github_sim::SimError> {
//! let sim = github_sim::Sim::start(github_sim::SimConfig::default()).await?;
//! println!("API at {}", sim.api_url());
//! # Ok(()) }
//! ```

mod admin;
mod auth;
mod config;
mod http;
mod receiver;
mod rest;
mod runner_api;
mod scaleset;
mod scope;
mod secret;
mod server;
mod state;
pub mod tarball;
mod webhook;

pub use config::{
    AppConfig, GroupConfig, InstallationConfig, OwnerConfig, SimConfig, WebhookTarget,
    DEFAULT_GROUP_NAME, DEFAULT_TOKEN, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
};
pub use receiver::{serve_webhook_receiver, Received};
pub use scaleset::{AcquireMode, ScaleSetConfig};
pub use scope::Scope;
pub use secret::Secret;
pub use server::{Sim, SimError, SimHandle};
pub use state::{
    BusyLieSpec, BusyLieStatus, DeliveryRecord, FaultSpec, IssuedSecrets, JobSpec, JobStatus,
    JobView, Label, LabelKind, RequestCount, RunnerView, ScaleSetFaults, WebhookFaultSpec,
    DEFAULT_LABELS, ORG_HOOK_ID_BASE,
};
pub use webhook::sign_webhook;
