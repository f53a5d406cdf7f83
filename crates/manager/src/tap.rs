//! [`Wrapped`]: an [`InstanceProvider`] that forwards every call to another one through an
//! [`Around`] hook, which states only what the wrapper adds (a new trait method is forwarded here
//! once, not in every wrapper). [`Tapped`] tells a [`Tap`] about each call once it has ended
//! (benchmarks time the manager's calls through it); the lease's `FencedProvider` checks the
//! term before each mutating call.

use std::collections::BTreeMap;
use std::future::Future;
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
    EnsurePool(&'a Path),
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

/// What a [`Wrapped`] provider does around each call: `next` is the inner provider's call,
/// `call` names it. An implementation awaits `next` (or refuses the call) and returns its result.
#[async_trait]
pub trait Around: Send + Sync {
    async fn around<R, F>(&self, call: Call<'_>, next: F) -> Result<R, ProviderError>
    where
        R: Send,
        F: Future<Output = Result<R, ProviderError>> + Send;
}

/// `inner` with every call made through `around`.
pub struct Wrapped<A> {
    inner: Arc<dyn InstanceProvider>,
    around: A,
}

impl<A: Around> Wrapped<A> {
    pub fn new(inner: Arc<dyn InstanceProvider>, around: A) -> Self {
        Self { inner, around }
    }

    /// The hook (a [`Tapped`] provider's tap).
    pub fn tap(&self) -> &A {
        &self.around
    }
}

#[async_trait]
impl<A: Around> InstanceProvider for Wrapped<A> {
    async fn list_instances(&self, owner: &Owner) -> Result<Vec<Instance>, ProviderError> {
        self.around
            .around(Call::ListInstances, self.inner.list_instances(owner))
            .await
    }

    async fn cluster_members(&self) -> Result<Option<Vec<Member>>, ProviderError> {
        self.around
            .around(Call::ClusterMembers, self.inner.cluster_members())
            .await
    }

    async fn ensure_pool(&self, path: &Path) -> Result<(), ProviderError> {
        self.around
            .around(Call::EnsurePool(path), self.inner.ensure_pool(path))
            .await
    }

    async fn ensure_profile(
        &self,
        resources: &Resources,
        instance_type: InstanceType,
        with_pool: bool,
    ) -> Result<String, ProviderError> {
        self.around
            .around(
                Call::EnsureProfile,
                self.inner
                    .ensure_profile(resources, instance_type, with_pool),
            )
            .await
    }

    async fn check_image(&self, image: &str) -> Result<(), ProviderError> {
        self.around
            .around(Call::CheckImage(image), self.inner.check_image(image))
            .await
    }

    async fn check_profiles(&self, profiles: &[String]) -> Result<(), ProviderError> {
        self.around
            .around(Call::CheckProfiles, self.inner.check_profiles(profiles))
            .await
    }

    async fn create_and_start(&self, spec: &InstanceSpec) -> Result<(), ProviderError> {
        self.around
            .around(
                Call::CreateAndStart(spec),
                self.inner.create_and_start(spec),
            )
            .await
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, ProviderError> {
        self.around
            .around(Call::Exec(name, request), self.inner.exec(name, request))
            .await
    }

    fn streams_stdin(&self) -> bool {
        self.inner.streams_stdin()
    }

    async fn push_file(&self, name: &str, file: &FilePush) -> Result<(), ProviderError> {
        self.around
            .around(Call::PushFile(name, file), self.inner.push_file(name, file))
            .await
    }

    async fn pull_file(&self, name: &str, path: &str) -> Result<Option<Vec<u8>>, ProviderError> {
        self.around
            .around(Call::PullFile(name, path), self.inner.pull_file(name, path))
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        self.around
            .around(Call::Delete(name), self.inner.delete(name))
            .await
    }

    async fn image_fingerprint(&self, alias: &str) -> Result<Option<String>, ProviderError> {
        self.around
            .around(
                Call::ImageFingerprint(alias),
                self.inner.image_fingerprint(alias),
            )
            .await
    }

    async fn list_images(&self) -> Result<Vec<ImageInfo>, ProviderError> {
        self.around
            .around(Call::ListImages, self.inner.list_images())
            .await
    }

    async fn stop(&self, name: &str) -> Result<(), ProviderError> {
        self.around
            .around(Call::Stop(name), self.inner.stop(name))
            .await
    }

    async fn publish(
        &self,
        name: &str,
        alias: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        self.around
            .around(
                Call::Publish(name),
                self.inner.publish(name, alias, properties),
            )
            .await
    }

    async fn set_image_properties(
        &self,
        fingerprint: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<(), ProviderError> {
        let next = self.inner.set_image_properties(fingerprint, properties);
        self.around
            .around(Call::SetImageProperties(fingerprint), next)
            .await
    }

    async fn delete_image(&self, fingerprint: &str) -> Result<(), ProviderError> {
        self.around
            .around(
                Call::DeleteImage(fingerprint),
                self.inner.delete_image(fingerprint),
            )
            .await
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

/// A tap times each call and is told about it once it has ended.
#[async_trait]
impl<T: Tap> Around for T {
    async fn around<R, F>(&self, call: Call<'_>, next: F) -> Result<R, ProviderError>
    where
        R: Send,
        F: Future<Output = Result<R, ProviderError>> + Send,
    {
        let started = Instant::now();
        let result = next.await;
        self.record(call, started, result.as_ref().err());
        result
    }
}

/// `inner` with every call reported to the tap `T`.
pub type Tapped<T> = Wrapped<T>;
