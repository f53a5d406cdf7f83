//! What the listeners and the passes share, per scale-set pool: the scale set's id, whether this
//! manager holds its session, and the listener's last desired count.
//!
//! A pass sizes a scale-set pool with the listener's count alone ([`ScaleSetHub::size_demands`]:
//! a fixed target, so webhook demand is never routed to it, and the pool is never scaled to a
//! webhook target), and keeps its hands off a pool whose session this manager does not hold:
//! another manager acts on that set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ScaleSetPool;
use crate::pool::{PoolDemand, PoolName, Sizing};

/// A listener's session, as metrics and the hub see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Not connected yet, or between sessions.
    #[default]
    Connecting,
    /// This manager holds the session and acts on the set.
    Active,
    /// Another session holds the set (409): waiting with a bounded backoff.
    Standby,
    /// Calls fail (broker errors): retrying with a backoff.
    Failing,
    /// Shut down.
    Stopped,
}

impl SessionState {
    pub const ALL: [Self; 5] = [
        Self::Connecting,
        Self::Active,
        Self::Standby,
        Self::Failing,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Active => "active",
            Self::Standby => "standby",
            Self::Failing => "failing",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    scale_set_id: Option<u64>,
    state: SessionState,
    /// The listener's last desired count; meaningful while `Active`.
    desired: usize,
}

/// Shared by a manager's listeners, its passes and its registry.
#[derive(Debug, Default)]
pub struct ScaleSetHub {
    pools: BTreeMap<PoolName, (ScaleSetPool, Mutex<Slot>)>,
    /// Wakes a pool's worker: the desired count changed, or a runner went.
    wake: BTreeMap<PoolName, Arc<Notify>>,
}

impl ScaleSetHub {
    pub fn new(pools: &[ScaleSetPool]) -> Self {
        Self {
            pools: pools
                .iter()
                .map(|p| (p.pool.clone(), (p.clone(), Mutex::new(Slot::default()))))
                .collect(),
            wake: pools
                .iter()
                .map(|p| (p.pool.clone(), Arc::new(Notify::new())))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The scale-set pools as configured.
    pub fn pools(&self) -> impl Iterator<Item = &ScaleSetPool> {
        self.pools.values().map(|(p, _)| p)
    }

    pub fn is_scale_set(&self, pool: &PoolName) -> bool {
        self.pools.contains_key(pool)
    }

    fn with<T>(&self, pool: &PoolName, f: impl FnOnce(&mut Slot) -> T) -> Option<T> {
        self.pools.get(pool).map(|(_, slot)| f(&mut slot.lock()))
    }

    pub fn set_scale_set_id(&self, pool: &PoolName, id: Option<u64>) {
        self.with(pool, |s| s.scale_set_id = id);
    }

    pub fn scale_set_id(&self, pool: &PoolName) -> Option<u64> {
        self.with(pool, |s| s.scale_set_id).flatten()
    }

    /// The ids of every set known.
    pub fn scale_set_ids(&self) -> BTreeSet<u64> {
        self.pools
            .values()
            .filter_map(|(_, slot)| slot.lock().scale_set_id)
            .collect()
    }

    /// The scale-set pool a registration's labels name (by its marker label), if any.
    pub fn pool_of_labels(&self, labels: &[String]) -> Option<&PoolName> {
        let pool = PoolName::of_labels(labels);
        self.pools.get_key_value(&pool).map(|(name, _)| name)
    }

    pub fn state(&self, pool: &PoolName) -> SessionState {
        self.with(pool, |s| s.state).unwrap_or_default()
    }

    /// Sets the session state; `desired` with [`SessionState::Active`].
    pub fn set_state(&self, pool: &PoolName, state: SessionState, desired: Option<usize>) {
        self.with(pool, |s| {
            s.state = state;
            if let Some(desired) = desired {
                s.desired = desired;
            }
        });
        self.wake(pool);
    }

    /// Records the listener's desired count; whether it changed.
    pub fn set_desired(&self, pool: &PoolName, desired: usize) -> bool {
        self.with(pool, |s| {
            std::mem::replace(&mut s.desired, desired) != desired
        })
        .unwrap_or(false)
    }

    /// The count a pass sizes the pool with: `Some` while this manager holds the session.
    pub fn desired(&self, pool: &PoolName) -> Option<usize> {
        self.with(pool, |s| {
            (s.state == SessionState::Active).then_some(s.desired)
        })
        .flatten()
    }

    /// Wakes the pool's worker.
    pub fn wake(&self, pool: &PoolName) {
        if let Some(notify) = self.wake.get(pool) {
            notify.notify_one();
        }
    }

    /// What the pool's worker waits on.
    pub fn waker(&self, pool: &PoolName) -> Option<Arc<Notify>> {
        self.wake.get(pool).cloned()
    }

    /// For a pass: a scale-set pool this manager holds is sized `Fixed(desired)` (never by
    /// webhook demand) and takes no webhook job in routing (GitHub gives a scale set its jobs
    /// itself; a job routed there would be taken from the webhook pools and given to no one);
    /// the pools it does not hold are returned, for the pass to leave alone.
    pub fn size_demands(&self, demands: &mut [PoolDemand]) -> BTreeSet<PoolName> {
        let mut hands_off = BTreeSet::new();
        for demand in demands {
            if !self.is_scale_set(&demand.name) {
                continue;
            }
            demand.labels.clear();
            match self.desired(&demand.name) {
                Some(desired) => demand.sizing = Sizing::Fixed(desired.min(demand.sizing.max())),
                None => {
                    hands_off.insert(demand.name.clone());
                }
            }
        }
        hands_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str) -> ScaleSetPool {
        ScaleSetPool {
            pool: PoolName::new(name).expect("pool name"),
            scale_set_name: format!("app-{name}"),
            runner_group: None,
            labels: vec![],
            min_idle: 0,
            max: 4,
        }
    }

    fn demand(name: &str, max: usize) -> PoolDemand {
        PoolDemand {
            name: PoolName::new(name).expect("pool name"),
            sizing: Sizing::Demand { min_idle: 1, max },
            priority: 0,
            labels: BTreeSet::new(),
        }
    }

    #[test]
    fn a_pass_sizes_held_sets_by_the_listener_and_leaves_the_others_alone() {
        let hub = ScaleSetHub::new(&[pool("ss"), pool("other")]);
        let ss = PoolName::new("ss").expect("pool name");
        hub.set_state(&ss, SessionState::Active, Some(9));
        let mut demands = vec![demand("ss", 4), demand("other", 4), demand("web", 4)];
        let hands_off = hub.size_demands(&mut demands);
        assert_eq!(demands[0].sizing, Sizing::Fixed(4), "capped at max");
        assert_eq!(
            demands[2].sizing,
            Sizing::Demand {
                min_idle: 1,
                max: 4
            }
        );
        assert_eq!(
            hands_off
                .into_iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
            ["other"]
        );
        hub.set_state(&ss, SessionState::Standby, None);
        assert_eq!(hub.desired(&ss), None);
    }

    #[test]
    fn the_marker_label_names_the_pool() {
        let hub = ScaleSetHub::new(&[pool("ss")]);
        let labels = vec!["x".to_owned(), "runner-manager-pool:ss".to_owned()];
        assert_eq!(hub.pool_of_labels(&labels).map(|p| p.as_str()), Some("ss"));
        assert_eq!(
            hub.pool_of_labels(&["runner-manager-pool:web".to_owned()]),
            None
        );
    }
}
