//! The real binary: `check-config` with `[[pools]]`, and `check-config --route LABELS`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{runner_manager, Run};
use tempfile::TempDir;

const POOLS: &str = r#"
app_name = "ci"

[github]
path = "octo-org"
token = "ghp_ROUTE_SECRET"

[lxd]
image = "jammy"

[[pools]]
name = "small"
labels = ["small"]
min_idle = 1
max = 10
priority = 10

[[pools]]
name = "large"
instance_type = "container"
cpu = 8
memory = "32GiB"
labels = ["large"]
max = 4

[[pools]]
name = "big"
image = "noble"
labels = ["large"]
runner_group = "big-runners"
max = 2
"#;

const SINGLE: &str = r#"
[github]
path = "owner/repo"
token = "ghp_ROUTE_SECRET"

[runners]
quantity = 2
labels = ["gpu"]
"#;

/// `runner-manager --config <text> check-config <args>` with a clean environment.
fn check_config(text: &str, args: &[&str]) -> Run {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Run::of(
        runner_manager()
            .arg("--config")
            .arg(&path)
            .arg("check-config")
            .args(args),
        |bytes| String::from_utf8_lossy(bytes).into_owned(),
        &["ghp_ROUTE_SECRET"],
    )
}

/// [`check_config`] of a valid config: asserts it exits 0.
fn check_valid(text: &str, args: &[&str]) -> Run {
    let out = check_config(text, args);
    assert_eq!(out.code, 0, "a valid config: {}", out.stderr);
    out
}

fn rows(stderr: &str) -> Vec<&str> {
    stderr.lines().map(str::trim).collect()
}

/// Asserts that `row` is one of the (trimmed) lines `check-config` printed.
fn assert_row(out: &Run, row: &str) {
    assert!(
        rows(&out.stderr).contains(&row),
        "no row {row:?} in:\n{}",
        out.stderr
    );
}

#[test]
fn check_config_lists_the_pools() {
    let out = check_valid(POOLS, &[]);
    assert_row(&out, "pool small      1 to 10 x virtual-machine \"jammy\": 2 cpu, 7GiB memory, 10GiB disk, token registration, priority 10");
    assert_row(&out, "pool large      0 to 4 x container \"jammy\": 8 cpu, 32GiB memory, 10GiB disk, token registration, priority 0");
    assert_row(&out, "runner group \"big-runners\"");
    assert!(
        rows(&out.stderr)
            .iter()
            .any(|row| row.starts_with("labels ")
                && row.contains("runner-manager-pool:small")
                && row.contains("self-hosted")),
        "{}",
        out.stderr
    );
    assert_row(&out, "demand          stale after 600s, idle runners never replaced, queued jobs dropped after 86400s");
    assert!(!out.stderr.contains("route"), "no route without --route");
}

#[test]
fn route_to_the_one_matching_pool() {
    let out = check_valid(POOLS, &["--route", "self-hosted,small"]);
    assert_row(
        &out,
        "route           runs-on [self-hosted, small]: pool \"small\" (priority 10)",
    );
    assert!(!out.stderr.contains("then \""), "{}", out.stderr);
    assert!(
        out.stderr.contains("highest priority") && out.stderr.contains("a full pool passes"),
        "the note on priority and full pools: {}",
        out.stderr
    );
}

#[test]
fn route_to_several_pools_in_priority_order() {
    // Every pool matches: "small" by priority, then "big" and "large" by name.
    let out = check_valid(POOLS, &["--route", "self-hosted"]);
    assert_row(
        &out,
        "route           runs-on [self-hosted]: pool \"small\" (priority 10)",
    );
    assert_row(&out, "then \"big\" (priority 0), \"large\" (priority 0)");
    // Labels match ignoring case.
    let out = check_config(POOLS, &["--route", "Self-Hosted,LARGE"]);
    assert_row(
        &out,
        "route           runs-on [Self-Hosted, LARGE]: pool \"big\" (priority 0)",
    );
    assert_row(&out, "then \"large\" (priority 0)");
}

#[test]
fn route_with_no_matching_pool() {
    let out = check_valid(POOLS, &["--route", "self-hosted,gpu"]);
    assert_row(&out, "route           runs-on [self-hosted, gpu]: no pool matches (no pool's runners have all these labels)");
}

#[test]
fn route_as_json() {
    let out = check_valid(POOLS, &["--json", "--route", "self-hosted,large"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json["route"],
        serde_json::json!({
            "labels": ["self-hosted", "large"],
            "pool": "big",
            "candidates": [
                { "name": "big", "priority": 0 },
                { "name": "large", "priority": 0 },
            ],
        })
    );
    assert_eq!(json["pools"].as_array().unwrap().len(), 3);
    assert_eq!(json["pools"][2]["runner_group"], "big-runners");
    assert_eq!(json["pools"][0]["runner_group"], "default");
    assert_eq!(json["pools"][1]["max"], 4);
    assert_eq!(json["demand"]["delivery_check_seconds"], 300);
    // The summary's fields are all still there.
    assert_eq!(json["runner_name_prefix"], "ci-0-");

    let out = check_config(POOLS, &["--json", "--route", "gpu"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["route"]["pool"], serde_json::Value::Null);
    assert_eq!(json["route"]["candidates"], serde_json::json!([]));

    let out = check_config(POOLS, &["--json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(json.get("route").is_none());
}

#[test]
fn the_single_pool_form_routes_to_default() {
    let out = check_valid(SINGLE, &["--route", "self-hosted,gpu"]);
    assert!(
        rows(&out.stderr)
            .contains(&"route           runs-on [self-hosted, gpu]: pool \"default\" (priority 0)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("pool default "),
        "no pool rows: {}",
        out.stderr
    );
    let out = check_config(SINGLE, &["--route", "self-hosted,large"]);
    assert!(out.stderr.contains("no pool matches"), "{}", out.stderr);
    let out = check_config(SINGLE, &["--json"]);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["pools"], serde_json::json!([]));
    assert_eq!(json["quantity"], 2);
}

#[test]
fn pool_errors_exit_2_and_name_the_key() {
    let text = format!("{POOLS}\n[[pools]]\nname = \"small\"\nmax = 1\ncolour = \"red\"\n");
    let out = check_config(&text, &["--route", "self-hosted"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("pools[3].colour: unknown key"),
        "{}",
        out.stderr
    );
    let text = format!("{POOLS}\n[[pools]]\nname = \"small\"\nlabels = [\"other\"]\nmax = 1\n");
    let out = check_config(&text, &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("pools[3].name: duplicate pool name \"small\": also pools[0].name"),
        "{}",
        out.stderr
    );
}
