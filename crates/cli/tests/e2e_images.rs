//! End to end, baked runner images: the `runner-manager` binary (`image build`, `image list`,
//! `reconcile`, `status`) against the GitHub simulator and real Incus, with a pool of
//! `image_mode = "baked"`.
//!
//! - `baked_pool_builds_runs_jobs_and_holds_no_secret` (both images): `image build` publishes
//!   one image with the right properties, runners are launched from it with one setup exec,
//!   a job runs on them, and the published image holds no secret (no token the simulator
//!   issued, not the GitHub token, not the proxy password).
//! - `baked_runners_ask_the_policy_service` (both images): the pre-job hook of a baked runner asks
//!   the policy service; an allowed job runs, a refused one fails without running its script.
//! - `rotation_replaces_idle_runners_and_busy_job_finishes_on_old_image` (busybox): a new image
//!   comes in through its canary, idle runners of the old image are replaced, a busy one
//!   finishes its job first, then the old image is deleted.
//! - `broken_canary_is_rolled_back` (busybox): a canary whose runner cannot start is marked
//!   `bad`, the pool stays on its good image, and only the canary's share of launches used it.
//! - `daemon_builds_the_image_at_start_and_launches_from_it` (busybox): `run` builds the image
//!   at its start and its runners come from it.
//! - `a_changed_base_image_gets_a_new_image` (busybox): `image build` builds nothing when the
//!   newest image is current, and a new image when the base alias points at another image.
//!
//! The tests that need Incus are `#[ignore]`d (run by `scripts/test.sh`). Each test has its own
//! simulator, state dir and app name; a guard deletes the app's instances and images (those
//! whose `runner-manager.app` property names the app) even when a test fails.

mod e2e_env;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_env::*;
use github_sim::JobStatus;
use serde_json::{json, Value};
use test_support::policy::PolicyService;

test_support::on_both_images!(
    worker_threads = 2;
    baked_pool_builds_runs_jobs_and_holds_no_secret,
    baked_runners_ask_the_policy_service,
);

test_support::on_busybox_only!(
    worker_threads = 2;
    rotation_replaces_idle_runners_and_busy_job_finishes_on_old_image,
    daemon_builds_the_image_at_start_and_launches_from_it,
    a_changed_base_image_gets_a_new_image,
    broken_canary_is_rolled_back,
);

/// A plain `cargo test` (no daemon) must report the Incus tests as ignored, not as passed.
#[test]
fn incus_tests_are_ignored_by_default() {
    test_support::incus_ignored::assert_only_these_run_here(&[
        "incus_tests_are_ignored_by_default",
    ]);
}

const POOL: &str = "baked";
const IMAGE_KEY: &str = "user.runner-manager.image";
const PROXY_PASSWORD: &str = "PROXY-S3CRET-e2e-images";
/// The policy service's token for the manager (`[policy] service_token_file`).
const POLICY_TOKEN: &str = "POLICY-S3CRET-e2e-images";

/// Deletes the app's instances, then its images (by their `runner-manager.app` property), when
/// dropped: also when the test failed.
struct ImageGuard {
    app: String,
    lxd: lxd::Client,
    prefix: String,
}

impl ImageGuard {
    fn new(env: &Env) -> Self {
        Self {
            app: env.app.clone(),
            lxd: env.lxd.clone(),
            prefix: env.prefix(),
        }
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        test_support::incus::delete_prefixed(&self.lxd, &self.prefix);
        let (lxd, app) = (self.lxd.clone(), self.app.clone());
        test_support::incus::block_on_own_thread(async move {
            test_support::images::delete_tagged(&lxd, manager::images::PROP_APP, &app).await;
        });
    }
}

/// `incus image list --format json`.
fn incus_images() -> Vec<Value> {
    let out = std::process::Command::new("incus")
        .args(["image", "list", "--format", "json"])
        .output()
        .expect("incus runs");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Fingerprints of the app's images, as Incus lists them.
fn app_images(app: &str) -> BTreeSet<String> {
    incus_images()
        .iter()
        .filter(|i| i["properties"]["runner-manager.app"] == json!(app))
        .filter_map(|i| i["fingerprint"].as_str().map(str::to_owned))
        .collect()
}

/// `incus ARGS...`, which must succeed: its output.
fn incus(args: &[&str]) -> String {
    test_support::command::stdout_of(std::process::Command::new("incus").args(args))
}

/// The registration a test on `image` uses, so that both are covered: JIT on busybox, token on
/// Debian.
fn registration_on(image: &str) -> &'static str {
    if image == test_support::incus::BUSYBOX {
        "jit"
    } else {
        "token"
    }
}

