//! `GET /_sim/secrets` (and `SimHandle::issued_secrets`): every registration token, remove
//! token, JIT config and runner credential the sim handed out, for secret scans; and the
//! published-checksum override of the downloads endpoint (tampering tests).

mod common;

use common::*;
use github_sim::{IssuedSecrets, SimConfig};
use reqwest::Method;
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn lists_every_issued_secret_in_order() {
    let sim = start(SimConfig::default()).await;
    let empty = admin_json(&sim, "/secrets").await;
    let empty: IssuedSecrets = serde_json::from_value(empty).expect("IssuedSecrets");
    assert_eq!(empty, IssuedSecrets::default());

    let first = registration_token(&sim, &org()).await;
    let (_, credential) = register_with(&sim, &first, &org(), "r-1", &["x"], false).await;
    let second = registration_token(&sim, &org()).await;
    let remove = scope_token(&sim, &org(), "remove-token").await;
    let jit = send(
        api(
            &sim,
            Method::POST,
            &format!("{}/generate-jitconfig", org().runners_path()),
        )
        .json(&json!({"name": "jit-1", "runner_group_id": 1, "labels": ["self-hosted"]})),
    )
    .await;
    assert_eq!(jit.status(), 201);
    let encoded = text(&json(jit).await, "encoded_jit_config");

    let listed = admin_json(&sim, "/secrets").await;
    let listed: IssuedSecrets = serde_json::from_value(listed).expect("IssuedSecrets");
    assert_eq!(listed.registration_tokens, [first, second]);
    assert_eq!(listed.remove_tokens, [remove]);
    assert_eq!(listed.jit_configs, [encoded]);
    assert_eq!(listed.runner_credentials.len(), 2, "{listed:?}");
    assert_eq!(listed.runner_credentials[0], credential);
    assert!(listed.runner_credentials[1].starts_with("simcred_"));
    assert_eq!(sim.issued_secrets(), listed);
}

#[tokio::test]
async fn published_checksum_can_be_overridden() {
    let tarball = b"bytes".to_vec();
    let real = hex::encode(Sha256::digest(&tarball));
    let fake = "ab".repeat(32);
    for (config, expected) in [
        (
            SimConfig::default().with_runner_tarball(tarball.clone(), "2.330.0"),
            real.clone(),
        ),
        (
            SimConfig::default()
                .with_runner_tarball(tarball.clone(), "2.330.0")
                .with_published_checksum(fake.clone()),
            fake.clone(),
        ),
    ] {
        let sim = start(config).await;
        let list = get_json(&sim, &format!("{}/downloads", org().runners_path())).await;
        let linux = linux_x64(&list);
        assert_eq!(linux["sha256_checksum"], expected.as_str());
        // The served bytes are the real tarball either way.
        let bytes = download(linux["download_url"].as_str().expect("url")).await;
        assert_eq!(bytes.as_ref(), tarball.as_slice());
    }
}
