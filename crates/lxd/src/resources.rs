//! Storage pools, profiles and images.

use std::path::Path;

use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::images::{image_alias_path, image_path};
use crate::names::{segment, validate_simple_name};
use crate::types::{Image, ImageAlias, Profile, StoragePool};

impl Client {
    // ---- storage pools ----

    pub async fn list_storage_pools(&self) -> Result<Vec<StoragePool>> {
        self.list(
            "listing storage pools",
            self.req(Method::GET, "/1.0/storage-pools"),
        )
        .await
    }

    pub async fn get_storage_pool(&self, name: &str) -> Result<StoragePool> {
        validate_simple_name("storage pool name", name)?;
        let what = format!("storage pool {name}");
        self.sync(&what, self.req(Method::GET, &storage_pool_path(name)))
            .await
    }

    /// Creates a `dir` pool stored at `source` (an existing, empty directory on the server host).
    pub async fn create_dir_pool(&self, name: &str, source: &Path) -> Result<()> {
        validate_simple_name("storage pool name", name)?;
        let what = format!("creating storage pool {name}");
        let body = json!({"name": name, "driver": "dir", "config": {"source": source}});
        self.run_done(
            &what,
            self.req(Method::POST, "/1.0/storage-pools").json(&body),
        )
        .await
    }

    /// Deletes a pool; fails while something uses it.
    pub async fn delete_storage_pool(&self, name: &str) -> Result<()> {
        validate_simple_name("storage pool name", name)?;
        let what = format!("deleting storage pool {name}");
        self.run_done(&what, self.req(Method::DELETE, &storage_pool_path(name)))
            .await
    }

    // ---- profiles ----

    pub async fn list_profiles(&self) -> Result<Vec<Profile>> {
        self.list(
            "listing profiles",
            self.scoped(Method::GET, "/1.0/profiles"),
        )
        .await
    }

    pub async fn get_profile(&self, name: &str) -> Result<Profile> {
        validate_simple_name("profile name", name)?;
        let what = format!("profile {name}");
        self.sync(&what, self.scoped(Method::GET, &profile_path(name)))
            .await
    }

    /// Creates a profile. An existing one gives [`Error::Conflict`].
    pub async fn create_profile(&self, profile: &Profile) -> Result<()> {
        validate_simple_name("profile name", &profile.name)?;
        let what = format!("creating profile {}", profile.name);
        self.run_done(
            &what,
            self.scoped(Method::POST, "/1.0/profiles").json(profile),
        )
        .await
    }

    /// Creates the profile unless a profile of that name exists (which is left as it is). Returns
    /// whether it was created. Safe when several callers race.
    pub async fn ensure_profile(&self, profile: &Profile) -> Result<bool> {
        match self.create_profile(profile).await {
            Ok(()) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces a profile's description, config and devices.
    pub async fn update_profile(&self, profile: &Profile) -> Result<()> {
        validate_simple_name("profile name", &profile.name)?;
        let what = format!("updating profile {}", profile.name);
        let body = json!({
            "description": profile.description,
            "config": profile.config,
            "devices": profile.devices,
        });
        self.run_done(
            &what,
            self.scoped(Method::PUT, &profile_path(&profile.name))
                .json(&body),
        )
        .await
    }

    /// Deletes a profile; fails while an instance uses it.
    pub async fn delete_profile(&self, name: &str) -> Result<()> {
        validate_simple_name("profile name", name)?;
        let what = format!("deleting profile {name}");
        self.run_done(&what, self.scoped(Method::DELETE, &profile_path(name)))
            .await
    }

    // ---- images ----

    pub async fn list_images(&self) -> Result<Vec<Image>> {
        self.list("listing images", self.scoped(Method::GET, "/1.0/images"))
            .await
    }

    pub async fn get_image(&self, fingerprint: &str) -> Result<Image> {
        validate_simple_name("image fingerprint", fingerprint)?;
        let what = format!("image {fingerprint}");
        self.sync(&what, self.scoped(Method::GET, &image_path(fingerprint)))
            .await
    }

    /// Resolves a local alias. A missing one gives [`Error::NotFound`].
    pub async fn image_alias(&self, alias: &str) -> Result<ImageAlias> {
        validate_simple_name("image alias", alias)?;
        let what = format!("image alias {alias}");
        self.sync(&what, self.scoped(Method::GET, &image_alias_path(alias)))
            .await
    }

    /// Imports a unified image tarball (`metadata.yaml` + `rootfs/`) and returns its fingerprint.
    /// The same image twice gives [`Error::Conflict`].
    pub async fn import_image(&self, tarball: impl Into<Bytes>) -> Result<String> {
        let what = "importing an image";
        let rb = self
            .scoped(Method::POST, "/1.0/images")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(tarball.into());
        let op = self.run(what, rb).await?;
        op.metadata
            .get("fingerprint")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol {
                what: what.to_owned(),
                message: "the import operation gave no fingerprint".into(),
            })
    }

    /// Points a new alias at an image. An existing alias gives [`Error::Conflict`].
    pub async fn create_image_alias(&self, alias: &str, fingerprint: &str) -> Result<()> {
        validate_simple_name("image alias", alias)?;
        let what = format!("creating image alias {alias}");
        let body = json!({"name": alias, "target": fingerprint});
        self.run_done(
            &what,
            self.scoped(Method::POST, "/1.0/images/aliases").json(&body),
        )
        .await
    }

    pub async fn delete_image_alias(&self, alias: &str) -> Result<()> {
        validate_simple_name("image alias", alias)?;
        let what = format!("deleting image alias {alias}");
        self.run_done(&what, self.scoped(Method::DELETE, &image_alias_path(alias)))
            .await
    }

    pub async fn delete_image(&self, fingerprint: &str) -> Result<()> {
        validate_simple_name("image fingerprint", fingerprint)?;
        let what = format!("deleting image {fingerprint}");
        self.run_done(&what, self.scoped(Method::DELETE, &image_path(fingerprint)))
            .await
    }
}

fn profile_path(name: &str) -> String {
    format!("/1.0/profiles/{}", segment(name))
}

fn storage_pool_path(name: &str) -> String {
    format!("/1.0/storage-pools/{}", segment(name))
}
