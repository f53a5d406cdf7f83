//! `status`: the fleet as a pass would see it, read only: the same observation (without
//! probes: no exec) and the same classification as [`crate::plan`], so `status` and `reconcile`
//! never disagree on what a runner is.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ManagerError, PassState, RunnerManager};
use crate::model::RunnerName;
use crate::plan::{classify, Desired, RunnerState};
use crate::provider::InstanceStatus;
use crate::runner_bin::CachedBinary;

/// One runner: its instance and its registration as observed, and how the pass classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerView {
    pub name: RunnerName,
    /// The pool it belongs to (its instance's key, else its registration's label).
    pub pool: crate::pool::PoolName,
    /// `None`: a registration without an instance.
    pub instance: Option<InstanceStatus>,
    /// Since the instance was created.
    pub age: Option<Duration>,
    /// The baked image (fingerprint) its instance was launched from.
    pub image: Option<String>,
    /// `(online, busy)` as GitHub reports it; `None`: an instance without a registration.
    pub registration: Option<(bool, bool)>,
    pub state: RunnerState,
}

impl RunnerView {
    /// A registration without an instance.
    pub fn is_dangling(&self) -> bool {
        self.instance.is_none()
    }

    /// An instance without a registration that is past booting (a booting instance registers
    /// soon: it is not an orphan).
    pub fn is_orphan(&self) -> bool {
        self.instance.is_some()
            && self.registration.is_none()
            && !matches!(self.state, RunnerState::Booting)
    }
}

/// What `status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    /// Every runner of this owner, by name.
    pub runners: Vec<RunnerView>,
    /// The cached runner binary new runners get.
    pub runner_binary: Option<CachedBinary>,
}

impl RunnerManager {
    /// The fleet as the next pass would classify it. It takes no pass lock and runs no exec:
    /// a runner GitHub reports online counts as alive, and an unregistered instance past its
    /// boot grace is shown as to be removed (the pass probes it to tell orphan from
    /// unresponsive).
    pub async fn status(&self) -> Result<FleetStatus, ManagerError> {
        let mut fresh = PassState::default();
        let observed = self.observe(&mut fresh, false).await?;
        let desired = Desired {
            quantity: 0,
            boot_grace: self.config.boot_grace,
            offline_grace: self.config.offline_grace,
            max_idle_age: None,
        };
        let instances: BTreeMap<_, _> = observed.instances.iter().map(|i| (&i.name, i)).collect();
        let registrations: BTreeMap<_, _> = observed
            .registrations
            .iter()
            .map(|r| (&r.name, r))
            .collect();
        let runners = classify(&observed, &desired)
            .into_iter()
            .map(|(name, state)| {
                let instance = instances.get(&name);
                let registration = registrations.get(&name);
                let pool = instance
                    .map(|i| i.pool.clone())
                    .or_else(|| registration.map(|r| r.pool.clone()))
                    .unwrap_or_else(crate::pool::PoolName::default_pool);
                RunnerView {
                    pool,
                    instance: instance.map(|i| i.status),
                    age: instance.map(|i| i.age),
                    image: instance.and_then(|i| i.image.clone()),
                    registration: registration.map(|r| (r.online, r.busy)),
                    name,
                    state,
                }
            })
            .collect();
        Ok(FleetStatus {
            runners,
            runner_binary: self.runner_bin(),
        })
    }
}
