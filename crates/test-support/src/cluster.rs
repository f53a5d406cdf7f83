//! The real 3-member Incus cluster of `scripts/incus-cluster.sh` (members `m1`, `m2`, `m3`,
//! each its own incusd on `127.0.1.N:8443`, images `busybox`, `busybox-user` and
//! `debian/bookworm`, containers on the standalone daemon's bridge `incusbr0`).
//!
//! Tests that use it are `#[ignore = "needs the Incus cluster: run by scripts/test.sh"]` and have
//! `cluster` in their test or binary name, which puts them in the nextest group `incus-cluster`
//! (one at a time: some kill members; see `.config/nextest.toml`). They fail, never pass, when
//! the cluster is not up.
//!
//! - [`connect`] / [`connect_member`]: a client on a member's unix socket.
//! - [`kill_member`] (SIGKILL of its incusd; its containers keep running) returns a
//!   [`KilledMember`] guard that restarts the member when dropped, also when the test fails;
//!   [`KilledMember::start`] restarts it and waits until calls forwarded to it work.
//! - [`wait_member_status`]: until the cluster lists a member `Online` or `Offline`.
//! - [`Cleanup`]: deletes a test's instances (by its [`unique_prefix`]) when dropped.
//! - [`within`]: a call that must answer within a bound (fail fast while a member is down).
//! - [`serial`]: one cluster test at a time on the machine (a file lock), also across test
//!   processes and under plain `cargo test`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The members, as `scripts/incus-cluster.sh` names them.
pub const MEMBERS: [&str; 3] = ["m1", "m2", "m3"];

/// The cluster group every member is in.
pub const DEFAULT_GROUP: &str = "default";

/// `scripts/incus-cluster.sh`.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/incus-cluster.sh")
}

/// The unix socket of `member` (`/var/lib/incus-<member>/unix.socket`).
pub fn member_socket(member: &str) -> PathBuf {
    PathBuf::from(format!("/var/lib/incus-{member}/unix.socket"))
}

/// The socket clients use: `RUNNER_MANAGER_TEST_CLUSTER_SOCKET`, by default `m1`'s.
pub fn socket() -> PathBuf {
    std::env::var_os("RUNNER_MANAGER_TEST_CLUSTER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| member_socket("m1"))
}

/// A client on the cluster (through [`socket`]), or a loud failure saying how to start it.
pub async fn connect() -> lxd::Client {
    connect_at(socket()).await
}

/// A client on `member`'s own socket.
pub async fn connect_member(member: &str) -> lxd::Client {
    connect_at(member_socket(member)).await
}

async fn connect_at(socket: PathBuf) -> lxd::Client {
    let client = lxd::Client::connect(
        lxd::Endpoint::Unix(socket.clone()),
        lxd::Timeouts::default(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "cannot reach the Incus cluster at {}: {e}. Start it as root with \
             `./scripts/incus-cluster.sh up` (scripts/test.sh does)",
            socket.display()
        )
    });
    assert!(
        client.server().clustered,
        "{} is not a cluster member: run `./scripts/incus-cluster.sh up`",
        socket.display()
    );
    client
}

/// A name prefix no other test uses: `<tag>-<6 random letters>-` (instance names must stay
/// under 63 characters: keep `tag` short).
pub fn unique_prefix(tag: &str) -> String {
    format!("{}-", crate::incus::random_app(&format!("{tag}-"), 6))
}

