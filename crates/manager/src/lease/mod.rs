//! Active/standby: a lease kept in the LXD/Incus cluster itself, so that of several managers of
//! one app and unit exactly one acts at a time.
//!
//! - The record ([`LeaseRecord`]): the holder's id, a generation (one per tenure, the fencing
//!   number every action line carries), a sequence bumped by every renewal, and the holder's
//!   lease duration. It lives in a [`LeaseStore`] that offers read-with-version, create-if-absent
//!   and write-if-version-unchanged (for LXD: a profile's `user.*` keys, ETag and `If-Match`,
//!   `adapters/lxd_lease.rs`).
//! - [`LeaseLogic`] is pure: every decision takes the local monotonic time as an argument; no
//!   wall clock is compared across hosts.
//!   - A follower takes over only after a read *sent* at least one lease duration after it first
//!     saw the current version (measured when that read answered) still returns that version.
//!   - It claims with a conditional write, waits [`LeaseTiming::settle`] (no shorter than the
//!     request timeout) and reads again: only if the record is still its claim does it act. The
//!     server checks `If-Match` and writes in two steps, so two claims may both "succeed"; the
//!     settle read makes the later write the only winner (a write counted as done answered
//!     within the request timeout, so it landed before the settle read).
//!   - The holder's tenure runs until `last renewal sent + lease - margin`: a renewal counts from
//!     when it was sent, and only if it answered within the request timeout, which is shorter
//!     than the margin. A renewal is never sent once the tenure ran out.
//!   - So the old holder stops before the new one starts: the follower's confirming read went
//!     out at least a lease after the last renewal it saw landed, and any later renewal that the
//!     holder counted would have landed before that read.
//! - [`Fence`] is what actions check: the current term (generation, valid until), checked right
//!   before every mutating call by [`FencedProvider`] and [`FencedRegistry`], which also cut a
//!   call short when the term ends, and write the action line (manager id, generation, unix ms).
//! - [`Keeper`] drives the logic against a store and keeps the fence up to date.
//!
//! Known limit: a request already sent when the term ends (or when the process is frozen right
//! after its check) is completed by the server; the next holder's first pass reads what it left.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::model::Secret;
use crate::provider::{
    BoxError, DeleteOutcome, ExecRequest, JitConfig, JitRequest, ProviderError, Registration,
    RegistryError, RunnerDownload, RunnerRegistry,
};
use crate::tap::{Around, Call, Wrapped};

/// The record's keys (`user.*`, so any LXD object with free-form keys can hold them).
pub const KEY_HOLDER: &str = "user.runner-manager.lease.holder";
pub const KEY_GENERATION: &str = "user.runner-manager.lease.generation";
pub const KEY_SEQ: &str = "user.runner-manager.lease.seq";
pub const KEY_DURATION_MS: &str = "user.runner-manager.lease.duration-ms";

/// Who holds the lease, in which tenure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder's manager id (host, pid and a random part).
    pub holder: String,
    /// One per tenure: +1 at every takeover.
    pub generation: u64,
    /// +1 at every renewal: a follower sees the holder alive by its changes.
    pub seq: u64,
    /// The holder's lease duration: a follower waits for the longer of its own and this.
    pub duration: Duration,
}

