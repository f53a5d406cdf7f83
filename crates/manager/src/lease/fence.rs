//! [`Fence`]: the current term, which every mutating action checks first.

use super::*;

// ------------------------------------------------------------------------------------ fence

/// Why an action was not taken.
#[derive(Debug, Clone, thiserror::Error)]
#[error("not acting: this manager ({manager_id}) does not hold the lease{}", generation.map(|g| format!(" (generation {g} ended)")).unwrap_or_default())]
pub struct LeaseLost {
    pub manager_id: String,
    pub generation: Option<u64>,
}

/// What `status` and `/health` show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub manager_id: String,
    pub role: Role,
    /// The current holder as last read (this manager when active).
    pub holder: Option<String>,
    pub generation: Option<u64>,
}

#[derive(Debug)]
struct FenceState {
    term: Option<Term>,
    holder: Option<LeaseRecord>,
}

/// The current term, shared by the keeper (which sets it) and every action (which checks it).
#[derive(Debug)]
pub struct Fence {
    manager_id: String,
    state: parking_lot::Mutex<FenceState>,
    changed: tokio::sync::watch::Sender<u64>,
    metrics: Option<Arc<HaMetrics>>,
}

impl Fence {
    pub fn new(manager_id: impl Into<String>, metrics: Option<Arc<HaMetrics>>) -> Arc<Self> {
        Arc::new(Self {
            manager_id: manager_id.into(),
            state: parking_lot::Mutex::new(FenceState {
                term: None,
                holder: None,
            }),
            changed: tokio::sync::watch::Sender::new(0),
            metrics,
        })
    }

    pub fn manager_id(&self) -> &str {
        &self.manager_id
    }

    /// Sets the term (the keeper, after each step) and the holder last read.
    pub fn set(&self, term: Option<Term>, holder: Option<LeaseRecord>) {
        let changed = {
            let mut state = self.state.lock();
            let changed = state.term != term;
            state.term = term;
            state.holder = holder;
            changed
        };
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The term if it is still valid at `now`.
    pub fn term(&self, now: Instant) -> Option<Term> {
        self.state.lock().term.filter(|t| now < t.valid_until)
    }

    pub fn is_active(&self) -> bool {
        self.term(Instant::now()).is_some()
    }

    pub fn view(&self) -> LeaseView {
        let state = self.state.lock();
        let term = state.term.filter(|t| Instant::now() < t.valid_until);
        match term {
            Some(term) => LeaseView {
                manager_id: self.manager_id.clone(),
                role: Role::Active,
                holder: Some(self.manager_id.clone()),
                generation: Some(term.generation),
            },
            None => LeaseView {
                manager_id: self.manager_id.clone(),
                role: Role::Standby,
                holder: state.holder.as_ref().map(|r| r.holder.clone()),
                generation: state.holder.as_ref().map(|r| r.generation),
            },
        }
    }

    /// Checks the term right before a mutating action and writes its action line.
    pub fn check(&self, action: &'static str, target: &str) -> Result<Term, LeaseLost> {
        let now = Instant::now();
        let (term, last) = {
            let state = self.state.lock();
            (state.term.filter(|t| now < t.valid_until), state.term)
        };
        match term {
            Some(term) => {
                self.action_line(term, action, target, false);
                Ok(term)
            }
            None => {
                if let Some(m) = &self.metrics {
                    m.refused(action);
                }
                Err(LeaseLost {
                    manager_id: self.manager_id.clone(),
                    generation: last.map(|t| t.generation),
                })
            }
        }
    }

    /// Writes the line of an action taken under `term` (`late`: it finished after the term).
    fn action_line(&self, term: Term, action: &'static str, target: &str, late: bool) {
        LeaseAction {
            manager_id: &self.manager_id,
            generation: term.generation,
            action,
            object: target,
            unix_ms: crate::events::unix_now_ms(),
            late,
        }
        .emit(self.metrics.as_deref());
    }

    /// Runs the mutating `action` on `target` under the term: [`Self::check`] first, then
    /// [`Self::guarded`]; a refusal or a cut short call is `lost("{action} {target}", why)`.
    pub(super) async fn act<T, E>(
        &self,
        action: &'static str,
        target: &str,
        fut: impl Future<Output = Result<T, E>>,
        lost: impl Fn(String, LeaseLost) -> E,
    ) -> Result<T, E> {
        let what = || format!("{action} {target}");
        let term = self.check(action, target).map_err(|e| lost(what(), e))?;
        let cut = |e| lost(what(), e);
        self.guarded(term, action, target, fut, cut).await
    }

    /// Resolves when the term of `generation` ends (revoked, taken over, or run out).
    pub async fn ended(&self, generation: u64) {
        let mut rx = self.changed.subscribe();
        loop {
            let until = match self.term(Instant::now()) {
                Some(t) if t.generation == generation => t.valid_until,
                _ => return,
            };
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => {}
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }

    /// Resolves when this manager becomes active.
    pub async fn activated(&self) {
        let mut rx = self.changed.subscribe();
        loop {
            if self.is_active() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs `action` under the term: cut short (dropped) when the term ends first. An action
    /// that finishes after its term ran out is reported (a late line).
    pub(super) async fn guarded<T, E>(
        &self,
        term: Term,
        action: &'static str,
        target: &str,
        fut: impl Future<Output = Result<T, E>>,
        lost: impl FnOnce(LeaseLost) -> E,
    ) -> Result<T, E> {
        tokio::select! {
            biased;
            result = fut => {
                if Instant::now() >= term.valid_until {
                    self.action_line(term, action, target, true);
                }
                result
            }
            () = self.ended(term.generation) => Err(lost(LeaseLost {
                manager_id: self.manager_id.clone(),
                generation: Some(term.generation),
            })),
        }
    }
}
