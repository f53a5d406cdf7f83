//! Observe: both sides listed concurrently (with the cluster's members on a cluster),
//! ownership checked, and only the instances GitHub does not report online probed. An instance
//! on an offline member is lost: never probed.

use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use time::OffsetDateTime;

use super::{ManagerError, PassState, RunnerManager};
use crate::guest;
use crate::model::RunnerName;
use crate::plan::{Location, MemberState, Observed, ObservedInstance, ObservedRegistration, Probe};
use crate::pool::PoolName;
use crate::provider::{offline_members, InstanceStatus, Registration};

impl RunnerManager {
    pub(super) async fn list_owned_registrations(
        &self,
    ) -> Result<Vec<(RunnerName, Registration)>, ManagerError> {
        let all = self
            .registry
            .list_runners()
            .await
            .map_err(|source| ManagerError::Registry {
                what: "listing github runners",
                source,
            })?;
        Ok(all
            .into_iter()
            .filter_map(|r| self.owner.parse_name(&r.name).map(|name| (name, r)))
            .collect())
    }

    /// Lists both sides concurrently, keeps what this owner owns, probes running instances.
    pub(super) async fn observe(
        &self,
        pass: &mut PassState,
        probe: bool,
    ) -> Result<Observed, ManagerError> {
        // The members once per pass: the cluster's own status says which are offline (those
        // are never called), the resources API what each online one has.
        let (instances, registrations, members) = tokio::join!(
            self.provider.list_instances(&self.owner),
            self.list_owned_registrations(),
            self.provider.cluster_members()
        );
        let instances = instances.map_err(ManagerError::ListInstances)?;
        let registrations = registrations?;
        let members = members.map_err(ManagerError::ListMembers)?;
        let offline = offline_members(members.as_deref());
        let now = OffsetDateTime::now_utc();
        let owned: Vec<_> = instances
            .into_iter()
            .filter(|i| self.owner.owns_instance(&i.name, &i.config))
            .filter_map(|i| self.owner.parse_name(&i.name).map(|name| (name, i)))
            .map(|(name, i)| {
                let location = i
                    .location
                    .as_deref()
                    .filter(|_| members.is_some())
                    .map(|member| {
                        let state = if offline.contains(member) {
                            MemberState::Offline
                        } else if pass.lost.contains(&name) {
                            MemberState::Returned
                        } else {
                            MemberState::Online
                        };
                        Location {
                            member: member.to_owned(),
                            state,
                        }
                    });
                (name, i, location)
            })
            .collect();
        // Remembered across passes: a runner seen lost is stale once its member is back.
        pass.lost
            .retain(|name| owned.iter().any(|(n, _, _)| n == name));
        pass.lost.extend(
            owned
                .iter()
                .filter(|(_, _, l)| l.as_ref().is_some_and(|l| l.state == MemberState::Offline))
                .map(|(n, _, _)| n.clone()),
        );

        // A runner that GitHub reports online is alive: it polls GitHub. Only the others
        // (booting, offline, unregistered) are probed, so an idle pass over a healthy fleet
        // makes no exec at all. A dead runner goes offline on GitHub and is probed then.
        let online: std::collections::BTreeSet<&RunnerName> = registrations
            .iter()
            .filter(|(_, r)| r.online)
            .map(|(name, _)| name)
            .collect();
        // The futures are collected first: a stream over a borrowing closure would make the
        // pass's future not `Send` for every lifetime (rust-lang/rust#102211).
        let probe_futures: Vec<_> = owned
            .iter()
            .map(|(name, instance, location)| {
                let online = online.contains(name);
                let lost = location
                    .as_ref()
                    .is_some_and(|l| l.state == MemberState::Offline);
                async move {
                    if lost || instance.status != InstanceStatus::Running {
                        return Probe::Unknown;
                    }
                    if online {
                        return Probe::Alive;
                    }
                    if !probe {
                        return Probe::Unknown;
                    }
                    match self.provider.exec(name.as_str(), &guest::probe()).await {
                        Ok(out) if out.exit_code == 0 => Probe::Alive,
                        Ok(out) if out.exit_code == guest::PROBE_FINISHED => Probe::Finished,
                        // Still installing: as good as no answer (booting while young).
                        Ok(out) if out.exit_code == guest::PROBE_NOT_STARTED => Probe::Unknown,
                        Ok(_) => Probe::Dead,
                        Err(_) => Probe::Unknown,
                    }
                }
            })
            .collect();
        let probes: Vec<Probe> = stream::iter(probe_futures).buffered(16).collect().await;

        let instances = owned
            .into_iter()
            .zip(probes)
            .map(|((name, i, location), probe)| ObservedInstance {
                name,
                pool: PoolName::of_instance(&i.config),
                image: i.config.get(crate::images::IMAGE_KEY).cloned(),
                outdated: false,
                status: i.status,
                age: (now - i.created_at).try_into().unwrap_or(Duration::ZERO),
                probe,
                location,
            })
            .collect();

        let seen_now = Instant::now();
        pass.offline_since
            .retain(|name, _| registrations.iter().any(|(n, r)| n == name && !r.online));
        let registrations = registrations
            .into_iter()
            .map(|(name, r)| {
                let offline_for = if r.online {
                    Duration::ZERO
                } else {
                    seen_now - *pass.offline_since.entry(name.clone()).or_insert(seen_now)
                };
                ObservedRegistration {
                    id: r.id,
                    name,
                    pool: PoolName::of_labels(&r.labels),
                    online: r.online,
                    busy: r.busy,
                    offline_for,
                }
            })
            .collect();
        let observed = Observed {
            instances,
            registrations,
            members,
        };
        self.report_first_online(pass, &observed);
        *self.runner_pools.lock() = observed
            .instances
            .iter()
            .map(|i| (i.name.to_string(), i.pool.clone()))
            .collect();
        Ok(observed)
    }
}

impl RunnerManager {
    /// Reports the boot time (instance created → online on GitHub) of each runner seen online
    /// for the first time. The first observation of a manager only learns what is online
    /// already: those runners booted before it started.
    fn report_first_online(&self, pass: &mut PassState, observed: &Observed) {
        let online: std::collections::HashSet<&RunnerName> = observed
            .registrations
            .iter()
            .filter(|r| r.online)
            .map(|r| &r.name)
            .collect();
        if pass.observed_before {
            for instance in &observed.instances {
                if online.contains(&instance.name) && !pass.seen_online.contains(&instance.name) {
                    crate::events::RunnerOnline {
                        name: instance.name.to_string(),
                        pool: instance.pool.to_string(),
                        boot_time: instance.age,
                    }
                    .emit(&self.telemetry);
                }
            }
        }
        pass.seen_online = online.into_iter().cloned().collect();
        pass.observed_before = true;
    }
}
