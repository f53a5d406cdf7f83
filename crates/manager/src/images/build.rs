//! Building a pool's image: an instance from the base image, the verified runner baked in,
//! stopped and published with the LXD/Incus API. A build that fails leaves no instance and no
//! image (publishing is the last step, and one call).

use std::collections::BTreeMap;

use rand::Rng;

use super::{
    runner_version, BakedImage, ImageState, BUILD_KEY, MANAGER_VERSION, PROP_APP,
    PROP_BASE_FINGERPRINT, PROP_BASE_IMAGE, PROP_BUILT_AT, PROP_MANAGER_VERSION, PROP_POOL,
    PROP_RUNNER_SHA256, PROP_RUNNER_VERSION, PROP_STATE, PROP_UNIT,
};
use crate::install::{self, InstallError};
use crate::pool::{ImageMode, PoolName, PoolSpec};
use crate::provider::{render_chain, InstanceSpec, ProviderError};
use crate::reconcile::RunnerManager;
use crate::runner_bin::RunnerBinError;

/// Why an image was not built (nothing is left behind).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("no pool {0:?} with image_mode = \"baked\" is configured")]
    NoSuchPool(String),
    #[error("no runner binary is cached: run `runner-bin update` first")]
    MissingRunnerBinary,
    #[error(transparent)]
    RunnerBinary(RunnerBinError),
    #[error(
        "base image {image:?} of pool {pool} not found: list the images with `incus image list`"
    )]
    NoBaseImage { pool: PoolName, image: String },
    #[error("{step} for pool {pool}")]
    Provider {
        pool: PoolName,
        step: &'static str,
        #[source]
        source: ProviderError,
    },
    #[error("baking the runner for pool {pool}")]
    Install {
        pool: PoolName,
        #[source]
        source: InstallError,
    },
    #[error("listing images")]
    List(#[source] ProviderError),
}

/// Build instances are named `<app>-<unit>-build-<8 characters>`: never a runner's name form,
/// so no pass touches them.
const BUILD_INFIX: &str = "build-";

impl RunnerManager {
    /// This owner's baked images, as the server has them.
    pub async fn baked_images(&self) -> Result<Vec<BakedImage>, ImageError> {
        let infos = self
            .provider()
            .list_images()
            .await
            .map_err(ImageError::List)?;
        Ok(infos
            .iter()
            .filter_map(|info| BakedImage::from_info(info, self.owner()))
            .collect())
    }

    /// Builds every baked pool's image that is missing or stale (the cached runner binary or
    /// the base image's fingerprint changed since the newest image was built). Each pool's
    /// result: the image built, or `None` when the newest one is current.
    pub async fn ensure_images(&self) -> Vec<(PoolName, Result<Option<BakedImage>, ImageError>)> {
        let mut out = Vec::new();
        let pools: Vec<PoolSpec> = self
            .pools()
            .iter()
            .filter(|p| p.image_mode == ImageMode::Baked)
            .cloned()
            .collect();
        for pool in pools {
            let result = self.ensure_image(&pool).await;
            out.push((pool.name.clone(), result));
        }
        out
    }

    async fn ensure_image(&self, pool: &PoolSpec) -> Result<Option<BakedImage>, ImageError> {
        let cached = self.runner_bin().ok_or(ImageError::MissingRunnerBinary)?;
        let base = self.base_fingerprint(pool).await?;
        let images = self.baked_images().await?;
        // An image of this runner on this base exists already (a bad one too: building it
        // again would fail the same way; a new runner release or base image is built).
        let current = images.iter().any(|i| {
            i.pool == pool.name && i.runner_sha256 == cached.sha256 && i.base_fingerprint == base
        });
        if current {
            return Ok(None);
        }
        self.build_image(pool).await.map(Some)
    }

    async fn base_fingerprint(&self, pool: &PoolSpec) -> Result<String, ImageError> {
        self.provider()
            .image_fingerprint(&pool.image)
            .await
            .map_err(|source| ImageError::Provider {
                pool: pool.name.clone(),
                step: "resolving the base image",
                source,
            })?
            .ok_or_else(|| ImageError::NoBaseImage {
                pool: pool.name.clone(),
                image: pool.image.clone(),
            })
    }

