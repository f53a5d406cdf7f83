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
    post_job_script, start_script, BUNDLE_PATH, EXIT_FILE, INSTALLED_FILE, META_DIR, PID_FILE,
    POST_JOB_FILE, PRE_JOB_FILE, PROBE_FINISHED, PROBE_NOT_STARTED, REGISTER_SCRIPT, RUNNER_DIR,
    SCRIPT_DIR, SETUP_PID_FILE,
};
use crate::guest::{
    DEFAULT_PATH, DOCKER_CLIENT_CONFIG, DOCKER_DROPIN, JIT_FILE, POLICY_TOKEN_FILE,
    POLICY_TOKEN_NAME, STAGE_DIR, TOKEN_FILE,
};

/// A failed install step; the message never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("instance {name} was not ready within {waited:?}")]
    NotReady { name: String, waited: Duration },
    #[error("{step} in {name}: {source}")]
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

/// `pre-job.sh`, the job-started hook: records job metadata for the manager's metrics, then (when
/// a policy service is configured) asks it whether the job may run, with curl (the token goes in
/// on stdin) or, without curl, over `nc` (see [`policy_fallback`]). Runs under busybox sh.
pub fn pre_job_script(policy_url: Option<&str>) -> String {
    let mut out = format!(
        r#"#!/bin/sh
# Job-started hook installed by runner-manager.
META="${{RUNNER_MANAGER_META:-{META_DIR}}}"
esc() {{ printf '%s' "$1" | tr -d '\r\n' | sed 's/\\/\\\\/g; s/"/\\"/g'; }}
printf '{{"timestamp":%s,"workflow":"%s","repo":"%s","github_event":"%s"}}\n' \
    "$(date +%s)" "$(esc "$GITHUB_WORKFLOW")" "$(esc "$GITHUB_REPOSITORY")" "$(esc "$GITHUB_EVENT_NAME")" \
    >"$META/pre-job.json.tmp" && mv "$META/pre-job.json.tmp" "$META/pre-job.json"
"#
    );
    let Some(url) = policy_url else {
        out.push_str("exit 0\n");
        return out;
    };
    let fallback = policy_fallback(url);
    out.push_str(&format!(
        r#"
POLICY_URL='{url}'
TOKEN_FILE="$META/{POLICY_TOKEN_NAME}"
deny() {{
    echo "Stopping execution of jobs due to repository setup is not compliant with policies: $1" >&2
    echo refused >"$META/policy-refused"
    # Let the runner report the failed job, then stop it.
    # start.sh runs in its own session: its process group is the whole runner.
    if [ -s "$META/runner.pgid" ]; then
        # `kill -SIG -PGID`: dash's kill builtin rejects `kill -SIG -- -PGID`.
        (sleep "${{RUNNER_MANAGER_DENY_DELAY:-10}}"; kill -INT "-$(cat "$META/runner.pgid")") </dev/null >/dev/null 2>&1 &
    fi
    exit 1
}}
# event_field JQ_PATH OBJECT KEY: a string field of the event; without jq, the first KEY after
# "OBJECT": {{ in the flattened file.
event_field() {{
    if command -v jq >/dev/null 2>&1; then
        jq -r "$1 // empty" "$GITHUB_EVENT_PATH" 2>/dev/null
    else
        tr -d '\n' <"$GITHUB_EVENT_PATH" | sed "s/.*\"$2\" *: *{{//" \
            | grep -o "\"$3\" *: *\"[^\"]*\"" | head -n 1 | sed 's/.*: *"\(.*\)"$/\1/'
    fi
}}
[ -s "$TOKEN_FILE" ] || deny "no one-time token"
TOKEN="$(cat "$TOKEN_FILE")"
rm -f "$TOKEN_FILE"
REPO="$(esc "$GITHUB_REPOSITORY")"
case "$GITHUB_EVENT_NAME" in
    workflow_dispatch|push|schedule)
        BODY=$(printf '{{"repository_name":"%s","branch_name":"%s","commit_sha":"%s"}}' \
            "$REPO" "$(esc "${{GITHUB_REF#refs/heads/}}")" "$(esc "$GITHUB_SHA")")
        ;;
    pull_request)
        [ -f "$GITHUB_EVENT_PATH" ] || deny "no event file"
        SRC_REPO="$(event_field .pull_request.head.repo.full_name head full_name)"
        SRC_BRANCH="${{GITHUB_HEAD_REF:-$(event_field .pull_request.head.ref head ref)}}"
        TARGET_BRANCH="${{GITHUB_BASE_REF:-$(event_field .pull_request.base.ref base ref)}}"
        SHA="$(event_field .pull_request.head.sha head sha)"
        BODY=$(printf '{{"repository_name":"%s","source_repository_name":"%s","target_branch_name":"%s","source_branch_name":"%s","commit_sha":"%s"}}' \
            "$REPO" "$(esc "$SRC_REPO")" "$(esc "$TARGET_BRANCH")" "$(esc "$SRC_BRANCH")" "$(esc "${{SHA:-$GITHUB_SHA}}")")
        ;;
    *)
        deny "unsupported event $GITHUB_EVENT_NAME"
        ;;
esac
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY
if command -v curl >/dev/null 2>&1; then
    printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" | curl -fsS --max-time 60 --noproxy '*' \
        --config - -H 'Content-Type: application/json' --data "$BODY" -o /dev/null \
        "$POLICY_URL/$GITHUB_EVENT_NAME/check-run" || deny "policy service refused the job"
{fallback}fi
exit 0
"#
    ));
    out
}

