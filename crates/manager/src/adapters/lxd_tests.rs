//! Tests of the LXD adapter: status and error mappings, creations in flight, permanent errors.
use super::*;

/// Only running creations of this owner's names whose instance is not listed are waited for.
#[test]
fn creations_in_flight_are_ours_and_unlisted() {
    let owner = Owner::new("app", 0).expect("owner");
    let op = |description: &str, name: &str| lxd::Operation {
        id: format!("{description}-{name}"),
        description: description.into(),
        resources: [(
            "instances".to_owned(),
            vec![format!("/1.0/instances/{name}")],
        )]
        .into(),
        ..Default::default()
    };
    let ops = [
        op("Creating instance", "app-0-unlisted"),
        op("Creating instance", "app-0-listed00"),
        op("Creating instance", "app-1-unlisted"),
        op("Creating instance", "other-0-abcdefgh"),
        op("Creating instance", "app-0-notasuffix"),
        op("Starting instance", "app-0-startin1"),
        op("Executing command", "app-0-execing1"),
        op("Deleting instance", "app-0-deletin1"),
    ];
    let listed = [lxd::Instance {
        name: "app-0-listed00".into(),
        ..Default::default()
    }];
    let found: Vec<&str> = creations_in_flight(&ops, &owner, &listed)
        .iter()
        .map(|op| op.id.as_str())
        .collect();
    assert_eq!(found, ["Creating instance-app-0-unlisted"]);
    assert!(creations_in_flight(&ops, &owner, &[]).len() == 2);
}

const INCUS: Server<'static> = Server {
    flavour: lxd::Flavour::Incus,
    version: "6.0.4",
    endpoint: "unix:/var/lib/incus/unix.socket",
    project: "default",
    remote: false,
};

/// What `server` makes of LXD's "missing" error about `kind` `name`.
fn missing(
    server: &Server<'_>,
    what: &str,
    (kind, name): (lxd::ObjectKind, Option<&str>),
    message: &str,
) -> ProviderError {
    let error = lxd::Error::Missing {
        what: "creating instance app-0-abcdefgh".into(),
        object: lxd::Object {
            kind,
            name: name.map(str::to_owned),
        },
        message: message.into(),
    };
    server.error(what, error, None)
}

/// The problem of a permanent error.
fn problem(e: &ProviderError) -> Option<&Problem> {
    e.permanent().map(|p| &p.problem)
}

/// [`Problem::Missing`] with a name.
fn missing_named(kind: ResourceKind, name: &str) -> Problem {
    Problem::Missing {
        kind,
        name: Some(name.into()),
    }
}

