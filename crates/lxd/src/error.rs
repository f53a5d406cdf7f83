//! The one error type of the crate.

use std::fmt;
use std::time::Duration;

/// A kind of server object that a request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    ImageAlias,
    Image,
    Profile,
    StoragePool,
    Project,
    Network,
    /// A cluster member, as `?target=<member>` names it.
    ClusterMember,
    /// A cluster group, as `?target=@<group>` names it.
    ClusterGroup,
}

impl ObjectKind {
    /// As an operator says it: `image alias`, `storage pool`...
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::ImageAlias => "image alias",
            ObjectKind::Image => "image",
            ObjectKind::Profile => "profile",
            ObjectKind::StoragePool => "storage pool",
            ObjectKind::Project => "project",
            ObjectKind::Network => "network",
            ObjectKind::ClusterMember => "cluster member",
            ObjectKind::ClusterGroup => "cluster group",
        }
    }

    /// The object a server's "not found" text is about, with its name when the text quotes one.
    /// Measured texts (Incus 6.0, LXD 5.0): `Image alias not found`, `Requested profile "x"
    /// doesn't exist` (a 500 at the create), `Fetch profile: Profile not found`, `Failed loading
    /// storage pool: Storage pool not found`, `Failed loading project "x": Project not found`,
    /// `Failed to load network "x" for project "default": Network not found`. A missing project
    /// is reported first: every scoped call fails with it.
    pub fn from_message(message: &str) -> Option<(ObjectKind, Option<String>)> {
        let lower = message.to_ascii_lowercase();
        let quoted_after = |marker: &str| {
            let at = lower.find(marker)? + marker.len();
            let rest = message.get(at..)?.trim_start();
            // `%q` in current sources, `'%s'` in older ones.
            let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let rest = &rest[1..];
            let end = rest.find(quote)?;
            Some(rest[..end].to_owned()).filter(|n| !n.is_empty())
        };
        if lower.contains("project not found") {
            return Some((ObjectKind::Project, quoted_after("project")));
        }
        if lower.contains("requested profile") && lower.contains("doesn't exist") {
            return Some((ObjectKind::Profile, quoted_after("requested profile")));
        }
        // Measured on Incus 6.0.4, creating with `?target=`: 404 `Cluster member "x" not found`,
        // 400 `Cluster group "x" doesn't exist`; `GET /1.0/resources?target=x`: 404 `Cluster
        // member not found`.
        if lower.contains("cluster group") && lower.contains("doesn't exist") {
            return Some((ObjectKind::ClusterGroup, quoted_after("cluster group")));
        }
        if lower.contains("cluster member") && lower.contains("not found") {
            return Some((ObjectKind::ClusterMember, quoted_after("cluster member")));
        }
        let kinds = [
            ("image alias not found", ObjectKind::ImageAlias, "alias"),
            ("profile not found", ObjectKind::Profile, "profile"),
            (
                "storage pool not found",
                ObjectKind::StoragePool,
                "storage pool",
            ),
            ("network not found", ObjectKind::Network, "network"),
        ];
        kinds
            .into_iter()
            .find(|(text, _, _)| lower.contains(text))
            .map(|(_, kind, marker)| (kind, quoted_after(marker)))
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named object that a request needed and the server does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    /// `None` when neither the request nor the server's answer names it.
    pub name: Option<String>,
}

