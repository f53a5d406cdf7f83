//! `runner-agent`: the fake actions/runner listener, installed as `bin/Runner.Listener`.
//!
//! It follows the real listener's command line (`configure`, `remove`, `run`), files and exit
//! codes, and talks to github-sim's runner protocol (docs/sim-protocol.md) instead of GitHub's
//! Actions service. It is built statically so that it runs in a busybox container.
//!
//! Exit codes: 0 success; 1 terminated error (bad input, refused by the server, not
//! configured); 2 retryable error (the server could not be reached or failed).

mod cli;
mod diag;
mod files;
mod http;
mod job;
mod sys;

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli::{Command, ConfigureArgs, EnvInputs, RemoveArgs, RunArgs, SecretSource};
use diag::{timestamp, Diag};
use files::{FilesError, RunnerRoot, RunnerSettings};
use http::{Conclusion, HttpError, RegisterRequest, ServerUrl, SimClient};
use secrecy::SecretString;

/// The listener's environment: the process environment with `.env` applied over it.
pub type Env = BTreeMap<String, String>;

const EXIT_OK: i32 = 0;
const EXIT_TERMINATED: i32 = 1;
const EXIT_RETRYABLE: i32 = 2;

/// How long one long poll may wait for a job (the simulator's default).
const POLL_WAIT: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn main() {
    std::process::exit(real_main());
}

fn real_main() -> i32 {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let root = RunnerRoot::discover();
    let env = load_env(root.path());
    let inputs = EnvInputs::from_env(&env);
    let command = match cli::parse(&args, &inputs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_TERMINATED;
        }
    };
    match command {
        Command::Version => {
            println!("{}", version(root.path()));
            EXIT_OK
        }
        Command::Help(topic) => {
            print!("{}", cli::usage(topic));
            EXIT_OK
        }
        Command::Configure(args) => configure(&root, &env, args),
        Command::Remove(args) => remove(&root, &env, args),
        Command::Run(args) => run(&root, &env, args),
    }
}

/// The process environment, then `KEY=VALUE` lines of `<root>/.env` over it.
fn load_env(root: &Path) -> Env {
    let mut env: Env = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    if let Ok(text) = std::fs::read_to_string(root.join(".env")) {
        env.extend(files::parse_env_file(&text));
    }
    env
}

/// `bin/runnerversion` (written by the tarball builder), else the crate version.
fn version(root: &Path) -> String {
    std::fs::read_to_string(root.join("bin").join("runnerversion"))
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
}

fn user_agent(root: &Path) -> String {
    format!(
        "GitHubActionsRunner-linux-x64/{} (fake-runner)",
        version(root)
    )
}

fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "runner".to_string())
}

/// Reads a secret; a `--jitconfig-file` is deleted once read.
fn resolve_secret(source: SecretSource, delete_file: bool) -> io::Result<SecretString> {
    match source {
        SecretSource::Value(s) => Ok(s),
        SecretSource::File(path) => {
            let text = std::fs::read_to_string(&path)?;
            if delete_file {
                std::fs::remove_file(&path)?;
            }
            let value = text.trim();
            if value.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            Ok(SecretString::from(value))
        }
    }
}