/// Without curl: HTTP/1.0 over `nc`, the request written by the shell's builtin `printf`, so the
/// token is never an argument of any process (busybox `wget --header` would put it on a command
/// line, and `timeout`'s watchdog would keep it there). Only for a plain-HTTP service; otherwise
/// the hook fails closed.
fn policy_fallback(policy_url: &str) -> String {
    let parsed = reqwest::Url::parse(policy_url).ok();
    let target = parsed.as_ref().and_then(|u| {
        let host = u.host_str()?;
        (u.scheme() == "http").then(|| {
            let port = u.port_or_known_default().unwrap_or(80);
            (
                host.to_owned(),
                port,
                u.path().trim_end_matches('/').to_owned(),
            )
        })
    });
    let Some((host, port, path)) = target else {
        return "else\n    deny \"curl is needed to reach an HTTPS policy service\"\n".to_owned();
    };
    format!(
        r#"elif command -v nc >/dev/null 2>&1; then
    LEN=$(printf '%s' "$BODY" | wc -c | tr -d ' ')
    RESPONSE="$META/policy-response"
    rm -f "$RESPONSE"
    # The request's side stays open until the answer is in (some servers drop a half-closed
    # connection before answering); the server closes after its HTTP/1.0 answer.
    (
        printf 'POST {path}/%s/check-run HTTP/1.0\r\nHost: {host}:{port}\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
            "$GITHUB_EVENT_NAME" "$TOKEN" "$LEN" "$BODY"
        i=0
        while [ ! -s "$RESPONSE" ] && [ $i -lt 600 ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i + 1)); done
    ) | timeout 60 nc -w 10 {host} {port} >"$RESPONSE"
    STATUS=$(head -n 1 "$RESPONSE")
    rm -f "$RESPONSE"
    case "$STATUS" in
        "HTTP/1."[01]" 2"*) ;;
        *) deny "policy service refused the job" ;;
    esac
else
    deny "neither curl nor nc to reach the policy service"
"#
    )
}

/// The `config.sh` script run in token mode; the token comes from its 0600 file (`--token-file`
/// when the runner supports it, else `ACTIONS_RUNNER_INPUT_TOKEN`), deleted once used.
pub fn configure_script(settings: &InstallSettings, name: &RunnerName) -> String {
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
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let args = args.join(" ");
    format!(
        "if ./config.sh --help 2>&1 | grep -q -- --token-file; then \
         ./config.sh --token-file {TOKEN_FILE} {args}; rc=$?; rm -f {TOKEN_FILE}; exit $rc; fi; \
         ACTIONS_RUNNER_INPUT_TOKEN=\"$(cat {TOKEN_FILE})\"; rm -f {TOKEN_FILE}; \
         export ACTIONS_RUNNER_INPUT_TOKEN; exec ./config.sh {args}"
    )
}

/// Single-quotes a value for sh.
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

/// Exit 0 when the recorded `run.sh` pid is alive.
fn alive_check() -> String {
    format!("test -s {PID_FILE} && kill -0 \"$(cat {PID_FILE})\" 2>/dev/null")
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

/// The runner tarball inside the stage.
const STAGED_TARBALL: &str = "actions-runner.tar.gz";
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

    fn is_docker(&self) -> bool {
        self.path == DOCKER_DROPIN || self.path == DOCKER_CLIENT_CONFIG
    }

    /// Where it goes, as a shell word: the runner's home is `$RM_HOME` (see [`setup_script`]).
    fn destination(&self) -> String {
        match self.path.strip_prefix(HOME) {
            Some(rest) => format!("\"$RM_HOME\"/{}", shell_quote(rest)),
            None => shell_quote(&self.path),
        }
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
        BundleFile::new(
            format!("{SCRIPT_DIR}/start.sh"),
            start_script(),
            0o755,
            false,
        ),
        BundleFile::new(
            format!("{SCRIPT_DIR}/pre-job.sh"),
            pre_job_script(settings.policy_url.as_deref()),
            0o755,
            false,
        ),
        BundleFile::new(
            format!("{SCRIPT_DIR}/post-job.sh"),
            post_job_script(),
            0o755,
            false,
        ),
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
    let mut out = tar::Builder::new(Vec::with_capacity(tarball.len() + 64 * 1024));
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
    append(STAGED_TARBALL, tarball, 0o600)?;
    for f in files {
        append(&f.staged(), &f.content, f.mode)?;
    }
    out.into_inner()
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

/// Picks the runner's user from `/etc/passwd` into `RM_USER`, `RM_UID`, `RM_GID` and
/// `RM_HOME`: `runner`, else `ubuntu` (either only if its uid is not 0), else root.
const PICK_USER: &str = r#"RM_USER=root RM_UID=0 RM_GID=0 RM_HOME=/root
while IFS=: read -r n _ u g _ h _ || [ -n "$n" ]; do
    case "$n" in runner|ubuntu) ;; *) continue ;; esac
    case "$u:$g" in *[!0-9:]*|:*|*:) continue ;; esac
    [ "$u" != 0 ] || continue
    if [ "$n" = runner ] || [ "$RM_USER" = root ]; then RM_USER=$n RM_UID=$u RM_GID=$g RM_HOME=${h:-/home/$n}; fi
done </etc/passwd
"#;

