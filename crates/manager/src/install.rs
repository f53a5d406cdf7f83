//! What goes into an instance, and the steps that put it there.
//!
//! The file contents are pure functions of the settings (snapshot tested); [`install_runner`] pushes
//! them through an [`InstanceProvider`]. Secrets (registration token, JIT config, one-time policy
//! token) travel only in 0600 files that the consuming script reads into its environment and
//! deletes: never a command line, never instance config, never a log line.

use std::time::{Duration, Instant};

use crate::model::{GitHubPath, ProxySettings, RunnerName, Secret};
use crate::provider::{ExecRequest, FilePush, InstanceProvider, ProviderError};

/// Where the runner tarball is extracted.
pub const RUNNER_DIR: &str = "/opt/actions-runner";
/// The manager's scripts inside the instance.
pub const SCRIPT_DIR: &str = "/opt/runner-manager";
/// Job metadata written by the hooks and pulled by the manager before deletion.
pub const META_DIR: &str = "/var/lib/runner-manager";
/// The pid of the `run.sh` started by `start.sh`: the health probe checks it.
pub const PID_FILE: &str = "/var/lib/runner-manager/runner.pid";
/// Written by `start.sh` when `run.sh` exits.
pub const EXIT_FILE: &str = "/var/lib/runner-manager/runner.exit";
pub const PRE_JOB_FILE: &str = "/var/lib/runner-manager/pre-job.json";
pub const POST_JOB_FILE: &str = "/var/lib/runner-manager/post-job.json";
pub const INSTALLED_FILE: &str = "/var/lib/runner-manager/installed-at";
const TOKEN_FILE: &str = "/opt/actions-runner/.registration-token";
const JIT_FILE: &str = "/opt/actions-runner/.jitconfig";
const POLICY_TOKEN_NAME: &str = "policy-token";
const POLICY_TOKEN_FILE: &str = "/var/lib/runner-manager/policy-token";
const TARBALL_TMP: &str = "/tmp/actions-runner.tar.gz";
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// The user the runner runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl RunnerUser {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn ids(&self) -> Option<(u32, u32)> {
        (!self.is_root()).then_some((self.uid, self.gid))
    }
}

/// Picks `runner`, else `ubuntu`, else root from `/etc/passwd`.
pub fn pick_user(passwd: &str) -> RunnerUser {
    let entries: Vec<RunnerUser> = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [name, _, uid, gid, _, home, ..] => Some(RunnerUser {
                    name: (*name).to_owned(),
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                    home: (*home).to_owned(),
                }),
                _ => None,
            }
        })
        .collect();
    ["runner", "ubuntu"]
        .iter()
        .find_map(|wanted| {
            entries
                .iter()
                .find(|u| u.name == *wanted && u.uid != 0)
                .cloned()
        })
        .unwrap_or_else(|| RunnerUser {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        })
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

/// The runner's `.env`.
pub fn runner_env(settings: &InstallSettings, user: &RunnerUser) -> String {
    let mut out = format!(
        "PATH={DEFAULT_PATH}\nLANG=C.UTF-8\n\
         ACTIONS_RUNNER_HOOK_JOB_STARTED={SCRIPT_DIR}/pre-job.sh\n\
         ACTIONS_RUNNER_HOOK_JOB_COMPLETED={SCRIPT_DIR}/post-job.sh\n"
    );
    if user.is_root() {
        out.push_str("RUNNER_ALLOW_RUNASROOT=1\n");
    }
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
        ("HTTP_PROXY", &proxies.http),
        ("HTTPS_PROXY", &proxies.https),
        ("NO_PROXY", &proxies.no_proxy),
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
        ("httpProxy", &proxies.http),
        ("httpsProxy", &proxies.https),
        ("noProxy", &proxies.no_proxy),
    ] {
        if let Some(v) = v {
            proxy.insert(k.into(), serde_json::Value::String(v.clone()));
        }
    }
    let config = serde_json::json!({ "proxies": { "default": proxy } });
    format!("{config:#}\n")
}

