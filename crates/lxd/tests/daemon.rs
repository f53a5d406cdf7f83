//! Integration tests against the real daemon (Incus by default; LXD 5.0 with
//! `LXD_SOCKET=/var/lib/lxd/unix.socket`). Start it with `sudo ./scripts/incus-env.sh up`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{assert_no_instance, busybox, client, started_instance, Cleanup};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use lxd::{
    Client, Endpoint, Error, ExecRequest, ExecStatus, FilePerms, Flavour, ImageSource,
    InstanceSpec, Profile, Stop, Timeouts,
};

/// Whether an instance `name` is in the list of the client's project.
async fn listed(c: &Client, name: &str) -> bool {
    c.list_instances()
        .await
        .expect("list")
        .iter()
        .any(|i| i.name == name)
}

#[tokio::test]
async fn server_info_is_read_at_connect() {
    let c = client().await;
    let s = c.server();
    assert!(!s.version.is_empty());
    assert!(
        s.has_extension("container_exec_recording"),
        "{:?}",
        s.api_extensions
    );
    assert!(s.driver.contains("lxc"), "driver {}", s.driver);
    let sock = common::socket();
    if sock.to_string_lossy().contains("incus") {
        assert_eq!(s.flavour, Flavour::Incus);
    } else {
        assert_eq!(s.flavour, Flavour::Lxd);
    }
    // Clones share one connection pool and differ only in project.
    let p = c.with_project("default");
    assert_eq!(p.project(), Some("default"));
    assert_eq!(p.server().version, s.version);
}

#[tokio::test]
async fn no_daemon_fails_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Client::connect(
        Endpoint::Unix(dir.path().join("missing.socket")),
        Timeouts::default(),
    )
    .await
    .expect_err("no daemon there");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("incus-env.sh up"), "{err}");
}

#[tokio::test]
async fn instance_lifecycle() {
    let (c, _g, name) = common::named("life").await;
    let owner = common::unique("owner");
    c.create_instance(&busybox(&name).config("user.owner", &owner))
        .await
        .expect("create");

    let i = c.get_instance(&name).await.expect("get");
    assert_eq!(i.status, "Stopped");
    assert_eq!(i.config.get("user.owner"), Some(&owner));
    assert!(!i.ephemeral);
    let tagged = c
        .list_instances_with_config("user.owner", &owner)
        .await
        .expect("list by config");
    assert_eq!(
        tagged.iter().map(|i| &i.name).collect::<Vec<_>>(),
        vec![&name]
    );
    assert!(listed(&c, &name).await);

    c.start_instance(&name).await.expect("start");
    c.start_instance(&name)
        .await
        .expect("starting a running instance is a no-op");
    let st = c.instance_state(&name).await.expect("state");
    assert!(st.is_running(), "{st:?}");
    assert!(st.pid > 0);
    let ip = c
        .wait_for_ipv4(&name, "eth0", Duration::from_secs(20))
        .await
        .expect("dhcp address");
    assert!(
        ip.starts_with("10.123.4"),
        "address {ip} is not on the test bridge"
    );

    let err = c
        .delete_instance(&name)
        .await
        .expect_err("running instances cannot be deleted");
    assert!(matches!(err, Error::Api { .. }), "{err:?}");

    // The busybox init exits on SIGPWR at once; the bound is generous for a loaded shared host.
    c.stop_instance(
        &name,
        Stop::Graceful {
            timeout: Duration::from_secs(60),
        },
    )
    .await
    .expect("graceful stop");
    assert_eq!(c.get_instance(&name).await.expect("get").status, "Stopped");
    c.stop_instance(&name, Stop::Force)
        .await
        .expect("stopping a stopped instance is a no-op");
    c.start_instance(&name).await.expect("restart");
    c.stop_instance(&name, Stop::Force)
        .await
        .expect("force stop");
    c.delete_instance(&name).await.expect("delete");
    assert_no_instance(&c, &name).await;
    assert!(!c
        .force_delete_instance(&name)
        .await
        .expect("idempotent delete"));
}

