//! Tests of `install.rs`: the files, the bundle and its manifest, the generated scripts run on
//! a scratch root and under every shell, and the policy hook against a service double.
use super::*;
use crate::guest::STAGE_DIR;

fn settings(proxies: ProxySettings, policy: bool) -> InstallSettings {
    InstallSettings {
        registration_url: "http://10.0.0.1:8000/octo/repo".into(),
        path: GitHubPath::parse("octo/repo", "").expect("valid"),
        labels: vec!["app".into(), "jammy".into(), "gpu x".into()],
        proxies,
        policy_url: policy.then(|| "http://10.0.0.1:8080".to_owned()),
        ready_timeout: Duration::from_secs(60),
    }
}

fn proxies() -> ProxySettings {
    ProxySettings {
        http: Some("http://proxy:3128".parse().expect("valid")),
        https: Some("http://proxy:3129".parse().expect("valid")),
        no_proxy: Some("localhost".into()),
    }
}

/// Runs `guest/pick-user.sh` over `passwd` (on a scratch root) and prints what it picked.
fn picked(passwd: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().display().to_string();
    std::fs::create_dir_all(format!("{root}/etc")).expect("mkdir");
    std::fs::write(format!("{root}/etc/passwd"), passwd).expect("write");
    let script = crate::guest::pick_user_at(&root);
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn picks_unprivileged_user_when_present() {
    let root = "root:x:0:0:root:/root:/bin/bash\n";
    for (passwd, expected) in [
        (
            format!("{root}ubuntu:x:1000:1000::/home/ubuntu:/bin/bash\n"),
            "ubuntu 1000 1000 /home/ubuntu",
        ),
        (
            "ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\nrunner:x:1001:1002::/home/runner:/bin/sh\n"
                .to_owned(),
            "runner 1001 1002 /home/runner",
        ),
        (
            "runner:x:1001:1002::/srv/r:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n"
                .to_owned(),
            "runner 1001 1002 /srv/r",
        ),
        (
            format!("{root}nobody:x:65534:65534::/:/bin/false\n"),
            "root 0 0 /root",
        ),
        ("garbage\n".to_owned(), "root 0 0 /root"),
        ("".to_owned(), "root 0 0 /root"),
        ("ubuntu:x:0:0::/root:/bin/sh\n".to_owned(), "root 0 0 /root"),
        (
            "ubuntu:x:abc:1000::/home/u:/bin/sh\n".to_owned(),
            "root 0 0 /root",
        ),
        (
            "ubuntu:x::1000::/home/u:/bin/sh\n".to_owned(),
            "root 0 0 /root",
        ),
        // No trailing newline; an empty home falls back to /home/NAME.
        (
            "runner:x:1001:1001:::/bin/sh".to_owned(),
            "runner 1001 1001 /home/runner",
        ),
    ] {
        assert_eq!(picked(&passwd), expected, "{passwd:?}");
    }
}

#[test]
fn env_files() {
    let s = settings(proxies().with_no_proxy(&["10.0.0.1"]), false);
    insta::assert_snapshot!("runner_env_ubuntu", runner_env(&s));
    let env = runner_env(&settings(ProxySettings::default(), false));
    assert!(!env.contains("RUNNER_ALLOW_RUNASROOT"));
    assert!(!env.contains("proxy"));
    insta::assert_snapshot!("etc_environment", etc_environment(&s.proxies));
    insta::assert_snapshot!("docker_dropin", docker_service_dropin(&s.proxies));
    insta::assert_snapshot!("docker_client", docker_client_config(&s.proxies));
}

#[test]
fn scripts() {
    insta::assert_snapshot!("start_sh", start_script());
    insta::assert_snapshot!("pre_job_no_policy", pre_job_script(None));
    insta::assert_snapshot!(
        "pre_job_policy",
        pre_job_script(Some("http://10.0.0.1:8080"))
    );
    insta::assert_snapshot!("post_job", post_job_script());
}

#[test]
fn configure_never_carries_the_token() {
    let name = crate::model::Owner::new("app", 0)
        .expect("valid")
        .new_runner_name();
    let mut s = settings(ProxySettings::default(), false);
    let script = configure_script(&s, &name);
    assert!(script.contains(&format!("--name {name}")));
    assert!(script.contains("--labels 'app,jammy,gpu x'"));
    assert!(script.contains("--ephemeral --unattended"));
    assert!(!script.contains("--runnergroup"));
    assert!(!script.contains("--token"));
    let token = RegistrationSecret::Token(Secret::new("s3cr3t-token"));
    let register = register_script(&s, &name, &token, Duration::from_secs(1));
    assert!(register.contains(&script), "{register}");
    assert!(register.contains("RM_REGISTER=token"));
    assert!(!register.contains("s3cr3t-token"));
    let jit = RegistrationSecret::Jit(Secret::new("s3cr3t-jit"));
    let register = register_script(&s, &name, &jit, Duration::from_secs(1));
    assert!(register.contains("RM_REGISTER=jit") && !register.contains("--url"));
    s.path = GitHubPath::parse("org", "builders").expect("valid");
    assert!(configure_script(&s, &name).ends_with("--runnergroup builders\n"));
}

#[test]
fn quoting() {
    assert_eq!(shell_quote("abc-1"), "abc-1");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote(""), "''");
}

