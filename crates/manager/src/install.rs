//! What goes into an instance, and the steps that put it there.
//!
//! The file contents are pure functions of the settings (snapshot tested); [`install_runner`] pushes
//! them through an [`InstanceProvider`]. Secrets (registration token, JIT config, one-time policy
//! token) travel only in 0600 files that the consuming script reads into its environment and
//! deletes: never a command line, never instance config, never a log line.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::model::{GitHubPath, ProxySettings, RunnerName, Secret};
use crate::provider::{
    ExecOutput, ExecPurpose, ExecRequest, FilePush, InstanceProvider, ProviderError,
};

pub use crate::guest::{
    post_job_script, pre_job_script, shell_quote, start_script, BUNDLE_PATH, EXIT_FILE,
    INSTALLED_FILE, META_DIR, PID_FILE, POST_JOB_FILE, PRE_JOB_FILE, PROBE_FINISHED,
    PROBE_NOT_STARTED, REGISTER_SCRIPT, RUNNER_DIR, SCRIPT_DIR, SETUP_PID_FILE,
};
use crate::guest::{
    SetupMode, DEFAULT_PATH, DOCKER_CLIENT_CONFIG, DOCKER_DROPIN, JIT_FILE, POLICY_TOKEN_FILE,
    STAGED_MANIFEST, STAGED_TARBALL, TOKEN_FILE,
};

/// A failed install step; the message never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("instance {name} was not ready within {waited:?}")]
    NotReady { name: String, waited: Duration },
    /// The source says why; render the chain with [`crate::provider::Chain`].
    #[error("{step} in {name}")]
    Provider {
        name: String,
        step: &'static str,
        #[source]
        source: ProviderError,
    },
    #[error("{step} in {name} exited with {exit_code}: {stderr}")]
    Command {
        name: String,
        step: &'static str,
        exit_code: i32,
        stderr: String,
    },
    #[error("runner in {name} did not start: {detail}")]
    NotStarted { name: String, detail: String },
}

/// Settings shared by every runner of a manager.
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// `<web_url>/<path>`, what `config.sh --url` gets.
    pub registration_url: String,
    pub path: GitHubPath,
    /// `<app_name>,<image>[,extra...]`.
    pub labels: Vec<String>,
    /// Proxies for the runner, `no_proxy` already extended.
    pub proxies: ProxySettings,
    /// The policy service as runners reach it (`http://10.1.2.1:8080`), when configured.
    pub policy_url: Option<String>,
    /// How long to wait for exec to work after start.
    pub ready_timeout: Duration,
}

/// The secrets one runner needs.
#[derive(Debug, Clone)]
pub enum RegistrationSecret {
    Token(Secret),
    Jit(Secret),
}

