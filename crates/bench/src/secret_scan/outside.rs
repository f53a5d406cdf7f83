//! Outside commands: programs run with a bound, `incus`, and the process list of an instance.

use super::*;

pub(super) struct Output {
    pub(super) code: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

pub(super) async fn command(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("NO_COLOR", "1");
    for name in [
        "RUNNER_MANAGER_GITHUB_TOKEN",
        "RUNNER_MANAGER_SERVICE_TOKEN",
        "RUNNER_MANAGER_API_TOKEN",
        "RUNNER_MANAGER_WEBHOOK_SECRET",
        "RUNNER_MANAGER_CONFIG",
    ] {
        command.env_remove(name);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .with_context(|| format!("{} {args:?} timed out", program.display()))?
        .with_context(|| format!("running {}", program.display()))?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

pub(super) async fn incus(args: &[&str]) -> anyhow::Result<String> {
    let out = command(Path::new("incus"), args, &[]).await?;
    anyhow::ensure!(
        out.code == Some(0),
        "incus {args:?} exited {:?}: {}",
        out.code,
        out.stderr
    );
    Ok(out.stdout)
}

/// `/proc/*/cmdline` and `/proc/*/environ` of every process in `instance`.
const PROC_DUMP: &str = r#"for p in /proc/[0-9]*; do
  [ -r "$p/cmdline" ] || continue
  printf '\n@@PID %s\n' "${p#/proc/}"
  tr '\000' ' ' < "$p/cmdline" 2>/dev/null
  printf '\n@@ENV\n'
  tr '\000' '\n' < "$p/environ" 2>/dev/null
done"#;

/// `(pid, cmdline, environ)` of every process in `instance`.
pub(super) async fn processes(instance: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let out = incus(&["exec", instance, "--", "sh", "-c", PROC_DUMP]).await?;
    let mut result = Vec::new();
    for chunk in out.split("\n@@PID ").skip(1) {
        let (pid, rest) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let (cmdline, environ) = rest.split_once("\n@@ENV\n").unwrap_or((rest, ""));
        result.push((
            pid.trim().to_owned(),
            cmdline.trim().to_owned(),
            environ.to_owned(),
        ));
    }
    Ok(result)
}