impl LeaseRecord {
    /// The record as `user.*` keys.
    pub fn to_keys(&self) -> BTreeMap<String, String> {
        let millis = u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX);
        [
            (KEY_HOLDER, self.holder.clone()),
            (KEY_GENERATION, self.generation.to_string()),
            (KEY_SEQ, self.seq.to_string()),
            (KEY_DURATION_MS, millis.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The record in `keys`; `None` when a key is missing or garbled (the store holds no valid
    /// record: it is watched like any other version).
    pub fn from_keys(keys: &BTreeMap<String, String>) -> Option<Self> {
        let number = |key: &str| keys.get(key)?.parse::<u64>().ok();
        let holder = keys.get(KEY_HOLDER).filter(|h| !h.is_empty())?.clone();
        Some(Self {
            holder,
            generation: number(KEY_GENERATION)?,
            seq: number(KEY_SEQ)?,
            duration: Duration::from_millis(number(KEY_DURATION_MS)?),
        })
    }
}

/// The store's opaque version of the record (an ETag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// What a read found: the version and the record at it (`None`: not a valid record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub record: Option<LeaseRecord>,
    pub version: Version,
}

/// A failure of the lease store.
#[derive(Debug, thiserror::Error)]
pub enum LeaseStoreError {
    /// The conditional write or the creation found another version: nothing was written.
    #[error("the lease changed under us")]
    Changed(#[source] BoxError),
    /// Anything else. Whether a write was applied is unknown.
    #[error("{what} failed")]
    Failed {
        what: String,
        #[source]
        source: BoxError,
    },
}

/// Where the lease lives, in the manager's terms. Every call is bounded by the implementation.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Where, for messages (`profile rm-lease-app-0 on unix:/var/lib/incus/unix.socket`).
    fn describe(&self) -> String;
    /// The current record and version; `Ok(None)`: there is none yet.
    async fn read(&self) -> Result<Option<Stored>, LeaseStoreError>;
    /// Creates the record where there is none: of concurrent creations exactly one succeeds,
    /// the others get [`LeaseStoreError::Changed`].
    async fn create(&self, record: &LeaseRecord) -> Result<(), LeaseStoreError>;
    /// Replaces the record if the version still is `expected`, else
    /// [`LeaseStoreError::Changed`].
    async fn write(&self, record: &LeaseRecord, expected: &Version) -> Result<(), LeaseStoreError>;
}

/// The lease's timing. Built by [`LeaseTiming::new`], which derives the rest from the lease
/// and the renewal period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a tenure lasts without renewal.
    pub lease: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// How often a follower reads the record (half the renewal period): it sees a holder's last
    /// renewal this much after it landed, at most.
    pub poll: Duration,
    /// The holder stops this long before its lease ends (clock rates, a renewal's flight).
    pub margin: Duration,
    /// The bound of one store call; a write answered later does not count. Below `margin`.
    pub request_timeout: Duration,
    /// How long a claimant waits after its claim's answer before reading it back, and the
    /// bound of a claim's write. At least `request_timeout`.
    pub settle: Duration,
}

/// Why a lease timing is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimingError {
    #[error("the lease must be at least 1 second (got {0:?})")]
    LeaseTooShort(Duration),
    #[error("the renewal period must be more than 0 and at most half the lease ({renew:?} for a lease of {lease:?})")]
    Renew { lease: Duration, renew: Duration },
}

impl LeaseTiming {
    /// `margin` = lease / 4, `request_timeout` = lease / 6 (at most 10 s), `settle` = lease / 3
    /// (a claim may take that long on a loaded cluster: one that times out may still land, and
    /// then costs another lease), `poll` = renew / 2 (at least 100 ms).
    pub fn new(lease: Duration, renew: Duration) -> Result<Self, TimingError> {
        if lease < Duration::from_secs(1) {
            return Err(TimingError::LeaseTooShort(lease));
        }
        if renew.is_zero() || renew > lease / 2 {
            return Err(TimingError::Renew { lease, renew });
        }
        let request_timeout = (lease / 6).min(Duration::from_secs(10));
        Ok(Self {
            lease,
            renew,
            poll: (renew / 2).max(Duration::from_millis(100)),
            margin: lease / 4,
            request_timeout,
            settle: (lease / 3).max(request_timeout),
        })
    }
}

/// How the manager stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Holds the lease: acts.
    Active,
    /// Watches the holder (or claims): never acts.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Standby => "standby",
        }
    }
}

/// The current tenure, as actions check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub generation: u64,
    /// Acting stops here (local monotonic clock).
    pub valid_until: Instant,
}

#[derive(Debug, Clone)]
struct Seen {
    /// `None`: no record in the store.
    version: Option<Version>,
    record: Option<LeaseRecord>,
    /// When the read that first returned this version answered.
    since: Instant,
}

