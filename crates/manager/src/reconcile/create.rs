//! Create: the preflight shared by a pass's creations, then each runner created, installed and
//! started, or cleaned up entirely.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use super::RunnerManager;
use crate::events::RunnerInstalled;
use crate::install::{self, InstallError, InstallSettings, RegistrationSecret};
use crate::model::{RegistrationMode, RunnerName, Secret};
use crate::policy::PolicyError;
use crate::pool::PoolSpec;
use crate::provider::{render_chain, InstanceSpec, JitRequest, ProviderError, RegistryError};

/// How many times a runner's instance is created before its creation counts as failed.
const CREATE_ATTEMPTS: usize = 3;

/// What every creation of one pool in a pass shares.
pub(super) struct Prepared {
    image: String,
    instance_type: crate::model::InstanceType,
    profiles: Vec<String>,
    /// The owner's and the pool's keys.
    config: std::collections::BTreeMap<String, String>,
    /// The pool's labels and runner group.
    install: InstallSettings,
    registration_token: Option<Secret>,
    /// Launching from this baked image (fingerprint): the runner is in place already.
    baked: Option<String>,
}

/// Why the preflight of a pass's creations failed: nothing was registered or created.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The image is missing (a permanent error, which names it and says how to list images).
    #[error(transparent)]
    Image(ProviderError),
    #[error("ensuring storage pool")]
    Pool(#[source] ProviderError),
    #[error("ensuring resource profile")]
    Profile(#[source] ProviderError),
    /// A profile is missing, like [`Self::Image`].
    #[error(transparent)]
    Profiles(ProviderError),
    #[error("fetching a registration token")]
    RegistrationToken(#[source] RegistryError),
}

/// Why one runner's creation failed; what it made is cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A missing image, profile...: every attempt would meet it, so it is not retried.
    #[error(transparent)]
    Permanent(ProviderError),
    /// Failed every attempt (3, each failed instance removed).
    #[error("creating instance")]
    Instance(#[source] ProviderError),
    /// The failed instance could not be removed either: no new attempt.
    #[error("creating instance (removing the failed one: {})", crate::provider::Chain(.removing))]
    InstanceLeftBehind {
        #[source]
        creating: ProviderError,
        removing: ProviderError,
    },
    #[error("generating jit config")]
    Jit(#[source] RegistryError),
    #[error(transparent)]
    PolicyToken(PolicyError),
    #[error(transparent)]
    Install(InstallError),
}

impl RunnerManager {
    /// The preflight of one pool's creations. `token`: the pass's registration token, fetched
    /// once for every token-mode pool.
    /// `baked`: launch from that image of the pool rather than its base image.
    pub(super) async fn prepare_creation(
        &self,
        pool: &PoolSpec,
        baked: Option<&crate::images::BakedImage>,
        token: &tokio::sync::OnceCell<Secret>,
    ) -> Result<Prepared, PrepareError> {
        let image = baked.map_or(pool.image.as_str(), |b| b.alias.as_str());
        // Preflight, creating nothing: a missing image (or profile, below) would fail every
        // creation of the pass alike. One clear error, before any registration or instance.
        self.provider
            .check_image(image)
            .await
            .map_err(PrepareError::Image)?;
        if let Some(path) = &self.config.lxd_storage_path {
            self.provider
                .ensure_pool(path)
                .await
                .map_err(PrepareError::Pool)?;
        }
        let profile = self
            .provider
            .ensure_profile(
                &pool.resources,
                pool.instance_type,
                self.config.lxd_storage_path.is_some(),
            )
            .await
            .map_err(PrepareError::Profile)?;
        let mut profiles = vec!["default".to_owned(), profile];
        profiles.extend(pool.profiles.iter().cloned());
        self.provider
            .check_profiles(&profiles)
            .await
            .map_err(PrepareError::Profiles)?;
        let registration_token = match pool.registration {
            RegistrationMode::Token => Some(
                token
                    .get_or_try_init(|| self.registry.registration_token())
                    .await
                    .map_err(PrepareError::RegistrationToken)?
                    .clone(),
            ),
            RegistrationMode::Jit => None,
        };
        let mut config = self.owner.config_keys();
        config.extend(pool.config_keys());
        if let Some(baked) = baked {
            config.insert(
                crate::images::IMAGE_KEY.to_owned(),
                baked.fingerprint.clone(),
            );
        }
        Ok(Prepared {
            baked: baked.map(|b| b.fingerprint.clone()),
            image: image.to_owned(),
            instance_type: pool.instance_type,
            profiles,
            config,
            install: self.install_settings(pool),
            registration_token,
        })
    }

    /// Creates, installs and starts one runner; on failure cleans up everything it made. The
    /// error is the creation's, rendered with its causes, and the cleanup's if that failed too.
    /// `target`: the cluster member (or `@group`) placement chose; `None`: the server's choice.
    pub(super) async fn create_runner(
        &self,
        prepared: &Prepared,
        tarball: &[u8],
        target: Option<String>,
    ) -> Result<RunnerName, (RunnerName, String)> {
        let name = self.owner.new_runner_name();
        let started = Instant::now();
        let mut jit_id = None;
        let result = self
            .create_runner_steps(&name, prepared, tarball, target, &mut jit_id)
            .await;
        match result {
            Ok(()) => {
                RunnerInstalled {
                    name: name.to_string(),
                    duration: started.elapsed(),
                }
                .emit(&self.telemetry);
                Ok(name)
            }
            Err(error) => {
                let error = render_chain(&error);
                tracing::warn!(message = "Runner creation failed, cleaning up.", runner = %name, %error);
                let error = match self.cleanup_failed(&name, jit_id).await {
                    Ok(()) => error,
                    Err(cleanup) => format!("{error}; cleanup also failed: {cleanup}"),
                };
                Err((name, error))
            }
        }
    }

    async fn create_runner_steps(
        &self,
        name: &RunnerName,
        prepared: &Prepared,
        tarball: &[u8],
        target: Option<String>,
        jit_id: &mut Option<u64>,
    ) -> Result<(), CreateError> {
        let spec = InstanceSpec {
            name: name.to_string(),
            image: prepared.image.clone(),
            instance_type: prepared.instance_type,
            profiles: prepared.profiles.clone(),
            config: prepared.config.clone(),
            ephemeral: true,
            target,
        };
        // The instance boots while GitHub issues the runner's credentials; a JIT registration
        // made for an instance that then fails is removed by `cleanup_failed` (via `jit_id`).
        let create = async {
            // A start can fail transiently on a loaded host (measured on Incus 6.0: `forkstart`
            // failing while other instances are being deleted); the seed retried 5×. Up to
            // CREATE_ATTEMPTS, each failed instance removed before the next attempt.
            (|| async {
                match self.provider.create_and_start(&spec).await {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        let removed = self.provider.delete(name.as_str()).await;
                        Err(match removed {
                            // A missing image, profile... would fail every attempt alike.
                            Ok(()) if error.is_permanent() => CreateError::Permanent(error),
                            Ok(()) => CreateError::Instance(error),
                            Err(removing) => CreateError::InstanceLeftBehind {
                                creating: error,
                                removing,
                            },
                        })
                    }
                }
            })
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(CREATE_ATTEMPTS - 1),
            )
            .when(|e| matches!(e, CreateError::Instance(_)))
            .notify(|e, pause| {
                tracing::warn!(message = "Instance creation failed, retrying.", runner = %name,
                    error = %crate::provider::Chain(e), ?pause);
            })
            .await
        };
        let credentials = async {
            let secret = match &prepared.registration_token {
                Some(token) => RegistrationSecret::Token(token.clone()),
                None => {
                    // A JIT registration has only the labels it is given: GitHub's defaults
                    // (which `config.sh` adds in token mode) come first.
                    let (os, arch) = crate::runner_bin::platform();
                    let request = JitRequest {
                        name: name.clone(),
                        labels: crate::pool::default_labels(os, arch)
                            .into_iter()
                            .chain(prepared.install.labels.iter().cloned())
                            .collect(),
                        group: prepared.install.path.group().map(str::to_owned),
                    };
                    let jit = self
                        .registry
                        .generate_jit(&request)
                        .await
                        .map_err(CreateError::Jit)?;
                    *jit_id = Some(jit.runner_id);
                    RegistrationSecret::Jit(jit.encoded)
                }
            };
            let policy_token: Option<Secret> = match &self.policy {
                Some(policy) => Some(
                    policy
                        .one_time_token()
                        .await
                        .map_err(CreateError::PolicyToken)?,
                ),
                None => None,
            };
            Ok::<_, CreateError>((secret, policy_token))
        };
        let (created, credentials) = tokio::join!(create, credentials);
        created?;
        let (secret, policy_token) = credentials?;
        install::install_runner(
            self.provider.as_ref(),
            name,
            &prepared.install,
            // From a baked image the runner is in place: no tarball travels.
            prepared.baked.is_none().then_some(tarball),
            &secret,
            policy_token.as_ref(),
        )
        .await
        .map_err(CreateError::Install)
    }

    /// Deletes the instance and any registration of a runner whose creation failed; the
    /// failures, each rendered with its causes.
    async fn cleanup_failed(&self, name: &RunnerName, jit_id: Option<u64>) -> Result<(), String> {
        let mut errors = Vec::new();
        if let Err(e) = self.provider.delete(name.as_str()).await {
            errors.push(format!("deleting instance: {}", render_chain(&e)));
        }
        let id = match jit_id {
            Some(id) => Some(id),
            // Token mode: config.sh may have registered before a later step failed.
            None => match self.list_owned_registrations().await {
                Ok(all) => all.into_iter().find(|(n, _)| n == name).map(|(_, r)| r.id),
                Err(e) => {
                    errors.push(render_chain(&e));
                    None
                }
            },
        };
        if let Some(id) = id {
            if let Err(e) = self.registry.delete_registration(id).await {
                errors.push(format!("deleting registration {id}: {}", render_chain(&e)));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl RunnerManager {
    /// What a runner of `pool` is installed with: the manager's settings with the pool's
    /// labels and runner group.
    pub(crate) fn install_settings(&self, pool: &PoolSpec) -> InstallSettings {
        InstallSettings {
            labels: pool.registration_labels(self.owner.app_name()),
            path: self.install.path.with_group(pool.runner_group.as_deref()),
            ..self.install.clone()
        }
    }
}
