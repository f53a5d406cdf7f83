//! The GitHub simulator as the tests on real Incus run it: on the Incus bridge (containers reach
//! it there), serving the fake runner tarball.

use std::net::SocketAddr;

use github_sim::{Sim, SimConfig, SimHandle};

use crate::incus::bridge_ip;

/// The fake runner tarball of `version` (the agent is located or built first).
pub fn runner_tarball(version: &str) -> Vec<u8> {
    let agent = github_sim::tarball::locate_or_build_agent().expect("fake runner agent");
    github_sim::tarball::build_runner_tarball(&agent, version).expect("tarball")
}

/// A simulator config listening on the Incus bridge, with `repo` and the runner tarball of
/// `runner_version`; callers add what their tests need (`with_silence_timeout`, ...).
pub fn on_bridge(repo: &str, runner_version: &str) -> SimConfig {
    SimConfig::default()
        .with_listen(SocketAddr::new(bridge_ip(), 0))
        .with_repo(repo)
        .with_runner_tarball(runner_tarball(runner_version), runner_version)
}

/// Starts the simulator, or fails the test.
pub async fn start(config: SimConfig) -> SimHandle {
    Sim::start(config).await.expect("the simulator starts")
}