#[derive(Debug, Clone)]
enum State {
    Watching {
        seen: Option<Seen>,
        next_read: Instant,
    },
    /// Unchanged for a lease: write `claim` (create when `seen.version` is `None`).
    ReadyToClaim { claim: LeaseRecord, seen: Seen },
    /// The claim was written at `sent`; read it back at `read_at`.
    Claiming {
        claim: LeaseRecord,
        sent: Instant,
        read_at: Instant,
        seen_since: Instant,
    },
    Holding {
        record: LeaseRecord,
        /// `None`: re-read before the next write.
        version: Option<Version>,
        /// The last counted renewal (or the claim) was sent then.
        renewed: Instant,
        next_write: Instant,
        /// When `version` is `None`: read it then.
        read_at: Instant,
    },
}

/// The next store call, or a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Read,
    Create(LeaseRecord),
    Write(LeaseRecord, Version),
    SleepUntil(Instant),
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    Done,
    Changed,
    /// Failed or unknown (a timeout): it may or may not have been applied.
    Failed,
}

/// A change of role, for events and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub role: Role,
    pub generation: u64,
    /// Why (`acquired`, `expired`, `taken_over`, `renewal_refused`, `shutdown`).
    pub reason: &'static str,
    /// On acquiring: since the previous holder's last change was first seen (≈ since it
    /// stopped renewing, plus the polling lag).
    pub takeover: Option<Duration>,
}

/// The lease as a pure state machine on the local monotonic clock: call [`Self::next`], make the
/// call it asks for, hand the result to [`Self::on_read`] or [`Self::on_write`].
#[derive(Debug, Clone)]
pub struct LeaseLogic {
    me: String,
    timing: LeaseTiming,
    state: State,
    /// The last record read (for `status`: who holds it).
    last_record: Option<LeaseRecord>,
}

