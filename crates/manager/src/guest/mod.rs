//! Everything the manager knows about the inside of an instance: every path it uses there, and
//! the shell scripts that run there.
//!
//! The scripts are real `.sh` files beside this module, written for POSIX `sh` (they run under
//! dash, bash and busybox sh, and pass `shellcheck --shell=sh`). They take their parameters from a
//! preamble of variable assignments ([`preamble`]) placed before their body, never from text
//! spliced into the script. Scripts run by the manager through exec are [`ExecRequest`]s with a
//! [`ExecPurpose`], so a provider never has to recognise a script by its text.

use std::time::Duration;

use crate::provider::{ExecPurpose, ExecRequest};

/// Where the runner tarball is extracted.
pub const RUNNER_DIR: &str = "/opt/actions-runner";
/// The manager's scripts inside the instance.
pub const SCRIPT_DIR: &str = "/opt/runner-manager";
/// Job metadata written by the hooks and pulled by the manager before deletion.
pub const META_DIR: &str = "/var/lib/runner-manager";
/// The pid of the `run.sh` started by `start.sh`: the health probe checks it.
pub const PID_FILE: &str = "/var/lib/runner-manager/runner.pid";
/// The process group of `start.sh` (its own session): the whole runner.
pub const PGID_FILE: &str = "/var/lib/runner-manager/runner.pgid";
/// Written by `start.sh` when `run.sh` exits.
pub const EXIT_FILE: &str = "/var/lib/runner-manager/runner.exit";
/// `run.sh`'s output.
pub const RUNNER_LOG: &str = "/var/lib/runner-manager/runner.log";
/// Written by the job-started hook.
pub const PRE_JOB_FILE: &str = "/var/lib/runner-manager/pre-job.json";
/// Written by the job-completed hook.
pub const POST_JOB_FILE: &str = "/var/lib/runner-manager/post-job.json";
/// Written by the job-started hook when the policy service refused the job.
pub const POLICY_REFUSED_FILE: &str = "/var/lib/runner-manager/policy-refused";
/// When the runner was installed (seconds since the epoch).
pub const INSTALLED_FILE: &str = "/var/lib/runner-manager/installed-at";
/// Which secret-file options the baked runner takes (`config.sh --token-file`,
/// `run.sh --jitconfig-file`), one a line: written when an image is baked, so that launches from
/// it skip the runner's `--help` probes (`guest/runner-caps.sh`); removed by a plain install.
pub const CAPS_FILE: &str = "/var/lib/runner-manager/runner-caps";
/// The pid of the running setup script.
pub const SETUP_PID_FILE: &str = "/var/lib/runner-manager/setup.pid";
/// The registration token (token mode), 0600, read and deleted by `config.sh`'s wrapper.
pub const TOKEN_FILE: &str = "/opt/actions-runner/.registration-token";
/// The JIT config, 0600, read and deleted by the runner (or `start.sh`).
pub const JIT_FILE: &str = "/opt/actions-runner/.jitconfig";
/// The one-time policy token, 0600, read and deleted by the job-started hook.
pub const POLICY_TOKEN_FILE: &str = "/var/lib/runner-manager/policy-token";
/// The job-started hook.
pub const PRE_JOB_SCRIPT: &str = "/opt/runner-manager/pre-job.sh";
/// The job-completed hook.
pub const POST_JOB_SCRIPT: &str = "/opt/runner-manager/post-job.sh";
/// Starts `run.sh` detached and records it.
pub const START_SCRIPT: &str = "/opt/runner-manager/start.sh";
/// Registers (token mode) and starts the runner, run as the runner's user.
pub const REGISTER_SCRIPT: &str = "/opt/runner-manager/register-and-start.sh";
/// The install bundle's path inside the instance while it is pushed (0600, root).
pub const BUNDLE_PATH: &str = "/tmp/runner-manager-install.tar";
/// Where the setup script unpacks the bundle before moving its files into place.
pub const STAGE_DIR: &str = "/tmp/runner-manager-install";
/// The systemd drop-in giving dockerd the proxies.
pub const DOCKER_DROPIN: &str = "/etc/systemd/system/docker.service.d/http-proxy.conf";
/// The docker client's config, in the runner user's home.
pub const DOCKER_CLIENT_CONFIG: &str = "~/.docker/config.json";
/// The PATH given to the runner.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The probe's exit code for a runner that finished normally.
pub const PROBE_FINISHED: i32 = 3;
/// The probe's exit code for a runner not started yet while its setup script runs.
pub const PROBE_NOT_STARTED: i32 = 4;
/// [`quiesce`]'s exit code when a job runs in the instance.
pub const JOB_RUNNING: i32 = 10;