#[tokio::test]
async fn create_started_ephemeral_goes_away_on_stop() {
    let (c, _g, name) = common::named("eph").await;
    let spec = busybox(&name)
        .ephemeral()
        .started()
        .profiles(["default"])
        .description("ephemeral test");
    c.create_instance(&spec).await.expect("create started");
    // Started in the call on Incus, by a separate state change on LXD 5.0.
    let i = c.get_instance(&name).await.expect("get");
    assert!(i.is_running(), "{i:?}");
    assert!(i.ephemeral);
    assert_eq!(i.profiles, vec!["default"]);
    c.stop_instance(&name, Stop::Force).await.expect("stop");
    common::wait_until(
        "the ephemeral instance to go",
        Duration::from_secs(10),
        || async { matches!(c.get_instance(&name).await, Err(Error::NotFound { .. })) },
    )
    .await;
}

#[tokio::test]
async fn force_delete_removes_a_running_instance() {
    let (c, _g, name) = started_instance("force").await;
    assert!(c.force_delete_instance(&name).await.expect("force delete"));
    assert_no_instance(&c, &name).await;
}

#[tokio::test]
async fn missing_image_alias_is_missing() {
    let (c, _g, name) = common::named("noimg").await;
    let spec = InstanceSpec::new(&name, ImageSource::Alias("no-such-image-alias".into()));
    let err = c.create_instance(&spec).await.expect_err("no such alias");
    match &err {
        Error::Missing { object, .. } => {
            assert_eq!(object.kind, lxd::ObjectKind::ImageAlias, "{err}");
            assert_eq!(object.name.as_deref(), Some("no-such-image-alias"), "{err}");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(err.is_permanent(), "{err:?}");
    assert_no_instance(&c, &name).await;
}

#[tokio::test]
async fn duplicate_name_is_a_conflict() {
    let (c, _g, name) = common::named("dup").await;
    c.create_instance(&busybox(&name))
        .await
        .expect("first create");
    let err = c
        .create_instance(&busybox(&name))
        .await
        .expect_err("second create");
    assert!(err.is_conflict(), "{err:?}");
    // The original is untouched.
    assert_eq!(c.get_instance(&name).await.expect("get").name, name);
}

/// A transparent unix-socket proxy to the real daemon that counts the bytes clients send.
async fn counting_proxy(
    real: std::path::PathBuf,
) -> (tempfile::TempDir, std::path::PathBuf, Arc<AtomicU64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.socket");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind proxy");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let real = real.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(up) = tokio::net::UnixStream::connect(&real).await else {
                    return;
                };
                let (mut down_r, mut down_w) = down.into_split();
                let (mut up_r, mut up_w) = up.into_split();
                let to_server = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match down_r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        counter.fetch_add(n as u64, Ordering::SeqCst);
                        if up_w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = up_w.shutdown().await;
                };
                let to_client = async move {
                    let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                };
                tokio::join!(to_server, to_client);
            });
        }
    });
    (dir, path, sent)
}

#[tokio::test]
async fn invalid_names_are_rejected_before_any_call() {
    let (_dir, proxy, sent) = counting_proxy(common::socket()).await;
    let c = Client::connect(Endpoint::Unix(proxy), Timeouts::default())
        .await
        .expect("connect through the proxy");
    let long = "a".repeat(64);
    c.list_instances()
        .await
        .expect("a real call through the proxy works");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = sent.load(Ordering::SeqCst);
    assert!(baseline > 0, "the proxy counts what clients send");
    for bad in [long.as_str(), "", "-a", "a-", "1234", "a_b", "a/b"] {
        let err = c.create_instance(&busybox(bad)).await.expect_err(bad);
        assert!(matches!(err, Error::Invalid { .. }), "{bad:?}: {err:?}");
        assert!(matches!(
            c.get_instance(bad).await,
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            c.exec(bad, &ExecRequest::new(["true"])).await,
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            c.push_file(bad, "/tmp/x", b"x".to_vec(), FilePerms::file())
                .await,
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            c.force_delete_instance(bad).await,
            Err(Error::Invalid { .. })
        ));
    }
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        baseline,
        "an invalid name reached the daemon"
    );
}

/// Runs `request` in `name`: the call must work (the command's own failure is a result).
async fn exec(c: &Client, name: &str, request: &ExecRequest) -> lxd::ExecOutput {
    c.exec(name, request)
        .await
        .unwrap_or_else(|e| panic!("exec in {name}: {e}"))
}

