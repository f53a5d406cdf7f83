//! Shared test support: a connected client (or a loud failure), unique names, cleanup guards.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use lxd::{Client, Endpoint, ImageSource, InstanceSpec, Timeouts};

/// The tag every test instance carries: `<pid>`. The sweep deletes tagged instances of dead pids.
pub const OWNER_KEY: &str = "user.lxd-test-pid";
pub const PREFIX: &str = "lxdt-";

pub fn socket() -> PathBuf {
    match Endpoint::discover() {
        Ok(Endpoint::Unix(p)) => p,
        _ => panic!(
            "no LXD or Incus daemon socket found. These integration tests need a real daemon: \
             run `./scripts/incus-env.sh up` as root (or set INCUS_SOCKET / LXD_SOCKET). \
             For unit tests only: cargo test -p lxd --lib"
        ),
    }
}

/// Connects to the real daemon, or fails the test saying how to start one.
pub async fn client() -> Client {
    let sock = socket();
    let c = match Client::connect(Endpoint::Unix(sock.clone()), Timeouts::default()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot reach the daemon at {}: {e}. Run `./scripts/incus-env.sh up` as root \
             (or `./scripts/incus-env.sh lxd-up` with LXD_SOCKET=/var/lib/lxd/unix.socket)",
            sock.display()
        ),
    };
    sweep_stale(&c).await;
    c
}

/// A name unique to this process and call: `lxdt-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let r: u16 = rand::random();
    format!("{PREFIX}{tag}-{}-{n}{r:04x}", std::process::id())
}

/// A busybox container spec tagged for cleanup.
pub fn busybox(name: &str) -> InstanceSpec {
    InstanceSpec::new(name, ImageSource::Alias("busybox".into()))
        .config(OWNER_KEY, std::process::id().to_string())
}

/// Deletes leftovers of test processes that died without cleaning up (only `lxdt-` instances whose
/// owner pid is gone, so parallel runs are left alone).
async fn sweep_stale(c: &Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let Ok(all) = c.list_instances().await else {
            return;
        };
        for i in all.iter().filter(|i| i.name.starts_with(PREFIX)) {
            let alive = i
                .config
                .get(OWNER_KEY)
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = c.force_delete_instance(&i.name).await;
            }
        }
    })
    .await;
}

/// Deletes the named instances when dropped, even when the test panics. It uses a fresh runtime and
/// connection on its own thread (the test's runtime may be unwinding).
pub struct Cleanup {
    names: Mutex<Vec<String>>,
    profiles: Mutex<Vec<String>>,
    /// Instances live in this project, deleted last.
    project: Option<String>,
}

impl Cleanup {
    pub fn new() -> Self {
        Cleanup {
            names: Mutex::new(Vec::new()),
            profiles: Mutex::new(Vec::new()),
            project: None,
        }
    }

    /// A guard for instances in `project`, which is deleted too.
    pub fn in_project(project: &str) -> Self {
        Cleanup {
            names: Mutex::new(Vec::new()),
            profiles: Mutex::new(Vec::new()),
            project: Some(project.to_owned()),
        }
    }

    /// Registers and returns a fresh unique instance name.
    pub fn name(&self, tag: &str) -> String {
        let n = unique(tag);
        self.names.lock().expect("not poisoned").push(n.clone());
        n
    }

    /// Registers an existing name.
    pub fn adopt(&self, name: &str) {
        self.names
            .lock()
            .expect("not poisoned")
            .push(name.to_owned());
    }

    pub fn profile(&self, tag: &str) -> String {
        let n = unique(tag);
        self.profiles.lock().expect("not poisoned").push(n.clone());
        n
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        let profiles =
            std::mem::take(&mut *self.profiles.lock().unwrap_or_else(|e| e.into_inner()));
        let project = self.project.take();
        if names.is_empty() && profiles.is_empty() && project.is_none() {
            return;
        }
        let sock = socket();
        block_on_own_runtime(async move {
            let Ok(c) = Client::connect(Endpoint::Unix(sock), Timeouts::default()).await else {
                return;
            };
            let c = match &project {
                Some(p) => c.with_project(p),
                None => c,
            };
            let deletes = names.iter().map(|n| c.force_delete_instance(n));
            for r in futures::future::join_all(deletes).await {
                if let Err(e) = r {
                    eprintln!("cleanup: {e}");
                }
            }
            for p in &profiles {
                let _ = c.delete_profile(p).await;
            }
            if let Some(p) = project {
                let _ = raw_client()
                    .delete(format!("http://lxd/1.0/projects/{p}"))
                    .send()
                    .await;
            }
        });
    }
}

/// Runs `cleanup` to completion on a runtime of its own, in a thread of its own (a `Drop` may run
/// inside a test's runtime, which cannot block on another future).
fn block_on_own_runtime(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let t = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for cleanup");
        rt.block_on(cleanup);
    });
    let _ = t.join();
}

/// A client, the guard that cleans up after the test, and a fresh instance name from `tag`
/// (nothing created yet).
pub async fn named(tag: &str) -> (Client, Cleanup, String) {
    let c = client().await;
    let g = Cleanup::new();
    let name = g.name(tag);
    (c, g, name)
}

/// [`named`], with a started busybox instance of that name.
pub async fn started_instance(tag: &str) -> (Client, Cleanup, String) {
    let (c, g, name) = named(tag).await;
    c.create_instance(&busybox(&name).started())
        .await
        .expect("create");
    (c, g, name)
}

/// There is no instance `name` (none was created, or it is gone).
pub async fn assert_no_instance(c: &Client, name: &str) {
    let err = c.get_instance(name).await.expect_err("no such instance");
    assert!(err.is_not_found(), "{err:?}");
}

pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    while !f().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plain reqwest client on the daemon socket, for what the library deliberately does not offer.
pub fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .unix_socket(socket())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("raw client")
}

/// Runs a program with a timeout and returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let mut command = std::process::Command::new("timeout");
    command.arg("30").arg(program).args(args);
    test_support::command::stdout_of(&mut command)
}

/// A throwaway self-signed certificate and key (PEM) made with openssl, in `dir`.
pub fn self_signed(dir: &std::path::Path, tag: &str) -> (Vec<u8>, Vec<u8>, String) {
    let key = dir.join(format!("{tag}.key"));
    let crt = dir.join(format!("{tag}.crt"));
    let (key_s, crt_s) = (key.to_string_lossy(), crt.to_string_lossy());
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key_s,
            "-out",
            &crt_s,
            "-days",
            "1",
            "-subj",
            "/CN=lxd-crate-test",
        ],
    );
    let fp = run(
        "openssl",
        &["x509", "-in", &crt_s, "-noout", "-fingerprint", "-sha256"],
    );
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase();
    (
        std::fs::read(&crt).expect("cert"),
        std::fs::read(&key).expect("key"),
        fp,
    )
}

/// Removes a trusted client certificate when dropped.
pub struct TrustGuard(pub String);

impl Drop for TrustGuard {
    fn drop(&mut self) {
        let fp = self.0.clone();
        block_on_own_runtime(async move {
            let _ = raw_client()
                .delete(format!("http://lxd/1.0/certificates/{fp}"))
                .send()
                .await;
        });
    }
}