/// Runs `incus-cluster.sh ARGS` and fails loudly when it does.
fn run_script(args: &[&str]) {
    let output = Command::new(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} {args:?}: {e}", script().display()));
    assert!(
        output.status.success(),
        "incus-cluster.sh {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SIGKILLs `member`'s incusd (as a crash would: its containers keep running). The guard
/// restarts it when dropped unless [`KilledMember::start`] did.
pub async fn kill_member(member: &str) -> KilledMember {
    let owned = member.to_owned();
    tokio::task::spawn_blocking(move || run_script(&["kill", &owned]))
        .await
        .expect("the kill does not panic");
    KilledMember {
        member: member.to_owned(),
        started: false,
    }
}

/// Restarts `member` and waits until calls forwarded to it work (the script waits out the
/// "Server isn't ready yet" period).
pub async fn start_member(member: &str) {
    let owned = member.to_owned();
    tokio::task::spawn_blocking(move || run_script(&["start", &owned]))
        .await
        .expect("the start does not panic");
}

/// Restarts `member` and returns as soon as its own socket answers: calls forwarded to it may
/// still answer "Server isn't ready yet" for a few seconds (`incus-cluster.sh start-nowait`).
pub async fn start_member_nowait(member: &str) {
    let owned = member.to_owned();
    tokio::task::spawn_blocking(move || run_script(&["start-nowait", &owned]))
        .await
        .expect("the start does not panic");
}

/// A member killed by [`kill_member`]: restarted when dropped.
#[must_use = "dropping it restarts the member at once"]
pub struct KilledMember {
    member: String,
    started: bool,
}

impl KilledMember {
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Restarts the member; returns how long until calls forwarded to it worked.
    pub async fn start(mut self) -> Duration {
        let started = Instant::now();
        start_member(&self.member).await;
        self.started = true;
        started.elapsed()
    }

    /// Restarts the member without waiting for calls forwarded to it to work (see
    /// [`start_member_nowait`]).
    pub async fn start_nowait(mut self) {
        start_member_nowait(&self.member).await;
        self.started = true;
    }
}

impl Drop for KilledMember {
    fn drop(&mut self) {
        if self.started {
            return;
        }
        eprintln!("cleanup: restarting cluster member {}", self.member);
        let output = Command::new(script())
            .args(["start", &self.member])
            .output();
        if let Err(e) = output {
            eprintln!("cleanup: restarting {} failed: {e}", self.member);
        }
    }
}

/// Polls the member list until `member` reads `status` (`Online` or `Offline`), at most
/// `timeout`; the member as then listed. Panics on timeout.
pub async fn wait_member_status(
    client: &lxd::Client,
    member: &str,
    status: &str,
    timeout: Duration,
) -> lxd::ClusterMember {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.cluster_members().await {
            Ok(members) => {
                let found = members.into_iter().find(|m| m.server_name == member);
                if let Some(m) = found.as_ref().filter(|m| m.status == status) {
                    return m.clone();
                }
                found.map(|m| format!("{} ({})", m.status, m.message))
            }
            Err(e) => Some(format!("listing members failed: {e}")),
        };
        assert!(
            Instant::now() < deadline,
            "cluster member {member} is not {status} after {timeout:?}: last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Deletes every instance whose name starts with its prefix when dropped (pass or fail), on its
/// own thread and runtime, through [`crate::incus::delete_prefixed`].
pub struct Cleanup {
    client: lxd::Client,
    prefix: String,
}

impl Cleanup {
    pub fn new(client: &lxd::Client, prefix: impl Into<String>) -> Self {
        Self {
            client: client.clone(),
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix><suffix>`: an instance name this guard deletes.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        crate::incus::delete_prefixed(&self.client, &self.prefix);
    }
}

/// The lock file every cluster test holds ([`serial`]).
pub const TESTS_LOCK: &str = "/run/incus-cluster-tests.lock";

/// One cluster test at a time on this machine: an exclusive `flock` on [`TESTS_LOCK`] (other
/// test processes: several `cargo nextest` runs at once, plain `cargo test`) and a mutex (threads
/// of this process). nextest's group `incus-cluster` runs them one by one within one run only.
/// Hold the guard for the whole test; a killed test process's lock is released by the kernel.
pub async fn serial() -> Serial {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let local = LOCK.lock().await;
    let file = tokio::task::spawn_blocking(|| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(TESTS_LOCK)
            .unwrap_or_else(|e| panic!("opening {TESTS_LOCK}: {e}"));
        file.lock()
            .unwrap_or_else(|e| panic!("locking {TESTS_LOCK}: {e}"));
        file
    })
    .await
    .expect("taking the cluster tests' lock does not panic");
    Serial {
        _file: file,
        _local: local,
    }
}

/// Held by a cluster test: see [`serial`].
pub struct Serial {
    _file: std::fs::File,
    _local: tokio::sync::MutexGuard<'static, ()>,
}

/// Awaits `call` and asserts it answered within `limit` (a call that must fail fast while a
/// member is down, say); its output.
pub async fn within<T>(limit: Duration, call: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let output = call.await;
    let took = started.elapsed();
    assert!(
        took < limit,
        "answered after {took:?}, not within {limit:?}"
    );
    output
}