/// The runner's `.env` (`RUNNER_ALLOW_RUNASROOT=1` is appended where the runner runs as root).
pub fn runner_env(settings: &InstallSettings) -> String {
    let mut out = format!(
        "PATH={DEFAULT_PATH}\nLANG=C.UTF-8\n\
         ACTIONS_RUNNER_HOOK_JOB_STARTED={SCRIPT_DIR}/pre-job.sh\n\
         ACTIONS_RUNNER_HOOK_JOB_COMPLETED={SCRIPT_DIR}/post-job.sh\n"
    );
    for (k, v) in settings.proxies.env_pairs() {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// `/etc/environment`.
pub fn etc_environment(proxies: &ProxySettings) -> String {
    let mut out = format!("PATH=\"{DEFAULT_PATH}\"\n");
    for (k, v) in proxies.env_pairs() {
        out.push_str(&format!("{k}=\"{v}\"\n"));
    }
    out
}

/// The systemd drop-in for dockerd.
pub fn docker_service_dropin(proxies: &ProxySettings) -> String {
    let mut out = String::from("[Service]\n");
    for (k, v) in [
        ("HTTP_PROXY", proxies.expose_http()),
        ("HTTPS_PROXY", proxies.expose_https()),
        ("NO_PROXY", proxies.no_proxy.as_deref()),
    ] {
        if let Some(v) = v {
            out.push_str(&format!("Environment=\"{k}={v}\"\n"));
        }
    }
    out
}

/// `~/.docker/config.json` for the docker client (proxies passed into containers).
pub fn docker_client_config(proxies: &ProxySettings) -> String {
    let mut proxy = serde_json::Map::new();
    for (k, v) in [
        ("httpProxy", proxies.expose_http()),
        ("httpsProxy", proxies.expose_https()),
        ("noProxy", proxies.no_proxy.as_deref()),
    ] {
        if let Some(v) = v {
            proxy.insert(k.into(), serde_json::Value::String(v.to_owned()));
        }
    }
    let config = serde_json::json!({ "proxies": { "default": proxy } });
    format!("{config:#}\n")
}

/// The `config.sh` script run in token mode; the token comes from its 0600 file (`--token-file`
/// when the runner supports it, else `ACTIONS_RUNNER_INPUT_TOKEN`), deleted once used.
pub fn configure_script(settings: &InstallSettings, name: &RunnerName) -> String {
    crate::guest::set_arguments(&configure_args(settings, name))
}

/// `config.sh`'s arguments for a token-mode runner (never the token itself).
pub fn configure_args(settings: &InstallSettings, name: &RunnerName) -> Vec<String> {
    let mut args = vec![
        "--url".to_owned(),
        settings.registration_url.clone(),
        "--name".to_owned(),
        name.to_string(),
        "--labels".to_owned(),
        settings.labels.join(","),
        "--ephemeral".to_owned(),
        "--unattended".to_owned(),
    ];
    if let Some(group) = settings.path.group() {
        args.push("--runnergroup".into());
        args.push(group.to_owned());
    }
    args
}

/// Growing pauses from 100 ms up to 2 s, for `timeout` in all: how a new instance is retried
/// until it can take calls (a container's init, or a VM's agent, may need a moment after start).
fn until_ready(timeout: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .with_total_delay(Some(timeout))
}

/// Pushes the bundle, retrying while the instance cannot take files yet (a VM before its agent).
async fn push_bundle(
    provider: &dyn InstanceProvider,
    name: &str,
    bundle: Vec<u8>,
    timeout: Duration,
) -> Result<(), InstallError> {
    let file = FilePush {
        path: BUNDLE_PATH.to_owned(),
        content: bundle,
        mode: 0o600,
        uid: 0,
        gid: 0,
    };
    (|| provider.push_file(name, &file))
        .retry(until_ready(timeout))
        .when(|e| !matches!(e, ProviderError::NotFound(_)))
        .await
        .map_err(|source| InstallError::Provider {
            name: name.to_owned(),
            step: "pushing the install bundle",
            source,
        })
}

/// Runs the setup exec with the bundle on its standard input, repeating it only while the
/// instance is not ready for it (then nothing ran).
async fn exec_when_ready(
    provider: &dyn InstanceProvider,
    name: &str,
    setup: &ExecRequest,
    timeout: Duration,
) -> Result<ExecOutput, ProviderError> {
    (|| provider.exec(name, setup))
        .retry(until_ready(timeout))
        .when(|e| matches!(e, ProviderError::NotReady { .. }))
        .await
}

/// The other files inside the stage, at their final path below this directory.
pub const STAGED_FILES: &str = "files";
/// A bundle path starting with this is relative to the runner user's home.
const HOME: &str = "~/";

/// One file of the install bundle, at its final path (absolute, or `~/` for the user's home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
    /// Owned by the runner's user (else root).
    pub runner_owned: bool,
}

impl BundleFile {
    fn new(
        path: impl Into<String>,
        content: impl Into<Vec<u8>>,
        mode: u32,
        runner_owned: bool,
    ) -> Self {
        Self {
            path: path.into(),
            content: content.into(),
            mode,
            runner_owned,
        }
    }

    /// One of the manager's scripts, `name` in [`SCRIPT_DIR`]: executable, owned by root.
    fn script(name: &str, content: String) -> Self {
        Self::new(format!("{SCRIPT_DIR}/{name}"), content, 0o755, false)
    }

    fn is_docker(&self) -> bool {
        self.path == DOCKER_DROPIN || self.path == DOCKER_CLIENT_CONFIG
    }

    /// Its path inside the stage.
    fn staged(&self) -> String {
        let path = self.path.replacen(HOME, "home/", 1);
        format!("{STAGED_FILES}/{}", path.trim_start_matches('/'))
    }
}

/// Every file a runner needs besides the runner tarball: the runner's `.env`,
/// `/etc/environment`, the manager's scripts, docker's proxy settings (when proxies are set;
/// installed only where docker is), the one-time policy token and the registration secret (0600,
/// the runner's user). Independent of the instance: the setup script finds the user and docker.
pub fn install_files(
    settings: &InstallSettings,
    name: &RunnerName,
    registration: &RegistrationSecret,
    policy_token: Option<&Secret>,
) -> Vec<BundleFile> {
    let mut files = vec![
        BundleFile::new(
            format!("{RUNNER_DIR}/.env"),
            runner_env(settings),
            0o644,
            true,
        ),
        BundleFile::new(
            "/etc/environment",
            etc_environment(&settings.proxies),
            0o644,
            false,
        ),
        BundleFile::script("start.sh", start_script()),
        BundleFile::script("pre-job.sh", pre_job_script(settings.policy_url.as_deref())),
        BundleFile::script("post-job.sh", post_job_script()),
        BundleFile::new(
            REGISTER_SCRIPT,
            register_script(settings, name, registration, settings.ready_timeout),
            0o755,
            false,
        ),
    ];
    if !settings.proxies.is_empty() {
        files.push(BundleFile::new(
            DOCKER_DROPIN,
            docker_service_dropin(&settings.proxies),
            0o644,
            false,
        ));
        files.push(BundleFile::new(
            DOCKER_CLIENT_CONFIG,
            docker_client_config(&settings.proxies),
            0o644,
            true,
        ));
    }
    if let Some(token) = policy_token {
        files.push(BundleFile::new(
            POLICY_TOKEN_FILE,
            token.expose(),
            0o600,
            true,
        ));
    }
    files.push(match registration {
        RegistrationSecret::Token(token) => {
            BundleFile::new(TOKEN_FILE, token.expose(), 0o600, true)
        }
        RegistrationSecret::Jit(config) => BundleFile::new(JIT_FILE, config.expose(), 0o600, true),
    });
    files
}

/// The bundle pushed in one call: an uncompressed tar of the runner tarball and
/// [`install_files`] under their stage paths, with their modes (owned by root until moved).
pub fn build_bundle(tarball: &[u8], files: &[BundleFile]) -> std::io::Result<Vec<u8>> {
    build_bundle_of(Some(tarball), files)
}

/// [`build_bundle`], without the runner tarball when `tarball` is `None` (a launch from a
/// baked image, where the runner is in place already).
pub fn build_bundle_of(tarball: Option<&[u8]>, files: &[BundleFile]) -> std::io::Result<Vec<u8>> {
    let capacity = tarball.map_or(0, <[u8]>::len) + 64 * 1024;
    let mut out = tar::Builder::new(Vec::with_capacity(capacity));
    let mut append = |path: &str, content: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, path, content)
    };
    if let Some(tarball) = tarball {
        append(STAGED_TARBALL, tarball, 0o600)?;
    }
    append(STAGED_MANIFEST, manifest(files).as_bytes(), 0o600)?;
    for f in files {
        append(&f.staged(), &f.content, f.mode)?;
    }
    out.into_inner()
}