/// `start.sh`: starts `run.sh`, records its pid for the health probe and its exit code. In JIT
/// mode the config stays in its 0600 file: `--jitconfig-file` when the runner supports it, else it
/// is read into `ACTIONS_RUNNER_INPUT_JITCONFIG` (actions/runner reads any argument from
/// `ACTIONS_RUNNER_INPUT_<NAME>`) and the file is deleted before the runner starts.
pub fn start_script() -> String {
    format!(
        r#"#!/bin/sh
# Started detached by runner-manager. Runs the runner once, recording its pid and exit code.
cd {RUNNER_DIR} || exit 1
echo $$ >{META_DIR}/runner.pgid
set --
if [ -f {JIT_FILE} ]; then
    if ./run.sh --help 2>&1 | grep -q -- --jitconfig-file; then
        # The runner reads and deletes the file: the config never sits in an environment.
        set -- --jitconfig-file {JIT_FILE}
    else
        ACTIONS_RUNNER_INPUT_JITCONFIG="$(cat {JIT_FILE})"
        rm -f {JIT_FILE}
        export ACTIONS_RUNNER_INPUT_JITCONFIG
    fi
fi
./run.sh "$@" >>{META_DIR}/runner.log 2>&1 &
echo $! >{PID_FILE}
unset ACTIONS_RUNNER_INPUT_JITCONFIG
wait $!
echo $? >{EXIT_FILE}
"#
    )
}

/// `pre-job.sh`, the job-started hook: records job metadata for the manager's metrics, then (when
/// a policy service is configured) asks it whether the job may run. Runs under busybox sh and
/// busybox wget (`wget -T` crashes on busybox 1.35, so the timeout comes from `timeout`).
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
        (sleep 10; kill -INT -- "-$(cat "$META/runner.pgid")") </dev/null >/dev/null 2>&1 &
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
else
    timeout 60 wget -q -O /dev/null --header "Authorization: Bearer $TOKEN" \
        --header 'Content-Type: application/json' --post-data "$BODY" \
        "$POLICY_URL/$GITHUB_EVENT_NAME/check-run" || deny "policy service refused the job"
fi
exit 0
"#
    ));
    out
}

