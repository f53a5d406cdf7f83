//! Thin adapters from the wire crates to the manager's traits: [`LxdProvider`] wraps
//! `lxd::Client`, [`GithubRegistry`] wraps `github::Client`. Conversions are written by hand; no
//! wire type crosses into the core.

mod github;
mod lxd;

pub use self::github::GithubRegistry;
pub use self::lxd::{LxdProvider, RUNNER_POOL};
