//! Process tests: the runner tarball installed into a temp dir, configured and run against an
//! in-process github-sim, driven through the sim's admin API (`/_sim/...`).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait_exit;
use github_sim::{Scope, Sim, SimConfig, SimHandle};
use serde_json::{json, Value};

mod common;

/// Generous: the machine running the tests may be busy.
const WAIT: Duration = Duration::from_secs(60);

struct TestSim {
    // Field order: the handle must drop (shut down) while the runtime still runs.
    sim: SimHandle,
    _rt: tokio::runtime::Runtime,
}

impl TestSim {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = rt
            .block_on(Sim::start(SimConfig::default()))
            .expect("sim starts");
        Self { sim, _rt: rt }
    }

    fn repo_url(&self) -> String {
        self.sim.scope_url(&Scope::repo("octo", "app"))
    }

    fn registration_token(&self) -> String {
        self.sim
            .registration_token(&Scope::repo("octo", "app"))
            .expect("token")
            .expose()
            .to_string()
    }

    fn admin_get(&self, path: &str) -> Value {
        let mut response = common::agent()
            .get(format!("{}{path}", self.sim.base_url()))
            .call()
            .expect("admin GET");
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json")
    }

    fn enqueue(&self, job: Value) -> u64 {
        let mut response = common::agent()
            .post(format!("{}/_sim/jobs", self.sim.base_url()))
            .send_json(&job)
            .expect("enqueue");
        assert_eq!(response.status().as_u16(), 201);
        let body: Value =
            serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
                .expect("json");
        body["job_id"].as_u64().expect("job_id")
    }

    fn runner(&self, name: &str) -> Option<Value> {
        let runners = self.admin_get("/_sim/runners");
        runners
            .as_array()
            .expect("runner list")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
    }

    fn wait_for_online(&self, name: &str) -> Value {
        wait_until("runner online", || {
            self.runner(name).filter(|r| r["status"] == "online")
        })
    }

    fn wait_for_completed(&self, job_id: u64) -> Value {
        wait_until("job completed", || {
            Some(self.admin_get(&format!("/_sim/jobs/{job_id}")))
                .filter(|j| j["status"] == "completed")
        })
    }
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The runner root, unpacked from the tarball built around this crate's agent.
struct Installed {
    dir: tempfile::TempDir,
}

impl Installed {
    fn new() -> Self {
        Self::with_agent(Path::new(env!("CARGO_BIN_EXE_runner-agent")))
    }

    fn with_agent(agent: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        common::unpack_runner(agent, dir.path());
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("runner")
    }

    /// A script of the root, with a clean environment (no proxies) and root allowed.
    fn command(&self, script: &str) -> Command {
        let mut cmd = Command::new(self.root().join(script));
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("RUNNER_ALLOW_RUNASROOT", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a script to completion (with a timeout); returns status, stdout and stderr.
    fn run(&self, mut cmd: Command) -> (ExitStatus, String, String) {
        let out = self.dir.path().join("out.txt");
        let err = self.dir.path().join("err.txt");
        cmd.stdout(fs::File::create(&out).expect("out"))
            .stderr(fs::File::create(&err).expect("err"));
        let mut child = cmd.spawn().expect("spawn");
        let status = wait_exit(&mut child, WAIT);
        (
            status,
            fs::read_to_string(out).expect("read"),
            fs::read_to_string(err).expect("read"),
        )
    }

    fn configure(&self, url: &str, token: &str, args: &[&str]) -> (ExitStatus, String, String) {
        let mut cmd = self.command("config.sh");
        cmd.args(["--url", url, "--unattended"])
            .args(args)
            .env("ACTIONS_RUNNER_INPUT_TOKEN", token);
        self.run(cmd)
    }

    /// Starts run.sh in the background, its output in `run.log`.
    fn spawn_run(&self, args: &[&str]) -> Child {
        let log = fs::File::create(self.dir.path().join("run.log")).expect("log");
        let mut cmd = self.command("run.sh");
        cmd.args(args)
            .stdout(log.try_clone().expect("clone"))
            .stderr(log);
        cmd.spawn().expect("run.sh")
    }

    fn run_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("run.log")).unwrap_or_default()
    }