const PROBE_SH: &str = include_str!("probe.sh");
const STOP_SH: &str = include_str!("stop.sh");
const QUIESCE_SH: &str = include_str!("quiesce.sh");
const RESUME_SH: &str = include_str!("resume.sh");
const START_SH: &str = include_str!("start.sh");
const POST_JOB_SH: &str = include_str!("post-job.sh");
const PRE_JOB_SH: &str = include_str!("pre-job.sh");
const NETWORK_WAIT_SH: &str = include_str!("network-wait.sh");
const RUNNER_CAPS_SH: &str = include_str!("runner-caps.sh");
const REGISTER_SH: &str = include_str!("register-and-start.sh");
const PICK_USER_SH: &str = include_str!("pick-user.sh");
const SETUP_SH: &str = include_str!("setup.sh");

/// The runner tarball inside the stage (`setup.sh` extracts it from there).
pub const STAGED_TARBALL: &str = "actions-runner.tar.gz";
/// The list of the stage's files and where each goes (see `setup.sh`).
pub const STAGED_MANIFEST: &str = "manifest";

/// The variables a script body reads, of the paths above, as `RM_*` assignments.
pub fn preamble(body: &str) -> String {
    preamble_at("", body)
}

/// [`preamble`] with every path below `root` (tests run the scripts on a scratch root).
fn preamble_at(root: &str, body: &str) -> String {
    [
        ("RM_RUNNER_DIR", RUNNER_DIR),
        ("RM_SCRIPT_DIR", SCRIPT_DIR),
        ("RM_META_DIR", META_DIR),
        ("RM_PID_FILE", PID_FILE),
        ("RM_EXIT_FILE", EXIT_FILE),
        ("RM_SETUP_PID_FILE", SETUP_PID_FILE),
        ("RM_JIT_FILE", JIT_FILE),
        ("RM_TOKEN_FILE", TOKEN_FILE),
        ("RM_PROC", "/proc"),
        ("RM_PASSWD", "/etc/passwd"),
        ("RM_ROOT", ""),
        ("RM_INSTALLED_FILE", INSTALLED_FILE),
        ("RM_BUNDLE_PATH", BUNDLE_PATH),
        ("RM_STAGE_DIR", STAGE_DIR),
        ("RM_REGISTER_SCRIPT", REGISTER_SCRIPT),
        ("RM_CAPS_FILE", CAPS_FILE),
    ]
    .iter()
    .filter(|(k, _)| reads(body, k))
    .map(|(k, v)| format!("{k}={root}{v}\n"))
    .collect()
}

