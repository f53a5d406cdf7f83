//! For the test binaries whose tests drive a real Incus daemon.
//!
//! Those tests are `#[ignore = "needs Incus: run by scripts/test.sh"]`: a plain `cargo test`
//! reports them as ignored, never as passed, and `scripts/test.sh` runs them
//! (`--run-ignored all`). [`assert_only_these_run_by_default`] keeps it so: it lists the tests of
//! the test binary it is given (libtest's `--list`) and fails when any test other than the named
//! daemon-free ones would run without `--include-ignored`, e.g. a new Incus test that forgot its
//! `#[ignore]`, or one that returns early when no daemon is configured.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The tests of `binary`, from `<binary> --list --format terse [--ignored]`.
fn list(binary: &Path, ignored: bool) -> BTreeSet<String> {
    let mut command = Command::new(binary);
    command.args(["--list", "--format", "terse"]);
    if ignored {
        command.arg("--ignored");
    }
    let output = command.output().expect("the test binary lists its tests");
    assert!(
        output.status.success(),
        "{} --list: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the tests of `binary` (the calling test's own: `std::env::current_exe()`) which
/// run without `--include-ignored` are exactly `names` (tests that need no daemon), and that the
/// binary has ignored tests (the Incus ones).
pub fn assert_only_these_run_by_default(binary: &Path, names: &[&str]) {
    let all = list(binary, false);
    let ignored = list(binary, true);
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

/// [`assert_only_these_run_by_default`] for the calling test's own binary.
pub fn assert_only_these_run_here(names: &[&str]) {
    let binary = std::env::current_exe().expect("the test binary");
    assert_only_these_run_by_default(&binary, names);
}