#[tokio::test]
async fn exec_output_exit_codes_env_cwd_user() {
    let (c, _g, name) = started_instance("exec").await;

    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("echo out; echo err >&2; exit 3"),
    )
    .await;
    assert_eq!(out.status, ExecStatus::Exited(3));
    assert_eq!(out.exit_code(), 3);
    assert!(!out.success());
    assert_eq!(out.stdout_text(), "out\n");
    assert_eq!(out.stderr_text(), "err\n");

    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("echo \"$FOO\"; pwd; id -u; id -g")
            .env("FOO", "bar baz")
            .cwd("/tmp")
            .user(1000)
            .group(1001),
    )
    .await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "bar baz\n/tmp\n1000\n1001\n");

    // A missing command is a result, not an error.
    let out = exec(&c, &name, &ExecRequest::new(["/no/such/command"])).await;
    assert_eq!(out.status, ExecStatus::CommandNotFound);
    assert_eq!(out.exit_code(), 127);

    c.push_file(
        &name,
        "/tmp/not-exec",
        b"#!/bin/sh\necho hi\n".to_vec(),
        FilePerms::file(),
    )
    .await
    .expect("push");
    // Exec of a non-executable file.
    let out = exec(&c, &name, &ExecRequest::new(["/tmp/not-exec"])).await;
    assert_eq!(out.status, ExecStatus::NotExecutable);
    assert_eq!(out.exit_code(), 126);

    // A shell's own 127 looks the same to the server (it cannot tell them apart).
    let out = exec(&c, &name, &ExecRequest::shell("no-such-cmd-xyz")).await;
    assert_eq!(out.exit_code(), 127);
    let out = exec(&c, &name, &ExecRequest::shell("exit 125")).await;
    assert_eq!(out.status, ExecStatus::Exited(125));

    // Binary output survives, and large outputs are read fully.
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("head -c 300000 /dev/zero | tr '\\0' 'x'"),
    )
    .await;
    assert_eq!(out.stdout.len(), 300_000);
    assert!(out.stdout.iter().all(|b| *b == b'x'));

    // The recorded logs were deleted after reading.
    for dir in [
        format!("/var/lib/incus/containers/{name}/exec-output"),
        format!("/var/log/lxd/{name}"),
        format!("/var/lib/lxd/containers/{name}/exec-output"),
    ] {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let left: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("exec_"))
                .collect();
            assert!(left.is_empty(), "exec logs left in {dir}: {left:?}");
        }
    }
}

/// Standard input over the exec websockets: the bytes arrive whole (several chunks, binary),
/// stdout and stderr come back apart, the exit code is kept, and a command that never reads its
/// input still finishes. A background child that keeps the streams open does not hold the call.
#[tokio::test]
async fn exec_with_stdin() {
    let (c, _g, name) = started_instance("stdin").await;
    assert!(c.streams_stdin(), "the tests use the unix socket");

    let input: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("cat >/tmp/in; wc -c </tmp/in; sha256sum </tmp/in >&2; exit 4")
            .stdin(input.clone()),
    )
    .await;
    assert_eq!(out.status, ExecStatus::Exited(4), "{out:?}");
    assert_eq!(out.stdout_text().trim(), "1000000");
    let pulled = c.pull_file(&name, "/tmp/in").await.expect("pull");
    assert!(pulled.bytes == input, "the input arrived changed");
    let digest: String = sha2::Sha256::digest(&input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out.stderr_text().starts_with(&digest), "{out:?}");

    // The input is closed after it is sent: `cat` ends.
    let out = exec(&c, &name, &ExecRequest::new(["cat"]).stdin(&b"hello\n"[..])).await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "hello\n");

    // A command that exits without reading a large input.
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("echo early; exit 0").stdin(vec![b'z'; 4_000_000]),
    )
    .await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_text(), "early\n");

    // A detached child keeps stdout open: on Incus the call returns once the command has ended.
    // LXD 5.0.2 ends the exec operation only when the streams close (here after the child's 60 s):
    // what runs detached in a guest must close or redirect its standard streams.
    let holds_streams = c.server().flavour == Flavour::Lxd;
    let started = std::time::Instant::now();
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("sleep 60 & echo $! >/tmp/child; echo parent").stdin(&b""[..]),
    )
    .await;
    assert!(out.success(), "{out:?}");
    assert!(out.stdout_text().starts_with("parent"), "{out:?}");
    assert!(
        holds_streams || started.elapsed() < Duration::from_secs(20),
        "held by the child: {:?}",
        started.elapsed()
    );
    if !holds_streams {
        // Still running (on LXD 5.0.2 it has ended: the call waited for it).
        let out = exec(&c, &name, &ExecRequest::shell("kill $(cat /tmp/child)")).await;
        assert!(out.success(), "{out:?}");
    }

    // Environment and user apply as in the recorded mode; a missing command is a result.
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("read line; echo \"$line $FOO $(id -u)\"")
            .env("FOO", "bar")
            .user(1000)
            .stdin(&b"in\n"[..]),
    )
    .await;
    assert_eq!(out.stdout_text(), "in bar 1000\n");
    let out = exec(&c, &name, &ExecRequest::new(["/no/such"]).stdin(&b"x"[..])).await;
    assert_eq!(out.exit_code(), 127);

    c.stop_instance(&name, Stop::Force).await.expect("stop");
    let err = c
        .exec(&name, &ExecRequest::new(["cat"]).stdin(&b"x"[..]))
        .await
        .expect_err("not running");
    assert!(matches!(err, Error::NotRunning { .. }), "{err:?}");
}