/// Whether `body` reads the variable `name` (`$NAME` not followed by more of a name).
fn reads(body: &str, name: &str) -> bool {
    let word = format!("${name}");
    body.match_indices(&word).any(|(at, _)| {
        !body[at + word.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The one way a script is put together: the paths its body reads (below `root`, empty but in
/// tests), then its parameters as shell-quoted assignments, then the body.
fn assemble(root: &str, body: &str, parameters: &[(&str, String)]) -> String {
    let mut out = preamble_at(root, body);
    for (name, value) in parameters {
        out.push_str(&format!("{name}={}\n", shell_quote(value)));
    }
    out.push_str(body);
    out
}

/// A script file installed in the instance: a shebang, then [`assemble`]d.
fn installed(body: &str, parameters: &[(&str, String)]) -> String {
    format!("#!/bin/sh\n{}", assemble("", body, parameters))
}

/// Single-quotes a value for sh (bare when it is made of safe characters only).
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@".contains(c))
    {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// A script run through exec, as `sh -c`.
fn exec(body: &str, purpose: ExecPurpose, timeout: Duration) -> ExecRequest {
    ExecRequest::shell(assemble("", body, &[]), timeout).for_purpose(purpose)
}

/// The health probe (exit codes: 0 alive, [`PROBE_FINISHED`], [`PROBE_NOT_STARTED`], 1 dead).
pub fn probe() -> ExecRequest {
    exec(PROBE_SH, ExecPurpose::Probe, Duration::from_secs(15))
}

/// Asks the runner to stop (SIGTERM to its process group): it cancels its job and reports it.
pub fn stop() -> ExecRequest {
    exec(STOP_SH, ExecPurpose::Stop, Duration::from_secs(15))
}

/// Before a healthy runner is deregistered: [`JOB_RUNNING`] when a job runs in the instance
/// (nothing changed), else 0 with the runner frozen so that it cannot take a job meanwhile.
pub fn quiesce() -> ExecRequest {
    exec(QUIESCE_SH, ExecPurpose::Quiesce, Duration::from_secs(15))
}

/// Thaws a runner [`quiesce`] froze, when its deregistration did not happen.
pub fn resume() -> ExecRequest {
    exec(RESUME_SH, ExecPurpose::Resume, Duration::from_secs(15))
}

/// `start.sh`, installed at [`START_SCRIPT`]: waits for the network, then runs the runner.
pub fn start_script() -> String {
    start_script_at("")
}

/// [`start_script`] with every path below `root` (tests use a scratch root).
pub(crate) fn start_script_at(root: &str) -> String {
    format!(
        "#!/bin/sh\n{}",
        assemble(
            root,
            &format!("{RUNNER_CAPS_SH}{NETWORK_WAIT_SH}{START_SH}"),
            &[]
        )
    )
}

/// `post-job.sh`, the job-completed hook, installed at [`POST_JOB_SCRIPT`].
pub fn post_job_script() -> String {
    installed(POST_JOB_SH, &[])
}

/// `pre-job.sh`, the job-started hook, installed at [`PRE_JOB_SCRIPT`]: records the job's
/// metadata, then, with a policy service (as runners reach it, e.g. `http://10.1.2.1:8080`), asks
/// it whether the job may run: with curl, or over nc for a plain-HTTP service.
pub fn pre_job_script(policy_url: Option<&str>) -> String {
    let url = policy_url.unwrap_or_default().trim_end_matches('/');
    let plain_http = policy_url
        .and_then(|u| reqwest::Url::parse(u).ok())
        .filter(|u| u.scheme() == "http")
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            let port = u.port_or_known_default().unwrap_or(80);
            Some((host, port, u.path().trim_end_matches('/').to_owned()))
        });
    let (host, port, path) = plain_http
        .map(|(h, p, path)| (h, p.to_string(), path))
        .unwrap_or_default();
    installed(
        PRE_JOB_SH,
        &[
            ("RM_POLICY_URL", url.to_owned()),
            ("RM_POLICY_HOST", host),
            ("RM_POLICY_PORT", port),
            ("RM_POLICY_PATH", path),
        ],
    )
}

/// The setup exec's script (`guest/setup.sh` after `guest/pick-user.sh`): `stdin` when the
/// bundle comes on the exec's standard input, else it was pushed to [`BUNDLE_PATH`].
pub fn setup_script(stdin: bool) -> String {
    setup_script_at("", stdin, SetupMode::Install)
}

/// What `setup.sh` does (its `RM_SETUP_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupMode {
    /// Unpack the runner, put the files in place, register and start.
    Install,
    /// Build an image: unpack the runner and the static files; no registration.
    Bake,
    /// Launch from a baked image: put the runner's own files in place, register and start.
    Baked,
}

impl SetupMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Install => "install",
            Self::Bake => "bake",
            Self::Baked => "baked",
        }
    }
}

/// [`setup_script`] in `mode`.
pub fn setup_script_for(stdin: bool, mode: SetupMode) -> String {
    setup_script_at("", stdin, mode)
}

