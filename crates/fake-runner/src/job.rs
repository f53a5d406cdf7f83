//! Runs one job the way the real runner's worker does, reduced to what the simulator needs:
//! the started hook, the script (`sh -c`), the completed hook, all with the job's `GITHUB_*`
//! environment, one combined output and one deadline.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Completion, Conclusion, Job};
use crate::sys;
use crate::Env;

/// The most output reported; the tail is kept.
const OUTPUT_LIMIT: usize = 1024 * 1024;
/// Exit code reported when the job's timeout killed it (as coreutils `timeout`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code reported when the runner was stopped (SIGTERM/SIGINT) during the job.
pub const EXIT_CANCELLED: i32 = 143;
/// Exit code reported when `sh` could not be started.
pub const EXIT_NOT_STARTED: i32 = 127;
/// How long a process gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// The completed hook runs even after a timeout; this bounds it.
const COMPLETED_HOOK_LIMIT: Duration = Duration::from_secs(300);

/// What a job runs with.
pub struct JobContext<'a> {
    pub root: &'a Path,
    /// Absolute work folder (`.runner`'s `workFolder`, relative to the root).
    pub work_folder: PathBuf,
    pub runner_name: &'a str,
    /// The listener's environment, `.env` included.
    pub env: &'a Env,
}

enum ChildEnd {
    Exited(i32),
    TimedOut,
    Cancelled,
    NotStarted(std::io::Error),
}

/// Runs `job`; `stop()` turning true cancels it. Never fails: every problem becomes a failed job.
pub fn run_job(job: &Job, ctx: &JobContext, stop: &dyn Fn() -> bool) -> Completion {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(job.timeout_seconds.max(1));
    let repo = job
        .env
        .get("GITHUB_REPOSITORY")
        .and_then(|r| r.rsplit('/').next())
        .filter(|r| !r.is_empty() && *r != "." && *r != "..")
        .unwrap_or("workspace")
        .to_string();
    let runner_workspace = ctx.work_folder.join(&repo);
    let workspace = runner_workspace.join(&repo);
    let temp = ctx.work_folder.join("_temp");
    let event_path = temp.join("_github_workflow").join("event.json");
    let output_path = temp.join(format!("_runner_output_{}.log", job.job_id));

    let prepared = (|| -> std::io::Result<fs::File> {
        fs::create_dir_all(&workspace)?;
        fs::create_dir_all(event_path.parent().unwrap_or(&temp))?;
        let event = if job.event.is_null() {
            serde_json::json!({})
        } else {
            job.event.clone()
        };
        fs::write(&event_path, serde_json::to_vec_pretty(&event)?)?;
        fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&output_path)
    })();
    let mut output = match prepared {
        Ok(f) => f,
        Err(e) => {
            return Completion {
                exit_code: EXIT_NOT_STARTED,
                output: format!("##[error]preparing the job directories: {e}\n"),
                conclusion: Conclusion::Failure,
            }
        }
    };

    let env = job_env(job, ctx, &runner_workspace, &workspace, &temp, &event_path);
    let run = |output: &mut fs::File, args: &[&str], deadline: Instant| -> ChildEnd {
        let (out, err) = match (output.try_clone(), output.try_clone()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => return ChildEnd::NotStarted(e),
        };
        let mut cmd = Command::new(shell());
        cmd.args(args)
            .env_clear()
            .envs(&env)
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        run_child(cmd, deadline, stop)
    };

    let hook = |name: &str| env.get(name).filter(|p| !p.trim().is_empty()).cloned();
    let step_failure = |end: ChildEnd, output: &mut fs::File, what: &str| -> Option<i32> {
        step_failure(end, output, what, ctx.runner_name, job.timeout_seconds)
    };
    // The first failure decides the reported exit code.
    let mut failure: Option<i32> = None;

    // Set up runner: the job started hook.
    if let Some(path) = hook("ACTIONS_RUNNER_HOOK_JOB_STARTED") {
        let _ = writeln!(
            output,
            "A job started hook has been configured by the self-hosted runner administrator\n##[group]Run '{path}'"
        );
        let end = run(&mut output, &["-e", &path], deadline);
        failure = step_failure(end, &mut output, "the job started hook");
        append(&mut output, "##[endgroup]");
    }
    // The job's steps: its script.
    if failure.is_none() {
        let end = run(&mut output, &["-c", &job.script], deadline);
        failure = step_failure(end, &mut output, "script");
    }
    // Complete runner: the job completed hook, also after a failure or a timeout.
    if let Some(path) = hook("ACTIONS_RUNNER_HOOK_JOB_COMPLETED").filter(|_| !stop()) {
        append(
            &mut output,
            &format!("A job completed hook has been configured by the self-hosted runner administrator\n##[group]Run '{path}'"),
        );
        let limit = COMPLETED_HOOK_LIMIT.min(Duration::from_secs(job.timeout_seconds.max(1)));
        let end = run(&mut output, &["-e", &path], Instant::now() + limit);
        let hook_failure = step_failure(end, &mut output, "the job completed hook");
        failure = failure.or(hook_failure);
        append(&mut output, "##[endgroup]");
    }

    let text = read_tail(&mut output, OUTPUT_LIMIT);
    drop(output);
    let _ = fs::remove_file(&output_path);
    match failure {
        None => Completion {
            exit_code: 0,
            output: text,
            conclusion: Conclusion::Success,
        },
        Some(code) => Completion {
            exit_code: if code == 0 { 1 } else { code },
            output: text,
            conclusion: Conclusion::Failure,
        },
    }
}

