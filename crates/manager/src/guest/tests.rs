//! The guest scripts under every shell an image may have as `/bin/sh` (dash on Debian and Ubuntu,
//! bash, busybox sh), on a scratch root, and through `shellcheck --shell=sh`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// The shells a guest's `/bin/sh` may be. Each must be installed: a missing one fails the test
/// (CI installs dash, bash and busybox), it is never skipped.
pub(crate) const SHELLS: &[&[&str]] = &[&["dash"], &["bash", "--posix"], &["busybox", "sh"]];

/// Runs `script` with `sh -c` under `shell`; returns the exit code.
pub(crate) fn run(shell: &[&str], script: &str) -> i32 {
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{shell:?} must be installed to test guest scripts: {e}"));
    if !out.stderr.is_empty() {
        eprintln!("{shell:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.code().unwrap_or(-1)
}

/// `shellcheck --shell=sh` on `script`; panics with its findings. shellcheck must be installed.
pub(crate) fn shellcheck(name: &str, script: &str) {
    let mut child = Command::new("shellcheck")
        .args(["--shell=sh", "--severity=warning", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("shellcheck must be installed (apt-get install shellcheck): {e}")
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck --shell=sh finds problems in {name}:\n{}\n{}\n--- script ---\n{script}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An exec script (preamble + body) with every path below `root`.
fn rooted(body: &str, root: &std::path::Path) -> String {
    assemble(&root.display().to_string(), body, &[])
}

fn scratch() -> (tempfile::TempDir, impl Fn(&str) -> std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join(META_DIR.trim_start_matches('/'))).expect("mkdir");
    (dir, move |p: &str| root.join(p.trim_start_matches('/')))
}

/// A process that has exited (its pid is free, or reused much later).
fn gone_pid() -> u32 {
    let mut c = Command::new("true").spawn().expect("true");
    let pid = c.id();
    c.wait().expect("wait");
    pid
}

#[test]
fn every_script_passes_shellcheck() {
    for (name, script) in all_scripts() {
        shellcheck(name, &script);
    }
}

/// `sh -n`: the script parses under `shell`.
pub(crate) fn parses(shell: &[&str], script: &str) -> bool {
    Command::new(shell[0])
        .args(&shell[1..])
        .args(["-n", "-c", script])
        .status()
        .unwrap_or_else(|e| panic!("{shell:?} must be installed to test guest scripts: {e}"))
        .success()
}

#[test]
fn every_script_parses_under_every_shell() {
    for (name, script) in all_scripts() {
        for shell in SHELLS {
            assert!(parses(shell, &script), "{name} under {shell:?}");
        }
    }
}

/// The probe's answers, on a scratch root: installing, abandoned, alive, dead, finished.
#[test]
fn probe_tells_installing_from_abandoned_under_every_shell() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        let probe = || run(shell, &rooted(PROBE_SH, dir.path()));
        let mut live = Command::new("sleep").arg("30").spawn().expect("sleep");
        let gone = gone_pid();
        assert_eq!(probe(), 1, "{shell:?}: nothing there: abandoned");
        std::fs::write(at(SETUP_PID_FILE), live.id().to_string()).expect("write");
        assert_eq!(probe(), PROBE_NOT_STARTED, "{shell:?}: setup running");
        std::fs::write(at(SETUP_PID_FILE), gone.to_string()).expect("write");
        assert_eq!(probe(), 1, "{shell:?}: setup gone, never started");
        std::fs::write(at(PID_FILE), live.id().to_string()).expect("write");
        assert_eq!(probe(), 0, "{shell:?}: alive");
        std::fs::write(at(PID_FILE), gone.to_string()).expect("write");
        assert_eq!(probe(), 1, "{shell:?}: dead");
        std::fs::write(at(EXIT_FILE), "0\n").expect("write");
        assert_eq!(probe(), PROBE_FINISHED, "{shell:?}: finished");
        std::fs::write(at(EXIT_FILE), "143\n").expect("write");
        assert_eq!(probe(), 1, "{shell:?}: exited non-zero");
        live.kill().expect("kill");
        live.wait().expect("wait");
    }
}

/// A process started under `setsid` (like start.sh), returned once it leads its own process
/// group (a signal to the group sent before that would miss it).
pub(crate) fn session_leader(argv: &[&str]) -> std::process::Child {
    let mut leader = Command::new("setsid").args(argv).spawn().expect("setsid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", leader.id()))
            .expect("stat of the leader");
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split(' ').collect();
        let pgid: u32 = fields.get(3).and_then(|f| f.parse().ok()).unwrap_or(0);
        if pgid == leader.id() {
            return leader;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = leader.kill();
    let _ = leader.wait();
    panic!("setsid never made {argv:?} a group leader");
}

/// Waits up to 5 s for `done` to hold.
fn within_5s(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Waits up to 5 s for `child` to exit.
fn exits(child: &mut std::process::Child) -> bool {
    within_5s(|| child.try_wait().expect("wait").is_some())
}

/// The stop script signals the runner's whole process group. Under dash, `kill -TERM -- -PGID`
/// is rejected ("Illegal number: -") and nothing is signalled: this fails with that form.
#[test]
fn stop_signals_the_process_group_under_every_shell() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        // A session leader (like start.sh under setsid) with a child in its group.
        let mut leader = session_leader(&["sh", "-c", "sleep 60 & wait"]);
        let pgid = leader.id();
        std::fs::write(at(&format!("{META_DIR}/runner.pgid")), pgid.to_string()).expect("write");
        assert_eq!(run(shell, &rooted(STOP_SH, dir.path())), 0, "{shell:?}");
        assert!(
            exits(&mut leader),
            "{shell:?}: the runner's process group was not signalled"
        );
    }
}

#[test]
fn stop_without_a_runner_is_harmless() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        assert_eq!(run(shell, &rooted(STOP_SH, dir.path())), 0, "{shell:?}");
        std::fs::write(at(PID_FILE), gone_pid().to_string()).expect("write");
        assert_eq!(run(shell, &rooted(STOP_SH, dir.path())), 0, "{shell:?}");
    }
}