#[tokio::test]
async fn exec_timeout_and_stopped_instance() {
    let (c, _g, name) = started_instance("exect").await;
    let started = std::time::Instant::now();
    let err = c
        .exec(
            &name,
            &ExecRequest::new(["sleep", "5"]).timeout(Duration::from_secs(1)),
        )
        .await
        .expect_err("times out");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    c.stop_instance(&name, Stop::Force).await.expect("stop");
    let err = c
        .exec(&name, &ExecRequest::new(["true"]))
        .await
        .expect_err("not running");
    assert!(
        matches!(err, Error::NotRunning { ref instance } if *instance == name),
        "{err:?}"
    );
    let err = c
        .exec(&name, &ExecRequest::new(Vec::<String>::new()))
        .await
        .expect_err("empty command");
    assert!(matches!(err, Error::Invalid { .. }));
}

#[tokio::test]
async fn files_round_trip_with_mode_and_owner() {
    let (c, _g, name) = started_instance("files").await;

    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let err = c
        .create_dir(&name, "/opt/runner", FilePerms::executable())
        .await
        .expect_err("parent missing");
    assert!(err.is_not_found(), "{err:?}");
    c.create_dir(&name, "/opt", FilePerms::executable())
        .await
        .expect("mkdir /opt");
    c.create_dir(
        &name,
        "/opt/runner",
        FilePerms::executable().owned_by(1000, 1000),
    )
    .await
    .expect("mkdir");
    c.create_dir(&name, "/opt/runner", FilePerms::executable())
        .await
        .expect("mkdir again is fine");
    c.push_file(
        &name,
        "/opt/runner/secret",
        data.clone(),
        FilePerms::secret().owned_by(1000, 1000),
    )
    .await
    .expect("push");
    let got = c
        .pull_file(&name, "/opt/runner/secret")
        .await
        .expect("pull");
    assert!(
        got.bytes == data,
        "pushed bytes differ after the round trip"
    );
    assert_eq!(got.mode, Some(0o600));
    assert_eq!((got.uid, got.gid), (Some(1000), Some(1000)));
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("stat -c '%a %u %g' /opt/runner/secret /opt/runner"),
    )
    .await;
    assert_eq!(out.stdout_text(), "600 1000 1000\n755 1000 1000\n");

    let list = c.list_dir(&name, "/opt/runner").await.expect("ls");
    assert_eq!(list, vec!["secret"]);
    assert!(matches!(
        c.pull_file(&name, "/opt/runner").await,
        Err(Error::Invalid { .. })
    ));

    // An empty file is really empty; a non-empty one is never written empty.
    c.push_file(&name, "/tmp/empty", Vec::new(), FilePerms::file())
        .await
        .expect("push empty");
    assert!(c
        .pull_file(&name, "/tmp/empty")
        .await
        .expect("pull")
        .bytes
        .is_empty());

    let err = c
        .push_file(&name, "/no/such/dir/f", b"x".to_vec(), FilePerms::file())
        .await
        .expect_err("missing parent");
    assert!(err.is_not_found(), "{err:?}");
    let err = c
        .push_file(&name, "relative/path", b"x".to_vec(), FilePerms::file())
        .await
        .expect_err("relative path");
    assert!(matches!(err, Error::Invalid { .. }));

    c.delete_file(&name, "/opt/runner/secret")
        .await
        .expect("rm");
    assert!(c
        .pull_file(&name, "/opt/runner/secret")
        .await
        .expect_err("gone")
        .is_not_found());
    c.delete_file(&name, "/opt/runner").await.expect("rmdir");
}