/// [`setup_script`] with every path below `root` (tests use a scratch root).
pub(crate) fn setup_script_at(root: &str, stdin: bool, mode: SetupMode) -> String {
    let source = if stdin { "stdin" } else { "pushed" };
    assemble(
        root,
        &format!("{PICK_USER_SH}{RUNNER_CAPS_SH}{SETUP_SH}"),
        &[
            ("RM_BUNDLE_SOURCE", source.to_owned()),
            ("RM_SETUP_MODE", mode.as_str().to_owned()),
        ],
    )
}

/// `pick-user.sh` alone with the passwd file below `root`, then the pick printed (tests).
#[cfg(test)]
pub(crate) fn pick_user_at(root: &str) -> String {
    let printed = "echo \"$RM_USER $RM_UID $RM_GID $RM_HOME\"\n";
    format!("{}{printed}", assemble(root, PICK_USER_SH, &[]))
}

/// `config.sh`'s arguments as the script's positional parameters: `set -- ARG...`.
pub fn set_arguments(args: &[String]) -> String {
    let words: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    format!("set -- {}\n", words.join(" "))
}

/// `register-and-start.sh`, installed at [`REGISTER_SCRIPT`] and run as the runner's user: when
/// `token` is set, waits for the network and registers with `config.sh` and `config_args` (the
/// token in [`TOKEN_FILE`]; JIT runners are registered already, and `start.sh` waits for the
/// network), starts `start.sh` detached and waits up to `wait`, in 10 ms steps, for `run.sh` to be
/// alive.
pub fn register_script(config_args: &[String], token: bool, wait: Duration) -> String {
    register_script_at("", config_args, token, wait)
}

/// [`register_script`] with every path below `root` (tests use a scratch root).
pub(crate) fn register_script_at(
    root: &str,
    config_args: &[String],
    token: bool,
    wait: Duration,
) -> String {
    let arguments = set_arguments(if token { config_args } else { &[] });
    let steps = (wait.as_millis() / 10).max(1);
    let body = format!("{arguments}{RUNNER_CAPS_SH}{NETWORK_WAIT_SH}{REGISTER_SH}");
    format!(
        "#!/bin/sh\n{}",
        assemble(
            root,
            &body,
            &[
                (
                    "RM_REGISTER",
                    if token { "token" } else { "jit" }.to_owned(),
                ),
                ("RM_WAIT_STEPS", steps.to_string()),
            ],
        )
    )
}

/// `network-wait.sh` alone, with every path below `root` and at most `steps` steps, then
/// `network_wait; echo $i` (tests).
#[cfg(test)]
pub(crate) fn network_wait_at(root: &str, steps: u32) -> String {
    let parameters = [("RM_NETWORK_STEPS", steps.to_string())];
    format!(
        "{}network_wait\necho \"$i\"\n",
        assemble(root, NETWORK_WAIT_SH, &parameters)
    )
}

/// `runner-caps.sh` with every path below `root`, then `runner_has SCRIPT OPTION` run in `dir`
/// (tests).
#[cfg(test)]
pub(crate) fn runner_has_at(root: &str, dir: &str, script: &str, option: &str) -> String {
    format!(
        "{}cd {} || exit 9\nrunner_has {script} {option}\n",
        assemble(root, RUNNER_CAPS_SH, &[]),
        shell_quote(dir)
    )
}

/// Every script kept as a file here, with its name, for the shell tests.
pub fn all_scripts() -> Vec<(&'static str, String)> {
    vec![
        ("probe.sh", installed(PROBE_SH, &[])),
        ("stop.sh", installed(STOP_SH, &[])),
        ("quiesce.sh", installed(QUIESCE_SH, &[])),
        ("resume.sh", installed(RESUME_SH, &[])),
        ("start.sh", start_script()),
        ("post-job.sh", post_job_script()),
        ("pre-job.sh", pre_job_script(None)),
        (
            "pre-job.sh (policy)",
            pre_job_script(Some("http://10.1.2.1:8080/p/")),
        ),
        (
            "pre-job.sh (https policy)",
            pre_job_script(Some("https://policy")),
        ),
    ]
}

#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "pre_job_tests.rs"]
mod pre_job_tests;
