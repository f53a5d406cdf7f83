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

fn missing(kind: lxd::ObjectKind, name: Option<&str>, message: &str) -> lxd::Error {
    lxd::Error::Missing {
        what: "creating instance app-0-abcdefgh".into(),
        object: lxd::Object {
            kind,
            name: name.map(str::to_owned),
        },
        message: message.into(),
    }
}

/// A permanent LXD error names what is missing, the server, and how to list what it has.
#[test]
fn permanent_errors_name_the_object_the_server_and_a_listing() {
    let what = "creating instance app-0-abcdefgh";
    let e = INCUS.error(
        what,
        missing(
            lxd::ObjectKind::ImageAlias,
            Some("nosuch"),
            "Image not provided for instance creation",
        ),
        None,
    );
    assert!(e.is_permanent(), "{e:?}");
    assert_eq!(
        e.permanent().map(|p| &p.problem),
        Some(&Problem::Missing {
            kind: ResourceKind::ImageAlias,
            name: Some("nosuch".into())
        })
    );
    assert_eq!(
        e.to_string(),
        "creating instance app-0-abcdefgh: image alias \"nosuch\" not found on Incus 6.0.4 at \
         unix:/var/lib/incus/unix.socket (the server said: Image not provided for instance \
         creation); list the images there with `incus image list` and set lxd.image to one \
         of their aliases, or give an image that alias"
    );
    let e = INCUS.error(
        what,
        missing(
            lxd::ObjectKind::Profile,
            Some("runner"),
            "Requested profile \"runner\" doesn't exist",
        ),
        None,
    );
    let text = e.to_string();
    assert!(
        text.contains("profile \"runner\" not found on Incus 6.0.4")
            && text.contains("`incus profile list`"),
        "{text}"
    );
    let e = INCUS.error(
        what,
        missing(lxd::ObjectKind::StoragePool, None, "Storage pool not found"),
        None,
    );
    assert!(
        e.to_string()
            .contains("storage pool not found on Incus 6.0.4")
            && e.to_string().contains("`incus storage list`"),
        "{e}"
    );

    // LXD over HTTPS in a project: `lxc`, the remote and the project.
    let lxd = Server {
        flavour: lxd::Flavour::Lxd,
        version: "5.0.2",
        endpoint: "https://10.0.0.5:8443/",
        project: "ci",
        remote: true,
    };
    let e = lxd.error(
        what,
        missing(
            lxd::ObjectKind::ImageAlias,
            Some("images:debian/12"),
            "Image alias not found",
        ),
        None,
    );
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
        e.permanent().map(|p| &p.problem),
        Some(&Problem::Missing {
            kind: ResourceKind::Project,
            name: Some("gone".into())
        }),
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
        e.permanent().map(|p| &p.problem) == Some(&Problem::Forbidden)
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
