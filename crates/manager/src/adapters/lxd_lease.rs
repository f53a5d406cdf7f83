//! [`LeaseStore`] on LXD/Incus: the record in the `user.*` keys of a profile of its own,
//! `rm-lease-<app>-<unit>`, versioned by the profile's ETag (see `lxd::Client::read_profile_keys`).
//! A profile is cluster-wide and works alike on Incus (standalone or clustered) and LXD 5.0; one
//! per owner keeps owners' leases from sharing a version.

use std::time::Duration;

use async_trait::async_trait;

use crate::lease::{LeaseRecord, LeaseStore, LeaseStoreError, Stored, Version};
use crate::model::Owner;

/// The lease of one owner in a profile.
#[derive(Debug, Clone)]
pub struct LxdLeaseStore {
    client: ::lxd::Client,
    profile: String,
    timeout: Duration,
}

/// The profile that holds `owner`'s lease.
pub fn lease_profile(owner: &Owner) -> String {
    format!("rm-lease-{}-{}", owner.app_name(), owner.unit())
}

impl LxdLeaseStore {
    /// `timeout` bounds each call (the lease's request timeout).
    pub fn new(client: ::lxd::Client, owner: &Owner, timeout: Duration) -> Self {
        Self {
            client,
            profile: lease_profile(owner),
            timeout,
        }
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }
}

fn failed(what: &str, source: impl std::error::Error + Send + Sync + 'static) -> LeaseStoreError {
    LeaseStoreError::Failed {
        what: what.to_owned(),
        source: Box::new(source),
    }
}

fn cas(what: &str, error: ::lxd::CasError) -> LeaseStoreError {
    if error.is_changed() {
        LeaseStoreError::Changed(Box::new(error))
    } else {
        failed(what, error)
    }
}

#[async_trait]
impl LeaseStore for LxdLeaseStore {
    fn describe(&self) -> String {
        format!("profile {} on {}", self.profile, self.client.endpoint())
    }

    async fn read(&self) -> Result<Option<Stored>, LeaseStoreError> {
        let found = self
            .client
            .read_profile_keys(&self.profile, self.timeout)
            .await
            .map_err(|e| failed("reading the lease", e))?;
        Ok(found.map(|k| Stored {
            record: LeaseRecord::from_keys(&k.keys),
            version: Version(k.etag.as_str().to_owned()),
        }))
    }

    async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseStoreError> {
        self.client
            .create_profile_keys(&self.profile, &record.to_keys(), self.timeout)
            .await
            .map_err(|e| cas("creating the lease", e))
    }

    async fn write(&self, record: &LeaseRecord, expected: &Version) -> Result<(), LeaseStoreError> {
        let etag = ::lxd::ETag::from_header(&expected.0);
        self.client
            .write_profile_keys(&self.profile, &record.to_keys(), &etag, self.timeout)
            .await
            .map_err(|e| cas("renewing the lease", e))
    }
}
