//! Shared by the test binaries whose tests drive a real Incus daemon (included with `#[path]`).
//!
//! Those tests are `#[ignore = "needs Incus: run by scripts/test.sh"]`: a plain `cargo test`
//! reports them as ignored, never as passed, and `scripts/test.sh` runs them
//! (`--run-ignored all`). [`assert_only_these_run_by_default`] keeps it so: it lists the test
//! binary it runs in (libtest's `--list`) and fails when any test other than the named
//! daemon-free ones would run without `--include-ignored`, e.g. a new Incus test that forgot its
//! `#[ignore]`, or one that returns early when no daemon is configured.

use std::collections::BTreeSet;
use std::process::Command;

/// The tests of this binary, from `<binary> --list --format terse [--ignored]`.
fn list(ignored: bool) -> BTreeSet<String> {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(&exe);
    command.args(["--list", "--format", "terse"]);
    if ignored {
        command.arg("--ignored");
    }
    let output = command.output().expect("the test binary lists its tests");
    assert!(
        output.status.success(),
        "{} --list: {}",
        exe.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the tests which run without `--include-ignored` are exactly `names` (tests that
/// need no daemon), and that the binary has ignored tests (the Incus ones).
pub fn assert_only_these_run_by_default(names: &[&str]) {
    let all = list(false);
    let ignored = list(true);
    let by_default: BTreeSet<String> = all.difference(&ignored).cloned().collect();
    let expected: BTreeSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
    assert_eq!(
        by_default, expected,
        "only these tests may run without a daemon; every test that needs Incus must be \
         #[ignore = \"needs Incus: run by scripts/test.sh\"] (ignored: {ignored:?})"
    );
    assert!(
        !ignored.is_empty(),
        "no ignored test: where did the Incus tests go? (all: {all:?})"
    );
}