/// A permanent LXD error names what is missing, the server, and how to list what it has.
#[test]
fn permanent_errors_name_the_object_the_server_and_a_listing() {
    let what = "creating instance app-0-abcdefgh";
    let alias = (lxd::ObjectKind::ImageAlias, Some("nosuch"));
    let e = missing(
        &INCUS,
        what,
        alias,
        "Image not provided for instance creation",
    );
    assert!(e.is_permanent(), "{e:?}");
    assert_eq!(
        problem(&e),
        Some(&missing_named(ResourceKind::ImageAlias, "nosuch"))
    );
    assert_eq!(
        e.to_string(),
        "creating instance app-0-abcdefgh: image alias \"nosuch\" not found on Incus 6.0.4 at \
         unix:/var/lib/incus/unix.socket (the server said: Image not provided for instance \
         creation); list the images there with `incus image list` and set lxd.image to one \
         of their aliases, or give an image that alias"
    );
    let cases = [
        (
            (lxd::ObjectKind::Profile, Some("runner")),
            "Requested profile \"runner\" doesn't exist",
            [
                "profile \"runner\" not found on Incus 6.0.4",
                "`incus profile list`",
            ],
        ),
        (
            (lxd::ObjectKind::StoragePool, None),
            "Storage pool not found",
            [
                "storage pool not found on Incus 6.0.4",
                "`incus storage list`",
            ],
        ),
    ];
    for (object, message, parts) in cases {
        let text = missing(&INCUS, what, object, message).to_string();
        for part in parts {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }

    // LXD over HTTPS in a project: `lxc`, the remote and the project.
    let lxd = Server {
        flavour: lxd::Flavour::Lxd,
        version: "5.0.2",
        endpoint: "https://10.0.0.5:8443/",
        project: "ci",
        remote: true,
    };
    let alias = (lxd::ObjectKind::ImageAlias, Some("images:debian/12"));
    let e = missing(&lxd, what, alias, "Image alias not found");
    let text = e.to_string();
    for part in [
        "on LXD 5.0.2 at https://10.0.0.5:8443/, project ci",
        "`lxc image list <remote>: --project ci` (<remote>: your name for https://10.0.0.5:8443/)",
        "`lxc image copy images:debian/12 local: --alias debian-12`",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }

    // A 404 of the object asked for, and a 404 naming the project, are permanent too.
    let not_found = |message: &str| lxd::Error::NotFound {
        what: "image alias nosuch".into(),
        message: message.into(),
    };
    let e = INCUS.error(
        "checking the image for new runners",
        not_found("Image alias not found"),
        Some((ResourceKind::ImageAlias, "nosuch")),
    );
    assert!(
        e.to_string().starts_with(
            "checking the image for new runners: image alias \"nosuch\" not found on Incus"
        ),
        "{e}"
    );
    let e = INCUS.error(
        "listing instances",
        not_found("Failed loading project \"gone\": Project not found"),
        None,
    );
    assert_eq!(
        problem(&e),
        Some(&missing_named(ResourceKind::Project, "gone")),
        "{e:?}"
    );
    assert!(e.to_string().contains("`incus project list`"), "{e}");
    // Any other 404 stays what it was: an instance gone is not a configuration error.
    let e = INCUS.error("exec in r-1", not_found("Instance not found"), None);
    assert!(matches!(e, ProviderError::NotFound(_)), "{e:?}");

    let forbidden = lxd::Error::Forbidden {
        what: what.into(),
        message: "Certificate is restricted".into(),
    };
    let e = INCUS.error(what, forbidden, None);
    assert!(
        problem(&e) == Some(&Problem::Forbidden)
            && e.to_string().contains("`incus config trust list`"),
        "{e}"
    );
    let bad = lxd::Error::BadRequest {
        what: what.into(),
        message: "Invalid instance name".into(),
    };
    assert!(INCUS.error(what, bad, None).is_permanent());

    // Transient or unknown failures are not permanent: the create may be tried again.
    for transient in [
        lxd::Error::Timeout {
            what: what.into(),
            after: Duration::from_secs(1),
        },
        lxd::Error::OperationFailed {
            what: what.into(),
            message: "Failed to run: forkstart".into(),
        },
        lxd::Error::Api {
            what: what.into(),
            code: 500,
            message: "boom".into(),
        },
    ] {
        let e = INCUS.error(what, transient, None);
        assert!(!e.is_permanent(), "{e:?}");
    }
}

/// The errors after which nothing ran map to `NotReady` (the install repeats the exec);
/// the answers of an instance held by another operation are "busy" (the delete waits).
#[test]
fn error_mapping() {
    let what = || "exec \"sh\" in r-1".to_owned();
    let not_ready = [
        lxd::Error::NotRunning {
            instance: "r-1".into(),
        },
        lxd::Error::StreamsNotConnected {
            what: what(),
            message: "timed out".into(),
        },
    ];
    for e in not_ready {
        assert!(
            matches!(convert("exec in r-1", e), ProviderError::NotReady { .. }),
            "not ready"
        );
    }
    let failed = lxd::Error::OperationFailed {
        what: what(),
        message: "boom".into(),
    };
    assert!(matches!(
        convert("exec in r-1", failed),
        ProviderError::Failed { .. }
    ));
    let op = |message: &str| lxd::Error::OperationFailed {
        what: "deleting instance r-1".into(),
        message: message.into(),
    };
    assert!(is_busy(&op(
        "Instance is busy running a \"start\" operation"
    )));
    assert!(is_busy(&op("Instance is running")));
    assert!(!is_busy(&op("Failed to delete storage volume")));
}

/// A creation's target naming no member or group of the cluster is permanent, says which, and
/// how to list what the cluster has; a member that is down is not permanent (it may come back).
#[test]
fn unknown_cluster_targets_are_permanent_and_say_how_to_list_them() {
    let what = "creating instance app-0-abcdefgh on m9";
    let member = (lxd::ObjectKind::ClusterMember, Some("m9"));
    let e = missing(&INCUS, what, member, "Cluster member \"m9\" not found");
    assert_eq!(
        problem(&e),
        Some(&missing_named(ResourceKind::ClusterMember, "m9"))
    );
    let text = e.to_string();
    assert!(
        text.starts_with("creating instance app-0-abcdefgh on m9: cluster member \"m9\" not found")
            && text.contains("`incus cluster list`"),
        "{text}"
    );
    let group = (lxd::ObjectKind::ClusterGroup, Some("gpu"));
    let on_gpu = "creating instance app-0-abcdefgh on @gpu";
    let e = missing(&INCUS, on_gpu, group, "Cluster group \"gpu\" doesn't exist");
    let text = e.to_string();
    assert!(e.is_permanent(), "{e:?}");
    assert!(
        text.contains("cluster group \"gpu\" not found")
            && text.contains("`incus cluster group list`"),
        "{text}"
    );
    let down = lxd::Error::MemberUnavailable {
        what: what.into(),
        message: "Unable to connect to: 127.0.1.3:8443".into(),
    };
    let e = INCUS.error(what, down, None);
    assert!(!e.is_permanent(), "{e:?}");
    assert!(
        render_chain_of(&e).contains("Unable to connect to: 127.0.1.3:8443"),
        "{e:?}"
    );
}

fn render_chain_of(e: &ProviderError) -> String {
    crate::provider::render_chain(e)
}

/// An instance spec of `owner` placed on `target`.
fn owned_spec(owner: &Owner, name: &str, target: Option<&str>) -> InstanceSpec {
    InstanceSpec {
        name: name.to_owned(),
        image: test_support::incus::BUSYBOX.to_owned(),
        instance_type: InstanceType::Container,
        profiles: vec!["default".to_owned()],
        config: [
            (APP_KEY.to_owned(), owner.app_name().to_owned()),
            (crate::model::UNIT_KEY.to_owned(), "0".to_owned()),
        ]
        .into(),
        ephemeral: true,
        target: target.map(str::to_owned),
    }
}

/// The cluster's members, as the provider reports them.
async fn members_of(provider: &LxdProvider) -> Vec<Member> {
    provider
        .cluster_members()
        .await
        .expect("members")
        .expect("clustered")
}

/// `call`'s output, asserting that it came within 5 s (no hang on an offline member).
async fn quickly<T>(call: impl std::future::Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let output = call.await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    output
}

/// One test's hold on the real cluster (run one at a time): a provider, an app of its own
/// (`{prefix}…`), whose instances are deleted when it is dropped.
struct OnCluster {
    client: lxd::Client,
    provider: LxdProvider,
    app: String,
    owner: Owner,
    _cleanup: test_support::cluster::Cleanup,
    _serial: test_support::cluster::Serial,
}

impl OnCluster {
    async fn new(prefix: &str) -> Self {
        use test_support::cluster;
        let _serial = cluster::serial().await;
        let client = cluster::connect().await;
        let app = test_support::incus::random_app(prefix, 6);
        Self {
            provider: LxdProvider::new(client.clone()),
            owner: Owner::new(&app, 0).expect("owner"),
            _cleanup: cluster::Cleanup::new(&client, format!("{app}-")),
            client,
            app,
            _serial,
        }
    }
}

/// On the real cluster: every member with its groups and capacity; creations placed on a
/// member or a group and listed with their location; an unknown member or group is a permanent
/// error saying how to list them. A standalone server has no members.
#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_members_and_targets_on_the_real_cluster() {
    use test_support::cluster;
    let OnCluster {
        provider,
        app,
        owner,
        ..
    } = &OnCluster::new("clp").await;
    let members = quickly(members_of(provider)).await;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, cluster::MEMBERS);
    for m in &members {
        assert!(m.online, "{m:?}");
        assert!(
            m.groups.iter().any(|g| g == cluster::DEFAULT_GROUP),
            "{m:?}"
        );
        let capacity = m.capacity.expect("an online member's capacity");
        assert!(capacity.cpus >= 1 && capacity.memory_bytes > 0, "{m:?}");
        assert!(capacity.memory_used_bytes <= capacity.memory_bytes, "{m:?}");
    }

    let on_m2 = format!("{app}-0-onmember");
    provider
        .create_and_start(&owned_spec(owner, &on_m2, Some("m2")))
        .await
        .expect("create on m2");
    let on_group = format!("{app}-0-ongroup1");
    provider
        .create_and_start(&owned_spec(owner, &on_group, Some("@default")))
        .await
        .expect("create on @default");
    let untargeted = format!("{app}-0-anywhere");
    provider
        .create_and_start(&owned_spec(owner, &untargeted, None))
        .await
        .expect("create anywhere");
    let listed = provider.list_instances(owner).await.expect("list");
    let location = |name: &str| {
        listed
            .iter()
            .find(|i| i.name == name)
            .and_then(|i| i.location.clone())
    };
    assert_eq!(location(&on_m2).as_deref(), Some("m2"));
    for name in [&on_group, &untargeted] {
        let at = location(name).expect("a location");
        assert!(cluster::MEMBERS.contains(&at.as_str()), "{name} on {at}");
    }

    for (target, kind, listing) in [
        ("m9", ResourceKind::ClusterMember, "`incus cluster list`"),
        (
            "@nosuchgroup",
            ResourceKind::ClusterGroup,
            "`incus cluster group list`",
        ),
    ] {
        let name = format!("{app}-0-missing1");
        let e = provider
            .create_and_start(&owned_spec(owner, &name, Some(target)))
            .await
            .expect_err("no such target");
        assert_eq!(
            problem(&e),
            Some(&missing_named(kind, target.trim_start_matches('@'))),
            "{e}"
        );
        assert!(e.to_string().contains(listing), "{e}");
    }

    let standalone = lxd::Client::connect(
        lxd::Endpoint::Unix("/var/lib/incus/unix.socket".into()),
        lxd::Timeouts::default(),
    )
    .await
    .expect("the standalone daemon");
    assert_eq!(
        LxdProvider::new(standalone)
            .cluster_members()
            .await
            .expect("standalone"),
        None
    );
}