impl Object {
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        Object {
            kind,
            name: Some(name.into()),
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} {name:?}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// What can go wrong talking to LXD or Incus. Server errors keep the server's message and code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (HTTP 404, or a missing image alias found after a failed create).
    #[error("{what} not found: {message}")]
    NotFound { what: String, message: String },
    /// A request needed an object that the server does not have: an image alias, a profile, a
    /// storage pool, a project or a network (for example an instance created from a missing
    /// image alias). Permanent: repeating the request cannot help until someone creates it.
    #[error("{what}: {object} not found: {message}")]
    Missing {
        what: String,
        object: Object,
        message: String,
    },
    /// The server refuses this client the request (HTTP 403): a restricted certificate or
    /// project, or a protected object such as the `default` profile. Permanent.
    #[error("{what}: forbidden: {message}")]
    Forbidden { what: String, message: String },
    /// The server rejected a create as invalid (HTTP 400 to the request itself). Permanent.
    #[error("{what}: rejected as invalid: {message}")]
    BadRequest { what: String, message: String },
    /// The object already exists (HTTP 409, or a duplicate reported inside an operation).
    #[error("{what} already exists: {message}")]
    Conflict { what: String, message: String },
    /// The instance must be running for this call (exec on a stopped instance).
    #[error("instance {instance} is not running")]
    NotRunning { instance: String },
    /// An exec's standard streams could not be connected, so the command was not started (the
    /// server runs it only once its stdin, stdout and stderr are connected, and gives up after
    /// 10 s): the exec may be repeated.
    #[error("{what}: its streams could not be connected: {message}")]
    StreamsNotConnected { what: String, message: String },
    /// A background operation finished with `Failure` or `Cancelled`.
    #[error("operation {what} failed: {message}")]
    OperationFailed { what: String, message: String },
    /// The cluster member that must answer the call cannot: it is down or unreachable
    /// (`Unable to connect to: 127.0.1.3:8443 ...`), or not ready (`Server isn't ready yet`:
    /// a member just restarted, or one that is down, as Incus also answers for those). Worth
    /// retrying later, once the member is back.
    #[error("{what}: the cluster member is unavailable: {message}")]
    MemberUnavailable { what: String, message: String },
    /// The server refused the request for another reason (400, 412, 500…).
    #[error("{what}: server error {code}: {message}")]
    Api {
        what: String,
        code: u16,
        message: String,
    },
    /// A call or an operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// The socket or connection failed.
    #[error("{what}: transport error")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered something this client does not understand.
    #[error("{what}: unexpected response: {message}")]
    Protocol { what: String, message: String },
    /// An argument was rejected before any call was made.
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
    /// No daemon socket was found, or the TLS material could not be loaded.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True for [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True for errors worth retrying later: timeouts, transport failures and an unavailable
    /// cluster member.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Transport { .. } | Error::MemberUnavailable { .. }
        )
    }

    /// True for [`Error::MemberUnavailable`].
    pub fn is_member_unavailable(&self) -> bool {
        matches!(self, Error::MemberUnavailable { .. })
    }

    /// True for Incus's `Server isn't ready yet`: a cluster member just restarted (or down).
    pub(crate) fn is_not_ready(&self) -> bool {
        matches!(self, Error::MemberUnavailable { message, .. }
            if message.to_ascii_lowercase().contains("isn't ready yet"))
    }

    /// True for errors that the same request will meet again until someone changes the server's
    /// configuration or the request: a missing image alias, profile, storage pool, project or
    /// network ([`Error::Missing`]), a refusal ([`Error::Forbidden`]), a create rejected as
    /// invalid ([`Error::BadRequest`]), or an argument refused before any call
    /// ([`Error::Invalid`]). Never worth a retry. (A plain [`Error::NotFound`] is about the very
    /// object asked for, and often an answer rather than a failure: it is not counted here.)
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Missing { .. }
                | Error::Forbidden { .. }
                | Error::BadRequest { .. }
                | Error::Invalid { .. }
        )
    }

    /// The missing object behind an [`Error::Missing`].
    pub fn missing(&self) -> Option<&Object> {
        match self {
            Error::Missing { object, .. } => Some(object),
            _ => None,
        }
    }

    /// The server's own text, where the error carries one.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::NotFound { message, .. }
            | Error::Missing { message, .. }
            | Error::Forbidden { message, .. }
            | Error::BadRequest { message, .. }
            | Error::Conflict { message, .. }
            | Error::OperationFailed { message, .. }
            | Error::MemberUnavailable { message, .. }
            | Error::Api { message, .. } => Some(message),
            _ => None,
        }
    }

    /// Classifies a server error (HTTP code or operation status code, and message) for `what`.
    pub(crate) fn from_server(what: &str, code: u16, message: &str) -> Error {
        let what = what.to_owned();
        let message = message.to_owned();
        let lower = message.to_ascii_lowercase();
        if code == 404 {
            Error::NotFound { what, message }
        } else if code == 403 {
            Error::Forbidden { what, message }
        } else if code == 409
            || lower.contains("already exists")
            || lower.contains("unique constraint failed")
        {
            Error::Conflict { what, message }
        } else if lower.contains("unable to connect to")
            || lower.contains("isn't ready yet")
            || lower.contains("missing event connection with target cluster member")
        {
            Error::MemberUnavailable { what, message }
        } else {
            Error::Api {
                what,
                code,
                message,
            }
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(message: &str) -> Option<(ObjectKind, Option<String>)> {
        ObjectKind::from_message(message)
    }

    fn named(kind: ObjectKind, name: &str) -> Option<(ObjectKind, Option<String>)> {
        Some((kind, Some(name.to_owned())))
    }

    /// The daemons' own texts (Incus 6.0.4 and LXD 5.0.2, measured) name the missing object.
    #[test]
    fn missing_objects_are_read_from_the_server_text() {
        for (message, expected) in [
            ("Image alias not found", Some((ObjectKind::ImageAlias, None))),
            (
                "Requested profile \"nosuchprof\" doesn't exist",
                named(ObjectKind::Profile, "nosuchprof"),
            ),
            (
                "Requested profile \"p1\" doesn't exist in project \"dev\"",
                named(ObjectKind::Profile, "p1"),
            ),
            ("Requested profile 'old' doesn't exist", named(ObjectKind::Profile, "old")),
            ("Fetch profile: Profile not found", Some((ObjectKind::Profile, None))),
            (
                "Failed creating instance record: Failed initializing instance: Failed loading storage pool: Storage pool not found",
                Some((ObjectKind::StoragePool, None)),
            ),
            (
                "Failed loading project \"nosuch\": Project not found",
                named(ObjectKind::Project, "nosuch"),
            ),
            (
                "Check if project has images: fetch project: Project not found",
                Some((ObjectKind::Project, None)),
            ),
            (
                "Failed creating instance record: Failed initializing instance: Invalid devices: Device validation failed for \"eth9\": Failed loading device \"eth9\": Failed to load network \"nosuchnet\" for project \"default\": Network not found",
                named(ObjectKind::Network, "nosuchnet"),
            ),
            // Creating with `?target=` on a cluster (Incus 6.0.4, measured).
            (
                "Cluster member \"m9\" not found",
                named(ObjectKind::ClusterMember, "m9"),
            ),
            (
                "Cluster member not found",
                Some((ObjectKind::ClusterMember, None)),
            ),
            (
                "Cluster group \"gpu\" doesn't exist",
                named(ObjectKind::ClusterGroup, "gpu"),
            ),
        ] {
            assert_eq!(kind(message), expected, "{message:?}");
        }
        // Not about a named object: nothing to report.
        for other in [
            "Instance not found",
            "Operation not found",
            "Image not provided for instance creation",
            "Instance is running",
            "UNIQUE constraint failed: instances.project_id, instances.name",
            "",
        ] {
            assert_eq!(kind(other), None, "{other:?}");
        }
    }

    /// A cluster member that is down or just restarting (Incus 6.0.4, measured texts).
    #[test]
    fn unavailable_members_are_transient() {
        for message in [
            "Post \"https://127.0.1.3:8443/1.0/instances?project=default&target=m3\": Unable to \
             connect to: 127.0.1.3:8443 ([dial tcp 127.0.1.3:8443: connect: connection refused])",
            "Server isn't ready yet",
            "Missing event connection with target cluster member",
        ] {
            let e = Error::from_server("a call", 500, message);
            assert!(e.is_member_unavailable(), "{message}: {e:?}");
            assert!(e.is_transient() && !e.is_permanent(), "{e:?}");
            assert_eq!(e.server_message(), Some(message));
        }
        assert!(Error::from_server("a call", 500, "Server isn't ready yet").is_not_ready());
        assert!(!Error::from_server("a call", 500, "Unable to connect to: x").is_not_ready());
    }

    #[test]
    fn server_codes_are_classified() {
        let forbidden = Error::from_server(
            "deleting profile default",
            403,
            "The \"default\" profile cannot be deleted",
        );
        assert!(
            matches!(forbidden, Error::Forbidden { .. }),
            "{forbidden:?}"
        );
        assert!(forbidden.is_permanent());
        assert!(!forbidden.is_transient());
        let not_found = Error::from_server("instance x", 404, "Instance not found");
        assert!(not_found.is_not_found());
        assert!(
            !not_found.is_permanent(),
            "a 404 of the object asked for is an answer"
        );
        let busy = Error::from_server("deleting instance x", 400, "Instance is running");
        assert!(matches!(busy, Error::Api { code: 400, .. }), "{busy:?}");
        assert!(
            !busy.is_permanent(),
            "a 400 outside a create can pass (the instance stops)"
        );
        let five = Error::from_server("creating instance x", 500, "boom");
        assert!(!five.is_permanent() && !five.is_transient());
    }

    #[test]
    fn permanent_errors_name_what_is_missing() {
        let e = Error::Missing {
            what: "creating instance r-1".into(),
            object: Object::new(ObjectKind::ImageAlias, "nosuch"),
            message: "Image not provided for instance creation".into(),
        };
        assert!(e.is_permanent());
        assert!(!e.is_not_found());
        assert_eq!(
            e.missing(),
            Some(&Object::new(ObjectKind::ImageAlias, "nosuch"))
        );
        assert_eq!(
            e.to_string(),
            "creating instance r-1: image alias \"nosuch\" not found: \
             Image not provided for instance creation"
        );
        assert_eq!(
            e.server_message(),
            Some("Image not provided for instance creation")
        );
        let unnamed = Object {
            kind: ObjectKind::StoragePool,
            name: None,
        };
        assert_eq!(unnamed.to_string(), "storage pool");
        let bad = Error::BadRequest {
            what: "creating instance r-1".into(),
            message: "Invalid instance name".into(),
        };
        assert!(bad.is_permanent());
        let timeout = Error::Timeout {
            what: "x".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_transient() && !timeout.is_permanent());
        let failed = Error::OperationFailed {
            what: "starting instance r-1".into(),
            message: "Failed to run: forkstart".into(),
        };
        assert!(!failed.is_permanent() && failed.missing().is_none());
    }
}
