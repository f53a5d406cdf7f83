//! [`FencedProvider`] and [`FencedRegistry`]: the term checked before every mutating call,
//! a call cut short when the term ends, and the action line written.

use super::*;

// ---------------------------------------------------------------------------- fenced backends

/// An [`InstanceProvider`] whose mutating calls check the [`Fence`] first and end with the term.
/// Reads pass through.
pub type FencedProvider = Wrapped<Arc<Fence>>;

#[async_trait]
impl Around for Arc<Fence> {
    async fn around<R, F>(&self, call: Call<'_>, next: F) -> Result<R, ProviderError>
    where
        R: Send,
        F: Future<Output = Result<R, ProviderError>> + Send,
    {
        let Some((action, target)) = fenced_action(&call) else {
            return next.await;
        };
        self.act(action, &target, next, ProviderError::caused_by)
            .await
    }
}

/// The action line's name and object of a mutating call; `None` for a read.
fn fenced_action(call: &Call<'_>) -> Option<(&'static str, String)> {
    let action = match *call {
        Call::EnsurePool(path) => return Some(("ensure_pool", path.display().to_string())),
        Call::EnsureProfile => "ensure_profile",
        Call::CreateAndStart(_) => "create",
        Call::Exec(_, request) => exec_action(request),
        Call::PushFile(..) => "push_file",
        Call::Delete(_) => "delete",
        Call::Stop(_) => "stop",
        Call::Publish(_) => "publish",
        Call::SetImageProperties(fingerprint) => {
            return Some(("set_image_properties", fingerprint.to_owned()))
        }
        Call::DeleteImage(fingerprint) => return Some(("delete_image", fingerprint.to_owned())),
        Call::ListInstances
        | Call::ClusterMembers
        | Call::CheckImage(_)
        | Call::CheckProfiles
        | Call::PullFile(..)
        | Call::ImageFingerprint(_)
        | Call::ListImages => return None,
    };
    Some((action, call.instance().to_owned()))
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
        let lost = |what, e: LeaseLost| RegistryError::Failed {
            what,
            source: Box::new(e),
        };
        self.fence.act(action, target, fut, lost).await
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

    async fn generate_jit(&self, request: &JitRequest) -> Result<JitConfig, RegistryError> {
        self.act(
            "generate_jit",
            request.name.as_str(),
            self.inner.generate_jit(request),
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