/// The in-guest truth: a job started and not completed is a running job, whatever GitHub says.
#[test]
fn quiesce_reads_the_hook_records_under_every_shell() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        let check = || run(shell, &rooted(QUIESCE_SH, dir.path()));
        assert_eq!(check(), 0, "{shell:?}: no job yet");
        std::fs::write(at(PRE_JOB_FILE), "{\"timestamp\":1}\n").expect("write");
        assert_eq!(check(), JOB_RUNNING, "{shell:?}: started, not completed");
        std::fs::write(at(POST_JOB_FILE), "{\"timestamp\":2}\n").expect("write");
        assert_eq!(check(), 0, "{shell:?}: completed");
    }
}

/// A process named `Runner.Worker` (actions/runner's job process) means a job runs. On a
/// scratch `/proc` (the host's has other tests' runners in it), then on the real one.
#[test]
fn quiesce_sees_a_runner_worker_process() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        std::fs::create_dir_all(at("/proc/12/")).expect("mkdir");
        std::fs::write(at("/proc/12/comm"), "sleep\n").expect("write");
        let check = || run(shell, &rooted(QUIESCE_SH, dir.path()));
        assert_eq!(check(), 0, "{shell:?}: no worker");
        std::fs::create_dir_all(at("/proc/345/")).expect("mkdir");
        std::fs::write(at("/proc/345/comm"), "Runner.Worker\n").expect("write");
        assert_eq!(check(), JOB_RUNNING, "{shell:?}: a worker");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let worker = dir.path().join("Runner.Worker");
    std::fs::copy("/bin/sleep", &worker).expect("copy sleep");
    let mut child = Command::new(&worker).arg("30").spawn().expect("worker");
    let (root, _) = scratch();
    let script = rooted(QUIESCE_SH, root.path()).replace(
        &format!("RM_PROC={}/proc", root.path().display()),
        "RM_PROC=/proc",
    );
    for shell in SHELLS {
        assert_eq!(
            run(shell, &script),
            JOB_RUNNING,
            "{shell:?}: the real /proc"
        );
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
}

/// The state letter of a process (`S` sleeping, `T` stopped...).
fn state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.trim_start().chars().next())
        .unwrap_or('?')
}

/// Waits up to 5 s for a process to reach a state.
fn reaches(pid: u32, want: char) -> bool {
    within_5s(|| state(pid) == want)
}