/// Calls `f` up to `attempts` times while it fails with a retryable error.
fn with_retries<T>(
    attempts: u32,
    diag: &Diag,
    what: &str,
    mut f: impl FnMut() -> Result<T, HttpError>,
) -> Result<T, HttpError> {
    let mut delay = Duration::from_secs(1);
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_retryable() && attempt < attempts => {
                diag.error(&format!(
                    "{what} failed (attempt {attempt}): {e}; retrying in {delay:?}"
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The exit code for a failed call to the server.
fn http_exit_code(e: &HttpError) -> i32 {
    if e.is_retryable() {
        EXIT_RETRYABLE
    } else {
        EXIT_TERMINATED
    }
}

fn print_banner() {
    println!(
        "\n--------------------------------------------------------------------------------\n\
         |        Self-hosted runner registration (github-sim fake actions/runner)      |\n\
         --------------------------------------------------------------------------------\n"
    );
}

fn configure(root: &RunnerRoot, env: &Env, args: ConfigureArgs) -> i32 {
    let diag = Diag::open(root.path(), "Runner");
    print_banner();
    if root.is_configured() && !args.replace {
        eprintln!(
            "Cannot configure the runner because it is already configured. To reconfigure the runner, run 'config.sh remove' or './config.sh remove' first."
        );
        return EXIT_TERMINATED;
    }
    let token = match resolve_secret(args.token, false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("An error occurred: reading the registration token file: {e}");
            return EXIT_TERMINATED;
        }
    };
    let client = match ServerUrl::parse(&args.url)
        .and_then(|server| SimClient::new(&server, env, &user_agent(root.path())))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("An error occurred: {e}");
            return EXIT_TERMINATED;
        }
    };
    let name = args.name.unwrap_or_else(hostname);
    println!("# Authentication\n");
    let request = RegisterRequest {
        url: args.url.trim().to_string(),
        name: name.clone(),
        labels: args.labels,
        runner_group: args.runner_group,
        ephemeral: args.ephemeral,
        replace: args.replace,
        no_default_labels: args.no_default_labels,
        work: args.work.clone(),
    };
    diag.info(&format!(
        "registering runner '{name}' at {} (proxy: {})",
        request.url,
        client.proxy_for_log().unwrap_or_else(|| "none".to_string())
    ));
    let registration = match with_retries(3, &diag, "registration", || {
        client.register(&token, &request)
    }) {
        Ok(r) => r,
        Err(e) => {
            diag.error(&format!("registration failed: {e}"));
            match e.status() {
                Some(401) => eprintln!("Http response code: Unauthorized from 'POST {}/_runner/register' (the registration token is invalid or expired)", ServerUrl::parse(&request.url).map(|s| s.base()).unwrap_or_default()),
                Some(409) => eprintln!("A runner exists with the same name '{name}'. Use --replace to replace it."),
                // actions/runner's own words for an unknown `--runnergroup`.
                Some(404) if e.message().is_some_and(|m| m.contains("runner group")) => {
                    eprintln!("An error occurred: {}", e.message().unwrap_or_default())
                }
                Some(404) => eprintln!("An error occurred: the url '{}' is not a known repository, organization or enterprise ({e})", request.url),
                _ => eprintln!("An error occurred: registering the runner: {e}"),
            }
            return http_exit_code(&e);
        }
    };
    println!("√ Connected to GitHub\n\n# Runner Registration\n");
    println!("√ Runner successfully added");
    let settings = RunnerSettings {
        agent_id: registration.agent_id,
        agent_name: registration.agent_name,
        pool_id: registration.pool_id,
        pool_name: registration.pool_name,
        server_url: if registration.server_url.is_empty() {
            ServerUrl::parse(&request.url)
                .map(|s| s.base())
                .unwrap_or_default()
        } else {
            registration.server_url
        },
        git_hub_url: request.url.clone(),
        work_folder: args.work,
        ephemeral: args.ephemeral,
        disable_update: args.disable_update,
        use_v2_flow: false,
        server_url_v2: String::new(),
    };
    if let Err(e) = root.write_config(&settings, &SecretString::from(registration.credential)) {
        eprintln!("An error occurred: saving the settings: {e}");
        return EXIT_TERMINATED;
    }
    println!("√ Runner connection is good\n\n# Runner settings\n\n√ Settings Saved.\n");
    diag.info(&format!(
        "configured runner '{}' (agent id {}, ephemeral {})",
        settings.agent_name, settings.agent_id, settings.ephemeral
    ));
    EXIT_OK
}

fn remove(root: &RunnerRoot, env: &Env, args: RemoveArgs) -> i32 {
    let diag = Diag::open(root.path(), "Runner");
    print_banner();
    if let Some(token_source) = args.token {
        let settings = match root.read_settings() {
            Ok(s) => Some(s),
            Err(FilesError::NotConfigured) => None,
            Err(e) => {
                eprintln!("An error occurred: {e}");
                return EXIT_TERMINATED;
            }
        };
        if let Some(settings) = settings {
            let token = match resolve_secret(token_source, false) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("An error occurred: reading the remove token file: {e}");
                    return EXIT_TERMINATED;
                }
            };
            let url = if settings.git_hub_url.is_empty() {
                settings.server_url.clone()
            } else {
                settings.git_hub_url.clone()
            };
            let client = match ServerUrl::parse(&url)
                .and_then(|server| SimClient::new(&server, env, &user_agent(root.path())))
            {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("An error occurred: {e}");
                    return EXIT_TERMINATED;
                }
            };
            println!("# Runner removal\n");
            match with_retries(3, &diag, "removal", || {
                client.remove(&token, &url, settings.agent_id)
            }) {
                Ok(()) => println!("√ Runner removed successfully"),
                Err(e) if e.status() == Some(404) => {
                    println!("√ Runner was already removed from the server");
                }
                Err(e) => {
                    diag.error(&format!("removal failed: {e}"));
                    eprintln!("An error occurred: removing the runner: {e}");
                    return http_exit_code(&e);
                }
            }
            diag.info(&format!(
                "removed runner '{}' (agent id {})",
                settings.agent_name, settings.agent_id
            ));
        } else {
            println!("The runner is not configured; removing local files only.");
        }
    }
    println!("# Runner settings\n");
    match root.delete_config() {
        Ok(deleted) => {
            for name in files::CONFIG_FILES {
                if deleted.contains(&name) {
                    println!("√ Removed {name}");
                } else {
                    println!("Removing {name}: skipped (doesn't exist)");
                }
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("An error occurred: {e}");
            EXIT_TERMINATED
        }
    }
}