/// The pitfall this client guards against: without `Content-Type: application/octet-stream` the
/// server answers 200 and writes an empty file.
#[tokio::test]
async fn push_without_octet_stream_writes_an_empty_file() {
    let (c, _g, name) = started_instance("ctype").await;
    let raw = reqwest::Client::builder()
        .unix_socket(common::socket())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("raw client");
    let resp = raw
        .post(format!("http://lxd/1.0/instances/{name}/files"))
        .query(&[("path", "/tmp/form")])
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("payload")
        .send()
        .await
        .expect("raw push");
    assert!(resp.status().is_success(), "{}", resp.status());
    let got = c.pull_file(&name, "/tmp/form").await.expect("pull");
    assert!(
        got.bytes.is_empty(),
        "the server behaviour changed: {:?}",
        got.bytes
    );

    c.push_file(&name, "/tmp/octet", b"payload".to_vec(), FilePerms::file())
        .await
        .expect("push");
    assert_eq!(
        &c.pull_file(&name, "/tmp/octet").await.expect("pull").bytes[..],
        b"payload"
    );
}

/// Servers write into a stopped container's rootfs (so a file can be placed before the first
/// start); what fails clearly is exec on it, and anything on an instance that is gone.
#[tokio::test]
async fn push_to_stopped_and_gone_instances() {
    let (c, g, name) = common::named("stopped").await;
    c.create_instance(&busybox(&name))
        .await
        .expect("create stopped");
    c.push_file(
        &name,
        "/tmp/before-start",
        b"early\n".to_vec(),
        FilePerms::secret(),
    )
    .await
    .expect("push into a stopped container");
    c.start_instance(&name).await.expect("start");
    let out = exec(
        &c,
        &name,
        &ExecRequest::shell("cat /tmp/before-start; stat -c %a /tmp/before-start"),
    )
    .await;
    assert_eq!(out.stdout_text(), "early\n600\n");

    let eph = g.name("stoppedeph");
    c.create_instance(&busybox(&eph).ephemeral().started())
        .await
        .expect("create");
    c.stop_instance(&eph, Stop::Force).await.expect("stop");
    common::wait_until(
        "the ephemeral instance to go",
        Duration::from_secs(10),
        || async { c.get_instance(&eph).await.is_err() },
    )
    .await;
    let err = c
        .push_file(&eph, "/tmp/x", b"x".to_vec(), FilePerms::file())
        .await
        .expect_err("push to a stopped ephemeral (deleted) instance");
    assert!(err.is_not_found(), "{err:?}");
    let err = c
        .exec(&eph, &ExecRequest::new(["true"]))
        .await
        .expect_err("exec on it");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn parallel_use_of_one_client() {
    let c = client().await;
    let g = Cleanup::new();
    let names: Vec<String> = (0..4).map(|_| g.name("par")).collect();
    let tasks: Vec<_> = names
        .iter()
        .cloned()
        .map(|n| {
            let c = c.clone();
            tokio::spawn(async move {
                c.create_instance(&busybox(&n).started()).await?;
                let out = c.exec(&n, &ExecRequest::new(["hostname"])).await?;
                c.force_delete_instance(&n).await?;
                Ok::<_, Error>(out.stdout_text())
            })
        })
        .collect();
    for (n, t) in names.iter().zip(tasks) {
        let out = t.await.expect("task").expect("create, exec, delete");
        assert_eq!(out.trim(), n);
    }
}

#[tokio::test]
async fn profiles_create_update_idempotent() {
    let c = client().await;
    let g = Cleanup::new();
    let name = g.profile("prof");
    let mut p = Profile {
        name: name.clone(),
        description: "test profile".into(),
        ..Profile::default()
    };
    p.config.insert("limits.cpu".into(), "1".into());
    assert!(c.ensure_profile(&p).await.expect("create"));
    assert!(!c.ensure_profile(&p).await.expect("exists already"));
    assert!(c
        .create_profile(&p)
        .await
        .expect_err("duplicate")
        .is_conflict());
    let got = c.get_profile(&name).await.expect("get");
    assert_eq!(got.config.get("limits.cpu").map(String::as_str), Some("1"));
    assert_eq!(got.description, "test profile");

    p.config.insert("limits.memory".into(), "256MiB".into());
    p.devices.insert(
        "tmp".into(),
        [
            ("type", "disk"),
            ("source", "/tmp"),
            ("path", "/mnt/hosttmp"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    c.update_profile(&p).await.expect("update");
    let got = c.get_profile(&name).await.expect("get");
    assert_eq!(
        got.config.get("limits.memory").map(String::as_str),
        Some("256MiB")
    );
    assert_eq!(
        got.devices
            .get("tmp")
            .and_then(|d| d.get("path"))
            .map(String::as_str),
        Some("/mnt/hosttmp")
    );
    assert!(c
        .list_profiles()
        .await
        .expect("list")
        .iter()
        .any(|x| x.name == name));
    let default = c.get_profile("default").await.expect("default profile");
    assert!(default.devices.contains_key("root"), "{default:?}");
    c.delete_profile(&name).await.expect("delete");
    assert!(c.get_profile(&name).await.expect_err("gone").is_not_found());
}

#[tokio::test]
async fn storage_pools_get_and_create_dir() {
    let c = client().await;
    let default = c.get_storage_pool("default").await.expect("default pool");
    assert!(
        ["btrfs", "dir", "zfs", "lvm"].contains(&default.driver.as_str()),
        "{default:?}"
    );
    assert!(c
        .get_storage_pool("no-such-pool")
        .await
        .expect_err("missing")
        .is_not_found());

    let dir = tempfile::tempdir().expect("tempdir");
    let name = common::unique("pool");
    c.create_dir_pool(&name, dir.path())
        .await
        .expect("create dir pool");
    let got = c.get_storage_pool(&name).await;
    let listed = c.list_storage_pools().await;
    c.delete_storage_pool(&name).await.expect("delete pool");
    let got = got.expect("get new pool");
    assert_eq!(got.driver, "dir");
    assert_eq!(
        got.config.get("source").map(String::as_str),
        dir.path().to_str()
    );
    assert!(listed.expect("list").iter().any(|p| p.name == name));
}

fn tiny_image(tag: &str) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let meta = format!(
            "architecture: {}\ncreation_date: {}\nproperties:\n  os: test\n  description: {tag}\n",
            std::env::consts::ARCH,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        );
        for (path, data) in [
            ("metadata.yaml", meta.as_bytes()),
            ("rootfs/etc/tag", tag.as_bytes()),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, path, data).expect("tar entry");
        }
        tar.finish().expect("tar");
    }
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn images_list_resolve_import() {
    let c = client().await;
    let alias = c
        .image_alias("busybox")
        .await
        .expect("busybox alias (incus-env.sh up imports it)");
    assert_eq!(alias.target.len(), 64);
    let img = c.get_image(&alias.target).await.expect("image");
    assert_eq!(
        img.properties.get("os").map(String::as_str),
        Some("busybox")
    );
    assert!(c
        .list_images()
        .await
        .expect("list")
        .iter()
        .any(|i| i.fingerprint == alias.target && i.aliases.iter().any(|a| a.name == "busybox")));
    let err = c
        .image_alias("no-such-alias-xyz")
        .await
        .expect_err("missing alias");
    assert!(err.is_not_found(), "{err:?}");

    let tag = common::unique("img");
    let tarball = tiny_image(&tag);
    let fp = c.import_image(tarball.clone()).await.expect("import");
    let again = c.import_image(tarball).await;
    let alias_created = c.create_image_alias(&tag, &fp).await;
    let resolved = c.image_alias(&tag).await;
    let dup_alias = c.create_image_alias(&tag, &fp).await;
    let _ = c.delete_image_alias(&tag).await;
    c.delete_image(&fp).await.expect("delete image");
    assert_eq!(fp.len(), 64);
    assert!(again.expect_err("same image twice").is_conflict());
    alias_created.expect("alias");
    assert_eq!(resolved.expect("resolve").target, fp);
    assert!(dup_alias.expect_err("duplicate alias").is_conflict());
    assert!(c.get_image(&fp).await.expect_err("deleted").is_not_found());
}

#[tokio::test]
async fn cluster_members_of_a_standalone_server() {
    let c = client().await;
    assert!(
        !c.server().clustered,
        "these tests expect a standalone daemon"
    );
    assert!(c.cluster_members().await.expect("members").is_empty());
}

/// The HTTPS transport: client certificate, pinned self-signed server certificate. The daemon
/// listens on loopback (`incus-env.sh up` sets `core.https_address`).
#[tokio::test]
async fn https_with_client_cert_and_pinned_server_cert() {
    let c = client().await;
    let addr = c
        .server()
        .config
        .get("core.https_address")
        .cloned()
        .expect("core.https_address is not set: run `sudo ./scripts/incus-env.sh up`");
    let server_cert = c.server().certificate.clone();
    assert!(
        server_cert.contains("BEGIN CERTIFICATE"),
        "no server certificate in GET /1.0"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, fp) = common::self_signed(dir.path(), "client");
    let pem = String::from_utf8_lossy(&cert).into_owned();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let name = common::unique("cert");
    let resp = common::raw_client()
        .post("http://lxd/1.0/certificates")
        .json(&serde_json::json!({"type": "client", "name": name, "certificate": der_b64}))
        .send()
        .await
        .expect("trust the test certificate");
    let _trust = common::TrustGuard(fp);
    assert!(
        resp.status().is_success(),
        "adding the certificate: {}",
        resp.status()
    );

    let url: url::Url = format!("https://{addr}").parse().expect("url");
    let endpoint = |server_cert_pem: Vec<u8>| Endpoint::Https {
        url: url.clone(),
        client_cert_pem: cert.clone(),
        client_key_pem: lxd::PrivateKeyPem::new(key.clone()),
        server_cert_pem,
    };
    let remote = Client::connect(endpoint(server_cert.into_bytes()), Timeouts::default())
        .await
        .expect("connect over https");
    assert_eq!(remote.server().auth, "trusted");
    assert_eq!(remote.server().version, c.server().version);

    let g = Cleanup::new();
    let inst = g.name("https");
    remote
        .create_instance(&busybox(&inst).started())
        .await
        .expect("create over https");
    let out = remote
        .exec(&inst, &ExecRequest::new(["echo", "tls"]))
        .await
        .expect("exec over https");
    assert_eq!(out.stdout_text(), "tls\n");
    assert!(remote
        .force_delete_instance(&inst)
        .await
        .expect("delete over https"));

    // Any other server certificate is refused.
    let (other, _, _) = common::self_signed(dir.path(), "other");
    let err = Client::connect(endpoint(other), Timeouts::default())
        .await
        .expect_err("wrong pin");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
}

/// The cleanup guard deletes a test's instances even when the test panics.
#[tokio::test]
async fn cleanup_guard_runs_on_panic() {
    let c = client().await;
    let name = common::unique("panic");
    let inner = {
        let c = c.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let g = Cleanup::new();
            g.adopt(&name);
            c.create_instance(&busybox(&name).started())
                .await
                .expect("create");
            panic!("a failing test");
        })
    };
    let err = inner.await.expect_err("the task panicked");
    assert!(err.is_panic());
    let gone = c.get_instance(&name).await;
    assert!(
        matches!(gone, Err(Error::NotFound { .. })),
        "instance left behind: {gone:?}"
    );
}

