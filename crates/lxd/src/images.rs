//! Images made from instances (publish), alias management that tolerates what is already there,
//! and image property updates.
//!
//! The plain listing, lookup, import and delete calls live in `resources.rs`
//! ([`Client::list_images`], [`Client::get_image`], [`Client::image_alias`],
//! [`Client::create_image_alias`], [`Client::delete_image_alias`], [`Client::delete_image`]);
//! the calls here add the forms that answer "absent" instead of failing.

use std::collections::BTreeMap;

use reqwest::header::{ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::client::{decode_envelope, op_result, Client, Reply};
use crate::error::{Error, Result};
use crate::names::{segment, validate_instance_name, validate_simple_name};
use crate::types::{Image, ImageAlias, Operation};

/// What to publish an instance as. Build with [`PublishSpec::new`] and the chained setters.
///
/// ```
/// let spec = lxd::PublishSpec::new()
///     .alias("runner-jammy")
///     .alias("runner-jammy-20240101")
///     .property("os", "ubuntu")
///     .description("runner image, built 2024-01-01");
/// assert_eq!(spec.aliases.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSpec {
    /// Aliases created with the image (all of them, or the publish fails and leaves no image).
    pub aliases: Vec<String>,
    /// Image properties, added to those the instance inherited from its own image (`os`,
    /// `release`, `description`...). A key given here wins.
    pub properties: BTreeMap<String, String>,
    /// The description of each alias, and the image's `description` property unless
    /// [`PublishSpec::properties`] has one.
    pub description: Option<String>,
    /// `gzip`, `xz`, `zstd`, `none`...: the server's `images.compression_algorithm` when `None`.
    pub compression_algorithm: Option<String>,
}

impl PublishSpec {
    /// No alias, no property: the image is known by its fingerprint only.
    pub fn new() -> Self {
        PublishSpec::default()
    }

    pub fn alias(mut self, name: impl Into<String>) -> Self {
        self.aliases.push(name.into());
        self
    }

    pub fn aliases<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.aliases.extend(names.into_iter().map(Into::into));
        self
    }

    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// `none` for an uncompressed image (fastest to publish and to unpack).
    pub fn compression(mut self, algorithm: impl Into<String>) -> Self {
        self.compression_algorithm = Some(algorithm.into());
        self
    }

    /// The `POST /1.0/images` body; `inherited` are the properties of the instance's own image
    /// (its `image.*` config keys, the prefix removed), which the spec's properties override.
    pub(crate) fn body(&self, instance: &str, inherited: &BTreeMap<String, String>) -> Value {
        let description = self.description.as_deref().unwrap_or("");
        let aliases: Vec<Value> = self
            .aliases
            .iter()
            .map(|name| json!({"name": name, "description": description}))
            .collect();
        // The inherited ones, then the description, then the spec's own properties.
        let mut properties = inherited.clone();
        if let Some(d) = &self.description {
            properties.insert("description".to_owned(), d.clone());
        }
        properties.extend(self.properties.clone());
        let mut body = json!({
            "source": {"type": "instance", "name": instance},
            "properties": properties,
            "aliases": aliases,
            "public": false,
        });
        if let Some(c) = &self.compression_algorithm {
            body["compression_algorithm"] = json!(c);
        }
        body
    }
}

impl Image {
    /// The names of its aliases.
    pub fn alias_names(&self) -> Vec<String> {
        self.aliases.iter().map(|a| a.name.clone()).collect()
    }

    /// True when `name` is one of its aliases.
    pub fn has_alias(&self, name: &str) -> bool {
        self.aliases.iter().any(|a| a.name == name)
    }
}