fn append(output: &mut fs::File, line: &str) {
    let _ = output.seek(SeekFrom::End(0));
    let _ = writeln!(output, "{line}");
}

/// `None` when the step succeeded, else the exit code to report (with an error line in the
/// output, except for a script's plain non-zero exit).
fn step_failure(
    end: ChildEnd,
    output: &mut fs::File,
    what: &str,
    runner: &str,
    timeout: u64,
) -> Option<i32> {
    match end {
        ChildEnd::Exited(0) => None,
        ChildEnd::Exited(code) => {
            if what != "script" {
                append(
                    output,
                    &format!("##[error]Process completed with exit code {code}."),
                );
            }
            Some(code)
        }
        ChildEnd::TimedOut => {
            append(
                output,
                &format!("##[error]The job running on runner {runner} has exceeded the maximum execution time of {timeout} seconds."),
            );
            Some(EXIT_TIMED_OUT)
        }
        ChildEnd::Cancelled => {
            append(
                output,
                "##[error]The runner has received a shutdown signal. The job was cancelled.",
            );
            Some(EXIT_CANCELLED)
        }
        ChildEnd::NotStarted(e) => {
            append(output, &format!("##[error]could not start {what}: {e}"));
            Some(EXIT_NOT_STARTED)
        }
    }
}

/// `/bin/sh` when present (busybox, Debian), else `sh` from `PATH`.
fn shell() -> &'static str {
    if Path::new("/bin/sh").exists() {
        "/bin/sh"
    } else {
        "sh"
    }
}

