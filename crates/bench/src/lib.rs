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
pub mod tally;

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

/// A benchmark binary's `main`: the child process of [`outside`] when this run is one, else
/// the command line parsed as `A` and `run(args)` on [`block_on`]'s runtime.
pub fn main<A: clap::Parser, F>(run: impl FnOnce(A) -> F) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    if let Some(child) = outside::run_child_if_requested() {
        return child;
    }
    block_on(run(A::parse()))
}

/// The command line of a benchmark that takes no option (anything given is ignored).
#[derive(clap::Parser, Debug)]
#[command(ignore_errors = true)]
pub struct NoArgs {}

/// The `--binary` option of the suites that run the real binary.
#[derive(clap::Args, Debug)]
pub struct BinaryArg {
    /// The runner-manager binary (default: built by cargo).
    #[arg(long)]
    binary: Option<std::path::PathBuf>,
}

impl BinaryArg {
    /// The binary given, or the one cargo builds.
    pub fn path(self) -> anyhow::Result<std::path::PathBuf> {
        bad_input::given_or_built_binary(self.binary)
    }
}

/// A reliability suite's `main`: the command line parsed as `A`, `run(args)` on [`block_on`]'s
/// runtime; exits with success when it returns `true` (nothing wrong found).
pub fn suite<A: clap::Parser, F>(run: impl FnOnce(A) -> F) -> anyhow::Result<std::process::ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<bool>>,
{
    Ok(if block_on(run(A::parse()))? {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