    fn diag_logs(&self) -> String {
        let mut all = String::new();
        for entry in fs::read_dir(self.root().join("_diag")).expect("_diag exists") {
            all.push_str(&fs::read_to_string(entry.expect("entry").path()).expect("read diag"));
        }
        all
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn ephemeral_runner_configures_runs_one_job_and_is_gone() {
    let sim = TestSim::start();
    let runner = Installed::new();
    let token = sim.registration_token();
    let (status, stdout, stderr) = runner.configure(
        &sim.repo_url(),
        &token,
        &[
            "--name",
            "fr-ephemeral",
            "--labels",
            "fake,process",
            "--ephemeral",
        ],
    );
    assert!(status.success(), "config.sh failed: {stdout}\n{stderr}");
    assert!(stdout.contains("Settings Saved"), "{stdout}");

    let settings: Value =
        serde_json::from_slice(&fs::read(runner.root().join(".runner")).expect(".runner"))
            .expect("json");
    assert_eq!(settings["agentName"], "fr-ephemeral");
    assert_eq!(settings["ephemeral"], true);
    assert_eq!(settings["gitHubUrl"], sim.repo_url());
    let mode = fs::metadata(runner.root().join(".credentials"))
        .expect("creds")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let registered = sim.runner("fr-ephemeral").expect("registered in the sim");
    let labels: Vec<&str> = registered["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    assert_eq!(labels, ["self-hosted", "Linux", "X64", "fake", "process"]);

    let mut run = runner.spawn_run(&[]);
    sim.wait_for_online("fr-ephemeral");
    let job_id = sim.enqueue(json!({
        "labels": ["self-hosted", "fake"],
        "script": "echo \"hello from $GITHUB_REPOSITORY\"; echo oops >&2; test -f \"$GITHUB_EVENT_PATH\" && exit 3",
        "timeout_seconds": 60,
        "scope": "octo/app",
    }));
    let job = sim.wait_for_completed(job_id);
    assert_eq!(job["runner_name"], "fr-ephemeral");
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["conclusion"], "failure");
    assert_eq!(job["output"], "hello from octo/app\noops\n");

    let status = wait_exit(&mut run, WAIT);
    assert!(status.success(), "run.sh: {status}\n{}", runner.run_log());
    assert!(
        !runner.root().join(".runner").exists(),
        "ephemeral .runner deleted"
    );
    assert!(
        !runner.root().join(".credentials").exists(),
        "ephemeral .credentials deleted"
    );
    wait_until("ephemeral runner gone from the list", || {
        sim.runner("fr-ephemeral").is_none().then_some(())
    });

    let diag = runner.diag_logs();
    assert!(diag.contains("running job"), "{diag}");
    assert!(
        !diag.contains(&token),
        "the registration token is not logged"
    );
    assert!(!runner.run_log().contains(&token));
}

#[test]
fn persistent_runner_runs_jobs_with_env_hooks_and_goes_offline_on_sigterm() {
    let sim = TestSim::start();
    let runner = Installed::new();
    let (status, stdout, stderr) = runner.configure(
        &sim.repo_url(),
        &sim.registration_token(),
        &["--name", "fr-persistent"],
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    let hook = runner.dir.path().join("pre-job.sh");
    fs::write(
        &hook,
        "echo \"pre-job for $GITHUB_REPOSITORY with $FROM_DOT_ENV\"\n",
    )
    .expect("hook");
    // .env is loaded at start; env.sh (run by config.sh) created it.
    let mut dot_env = fs::read_to_string(runner.root().join(".env")).expect(".env from env.sh");
    dot_env.push_str(&format!(
        "ACTIONS_RUNNER_HOOK_JOB_STARTED={}\nFROM_DOT_ENV=dotenv-value\n",
        hook.display()
    ));
    fs::write(runner.root().join(".env"), dot_env).expect("write .env");

    let mut run = runner.spawn_run(&[]);
    sim.wait_for_online("fr-persistent");
    for n in 1..=2 {
        let job_id = sim.enqueue(json!({
            "labels": ["self-hosted", "linux"],
            "script": format!("echo job {n} $FROM_DOT_ENV"),
            "scope": "octo/app",
        }));
        let job = sim.wait_for_completed(job_id);
        assert_eq!(job["conclusion"], "success", "{job}");
        assert_eq!(job["exit_code"], 0);
        let output = job["output"].as_str().expect("output");
        assert!(
            output.contains("pre-job for octo/app with dotenv-value\n"),
            "{output}"
        );
        assert!(
            output.contains(&format!("job {n} dotenv-value\n")),
            "{output}"
        );
    }
    assert!(
        run.try_wait().expect("try_wait").is_none(),
        "still running after two jobs"
    );

    signal(&run, "TERM");
    let status = wait_exit(&mut run, Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", runner.run_log());
    let offline_calls = sim
        .sim
        .request_counts()
        .get("POST /_runner/offline")
        .map(|c| c.count);
    assert_eq!(offline_calls, Some(1), "the agent said it is going offline");
    // Not asserted: the status. The sim counts the long poll the agent abandoned on exit as
    // active forever (its handler is dropped before `poll_ended`), so it keeps the runner online.
    assert!(
        runner.root().join(".runner").exists(),
        "a persistent runner keeps its config"
    );
}

#[test]
fn jit_runner_with_failing_started_hook_fails_the_job() {
    let sim = TestSim::start();
    let runner = Installed::new();
    let mut response = common::agent()
        .post(format!(
            "{}/repos/octo/app/actions/runners/generate-jitconfig",
            sim.sim.base_url()
        ))
        .header(
            "Authorization",
            &format!("Bearer {}", sim.sim.token().expose()),
        )
        .header("User-Agent", "fake-runner-test")
        .header("Accept", "application/vnd.github+json")
        .send_json(json!({"name": "fr-jit", "runner_group_id": 1, "labels": ["jit-label"]}))
        .expect("generate-jitconfig");
    let body = response.body_mut().read_to_string().expect("body");
    assert_eq!(response.status().as_u16(), 201, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    let jit_file = runner.dir.path().join("jit");
    fs::write(
        &jit_file,
        body["encoded_jit_config"].as_str().expect("config"),
    )
    .expect("write");

    let hook = runner.dir.path().join("pre-job.sh");
    fs::write(&hook, "echo refusing\nexit 9\n").expect("hook");
    let log = fs::File::create(runner.dir.path().join("run.log")).expect("log");
    let mut cmd = runner.command("run.sh");
    cmd.arg("--jitconfig-file")
        .arg(&jit_file)
        .env("ACTIONS_RUNNER_HOOK_JOB_STARTED", &hook)
        .stdout(log.try_clone().expect("clone"))
        .stderr(log);
    let mut run = cmd.spawn().expect("run.sh");

    sim.wait_for_online("fr-jit");
    assert!(
        !jit_file.exists(),
        "the JIT config file is deleted once read"
    );
    let job_id = sim.enqueue(json!({"labels": ["jit-label"], "script": "echo should-not-run"}));
    let job = sim.wait_for_completed(job_id);
    assert_eq!(job["runner_name"], "fr-jit");
    assert_eq!(job["conclusion"], "failure");
    assert_eq!(job["exit_code"], 9);
    let output = job["output"].as_str().expect("output");
    assert!(output.contains("refusing\n"), "{output}");
    assert!(!output.contains("should-not-run"), "{output}");

    let status = wait_exit(&mut run, WAIT);
    assert!(status.success(), "{}", runner.run_log());
    assert!(!runner.root().join(".runner").exists());
    wait_until("JIT runner gone", || {
        sim.runner("fr-jit").is_none().then_some(())
    });
}

#[test]
fn config_refuses_unknown_arguments_root_and_double_configuration() {
    let sim = TestSim::start();
    let runner = Installed::new();

    let (status, stdout, stderr) = runner.configure(&sim.repo_url(), "unused", &["--bogus"]);
    assert_eq!(status.code(), Some(1));
    assert!(
        (stdout.clone() + &stderr).contains("Unrecognized command-line input arguments: '--bogus'"),
        "{stdout}{stderr}"
    );

    let is_root = Command::new("id").arg("-u").output().expect("id").stdout == b"0\n";
    if is_root {
        for script in ["config.sh", "run.sh"] {
            let mut cmd = runner.command(script);
            cmd.env_remove("RUNNER_ALLOW_RUNASROOT");
            let (status, stdout, _) = runner.run(cmd);
            assert_eq!(status.code(), Some(1), "{script}");
            assert_eq!(stdout, "Must not run with sudo\n", "{script}");
        }
    }

    let (status, _, stderr) =
        runner.configure(&sim.repo_url(), "wrong-token", &["--name", "fr-twice"]);
    assert_eq!(status.code(), Some(1), "a bad token fails: {stderr}");
    assert!(stderr.contains("Unauthorized"), "{stderr}");
    assert!(!runner.root().join(".runner").exists());

    let token = sim.registration_token();
    let (status, _, stderr) = runner.configure(&sim.repo_url(), &token, &["--name", "fr-twice"]);
    assert!(status.success(), "{stderr}");
    let (status, _, stderr) = runner.configure(&sim.repo_url(), &token, &["--name", "fr-twice"]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("already configured"), "{stderr}");
    let (status, _, stderr) = runner.configure(
        &sim.repo_url(),
        &token,
        &["--name", "fr-twice", "--replace"],
    );
    assert!(status.success(), "--replace reconfigures: {stderr}");
    assert_eq!(
        sim.sim
            .runners()
            .iter()
            .filter(|r| r.name == "fr-twice")
            .count(),
        1
    );

    // The unreachable server: exit 2 (retryable), nothing written.
    let other = Installed::new();
    let (status, _, stderr) =
        other.configure("http://127.0.0.1:9/octo/app", &token, &["--name", "x"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(!other.root().join(".runner").exists());

    // remove with a remove token from the REST API, read from a 0600 file.
    let mut response = common::agent()
        .post(format!(
            "{}/repos/octo/app/actions/runners/remove-token",
            sim.sim.base_url()
        ))
        .header(
            "Authorization",
            &format!("Bearer {}", sim.sim.token().expose()),
        )
        .header("User-Agent", "fake-runner-test")
        .send_empty()
        .expect("remove-token");
    let body: Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body")).expect("json");
    let token_file = runner.dir.path().join("remove-token");
    fs::write(&token_file, body["token"].as_str().expect("token")).expect("write");
    let mut cmd = runner.command("config.sh");
    cmd.arg("remove").arg("--token-file").arg(&token_file);
    let (status, stdout, stderr) = runner.run(cmd);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!runner.root().join(".runner").exists());
    assert!(sim.runner("fr-twice").is_none(), "unregistered");
}

/// `config.sh --runnergroup` on an organisation and an enterprise: GitHub names the default group
/// `Default`, and actions/runner matches group names ignoring case, so the manager's default
/// `--runnergroup default` lands in it. An unknown group fails with actions/runner's message.
#[test]
fn runnergroup_matches_ignoring_case_on_org_and_enterprise() {
    let sim = TestSim::start();
    for (i, scope) in [Scope::org("octo-org"), Scope::enterprise("acme")]
        .into_iter()
        .enumerate()
    {
        let url = sim.sim.scope_url(&scope);
        let token = sim
            .sim
            .registration_token(&scope)
            .expect("token")
            .expose()
            .to_string();
        let name = format!("fr-group-{i}");
        let runner = Installed::new();
        let (status, stdout, stderr) =
            runner.configure(&url, &token, &["--name", &name, "--runnergroup", "default"]);
        assert!(status.success(), "{url}: {stdout}\n{stderr}");
        let settings: Value =
            serde_json::from_slice(&fs::read(runner.root().join(".runner")).expect(".runner"))
                .expect("json");
        assert_eq!(settings["poolId"], 1, "{url}");
        assert_eq!(settings["poolName"], "Default", "{url}");
        assert_eq!(sim.runner(&name).expect("registered")["runner_group_id"], 1);

        let other = Installed::new();
        let (status, _, stderr) = other.configure(
            &url,
            &token,
            &["--name", &format!("{name}-x"), "--runnergroup", "gpu"],
        );
        assert_eq!(status.code(), Some(1), "{url}: {stderr}");
        assert!(
            stderr.contains("Could not find any self-hosted runner group named \"gpu\"."),
            "{stderr}"
        );
        assert!(!other.root().join(".runner").exists());
    }
}

/// A root directory holding only a static busybox, `/dev/null` and the runner: no libc, no
/// `/proc`, no `/etc`, like a minimal container. Needs root (chroot, mknod) and busybox.
fn busybox_root(runner: &Installed) -> Option<PathBuf> {
    let busybox = Path::new("/usr/bin/busybox");
    let is_root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
    if !is_root || !busybox.is_file() {
        eprintln!("skipping the busybox test: it needs root and /usr/bin/busybox");
        return None;
    }
    let file = Command::new("file").arg("-L").arg(busybox).output().ok()?;
    assert!(
        String::from_utf8_lossy(&file.stdout).contains("statically linked"),
        "/usr/bin/busybox must be static for this test"
    );
    let root = runner.dir.path().join("chroot");
    let bin = root.join("bin");
    fs::create_dir_all(&bin).expect("bin");
    fs::create_dir_all(root.join("dev")).expect("dev");
    fs::create_dir_all(root.join("tmp")).expect("tmp");
    fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
    }
    let status = Command::new("mknod")
        .arg("-m")
        .arg("666")
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(status.success(), "mknod /dev/null");
    // No resolver library either: the agent reads /etc/hosts itself.
    fs::create_dir_all(root.join("etc")).expect("etc");
    fs::write(
        root.join("etc/hosts"),
        "127.0.0.1 localhost\n127.0.0.1 sim.test\n",
    )
    .expect("hosts");
    let status = Command::new("cp")
        .arg("-a")
        .arg(runner.root())
        .arg(root.join("runner"))
        .status()
        .expect("cp");
    assert!(status.success());
    Some(root)
}

#[test]
fn static_agent_runs_in_a_busybox_root_without_libc() {
    let agent = github_sim::tarball::locate_or_build_agent().expect("static agent");
    let runner = Installed::with_agent(&agent);
    let Some(chroot) = busybox_root(&runner) else {
        return;
    };
    assert!(
        !chroot.join("lib").exists() && !chroot.join("usr").exists(),
        "no libc in the root"
    );
    let sim = TestSim::start();
    let in_root = |script: &str| {
        let chroot_bin = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("chroot(8)");
        let mut cmd = Command::new(chroot_bin);
        cmd.arg(&chroot)
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/bin")
            .env("RUNNER_ALLOW_RUNASROOT", "1")
            .stdin(Stdio::null());
        cmd
    };
    let url = format!("http://sim.test:{}/octo/app", sim.sim.addr().port());
    let mut configure = in_root(&format!(
        "cd /runner && ./config.sh --url {url} --unattended --name fr-busybox --labels tiny --ephemeral"
    ));
    configure.env("ACTIONS_RUNNER_INPUT_TOKEN", sim.registration_token());
    let (status, stdout, stderr) = runner.run(configure);
    assert!(status.success(), "{stdout}\n{stderr}");

    let log = fs::File::create(runner.dir.path().join("run.log")).expect("log");
    let mut run = in_root("cd /runner && ./run.sh")
        .stdout(log.try_clone().expect("clone"))
        .stderr(log)
        .spawn()
        .expect("run.sh in the root");
    sim.wait_for_online("fr-busybox");
    let job_id = sim.enqueue(json!({
        "labels": ["tiny"],
        "script": "echo \"busybox job in $PWD\"; test -e /lib || echo no-libc",
    }));
    let job = sim.wait_for_completed(job_id);
    assert_eq!(job["conclusion"], "success", "{job}\n{}", runner.run_log());
    assert_eq!(
        job["output"],
        "busybox job in /runner/_work/app/app\nno-libc\n"
    );
    let status = wait_exit(&mut run, WAIT);
    assert!(status.success(), "{}", runner.run_log());
    wait_until("busybox runner gone", || {
        sim.runner("fr-busybox").is_none().then_some(())
    });
}

/// A minimal HTTP CONNECT proxy that records the request heads it tunnels.
struct ConnectProxy {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || Self::tunnel(client, &recorded));
            }
        });
        Self { addr, heads }
    }

