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
/// The pid of the running setup script.
pub const SETUP_PID_FILE: &str = "/var/lib/runner-manager/setup.pid";
/// The registration token (token mode), 0600, read and deleted by `config.sh`'s wrapper.
pub const TOKEN_FILE: &str = "/opt/actions-runner/.registration-token";
/// The JIT config, 0600, read and deleted by the runner (or `start.sh`).
pub const JIT_FILE: &str = "/opt/actions-runner/.jitconfig";
/// The one-time policy token's file name in [`META_DIR`].
pub const POLICY_TOKEN_NAME: &str = "policy-token";
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

/// A script file installed in the instance: shebang, preamble, then the file's body.
fn installed(body: &str) -> String {
    format!("#!/bin/sh\n{}{body}", preamble(body))
}

/// A script run through exec: the preamble then the body, as `sh -c`.
fn exec(body: &str, purpose: ExecPurpose, timeout: Duration) -> ExecRequest {
    let mut request = ExecRequest::shell(format!("{}{body}", preamble(body)), timeout);
    request.purpose = purpose;
    request
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

/// `start.sh`, installed at [`START_SCRIPT`].
pub fn start_script() -> String {
    installed(START_SH)
}

/// `post-job.sh`, the job-completed hook, installed at [`POST_JOB_SCRIPT`].
pub fn post_job_script() -> String {
    installed(POST_JOB_SH)
}

/// Every script kept as a file here, with its name, for the shell tests.
pub fn all_scripts() -> Vec<(&'static str, String)> {
    vec![
        ("probe.sh", installed(PROBE_SH)),
        ("stop.sh", installed(STOP_SH)),
        ("quiesce.sh", installed(QUIESCE_SH)),
        ("resume.sh", installed(RESUME_SH)),
        ("start.sh", start_script()),
        ("post-job.sh", post_job_script()),
    ]
}

#[cfg(test)]
#[path = "tests.rs"]
pub(crate) mod tests;
