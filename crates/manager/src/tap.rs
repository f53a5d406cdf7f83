//! [`Tapped`]: an [`InstanceProvider`] that forwards every call to another one and tells a
//! [`Tap`] about each, once it has ended. Benchmarks time the manager's calls through it; a new
//! trait method is forwarded here once, not in every wrapper.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use crate::model::{InstanceType, Owner, Resources};
use crate::provider::{
    ExecOutput, ExecRequest, FilePush, ImageInfo, Instance, InstanceProvider, InstanceSpec, Member,
    ProviderError,
};

/// One call through a [`Tapped`] provider, with what it named.
#[derive(Debug, Clone, Copy)]
pub enum Call<'a> {
    ListInstances,
    ClusterMembers,
    EnsurePool,
    EnsureProfile,
    CheckImage(&'a str),
    CheckProfiles,
    CreateAndStart(&'a InstanceSpec),
    Exec(&'a str, &'a ExecRequest),
    PushFile(&'a str, &'a FilePush),
    PullFile(&'a str, &'a str),
    Delete(&'a str),
    ImageFingerprint(&'a str),
    ListImages,
    Stop(&'a str),
    /// The instance published.
    Publish(&'a str),
    /// The image's fingerprint.
    SetImageProperties(&'a str),
    /// The image's fingerprint.
    DeleteImage(&'a str),
}

impl Call<'_> {
    /// The instance the call acts on; `""` for calls on none.
    pub fn instance(&self) -> &str {
        match *self {
            Self::CreateAndStart(spec) => &spec.name,
            Self::Exec(name, _)
            | Self::PushFile(name, _)
            | Self::PullFile(name, _)
            | Self::Delete(name)
            | Self::Stop(name)
            | Self::Publish(name) => name,
            _ => "",
        }
    }
}

/// Told about every call of a [`Tapped`] provider.
pub trait Tap: Send + Sync {
    /// `call` ended; it started at `started`; `error` is its error, if it failed.
    fn record(&self, call: Call<'_>, started: Instant, error: Option<&ProviderError>);
}

impl<T: Tap + ?Sized> Tap for Arc<T> {
    fn record(&self, call: Call<'_>, started: Instant, error: Option<&ProviderError>) {
        (**self).record(call, started, error);
    }
}

/// `inner` with every call reported to `tap`.
pub struct Tapped<T> {
    inner: Arc<dyn InstanceProvider>,
    tap: T,
}

impl<T: Tap> Tapped<T> {
    pub fn new(inner: Arc<dyn InstanceProvider>, tap: T) -> Self {
        Self { inner, tap }
    }

    pub fn tap(&self) -> &T {
        &self.tap
    }

    fn report<R>(&self, call: Call<'_>, started: Instant, result: R) -> R
    where
        R: AsErr,
    {
        self.tap.record(call, started, result.as_err());
        result
    }
}

/// The error of a call's result, whatever its success type.
trait AsErr {
    fn as_err(&self) -> Option<&ProviderError>;
}

impl<V> AsErr for Result<V, ProviderError> {
    fn as_err(&self) -> Option<&ProviderError> {
        self.as_ref().err()
    }
}

#[async_trait]
impl<T: Tap> InstanceProvider for Tapped<T> {
    async fn list_instances(&self, owner: &Owner) -> Result<Vec<Instance>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.list_instances(owner).await;
        self.report(Call::ListInstances, started, result)
    }

    async fn cluster_members(&self) -> Result<Option<Vec<Member>>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.cluster_members().await;
        self.report(Call::ClusterMembers, started, result)
    }

    async fn ensure_pool(&self, path: &Path) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.ensure_pool(path).await;
        self.report(Call::EnsurePool, started, result)
    }

    async fn ensure_profile(
        &self,
        resources: &Resources,
        instance_type: InstanceType,
        with_pool: bool,
    ) -> Result<String, ProviderError> {
        let started = Instant::now();
        let result = self
            .inner
            .ensure_profile(resources, instance_type, with_pool)
            .await;
        self.report(Call::EnsureProfile, started, result)
    }

    async fn check_image(&self, image: &str) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.check_image(image).await;
        self.report(Call::CheckImage(image), started, result)
    }

    async fn check_profiles(&self, profiles: &[String]) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.check_profiles(profiles).await;
        self.report(Call::CheckProfiles, started, result)
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.create_and_start(spec).await;
        self.report(Call::CreateAndStart(spec), started, result)
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError> {
        let started = Instant::now();
        let result = self.inner.exec(name, request).await;
        self.report(Call::Exec(name, request), started, result)
    }

    fn streams_stdin(&self) -> bool {
        self.inner.streams_stdin()
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.push_file(name, file).await;
        self.report(Call::PushFile(name, file), started, result)
    }

    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.pull_file(name, path).await;
        self.report(Call::PullFile(name, path), started, result)
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.delete(name).await;
        self.report(Call::Delete(name), started, result)
    }

    async fn image_fingerprint(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.image_fingerprint(alias).await;
        self.report(Call::ImageFingerprint(alias), started, result)
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.list_images().await;
        self.report(Call::ListImages, started, result)
    }

    async fn stop(&self, name: &str) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.stop(name).await;
        self.report(Call::Stop(name), started, result)
    }

    async fn publish(
        &self,
        name: &str,
        alias: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        let started = Instant::now();
        let result = self.inner.publish(name, alias, properties).await;
        self.report(Call::Publish(name), started, result)
    }

    async fn set_image_properties(
        &self,
        fingerprint: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self
            .inner
            .set_image_properties(fingerprint, properties)
            .await;
        self.report(Call::SetImageProperties(fingerprint), started, result)
    }

    async fn delete_image(&self, fingerprint: &str) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = self.inner.delete_image(fingerprint).await;
        self.report(Call::DeleteImage(fingerprint), started, result)
    }
}