/// An idle runner is frozen by quiesce (it takes no job while deregistered), thawed by resume,
/// and a runner left frozen is thawed by the probe.
#[test]
fn quiesce_freezes_and_resume_thaws_under_every_shell() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        let mut runner = session_leader(&["sleep", "60"]);
        let pid = runner.id();
        std::fs::write(at(&format!("{META_DIR}/runner.pgid")), pid.to_string()).expect("write");
        std::fs::write(at(PID_FILE), pid.to_string()).expect("write");
        assert_eq!(run(shell, &rooted(QUIESCE_SH, dir.path())), 0, "{shell:?}");
        assert!(reaches(pid, 'T'), "{shell:?}: not frozen");
        assert_eq!(run(shell, &rooted(RESUME_SH, dir.path())), 0, "{shell:?}");
        assert!(reaches(pid, 'S'), "{shell:?}: not thawed");
        assert_eq!(run(shell, &rooted(QUIESCE_SH, dir.path())), 0, "{shell:?}");
        assert!(reaches(pid, 'T'), "{shell:?}: not frozen again");
        assert_eq!(
            run(shell, &rooted(PROBE_SH, dir.path())),
            0,
            "{shell:?}: alive"
        );
        assert!(reaches(pid, 'S'), "{shell:?}: the probe did not thaw it");
        runner.kill().expect("kill");
        runner.wait().expect("wait");
    }
}

/// Exec requests say what they are for: providers never match script text.
#[test]
fn exec_requests_carry_their_purpose() {
    assert_eq!(probe().purpose, ExecPurpose::Probe);
    assert_eq!(stop().purpose, ExecPurpose::Stop);
    assert_eq!(quiesce().purpose, ExecPurpose::Quiesce);
    assert_eq!(resume().purpose, ExecPurpose::Resume);
    for request in [probe(), stop(), quiesce(), resume()] {
        assert!(request.argv.last().expect("script").starts_with("RM_"));
    }
}

/// `runner_has` answers from the image's record when there is one (never running the runner),
/// else from the runner's `--help`.
#[test]
fn runner_has_answers_from_the_record_else_asks_help_under_every_shell() {
    for shell in SHELLS {
        let (dir, at) = scratch();
        let runner = at(RUNNER_DIR);
        std::fs::create_dir_all(&runner).expect("mkdir");
        let calls = at("/calls");
        let stub = format!(
            "#!/bin/sh\necho \"$0 $*\" >>{}\necho ' --token-file path'\n",
            calls.display()
        );
        std::fs::write(runner.join("config.sh"), &stub).expect("write");
        std::fs::write(runner.join("run.sh"), &stub).expect("write");
        for script in ["config.sh", "run.sh"] {
            let path = runner.join(script);
            let mut perms = std::fs::metadata(&path).expect("stat").permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
            std::fs::set_permissions(&path, perms).expect("chmod");
        }
        let root = dir.path().display().to_string();
        let dir_arg = runner.display().to_string();
        let has = |script: &str, option: &str| {
            run(shell, &runner_has_at(&root, &dir_arg, script, option))
        };
        assert_eq!(has("config.sh", "token-file"), 0, "{shell:?}: asked");
        assert_eq!(has("run.sh", "jitconfig-file"), 1, "{shell:?}: asked");
        let asked = std::fs::read_to_string(&calls).expect("calls");
        assert_eq!(asked.lines().count(), 2, "{shell:?}: {asked}");
        std::fs::remove_file(&calls).expect("rm");
        std::fs::write(at(CAPS_FILE), "run.sh --jitconfig-file\n").expect("write");
        assert_eq!(has("config.sh", "token-file"), 1, "{shell:?}: recorded");
        assert_eq!(has("run.sh", "jitconfig-file"), 0, "{shell:?}: recorded");
        assert_eq!(has("run.sh", "jitconfig"), 1, "{shell:?}: whole lines only");
        assert!(!calls.exists(), "{shell:?}: the runner was run");
    }
}