/// Every generated script passes `shellcheck --shell=sh` and parses under dash, bash and
/// busybox sh.
#[test]
fn generated_scripts_pass_shellcheck_under_every_shell() {
    use crate::guest::tests::{parses, shellcheck, SHELLS};
    let s = settings(proxies(), true);
    let name = runner_name();
    let token = RegistrationSecret::Token(Secret::new("tok"));
    let jit = RegistrationSecret::Jit(Secret::new("jit"));
    let mut with_shebang = vec![
        ("pre-job.sh", pre_job_script(None)),
        ("pre-job.sh (policy)", pre_job_script(Some("http://h:8080"))),
        (
            "pre-job.sh (https policy)",
            pre_job_script(Some("https://h")),
        ),
        (
            "register-and-start.sh (token)",
            register_script(&s, &name, &token, Duration::from_secs(30)),
        ),
        (
            "register-and-start.sh (jit)",
            register_script(&s, &name, &jit, Duration::from_secs(30)),
        ),
    ];
    for (what, script) in [
        ("setup (stdin)", setup_script(BundleSource::Stdin)),
        ("setup (pushed)", setup_script(BundleSource::Pushed)),
    ] {
        with_shebang.push((what, format!("#!/bin/sh\n{script}")));
    }
    for (what, script) in &with_shebang {
        shellcheck(what, script);
        for shell in SHELLS {
            assert!(parses(shell, script), "{what} under {shell:?}");
        }
    }
}

fn bundle_entries(bundle: &[u8]) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
    let mut archive = tar::Archive::new(bundle);
    archive
        .entries()
        .expect("tar")
        .map(|e| {
            let mut e = e.expect("entry");
            let h = e.header().clone();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut content).expect("read");
            (
                e.path().expect("path").display().to_string(),
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                content,
            )
        })
        .collect()
}

fn runner_name() -> RunnerName {
    crate::model::Owner::new("app", 0)
        .expect("valid")
        .new_runner_name()
}

