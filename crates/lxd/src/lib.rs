//! Client for the LXD / Incus REST API, over the unix socket or HTTPS with a pinned certificate.
//!
//! One [`Client`] (cheap to clone, `Send + Sync`) speaks to either daemon: it reads the flavour and
//! API extensions at connect time and adapts (header prefix, `start` on create, `/wait` failure
//! styles, exec log URLs). Background operations are waited on at once, since servers purge them
//! 5 s after they finish. Every call has a timeout; every error is an [`Error`] variant.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lxd::Error> {
//! use lxd::{Client, ExecRequest, FilePerms, ImageSource, InstanceSpec};
//! let lxd = Client::discover().await?;
//! lxd.create_instance(&InstanceSpec::new("r-1", ImageSource::Alias("busybox".into())).started()).await?;
//! lxd.push_file("r-1", "/tmp/config", b"x".to_vec(), FilePerms::secret()).await?;
//! let out = lxd.exec("r-1", &ExecRequest::shell("cat /tmp/config")).await?;
//! assert_eq!(out.stdout, b"x");
//! lxd.force_delete_instance("r-1").await?;
//! # Ok(()) }
//! ```

mod client;
mod cluster;
mod error;
mod exec;
mod files;
mod images;
mod instances;
mod lease;
mod names;
mod resources;
mod types;

pub use client::{discover_socket, Client, Endpoint, PrivateKeyPem, Timeouts};
pub use cluster::{ClusterGroup, ClusterInfo, ServerResources};
pub use error::{Error, Object, ObjectKind, Result};
pub use exec::{ExecOutput, ExecRequest, ExecStatus};
pub use files::{FileContent, FilePerms};
pub use images::PublishSpec;
pub use instances::{ImageSource, InstanceSpec, Stop};
pub use lease::{CasError, ETag, KeysAt, LEASE_PROFILE_DESCRIPTION};
pub use names::validate_instance_name;
pub use types::{
    ClusterMember, Flavour, Image, ImageAlias, ImageAliasRef, Instance, InstanceState,
    InstanceType, NetworkAddress, NetworkState, Operation, Profile, ServerInfo, StoragePool,
};