/// The config: one baked pool, `[images]`, and a `[proxy]` with a password when `proxy`.
fn write_config(env: &Env, registration: &str, min_idle: u32, max: u32, proxy: bool) {
    write_config_with(env, registration, min_idle, max, proxy, "");
}

/// [`write_config`] with `pool_extra` (TOML keys) in the pool's table.
fn write_config_with(
    env: &Env,
    registration: &str,
    min_idle: u32,
    max: u32,
    proxy: bool,
    pool_extra: &str,
) {
    let bridge = test_support::incus::bridge_ip();
    let mut text = String::new();
    if proxy {
        // Nothing listens there: the runners reach the simulator directly (no_proxy), but the
        // password travels to every runner and must not be baked into an image.
        text.push_str(&format!(
            "\n[proxy]\nhttp = \"http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:3128\"\nhttps = \"http://proxy-user:{PROXY_PASSWORD}@127.0.0.1:3128\"\nno_proxy = \"localhost,127.0.0.1,{bridge}\"\n"
        ));
    }
    text.push_str("\n[images]\ncanary_percent = 50\npromote_after = 1\ncheck_seconds = 3600\n");
    text.push_str(&baked_pool(POOL, registration, min_idle, max, pool_extra));
    env.write_pools_config(
        &text,
        &ServerSection {
            port: free_port(),
            interval_seconds: 3600,
        },
        "",
    );
}

/// `image build [--pool POOL] --json`: the one image built.
async fn build(env: &Env, force: bool) -> Value {
    let mut args = vec!["image", "build"];
    if force {
        args.extend(["--pool", POOL]);
    }
    args.push("--json");
    let doc = env.run(&args).await.json("image build");
    assert_eq!(doc["failed"], json!([]), "{doc}");
    let built = doc["built"].as_array().expect("built");
    assert_eq!(built.len(), 1, "{doc}");
    built[0].clone()
}

/// `image build --json` builds nothing: the pool's newest image is current.
async fn assert_build_is_current(env: &Env) {
    let again = env
        .run(&["image", "build", "--json"])
        .await
        .json("image build");
    assert_eq!(again["built"], json!([]), "{again}");
    assert_eq!(again["current"], json!([POOL]), "{again}");
}

