//! Instances: list, get, create, state changes, delete.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::client::Client;
use crate::error::{Error, Object, ObjectKind, Result};
use crate::names::{segment, validate_instance_name};
use crate::types::{Instance, InstanceState, InstanceType};

/// Where the root filesystem of a new instance comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A local image alias, such as `busybox`.
    Alias(String),
    /// A local image fingerprint (or a unique prefix of one).
    Fingerprint(String),
    /// An alias on a simplestreams image server, such as `https://images.linuxcontainers.org`.
    Remote { server: String, alias: String },
}

impl ImageSource {
    fn to_json(&self) -> Value {
        match self {
            ImageSource::Alias(a) => json!({"type": "image", "alias": a}),
            ImageSource::Fingerprint(f) => json!({"type": "image", "fingerprint": f}),
            ImageSource::Remote { server, alias } => json!({
                "type": "image", "alias": alias, "server": server,
                "protocol": "simplestreams", "mode": "pull"
            }),
        }
    }
}

/// What to create. Build with [`InstanceSpec::new`] and the chained setters.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub name: String,
    pub instance_type: InstanceType,
    pub source: ImageSource,
    /// Values are strings on the wire; use `user.*` keys for ownership tags.
    pub config: BTreeMap<String, String>,
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    /// `None`: the server's `default` profile. `Some(vec![])`: no profile at all.
    pub profiles: Option<Vec<String>>,
    /// Deleted by the server when it stops.
    pub ephemeral: bool,
    /// Cluster member (`member`) or group (`@group`) to place it on (`?target=`). An unknown
    /// member or group gives [`Error::Missing`] naming it; a member that is down,
    /// [`Error::MemberUnavailable`] at once; a standalone server refuses any target
    /// ([`Error::BadRequest`]: "Target only allowed when clustered").
    pub target: Option<String>,
    /// Start it once created (in the same call where the server supports it).
    pub start: bool,
    pub description: String,
}

impl InstanceSpec {
    /// A stopped, persistent container from `source`, with the default profile.
    pub fn new(name: impl Into<String>, source: ImageSource) -> Self {
        InstanceSpec {
            name: name.into(),
            instance_type: InstanceType::Container,
            source,
            config: BTreeMap::new(),
            devices: BTreeMap::new(),
            profiles: None,
            ephemeral: false,
            target: None,
            start: false,
            description: String::new(),
        }
    }

    pub fn virtual_machine(mut self) -> Self {
        self.instance_type = InstanceType::VirtualMachine;
        self
    }

    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.insert(key.into(), value.into());
        self
    }

    pub fn device<K, V>(
        mut self,
        name: impl Into<String>,
        device: impl IntoIterator<Item = (K, V)>,
    ) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        let device = device
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.devices.insert(name.into(), device);
        self
    }

    pub fn profiles<S: Into<String>>(mut self, profiles: impl IntoIterator<Item = S>) -> Self {
        self.profiles = Some(profiles.into_iter().map(Into::into).collect());
        self
    }

    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn started(mut self) -> Self {
        self.start = true;
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The POST body. `start` is sent only when the server understands it.
    pub(crate) fn body(&self, start_in_create: bool) -> Value {
        let mut body = json!({
            "name": self.name,
            "type": self.instance_type,
            "source": self.source.to_json(),
            "config": self.config,
            "devices": self.devices,
            "ephemeral": self.ephemeral,
            "description": self.description,
        });
        if let Some(p) = &self.profiles {
            body["profiles"] = json!(p);
        }
        if start_in_create && self.start {
            body["start"] = json!(true);
        }
        body
    }
}

/// How to stop an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Ask the init to shut down; fail if it has not stopped after `timeout`.
    Graceful { timeout: Duration },
    /// Kill it at once.
    Force,
}

impl Client {
    /// All instances of the project, with their config (`recursion=1`).
    pub async fn list_instances(&self) -> Result<Vec<Instance>> {
        self.list(
            "listing instances",
            self.scoped(Method::GET, "/1.0/instances"),
        )
        .await
    }