/// The bundle's manifest for `guest/setup.sh`: `KIND OWNER STAGED DESTINATION` per file.
pub fn manifest(files: &[BundleFile]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "{} {} {} {}\n",
                if f.is_docker() { "docker" } else { "plain" },
                if f.runner_owned { "runner" } else { "root" },
                f.staged(),
                f.path
            )
        })
        .collect()
}

/// Printed by [`setup_script`] once the runner is unpacked.
const UNPACKED: &str = "unpacked";
/// Printed by [`register_script`] when `config.sh` fails, before its exit code.
const CONFIG_FAILED: &str = "config-failed";

/// How the bundle reaches [`setup_script`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleSource {
    /// On the setup exec's standard input: one round trip in all.
    Stdin,
    /// Pushed to [`BUNDLE_PATH`] before the setup exec (providers that cannot feed stdin).
    Pushed,
}

/// The one exec, as root (`guest/setup.sh`): takes the bundle (from stdin, or where it was
/// pushed), unpacks it, extracts the runner, picks the runner's user, moves each file of the
/// bundle's manifest into place (docker's only where docker is), hands the runner's files to its
/// user, then runs [`REGISTER_SCRIPT`] as that user. The bundle and the stage (they hold secrets)
/// are removed whatever happens. The same for every instance: nothing is asked of it beforehand.
pub fn setup_script(source: BundleSource) -> String {
    crate::guest::setup_script(source == BundleSource::Stdin)
}

/// The files an image is baked with: the runner's static scripts (everything else is a
/// runner's own, and may hold a secret: it travels at launch).
pub fn bake_files() -> Vec<BundleFile> {
    vec![
        BundleFile::script("start.sh", start_script()),
        BundleFile::script("post-job.sh", post_job_script()),
    ]
}

/// Printed by the setup script when an image's instance is ready to be published.
const BAKED: &str = "baked";