    /// Builds `pool`'s image from its base image and the cached runner binary, as a canary
    /// (see [`crate::images`]). Nothing is left behind when a step fails.
    pub async fn build_image(&self, pool: &PoolSpec) -> Result<BakedImage, ImageError> {
        let _building = self.image_build_lock().lock().await;
        let (cached, tarball) = self.runner_bin_load().await.map_err(|e| match e {
            RunnerBinError::Missing => ImageError::MissingRunnerBinary,
            e => ImageError::RunnerBinary(e),
        })?;
        let base = self.base_fingerprint(pool).await?;
        let provider = |step: &'static str| {
            let pool = pool.name.clone();
            move |source| ImageError::Provider { pool, step, source }
        };
        let profile = self
            .provider()
            .ensure_profile(&pool.resources, pool.instance_type, false)
            .await
            .map_err(provider("ensuring the resource profile"))?;
        let name = format!("{}{BUILD_INFIX}{}", self.owner().prefix(), suffix());
        let built_at = time::OffsetDateTime::now_utc().unix_timestamp();
        let version = runner_version(&cached.filename);
        // Unique even for two builds in one second: `<app>-<unit>-<pool>-<version>-<time>-<4>`.
        let alias = format!(
            "{}{}-{version}-{built_at}-{}",
            self.owner().prefix(),
            pool.name,
            &suffix()[..4]
        );
        let mut config = self.owner().config_keys();
        config.insert(BUILD_KEY.to_owned(), pool.name.to_string());
        let spec = InstanceSpec {
            name: name.clone(),
            image: pool.image.clone(),
            instance_type: pool.instance_type,
            profiles: ["default".to_owned(), profile]
                .into_iter()
                .chain(pool.profiles.iter().cloned())
                .collect(),
            config,
            // Published once stopped: an ephemeral instance would be gone.
            ephemeral: false,
            target: None,
        };
        tracing::info!(message = "Building image.", pool = %pool.name, base = %pool.image, runner = %version, instance = %name);
        let started = std::time::Instant::now();
        let result = async {
            self.provider()
                .create_and_start(&spec)
                .await
                .map_err(provider("creating the build instance"))?;
            install::bake_runner(
                self.provider().as_ref(),
                &name,
                &self.install_settings(pool),
                &tarball,
            )
            .await
            .map_err(|source| ImageError::Install {
                pool: pool.name.clone(),
                source,
            })?;
            self.provider()
                .stop(&name)
                .await
                .map_err(provider("stopping the build instance"))?;
            let properties = BTreeMap::from([
                (PROP_APP.to_owned(), self.owner().app_name().to_owned()),
                (PROP_UNIT.to_owned(), self.owner().unit().to_string()),
                (PROP_POOL.to_owned(), pool.name.to_string()),
                (PROP_BASE_IMAGE.to_owned(), pool.image.clone()),
                (PROP_BASE_FINGERPRINT.to_owned(), base.clone()),
                (PROP_RUNNER_VERSION.to_owned(), version.clone()),
                (PROP_RUNNER_SHA256.to_owned(), cached.sha256.clone()),
                (PROP_MANAGER_VERSION.to_owned(), MANAGER_VERSION.to_owned()),
                (PROP_BUILT_AT.to_owned(), built_at.to_string()),
                (
                    PROP_STATE.to_owned(),
                    ImageState::Canary.as_str().to_owned(),
                ),
                (
                    "description".to_owned(),
                    format!(
                        "runner {version} for pool {} of {}",
                        pool.name,
                        self.owner().prefix().trim_end_matches('-')
                    ),
                ),
            ]);
            let fingerprint = self
                .provider()
                .publish(&name, &alias, &properties)
                .await
                .map_err(provider("publishing the image"))?;
            Ok::<_, ImageError>(BakedImage {
                fingerprint,
                alias: alias.clone(),
                pool: pool.name.clone(),
                base_image: pool.image.clone(),
                base_fingerprint: base.clone(),
                runner_version: version.clone(),
                runner_sha256: cached.sha256.clone(),
                manager_version: MANAGER_VERSION.to_owned(),
                built_at,
                state: ImageState::Canary,
                size: 0,
                properties,
            })
        }
        .await;
        // The build instance goes whatever happened.
        if let Err(error) = self.provider().delete(&name).await {
            tracing::warn!(message = "Deleting the build instance failed.", instance = %name, error = %render_chain(&error));
        }
        match &result {
            Ok(image) => {
                crate::events::ImageBuilt {
                    pool: pool.name.to_string(),
                    alias: image.alias.clone(),
                    runner_version: version,
                    duration: started.elapsed(),
                }
                .emit(self.telemetry());
            }
            Err(error) => {
                tracing::warn!(message = "Image build failed.", pool = %pool.name, error = %render_chain(error));
                self.telemetry().metrics.error("image_build");
            }
        }
        result
    }
}

fn suffix() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}
