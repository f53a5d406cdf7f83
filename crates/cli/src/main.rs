use std::process::ExitCode;

use clap::Parser;

use runner_manager::app::{execute, EXIT_FAILURE};
use runner_manager::backend::ManagerBackend;
use runner_manager::cli::{Cli, Command};
use runner_manager::output::Console;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's own convention), --help and --version exit 0.
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run) {
        "info"
    } else {
        "warn"
    };
    runner_manager::logging::init(cli.log_format, default_level);
    let mut console = Console::stdio();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            console.error(&format!("starting the async runtime: {err}"), &[]);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    ExitCode::from(runtime.block_on(execute(cli, &mut console, &ManagerBackend)))
}