/// On the real cluster with a member killed: the members come back promptly, the dead one
/// offline and without capacity, its instance listed (not running) with its location; a
/// creation targeted at it fails fast and is not permanent. Then it is restarted.
#[tokio::test]
#[ignore = "needs the Incus cluster: run by scripts/test.sh"]
async fn cluster_member_killed_is_offline_for_the_provider() {
    use test_support::cluster;
    let OnCluster {
        client,
        provider,
        app,
        owner,
        ..
    } = &OnCluster::new("clk").await;
    let on_m3 = format!("{app}-0-onmember");
    provider
        .create_and_start(&owned_spec(owner, &on_m3, Some("m3")))
        .await
        .expect("create on m3");
    // A pass lists it while m3 is up (the provider keeps what it listed: a cluster lists an
    // instance on an offline member without its config).
    let listed = provider.list_instances(owner).await.expect("list");
    let i = listed.iter().find(|i| i.name == on_m3).expect("listed");
    assert_eq!(i.location.as_deref(), Some("m3"));
    assert_eq!(i.status, InstanceStatus::Running);
    let created_at = i.created_at;

    let killed = cluster::kill_member("m3").await;
    cluster::wait_member_status(client, "m3", "Offline", Duration::from_secs(40)).await;
    let members = quickly(members_of(provider)).await;
    for m in &members {
        if m.name == "m3" {
            assert!(!m.online && m.capacity.is_none(), "{m:?}");
            assert!(m.message.contains("heartbeat"), "{m:?}");
        } else {
            assert!(m.online && m.capacity.is_some(), "{m:?}");
        }
    }
    let listed = quickly(provider.list_instances(owner)).await.expect("list");
    let i = listed.iter().find(|i| i.name == on_m3).expect("listed");
    assert_eq!(i.location.as_deref(), Some("m3"));
    assert_eq!(i.status, InstanceStatus::Other);
    assert_eq!(i.created_at, created_at);
    assert!(owner.owns_instance(&i.name, &i.config), "{:?}", i.config);
    let too_late = owned_spec(owner, &format!("{app}-0-toolate1"), Some("m3"));
    let e = quickly(provider.create_and_start(&too_late))
        .await
        .expect_err("m3 is down");
    assert!(!e.is_permanent(), "{e:?}");
    assert!(
        crate::provider::render_chain(&e).contains("unavailable"),
        "{}",
        crate::provider::render_chain(&e)
    );

    killed.start().await;
    cluster::wait_member_status(client, "m3", "Online", Duration::from_secs(30)).await;
    let members = members_of(provider).await;
    assert!(
        members.iter().all(|m| m.online && m.capacity.is_some()),
        "{members:?}"
    );
    let listed = provider.list_instances(owner).await.expect("list");
    let i = listed.iter().find(|i| i.name == on_m3).expect("listed");
    assert_eq!(i.status, InstanceStatus::Running);
}