/// The job's environment: the listener's (without `ACTIONS_RUNNER_INPUT_*`), proxies in both
/// casings, `PATH` from `.path`, the job's `GITHUB_*` and the runner's own variables.
fn job_env(
    job: &Job,
    ctx: &JobContext,
    runner_workspace: &Path,
    workspace: &Path,
    temp: &Path,
    event_path: &Path,
) -> Env {
    let mut env: Env = ctx
        .env
        .iter()
        .filter(|(k, _)| !k.to_ascii_uppercase().starts_with("ACTIONS_RUNNER_INPUT_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (lower, upper) in [
        ("http_proxy", "HTTP_PROXY"),
        ("https_proxy", "HTTPS_PROXY"),
        ("no_proxy", "NO_PROXY"),
    ] {
        if let Some(v) = ctx.env.get(lower).or_else(|| ctx.env.get(upper)).cloned() {
            env.insert(lower.to_string(), v.clone());
            env.insert(upper.to_string(), v);
        }
    }
    if let Ok(path) = fs::read_to_string(ctx.root.join(".path")) {
        let path = path.trim();
        if !path.is_empty() {
            env.insert("PATH".to_string(), path.to_string());
        }
    }
    env.entry("PATH".to_string()).or_insert_with(|| {
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
    });
    env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let fixed = [
        ("CI", "true".to_string()),
        ("GITHUB_ACTIONS", "true".to_string()),
        ("RUNNER_NAME", ctx.runner_name.to_string()),
        ("RUNNER_OS", "Linux".to_string()),
        ("RUNNER_ARCH", "X64".to_string()),
        ("RUNNER_ENVIRONMENT", "self-hosted".to_string()),
        ("RUNNER_TEMP", path(temp)),
        ("RUNNER_WORKSPACE", path(runner_workspace)),
        ("GITHUB_WORKSPACE", path(workspace)),
        ("GITHUB_EVENT_PATH", path(event_path)),
    ];
    env.extend(fixed.into_iter().map(|(k, v)| (k.to_string(), v)));
    let defaults = [
        ("GITHUB_EVENT_NAME", job.event_name.clone()),
        ("GITHUB_RUN_ID", job.run_id.to_string()),
        ("GITHUB_JOB", format!("job-{}", job.job_id)),
    ];
    for (k, v) in defaults {
        if !v.is_empty() {
            env.entry(k.to_string()).or_insert(v);
        }
    }
    env
}

/// Runs `cmd` in its own process group until it exits, the deadline passes or `stop()`.
/// Whatever the job left running in its group is killed afterwards.
fn run_child(mut cmd: Command, deadline: Instant, stop: &dyn Fn() -> bool) -> ChildEnd {
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ChildEnd::NotStarted(e),
    };
    let pgid = child.id();
    let end = loop {
        match child.try_wait() {
            Ok(Some(status)) => break ChildEnd::Exited(exit_code(status)),
            Ok(None) => {}
            Err(e) => {
                terminate(&mut child, pgid);
                break ChildEnd::NotStarted(e);
            }
        }
        if stop() {
            terminate(&mut child, pgid);
            break ChildEnd::Cancelled;
        }
        if Instant::now() >= deadline {
            terminate(&mut child, pgid);
            break ChildEnd::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    sys::kill_group(pgid, sys::SIGKILL);
    end
}

/// SIGTERM to the group, then SIGKILL after a grace period.
fn terminate(child: &mut std::process::Child, pgid: u32) {
    sys::kill_group(pgid, sys::SIGTERM);
    let until = Instant::now() + KILL_GRACE;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    sys::kill_group(pgid, sys::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The last `limit` bytes of the output file, as (lossy) UTF-8.
fn read_tail(file: &mut fs::File, limit: usize) -> String {
    let len = file.seek(SeekFrom::End(0)).unwrap_or_default();
    let limit_u64 = u64::try_from(limit).unwrap_or(u64::MAX);
    let start = len.saturating_sub(limit_u64);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.read_to_end(&mut bytes);
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        format!("[output truncated to its last {limit} bytes]\n{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn job(script: &str, timeout: u64) -> Job {
        let mut env = BTreeMap::new();
        env.insert("GITHUB_REPOSITORY".to_string(), "octo/hello".to_string());
        env.insert("GITHUB_EVENT_NAME".to_string(), "push".to_string());
        Job {
            job_id: 42,
            run_id: 7,
            script: script.to_string(),
            timeout_seconds: timeout,
            labels: vec![],
            env,
            event_name: "push".to_string(),
            event: serde_json::json!({"ref": "refs/heads/main"}),
        }
    }

    fn run(
        script: &str,
        timeout: u64,
        extra_env: &[(&str, &str)],
    ) -> (Completion, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_default(),
        );
        env.insert(
            "ACTIONS_RUNNER_INPUT_TOKEN".to_string(),
            "s3cret".to_string(),
        );
        env.insert("http_proxy".to_string(), "http://p:1".to_string());
        for (k, v) in extra_env {
            env.insert(k.to_string(), v.to_string());
        }
        let ctx = JobContext {
            root: dir.path(),
            work_folder: dir.path().join("_work"),
            runner_name: "r1",
            env: &env,
        };
        let done = run_job(&job(script, timeout), &ctx, &|| false);
        (done, dir)
    }

    #[test]
    fn script_output_exit_code_and_environment() {
        let (done, dir) = run(
            "echo out; echo err >&2; echo \"$GITHUB_REPOSITORY $RUNNER_NAME $HTTP_PROXY [$ACTIONS_RUNNER_INPUT_TOKEN]\"; cat \"$GITHUB_EVENT_PATH\" | tr -d ' \\n'; echo; pwd; exit 3",
            30,
            &[],
        );
        assert_eq!(done.exit_code, 3);
        assert_eq!(done.conclusion, Conclusion::Failure);
        let ws = dir.path().join("_work/hello/hello");
        assert_eq!(
            done.output,
            format!(
                "out\nerr\nocto/hello r1 http://p:1 []\n{{\"ref\":\"refs/heads/main\"}}\n{}\n",
                ws.display()
            )
        );
    }

    #[test]
    fn success_and_timeout() {
        let (done, _d) = run("echo ok", 30, &[]);
        assert_eq!(
            (done.exit_code, done.conclusion, done.output.as_str()),
            (0, Conclusion::Success, "ok\n")
        );
        let started = Instant::now();
        let (done, _d) = run("echo before; sleep 30 & sleep 30; echo after", 1, &[]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "killed in time"
        );
        assert_eq!(done.exit_code, EXIT_TIMED_OUT);
        assert_eq!(done.conclusion, Conclusion::Failure);
        assert!(done.output.starts_with("before\n"), "{}", done.output);
        assert!(
            done.output.contains("exceeded the maximum execution time"),
            "{}",
            done.output
        );
        assert!(!done.output.contains("after"));
    }

    /// `echo script` with a job-started hook running `pre` and a job-completed hook `post`.
    fn run_with_hooks(pre: &str, post: &str) -> Completion {
        let dir = tempfile::tempdir().expect("tempdir");
        let pre_path = dir.path().join("pre.sh");
        let post_path = dir.path().join("post.sh");
        fs::write(&pre_path, pre).expect("write");
        fs::write(&post_path, post).expect("write");
        let (done, _d) = run(
            "echo script",
            30,
            &[
                (
                    "ACTIONS_RUNNER_HOOK_JOB_STARTED",
                    &pre_path.to_string_lossy(),
                ),
                (
                    "ACTIONS_RUNNER_HOOK_JOB_COMPLETED",
                    &post_path.to_string_lossy(),
                ),
            ],
        );
        done
    }

    #[test]
    fn failing_started_hook_skips_the_script_and_fails_the_job() {
        let done = run_with_hooks(
            "echo pre $GITHUB_REPOSITORY\nfalse\necho unreachable\n",
            "echo post\n",
        );
        assert_eq!(done.conclusion, Conclusion::Failure);
        assert_eq!(done.exit_code, 1);
        assert!(done.output.contains("pre octo/hello\n"), "{}", done.output);
        assert!(
            done.output.contains("Process completed with exit code 1."),
            "{}",
            done.output
        );
        assert!(!done.output.contains("script"), "{}", done.output);
        assert!(!done.output.contains("unreachable"), "{}", done.output);
        assert!(done.output.contains("post\n"), "{}", done.output);
    }

    #[test]
    fn hooks_run_around_the_script() {
        let done = run_with_hooks("echo pre\n", "echo post; exit 4\n");
        let pre_at = done.output.find("pre\n").expect("pre");
        let script_at = done.output.find("script\n").expect("script");
        let post_at = done.output.find("post\n").expect("post");
        assert!(pre_at < script_at && script_at < post_at, "{}", done.output);
        assert_eq!((done.exit_code, done.conclusion), (4, Conclusion::Failure));
    }

    #[test]
    fn cancelled_by_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env: Env = BTreeMap::new();
        let ctx = JobContext {
            root: dir.path(),
            work_folder: dir.path().join("_work"),
            runner_name: "r1",
            env: &env,
        };
        let started = Instant::now();
        let done = run_job(&job("sleep 30", 60), &ctx, &|| {
            started.elapsed() > Duration::from_millis(300)
        });
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            (done.exit_code, done.conclusion),
            (EXIT_CANCELLED, Conclusion::Failure)
        );
    }

    #[test]
    fn output_tail_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o");
        fs::write(&path, "0123456789").expect("write");
        let mut f = fs::File::open(&path).expect("open");
        assert_eq!(
            read_tail(&mut f, 4),
            "[output truncated to its last 4 bytes]\n6789"
        );
        assert_eq!(read_tail(&mut f, 40), "0123456789");
    }
}
