//! Wire types: what the server sends, decoded leniently (servers add fields), and what we send.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which daemon answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavour {
    #[default]
    Incus,
    Lxd,
}

impl Flavour {
    /// The prefix of custom headers: `X-Incus-` or `X-LXD-`.
    pub fn header_prefix(self) -> &'static str {
        match self {
            Flavour::Incus => "X-Incus-",
            Flavour::Lxd => "X-LXD-",
        }
    }
}

/// What `GET /1.0` says about the server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "RawServer")]
pub struct ServerInfo {
    pub flavour: Flavour,
    /// `environment.server_version`, for example `6.0.4` or `5.0.2`.
    pub version: String,
    pub api_extensions: Vec<String>,
    /// `environment.driver`, for example `lxc` or `lxc | qemu`.
    pub driver: String,
    pub storage: String,
    pub clustered: bool,
    pub server_name: String,
    /// `trusted` when the client may do everything.
    pub auth: String,
    /// The server certificate (PEM), to pin for HTTPS. Shown to trusted clients only.
    pub certificate: String,
    /// Server config, such as `core.https_address` (visible to trusted clients).
    pub config: BTreeMap<String, String>,
}

impl ServerInfo {
    /// True when the server lists the API extension `name`.
    pub fn has_extension(&self, name: &str) -> bool {
        self.api_extensions.iter().any(|e| e == name)
    }

    /// True when virtual machines can run (the `qemu` driver is operational).
    pub fn supports_vms(&self) -> bool {
        self.driver.contains("qemu")
    }
}

#[derive(Deserialize)]
struct RawServer {
    #[serde(default, deserialize_with = "nullable")]
    api_extensions: Vec<String>,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    environment: RawEnvironment,
    #[serde(default, deserialize_with = "nullable")]
    config: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
struct RawEnvironment {
    #[serde(default)]
    server: String,
    #[serde(default)]
    server_version: String,
    #[serde(default)]
    driver: String,
    #[serde(default)]
    storage: String,
    #[serde(default)]
    server_clustered: bool,
    #[serde(default)]
    server_name: String,
    #[serde(default)]
    certificate: String,
}

impl From<RawServer> for ServerInfo {
    fn from(r: RawServer) -> Self {
        ServerInfo {
            flavour: if r.environment.server == "lxd" {
                Flavour::Lxd
            } else {
                Flavour::Incus
            },
            version: r.environment.server_version,
            api_extensions: r.api_extensions,
            driver: r.environment.driver,
            storage: r.environment.storage,
            clustered: r.environment.server_clustered,
            server_name: r.environment.server_name,
            auth: r.auth,
            certificate: r.environment.certificate,
            config: r
                .config
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        }
    }
}

/// Servers send `null` for empty lists, maps and strings: decode it as the default.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// A time that servers send as `0001-01-01T00:00:00Z` (Go's zero time) or `null` when unset.
fn time_or_never<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let t = Option::<String>::deserialize(d)?;
    Ok(t.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01")))
}

/// A background operation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Operation {
    #[serde(deserialize_with = "nullable")]
    pub id: String,
    #[serde(deserialize_with = "nullable")]
    pub class: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub status_code: u16,
    pub metadata: Value,
    #[serde(deserialize_with = "nullable")]
    pub err: String,
    #[serde(deserialize_with = "nullable")]
    pub location: String,
    /// What it acts on, by kind: `instances` → `["/1.0/instances/NAME"]`.
    #[serde(default, deserialize_with = "nullable")]
    pub resources: std::collections::BTreeMap<String, Vec<String>>,
}

impl Operation {
    /// The names of the instances it acts on.
    pub fn instance_names(&self) -> Vec<String> {
        self.resources
            .get("instances")
            .into_iter()
            .flatten()
            .filter_map(|path| path.split('?').next()?.rsplit('/').next())
            .map(str::to_owned)
            .collect()
    }

    /// Success (200), Failure (400) or Cancelled (401).
    pub fn is_final(&self) -> bool {
        matches!(self.status_code, 200 | 400 | 401)
    }
}

/// `container` or `virtual-machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    #[default]
    Container,
    VirtualMachine,
}

/// An instance as listed (`recursion=1`) or fetched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Instance {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// `Running`, `Stopped`, `Frozen`, `Error`…
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub status_code: u16,
    #[serde(rename = "type")]
    pub instance_type: Option<InstanceType>,
    #[serde(deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(deserialize_with = "nullable")]
    pub profiles: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub ephemeral: bool,
    /// The cluster member that holds it (`none` when not clustered).
    #[serde(deserialize_with = "nullable")]
    pub location: String,
    #[serde(deserialize_with = "nullable")]
    pub project: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub created_at: String,
}

impl Instance {
    pub fn is_running(&self) -> bool {
        self.status_code == 103 || self.status == "Running"
    }
}

/// `GET /1.0/instances/{name}/state`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InstanceState {
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub status_code: u16,
    #[serde(deserialize_with = "nullable")]
    pub pid: i64,
    #[serde(deserialize_with = "nullable")]
    pub processes: i64,
    pub network: Option<BTreeMap<String, NetworkState>>,
}

