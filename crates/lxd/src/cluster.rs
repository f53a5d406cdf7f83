//! Clusters: whether the server is one, its members and groups, and a member's resources.
//!
//! Measured on a 3-member Incus 6.0.4 cluster (`scripts/incus-cluster.sh`):
//! - `GET /1.0/cluster` answers on every server (`enabled: false` when standalone);
//!   `GET /1.0/cluster/members` and `/groups` answer 500/400 "not clustered" on a standalone one,
//!   so they are asked only of a clustered server.
//! - A member killed is listed `Offline` once no heartbeat came for `cluster.offline_threshold`
//!   (at least 11 s); until then it reads `Online`. Its instances are listed with status
//!   `Error`; calls forwarded to it answer at once `Unable to connect to: <address>` (a create
//!   with `?target=`) or, misleadingly, "Server isn't ready yet" (`/1.0/resources?target=`, an
//!   instance's state, exec), and the `GET` of one of its instances takes 10 s to answer
//!   "Missing event connection with target cluster member".
//! - A member restarted reads `Online` at once but answers forwarded calls "Server isn't ready
//!   yet" for 5–7 s (the client repeats those, see `Client::call`).

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::names::{segment, validate_simple_name};
use crate::types::ClusterMember;

/// How long listing the members may take (the database answers it; a cluster without its
/// quorum would not).
const MEMBERS_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /1.0/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// Whether the server is a cluster member.
    pub enabled: bool,
    /// This member's name (empty when not clustered).
    #[serde(deserialize_with = "crate::types::nullable")]
    pub server_name: String,
}

/// A cluster group (`GET /1.0/cluster/groups?recursion=1`): what `?target=@<name>` places on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClusterGroup {
    #[serde(deserialize_with = "crate::types::nullable")]
    pub name: String,
    #[serde(deserialize_with = "crate::types::nullable")]
    pub description: String,
    /// Member names.
    #[serde(deserialize_with = "crate::types::nullable")]
    pub members: Vec<String>,
}