/// A stub runner below `root`: `config.sh` and `run.sh` log each call to `<root>/calls`,
/// advertise both secret-file options in `--help`, and `run.sh` otherwise stays up (`sleep 30`);
/// `/proc/net/route` with a route (the network is up).
fn stub_runner(at: &dyn Fn(&str) -> std::path::PathBuf) {
    let runner = at(RUNNER_DIR);
    std::fs::create_dir_all(&runner).expect("mkdir");
    std::fs::create_dir_all(at(SCRIPT_DIR)).expect("mkdir");
    std::fs::create_dir_all(at("/proc/net")).expect("mkdir");
    std::fs::write(
        at("/proc/net/route"),
        "Iface\tDestination\tGateway \tFlags\neth0\t00000000\t012D7B0A\t0003\n",
    )
    .expect("write");
    let calls = at("/calls").display().to_string();
    let config = format!(
        "#!/bin/sh\necho \"config $*\" >>{calls}\n\
         [ \"$1\" = --help ] && echo ' --token-file path'\nexit 0\n"
    );
    let run = format!(
        "#!/bin/sh\necho \"run $*\" >>{calls}\n\
         if [ \"$1\" = --help ]; then echo ' --jitconfig-file path'; exit 0; fi\nexec sleep 30\n"
    );
    for (name, content) in [("config.sh", config), ("run.sh", run)] {
        let path = runner.join(name);
        std::fs::write(&path, content).expect("write");
        let mut perms = std::fs::metadata(&path).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).expect("chmod");
    }
}

/// Stops the runner `start.sh` started (its process group).
fn stop_runner(at: &dyn Fn(&str) -> std::path::PathBuf) {
    let pgid = std::fs::read_to_string(at(PGID_FILE)).expect("pgid");
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{}", pgid.trim())])
        .status();
}

/// The register script, token and JIT, with and without the image's record of the runner's
/// options: the secret goes by file, `--help` is asked only without a record, and the last line
/// is `alive` once `run.sh` runs.
#[test]
fn register_and_start_skips_the_help_probes_on_a_baked_image_under_every_shell() {
    for shell in SHELLS {
        for token in [true, false] {
            for recorded in [false, true] {
                let (dir, at) = scratch();
                stub_runner(&at);
                let root = dir.path().display().to_string();
                std::fs::write(at(START_SCRIPT), start_script_at(&root)).expect("write");
                if recorded {
                    std::fs::write(
                        at(CAPS_FILE),
                        "config.sh --token-file\nrun.sh --jitconfig-file\n",
                    )
                    .expect("write");
                }
                let secret = if token { TOKEN_FILE } else { JIT_FILE };
                std::fs::write(at(secret), "s3cret").expect("write");
                let args = vec!["--url".to_owned(), "https://example".to_owned()];
                let script = register_script_at(&root, &args, token, Duration::from_secs(10));
                let out = Command::new(shell[0])
                    .args(&shell[1..])
                    .args(["-c", &script])
                    .stdin(Stdio::null())
                    .output()
                    .expect("runs");
                let stdout = String::from_utf8_lossy(&out.stdout);
                // `alive` is said once run.sh's process is up: its first line may come later.
                let read_calls = || std::fs::read_to_string(at("/calls")).unwrap_or_default();
                let deadline = Instant::now() + Duration::from_secs(5);
                while !read_calls()
                    .lines()
                    .any(|l| l.starts_with("run --jitconfig-file"))
                    && !token
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let calls = read_calls();
                let what = format!("{shell:?} token={token} recorded={recorded}: {calls}");
                assert_eq!(stdout.lines().last(), Some("alive"), "{what} {stdout}");
                let help = calls.lines().filter(|l| l.ends_with("--help")).count();
                assert_eq!(help, usize::from(!recorded), "{what}");
                let secret_path = at(secret).display().to_string();
                if token {
                    assert!(
                        calls.contains(&format!(
                            "config --token-file {secret_path} --url https://example"
                        )),
                        "{what}"
                    );
                    assert!(!at(secret).exists(), "{what}: the token file stays");
                } else {
                    assert!(
                        calls.contains(&format!("run --jitconfig-file {secret_path}")),
                        "{what}"
                    );
                    assert!(!calls.lines().any(|l| l.starts_with("config ")), "{what}");
                }
                assert!(!calls.contains("s3cret"), "{what}");
                stop_runner(&at);
            }
        }
    }
}