/// Whether the listener is waiting for a job or running one (signals act differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Busy,
}

struct Listener {
    client: SimClient,
    credential: SecretString,
    settings: RunnerSettings,
    diag: Diag,
}

impl Listener {
    fn go_offline(&self) {
        match self.client.offline(
            &self.credential,
            self.settings.agent_id,
            Duration::from_secs(5),
        ) {
            Ok(()) => self
                .diag
                .info("told the server the runner is going offline"),
            Err(e) => self.diag.error(&format!("going offline failed: {e}")),
        }
    }
}

fn run(root: &RunnerRoot, env: &Env, args: RunArgs) -> i32 {
    sys::catch_stop_signals();
    let diag = Diag::open(root.path(), "Runner");
    let jit = args.jit_config.is_some();
    if let Some(source) = args.jit_config {
        match resolve_secret(source, true) {
            Ok(encoded) => {
                if let Err(e) = root.write_jit_config(&encoded) {
                    eprintln!("An error occurred: {e}");
                    return EXIT_TERMINATED;
                }
                diag.info("wrote the JIT configuration");
            }
            // run.sh restarting the listener after a retryable exit: the file is already consumed.
            Err(e) if e.kind() == io::ErrorKind::NotFound && root.is_configured() => {
                diag.info("the JIT config file is gone; using the configuration it wrote");
            }
            Err(e) => {
                eprintln!("An error occurred: reading the JIT configuration: {e}");
                return EXIT_TERMINATED;
            }
        }
    }
    let (settings, credential) = match root
        .read_settings()
        .and_then(|s| Ok((s, root.read_credential()?)))
    {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("An error occurred: {e}");
            return EXIT_TERMINATED;
        }
    };
    let ephemeral = settings.ephemeral || jit;
    let server_url = if settings.server_url.is_empty() {
        &settings.git_hub_url
    } else {
        &settings.server_url
    };
    let client = match ServerUrl::parse(server_url)
        .and_then(|server| SimClient::new(&server, env, &user_agent(root.path())))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("An error occurred: {e}");
            return EXIT_TERMINATED;
        }
    };
    diag.info(&format!(
        "runner '{}' (agent id {}, ephemeral {ephemeral}) listening at {server_url} (proxy: {})",
        settings.agent_name,
        settings.agent_id,
        client.proxy_for_log().unwrap_or_else(|| "none".to_string())
    ));
    let listener = Arc::new(Listener {
        client,
        credential,
        settings,
        diag,
    });
    let phase = Arc::new(Mutex::new(Phase::Idle));
    spawn_signal_watcher(Arc::clone(&listener), Arc::clone(&phase));

    println!(
        "\n√ Connected to GitHub\n\nCurrent runner version: '{}'",
        version(root.path())
    );
    println!("{}: Listening for Jobs", timestamp());
    let code = listen(root, env, &listener, &phase, ephemeral, args.once);
    if code == EXIT_OK && ephemeral {
        match root.delete_config() {
            Ok(_) => listener
                .diag
                .info("ephemeral runner: deleted the local configuration"),
            Err(e) => listener
                .diag
                .error(&format!("deleting the configuration: {e}")),
        }
    }
    code
}