impl InstanceState {
    pub fn is_running(&self) -> bool {
        self.status_code == 103 || self.status == "Running"
    }

    /// The first global IPv4 address of `interface` (DHCP fills it in a moment after start).
    pub fn ipv4(&self, interface: &str) -> Option<&str> {
        self.network
            .as_ref()?
            .get(interface)?
            .addresses
            .iter()
            .find(|a| a.family == "inet" && a.scope == "global")
            .map(|a| a.address.as_str())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkState {
    #[serde(deserialize_with = "nullable")]
    pub addresses: Vec<NetworkAddress>,
    #[serde(deserialize_with = "nullable")]
    pub hwaddr: String,
    #[serde(deserialize_with = "nullable")]
    pub state: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NetworkAddress {
    #[serde(deserialize_with = "nullable")]
    pub family: String,
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub netmask: String,
    #[serde(deserialize_with = "nullable")]
    pub scope: String,
}

/// A storage pool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StoragePool {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub driver: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub used_by: Vec<String>,
}

/// A profile, as read and as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub config: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(skip_serializing)]
    #[serde(deserialize_with = "nullable")]
    pub used_by: Vec<String>,
}

/// An image.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Image {
    #[serde(deserialize_with = "nullable")]
    pub fingerprint: String,
    #[serde(deserialize_with = "nullable")]
    pub aliases: Vec<ImageAliasRef>,
    #[serde(deserialize_with = "nullable")]
    pub properties: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(deserialize_with = "nullable")]
    pub size: u64,
    #[serde(rename = "type")]
    #[serde(deserialize_with = "nullable")]
    pub image_type: String,
    #[serde(deserialize_with = "nullable")]
    pub public: bool,
    #[serde(deserialize_with = "nullable")]
    pub uploaded_at: String,
    /// When the image was built (RFC 3339), as the server reports it.
    #[serde(deserialize_with = "nullable")]
    pub created_at: String,
    /// When an instance was last created from it (RFC 3339); `None` when never.
    #[serde(deserialize_with = "time_or_never")]
    pub last_used_at: Option<String>,
    /// Fetched from a remote server to create an instance (not imported or published here).
    #[serde(deserialize_with = "nullable")]
    pub cached: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ImageAliasRef {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
}

/// `GET /1.0/images/aliases/{name}`: the alias and the fingerprint it points to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ImageAlias {
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(deserialize_with = "nullable")]
    pub target: String,
    #[serde(deserialize_with = "nullable")]
    pub description: String,
}

/// A cluster member.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterMember {
    #[serde(deserialize_with = "nullable")]
    pub server_name: String,
    #[serde(deserialize_with = "nullable")]
    pub url: String,
    /// `Online`, `Offline`, `Evacuated`…
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub message: String,
    #[serde(deserialize_with = "nullable")]
    pub roles: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(deserialize_with = "nullable")]
    pub failure_domain: String,
    #[serde(deserialize_with = "nullable")]
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_info_from_get_1_0() {
        let v = serde_json::json!({
            "api_extensions": ["instance_create_start", "container_exec_recording"],
            "auth": "trusted",
            "environment": {"server": "lxd", "server_version": "5.0.2", "driver": "lxc | qemu",
                            "server_clustered": false, "storage": "dir"}
        });
        let s: ServerInfo = serde_json::from_value(v).expect("decodes");
        assert_eq!(s.flavour, Flavour::Lxd);
        assert_eq!(s.flavour.header_prefix(), "X-LXD-");
        assert!(s.has_extension("instance_create_start"));
        assert!(!s.has_extension("instance_force_delete"));
        assert!(s.supports_vms());
        assert_eq!(s.version, "5.0.2");
    }

    #[test]
    fn nulls_decode_as_empty() {
        let v = serde_json::json!({"name": "p", "driver": "dir", "used_by": null, "config": null,
                                   "description": null});
        let p: StoragePool = serde_json::from_value(v).expect("decodes");
        assert!(p.used_by.is_empty() && p.config.is_empty() && p.description.is_empty());
        let i: Instance = serde_json::from_value(serde_json::json!({"name": "i", "profiles": null,
            "devices": null, "type": "container"}))
        .expect("decodes");
        assert_eq!(i.instance_type, Some(InstanceType::Container));
    }

    #[test]
    fn state_ipv4_picks_global_inet() {
        let v = serde_json::json!({"status": "Running", "status_code": 103, "network": {"eth0": {
            "addresses": [{"family": "inet6", "address": "fe80::1", "scope": "link"},
                          {"family": "inet", "address": "10.123.45.7", "netmask": "24", "scope": "global"}]}}});
        let s: InstanceState = serde_json::from_value(v).expect("decodes");
        assert!(s.is_running());
        assert_eq!(s.ipv4("eth0"), Some("10.123.45.7"));
        assert_eq!(s.ipv4("eth1"), None);
    }
}