/// The one exec, as root: takes the bundle (from stdin, or where it was pushed), unpacks it,
/// extracts the runner, picks the runner's user ([`PICK_USER`]), moves each file into place
/// (over the runner's own, so ours win; docker's files only where docker is) and hands the
/// runner's files to its user, restarts docker when its proxy settings were written, then runs
/// [`REGISTER_SCRIPT`] as the runner's user (`runuser`, util-linux `setpriv`, or `su`, whichever
/// the image has). The bundle and the stage (they hold secrets) are removed whatever happens.
/// The same for every instance: nothing is asked of the instance beforehand.
pub fn setup_script(files: &[BundleFile], source: BundleSource) -> String {
    let mut dirs: Vec<String> = vec![RUNNER_DIR.into(), SCRIPT_DIR.into(), META_DIR.into()];
    let mut moves = String::new();
    let mut docker_moves = String::new();
    let mut chown = vec![RUNNER_DIR.to_owned(), META_DIR.to_owned()];
    let mut docker_chown = Vec::new();
    for f in files {
        let dest = f.destination();
        let line = format!("mv -f {STAGE_DIR}/{} {dest}\n", shell_quote(&f.staged()));
        let (out, owned) = if f.is_docker() {
            (&mut docker_moves, &mut docker_chown)
        } else {
            (&mut moves, &mut chown)
        };
        let parent = match f.path.strip_prefix(HOME) {
            // A file below the home directory: create its directory and hand it over.
            Some(rest) => rest.rsplit_once('/').map(|(dir, _)| {
                let dir = format!("\"$RM_HOME\"/{}", shell_quote(dir));
                if f.runner_owned && !owned.contains(&dir) {
                    owned.push(dir.clone());
                }
                dir
            }),
            None => {
                if f.runner_owned
                    && ![RUNNER_DIR, META_DIR]
                        .iter()
                        .any(|d| f.path.starts_with(&format!("{d}/")))
                {
                    owned.push(dest.clone());
                }
                f.path
                    .rsplit_once('/')
                    .map(|(dir, _)| dir.to_owned())
                    .filter(|d| !d.is_empty())
            }
        };
        match parent {
            Some(dir) if f.is_docker() => out.push_str(&format!("mkdir -p {dir}\n{line}")),
            Some(dir) => {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
                out.push_str(&line);
            }
            None => out.push_str(&line),
        }
    }
    let words = |paths: &[String]| {
        paths
            .iter()
            .map(|p| {
                if p.starts_with('"') {
                    p.clone()
                } else {
                    shell_quote(p)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let take = match source {
        BundleSource::Stdin => format!("(umask 077 && cat >{BUNDLE_PATH})\n"),
        BundleSource::Pushed => String::new(),
    };
    let mut out = format!(
        "set -e\n\
         mkdir -p {META_DIR}\n\
         echo $$ >{SETUP_PID_FILE}\n\
         trap 'rm -rf {BUNDLE_PATH} {STAGE_DIR}' EXIT\n\
         {take}\
         rm -rf {STAGE_DIR}\n\
         mkdir -m 0700 {STAGE_DIR}\n\
         tar -xf {BUNDLE_PATH} -C {STAGE_DIR}\n\
         rm -f {BUNDLE_PATH}\n\
         {PICK_USER}\
         mkdir -p {dirs}\n\
         tar -xzf {STAGE_DIR}/{STAGED_TARBALL} -C {RUNNER_DIR}\n\
         test -f {RUNNER_DIR}/config.sh\n\
         test -f {RUNNER_DIR}/run.sh\n\
         {moves}\
         if [ \"$RM_UID\" = 0 ]; then echo RUNNER_ALLOW_RUNASROOT=1 >>{RUNNER_DIR}/.env; fi\n\
         date +%s >{INSTALLED_FILE}\n\
         chown -R \"$RM_UID:$RM_GID\" {chown}\n",
        dirs = words(&dirs),
        chown = words(&chown),
    );
    if !docker_moves.is_empty() {
        out.push_str(&format!(
            "if command -v docker >/dev/null 2>&1; then\n{docker_moves}"
        ));
        if !docker_chown.is_empty() {
            out.push_str(&format!(
                "chown -R \"$RM_UID:$RM_GID\" {}\n",
                words(&docker_chown)
            ));
        }
        out.push_str(
            "if command -v systemctl >/dev/null; then systemctl daemon-reload && systemctl restart docker; fi\nfi\n",
        );
    }
    let register = format!("sh {REGISTER_SCRIPT}");
    out.push_str(&format!(
        "rm -rf {STAGE_DIR}\necho {UNPACKED}\nset +e\n\
         if [ \"$RM_UID\" = 0 ]; then\n\
         \x20   HOME=\"$RM_HOME\" RUNNER_ALLOW_RUNASROOT=1 {register}\n\
         elif command -v runuser >/dev/null 2>&1; then\n\
         \x20   runuser -u \"$RM_USER\" -- env HOME=\"$RM_HOME\" {register}\n\
         elif setpriv --help 2>&1 | grep -q -- --reuid; then\n\
         \x20   setpriv --reuid=\"$RM_UID\" --regid=\"$RM_GID\" --init-groups env HOME=\"$RM_HOME\" {register}\n\
         else\n\
         \x20   su -s /bin/sh \"$RM_USER\" -c {quoted_register}\n\
         fi\n",
        quoted_register = shell_quote(&register),
    ));
    out
}

/// Waits, in 50 ms steps for at most 10 s, until the instance has an IPv4 route or a global
/// IPv6 address: a container is started before its address is configured (measured: 40–80 ms
/// on Incus), and a `config.sh` run before that fails to reach GitHub (the real one exits, the
/// simulator's retries after 1 s). After 10 s it goes on regardless (a network without either).
const NETWORK_WAIT: &str = r#"i=0
while [ $i -lt 200 ]; do
    if [ -r /proc/net/route ] && [ "$(wc -l </proc/net/route)" -gt 1 ]; then break; fi
    if grep -q '^[0-9a-f]* [0-9a-f]* [0-9a-f]* 00 ' /proc/net/if_inet6 2>/dev/null; then break; fi
    i=$((i + 1))
    sleep 0.05 2>/dev/null || sleep 1
done
"#;

/// [`REGISTER_SCRIPT`]: waits for the network ([`NETWORK_WAIT`]), registers (token mode), starts
/// `start.sh` detached and waits in the instance, in 50 ms steps up to `wait`, until `run.sh` is
/// alive. The last line printed is
/// `alive`, `exited CODE` (then the log's tail), or `waiting`.
pub fn register_script(
    settings: &InstallSettings,
    name: &RunnerName,
    registration: &RegistrationSecret,
    wait: Duration,
) -> String {
    let configure = match registration {
        RegistrationSecret::Token(_) => format!(
            "( {} ) </dev/null >&2 || {{ rc=$?; echo {CONFIG_FAILED} $rc; exit $rc; }}\n",
            configure_script(settings, name)
        ),
        RegistrationSecret::Jit(_) => String::new(),
    };
    let steps = (wait.as_millis() / 50).max(1);
    format!(
        "#!/bin/sh\n\
         # Written by runner-manager: registers and starts the runner, as its user.\n\
         cd {RUNNER_DIR} || exit 1\n\
         {NETWORK_WAIT}\
         {configure}\
         if command -v setsid >/dev/null; then setsid sh {SCRIPT_DIR}/start.sh </dev/null >/dev/null 2>&1 &\n\
         else nohup sh {SCRIPT_DIR}/start.sh </dev/null >/dev/null 2>&1 & fi\n\
         i=0\n\
         while :; do\n\
         \x20   if [ -s {EXIT_FILE} ]; then echo \"exited $(cat {EXIT_FILE})\"; tail -c 400 {META_DIR}/runner.log; exit 0; fi\n\
         \x20   if {alive}; then echo alive; exit 0; fi\n\
         \x20   i=$((i + 1))\n\
         \x20   if [ $i -ge {steps} ]; then echo waiting; exit 0; fi\n\
         \x20   sleep 0.05 2>/dev/null || sleep 1\n\
         done\n",
        alive = alive_check(),
    )
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
/// where the provider cannot feed stdin, a push of the bundle and then that exec.
pub async fn install_runner(
    provider: &dyn InstanceProvider,
    name: &RunnerName,
    settings: &InstallSettings,
    tarball: &[u8],
    registration: &RegistrationSecret,
    policy_token: Option<&Secret>,
) -> Result<(), InstallError> {
    let files = install_files(settings, name, registration, policy_token);
    let bundle = build_bundle(tarball, &files).map_err(|e| InstallError::Provider {
        name: name.to_string(),
        step: "building the install bundle",
        source: ProviderError::failed("tar", e),
    })?;
    let limit = Duration::from_secs(300) + settings.ready_timeout;
    let out = if provider.streams_stdin() {
        let setup = ExecRequest::shell(setup_script(&files, BundleSource::Stdin), limit)
            .with_stdin(bundle)
            .for_purpose(ExecPurpose::Setup);
        exec_when_ready(provider, name.as_str(), &setup, settings.ready_timeout).await
    } else {
        push_bundle(provider, name.as_str(), bundle, settings.ready_timeout).await?;
        let setup = ExecRequest::shell(setup_script(&files, BundleSource::Pushed), limit)
            .for_purpose(ExecPurpose::Setup);
        provider.exec(name.as_str(), &setup).await
    }
    .map_err(|source| InstallError::Provider {
        name: name.to_string(),
        step: "installing the runner",
        source,
    })?;
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
mod tests {
    use super::*;

    fn settings(proxies: ProxySettings, policy: bool) -> InstallSettings {
        InstallSettings {
            registration_url: "http://10.0.0.1:8000/octo/repo".into(),
            path: GitHubPath::parse("octo/repo", "").expect("valid"),
            labels: vec!["app".into(), "jammy".into(), "gpu x".into()],
            proxies,
            policy_url: policy.then(|| "http://10.0.0.1:8080".to_owned()),
            ready_timeout: Duration::from_secs(60),
        }
    }

    fn proxies() -> ProxySettings {
        ProxySettings {
            http: Some("http://proxy:3128".parse().expect("valid")),
            https: Some("http://proxy:3129".parse().expect("valid")),
            no_proxy: Some("localhost".into()),
        }
    }

    /// Runs [`PICK_USER`] over `passwd` (rerooted) and prints what it picked.
    fn picked(passwd: &str) -> String {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().display().to_string();
        std::fs::create_dir_all(format!("{root}/etc")).expect("mkdir");
        std::fs::write(format!("{root}/etc/passwd"), passwd).expect("write");
        let script = format!(
            "{}echo \"$RM_USER $RM_UID $RM_GID $RM_HOME\"",
            reroot(PICK_USER, &root)
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn picks_unprivileged_user_when_present() {
        let root = "root:x:0:0:root:/root:/bin/bash\n";
        for (passwd, expected) in [
            (
                format!("{root}ubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n"),
                "ubuntu 1000 1000 /home/ubuntu",
            ),
            (
                "ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\nrunner:x:1001:1002::/home/runner:/bin/sh\n"
                    .to_owned(),
                "runner 1001 1002 /home/runner",
            ),
            (
                "runner:x:1001:1002::/srv/r:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n"
                    .to_owned(),
                "runner 1001 1002 /srv/r",
            ),
            (
                format!("{root}nobody:x:65534:65534::/:/bin/false\n"),
                "root 0 0 /root",
            ),
            ("garbage\n".to_owned(), "root 0 0 /root"),
            ("".to_owned(), "root 0 0 /root"),
            ("ubuntu:x:0:0::/root:/bin/sh\n".to_owned(), "root 0 0 /root"),
            ("ubuntu:x:abc:1000::/home/u:/bin/sh\n".to_owned(), "root 0 0 /root"),
            ("ubuntu:x::1000::/home/u:/bin/sh\n".to_owned(), "root 0 0 /root"),
            // No trailing newline; an empty home falls back to /home/NAME.
            ("runner:x:1001:1001:::/bin/sh".to_owned(), "runner 1001 1001 /home/runner"),
        ] {
            assert_eq!(picked(&passwd), expected, "{passwd:?}");
        }
    }

    #[test]
    fn env_files() {
        let s = settings(proxies().with_no_proxy(&["10.0.0.1"]), false);
        insta::assert_snapshot!("runner_env_ubuntu", runner_env(&s));
        let env = runner_env(&settings(ProxySettings::default(), false));
        assert!(!env.contains("RUNNER_ALLOW_RUNASROOT"));
        assert!(!env.contains("proxy"));
        insta::assert_snapshot!("etc_environment", etc_environment(&s.proxies));
        insta::assert_snapshot!("docker_dropin", docker_service_dropin(&s.proxies));
        insta::assert_snapshot!("docker_client", docker_client_config(&s.proxies));
    }

    #[test]
    fn scripts() {
        insta::assert_snapshot!("start_sh", start_script());
        insta::assert_snapshot!("pre_job_no_policy", pre_job_script(None));
        insta::assert_snapshot!(
            "pre_job_policy",
            pre_job_script(Some("http://10.0.0.1:8080"))
        );
        insta::assert_snapshot!("post_job", post_job_script());
    }

    #[test]
    fn configure_never_carries_the_token() {
        let name = crate::model::Owner::new("app", 0)
            .expect("valid")
            .new_runner_name();
        let mut s = settings(ProxySettings::default(), false);
        let script = configure_script(&s, &name);
        assert!(script.contains(&format!("--name {name}")));
        assert!(script.contains("--labels 'app,jammy,gpu x'"));
        assert!(script.contains("--ephemeral --unattended"));
        assert!(!script.contains("--runnergroup"));
        assert!(!script.contains("--token "));
        assert!(script.contains(&format!("rm -f {TOKEN_FILE}")));
        s.path = GitHubPath::parse("org", "builders").expect("valid");
        assert!(configure_script(&s, &name).ends_with("--runnergroup builders"));
        // Both paths carry the arguments.
        assert_eq!(
            configure_script(&s, &name)
                .matches("--runnergroup builders")
                .count(),
            2
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc-1"), "abc-1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    /// The generated scripts parse under `sh -n` (dash/busybox on the host).
    #[test]
    fn scripts_are_valid_sh() {
        let s = settings(proxies(), true);
        let name = runner_name();
        let token = RegistrationSecret::Token(Secret::new("tok"));
        let jit = RegistrationSecret::Jit(Secret::new("jit"));
        let files = install_files(&s, &name, &token, None);
        for script in [
            start_script(),
            pre_job_script(None),
            pre_job_script(Some("http://h:8080")),
            post_job_script(),
            setup_script(&files, BundleSource::Stdin),
            setup_script(&files, BundleSource::Pushed),
            register_script(&s, &name, &token, Duration::from_secs(30)),
            register_script(&s, &name, &jit, Duration::from_secs(30)),
        ] {
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh runs");
            assert!(
                out.status.success(),
                "{}\n{script}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Every generated script passes `shellcheck --shell=sh` and parses under dash, bash and
    /// busybox sh.
    #[test]
    fn generated_scripts_pass_shellcheck_under_every_shell() {
        use crate::guest::tests::{parses, shellcheck, SHELLS};
        let s = settings(proxies(), true);
        let name = runner_name();
        let token = RegistrationSecret::Token(Secret::new("tok"));
        let jit = RegistrationSecret::Jit(Secret::new("jit"));
        let files = install_files(&s, &name, &token, None);
        let mut with_shebang = vec![
            ("pre-job.sh", pre_job_script(None)),
            ("pre-job.sh (policy)", pre_job_script(Some("http://h:8080"))),
            (
                "pre-job.sh (https policy)",
                pre_job_script(Some("https://h")),
            ),
            (
                "register-and-start.sh (token)",
                register_script(&s, &name, &token, Duration::from_secs(30)),
            ),
            (
                "register-and-start.sh (jit)",
                register_script(&s, &name, &jit, Duration::from_secs(30)),
            ),
        ];
        for (what, script) in [
            ("setup (stdin)", setup_script(&files, BundleSource::Stdin)),
            ("setup (pushed)", setup_script(&files, BundleSource::Pushed)),
        ] {
            with_shebang.push((what, format!("#!/bin/sh\n{script}")));
        }
        for (what, script) in &with_shebang {
            shellcheck(what, script);
            for shell in SHELLS {
                assert!(parses(shell, script), "{what} under {shell:?}");
            }
        }
    }

    /// A job the policy service refuses stops the runner: SIGINT to its process group, in a form
    /// every shell accepts (dash rejects `kill -INT -- -PGID`, and then nothing is stopped).
    #[test]
    fn policy_refusal_stops_the_runner_under_every_shell() {
        use crate::guest::tests::SHELLS;
        for shell in SHELLS {
            let dir = tempfile::tempdir().expect("tmp");
            let meta = dir.path().join("meta");
            std::fs::create_dir_all(&meta).expect("mkdir");
            let mut runner = std::process::Command::new("setsid")
                .args(["sh", "-c", "sleep 60 & wait"])
                .spawn()
                .expect("setsid");
            std::fs::write(meta.join("runner.pgid"), runner.id().to_string()).expect("write");
            let script = dir.path().join("pre-job.sh");
            std::fs::write(&script, pre_job_script(Some("http://127.0.0.1:9"))).expect("write");
            let out = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg(&script)
                .env("RUNNER_MANAGER_META", &meta)
                .env("RUNNER_MANAGER_DENY_DELAY", "0")
                .env("GITHUB_EVENT_NAME", "push")
                .env("GITHUB_REPOSITORY", "octo/repo")
                .output()
                .expect("hook runs");
            assert_eq!(out.status.code(), Some(1), "{shell:?}: refused (no token)");
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let stopped = loop {
                if runner.try_wait().expect("wait").is_some() {
                    break true;
                }
                if std::time::Instant::now() > deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            if !stopped {
                let _ = runner.kill();
            }
            assert!(
                stopped,
                "{shell:?}: the runner's process group was not signalled: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn bundle_entries(bundle: &[u8]) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
        let mut archive = tar::Archive::new(bundle);
        archive
            .entries()
            .expect("tar")
            .map(|e| {
                let mut e = e.expect("entry");
                let h = e.header().clone();
                let mut content = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut content).expect("read");
                (
                    e.path().expect("path").display().to_string(),
                    h.mode().expect("mode"),
                    h.uid().expect("uid"),
                    h.gid().expect("gid"),
                    content,
                )
            })
            .collect()
    }

    fn runner_name() -> RunnerName {
        crate::model::Owner::new("app", 0)
            .expect("valid")
            .new_runner_name()
    }

    /// The bundle carries the tarball and every file with its mode; the secrets are only in 0600
    /// files handed to the runner's user, never in a script that becomes a command line.
    #[test]
    fn bundle_contents_and_secrets() {
        let s = settings(proxies(), true);
        let name = runner_name();
        let token = RegistrationSecret::Token(Secret::new("REGTOKEN-123"));
        let policy = Secret::new("POLICYTOKEN-456");
        let files = install_files(&s, &name, &token, Some(&policy));
        let bundle = build_bundle(b"TARBALL", &files).expect("bundle");
        let entries = bundle_entries(&bundle);
        assert_eq!(entries[0].0, STAGED_TARBALL);
        assert_eq!((entries[0].1, &entries[0].4[..]), (0o600, &b"TARBALL"[..]));
        assert_eq!(entries.len(), files.len() + 1);
        let by_path = |p: &str| {
            let f = files
                .iter()
                .find(|f| f.path == p)
                .unwrap_or_else(|| panic!("{p}"));
            entries
                .iter()
                .find(|e| e.0 == f.staged())
                .unwrap_or_else(|| panic!("{p} in the bundle"))
        };
        assert_eq!(by_path(TOKEN_FILE).1, 0o600);
        assert_eq!(by_path(TOKEN_FILE).4, b"REGTOKEN-123");
        assert_eq!(by_path(POLICY_TOKEN_FILE).1, 0o600);
        assert_eq!(by_path(POLICY_TOKEN_FILE).4, b"POLICYTOKEN-456");
        assert_eq!(by_path(&format!("{SCRIPT_DIR}/start.sh")).1, 0o755);
        assert_eq!(by_path(REGISTER_SCRIPT).1, 0o755);
        assert_eq!(by_path(DOCKER_DROPIN).1, 0o644);
        assert_eq!(
            by_path(DOCKER_CLIENT_CONFIG).0,
            "files/home/.docker/config.json"
        );
        assert!(
            entries.iter().all(|e| (e.2, e.3) == (0, 0)),
            "root until moved"
        );
        for (path, mode, ..) in entries.iter().filter(|e| {
            let text = String::from_utf8_lossy(&e.4);
            text.contains("REGTOKEN") || text.contains("POLICYTOKEN")
        }) {
            assert_eq!(*mode, 0o600, "{path} holds a secret");
        }
        let setup = setup_script(&files, BundleSource::Stdin);
        let register = register_script(&s, &name, &token, Duration::from_secs(5));
        for script in [&setup, &register] {
            assert!(!script.contains("REGTOKEN") && !script.contains("POLICYTOKEN"));
        }
        assert!(setup.contains(&format!("cat >{BUNDLE_PATH}")));
        assert!(!setup_script(&files, BundleSource::Pushed).contains("cat >"));
        // Docker's files only where docker is; its client config below the user's home.
        let docker = &setup[setup.find("if command -v docker").expect("docker block")..];
        assert!(docker.contains("mkdir -p \"$RM_HOME\"/.docker\n"));
        assert!(docker.contains("\"$RM_HOME\"/.docker/config.json\n"));
        assert!(docker.contains("chown -R \"$RM_UID:$RM_GID\" \"$RM_HOME\"/.docker\n"));
        assert!(docker.contains("systemctl restart docker"));
        assert!(
            setup.contains(
                "chown -R \"$RM_UID:$RM_GID\" /opt/actions-runner /var/lib/runner-manager\n"
            ),
            "{setup}"
        );
        assert!(setup.contains("setpriv --reuid=\"$RM_UID\""));
        assert!(register.contains("./config.sh"));
        // Without proxies there is nothing for docker.
        let plain = install_files(
            &settings(ProxySettings::default(), false),
            &name,
            &token,
            None,
        );
        assert!(!setup_script(&plain, BundleSource::Stdin).contains("docker"));
        // JIT: the config file instead of config.sh; 5 s in 50 ms steps.
        let jit = RegistrationSecret::Jit(Secret::new("JITCONFIG-789"));
        let files = install_files(&s, &name, &jit, None);
        assert!(files
            .iter()
            .any(|f| f.path == JIT_FILE && f.content == b"JITCONFIG-789" && f.mode == 0o600));
        let register = register_script(&s, &name, &jit, Duration::from_secs(5));
        assert!(!register.contains("config.sh") && !register.contains("JITCONFIG"));
        assert!(register.contains("-ge 100 ]"));
    }

    /// The setup script does what it says on a scratch root: run with its paths moved into a
    /// temporary directory, with the bundle on its standard input or pushed, it leaves each file
    /// in place with its mode, no bundle and no stage, and runs the register script (here a
    /// stand-in, since the runner is not real) as the user it picked (root here).
    #[test]
    fn setup_script_runs() {
        for source in [BundleSource::Stdin, BundleSource::Pushed] {
            setup_script_runs_with(source);
        }
    }

    fn setup_script_runs_with(source: BundleSource) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().display().to_string();
        let s = settings(ProxySettings::default(), false);
        let token = RegistrationSecret::Token(Secret::new("tok"));
        let mut files = install_files(&s, &runner_name(), &token, None);
        for f in files.iter_mut().filter(|f| f.path == REGISTER_SCRIPT) {
            f.content = b"echo registered as $HOME; exit 7\n".to_vec();
        }
        let mut runner = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, content) in [
            ("config.sh", "#!/bin/sh\n"),
            ("run.sh", "#!/bin/sh\n"),
            (".env", "theirs\n"),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o755);
            runner
                .append_data(&mut h, path, content.as_bytes())
                .expect("append");
        }
        let tarball = runner.into_inner().expect("tar").finish().expect("gz");
        let bundle = build_bundle(&tarball, &files).expect("bundle");
        let rooted = |p: &str| format!("{root}{p}");
        std::fs::create_dir_all(rooted("/tmp")).expect("mkdir");
        std::fs::create_dir_all(rooted("/etc")).expect("mkdir");
        std::fs::write(rooted("/etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("write");
        if source == BundleSource::Pushed {
            std::fs::write(rooted(BUNDLE_PATH), &bundle).expect("write");
        }
        let script = reroot(&setup_script(&files, source), &root).replace(
            "chown -R \"$RM_UID:$RM_GID\"",
            &format!("chown -R {}", own_ids(dir.path())),
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        let mut stdin = child.stdin.take().expect("stdin");
        if source == BundleSource::Stdin {
            std::io::Write::write_all(&mut stdin, &bundle).expect("feed");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("sh ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{source:?}: the register script's exit code: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            [UNPACKED, "registered as /root"]
        );
        let read =
            |p: &str| std::fs::read_to_string(rooted(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let env = read(&format!("{RUNNER_DIR}/.env"));
        assert!(env.starts_with("PATH="), "ours win over the tarball's");
        assert!(env.ends_with("RUNNER_ALLOW_RUNASROOT=1\n"), "{env}");
        assert_eq!(read(TOKEN_FILE), "tok");
        assert!(read(&format!("{SCRIPT_DIR}/start.sh")).contains("run.sh"));
        assert!(read("/etc/environment").starts_with("PATH="));
        assert!(read(INSTALLED_FILE).trim().parse::<u64>().is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(rooted(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(TOKEN_FILE), 0o600);
        assert_eq!(mode(&format!("{SCRIPT_DIR}/start.sh")), 0o755);
        assert!(!std::path::Path::new(&rooted(BUNDLE_PATH)).exists());
        assert!(!std::path::Path::new(&rooted(STAGE_DIR)).exists());
    }

    /// The network wait ends at once with an IPv4 route or a global IPv6 address, and after its
    /// bound without either (here 3 steps instead of 200).
    #[test]
    fn network_wait() {
        let header = "Iface\tDestination\tGateway \tFlags\n";
        let route = "eth0\t002D7B0A\t00000000\t0001\n";
        let link_local = "fe800000000000000216 02 40 20 80 eth0\n";
        let global = "fd420000000000000216 02 40 00 00 eth0\n";
        for (routes, inet6, steps) in [
            (format!("{header}{route}"), "", 0),
            (header.to_owned(), global, 0),
            (header.to_owned(), link_local, 3),
            (header.to_owned(), "", 3),
        ] {
            let dir = tempfile::tempdir().expect("tmp");
            let root = dir.path().display().to_string();
            std::fs::create_dir_all(format!("{root}/proc/net")).expect("mkdir");
            std::fs::write(format!("{root}/proc/net/route"), &routes).expect("write");
            std::fs::write(format!("{root}/proc/net/if_inet6"), inet6).expect("write");
            let script = format!(
                "{}echo $i",
                reroot(NETWORK_WAIT, &root).replace("-lt 200", "-lt 3")
            );
            let out = std::process::Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("sh runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                steps.to_string(),
                "{routes:?} {inet6:?}"
            );
        }
    }

    /// Prefixes every absolute path of a script (one starting after a space, `>` or `'`) with
    /// `root`, except `/dev/...`.
    fn reroot(script: &str, root: &str) -> String {
        let mut out = String::with_capacity(script.len() * 2);
        let mut prev = ' ';
        for (i, c) in script.char_indices() {
            if c == '/'
                && matches!(prev, ' ' | '>' | '<' | '\'')
                && !script[i..].starts_with("/dev/")
            {
                out.push_str(root);
            }
            out.push(c);
            prev = c;
        }
        out
    }

    /// `uid:gid` of the test process, so `chown` works without root.
    fn own_ids(dir: &std::path::Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).expect("stat");
        format!("{}:{}", meta.uid(), meta.gid())
    }

    /// A policy service double: allows `ott-good` unless the repository is `evil/repo`.
    async fn policy_server() -> (
        String,
        std::sync::Arc<parking_lot::Mutex<Vec<(String, String, serde_json::Value)>>>,
    ) {
        use axum::http::{HeaderMap, StatusCode, Uri};
        use std::sync::Arc;
        type Seen = Arc<parking_lot::Mutex<Vec<(String, String, serde_json::Value)>>>;
        let seen: Seen = Arc::default();
        let app = axum::Router::new()
            .fallback(
                |axum::extract::State(seen): axum::extract::State<Seen>,
                 uri: Uri,
                 headers: HeaderMap,
                 body: String| async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let allowed =
                        auth == "Bearer ott-good" && body["repository_name"] != "evil/repo";
                    seen.lock().push((uri.path().to_owned(), auth, body));
                    if allowed {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::FORBIDDEN
                    }
                },
            )
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    /// A PATH holding only busybox applets (busybox wget, no curl, no jq).
    fn busybox_path(dir: &std::path::Path) -> Option<String> {
        let busybox = ["/usr/bin/busybox", "/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let bin = dir.join("bb");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for applet in [
            "sh", "nc", "wc", "timeout", "sed", "tr", "cat", "date", "mv", "rm", "grep", "head",
            "sleep", "kill", "printf",
        ] {
            std::os::unix::fs::symlink(busybox, bin.join(applet)).expect("symlink");
        }
        Some(bin.display().to_string())
    }

    struct HookRun {
        code: i32,
        stderr: String,
        meta: std::path::PathBuf,
    }

    async fn run_hook(
        url: &str,
        path_env: &str,
        event: &str,
        repo: &str,
        token: Option<&str>,
        event_json: &str,
    ) -> HookRun {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let meta = dir.join("meta");
        std::fs::create_dir_all(&meta).expect("mkdir");
        if let Some(token) = token {
            std::fs::write(meta.join("policy-token"), token).expect("write");
        }
        let event_path = dir.join("event.json");
        std::fs::write(&event_path, event_json).expect("write");
        let script = dir.join("pre-job.sh");
        std::fs::write(&script, pre_job_script(Some(url))).expect("write");
        let sh = format!("{}/sh", path_env.split(':').next().unwrap_or("/bin"));
        let sh = if std::path::Path::new(&sh).exists() {
            sh
        } else {
            "sh".to_owned()
        };
        let out = tokio::process::Command::new(sh)
            .arg(&script)
            .env_clear()
            .env("PATH", path_env)
            .env("RUNNER_MANAGER_META", &meta)
            .env("GITHUB_EVENT_NAME", event)
            .env("GITHUB_REPOSITORY", repo)
            .env("GITHUB_WORKFLOW", "CI \"main\"")
            .env("GITHUB_REF", "refs/heads/main")
            .env("GITHUB_SHA", "abc123")
            .env("GITHUB_EVENT_PATH", &event_path)
            .env("http_proxy", "http://127.0.0.1:9")
            .output()
            .await
            .expect("hook runs");
        HookRun {
            code: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            meta,
        }
    }

    const PR_EVENT: &str = r#"{
  "action": "opened",
  "pull_request": {
    "head": {
      "label": "fork:feature",
      "ref": "feature",
      "sha": "headsha1",
      "user": {"login": "someone"},
      "repo": {"name": "repo", "full_name": "fork/repo"}
    },
    "base": {
      "label": "octo:main",
      "ref": "main",
      "sha": "basesha2",
      "repo": {"name": "repo", "full_name": "octo/repo"}
    }
  }
}"#;

    /// The pre-job hook under busybox (nc, no curl, no jq) and under the host tools (curl, jq).
    #[tokio::test]
    async fn pre_job_hook_asks_the_policy_service() {
        let (url, seen) = policy_server().await;
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut paths = vec!["/usr/local/bin:/usr/bin:/bin".to_owned()];
        paths.extend(busybox_path(tmp.path()));
        for path in paths {
            seen.lock().clear();
            let ok = run_hook(&url, &path, "push", "octo/repo", Some("ott-good"), "{}").await;
            assert_eq!(ok.code, 0, "{path}: {}", ok.stderr);
            assert!(
                !ok.meta.join("policy-token").exists(),
                "one-time token not deleted"
            );
            let record: serde_json::Value = serde_json::from_slice(
                &std::fs::read(ok.meta.join("pre-job.json")).expect("record"),
            )
            .expect("json");
            assert_eq!(record["workflow"], "CI \"main\"");
            assert_eq!(record["repo"], "octo/repo");
            assert_eq!(record["github_event"], "push");
            assert_eq!(
                seen.lock()[0],
                (
                    "/push/check-run".to_owned(),
                    "Bearer ott-good".to_owned(),
                    serde_json::json!({"repository_name":"octo/repo","branch_name":"main","commit_sha":"abc123"})
                ),
                "{path}"
            );

            let pr = run_hook(
                &url,
                &path,
                "pull_request",
                "octo/repo",
                Some("ott-good"),
                PR_EVENT,
            )
            .await;
            assert_eq!(pr.code, 0, "{path}: {}", pr.stderr);
            assert_eq!(
                seen.lock()[1].2,
                serde_json::json!({"repository_name":"octo/repo","source_repository_name":"fork/repo",
                    "target_branch_name":"main","source_branch_name":"feature","commit_sha":"headsha1"}),
                "{path}"
            );

            let refused = run_hook(&url, &path, "push", "evil/repo", Some("ott-good"), "{}").await;
            assert_eq!(refused.code, 1, "{path}");
            assert!(
                refused.stderr.contains("not compliant with policies"),
                "{}",
                refused.stderr
            );
            assert!(refused.meta.join("policy-refused").exists());

            let no_token = run_hook(&url, &path, "push", "octo/repo", None, "{}").await;
            assert_eq!(no_token.code, 1);
            let other = run_hook(
                &url,
                &path,
                "issue_comment",
                "octo/repo",
                Some("ott-good"),
                "{}",
            )
            .await;
            assert_eq!(other.code, 1);
            assert_eq!(
                seen.lock().len(),
                3,
                "{path}: refused cases must not all reach the service"
            );
        }
    }
}
