//! The client leaves no idle connection on the daemon's unix socket (real daemon).
//!
//! Incus and LXD read the first bytes of every accepted unix connection inside their accept
//! loop, so a connection that is open but silent holds up every other client of the daemon
//! (measured on Incus 6.0.4: 20–90 s stalls, and containers failing to start because their
//! pre-start hook cannot reach the daemon). An HTTP pool makes exactly such connections when it
//! races a new connection against a busy one. Alone in its own file: it counts this process's
//! sockets.

mod common;

use std::time::Duration;

/// This process's open sockets.
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_connection_stays_open_after_a_burst_of_concurrent_calls() {
    let client = common::client().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = sockets();

    // Concurrent calls: each one finds the others' connections busy and dials its own.
    let mut calls = 0;
    for _ in 0..20 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..8 {
            let c = client.clone();
            set.spawn(async move {
                if i % 2 == 0 {
                    c.list_instances().await.map(|_| ())
                } else {
                    c.running_operations().await.map(|_| ())
                }
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("a call to the daemon");
            calls += 1;
        }
    }
    assert_eq!(calls, 160);
    // Connections that were still dialling when their call was served by another finish now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sockets();
    assert!(
        after <= before,
        "{} sockets left open after {calls} calls ({before} before): idle connections on the \
         daemon's socket stall its accept loop",
        after.saturating_sub(before)
    );

    // And the daemon answers another client at once (a fresh connection, nothing pooled).
    let other = common::client().await;
    tokio::time::timeout(Duration::from_secs(10), other.list_instances())
        .await
        .expect("the daemon accepts a new client")
        .expect("listing instances");
}
