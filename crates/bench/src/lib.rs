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
pub mod chaos;
pub mod fleet;
pub mod incus_chaos;
pub mod measure;
pub mod outside;
pub mod real;
pub mod secret_scan;
pub mod seed;
pub mod table;
