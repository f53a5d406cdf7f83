//! What the tests on real Incus share: where the containers reach the host, names that never
//! collide with another test's, and the cleanup of a test's instances.
//!
//! Every such test picks its own app name ([`random_app`]); the manager names each instance
//! `<app>-<unit>-<suffix>`, so `<app>-` is a prefix no other test's instance has, and
//! [`delete_prefixed`] removes exactly this test's instances.

use std::net::IpAddr;

use rand::Rng;

/// The host's address on the Incus bridge (`RUNNER_MANAGER_TEST_BRIDGE_IP`, by default the one
/// `scripts/incus-env.sh up` configures): containers reach the simulator there.
pub fn bridge_ip() -> IpAddr {
    std::env::var("RUNNER_MANAGER_TEST_BRIDGE_IP")
        .unwrap_or_else(|_| "10.123.45.1".into())
        .parse()
        .expect("RUNNER_MANAGER_TEST_BRIDGE_IP is an IP address")
}

/// `prefix` followed by `letters` random lowercase letters: an app name of one test.
pub fn random_app(prefix: &str, letters: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let suffix: String = (0..letters)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

/// Runs `work` to its end on its own thread and current-thread runtime: usable from `Drop`,
/// inside or outside a test's runtime, and while it unwinds. What `work` gave; `None` when no
/// runtime could be built or `work` panicked (the cleanups it serves are best effort).
pub fn block_on_own_thread<F>(work: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        Some(rt.block_on(work))
    });
    thread.join().ok().flatten()
}

/// Force-deletes every instance whose name starts with `prefix`, saying so on stderr, on its own
/// thread and runtime ([`block_on_own_thread`]). Errors are ignored (the cleanup is best effort).
pub fn delete_prefixed(lxd: &lxd::Client, prefix: &str) {
    let (lxd, prefix) = (lxd.clone(), prefix.to_owned());
    block_on_own_thread(async move {
        for instance in lxd.list_instances().await.unwrap_or_default() {
            if instance.name.starts_with(&prefix) {
                eprintln!("cleanup: deleting {}", instance.name);
                let _ = lxd.force_delete_instance(&instance.name).await;
            }
        }
    });
}

/// Calls [`delete_prefixed`] when dropped during a panic: a failed test still removes its
/// instances, a passing one leaves its own teardown to say what was left.
pub struct CleanupOnPanic {
    lxd: lxd::Client,
    prefix: String,
}

impl CleanupOnPanic {
    pub fn new(lxd: &lxd::Client, prefix: impl Into<String>) -> Self {
        Self {
            lxd: lxd.clone(),
            prefix: prefix.into(),
        }
    }
}

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            delete_prefixed(&self.lxd, &self.prefix);
        }
    }
}

/// The image alias of a static busybox with a shell-script init (`scripts/incus-env.sh up`).
pub const BUSYBOX: &str = "busybox";
/// The image alias of a Debian with systemd as PID 1, dash as /bin/sh and a `ubuntu` user, like
/// the server images operators run (`scripts/incus-env.sh up`).
pub const DEBIAN: &str = "debian/bookworm";