impl LeaseLogic {
    pub fn new(me: impl Into<String>, timing: LeaseTiming, now: Instant) -> Self {
        Self {
            me: me.into(),
            timing,
            state: State::Watching {
                seen: None,
                next_read: now,
            },
            last_record: None,
        }
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    pub fn timing(&self) -> &LeaseTiming {
        &self.timing
    }

    /// The tenure, if this manager may act at `now`.
    pub fn term(&self, now: Instant) -> Option<Term> {
        match &self.state {
            State::Holding {
                record, renewed, ..
            } => {
                let valid_until = self.valid_until(*renewed);
                (now < valid_until).then_some(Term {
                    generation: record.generation,
                    valid_until,
                })
            }
            _ => None,
        }
    }

    /// Active or standby at `now`.
    pub fn role(&self, now: Instant) -> Role {
        if self.term(now).is_some() {
            Role::Active
        } else {
            Role::Standby
        }
    }

    /// The record last read (or held).
    pub fn holder(&self) -> Option<&LeaseRecord> {
        match &self.state {
            State::Holding { record, .. } => Some(record),
            _ => self.last_record.as_ref(),
        }
    }

    fn valid_until(&self, renewed: Instant) -> Instant {
        renewed + self.timing.lease - self.timing.margin
    }

    /// What to do at `now`. A holder whose tenure ran out becomes a follower here (the
    /// transition is returned by the next `on_*` call's caller via [`Self::expire`]).
    pub fn next(&mut self, now: Instant) -> Next {
        match &self.state {
            State::Watching { next_read, .. } => {
                if now < *next_read {
                    Next::SleepUntil(*next_read)
                } else {
                    Next::Read
                }
            }
            State::ReadyToClaim { claim, seen } => match &seen.version {
                None => Next::Create(claim.clone()),
                Some(v) => Next::Write(claim.clone(), v.clone()),
            },
            State::Claiming { read_at, .. } => {
                if now < *read_at {
                    Next::SleepUntil(*read_at)
                } else {
                    Next::Read
                }
            }
            State::Holding {
                record,
                version,
                renewed,
                next_write,
                read_at,
            } => {
                let valid_until = self.valid_until(*renewed);
                if now >= valid_until {
                    // Never renew an expired tenure: watch like anyone else.
                    return Next::Read;
                }
                match version {
                    None if now < *read_at => Next::SleepUntil((*read_at).min(valid_until)),
                    None => Next::Read,
                    Some(_) if now < *next_write => {
                        Next::SleepUntil((*next_write).min(valid_until))
                    }
                    Some(v) => Next::Write(
                        LeaseRecord {
                            seq: record.seq + 1,
                            ..record.clone()
                        },
                        v.clone(),
                    ),
                }
            }
        }
    }

    /// The bound of the write [`Self::next`] asks for: a claim may take up to the settle
    /// period (the settle read comes that long after its answer), a renewal up to the request
    /// timeout (below the margin). A write answered later does not count.
    pub fn write_timeout(&self) -> Duration {
        match self.state {
            State::ReadyToClaim { .. } => self.timing.settle,
            _ => self.timing.request_timeout,
        }
    }

    /// A holder whose tenure ran out at `now` becomes a follower: its transition.
    pub fn expire(&mut self, now: Instant) -> Option<Transition> {
        let State::Holding {
            record, renewed, ..
        } = &self.state
        else {
            return None;
        };
        if now < self.valid_until(*renewed) {
            return None;
        }
        let generation = record.generation;
        self.last_record = Some(record.clone());
        self.state = State::Watching {
            seen: None,
            next_read: now,
        };
        Some(Transition {
            role: Role::Standby,
            generation,
            reason: "expired",
            takeover: None,
        })
    }

    /// When a failed or refused store call is tried again.
    fn retry_at(&self, answered: Instant) -> Instant {
        answered + (self.timing.renew / 4).max(Duration::from_millis(50))
    }

    /// The state, leaving a fresh watch from `answered` in its place (each answer sets the next).
    fn take_state(&mut self, answered: Instant) -> State {
        std::mem::replace(
            &mut self.state,
            State::Watching {
                seen: None,
                next_read: answered,
            },
        )
    }

    /// A read sent at `sent` answered at `answered`: `Ok(None)` no record, `Err(())` failed.
    pub fn on_read(
        &mut self,
        sent: Instant,
        answered: Instant,
        result: Result<Option<Stored>, ()>,
    ) -> Option<Transition> {
        let expired = self.expire(answered);
        let retry = self.retry_at(answered);
        let Ok(found) = result else {
            match &mut self.state {
                State::Watching { next_read, .. } => *next_read = retry,
                State::Claiming { read_at, .. } => *read_at = retry,
                State::Holding { read_at, .. } => *read_at = retry,
                State::ReadyToClaim { .. } => {}
            }
            return expired;
        };
        let version = found.as_ref().map(|s| s.version.clone());
        let record = found.as_ref().and_then(|s| s.record.clone());
        if record.is_some() {
            self.last_record.clone_from(&record);
        }
        let state = self.take_state(answered);
        match state {
            State::Watching { seen, .. } => {
                self.watch(seen, version, record, sent, answered);
                expired
            }
            State::ReadyToClaim { .. } => {
                // Not reached: a claim is written, not read. Start over.
                self.watch(None, version, record, sent, answered);
                expired
            }
            State::Claiming {
                claim,
                sent: claimed,
                seen_since,
                ..
            } => {
                if record.as_ref() == Some(&claim) && answered < self.valid_until(claimed) {
                    let generation = claim.generation;
                    self.state = State::Holding {
                        record: claim,
                        version,
                        renewed: claimed,
                        next_write: claimed + self.timing.renew,
                        read_at: answered,
                    };
                    return Some(Transition {
                        role: Role::Active,
                        generation,
                        reason: "acquired",
                        takeover: Some(answered.saturating_duration_since(seen_since)),
                    });
                }
                self.watch(None, version, record, sent, answered);
                expired
            }
            State::Holding {
                record: held,
                renewed,
                next_write,
                read_at,
                ..
            } => match record {
                Some(current)
                    if current.holder == held.holder && current.generation == held.generation =>
                {
                    // Still ours (a renewal of ours landed, or someone touched another field).
                    self.state = State::Holding {
                        record: current,
                        version,
                        renewed,
                        next_write,
                        read_at,
                    };
                    None
                }
                _ => {
                    let generation = held.generation;
                    self.watch(None, version, record, sent, answered);
                    Some(Transition {
                        role: Role::Standby,
                        generation,
                        reason: "taken_over",
                        takeover: None,
                    })
                }
            },
        }
    }

    fn watch(
        &mut self,
        seen: Option<Seen>,
        version: Option<Version>,
        record: Option<LeaseRecord>,
        sent: Instant,
        answered: Instant,
    ) {
        let poll = self.timing.poll;
        match seen {
            Some(seen) if seen.version == version => {
                let wait = self
                    .timing
                    .lease
                    .max(seen.record.as_ref().map_or(Duration::ZERO, |r| r.duration));
                if sent >= seen.since + wait {
                    let generation = seen.record.as_ref().map_or(0, |r| r.generation) + 1;
                    self.state = State::ReadyToClaim {
                        claim: LeaseRecord {
                            holder: self.me.clone(),
                            generation,
                            seq: 0,
                            duration: self.timing.lease,
                        },
                        seen,
                    };
                } else {
                    // A read sent right when the wait is over confirms it.
                    let next_read = (answered + poll).min(seen.since + wait);
                    self.state = State::Watching {
                        seen: Some(seen),
                        next_read,
                    };
                }
            }
            _ => {
                self.state = State::Watching {
                    seen: Some(Seen {
                        version,
                        record,
                        since: answered,
                    }),
                    next_read: answered + poll,
                };
            }
        }
    }

    /// A write (claim or renewal) sent at `sent` answered at `answered`. An answer later than the
    /// request timeout counts as [`WriteResult::Failed`].
    pub fn on_write(
        &mut self,
        sent: Instant,
        answered: Instant,
        result: WriteResult,
    ) -> Option<Transition> {
        let result = if result == WriteResult::Done
            && answered.saturating_duration_since(sent) > self.write_timeout()
        {
            WriteResult::Failed
        } else {
            result
        };
        let retry = self.retry_at(answered);
        let state = self.take_state(answered);
        match state {
            State::ReadyToClaim { claim, seen } => {
                match result {
                    WriteResult::Done => {
                        self.state = State::Claiming {
                            claim,
                            sent,
                            read_at: answered + self.timing.settle,
                            seen_since: seen.since,
                        };
                    }
                    WriteResult::Changed => {}
                    WriteResult::Failed => {
                        // Watch on from what was seen: if the next read still finds that
                        // version (the claim did not land), claim again at once; a new version
                        // (this claim, landed late, or anyone's) is waited for a lease.
                        self.state = State::Watching {
                            seen: Some(seen),
                            next_read: retry,
                        };
                    }
                }
                None
            }
            State::Holding {
                record,
                version,
                renewed,
                next_write,
                read_at,
            } => {
                let valid_until = self.valid_until(renewed);
                match result {
                    WriteResult::Done if sent < valid_until => {
                        // Read the new version back at once.
                        self.state = State::Holding {
                            record: LeaseRecord {
                                seq: record.seq + 1,
                                ..record
                            },
                            version: None,
                            renewed: sent,
                            next_write: sent + self.timing.renew,
                            read_at: answered,
                        };
                    }
                    WriteResult::Done | WriteResult::Changed => {
                        // Read to see whose it is now (still ours: carry on).
                        self.state = State::Holding {
                            record,
                            version: None,
                            renewed,
                            next_write,
                            read_at: answered,
                        };
                    }
                    WriteResult::Failed => {
                        self.state = State::Holding {
                            record,
                            version,
                            renewed,
                            next_write: retry,
                            read_at,
                        };
                    }
                }
                self.expire(answered)
            }
            other => {
                // A write is only asked for in the two states above.
                self.state = other;
                None
            }
        }
    }

    /// Gives the lease up (shutdown): the tenure ends now. The record stays; a follower takes
    /// over once it has seen it unchanged for a lease.
    pub fn resign(&mut self, now: Instant) -> Option<Transition> {
        let State::Holding { record, .. } = &self.state else {
            return None;
        };
        let generation = record.generation;
        self.last_record = Some(record.clone());
        self.state = State::Watching {
            seen: None,
            next_read: now + self.timing.lease,
        };
        Some(Transition {
            role: Role::Standby,
            generation,
            reason: "shutdown",
            takeover: None,
        })
    }
}

pub(crate) mod events;
mod fence;
mod fenced;
mod keeper;

pub use events::{HaMetrics, LeaseAction, LeaseRoleChanged};
pub use fence::*;
pub use fenced::*;
pub use keeper::*;

#[cfg(test)]
mod tests;
