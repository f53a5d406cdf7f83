//! [`Keeper`]: drives [`LeaseLogic`] against a [`LeaseStore`] and keeps the [`Fence`] current.

use super::*;

// ----------------------------------------------------------------------------------- keeper

/// Drives a [`LeaseLogic`] against a [`LeaseStore`] and keeps the [`Fence`] current.
pub struct Keeper {
    store: Arc<dyn LeaseStore>,
    logic: LeaseLogic,
    fence: Arc<Fence>,
    metrics: Option<Arc<HaMetrics>>,
}

impl Keeper {
    pub fn new(
        store: Arc<dyn LeaseStore>,
        timing: LeaseTiming,
        fence: Arc<Fence>,
        metrics: Option<Arc<HaMetrics>>,
    ) -> Self {
        let logic = LeaseLogic::new(fence.manager_id(), timing, Instant::now());
        if let Some(m) = &metrics {
            m.set_role(Role::Standby);
        }
        Self {
            store,
            logic,
            fence,
            metrics,
        }
    }

    fn publish(&self, transition: Option<Transition>) {
        let now = Instant::now();
        self.fence
            .set(self.logic.term(now), self.logic.holder().cloned());
        if let Some(t) = transition {
            LeaseRoleChanged {
                manager_id: self.fence.manager_id(),
                role: t.role,
                generation: t.generation,
                reason: t.reason,
                takeover: t.takeover,
                holder: self.logic.holder().map(|r| r.holder.as_str()),
                store: &self.store.describe(),
                unix_ms: crate::events::unix_now_ms(),
            }
            .emit(self.metrics.as_deref());
        }
    }

    /// Runs until `stop` completes; then gives the lease up (the tenure ends at once).
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let timeout = self.logic.timing().request_timeout;
        loop {
            let now = Instant::now();
            let expired = self.logic.expire(now);
            if expired.is_some() {
                self.publish(expired);
            }
            let next = self.logic.next(now);
            let write_timeout = self.logic.write_timeout();
            let step = async {
                match next {
                    Next::SleepUntil(until) => {
                        tokio::time::sleep_until(until.into()).await;
                        None
                    }
                    Next::Read => {
                        let sent = Instant::now();
                        let result = match tokio::time::timeout(timeout, self.store.read()).await {
                            Ok(Ok(found)) => Ok(found),
                            Ok(Err(error)) => {
                                tracing::warn!(message = "Reading the lease failed.", store = %self.store.describe(), error = %crate::provider::Chain(&error));
                                Err(())
                            }
                            Err(_) => {
                                tracing::warn!(message = "Reading the lease timed out.", store = %self.store.describe(), after = ?timeout);
                                Err(())
                            }
                        };
                        Some(Done::Read(sent, Instant::now(), result))
                    }
                    Next::Create(record) => {
                        let sent = Instant::now();
                        let r =
                            tokio::time::timeout(write_timeout, self.store.create(&record)).await;
                        Some(Done::Write(
                            sent,
                            Instant::now(),
                            write_result(r, &*self.store),
                        ))
                    }
                    Next::Write(record, version) => {
                        let sent = Instant::now();
                        let r = tokio::time::timeout(
                            write_timeout,
                            self.store.write(&record, &version),
                        )
                        .await;
                        Some(Done::Write(
                            sent,
                            Instant::now(),
                            write_result(r, &*self.store),
                        ))
                    }
                }
            };
            let done = tokio::select! {
                biased;
                () = &mut stop => {
                    let resigned = self.logic.resign(Instant::now());
                    self.publish(resigned);
                    return;
                }
                done = step => done,
            };
            let transition = match done {
                None => None,
                Some(Done::Read(sent, answered, result)) => {
                    self.logic.on_read(sent, answered, result)
                }
                Some(Done::Write(sent, answered, result)) => {
                    self.logic.on_write(sent, answered, result)
                }
            };
            self.publish(transition);
        }
    }
}

enum Done {
    Read(Instant, Instant, Result<Option<Stored>, ()>),
    Write(Instant, Instant, WriteResult),
}

fn write_result(
    r: Result<Result<(), LeaseStoreError>, tokio::time::error::Elapsed>,
    store: &dyn LeaseStore,
) -> WriteResult {
    match r {
        Ok(Ok(())) => WriteResult::Done,
        Ok(Err(LeaseStoreError::Changed(_))) => WriteResult::Changed,
        Ok(Err(error)) => {
            tracing::warn!(message = "Writing the lease failed.", store = %store.describe(), error = %crate::provider::Chain(&error));
            WriteResult::Failed
        }
        Err(_) => {
            tracing::warn!(message = "Writing the lease timed out.", store = %store.describe());
            WriteResult::Failed
        }
    }
}

/// A manager id: `<host>-<pid>-<8 hex>` (unique per process start).
pub fn new_manager_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let random: u32 = rand::random();
    format!("{host}-{}-{random:08x}", std::process::id())
}
