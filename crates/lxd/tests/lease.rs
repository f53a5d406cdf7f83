//! The compare-and-swap primitive under the HA lease, on the real daemon (Incus by default; LXD
//! 5.0 with `LXD_SOCKET=/var/lib/lxd/unix.socket`): a profile's `user.*` keys read with their
//! ETag, written with `If-Match` (a stale ETag is refused with 412, nothing written), created
//! atomically (of concurrent creations exactly one succeeds). Profiles are named `lxdt-…` and
//! deleted by a guard even when a test fails.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{client, Cleanup};
use lxd::CasError;

const T: Duration = Duration::from_secs(10);

fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `name`'s keys and ETag, which must be there.
async fn read(c: &lxd::Client, name: &str) -> lxd::KeysAt {
    c.read_profile_keys(name, T)
        .await
        .expect("read")
        .unwrap_or_else(|| panic!("the profile {name} exists"))
}

#[tokio::test]
async fn a_stale_etag_is_refused_and_nothing_is_written() {
    let c = client().await;
    let g = Cleanup::new();
    let name = g.profile("lease");

    assert_eq!(c.read_profile_keys(&name, T).await.expect("read"), None);
    c.create_profile_keys(&name, &keys(&[("user.holder", "a"), ("user.seq", "1")]), T)
        .await
        .expect("create");
    let first = read(&c, &name).await;
    assert_eq!(first.keys, keys(&[("user.holder", "a"), ("user.seq", "1")]));
    assert!(!first.etag.as_str().is_empty());

    // A write at the current ETag passes and changes the ETag.
    c.write_profile_keys(
        &name,
        &keys(&[("user.holder", "a"), ("user.seq", "2")]),
        &first.etag,
        T,
    )
    .await
    .expect("a write at the current etag");
    let second = read(&c, &name).await;
    assert_eq!(second.keys["user.seq"], "2");
    assert_ne!(second.etag, first.etag, "the etag follows the content");

    // The same ETag again is stale: refused as "changed", and the keys stay.
    let stale = c
        .write_profile_keys(
            &name,
            &keys(&[("user.holder", "b"), ("user.seq", "9")]),
            &first.etag,
            T,
        )
        .await
        .expect_err("a stale etag");
    assert!(stale.is_changed(), "412 is typed: {stale:?}");
    let after = read(&c, &name).await;
    assert_eq!(after, second, "nothing was written");

    // Reading twice without a write gives the same ETag (a watcher compares them).
    let again = read(&c, &name).await;
    assert_eq!(again.etag, second.etag);

    // Creating it again is "changed" too; a deleted profile is not found.
    let exists = c
        .create_profile_keys(&name, &keys(&[("user.holder", "c")]), T)
        .await
        .expect_err("it exists");
    assert!(exists.is_changed(), "{exists:?}");
    c.delete_profile(&name).await.expect("delete");
    let gone = c
        .write_profile_keys(&name, &keys(&[("user.holder", "a")]), &second.etag, T)
        .await
        .expect_err("gone");
    assert!(
        matches!(&gone, CasError::Lxd { source, .. } if source.is_not_found()),
        "{gone:?}"
    );
}

#[tokio::test]
async fn of_concurrent_creations_exactly_one_wins() {
    let c = client().await;
    let g = Cleanup::new();
    for round in 0..5 {
        let name = g.profile(&format!("race{round}"));
        let attempts = (0..6).map(|i| {
            let c = c.clone();
            let name = name.clone();
            async move {
                let value = format!("m{i}");
                let result = c
                    .create_profile_keys(&name, &keys(&[("user.holder", &value)]), T)
                    .await;
                (value, result)
            }
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(v, _)| v)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for (_, r) in &results {
            if let Err(e) = r {
                assert!(e.is_changed(), "a loser is told it changed: {e:?}");
            }
        }
        let stored = read(&c, &name).await;
        assert_eq!(
            &stored.keys["user.holder"], winners[0],
            "the winner's keys are stored"
        );
    }
}

#[tokio::test]
async fn non_user_keys_are_refused_before_any_call() {
    let c = client().await;
    let err = c
        .create_profile_keys("lxdt-never", &keys(&[("limits.cpu", "1")]), T)
        .await
        .expect_err("not a user key");
    assert!(
        matches!(
            &err,
            CasError::Lxd {
                source: lxd::Error::Invalid { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        c.read_profile_keys("lxdt-never", T).await.expect("read"),
        None
    );
}