    /// The operations still running on the server (creates, starts, stops, deletes...), also
    /// those started by a client that has gone since.
    pub async fn running_operations(&self) -> Result<Vec<crate::types::Operation>> {
        let rb = self.scoped(Method::GET, "/1.0/operations");
        let mut by_status: std::collections::BTreeMap<String, Vec<crate::types::Operation>> =
            self.list("listing operations", rb).await?;
        Ok(by_status.remove("running").unwrap_or_default())
    }

    /// Waits, at most `limit`, for an operation listed by [`Client::running_operations`] to end;
    /// its final state.
    pub async fn wait_operation(
        &self,
        operation: &crate::types::Operation,
        limit: std::time::Duration,
    ) -> Result<crate::types::Operation> {
        let what = format!(
            "waiting for operation {} ({})",
            operation.id, operation.description
        );
        let op = crate::client::OperationRef::listed(&operation.id, self.project());
        self.wait(&what, &op, limit).await
    }

    /// The instances whose config has `key` = `value` (for example `user.owner`). Filtered here, so
    /// it works on every server version.
    pub async fn list_instances_with_config(
        &self,
        key: &str,
        value: &str,
    ) -> Result<Vec<Instance>> {
        let mut all = self.list_instances().await?;
        all.retain(|i| i.config.get(key).map(String::as_str) == Some(value));
        Ok(all)
    }

    /// One instance. [`Error::NotFound`] if it does not exist.
    pub async fn get_instance(&self, name: &str) -> Result<Instance> {
        validate_instance_name(name)?;
        let what = format!("instance {name}");
        self.sync(&what, self.scoped(Method::GET, &instance_path(name)))
            .await
    }

    /// The runtime state: status, pid, network addresses.
    pub async fn instance_state(&self, name: &str) -> Result<InstanceState> {
        validate_instance_name(name)?;
        let what = format!("state of instance {name}");
        let path = format!("{}/state", instance_path(name));
        self.sync(&what, self.scoped(Method::GET, &path)).await
    }

    /// Creates an instance and waits for it; starts it too if `spec.start` (with a separate state
    /// change when the server lacks `instance_create_start`, such as LXD 5.0).
    ///
    /// An existing name gives [`Error::Conflict`]. What can never succeed as asked gives a
    /// permanent error ([`Error::is_permanent`]): a missing image alias, profile, storage pool,
    /// project or network [`Error::Missing`] (naming it), a refusal [`Error::Forbidden`], a
    /// request rejected as invalid [`Error::BadRequest`].
    pub async fn create_instance(&self, spec: &InstanceSpec) -> Result<()> {
        validate_instance_name(&spec.name)?;
        let start_in_create = self.server().has_extension("instance_create_start");
        let what = format!("creating instance {}", spec.name);
        let mut rb = self
            .scoped(Method::POST, "/1.0/instances")
            .json(&spec.body(start_in_create));
        if let Some(t) = &spec.target {
            rb = rb.query(&[("target", t)]);
        }
        if let Err(error) = self.run(&what, rb).await {
            return Err(self.create_failure(spec, error).await);
        }
        if spec.start && !start_in_create {
            self.start_instance(&spec.name).await?;
        }
        Ok(())
    }