/// `image list --json`: fingerprint → image.
async fn image_list(env: &Env) -> BTreeMap<String, Value> {
    let doc = env
        .run(&["image", "list", "--json"])
        .await
        .json("image list");
    doc["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|i| (i["fingerprint"].as_str().expect("fp").to_owned(), i.clone()))
        .collect()
}

async fn image_state(env: &Env, fingerprint: &str) -> Option<String> {
    image_list(env)
        .await
        .get(fingerprint)
        .map(|i| i["state"].as_str().expect("state").to_owned())
}

/// `reconcile --json`, a pass with failed steps included (exit 1).
async fn reconcile(env: &Env) -> (Value, String) {
    let (doc, out) = env.reconcile().await;
    if out.code == Some(1) {
        env.clock
            .mark(&format!("reconcile had failed steps: {}", out.stderr));
    }
    (doc, out.stderr)
}

/// The app's instances: name → the baked image (fingerprint) it was launched from.
async fn instance_images(env: &Env) -> BTreeMap<String, Option<String>> {
    env.instances()
        .await
        .into_iter()
        .filter(|i| !i.name.contains("-build-") && !i.name.ends_with("-tmp"))
        .map(|i| {
            let image = i.config.get(IMAGE_KEY).cloned();
            (i.name, image)
        })
        .collect()
}

fn enqueue(env: &Env, script: &str) -> u64 {
    env.enqueue(&["self-hosted", POOL], script)
}

async fn wait_job(env: &Env, id: u64, status: JobStatus) -> github_sim::JobView {
    let what = format!("job {id} {status:?}");
    env.eventually(&what, WAIT, Duration::from_millis(200), || async {
        let job = env.sim.job(id).expect("job");
        if job.status == status {
            Ok(job)
        } else {
            Err(format!("{job:#?}"))
        }
    })
    .await
}

/// Waits until exactly `n` registrations of the app are online and idle.
async fn wait_idle(env: &Env, n: usize) {
    let what = format!("{n} idle runner(s)");
    let logs = || env.daemon_log();
    env.wait_idle_fleet(&what, n, WAIT, &logs, |_| true).await;
}

/// The fingerprint of the image `alias` points at on the server.
async fn alias_target(env: &Env, alias: &str) -> String {
    env.lxd
        .image_alias_target(alias)
        .await
        .expect("the alias is read")
        .unwrap_or_else(|| panic!("no image {alias}"))
}

/// Every instance name seen with a given image key (sampled every 100 ms).
struct Watch {
    seen: Arc<Mutex<BTreeMap<String, Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(env: &Env) -> Self {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (lxd, prefix, seen2) = (env.lxd.clone(), env.prefix(), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            loop {
                if let Ok(all) = lxd.list_instances().await {
                    let mut seen = seen2.lock().expect("lock");
                    for i in all.iter().filter(|i| {
                        i.name.starts_with(&prefix)
                            && !i.name.contains("-build-")
                            && !i.name.ends_with("-tmp")
                    }) {
                        seen.insert(i.name.clone(), i.config.get(IMAGE_KEY).cloned());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { seen, task }
    }

    fn launched_from(&self, fingerprint: &str) -> Vec<String> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, image)| image.as_deref() == Some(fingerprint))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Exports the image and unpacks it below `dir`; returns the unpacked root.
fn export_image(fingerprint: &str, dir: &Path) -> std::path::PathBuf {
    let export = dir.join("export");
    std::fs::create_dir_all(&export).expect("export dir");
    incus(&[
        "image",
        "export",
        fingerprint,
        &format!("{}/", export.display()),
    ]);
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).expect("unpack dir");
    for entry in std::fs::read_dir(&export).expect("export listing") {
        let path = entry.expect("entry").path();
        let name = path.display().to_string();
        let status = if name.ends_with(".squashfs") {
            std::process::Command::new("unsquashfs")
                .args(["-f", "-d"])
                .arg(unpacked.join("rootfs"))
                .arg(&path)
                .stdout(std::process::Stdio::null())
                .status()
        } else {
            std::process::Command::new("tar")
                .arg("-xf")
                .arg(&path)
                .arg("-C")
                .arg(&unpacked)
                .status()
        }
        .expect("unpacking runs");
        assert!(status.success(), "unpacking {name}");
    }
    unpacked
}

/// The files below `root` that hold any of `secrets` (grep, symlinks not followed).
fn files_holding(root: &Path, secrets: &[String]) -> String {
    let patterns = root.with_extension("patterns");
    std::fs::write(&patterns, secrets.join("\n") + "\n").expect("patterns");
    let out = std::process::Command::new("grep")
        .args(["-r", "-l", "-a", "-F", "-D", "skip", "-f"])
        .arg(&patterns)
        .arg(root)
        .output()
        .expect("grep runs");
    // 0: found, 1: nothing found, else an error.
    assert!(
        matches!(out.status.code(), Some(0..=1)),
        "grep: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `incus monitor --type=lifecycle` while alive: the instances' lifecycle events (execs with
/// their command, file pushes).
struct Monitor {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl Monitor {
    fn start(dir: &Path) -> Self {
        let path = dir.join("lifecycle.json");
        let file = std::fs::File::create(&path).expect("monitor file");
        let child = std::process::Command::new("incus")
            .args(["monitor", "--type=lifecycle", "--format=json"])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("incus monitor");
        // Its subscription is up before the first event we need.
        std::thread::sleep(Duration::from_millis(500));
        Self { child, path }
    }

    /// `(action, instance, command)` of every event so far.
    fn events(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .filter_map(Result::ok)
            .map(|e| {
                let m = &e["metadata"];
                let command = m["context"]["command"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                // Incus names the instance; LXD 5.0 gives only its URL (`source`).
                let name = m["name"].as_str().unwrap_or_else(|| {
                    let source = m["source"].as_str().unwrap_or_default();
                    let path = source.split('?').next().unwrap_or_default();
                    let rest = path.strip_prefix("/1.0/instances/").unwrap_or_default();
                    rest.split('/').next().unwrap_or_default()
                });
                (
                    m["action"].as_str().unwrap_or_default().to_owned(),
                    name.to_owned(),
                    command,
                )
            })
            .collect()
    }

    /// The events of instances named `prefix...`, one a line, without the exec commands.
    fn summary(&self, prefix: &str) -> String {
        self.events()
            .into_iter()
            .filter(|(_, name, _)| name.starts_with(prefix))
            .map(|(action, name, command)| {
                let mode = command
                    .split("RM_SETUP_MODE=")
                    .nth(1)
                    .map(|r| &r[..5.min(r.len())]);
                format!("{action} {name} {mode:?}\n")
            })
            .collect()
    }

    /// The `RM_SETUP_MODE` of each setup exec in `instance`, and how many execs and file pushes
    /// it had in all.
    fn setup_of(&self, instance: &str) -> (Vec<String>, usize, usize) {
        let events: Vec<_> = self
            .events()
            .into_iter()
            .filter(|(_, name, _)| name == instance)
            .collect();
        let execs: Vec<&String> = events
            .iter()
            .filter(|(action, _, _)| action == "instance-exec")
            .map(|(_, _, command)| command)
            .collect();
        let modes = execs
            .iter()
            .filter_map(|c| c.split("RM_SETUP_MODE=").nth(1))
            .map(|rest| {
                rest.trim_start_matches(['\'', '"'])
                    .chars()
                    .take_while(char::is_ascii_alphabetic)
                    .collect()
            })
            .collect();
        let pushes = events
            .iter()
            .filter(|(action, _, _)| action.contains("file-push"))
            .count();
        (modes, execs.len(), pushes)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn baked_pool_builds_runs_jobs_and_holds_no_secret(image: &str) {
    let env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    write_config(&env, registration_on(image), 2, 3, true);
    let bin = env.update_runner_bin().await;
    let sha256 = bin["binary"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    // `image build` builds one image, a canary, with its properties.
    let scratch = tempfile::tempdir().expect("scratch");
    let monitor = Monitor::start(scratch.path());
    let built = build(&env, false).await;
    let fp = built["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    let alias = built["alias"].as_str().expect("alias").to_owned();
    assert!(
        alias.starts_with(&format!("{}-0-{POOL}-{RUNNER_VERSION}-", env.app)),
        "{built}"
    );
    env.clock.mark(&format!("built {alias} ({fp})"));
    let list = image_list(&env).await;
    assert_eq!(list.len(), 1, "{list:#?}");
    let listed = &list[&fp];
    assert_eq!(listed["alias"], json!(alias), "{listed}");
    assert_eq!(listed["state"], json!("canary"), "{listed}");
    assert_eq!(listed["pool"], json!(POOL), "{listed}");
    assert_eq!(listed["runner_version"], json!(RUNNER_VERSION), "{listed}");
    // What the server has.
    let base_fp = alias_target(&env, image).await;
    let server = env.lxd.get_image(&fp).await.expect("the image");
    assert!(server.has_alias(&alias), "{server:?}");
    let props = &server.properties;
    let prop = |key: &str| props.get(key).map(String::as_str).unwrap_or_default();
    assert_eq!(prop("runner-manager.app"), env.app, "{props:?}");
    assert_eq!(prop("runner-manager.unit"), "0", "{props:?}");
    assert_eq!(prop("runner-manager.pool"), POOL, "{props:?}");
    assert_eq!(prop("runner-manager.base-image"), image, "{props:?}");
    assert_eq!(
        prop("runner-manager.base-fingerprint"),
        base_fp,
        "{props:?}"
    );
    assert_eq!(prop("runner-manager.runner-version"), RUNNER_VERSION);
    if !sha256.is_empty() {
        assert_eq!(prop("runner-manager.runner-sha256"), sha256, "{props:?}");
    }
    assert_eq!(prop("runner-manager.runner-sha256").len(), 64, "{props:?}");
    assert!(!prop("runner-manager.manager-version").is_empty());
    let built_at: i64 = prop("runner-manager.built-at").parse().expect("built-at");
    assert!(
        (built_at - now_ms() / 1000).abs() < 900,
        "built-at {built_at} is now"
    );
    assert_eq!(prop("runner-manager.state"), "canary", "{props:?}");
    assert!(
        instance_images(&env).await.is_empty(),
        "no build instance is left"
    );
    // The build is current: a second `image build` builds nothing.
    assert_build_is_current(&env).await;

    // Two runners from it, each installed with one exec (the runner was in the image).
    let first = env.reconcile_until_clean().await;
    env.clock.mark(&format!("reconcile: {first}"));
    wait_idle(&env, 2).await;
    let instances = instance_images(&env).await;
    assert_eq!(instances.len(), 2, "{instances:?}");
    // Registered with the pool's labels (its base image's name), not the image's alias.
    for runner in env.registrations() {
        let labels: Vec<&str> = runner.labels.iter().map(|l| l.name.as_str()).collect();
        assert!(
            labels.contains(&image) && labels.contains(&POOL),
            "{labels:?}"
        );
        assert!(
            !labels.iter().any(|l| l.contains("-0-baked-")),
            "{labels:?}"
        );
    }
    for (name, image_key) in &instances {
        assert_eq!(image_key.as_deref(), Some(fp.as_str()), "{name}");
    }
    // The build instance had one exec (the bake); each runner one exec (a baked setup) and no
    // file push: Incus's lifecycle events say so.
    let builds: BTreeSet<String> = monitor
        .events()
        .into_iter()
        .filter(|(action, name, _)| {
            action == "instance-created"
                && name.starts_with(&env.prefix())
                && name.contains("-build-")
        })
        .map(|(_, name, _)| name)
        .collect();
    assert_eq!(builds.len(), 1, "{}", monitor.summary(&env.prefix()));
    for name in &builds {
        assert_eq!(
            monitor.setup_of(name),
            (vec!["bake".to_owned()], 1, 0),
            "build {name}"
        );
    }
    for name in instances.keys() {
        assert_eq!(
            monitor.setup_of(name),
            (vec!["baked".to_owned()], 1, 0),
            "runner {name}: {}",
            monitor.summary(&env.prefix())
        );
    }
    drop(monitor);

    // A job runs on them.
    let job = enqueue(&env, "echo baked on $(hostname)");
    let done = wait_job(&env, job, JobStatus::Completed).await;
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{done:#?}");
    let ran_on = done.runner_name.clone().expect("a runner");
    assert!(
        instances.contains_key(&ran_on),
        "{ran_on} is a baked runner"
    );
    env.clock.mark(&format!("job ran on {ran_on}"));

    // status: the image alias and runner version per runner.
    let status = env.run(&["status", "--json"]).await.json("status");
    let runners = status["runners"].as_array().expect("runners");
    assert!(!runners.is_empty(), "{status}");
    for runner in runners {
        assert_eq!(runner["image"], json!(alias), "{status}");
        assert_eq!(runner["version"], json!(RUNNER_VERSION), "{status}");
    }
    // The pool is topped up again, from the image.
    env.reconcile_until_clean().await;
    wait_idle(&env, 2).await;
    let instances = instance_images(&env).await;
    for (name, image_key) in &instances {
        assert_eq!(image_key.as_deref(), Some(fp.as_str()), "{name}");
    }

    // The published image holds no secret.
    let issued = env.sim.issued_secrets();
    let mut secrets: Vec<String> = issued
        .registration_tokens
        .iter()
        .chain(&issued.remove_tokens)
        .chain(&issued.jit_configs)
        .chain(&issued.runner_credentials)
        .cloned()
        .collect();
    assert!(
        !secrets.is_empty(),
        "the simulator issued secrets: {issued:?}"
    );
    secrets.push(env.sim.token().expose().to_owned());
    secrets.push(PROXY_PASSWORD.to_owned());
    let root = export_image(&fp, scratch.path());
    let runner_dir = walk_find(&root, "run.sh");
    assert!(
        runner_dir
            .iter()
            .any(|p| p.ends_with("opt/actions-runner/run.sh")),
        "the runner is baked in: {runner_dir:?}"
    );
    // No runner state, no leftover of the bake.
    let rootfs = runner_dir[0]
        .ancestors()
        .nth(3)
        .expect("the rootfs")
        .to_path_buf();
    for leftover in [
        "opt/actions-runner/.env",
        "opt/actions-runner/.runner",
        "opt/actions-runner/.credentials",
        "opt/runner-manager/register-and-start.sh",
        "var/lib/runner-manager/setup.pid",
        "var/lib/runner-manager/installed-at",
        "tmp/runner-manager-install.tar",
        "tmp/runner-manager-install",
    ] {
        assert!(
            !rootfs.join(leftover).exists(),
            "{leftover} is in the image"
        );
    }
    assert!(rootfs.join("opt/runner-manager/start.sh").exists());
    let holding = files_holding(&root, &secrets);
    assert!(
        holding.trim().is_empty(),
        "the image holds secrets in:\n{holding}"
    );
    // The check works: a runner's own files hold them.
    let live = instances.keys().next().expect("a runner").clone();
    let probe = scratch.path().join("probe");
    std::fs::create_dir_all(&probe).expect("probe dir");
    let env_file = incus(&["exec", &live, "--", "cat", "/opt/actions-runner/.env"]);
    std::fs::write(probe.join("env"), env_file).expect("probe");
    let found = files_holding(&probe, &[PROXY_PASSWORD.to_owned()]);
    assert!(
        !found.trim().is_empty(),
        "a runner's .env holds the proxy password (the scan finds it)"
    );
    env.clock.mark("no secret in the image");

    env.flush_all(2).await;
    env.clock.mark("done");
}

/// A baked runner runs the pre-job hook as a plain one does: the manager hands it a one-time
/// token, an allowed job runs, a refused one fails without running its script.
async fn baked_runners_ask_the_policy_service(image: &str) {
    let env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    let policy = PolicyService::start(test_support::incus::bridge_ip(), POLICY_TOKEN).await;
    write_config(&env, registration_on(image), 1, 1, false);
    let token_file = env.dir.path().join("policy-service-token");
    std::fs::write(&token_file, POLICY_TOKEN).expect("token file");
    let mut text = std::fs::read_to_string(&env.config).expect("config");
    text.push_str(&format!(
        "\n[policy]\nurl = \"{}\"\nservice_token_file = \"{}\"\n",
        policy.url(),
        token_file.display()
    ));
    std::fs::write(&env.config, text).expect("config written");
    env.update_runner_bin().await;
    let fp = build(&env, false).await["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();

    // Allowed: the job runs on a runner of the baked image.
    env.reconcile_until_clean().await;
    wait_idle(&env, 1).await;
    let baked = |instances: &BTreeMap<String, Option<String>>| {
        instances
            .values()
            .all(|image| image.as_deref() == Some(fp.as_str()))
    };
    let instances = instance_images(&env).await;
    assert!(baked(&instances), "{instances:?} not all from {fp}");
    let allowed = enqueue(&env, "echo allowed-job-ran");
    let done = wait_job(&env, allowed, JobStatus::Completed).await;
    assert_eq!(done.conclusion.as_deref(), Some("success"), "{done:#?}");
    assert!(done.output.contains("allowed-job-ran"), "{done:#?}");
    assert_eq!(policy.checks(), 1, "the hook asked the service once");

    // Refused: the next runner (the first was ephemeral) never runs the script.
    policy.allow(false);
    env.reconcile_until_clean().await;
    wait_idle(&env, 1).await;
    let instances = instance_images(&env).await;
    assert!(baked(&instances), "{instances:?} not all from {fp}");
    let blocked = enqueue(&env, "echo blocked-job-ran");
    let done = wait_job(&env, blocked, JobStatus::Completed).await;
    assert_eq!(done.conclusion.as_deref(), Some("failure"), "{done:#?}");
    assert!(!done.output.contains("blocked-job-ran"), "{done:#?}");
    assert_eq!(policy.checks(), 2, "the hook asked the service again");

    env.flush_all(1).await;
    env.clock.mark("done");
}

/// Paths below `root` whose file name is `name`.
fn walk_find(root: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                out.push(path);
            }
        }
    }
    out
}

/// Builds image A and makes it good: two runners from it online, a pass promotes it.
async fn good_image(env: &Env) -> String {
    env.update_runner_bin().await;
    let a = build(env, false).await;
    let fp = a["fingerprint"].as_str().expect("fp").to_owned();
    env.reconcile_until_clean().await;
    wait_idle(env, 2).await;
    reconcile(env).await;
    assert_eq!(
        image_state(env, &fp).await.as_deref(),
        Some("good"),
        "A is promoted once its runners are online"
    );
    env.clock.mark(&format!("image A {fp} good"));
    fp
}

async fn rotation_replaces_idle_runners_and_busy_job_finishes_on_old_image(image: &str) {
    let env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    write_config(&env, "jit", 2, 4, false);
    let a = good_image(&env).await;

    // A long job on one A runner.
    let job = enqueue(&env, "echo long on $(hostname); sleep 20; echo finished");
    let busy = wait_job(&env, job, JobStatus::InProgress)
        .await
        .runner_name
        .expect("runner");
    assert_eq!(
        instance_images(&env)
            .await
            .get(&busy)
            .cloned()
            .flatten()
            .as_deref(),
        Some(a.as_str())
    );
    env.clock.mark(&format!("job busy on {busy}"));
    let watch = Watch::start(&env);

    // Image B: forced build of the same runner.
    let b = build(&env, true).await["fingerprint"]
        .as_str()
        .expect("fp")
        .to_owned();
    assert_ne!(a, b);
    assert_eq!(image_state(&env, &b).await.as_deref(), Some("canary"));
    env.clock.mark(&format!("image B {b} canary"));

    let deadline = Instant::now() + Duration::from_secs(420);
    let mut b_online = false;
    loop {
        reconcile(&env).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let instances = instance_images(&env).await;
        let registrations = env.registrations();
        let online: BTreeSet<String> = registrations
            .iter()
            .filter(|r| r.status == "online")
            .map(|r| r.name.clone())
            .collect();
        b_online |= instances
            .iter()
            .any(|(n, i)| i.as_deref() == Some(b.as_str()) && online.contains(n));
        let job_view = env.sim.job(job).expect("job");
        if job_view.status != JobStatus::Completed {
            assert!(
                instances.contains_key(&busy),
                "the busy runner {busy} was removed before its job ended: {job_view:#?}"
            );
        }
        let images = app_images(&env.app);
        let state_b = image_state(&env, &b).await;
        env.clock.mark(&format!(
            "instances {instances:?}, images {images:?}, B {state_b:?}, job {:?}",
            job_view.status
        ));
        let done = job_view.status == JobStatus::Completed
            && state_b.as_deref() == Some("good")
            && !images.contains(&a)
            && instances.len() == 2
            && instances.values().all(|i| i.as_deref() == Some(b.as_str()))
            && registrations.len() == 2
            && registrations
                .iter()
                .all(|r| r.status == "online" && !r.busy);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rotation did not finish: instances {instances:?}, images {images:?}, B {state_b:?}, job {job_view:#?}"
        );
    }
    let job_view = env.sim.job(job).expect("job");
    assert_eq!(
        job_view.conclusion.as_deref(),
        Some("success"),
        "the busy job finished on its A runner: {job_view:#?}"
    );
    assert_eq!(job_view.runner_name.as_deref(), Some(busy.as_str()));
    assert!(b_online, "a B runner came online");
    assert!(
        watch.launched_from(&b).len() >= 2,
        "idle A runners were replaced by B runners"
    );
    env.flush_all(2).await;
    env.clock.mark("done");
}

async fn broken_canary_is_rolled_back(image: &str) {
    let env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    write_config(&env, "jit", 2, 4, false);
    let a = good_image(&env).await;
    let a_runners: BTreeSet<String> = instance_images(&env).await.into_keys().collect();

    // B, then broken: republished from an instance without `run.sh`, same alias and properties.
    let b = build(&env, true).await;
    let (b_fp, b_alias) = (
        b["fingerprint"].as_str().expect("fp").to_owned(),
        b["alias"].as_str().expect("alias").to_owned(),
    );
    let props = env.lxd.get_image(&b_fp).await.expect("B").properties;
    let tmp = format!("{}-tmp", env.app);
    incus(&["launch", &b_alias, &tmp]);
    incus(&["exec", &tmp, "--", "rm", "-f", "/opt/actions-runner/run.sh"]);
    incus(&["stop", "--force", &tmp]);
    env.lxd
        .delete_image_if_exists(&b_fp)
        .await
        .expect("delete B");
    let mut spec = lxd::PublishSpec::new().alias(&b_alias);
    for (k, v) in &props {
        spec = spec.property(k.clone(), v.clone());
    }
    let broken = env
        .lxd
        .publish_instance(&tmp, &spec)
        .await
        .expect("publish");
    incus(&["delete", "--force", &tmp]);
    env.clock.mark(&format!("broken B {broken} as {b_alias}"));
    assert_eq!(image_state(&env, &broken).await.as_deref(), Some("canary"));
    let watch = Watch::start(&env);

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut failures = String::new();
    loop {
        let (doc, stderr) = reconcile(&env).await;
        if doc["failed"] != json!(0) {
            failures.push_str(&stderr);
        }
        let state = image_state(&env, &broken).await;
        let instances = instance_images(&env).await;
        env.clock
            .mark(&format!("B {state:?}, instances {instances:?}"));
        if state.as_deref() == Some("bad")
            && instances.len() == 2
            && instances.values().all(|i| i.as_deref() == Some(a.as_str()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never rolled back: B {state:?}, instances {instances:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The failure says why.
    assert!(
        failures.contains("/opt/actions-runner/run.sh: the runner is not in place"),
        "{failures}"
    );
    wait_idle(&env, 2).await;
    // A few more passes: nothing launches on B again.
    for _ in 0..2 {
        env.reconcile_until_clean().await;
    }
    let on_b = watch.launched_from(&broken);
    let failed_launches = failures.matches("Runner creation failed").count();
    env.clock.mark(&format!(
        "launches seen on B: {on_b:?}; failed creations: {failed_launches}"
    ));
    assert_eq!(failed_launches, 1, "one launch on B, then none: {failures}");
    assert!(
        on_b.len() <= 1,
        "only the canary's share (one launch of two) used B: {on_b:?}"
    );
    assert_eq!(
        image_state(&env, &a).await.as_deref(),
        Some("good"),
        "the pool stays on A"
    );
    assert_eq!(image_state(&env, &broken).await.as_deref(), Some("bad"));
    let now = instance_images(&env).await;
    let replaced: Vec<_> = a_runners.iter().filter(|n| !now.contains_key(*n)).collect();
    env.clock.mark(&format!("A runners replaced: {replaced:?}"));
    // The bad image is kept (newer than the good one), so the same runner is not built again.
    assert_build_is_current(&env).await;
    env.flush_all(2).await;
    env.clock.mark("done");
}

/// The daemon builds the pool's image at its start and its runners come from it, without any
/// command. (The runner binary is cached first: a daemon that has none yet tries its first build
/// before its own start-up download, and the next try is `images.check_seconds` later.)
async fn daemon_builds_the_image_at_start_and_launches_from_it(image: &str) {
    let mut env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    write_config(&env, "jit", 1, 2, false);
    env.update_runner_bin().await;
    env.start_daemon();
    let what = "a runner of the daemon's image";
    let fp = env
        .eventually(what, WAIT, Duration::from_millis(500), || async {
            let images = image_list(&env).await;
            let instances = instance_images(&env).await;
            let online: BTreeSet<String> = env
                .registrations()
                .into_iter()
                .filter(|r| r.status == "online")
                .map(|r| r.name)
                .collect();
            let from = |fp: &String| {
                instances.len() == 1
                    && instances
                        .iter()
                        .all(|(n, i)| i.as_deref() == Some(fp.as_str()) && online.contains(n))
            };
            match images.keys().next() {
                Some(fp) if from(fp) => Ok(fp.clone()),
                _ => Err(format!("images {images:?}, instances {instances:?}")),
            }
        })
        .await;
    env.clock
        .mark(&format!("the daemon's runner runs image {fp}"));
    assert_eq!(image_list(&env).await.len(), 1, "one image built");
    let log = env.daemon_log();
    assert!(!log.contains("Image build failed"), "{log}");
    env.stop_daemon().await;
    env.flush_all(1).await;
    env.clock.mark("done");
}

/// Deletes an image alias when dropped (not its image).
struct AliasGuard(String);

impl Drop for AliasGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("incus")
            .args(["image", "alias", "delete", &self.0])
            .status();
    }
}

/// `image build` (no `--pool`) builds only when something changed: the same runner on the same
/// base image is current; the base alias pointing at another image gets a new image, which
/// records the new base fingerprint, and runners come from it.
async fn a_changed_base_image_gets_a_new_image(image: &str) {
    let env = Env::new(image).await;
    let _guard = ImageGuard::new(&env);
    let base = format!("{}-base", env.app);
    let _alias = AliasGuard(base.clone());
    let first = alias_target(&env, image).await;
    let second = alias_target(&env, "busybox-user").await;
    assert_ne!(first, second);
    incus(&["image", "alias", "create", &base, &first]);
    write_config_with(&env, "jit", 1, 2, false, &format!("image = \"{base}\"\n"));
    env.update_runner_bin().await;
    let a = build(&env, false).await;
    assert_eq!(a["base_fingerprint"], json!(first), "{a}");
    assert_eq!(a["base_image"], json!(base), "{a}");
    assert_build_is_current(&env).await;

    incus(&["image", "alias", "delete", &base]);
    incus(&["image", "alias", "create", &base, &second]);
    let b = build(&env, false).await;
    assert_eq!(b["base_fingerprint"], json!(second), "{b}");
    let b_fp = b["fingerprint"].as_str().expect("fp").to_owned();
    let list = image_list(&env).await;
    assert_eq!(list.len(), 2, "{list:#?}");
    env.reconcile_until_clean().await;
    wait_idle(&env, 1).await;
    let instances = instance_images(&env).await;
    assert!(
        instances
            .values()
            .all(|i| i.as_deref() == Some(b_fp.as_str())),
        "the newest image (a canary while A is no good one) takes the launch: {instances:?}"
    );
    env.flush_all(1).await;
    env.clock.mark("done");
}
