//! R5 check 3: tampered runner tarballs against the manager's update and re-verification path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::{random_string, Options, Outcome, Row};

const GOOD_VERSION: &str = "2.330.0";
const NEW_VERSION: &str = "2.331.0";

/// A gzip tarball (compressed at `level`) of 0755 `files`.
fn gz_tarball(files: &[(&str, &[u8])], level: flate2::Compression) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), level));
    for (name, content) in files {
        crate::fleet::append_executable(&mut builder, name, content)?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// A valid runner tarball (`config.sh`, `run.sh`, and some payload) for `version`.
fn runner_tarball(version: &str) -> anyhow::Result<Vec<u8>> {
    let payload: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    gz_tarball(
        &[
            ("./config.sh", b"#!/bin/sh\necho config\n"),
            ("./run.sh", b"#!/bin/sh\necho run\n"),
            ("./bin/version", version.as_bytes()),
            ("./bin/payload", &payload),
        ],
        flate2::Compression::default(),
    )
}

fn tarball_of(files: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    gz_tarball(files, flate2::Compression::fast())
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the sim serves and publishes in one case.
struct Served {
    kind: &'static str,
    bytes: Vec<u8>,
    /// Published instead of the real checksum (`None`: the real one).
    published: Option<String>,
}

/// A manager whose registry is the sim at `sim`, over the SIMULATION provider, with the
/// runner binary cache in `state`.
fn manager_for(
    sim: &github_sim::SimHandle,
    state: &Path,
) -> anyhow::Result<(
    manager::RunnerManager,
    Arc<manager::sim_provider::SimProvider>,
)> {
    let client = github::Client::new(crate::fleet::sim_client_config(
        &sim.api_url(),
        &sim.web_url(),
    )?)?;
    let provider = Arc::new(manager::sim_provider::SimProvider::new(
        manager::sim_provider::SimLatency::default(),
        None,
    ));
    let manager = crate::fleet::sim_manager(
        &sim.web_url(),
        "r5tar",
        state,
        &client,
        provider.clone(),
        |_| {},
    )?;
    Ok((manager, provider))
}

async fn start_sim(
    tarball: Vec<u8>,
    version: &str,
    published: Option<String>,
) -> anyhow::Result<github_sim::SimHandle> {
    let mut config = github_sim::SimConfig::default().with_runner_tarball(tarball, version);
    if let Some(sha) = published {
        config = config.with_published_checksum(sha);
    }
    Ok(github_sim::Sim::start(config).await?)
}

/// Files in the cache directory (names).
fn cache_files(state: &Path) -> BTreeSet<String> {
    std::fs::read_dir(state.join("runner-binary"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Installs `served` through the sim and the manager; `Ok(true)` when the manager took it.
/// With `previous`, a good binary is installed first (by a manager on another sim, same cache):
/// after a refusal it must still be the current one, byte for byte.
async fn try_update(served: &Served, previous: bool) -> anyhow::Result<(bool, String)> {
    let state = tempfile::tempdir()?;
    let good = runner_tarball(GOOD_VERSION)?;
    let good_sha = sha256(&good);
    if previous {
        let sim = start_sim(good.clone(), GOOD_VERSION, None).await?;
        let (manager, _) = manager_for(&sim, state.path())?;
        let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
        manager
            .update_runner_bin(&download)
            .await
            .context("installing the good binary first")?;
        sim.shutdown().await;
    }
    let sim = start_sim(served.bytes.clone(), NEW_VERSION, served.published.clone()).await?;
    let (manager, _) = manager_for(&sim, state.path())?;
    let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
    let result = manager.update_runner_bin(&download).await;
    sim.shutdown().await;
    let served_sha = sha256(&served.bytes);
    let current = manager.runner_bin();
    let files = cache_files(state.path());
    let took_it = result.is_ok()
        || current.as_ref().is_some_and(|c| c.sha256 != good_sha)
        || files
            .iter()
            .any(|f| f.contains(&served_sha) && served_sha != good_sha)
        || files.iter().any(|f| f.starts_with(".download-"));
    let previous_intact = !previous
        || (current.as_ref().is_some_and(|c| c.sha256 == good_sha)
            && std::fs::read(
                state
                    .path()
                    .join("runner-binary")
                    .join(format!("runner-{good_sha}.tar.gz")),
            )
            .is_ok_and(|bytes| bytes == good));
    let detail = match &result {
        Ok(cached) => format!("ACCEPTED as {}", cached.sha256),
        Err(err) => format!("{err}"),
    };
    Ok((took_it || !previous_intact, detail))
}

/// Installs a good binary, replaces the cached file with `tampered`, then runs a reconcile that
/// needs to create a runner: it must fail before creating anything.
async fn cache_swap(tampered: Option<&[u8]>) -> anyhow::Result<(bool, String)> {
    let state = tempfile::tempdir()?;
    let good = runner_tarball(GOOD_VERSION)?;
    let sim = start_sim(good.clone(), GOOD_VERSION, None).await?;
    let (manager, provider) = manager_for(&sim, state.path())?;
    let download = manager.get_latest_runner_bin_url("linux", "x64").await?;
    let cached = manager.update_runner_bin(&download).await?;
    if let Some(bytes) = tampered {
        let path = state
            .path()
            .join("runner-binary")
            .join(format!("runner-{}.tar.gz", cached.sha256));
        std::fs::write(&path, bytes)?;
    }
    let resources = manager::Resources::new(1, "256MiB", "1GiB")?;
    let result =
        tokio::time::timeout(Duration::from_secs(30), manager.reconcile(1, &resources)).await;
    sim.shutdown().await;
    let created = provider.instance_names().len();
    let detail = match &result {
        Err(_) => "reconcile timed out".to_owned(),
        Ok(Ok(report)) => format!("reconcile created {}", report.created.len()),
        Ok(Err(err)) => format!("{err}"),
    };
    Ok((created > 0, detail))
}

pub(super) async fn tarballs(options: &Options, outcome: &mut Outcome) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x5441_5242_414c_4c53);
    let scale = options.tarball_scale();
    let original = runner_tarball(NEW_VERSION)?;
    let original_sha = sha256(&original);
    let other_version = runner_tarball("2.999.0")?;
    let mut cases: Vec<Served> = Vec::new();
    for _ in 0..10 * scale {
        let mut bytes = original.clone();
        let at = rng.random_range(0..bytes.len());
        bytes[at] ^= 1 << rng.random_range(0..8);
        cases.push(Served {
            kind: "flipped byte (published: original checksum)",
            bytes,
            published: Some(original_sha.clone()),
        });
    }
    for _ in 0..5 * scale {
        let cut = rng.random_range(1..original.len());
        cases.push(Served {
            kind: "truncated (published: original checksum)",
            bytes: original[..cut].to_vec(),
            published: Some(original_sha.clone()),
        });
    }
    for _ in 0..scale {
        cases.push(Served {
            kind: "empty file (published: original checksum)",
            bytes: Vec::new(),
            published: Some(original_sha.clone()),
        });
        cases.push(Served {
            kind: "empty file (published: its own checksum)",
            bytes: Vec::new(),
            published: None,
        });
    }
    for _ in 0..4 * scale {
        let mut wrong = original_sha.clone().into_bytes();
        let at = rng.random_range(0..wrong.len());
        wrong[at] = if wrong[at] == b'0' { b'1' } else { b'0' };
        cases.push(Served {
            kind: "wrong checksum published (one hex digit)",
            bytes: original.clone(),
            published: Some(String::from_utf8_lossy(&wrong).into_owned()),
        });
        cases.push(Served {
            kind: "wrong checksum published (random)",
            bytes: original.clone(),
            published: Some(random_string(&mut rng, b"0123456789abcdef", 64)),
        });
    }
    for published in ["", "   ", "not-hex", &original_sha[..32]] {
        for _ in 0..scale {
            cases.push(Served {
                kind: "empty / malformed checksum published",
                bytes: original.clone(),
                published: Some(published.to_owned()),
            });
        }
    }
    for _ in 0..3 * scale {
        cases.push(Served {
            kind: "checksum of another version published",
            bytes: original.clone(),
            published: Some(sha256(&other_version)),
        });
        cases.push(Served {
            kind: "another version served (published: this one's)",
            bytes: other_version.clone(),
            published: Some(original_sha.clone()),
        });
    }
    // Checksums that match what is served, but not a runner tarball: the format check.
    for _ in 0..scale {
        let cut = original.len() / 2 + rng.random_range(0..original.len() / 4);
        for (kind, bytes) in [
            (
                "not gzip (its own checksum)",
                b"#!/bin/sh\necho not a tarball\n".to_vec(),
            ),
            ("gzip, not tar (its own checksum)", {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut encoder, &[7u8; 4096])?;
                encoder.finish()?
            }),
            (
                "tar without run.sh (its own checksum)",
                tarball_of(&[("./config.sh", b"#!/bin/sh\n")])?,
            ),
            (
                "tar without config.sh (its own checksum)",
                tarball_of(&[("./run.sh", b"#!/bin/sh\n"), ("./bin/x", b"x")])?,
            ),
            (
                "scripts not at the root (its own checksum)",
                tarball_of(&[("./sub/config.sh", b"x"), ("./sub/run.sh", b"x")])?,
            ),
            (
                "truncated mid-archive (its own checksum)",
                original[..cut].to_vec(),
            ),
        ] {
            cases.push(Served {
                kind,
                bytes,
                published: None,
            });
        }
    }

    let mut installed = 0u64;
    let mut by_kind: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    let mut refusals: BTreeMap<String, u64> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        // Alternate: an empty cache, and a cache holding a good older binary.
        let (took, detail) = try_update(case, i % 2 == 1).await?;
        let entry = by_kind.entry(case.kind).or_default();
        entry.0 += 1;
        if took {
            installed += 1;
            entry.1 += 1;
            outcome.problem(format!(
                "tampered tarball installed: {} ({detail})",
                case.kind
            ));
        } else {
            let reason = detail
                .trim_start_matches("runner binary: ")
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            *refusals.entry(reason).or_default() += 1;
        }
    }

    // Cache replaced after verification: reconcile re-verifies before installing.
    let good = runner_tarball(GOOD_VERSION)?;
    let mut swaps: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for _ in 0..3 * scale {
        let mut flipped = good.clone();
        let at = rng.random_range(0..flipped.len());
        flipped[at] ^= 0x80;
        swaps.push(("cache file replaced: flipped byte", flipped));
        let cut = rng.random_range(1..good.len());
        swaps.push(("cache file replaced: truncated", good[..cut].to_vec()));
    }
    for _ in 0..scale {
        swaps.push(("cache file replaced: empty", Vec::new()));
        swaps.push((
            "cache file replaced: another valid tarball",
            other_version.clone(),
        ));
    }
    let mut swap_installed = 0u64;
    for (kind, bytes) in &swaps {
        let (created, detail) = cache_swap(Some(bytes)).await?;
        let entry = by_kind.entry(kind).or_default();
        entry.0 += 1;
        if created || !detail.contains("no longer matches its checksum") {
            swap_installed += u64::from(created);
            entry.1 += 1;
            outcome.problem(format!("{kind}: {detail}"));
        } else {
            *refusals
                .entry("reconcile: cached runner binary no longer matches its checksum".into())
                .or_default() += 1;
        }
    }

    // Controls: the same paths accept a correct tarball.
    let control_update = Served {
        kind: "control",
        bytes: original.clone(),
        published: None,
    };
    let mut control_failures = 0u64;
    for previous in [false, true] {
        let (took, detail) = try_update(&control_update, previous).await?;
        // `took` is true when the new binary became current: that is what a control wants.
        if !took || !detail.starts_with("ACCEPTED") {
            control_failures += 1;
            outcome.problem(format!("control: a correct tarball was refused: {detail}"));
        }
    }
    let (created, detail) = cache_swap(None).await?;
    if !created {
        control_failures += 1;
        outcome.problem(format!(
            "control: reconcile with an intact cache created nothing: {detail}"
        ));
    }

    let total = (cases.len() + swaps.len()) as u64;
    let kinds: Vec<String> = by_kind
        .iter()
        .map(|(k, (n, _))| format!("{k} ×{n}"))
        .collect();
    let reasons: Vec<String> = refusals.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
    outcome.rows.push(Row {
        check: "tampered runner tarball (update_runner_bin, reconcile re-verify)".into(),
        cases: total,
        failures: by_kind.values().map(|(_, f)| f).sum::<u64>() + control_failures,
        evidence: format!(
            "installed {} of {total} (downloads {installed}, cache swaps {swap_installed}); refused by: {}; controls: correct tarball accepted on an empty cache and over an older one, intact cache → reconcile created 1 ({} control failures). Cases: {}",
            installed + swap_installed,
            reasons.join(", "),
            control_failures,
            kinds.join(", ")
        ),
    });
    Ok(())
}