    /// What a failed create means, as precisely as the server lets us say.
    ///
    /// Measured: Incus 6.0 reports an unknown alias only inside the operation, as `Image not
    /// provided for instance creation` (so the alias is looked up to tell); LXD 5.0 answers 404
    /// `Image alias not found` to the POST. A missing profile is a 500 `Requested profile "x"
    /// doesn't exist` to the POST (both), a missing project a 404 to the POST, a missing storage
    /// pool or network a failed operation.
    async fn create_failure(&self, spec: &InstanceSpec, error: Error) -> Error {
        let (what, message, bad_request) = match &error {
            Error::NotFound { what, message } | Error::OperationFailed { what, message } => {
                (what.clone(), message.clone(), false)
            }
            Error::Api {
                what,
                code,
                message,
            } => (what.clone(), message.clone(), *code == 400),
            _ => return error,
        };
        if let Some((kind, name)) = ObjectKind::from_message(&message) {
            let name = name.or_else(|| match kind {
                ObjectKind::ImageAlias => match &spec.source {
                    ImageSource::Alias(alias) => Some(alias.clone()),
                    _ => None,
                },
                ObjectKind::Project => Some(self.project().unwrap_or("default").to_owned()),
                ObjectKind::StoragePool => spec
                    .devices
                    .values()
                    .find(|d| d.get("path").map(String::as_str) == Some("/"))
                    .and_then(|d| d.get("pool").cloned()),
                ObjectKind::ClusterMember => spec.target.clone().filter(|t| !t.starts_with('@')),
                ObjectKind::ClusterGroup => spec
                    .target
                    .as_deref()
                    .and_then(|t| t.strip_prefix('@'))
                    .map(str::to_owned),
                _ => None,
            });
            return Error::Missing {
                what,
                object: Object { kind, name },
                message,
            };
        }
        if let ImageSource::Alias(alias) = &spec.source {
            if let Err(Error::Missing { object, .. }) = self.check_image(&spec.source).await {
                if object.kind == ObjectKind::ImageAlias {
                    return Error::Missing {
                        what,
                        object: Object::new(ObjectKind::ImageAlias, alias.clone()),
                        message,
                    };
                }
            }
        }
        if bad_request {
            return Error::BadRequest { what, message };
        }
        error
    }

    /// Checks, creating nothing, that `source` can be found where a create would look for it: a
    /// local alias or fingerprint, in the client's project. A missing one (or a missing project)
    /// gives [`Error::Missing`]. An image on a remote image server is not checked here (the
    /// server fetches it at create time).
    pub async fn check_image(&self, source: &ImageSource) -> Result<()> {
        let (kind, name, found) = match source {
            ImageSource::Alias(alias) => (
                ObjectKind::ImageAlias,
                alias,
                self.image_alias(alias).await.map(|_| ()),
            ),
            ImageSource::Fingerprint(fingerprint) => (
                ObjectKind::Image,
                fingerprint,
                self.get_image(fingerprint).await.map(|_| ()),
            ),
            ImageSource::Remote { .. } => return Ok(()),
        };
        found.map_err(|e| self.missing_object(e, kind, name))
    }

    /// Checks, creating nothing, that each profile exists in the client's project. The first
    /// missing one (or a missing project) gives [`Error::Missing`].
    pub async fn check_profiles<S: AsRef<str>>(&self, profiles: &[S]) -> Result<()> {
        let checks = profiles.iter().map(|name| async move {
            let name = name.as_ref();
            self.get_profile(name)
                .await
                .map(|_| ())
                .map_err(|e| self.missing_object(e, ObjectKind::Profile, name))
        });
        futures::future::try_join_all(checks).await.map(|_| ())
    }

    /// A 404 from a GET of the object `kind` `name`: that object is missing, unless the server
    /// says the project is.
    fn missing_object(&self, error: Error, kind: ObjectKind, name: &str) -> Error {
        match error {
            Error::NotFound { what, message } => {
                let object = match ObjectKind::from_message(&message) {
                    Some((ObjectKind::Project, project)) => Object {
                        kind: ObjectKind::Project,
                        name: project.or_else(|| Some(self.project().unwrap_or("default").into())),
                    },
                    _ => Object::new(kind, name),
                };
                Error::Missing {
                    what,
                    object,
                    message,
                }
            }
            other => other,
        }
    }

    /// Starts an instance. Already running is success.
    pub async fn start_instance(&self, name: &str) -> Result<()> {
        let body = json!({"action": "start", "timeout": 30, "force": false});
        self.change_state(name, "starting", body, "already running")
            .await
    }

