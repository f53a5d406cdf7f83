//! A [`RunnerRegistry`] for a manager with scale-set pools: a JIT registration whose labels name
//! a scale-set pool (its marker label) is made by the set's `generatejitconfig`, and a runner of
//! one of the sets is removed by RemoveRunner (which refuses a busy runner); everything else
//! (listing, tokens, other pools' runners, downloads) goes to the REST registry.

use std::sync::Arc;

use async_trait::async_trait;

use super::{ApiError, Removed, ScaleSetHub, ScaleSetRunners};
use crate::provider::{
    DeleteOutcome, JitConfig, JitRequest, Registration, RegistryError, RunnerDownload,
    RunnerRegistry,
};
use crate::Secret;

/// REST, with the scale-set pools' registrations routed to their sets.
pub struct ScaleSetRegistry {
    rest: Arc<dyn RunnerRegistry>,
    sets: Arc<dyn ScaleSetRunners>,
    hub: Arc<ScaleSetHub>,
}

impl ScaleSetRegistry {
    pub fn new(
        rest: Arc<dyn RunnerRegistry>,
        sets: Arc<dyn ScaleSetRunners>,
        hub: Arc<ScaleSetHub>,
    ) -> Self {
        Self { rest, sets, hub }
    }
}

fn registry_error(error: ApiError) -> RegistryError {
    RegistryError::Failed {
        what: error.what.clone(),
        source: Box::new(error),
    }
}

#[async_trait]
impl RunnerRegistry for ScaleSetRegistry {
    async fn list_runners(&self) -> Result<Vec<Registration>, RegistryError> {
        self.rest.list_runners().await
    }

    async fn registration_token(&self) -> Result<Secret, RegistryError> {
        self.rest.registration_token().await
    }

    async fn generate_jit(&self, request: &JitRequest) -> Result<JitConfig, RegistryError> {
        let Some(pool) = self.hub.pool_of_labels(&request.labels) else {
            return self.rest.generate_jit(request).await;
        };
        let name = &request.name;
        let Some(id) = self.hub.scale_set_id(pool) else {
            return Err(RegistryError::failed(
                format!("registering {name} in the scale set of pool {pool}"),
                "the scale set is not known yet (its listener has not connected)",
            ));
        };
        let jit = self
            .sets
            .generate_jit(id, name.as_str())
            .await
            .map_err(registry_error)?;
        Ok(JitConfig {
            runner_id: jit.runner_id,
            encoded: jit.encoded,
        })
    }

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError> {
        let ours = self.hub.scale_set_ids();
        if !ours.is_empty() {
            match self
                .sets
                .runner_scale_set(id)
                .await
                .map_err(registry_error)?
            {
                Some(set) if ours.contains(&set) => {
                    return match self.sets.remove_runner(id).await.map_err(registry_error)? {
                        Removed::Removed => Ok(DeleteOutcome::Deleted),
                        Removed::JobStillRunning => Ok(DeleteOutcome::Busy),
                    };
                }
                _ => {}
            }
        }
        self.rest.delete_registration(id).await
    }

    async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, RegistryError> {
        self.rest.runner_downloads().await
    }
}
