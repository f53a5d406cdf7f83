//! Running a command of the machine (`incus`, `sh`, ...) from a test.

use std::process::Command;

/// Runs `command` to its end and asserts that it succeeded, naming it and its standard error
/// when not; its standard output.
pub fn stdout_of(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not run: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
