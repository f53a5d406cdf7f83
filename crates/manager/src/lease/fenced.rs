//! [`FencedProvider`] and [`FencedRegistry`]: the term checked before every mutating call,
//! a call cut short when the term ends, and the action line written.

use super::*;

// ---------------------------------------------------------------------------- fenced backends

/// An [`InstanceProvider`] whose mutating calls check the [`Fence`] first and end with the term.
/// Reads pass through.
pub struct FencedProvider {
    inner: Arc<dyn InstanceProvider>,
    fence: Arc<Fence>,
}

impl FencedProvider {
    pub fn new(inner: Arc<dyn InstanceProvider>, fence: Arc<Fence>) -> Self {
        Self { inner, fence }
    }

    async fn act<T>(
        &self,
        action: &'static str,
        target: &str,
        fut: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let what = format!("{action} {target}");
        let term = self
            .fence
            .check(action, target)
            .map_err(|e| ProviderError::caused_by(what.clone(), e))?;
        self.fence
            .guarded(term, action, target, fut, |e| {
                ProviderError::caused_by(what, e)
            })
            .await
    }
}

fn exec_action(request: &ExecRequest) -> &'static str {
    use crate::provider::ExecPurpose as P;
    match request.purpose {
        P::Probe => "exec_probe",
        P::Setup => "exec_setup",
        P::Bake => "exec_bake",
        P::Stop => "exec_stop",
        P::Quiesce => "exec_quiesce",
        P::Resume => "exec_resume",
        P::Other => "exec",
    }
}

#[async_trait]
impl InstanceProvider for FencedProvider {
    async fn list_instances(&self, owner: &Owner) -> Result<Vec<Instance>, ProviderError> {
        self.inner.list_instances(owner).await
    }

    async fn cluster_members(&self) -> Result<Option<Vec<Member>>, ProviderError> {
        self.inner.cluster_members().await
    }

    async fn ensure_pool(&self, path: &std::path::Path) -> Result<(), ProviderError> {
        let target = path.display().to_string();
        self.act("ensure_pool", &target, self.inner.ensure_pool(path))
            .await
    }

    async fn ensure_profile(
        &self,
        resources: &Resources,
        instance_type: InstanceType,
        with_pool: bool,
    ) -> Result<String, ProviderError> {
        self.act(
            "ensure_profile",
            "",
            self.inner
                .ensure_profile(resources, instance_type, with_pool),
        )
        .await
    }

    async fn check_image(&self, image: &str) -> Result<(), ProviderError> {
        self.inner.check_image(image).await
    }

    async fn check_profiles(&self, profiles: &[String]) -> Result<(), ProviderError> {
        self.inner.check_profiles(profiles).await
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        self.act("create", &spec.name, self.inner.create_and_start(spec))
            .await
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError> {
        self.act(exec_action(request), name, self.inner.exec(name, request))
            .await
    }

    fn streams_stdin(&self) -> bool {
        self.inner.streams_stdin()
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError> {
        self.act("push_file", name, self.inner.push_file(name, file))
            .await
    }

    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        self.inner.pull_file(name, path).await
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        self.act("delete", name, self.inner.delete(name)).await
    }

    async fn image_fingerprint(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        self.inner.image_fingerprint(alias).await
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, ProviderError> {
        self.inner.list_images().await
    }

    async fn stop(&self, name: &str) -> Result<(), ProviderError> {
        self.act("stop", name, self.inner.stop(name)).await
    }

    async fn publish(
        &self,
        name: &str,
        alias: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        self.act("publish", name, self.inner.publish(name, alias, properties))
            .await
    }

    async fn set_image_properties(
        &self,
        fingerprint: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        self.act(
            "set_image_properties",
            fingerprint,
            self.inner.set_image_properties(fingerprint, properties),
        )
        .await
    }

    async fn delete_image(&self, fingerprint: &str) -> Result<(), ProviderError> {
        self.act(
            "delete_image",
            fingerprint,
            self.inner.delete_image(fingerprint),
        )
        .await
    }
}

/// A [`RunnerRegistry`] whose registration changes check the [`Fence`] first.
pub struct FencedRegistry {
    inner: Arc<dyn RunnerRegistry>,
    fence: Arc<Fence>,
}

impl FencedRegistry {
    pub fn new(inner: Arc<dyn RunnerRegistry>, fence: Arc<Fence>) -> Self {
        Self { inner, fence }
    }

    async fn act<T>(
        &self,
        action: &'static str,
        target: &str,
        fut: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let what = format!("{action} {target}");
        let lost = |e: LeaseLost| RegistryError::Failed {
            what: what.clone(),
            source: Box::new(e),
        };
        let term = self.fence.check(action, target).map_err(lost)?;
        self.fence
            .guarded(term, action, target, fut, |e| RegistryError::Failed {
                what: what.clone(),
                source: Box::new(e),
            })
            .await
    }
}

#[async_trait]
impl RunnerRegistry for FencedRegistry {
    async fn list_runners(&self) -> Result<Vec<Registration>, RegistryError> {
        self.inner.list_runners().await
    }

    async fn registration_token(&self) -> Result<Secret, RegistryError> {
        self.act("registration_token", "", self.inner.registration_token())
            .await
    }

    async fn generate_jit(
        &self,
        name: &RunnerName,
        labels: &[String],
        group: Option<&str>,
    ) -> Result<JitConfig, RegistryError> {
        self.act(
            "generate_jit",
            name.as_str(),
            self.inner.generate_jit(name, labels, group),
        )
        .await
    }

    async fn delete_registration(&self, id: u64) -> Result<DeleteOutcome, RegistryError> {
        self.act(
            "delete_registration",
            &id.to_string(),
            self.inner.delete_registration(id),
        )
        .await
    }

    async fn runner_downloads(&self) -> Result<Vec<RunnerDownload>, RegistryError> {
        self.inner.runner_downloads().await
    }
}