/// The bundle carries the tarball and every file with its mode; the secrets are only in 0600
/// files handed to the runner's user, never in a script that becomes a command line.
#[test]
fn bundle_contents_and_secrets() {
    let s = settings(proxies(), true);
    let name = runner_name();
    let token = RegistrationSecret::Token(Secret::new("REGTOKEN-123"));
    let policy = Secret::new("POLICYTOKEN-456");
    let files = install_files(&s, &name, &token, Some(&policy));
    let bundle = build_bundle(b"TARBALL", &files).expect("bundle");
    let entries = bundle_entries(&bundle);
    assert_eq!(entries[0].0, STAGED_TARBALL);
    assert_eq!((entries[0].1, &entries[0].4[..]), (0o600, &b"TARBALL"[..]));
    assert_eq!(
        entries.len(),
        files.len() + 2,
        "the tarball, the manifest, the files"
    );
    let by_path = |p: &str| {
        let f = files
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("{p}"));
        entries
            .iter()
            .find(|e| e.0 == f.staged())
            .unwrap_or_else(|| panic!("{p} in the bundle"))
    };
    assert_eq!(by_path(TOKEN_FILE).1, 0o600);
    assert_eq!(by_path(TOKEN_FILE).4, b"REGTOKEN-123");
    assert_eq!(by_path(POLICY_TOKEN_FILE).1, 0o600);
    assert_eq!(by_path(POLICY_TOKEN_FILE).4, b"POLICYTOKEN-456");
    assert_eq!(by_path(&format!("{SCRIPT_DIR}/start.sh")).1, 0o755);
    assert_eq!(by_path(REGISTER_SCRIPT).1, 0o755);
    assert_eq!(by_path(DOCKER_DROPIN).1, 0o644);
    assert_eq!(
        by_path(DOCKER_CLIENT_CONFIG).0,
        "files/home/.docker/config.json"
    );
    assert!(
        entries.iter().all(|e| (e.2, e.3) == (0, 0)),
        "root until moved"
    );
    for (path, mode, ..) in entries.iter().filter(|e| {
        let text = String::from_utf8_lossy(&e.4);
        text.contains("REGTOKEN") || text.contains("POLICYTOKEN")
    }) {
        assert_eq!(*mode, 0o600, "{path} holds a secret");
    }
    let setup = setup_script(BundleSource::Stdin);
    let register = register_script(&s, &name, &token, Duration::from_secs(5));
    let manifest_text = manifest(&files);
    for script in [&setup, &register, &manifest_text] {
        assert!(!script.contains("REGTOKEN") && !script.contains("POLICYTOKEN"));
    }
    assert!(setup.contains("RM_BUNDLE_SOURCE=stdin"));
    assert!(setup_script(BundleSource::Pushed).contains("RM_BUNDLE_SOURCE=pushed"));
    // The manifest: docker's files marked (moved only where docker is), the client config
    // below the user's home and the user's; the secrets the user's.
    let line = |path: &str| {
        manifest_text
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} in {manifest_text}"))
            .to_owned()
    };
    assert_eq!(
        line(DOCKER_CLIENT_CONFIG),
        "docker runner files/home/.docker/config.json ~/.docker/config.json"
    );
    assert!(line(DOCKER_DROPIN).starts_with("docker root "));
    assert!(line(TOKEN_FILE).starts_with("plain runner "));
    assert!(line("/etc/environment").starts_with("plain root "));
    assert_eq!(
        bundle_entries(&bundle)
            .iter()
            .find(|e| e.0 == STAGED_MANIFEST)
            .map(|e| e.4.clone()),
        Some(manifest_text.clone().into_bytes())
    );
    assert!(register.contains("./config.sh"));
    // Without proxies there is nothing for docker.
    let plain = install_files(
        &settings(ProxySettings::default(), false),
        &name,
        &token,
        None,
    );
    assert!(!manifest(&plain).contains("docker"));
    // JIT: the config file instead of config.sh; 5 s in 10 ms steps.
    let jit = RegistrationSecret::Jit(Secret::new("JITCONFIG-789"));
    let files = install_files(&s, &name, &jit, None);
    assert!(files
        .iter()
        .any(|f| f.path == JIT_FILE && f.content == b"JITCONFIG-789" && f.mode == 0o600));
    let register = register_script(&s, &name, &jit, Duration::from_secs(5));
    assert!(register.contains("RM_REGISTER=jit") && !register.contains("--url"));
    assert!(!register.contains("JITCONFIG"));
    assert!(register.contains("RM_WAIT_STEPS=500\n"));
}

/// The setup script does what it says on a scratch root: run with its paths moved into a
/// temporary directory, with the bundle on its standard input or pushed, it leaves each file
/// in place with its mode, no bundle and no stage, and runs the register script (here a
/// stand-in, since the runner is not real) as the user it picked (root here).
#[test]
fn setup_script_runs() {
    for source in [BundleSource::Stdin, BundleSource::Pushed] {
        setup_script_runs_with(source);
    }
}

