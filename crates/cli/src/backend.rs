//! Where the commands meet `manager::RunnerManager`.
//!
//! TODO(lead): implement [`ManagerBackend::connect`] with the manager crate: build the GitHub
//! and LXD clients from the [`Config`], register the manager's metrics in `registry`, and
//! return an [`Operations`] adapter. Until then every command that needs the manager fails with
//! exit 1 and says so; `check-config` works.

use std::sync::Arc;

use async_trait::async_trait;
use prometheus_client::registry::Registry;

use crate::app::Backend;
use crate::config::Config;
use crate::ops::Operations;

/// The production backend.
pub struct ManagerBackend;

#[async_trait]
impl Backend for ManagerBackend {
    async fn connect(
        &self,
        _config: &Config,
        _registry: &mut Registry,
    ) -> anyhow::Result<Arc<dyn Operations>> {
        anyhow::bail!("this build of runner-manager is not connected to the manager yet")
    }
}