/// What `GET /1.0/resources` says about a server's hardware (the parts a placement needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerResources {
    /// CPU threads (`cpu.total`).
    pub cpu_threads: u32,
    /// `memory.total`, in bytes.
    pub memory_total: u64,
    /// `memory.used`, in bytes: the whole host's, not only its instances'.
    pub memory_used: u64,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawResources {
    cpu: RawCpu,
    memory: RawMemory,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawCpu {
    total: u32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawMemory {
    total: u64,
    used: u64,
}

impl Client {
    /// `GET /1.0/cluster`: whether the server is clustered, and its member name. Asked now (the
    /// connect-time view is [`crate::ServerInfo::clustered`]).
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        self.sync("reading the cluster", self.req(Method::GET, "/1.0/cluster"))
            .await
    }

    /// The cluster members with their status, message, roles and groups. A standalone server
    /// has none (an empty list).
    pub async fn cluster_members(&self) -> Result<Vec<ClusterMember>> {
        self.cluster_list("listing cluster members", "/1.0/cluster/members")
            .await
    }

    /// One cluster member. [`Error::NotFound`] if the cluster has none of that name.
    pub async fn cluster_member(&self, name: &str) -> Result<ClusterMember> {
        validate_simple_name("cluster member name", name)?;
        let what = format!("cluster member {name}");
        let path = format!("/1.0/cluster/members/{}", segment(name));
        self.sync(&what, self.req(Method::GET, &path).timeout(MEMBERS_TIMEOUT))
            .await
    }

    /// The cluster groups with their members. A standalone server has none (an empty list).
    pub async fn cluster_groups(&self) -> Result<Vec<ClusterGroup>> {
        self.cluster_list("listing cluster groups", "/1.0/cluster/groups")
            .await
    }

    /// Creates the cluster group `name` holding `members`. An existing one gives
    /// [`Error::Conflict`].
    pub async fn create_cluster_group<S: AsRef<str>>(
        &self,
        name: &str,
        description: &str,
        members: &[S],
    ) -> Result<()> {
        validate_simple_name("cluster group name", name)?;
        let members: Vec<&str> = members.iter().map(AsRef::as_ref).collect();
        let body = json!({"name": name, "description": description, "members": members});
        let what = format!("creating cluster group {name}");
        self.run_done(
            &what,
            self.req(Method::POST, "/1.0/cluster/groups").json(&body),
        )
        .await
    }

    /// Deletes the cluster group `name`: empties it first (Incus removes only empty groups:
    /// "Only empty cluster groups can be removed"); the members stay in their other groups.
    /// Returns `false` if it did not exist.
    pub async fn delete_cluster_group(&self, name: &str) -> Result<bool> {
        validate_simple_name("cluster group name", name)?;
        let what = format!("deleting cluster group {name}");
        let path = format!("/1.0/cluster/groups/{}", segment(name));
        let emptied = self
            .run_done(
                &what,
                self.req(Method::PUT, &path)
                    .json(&json!({"description": "", "members": []})),
            )
            .await;
        match emptied {
            Ok(()) => {}
            Err(Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        match self.run_done(&what, self.req(Method::DELETE, &path)).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `GET /1.0/resources[?target=<member>]`: CPU threads and memory of the server, or of one
    /// cluster member, within `timeout` ([`Error::Timeout`] after it). A member that is down
    /// answers at once with [`Error::MemberUnavailable`]; an unknown member with
    /// [`Error::NotFound`].
    pub async fn resources(
        &self,
        target: Option<&str>,
        timeout: Duration,
    ) -> Result<ServerResources> {
        let mut rb = self.req(Method::GET, "/1.0/resources").timeout(timeout);
        let what = match target {
            Some(member) => {
                validate_simple_name("cluster member name", member)?;
                rb = rb.query(&[("target", member)]);
                format!("reading the resources of cluster member {member}")
            }
            None => "reading the server's resources".to_owned(),
        };
        let raw: RawResources = match self.sync(&what, rb).await {
            Err(Error::Transport { what, source }) if source.is_timeout() => {
                return Err(Error::Timeout {
                    what,
                    after: timeout,
                })
            }
            Err(Error::Timeout { what, .. }) => {
                return Err(Error::Timeout {
                    what,
                    after: timeout,
                })
            }
            other => other?,
        };
        Ok(ServerResources {
            cpu_threads: raw.cpu.total,
            memory_total: raw.memory.total,
            memory_used: raw.memory.used,
        })
    }

    /// A cluster collection, within the members' timeout; a standalone server has none.
    async fn cluster_list<T: DeserializeOwned>(&self, what: &str, path: &str) -> Result<Vec<T>> {
        if !self.server().clustered {
            return Ok(Vec::new());
        }
        self.list(what, self.req(Method::GET, path).timeout(MEMBERS_TIMEOUT))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_decode_from_the_servers_shape() {
        let v = serde_json::json!({
            "cpu": {"architecture": "x86_64", "sockets": [], "total": 2},
            "memory": {"total": 25769803776u64, "used": 2830893056u64, "free": 1, "nodes": null},
            "gpu": {"cards": null}
        });
        let raw: RawResources = serde_json::from_value(v).expect("decodes");
        assert_eq!(raw.cpu.total, 2);
        assert_eq!(raw.memory.total, 25_769_803_776);
        assert_eq!(raw.memory.used, 2_830_893_056);
    }

    #[test]
    fn cluster_and_groups_decode() {
        let info: ClusterInfo = serde_json::from_value(serde_json::json!({
            "server_name": "m1", "enabled": true, "member_config": []
        }))
        .expect("decodes");
        assert_eq!(
            info,
            ClusterInfo {
                enabled: true,
                server_name: "m1".into()
            }
        );
        let standalone: ClusterInfo = serde_json::from_value(serde_json::json!({
            "server_name": "", "enabled": false, "member_config": null
        }))
        .expect("decodes");
        assert!(!standalone.enabled);
        let groups: Vec<ClusterGroup> = serde_json::from_value(serde_json::json!([
            {"name": "default", "description": "Default cluster group", "members": ["m1", "m2"]},
            {"name": "empty", "description": "", "members": null}
        ]))
        .expect("decodes");
        assert_eq!(groups[0].members, ["m1", "m2"]);
        assert!(groups[1].members.is_empty());
    }
}
