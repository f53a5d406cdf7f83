//! Benchmarks of runner-manager against github-sim and the SIMULATION instance provider
//! (`manager::sim_provider`): `api-cost` (benchmark 2, GitHub API cost) and `scale-overhead`
//! (benchmark 3, CPU and RSS at 1,000 runners). Results go to BENCHMARKS.md.
//!
//! - [`outside`]: github-sim and the runner agents' long polls, in a child process.
//! - [`agents`]: the `SimRunnerHooks` that register simulated runners with the sim.
//! - [`fleet`]: one manager wired to both.
//! - [`measure`]: CPU time, RSS, a counting allocator.
//! - [`seed`]: the seed's request pattern, for the comparison.

pub mod agents;
pub mod bad_input;
pub mod baked;
pub mod burst;
pub mod chaos;
pub mod fleet;
pub mod incus_chaos;
pub mod measure;
pub mod outside;
pub mod placement;
pub mod real;
pub mod scaleset;
pub mod secret_scan;
pub mod seed;
pub mod table;

/// Runs a benchmark's async body on the runtime every benchmark uses (two worker threads, as the
/// machine has two cores).
pub fn block_on<T>(
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(body)
}