    /// Stops an instance (an ephemeral one is then deleted by the server). Already stopped is success.
    pub async fn stop_instance(&self, name: &str, how: Stop) -> Result<()> {
        let body = match how {
            Stop::Graceful { timeout } => {
                json!({"action": "stop", "timeout": timeout.as_secs().max(1), "force": false})
            }
            Stop::Force => json!({"action": "stop", "timeout": -1, "force": true}),
        };
        self.change_state(name, "stopping", body, "already stopped")
            .await
    }

    async fn change_state(&self, name: &str, verb: &str, body: Value, done: &str) -> Result<()> {
        validate_instance_name(name)?;
        let what = format!("{verb} instance {name}");
        let path = format!("{}/state", instance_path(name));
        match self
            .run(&what, self.scoped(Method::PUT, &path).json(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Api { message, .. } | Error::OperationFailed { message, .. })
                if message.to_ascii_lowercase().contains(done) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a stopped instance. A running one gives [`Error::Api`] ("Instance is running").
    pub async fn delete_instance(&self, name: &str) -> Result<()> {
        validate_instance_name(name)?;
        let what = format!("deleting instance {name}");
        self.run_done(&what, self.scoped(Method::DELETE, &instance_path(name)))
            .await
    }

    /// Deletes an instance whatever its state: force-stops it first if needed. Returns `false` if it
    /// did not exist. Safe to repeat.
    pub async fn force_delete_instance(&self, name: &str) -> Result<bool> {
        validate_instance_name(name)?;
        match self.get_instance(name).await {
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
            Ok(i) if i.status != "Stopped" => match self.stop_instance(name, Stop::Force).await {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            },
            Ok(_) => {}
        }
        match self.delete_instance(name).await {
            // An ephemeral instance is gone once stopped.
            Ok(()) | Err(Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Polls the state until `interface` has a global IPv4 address (DHCP answers shortly after start).
    pub async fn wait_for_ipv4(
        &self,
        name: &str,
        interface: &str,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.instance_state(name).await?;
            if let Some(ip) = state.ipv4(interface) {
                return Ok(ip.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for an IPv4 address on {name}/{interface}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub(crate) fn instance_path(name: &str) -> String {
    format!("/1.0/instances/{}", segment(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body() {
        let spec = InstanceSpec::new("r-1", ImageSource::Alias("busybox".into()))
            .config("user.owner", "m1")
            .device(
                "root",
                [("type", "disk"), ("path", "/"), ("pool", "default")],
            )
            .profiles(["default", "runner"])
            .ephemeral()
            .started();
        let body = spec.body(true);
        assert_eq!(body["type"], "container");
        assert_eq!(body["source"], json!({"type": "image", "alias": "busybox"}));
        assert_eq!(body["config"]["user.owner"], "m1");
        assert_eq!(body["devices"]["root"]["pool"], "default");
        assert_eq!(body["profiles"], json!(["default", "runner"]));
        assert_eq!(body["ephemeral"], true);
        assert_eq!(body["start"], true);
        assert!(
            spec.body(false).get("start").is_none(),
            "LXD 5.0 ignores start: never send it"
        );
    }

    #[test]
    fn create_body_variants() {
        let vm = InstanceSpec::new(
            "v",
            ImageSource::Remote {
                server: "https://images.example".into(),
                alias: "debian/12".into(),
            },
        )
        .virtual_machine();
        let body = vm.body(true);
        assert_eq!(body["type"], "virtual-machine");
        assert_eq!(body["source"]["protocol"], "simplestreams");
        assert_eq!(body["source"]["server"], "https://images.example");
        assert!(
            body.get("profiles").is_none(),
            "absent profiles means the default profile"
        );
        assert!(body.get("start").is_none());
        let none = InstanceSpec::new("n", ImageSource::Fingerprint("abc".into()))
            .profiles(Vec::<String>::new());
        assert_eq!(none.body(true)["profiles"], json!([]));
        assert_eq!(none.body(true)["source"]["fingerprint"], "abc");
    }
}