/// On SIGTERM/SIGINT while idle: tell the server and exit at once. While busy the job loop
/// cancels the job, reports it and stops.
fn spawn_signal_watcher(listener: Arc<Listener>, phase: Arc<Mutex<Phase>>) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let Some(signal) = sys::stop_signal() else {
            continue;
        };
        let guard = match phase.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if *guard == Phase::Idle {
            listener
                .diag
                .info(&format!("received signal {signal} while idle; stopping"));
            listener.go_offline();
            println!("{}: Runner stopped", timestamp());
            std::process::exit(EXIT_OK);
        }
        return;
    });
}

fn set_phase(phase: &Mutex<Phase>, value: Phase) {
    match phase.lock() {
        Ok(mut g) => *g = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// The long-poll loop; returns the listener's exit code.
fn listen(
    root: &RunnerRoot,
    env: &Env,
    listener: &Listener,
    phase: &Mutex<Phase>,
    ephemeral: bool,
    once: bool,
) -> i32 {
    let diag = &listener.diag;
    let agent_id = listener.settings.agent_id;
    let mut backoff = Duration::from_secs(1);
    let mut reported_error = false;
    loop {
        if sys::stop_signal().is_some() {
            listener.go_offline();
            return EXIT_OK;
        }
        let job = match listener
            .client
            .poll(&listener.credential, agent_id, POLL_WAIT)
        {
            Ok(None) => {
                backoff = Duration::from_secs(1);
                continue;
            }
            Ok(Some(job)) => job,
            Err(e) if matches!(e.status(), Some(401 | 404)) => {
                diag.error(&format!("poll refused: {e}"));
                eprintln!(
                    "{}: Runner registration has been deleted from the server, please re-configure. ({e})",
                    timestamp()
                );
                return EXIT_TERMINATED;
            }
            Err(e) => {
                diag.error(&format!("poll failed: {e}; retrying in {backoff:?}"));
                if !reported_error {
                    eprintln!(
                        "{}: Runner connect error: {e}. Retrying until reconnected.",
                        timestamp()
                    );
                    reported_error = true;
                }
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && sys::stop_signal().is_none() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if reported_error {
            println!("{}: Runner reconnected.", timestamp());
            reported_error = false;
        }
        backoff = Duration::from_secs(1);
        set_phase(phase, Phase::Busy);
        println!("{}: Running job: {}", timestamp(), job.job_id);
        diag.info(&format!(
            "running job {} (run {}, labels {:?})",
            job.job_id, job.run_id, job.labels
        ));
        let ctx = job::JobContext {
            root: root.path(),
            work_folder: root.path().join(&listener.settings.work_folder),
            runner_name: &listener.settings.agent_name,
            env,
        };
        let completion = job::run_job(&job, &ctx, &|| sys::stop_signal().is_some());
        let result = match completion.conclusion {
            Conclusion::Success => "Succeeded",
            Conclusion::Failure => "Failed",
        };
        diag.info(&format!(
            "job {} finished: exit code {}, {result}",
            job.job_id, completion.exit_code
        ));
        let reported = with_retries(6, diag, "reporting the job", || {
            listener
                .client
                .complete(&listener.credential, job.job_id, &completion)
        });
        if let Err(e) = reported {
            diag.error(&format!("reporting job {} failed: {e}", job.job_id));
            eprintln!("{}: Reporting job {} failed: {e}", timestamp(), job.job_id);
        }
        println!(
            "{}: Job {} completed with result: {result}",
            timestamp(),
            job.job_id
        );
        if ephemeral || once {
            return EXIT_OK;
        }
        if sys::stop_signal().is_some() {
            listener.go_offline();
            return EXIT_OK;
        }
        set_phase(phase, Phase::Idle);
    }
}