impl Client {
    /// Makes an image of a **stopped** instance (`POST /1.0/images`, source `instance`), with
    /// `spec`'s aliases and properties, private; waits for it and returns its fingerprint.
    ///
    /// - The instance must be stopped: a running one fails with [`Error::OperationFailed`]
    ///   carrying the server's text (Incus 6.0: `Cannot export a running instance as an image`).
    ///   Stop it first ([`Client::stop_instance`]).
    /// - An alias that exists already gives [`Error::Conflict`] before anything is built. If one
    ///   appears meanwhile, the server fails the publish after building the image; that image is
    ///   deleted again, so a failed publish leaves nothing behind.
    /// - A missing instance gives [`Error::NotFound`] (Incus 6.0 says so only inside the
    ///   operation; it is mapped here).
    pub async fn publish_instance(&self, instance: &str, spec: &PublishSpec) -> Result<String> {
        validate_instance_name(instance)?;
        for alias in &spec.aliases {
            validate_simple_name("image alias", alias)?;
        }
        let what = format!("publishing instance {instance} as an image");
        for alias in &spec.aliases {
            if let Some(target) = self.image_alias_target(alias).await? {
                return Err(Error::Conflict {
                    what,
                    message: format!("image alias {alias:?} already points to image {target}"),
                });
            }
        }
        // Incus 6.0 adds the source image's properties to those sent; LXD 5.0 keeps only those
        // sent. Sending them both ways gives the same image on both.
        let inherited: BTreeMap<String, String> = self
            .get_instance(instance)
            .await?
            .config
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("image.")?.to_owned(), v)))
            .collect();
        let rb = self
            .scoped(Method::POST, "/1.0/images")
            .json(&spec.body(instance, &inherited));
        let op = match self.call(&what, rb).await? {
            Reply::Sync(metadata) => Operation {
                status: "Success".into(),
                status_code: 200,
                metadata,
                ..Operation::default()
            },
            Reply::Async(op) => self.wait(&what, &op, self.timeouts().operation).await?,
        };
        // Incus 6.0 and LXD 5.0 put `{fingerprint, size}` in the operation's metadata once the
        // image exists, also when a later step (the aliases) fails.
        let fingerprint = op
            .metadata
            .get("fingerprint")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .map(str::to_owned);
        match (op_result(&what, op), fingerprint) {
            (Ok(_), Some(fp)) => Ok(fp),
            (Ok(_), None) => Err(Error::Protocol {
                what,
                message: "the publish operation gave no fingerprint".into(),
            }),
            (Err(e), Some(fp)) => {
                self.discard_failed_publish(&fp, spec).await;
                Err(e)
            }
            // Incus 6.0 reports a missing instance inside the operation: `Failed to fetch
            // instance "x" in project "default": Instance not found`.
            (Err(Error::OperationFailed { what, message }), None)
                if message.to_ascii_lowercase().contains("instance not found") =>
            {
                Err(Error::NotFound { what, message })
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Deletes the image a failed publish left behind, unless something else holds it (an alias
    /// not asked for: then the fingerprint was someone else's image).
    async fn discard_failed_publish(&self, fingerprint: &str, spec: &PublishSpec) {
        let Ok(image) = self.get_image(fingerprint).await else {
            return;
        };
        if image.aliases.iter().all(|a| spec.aliases.contains(&a.name)) {
            if let Err(e) = self.delete_image_if_exists(fingerprint).await {
                tracing::warn!(fingerprint, error = %e, "deleting the image of a failed publish");
            }
        }
    }

    /// The fingerprint an alias points to; `None` when there is no such alias.
    pub async fn image_alias_target(&self, name: &str) -> Result<Option<String>> {
        match self.image_alias(name).await {
            Ok(ImageAlias { target, .. }) => Ok(Some(target)),
            Err(Error::NotFound { message, .. }) if is_missing_itself(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Points a new alias at an image, with a description. An existing alias gives
    /// [`Error::Conflict`] (use [`Client::set_image_alias`] to retarget one).
    pub async fn create_image_alias_with_description(
        &self,
        name: &str,
        fingerprint: &str,
        description: &str,
    ) -> Result<()> {
        validate_simple_name("image alias", name)?;
        validate_simple_name("image fingerprint", fingerprint)?;
        let what = format!("creating image alias {name}");
        let body = json!({"name": name, "target": fingerprint, "description": description});
        self.run(
            &what,
            self.scoped(Method::POST, "/1.0/images/aliases").json(&body),
        )
        .await
        .map(|_| ())
    }

    /// Points the alias `name` at `fingerprint`: retargets it (keeping its description) when it
    /// exists, creates it otherwise. Safe when several callers race.
    ///
    /// The retarget is a `PUT` of the alias read just before (LXD 5.0.2 answers a `PATCH` of an
    /// alias with `context deadline exceeded` after 20 s; Incus takes either).
    pub async fn set_image_alias(&self, name: &str, fingerprint: &str) -> Result<()> {
        validate_simple_name("image alias", name)?;
        validate_simple_name("image fingerprint", fingerprint)?;
        let what = format!("pointing image alias {name} at {fingerprint}");
        let path = image_alias_path(name);
        for _ in 0..2 {
            match self.image_alias(name).await {
                Ok(current) => {
                    let body = json!({"target": fingerprint, "description": current.description});
                    match self
                        .run(&what, self.scoped(Method::PUT, &path).json(&body))
                        .await
                    {
                        // Deleted by someone else between the two calls: create it.
                        Err(Error::NotFound { message, .. }) if is_missing_itself(&message) => {}
                        other => return other.map(|_| ()),
                    }
                }
                Err(Error::NotFound { message, .. }) if is_missing_itself(&message) => {}
                Err(e) => return Err(e),
            }
            match self
                .create_image_alias_with_description(name, fingerprint, "")
                .await
            {
                // Created by someone else between the two calls: retarget that one.
                Err(Error::Conflict { .. }) => continue,
                other => return other,
            }
        }
        Err(Error::Conflict {
            what,
            message: "the alias kept appearing and disappearing".into(),
        })
    }

    /// Deletes an alias (not its image). Returns `false` when there was no such alias.
    pub async fn delete_image_alias_if_exists(&self, name: &str) -> Result<bool> {
        match self.delete_image_alias(name).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { message, .. }) if is_missing_itself(&message) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes an image (and its aliases), waiting for it. Returns `false` when there was no such
    /// image.
    pub async fn delete_image_if_exists(&self, fingerprint: &str) -> Result<bool> {
        match self.delete_image(fingerprint).await {
            Ok(()) => Ok(true),
            Err(Error::NotFound { message, .. }) if is_missing_itself(&message) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Replaces an image's properties with `properties` (keys not in it are removed), keeping its
    /// other settings (`public`, `auto_update`, `expires_at`, `profiles`). The update is
    /// conditional on the image's ETag; if another writer changed it in between (412), it is
    /// read and written once more.
    pub async fn update_image_properties(
        &self,
        fingerprint: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<()> {
        validate_simple_name("image fingerprint", fingerprint)?;
        let what = format!("updating the properties of image {fingerprint}");
        let path = image_path(fingerprint);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (etag, current) = self.image_with_etag(&what, &path).await?;
            let mut rb = self
                .scoped(Method::PUT, &path)
                .json(&image_put_body(&current, properties));
            if let Some(etag) = &etag {
                rb = rb.header(IF_MATCH, etag);
            }
            match self.run(&what, rb).await {
                Err(Error::Api { code: 412, .. }) if attempts < 2 => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// The image as the server sends it, with its ETag.
    async fn image_with_etag(&self, what: &str, path: &str) -> Result<(Option<String>, Value)> {
        let (headers, body) = self.raw(what, self.scoped(Method::GET, path)).await?;
        let etag = headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        match decode_envelope(what, StatusCode::OK, None, &body)? {
            Reply::Sync(v @ Value::Object(_)) => Ok((etag, v)),
            _ => Err(Error::Protocol {
                what: what.to_owned(),
                message: "expected the image as a sync answer".into(),
            }),
        }
    }
}

/// The `PUT /1.0/images/{fp}` body: the writable fields (`ImagePut` of both servers) as the server
/// sent them, with `properties` replaced. Fields the server did not send are left out, so it
/// applies its own defaults.
fn image_put_body(current: &Value, properties: &BTreeMap<String, String>) -> Value {
    let mut body = Map::new();
    for key in ["auto_update", "public", "expires_at", "profiles"] {
        if let Some(v) = current.get(key).filter(|v| !v.is_null()) {
            body.insert(key.to_owned(), v.clone());
        }
    }
    body.insert("properties".to_owned(), json!(properties));
    Value::Object(body)
}

/// A 404 about the object asked for (`Image alias not found`, `Image not found`), not about
/// its project (`Project not found`).
fn is_missing_itself(message: &str) -> bool {
    !message.to_ascii_lowercase().contains("project")
}

pub(crate) fn image_path(fingerprint: &str) -> String {
    format!("/1.0/images/{}", segment(fingerprint))
}

pub(crate) fn image_alias_path(name: &str) -> String {
    format!("/1.0/images/aliases/{}", segment(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_body() {
        let spec = PublishSpec::new()
            .alias("runner")
            .aliases(["runner-1"])
            .property("os", "busybox")
            .description("built by a test")
            .compression("none");
        let inherited = BTreeMap::from([
            ("description".to_owned(), "the base".to_owned()),
            ("os".to_owned(), "debian".to_owned()),
            ("release".to_owned(), "bookworm".to_owned()),
        ]);
        let body = spec.body("r-1", &inherited);
        assert_eq!(body["source"], json!({"type": "instance", "name": "r-1"}));
        assert_eq!(
            body["aliases"],
            json!([
                {"name": "runner", "description": "built by a test"},
                {"name": "runner-1", "description": "built by a test"}
            ])
        );
        assert_eq!(
            body["properties"],
            json!({"os": "busybox", "release": "bookworm", "description": "built by a test"})
        );
        assert_eq!(body["public"], false);
        assert_eq!(body["compression_algorithm"], "none");

        let plain = PublishSpec::new()
            .property("description", "mine")
            .description("alias text")
            .body("r-2", &BTreeMap::new());
        assert_eq!(plain["properties"]["description"], "mine");
        assert!(plain.get("compression_algorithm").is_none());
        let bare = PublishSpec::new().body("r-3", &BTreeMap::new());
        assert_eq!(bare["aliases"], json!([]));
        assert_eq!(bare["properties"], json!({}));
    }

    #[test]
    fn put_body_keeps_the_writable_fields() {
        let current = json!({
            "auto_update": false, "public": false, "expires_at": "0001-01-01T00:00:00Z",
            "profiles": ["default"], "properties": {"os": "busybox", "old": "x"},
            "fingerprint": "abc", "size": 1, "aliases": [{"name": "a"}], "cached": false,
        });
        let props = BTreeMap::from([("os".to_owned(), "busybox".to_owned())]);
        assert_eq!(
            image_put_body(&current, &props),
            json!({"auto_update": false, "public": false, "expires_at": "0001-01-01T00:00:00Z",
                   "profiles": ["default"], "properties": {"os": "busybox"}})
        );
        let sparse = json!({"public": true, "profiles": null});
        assert_eq!(
            image_put_body(&sparse, &BTreeMap::new()),
            json!({"public": true, "properties": {}})
        );
    }

    #[test]
    fn image_times_and_alias_names() {
        let image: Image = serde_json::from_value(json!({
            "fingerprint": "abc", "aliases": [{"name": "a", "description": ""}, {"name": "b"}],
            "properties": {"os": "busybox"}, "size": 1036557, "cached": true, "public": false,
            "created_at": "2026-12-06T08:18:30.200972525Z",
            "last_used_at": "0001-01-01T00:00:00Z",
        }))
        .expect("decodes");
        assert_eq!(image.alias_names(), vec!["a", "b"]);
        assert!(image.has_alias("b") && !image.has_alias("c"));
        assert_eq!(image.last_used_at, None, "the zero time means never");
        assert_eq!(image.created_at, "2026-12-06T08:18:30.200972525Z");
        assert!(image.cached);
        let used: Image = serde_json::from_value(json!({"last_used_at": "2026-12-06T08:20:00Z",
            "aliases": null}))
        .expect("decodes");
        assert_eq!(used.last_used_at.as_deref(), Some("2026-12-06T08:20:00Z"));
        assert!(used.alias_names().is_empty());
    }

    #[test]
    fn alias_paths_are_encoded() {
        assert_eq!(
            image_alias_path("debian/bookworm"),
            "/1.0/images/aliases/debian%2Fbookworm"
        );
        assert!(is_missing_itself("Image alias not found"));
        assert!(!is_missing_itself(
            "Failed loading project \"x\": Project not found"
        ));
    }
}