    fn tunnel(mut client: TcpStream, recorded: &Mutex<Vec<String>>) -> Option<()> {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if client.read(&mut byte).ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let target = head
            .strip_prefix("CONNECT ")?
            .split_whitespace()
            .next()?
            .to_string();
        recorded.lock().ok()?.push(head);
        let mut upstream = TcpStream::connect(target).ok()?;
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .ok()?;
        client.set_read_timeout(None).ok()?;
        let (mut to_client, mut from_upstream) =
            (client.try_clone().ok()?, upstream.try_clone().ok()?);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_upstream, &mut to_client);
            let _ = to_client.shutdown(std::net::Shutdown::Write);
        });
        let _ = std::io::copy(&mut client, &mut upstream);
        let _ = upstream.shutdown(std::net::Shutdown::Write);
        Some(())
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("lock").clone()
    }
}

/// A fresh install with `dot_env` as its `.env`, configured (successfully) as `name`.
fn configured_with_dot_env(sim: &TestSim, dot_env: &str, name: &str) -> Installed {
    let runner = Installed::new();
    fs::write(runner.root().join(".env"), dot_env).expect(".env");
    let (status, stdout, stderr) = runner.configure(
        &sim.repo_url(),
        &sim.registration_token(),
        &["--name", name],
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    runner
}

#[test]
fn proxy_from_dot_env_is_used_lower_case_first_and_no_proxy_bypasses_it() {
    let sim = TestSim::start();
    let proxy = ConnectProxy::start();
    // Lower case wins: the upper-case proxy points nowhere.
    let runner = configured_with_dot_env(
        &sim,
        &format!(
            "http_proxy=http://user:pw@{}\nHTTP_PROXY=http://127.0.0.1:9\n",
            proxy.addr
        ),
        "fr-proxied",
    );
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "registration went through the proxy");
    assert!(
        heads[0].starts_with(&format!("CONNECT {} ", sim.sim.addr())),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains("Basic dXNlcjpwdw=="),
        "proxy credentials sent: {}",
        heads[0]
    );
    let diag = runner.diag_logs();
    assert!(diag.contains("proxy: http://***@"), "{diag}");
    assert!(!diag.contains("user:pw"), "proxy password not logged");

    let mut run = runner.spawn_run(&[]);
    sim.wait_for_online("fr-proxied");
    assert!(
        proxy.heads().len() >= 2,
        "the listener polls through the proxy"
    );
    signal(&run, "TERM");
    assert!(wait_exit(&mut run, Duration::from_secs(20)).success());

    let before = proxy.heads().len();
    let _direct = configured_with_dot_env(
        &sim,
        &format!(
            "http_proxy=http://{}\nno_proxy=localhost,127.0.0.0/8\n",
            proxy.addr
        ),
        "fr-direct",
    );
    assert_eq!(proxy.heads().len(), before, "no_proxy bypasses the proxy");
}