/// Bakes the runner into a started instance that is to become an image: the runner unpacked,
/// its user's files and the static scripts in place, nothing registered, no secret.
pub async fn bake_runner(
    provider: &dyn InstanceProvider,
    name: &str,
    settings: &InstallSettings,
    tarball: &[u8],
) -> Result<(), InstallError> {
    let out = run_setup(
        provider,
        name,
        Some(tarball),
        &bake_files(),
        SetupMode::Bake,
        settings,
    )
    .await?;
    if out.exit_code == 0 && out.stdout.lines().last() == Some(BAKED) {
        return Ok(());
    }
    Err(InstallError::Command {
        name: name.to_owned(),
        step: "baking the runner into the image",
        exit_code: out.exit_code,
        stderr: tail(&out.stderr, 400),
    })
}

/// The setup exec (see [`setup_script`]) in `mode`, with the bundle of `tarball` and `files`
/// on its standard input or pushed first.
async fn run_setup(
    provider: &dyn InstanceProvider,
    name: &str,
    tarball: Option<&[u8]>,
    files: &[BundleFile],
    mode: SetupMode,
    settings: &InstallSettings,
) -> Result<ExecOutput, InstallError> {
    let bundle = build_bundle_of(tarball, files).map_err(|e| InstallError::Provider {
        name: name.to_owned(),
        step: "building the install bundle",
        source: ProviderError::caused_by("tar", e),
    })?;
    let limit = Duration::from_secs(300) + settings.ready_timeout;
    let script = |stdin| crate::guest::setup_script_for(stdin, mode);
    let purpose = if mode == SetupMode::Bake {
        ExecPurpose::Bake
    } else {
        ExecPurpose::Setup
    };
    if provider.streams_stdin() {
        let setup = ExecRequest::shell(script(true), limit)
            .with_stdin(bundle)
            .for_purpose(purpose);
        exec_when_ready(provider, name, &setup, settings.ready_timeout).await
    } else {
        push_bundle(provider, name, bundle, settings.ready_timeout).await?;
        let setup = ExecRequest::shell(script(false), limit).for_purpose(purpose);
        provider.exec(name, &setup).await
    }
    .map_err(|source| InstallError::Provider {
        name: name.to_owned(),
        step: "installing the runner",
        source,
    })
}

/// [`REGISTER_SCRIPT`] (`guest/register-and-start.sh`): in token mode waits for the network
/// and registers, then starts `start.sh` detached (it waits for the network before `run.sh`) and
/// waits in the instance, in 10 ms steps up to `wait`, until `run.sh` is alive. A launch from a
/// baked image reads the runner's options from the image's record instead of asking `--help`.
/// The last line printed is `alive`, `exited CODE` (then the log's tail), `waiting`, or
/// `config-failed CODE`.
pub fn register_script(
    settings: &InstallSettings,
    name: &RunnerName,
    registration: &RegistrationSecret,
    wait: Duration,
) -> String {
    let token = matches!(registration, RegistrationSecret::Token(_));
    crate::guest::register_script(&configure_args(settings, name), token, wait)
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().rev().nth(max) {
        Some((i, _)) => format!("...{}", &s[i..]),
        None => s.to_owned(),
    }
}

/// Installs, registers and starts a runner in a started instance: one exec as root with the
/// bundle on its standard input (repeated only while the instance is not ready for it), or,
/// where the provider cannot feed stdin, a push of the bundle and then that exec. `tarball`
/// `None`: the instance comes from a baked image, the runner is in place; only the runner's own
/// files travel.
pub async fn install_runner(
    provider: &dyn InstanceProvider,
    name: &RunnerName,
    settings: &InstallSettings,
    tarball: Option<&[u8]>,
    registration: &RegistrationSecret,
    policy_token: Option<&Secret>,
) -> Result<(), InstallError> {
    let files = install_files(settings, name, registration, policy_token);
    let mode = if tarball.is_some() {
        SetupMode::Install
    } else {
        SetupMode::Baked
    };
    let out = run_setup(provider, name.as_str(), tarball, &files, mode, settings).await?;
    let stdout = out.stdout.trim();
    if out.exit_code != 0 {
        let step = if stdout.lines().any(|l| l.starts_with(CONFIG_FAILED)) {
            "registering the runner (config.sh)"
        } else if stdout.lines().any(|l| l == UNPACKED) {
            "starting the runner"
        } else {
            "unpacking the runner"
        };
        return Err(InstallError::Command {
            name: name.to_string(),
            step,
            exit_code: out.exit_code,
            stderr: tail(&out.stderr, 400),
        });
    }
    if stdout.lines().last() == Some("alive") {
        return Ok(());
    }
    let detail = match stdout.find("exited") {
        Some(at) => tail(&stdout[at..], 400),
        None => format!("no live run.sh after {:?}", settings.ready_timeout),
    };
    Err(InstallError::NotStarted {
        name: name.to_string(),
        detail,
    })
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