/// Project scoping, including exec: the recorded log URLs lack `?project=`, the client adds it.
#[tokio::test]
async fn projects_scope_instances_and_exec_logs() {
    let c = client().await;
    let project = common::unique("proj");
    let resp = common::raw_client()
        .post("http://lxd/1.0/projects")
        .json(&serde_json::json!({"name": project, "config": {
            "features.images": "false", "features.profiles": "false",
            "features.storage.volumes": "false"}}))
        .send()
        .await
        .expect("create project");
    let g = Cleanup::in_project(&project);
    assert!(
        resp.status().is_success(),
        "creating project: {}",
        resp.status()
    );
    let p = c.with_project(&project);
    let name = g.name("inproj");
    p.create_instance(&busybox(&name).started())
        .await
        .expect("create in project");
    assert!(listed(&p, &name).await);
    assert!(!listed(&c, &name).await);
    assert_no_instance(&c, &name).await;
    let out = p
        .exec(&name, &ExecRequest::shell("echo in-project; echo e >&2"))
        .await
        .expect("exec in project");
    assert_eq!(
        (out.stdout_text().as_str(), out.stderr_text().as_str()),
        ("in-project\n", "e\n")
    );
    p.push_file(&name, "/tmp/p", b"p".to_vec(), FilePerms::file())
        .await
        .expect("push in project");
    assert_eq!(
        &p.pull_file(&name, "/tmp/p").await.expect("pull").bytes[..],
        b"p"
    );
    assert!(p.force_delete_instance(&name).await.expect("delete"));
}
