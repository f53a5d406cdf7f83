//! `GET /_sim/secrets` (and `SimHandle::issued_secrets`): every registration token, remove
//! token, JIT config and runner credential the sim handed out, for secret scans; and the
//! published-checksum override of the downloads endpoint (tampering tests).

mod common;

use common::*;
use github_sim::{IssuedSecrets, Scope, SimConfig};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn org() -> Scope {
    Scope::org("octo-org")
}

#[tokio::test]
async fn lists_every_issued_secret_in_order() {
    let sim = start(SimConfig::default()).await;
    let empty = json(
        client()
            .get(format!("{}/_sim/secrets", sim.base_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
    let empty: IssuedSecrets = serde_json::from_value(empty).expect("IssuedSecrets");
    assert_eq!(empty, IssuedSecrets::default());

    let first = registration_token(&sim, &org()).await;
    let (_, credential) = register_with(&sim, &first, &org(), "r-1", &["x"], false).await;
    let second = registration_token(&sim, &org()).await;
    let remove = api(
        &sim,
        Method::POST,
        &format!("{}/remove-token", org().runners_path()),
    )
    .send()
    .await
    .expect("send");
    assert_eq!(remove.status(), 201);
    let remove = json(remove).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let jit = api(
        &sim,
        Method::POST,
        &format!("{}/generate-jitconfig", org().runners_path()),
    )
    .json(&json!({"name": "jit-1", "runner_group_id": 1, "labels": ["self-hosted"]}))
    .send()
    .await
    .expect("send");
    assert_eq!(jit.status(), 201);
    let encoded = json(jit).await["encoded_jit_config"]
        .as_str()
        .expect("config")
        .to_owned();

    let listed: Value = json(
        client()
            .get(format!("{}/_sim/secrets", sim.base_url()))
            .send()
            .await
            .expect("send"),
    )
    .await;
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
        let linux = list
            .as_array()
            .expect("array")
            .iter()
            .find(|a| a["os"] == "linux" && a["architecture"] == "x64")
            .expect("linux x64")
            .clone();
        assert_eq!(linux["sha256_checksum"], expected.as_str());
        // The served bytes are the real tarball either way.
        let bytes = client()
            .get(linux["download_url"].as_str().expect("url"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(bytes.as_ref(), tarball.as_slice());
    }
}