/// `post-job.sh`, the job-completed hook.
pub fn post_job_script() -> String {
    format!(
        r#"#!/bin/sh
# Job-completed hook installed by runner-manager.
META="${{RUNNER_MANAGER_META:-{META_DIR}}}"
printf '{{"timestamp":%s,"status":"normal"}}\n' "$(date +%s)" >"$META/post-job.json.tmp" \
    && mv "$META/post-job.json.tmp" "$META/post-job.json"
exit 0
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

/// The health probe: exit 0 when `run.sh` is alive, [`PROBE_FINISHED`] when it exited 0 (an
/// ephemeral runner after its job), 1 otherwise.
pub fn probe_script() -> String {
    format!(
        "if [ -s {EXIT_FILE} ]; then [ \"$(cat {EXIT_FILE})\" = 0 ] && exit {PROBE_FINISHED}; exit 1; fi; {}",
        alive_check()
    )
}

/// Exit 0 when the recorded `run.sh` pid is alive.
fn alive_check() -> String {
    format!("test -s {PID_FILE} && kill -0 \"$(cat {PID_FILE})\" 2>/dev/null")
}

/// The probe's exit code for a runner that finished normally.
pub const PROBE_FINISHED: i32 = 3;

/// Polls exec until the instance answers, with a deadline and no fixed sleep.
pub async fn wait_ready(
    provider: &dyn InstanceProvider,
    name: &str,
    timeout: Duration,
) -> Result<(), InstallError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let probe = ExecRequest::shell("true", Duration::from_secs(10));
        if let Ok(out) = provider.exec(name, &probe).await {
            if out.exit_code == 0 {
                return Ok(());
            }
        }
        if started.elapsed() + delay > timeout {
            return Err(InstallError::NotReady {
                name: name.to_owned(),
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

struct Step<'a> {
    provider: &'a dyn InstanceProvider,
    name: &'a str,
}

impl Step<'_> {
    async fn run(&self, step: &'static str, request: ExecRequest) -> Result<String, InstallError> {
        let out = self
            .provider
            .exec(self.name, &request)
            .await
            .map_err(|source| InstallError::Provider {
                name: self.name.to_owned(),
                step,
                source,
            })?;
        if out.exit_code != 0 {
            return Err(InstallError::Command {
                name: self.name.to_owned(),
                step,
                exit_code: out.exit_code,
                stderr: tail(&out.stderr, 400),
            });
        }
        Ok(out.stdout)
    }

    async fn push(&self, step: &'static str, file: FilePush) -> Result<(), InstallError> {
        self.provider
            .push_file(self.name, &file)
            .await
            .map_err(|source| InstallError::Provider {
                name: self.name.to_owned(),
                step,
                source,
            })
    }
}

fn tail(s: &str, max: usize) -> String {
    let s = s.trim();
    match s.char_indices().rev().nth(max) {
        Some((i, _)) => format!("...{}", &s[i..]),
        None => s.to_owned(),
    }
}

fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32, owner: (u32, u32)) -> FilePush {
    FilePush {
        path: path.to_owned(),
        content: content.into(),
        mode,
        uid: owner.0,
        gid: owner.1,
    }
}

/// Installs, registers and starts a runner in a started instance.
pub async fn install_runner(
    provider: &dyn InstanceProvider,
    name: &RunnerName,
    settings: &InstallSettings,
    tarball: &[u8],
    registration: &RegistrationSecret,
    policy_token: Option<&Secret>,
) -> Result<(), InstallError> {
    let step = Step {
        provider,
        name: name.as_str(),
    };
    let short = Duration::from_secs(30);
    wait_ready(provider, name.as_str(), settings.ready_timeout).await?;

    let passwd = step
        .run(
            "reading /etc/passwd",
            ExecRequest::shell("cat /etc/passwd", short),
        )
        .await?;
    let user = pick_user(&passwd);
    let ids = (user.uid, user.gid);
    let root = (0, 0);

    step.push(
        "pushing the runner tarball",
        file(TARBALL_TMP, tarball, 0o600, root),
    )
    .await?;
    step.run(
        "extracting the runner",
        ExecRequest::shell(
            format!(
                "set -e; mkdir -p {RUNNER_DIR} {SCRIPT_DIR} {META_DIR}; \
                 tar -xzf {TARBALL_TMP} -C {RUNNER_DIR}; rm -f {TARBALL_TMP}; \
                 test -f {RUNNER_DIR}/config.sh; test -f {RUNNER_DIR}/run.sh; \
                 chown -R {uid}:{gid} {RUNNER_DIR} {META_DIR}",
                uid = user.uid,
                gid = user.gid
            ),
            Duration::from_secs(120),
        ),
    )
    .await?;

    let env_path = format!("{RUNNER_DIR}/.env");
    let policy_url = settings.policy_url.as_deref();
    let files = [
        file(&env_path, runner_env(settings, &user), 0o644, ids),
        file(
            "/etc/environment",
            etc_environment(&settings.proxies),
            0o644,
            root,
        ),
        file(
            &format!("{SCRIPT_DIR}/start.sh"),
            start_script(),
            0o755,
            root,
        ),
        file(
            &format!("{SCRIPT_DIR}/pre-job.sh"),
            pre_job_script(policy_url),
            0o755,
            root,
        ),
        file(
            &format!("{SCRIPT_DIR}/post-job.sh"),
            post_job_script(),
            0o755,
            root,
        ),
    ];
    for f in files {
        step.push("writing runner files", f).await?;
    }

    let has_docker = step
        .run(
            "looking for docker",
            ExecRequest::shell("command -v docker >/dev/null && echo yes || true", short),
        )
        .await?
        .trim()
        == "yes";
    if has_docker && !settings.proxies.is_empty() {
        step.push(
            "writing the docker proxy drop-in",
            file(
                "/etc/systemd/system/docker.service.d/http-proxy.conf",
                docker_service_dropin(&settings.proxies),
                0o644,
                root,
            ),
        )
        .await?;
        step.push(
            "writing the docker client config",
            file(
                &format!("{}/.docker/config.json", user.home),
                docker_client_config(&settings.proxies),
                0o644,
                ids,
            ),
        )
        .await?;
        step.run(
            "restarting docker",
            ExecRequest::shell(
                "if command -v systemctl >/dev/null; then systemctl daemon-reload && systemctl restart docker; fi",
                Duration::from_secs(120),
            ),
        )
        .await?;
    }

    if let Some(token) = policy_token {
        step.push(
            "writing the policy token",
            file(POLICY_TOKEN_FILE, token.expose(), 0o600, ids),
        )
        .await?;
    }

    let mut runner_env_vars = Vec::new();
    if user.is_root() {
        runner_env_vars.push(("RUNNER_ALLOW_RUNASROOT".to_owned(), "1".to_owned()));
    }
    match registration {
        RegistrationSecret::Token(token) => {
            step.push(
                "writing the registration token",
                file(TOKEN_FILE, token.expose(), 0o600, ids),
            )
            .await?;
            let mut request =
                ExecRequest::shell(configure_script(settings, name), Duration::from_secs(120))
                    .as_user(user.ids())
                    .in_dir(RUNNER_DIR);
            request.env = runner_env_vars.clone();
            request.env.push(("HOME".into(), user.home.clone()));
            step.run("registering the runner (config.sh)", request)
                .await?;
        }
        RegistrationSecret::Jit(config) => {
            step.push(
                "writing the jit config",
                file(JIT_FILE, config.expose(), 0o600, ids),
            )
            .await?;
        }
    }

    let mut start = ExecRequest::shell(
        format!(
            "date +%s >{INSTALLED_FILE}; \
             if command -v setsid >/dev/null; then setsid sh {SCRIPT_DIR}/start.sh </dev/null >/dev/null 2>&1 & \
             else nohup sh {SCRIPT_DIR}/start.sh </dev/null >/dev/null 2>&1 & fi"
        ),
        short,
    )
    .as_user(user.ids())
    .in_dir(RUNNER_DIR);
    start.env = runner_env_vars;
    start.env.push(("HOME".into(), user.home.clone()));
    step.run("starting the runner", start).await?;

    wait_started(provider, name.as_str(), settings.ready_timeout).await
}

/// Waits until `run.sh` is alive, or reports why it exited.
async fn wait_started(
    provider: &dyn InstanceProvider,
    name: &str,
    timeout: Duration,
) -> Result<(), InstallError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    let check = format!(
        "if [ -s {EXIT_FILE} ]; then echo exited $(cat {EXIT_FILE}); tail -c 400 {META_DIR}/runner.log; \
         elif {alive}; then echo alive; else echo waiting; fi",
        alive = alive_check()
    );
    loop {
        let out = provider
            .exec(
                name,
                &ExecRequest::shell(check.clone(), Duration::from_secs(10)),
            )
            .await
            .map_err(|source| InstallError::Provider {
                name: name.to_owned(),
                step: "checking the runner started",
                source,
            })?;
        let stdout = out.stdout.trim();
        if stdout == "alive" {
            return Ok(());
        }
        if stdout.starts_with("exited") {
            return Err(InstallError::NotStarted {
                name: name.to_owned(),
                detail: tail(stdout, 400),
            });
        }
        if Instant::now() + delay > deadline {
            return Err(InstallError::NotStarted {
                name: name.to_owned(),
                detail: format!("no live run.sh after {timeout:?}"),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
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
            http: Some("http://proxy:3128".into()),
            https: Some("http://proxy:3129".into()),
            no_proxy: Some("localhost".into()),
        }
    }

    fn ubuntu() -> RunnerUser {
        pick_user("root:x:0:0:root:/root:/bin/bash\nubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n")
    }

    #[test]
    fn picks_unprivileged_user_when_present() {
        assert_eq!(ubuntu().name, "ubuntu");
        assert_eq!((ubuntu().uid, ubuntu().gid), (1000, 1000));
        let both =
            "ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\nrunner:x:1001:1002::/home/runner:/bin/sh\n";
        assert_eq!(pick_user(both).name, "runner");
        let only_root = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
        assert!(pick_user(only_root).is_root());
        assert!(pick_user("garbage\n").is_root());
        assert!(
            pick_user("ubuntu:x:0:0::/root:/bin/sh\n").is_root(),
            "uid 0 is root"
        );
    }

    #[test]
    fn env_files() {
        let s = settings(proxies().with_no_proxy(&["10.0.0.1"]), false);
        insta::assert_snapshot!("runner_env_ubuntu", runner_env(&s, &ubuntu()));
        let root = pick_user("");
        let env = runner_env(&settings(ProxySettings::default(), false), &root);
        assert!(env.contains("RUNNER_ALLOW_RUNASROOT=1\n"));
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
        for script in [
            start_script(),
            pre_job_script(None),
            pre_job_script(Some("http://h:8080")),
            post_job_script(),
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
            "sh", "wget", "timeout", "sed", "tr", "cat", "date", "mv", "rm", "grep", "head",
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

    /// The pre-job hook under busybox (wget, no jq) and under the host tools (curl, jq).
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