fn setup_script_runs_with(source: BundleSource) {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().display().to_string();
    let s = settings(ProxySettings::default(), false);
    let token = RegistrationSecret::Token(Secret::new("tok"));
    let mut files = install_files(&s, &runner_name(), &token, None);
    for f in files.iter_mut().filter(|f| f.path == REGISTER_SCRIPT) {
        f.content = b"echo registered as $HOME; exit 7\n".to_vec();
    }
    let mut runner = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, content) in [
        ("config.sh", "#!/bin/sh\n"),
        ("run.sh", "#!/bin/sh\n"),
        (".env", "theirs\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o755);
        runner
            .append_data(&mut h, path, content.as_bytes())
            .expect("append");
    }
    let tarball = runner.into_inner().expect("tar").finish().expect("gz");
    let bundle = build_bundle(&tarball, &files).expect("bundle");
    let rooted = |p: &str| format!("{root}{p}");
    scratch_root(dir.path());
    if source == BundleSource::Pushed {
        std::fs::write(rooted(BUNDLE_PATH), &bundle).expect("write");
    }
    let stdin = (source == BundleSource::Stdin).then_some(bundle.as_slice());
    let out = run_setup_sh(dir.path(), crate::guest::SetupMode::Install, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{source:?}: the register script's exit code: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [UNPACKED, "registered as /root"]
    );
    let read = |p: &str| std::fs::read_to_string(rooted(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let env = read(&format!("{RUNNER_DIR}/.env"));
    assert!(env.starts_with("PATH="), "ours win over the tarball's");
    assert!(env.ends_with("RUNNER_ALLOW_RUNASROOT=1\n"), "{env}");
    assert_eq!(read(TOKEN_FILE), "tok");
    assert!(read(&format!("{SCRIPT_DIR}/start.sh")).contains("run.sh"));
    assert!(read("/etc/environment").starts_with("PATH="));
    assert!(read(INSTALLED_FILE).trim().parse::<u64>().is_ok());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(rooted(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(TOKEN_FILE), 0o600);
    assert_eq!(mode(&format!("{SCRIPT_DIR}/start.sh")), 0o755);
    assert!(!std::path::Path::new(&rooted(BUNDLE_PATH)).exists());
    assert!(!std::path::Path::new(&rooted(STAGE_DIR)).exists());
}

/// The network wait ends at once with an IPv4 route or a global IPv6 address, and after its
/// bound without either (here 3 steps instead of 200).
#[test]
fn network_wait() {
    let header = "Iface\tDestination\tGateway \tFlags\n";
    let route = "eth0\t002D7B0A\t00000000\t0001\n";
    let link_local = "fe800000000000000216 02 40 20 80 eth0\n";
    let global = "fd420000000000000216 02 40 00 00 eth0\n";
    for (routes, inet6, steps) in [
        (format!("{header}{route}"), "", 0),
        (header.to_owned(), global, 0),
        (header.to_owned(), link_local, 3),
        (header.to_owned(), "", 3),
    ] {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().display().to_string();
        std::fs::create_dir_all(format!("{root}/proc/net")).expect("mkdir");
        std::fs::write(format!("{root}/proc/net/route"), &routes).expect("write");
        std::fs::write(format!("{root}/proc/net/if_inet6"), inet6).expect("write");
        let script = crate::guest::network_wait_at(&root, 3);
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            steps.to_string(),
            "{routes:?} {inet6:?}"
        );
    }
}

/// A scratch root for `setup.sh`: `/tmp`, and an `/etc/passwd` with root alone.
fn scratch_root(root: &std::path::Path) {
    std::fs::create_dir_all(root.join("tmp")).expect("mkdir");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("write");
}

/// Runs `setup.sh` in `mode` on the scratch `root`, its files going to this process's own ids
/// (it need not be root); the bundle on its standard input when `stdin` has one, else where it
/// was pushed.
fn run_setup_sh(
    root: &std::path::Path,
    mode: crate::guest::SetupMode,
    stdin: Option<&[u8]>,
) -> std::process::Output {
    let ids = own_ids(root);
    let script = crate::guest::setup_script_at(&root.display().to_string(), stdin.is_some(), mode)
        .replace("chown -R \"$RM_UID:$RM_GID\"", &format!("chown -R {ids}"))
        .replace("chown \"$RM_UID:$RM_GID\"", &format!("chown {ids}"));
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sh runs");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(bundle) = stdin {
        std::io::Write::write_all(&mut pipe, bundle).expect("feed");
    }
    drop(pipe);
    child.wait_with_output().expect("sh ends")
}

/// `setup.sh` in `mode` on the scratch `root` (owner: this process), the bundle on stdin;
/// its exit code and stdout.
fn setup_on(root: &std::path::Path, mode: crate::guest::SetupMode, bundle: &[u8]) -> (i32, String) {
    let out = run_setup_sh(root, mode, Some(bundle));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.is_empty() || out.status.success(),
        "{mode:?}: {stderr}"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A bake records which secret-file options the runner takes (asked once, as root with
/// `RUNNER_ALLOW_RUNASROOT`, as the launches' scripts would), so launches from the image skip
/// `--help`; a launch from the image keeps the record; a plain install drops it (its runner may
/// not be the one recorded).
#[test]
fn a_bake_records_the_runner_options_and_a_plain_install_drops_the_record() {
    use crate::guest::{SetupMode, CAPS_FILE};
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().display().to_string();
    let rooted = |p: &str| format!("{root}{p}");
    scratch_root(dir.path());
    // As actions/runner: refuses root without RUNNER_ALLOW_RUNASROOT (the test may run as root).
    // Like its env.sh, it writes `.env` and `.path` on every run: runner state, not the image's.
    let refuse = "[ -n \"$RUNNER_ALLOW_RUNASROOT\" ] || { echo refused; exit 1; }\n\
                  cd \"${0%/*}\" && echo LANG=C >.env && echo /bin >.path\n";
    let tarball = crate::runner_bin::tests::tarball(&[
        (
            "config.sh",
            &format!("#!/bin/sh\n{refuse}echo ' --token-file path'\n"),
        ),
        ("run.sh", &format!("#!/bin/sh\n{refuse}echo ' --once'\n")),
        ("keep", "the runner's own file\n"),
    ]);
    let bundle = build_bundle(&tarball, &bake_files()).expect("bundle");
    let (code, stdout) = setup_on(dir.path(), SetupMode::Bake, &bundle);
    assert_eq!((code, stdout.trim()), (0, BAKED));
    let read = |p: &str| std::fs::read_to_string(rooted(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read(CAPS_FILE), "config.sh --token-file\n");
    assert!(!std::path::Path::new(&rooted(&format!("{CAPS_FILE}.new"))).exists());
    for state in [".env", ".path"] {
        let path = format!("{RUNNER_DIR}/{state}");
        assert!(
            !std::path::Path::new(&rooted(&path)).exists(),
            "{path} baked"
        );
    }
    assert!(std::path::Path::new(&rooted(&format!("{RUNNER_DIR}/keep"))).exists());

    // A launch from the image: the record stays (the register script is a stand-in here).
    let s = settings(ProxySettings::default(), false);
    let token = RegistrationSecret::Token(Secret::new("tok"));
    let mut files = install_files(&s, &runner_name(), &token, None);
    for f in files.iter_mut().filter(|f| f.path == REGISTER_SCRIPT) {
        f.content = b"echo registered\n".to_vec();
    }
    let bundle = build_bundle_of(None, &files).expect("bundle");
    let (code, stdout) = setup_on(dir.path(), SetupMode::Baked, &bundle);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(read(CAPS_FILE), "config.sh --token-file\n");

    // A plain install over it: the runner is replaced, the record goes.
    let bundle = build_bundle(&tarball, &files).expect("bundle");
    let (code, stdout) = setup_on(dir.path(), SetupMode::Install, &bundle);
    assert_eq!(code, 0, "{stdout}");
    assert!(!std::path::Path::new(&rooted(CAPS_FILE)).exists());
}

/// `uid:gid` of the test process, so `chown` works without root.
fn own_ids(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).expect("stat");
    format!("{}:{}", meta.uid(), meta.gid())
}
