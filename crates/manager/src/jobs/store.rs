//! [`JobStore`]: the job table in SQLite.
//!
//! Two tables: `jobs` (one row per job, its furthest state and what the deliveries said about
//! it) and `deliveries` (the GUIDs already applied). Timestamps are unix seconds (`INTEGER`, UTC);
//! sub-second parts are dropped. Labels are a JSON array of strings. The schema version is
//! SQLite's `user_version`.
//!
//! Every method is one short local SQLite call behind a mutex, so async callers call them
//! directly. The file is in WAL mode: another connection (`sqlite3 jobs.sqlite`, a second
//! [`JobStore`]) can read while the daemon writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::{Job, JobEvent, JobFacts, JobState, JOB_DB_FILE};
use crate::pool::QueuedJob;

/// The schema version this build writes and reads (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long a call waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL,
    state        TEXT    NOT NULL,
    labels       TEXT    NOT NULL,
    runner_name  TEXT,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    completed_at INTEGER,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_runner ON jobs (runner_name);
CREATE TABLE IF NOT EXISTS deliveries (
    guid        TEXT    PRIMARY KEY,
    job_id      INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);
";

const JOB_COLUMNS: &str =
    "id, run_id, state, labels, runner_name, created_at, started_at, completed_at, updated_at";

/// What the job table could not do. The table only holds what GitHub's deliveries said, so
/// deleting the file is always safe.
#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("could not create the directory {path} for the job table")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Opening the file, setting it up, or creating the schema failed.
    #[error(
        "could not open the job table {path}; check that it is a readable SQLite database \
         (`sqlite3 {path} 'PRAGMA integrity_check'`), or delete it to start with an empty job \
         table; the daemon recovers recent jobs from GitHub's webhook deliveries"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job table query")]
    Query(#[source] rusqlite::Error),
    #[error(
        "the job table {path} has schema version {found}, newer than the {supported} this \
         runner-manager supports (was it written by a newer release?); upgrade, or delete it to \
         start with an empty job table; the daemon recovers recent jobs from GitHub's webhook \
         deliveries"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    /// A row that does not parse: bad labels JSON, unknown state, timestamp out of range.
    #[error(
        "job {id} in the job table ({JOB_DB_FILE} in the state directory) is unreadable: {what}; \
         delete the file to start with an empty job table; the daemon recovers recent jobs from \
         GitHub's webhook deliveries"
    )]
    Corrupt { id: u64, what: String },
}

impl From<rusqlite::Error> for JobStoreError {
    fn from(source: rusqlite::Error) -> Self {
        Self::Query(source)
    }
}

/// What [`JobStore::record`] did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The job is new (`previous` is `None`) or its state moved forward from `previous`.
    Applied {
        previous: Option<JobState>,
        job: Job,
    },
    /// The delivery's GUID was applied before; nothing changed.
    Duplicate,
    /// The delivery's state is not ahead of the known one: the state stayed, fields the table
    /// lacked (labels, runner name, timestamps) were filled in. `current` is the job now.
    Stale { current: Job },
}

/// The job table: one SQLite connection behind a mutex.
#[derive(Debug)]
pub struct JobStore {
    conn: Mutex<Connection>,
}

impl JobStore {
    /// Opens (or creates) the job table at `path`, creating its directory if missing; WAL mode,
    /// 5 s busy timeout, `synchronous=NORMAL`. Refuses a file with a newer schema version.
    pub fn open(path: &Path) -> Result<Self, JobStoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JobStoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let open_err = |source: rusqlite::Error| JobStoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(open_err)?;
        init_schema(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// An empty job table in memory, for tests.
    pub fn open_in_memory() -> Result<Self, JobStoreError> {
        let path = Path::new(":memory:");
        let mut conn = Connection::open_in_memory().map_err(|source| JobStoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        init_schema(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    /// Applies one delivery, in one transaction: a GUID seen before is a
    /// [`Recorded::Duplicate`]; otherwise the GUID is kept and the job inserted or moved
    /// forward. A job never moves backwards: an older or equal state only fills missing fields.
    pub fn record(&self, event: &JobEvent, now: OffsetDateTime) -> Result<Recorded, JobStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(guid) = &event.delivery {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO deliveries (guid, job_id, received_at) VALUES (?1, ?2, ?3)",
                params![guid, sql_id(event.job_id), now.unix_timestamp()],
            )?;
            if inserted == 0 {
                return Ok(Recorded::Duplicate);
            }
        }
        let recorded = match get_job(&tx, event.job_id)? {
            None => {
                let job = Job {
                    id: event.job_id,
                    run_id: event.run_id,
                    state: event.state,
                    facts: event.facts.clone(),
                    updated_at: now,
                };
                write_job(&tx, &job)?;
                Recorded::Applied {
                    previous: None,
                    job: read_back(&tx, job.id)?,
                }
            }
            Some(current) => {
                let (merged, changed) = merge(&current, event, now);
                if changed {
                    write_job(&tx, &merged)?;
                }
                let job = read_back(&tx, merged.id)?;
                if event.state > current.state {
                    Recorded::Applied {
                        previous: Some(current.state),
                        job,
                    }
                } else {
                    Recorded::Stale { current: job }
                }
            }
        };
        tx.commit()?;
        Ok(recorded)
    }

    /// Whether a delivery with this GUID was recorded (and not pruned since).
    pub fn seen_delivery(&self, guid: &str) -> Result<bool, JobStoreError> {
        let conn = self.conn.lock();
        let seen = conn
            .query_row(
                "SELECT 1 FROM deliveries WHERE guid = ?1",
                params![guid],
                |_| Ok(()),
            )
            .optional()?;
        Ok(seen.is_some())
    }

    /// The jobs waiting for a runner, oldest `created_at` first (then by id).
    pub fn queued(&self) -> Result<Vec<QueuedJob>, JobStoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare(
            "SELECT id, labels, created_at FROM jobs WHERE state = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map(params![JobState::Queued.as_str()], |row| {
            Ok((
                id_from_sql(row.get(0)?),
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        let mut queued = Vec::new();
        for row in rows {
            let (id, labels, created_at) = row?;
            queued.push(QueuedJob {
                id,
                labels: parse_labels(id, &labels)?,
                created_at: parse_time(id, "created_at", created_at)?,
            });
        }
        Ok(queued)
    }

    /// The job with this id, if the table has it.
    pub fn get(&self, id: u64) -> Result<Option<Job>, JobStoreError> {
        let conn = self.conn.lock();
        get_job(&conn, id)
    }

    /// The most recent job (by `started_at`, then id) that ran on the runner with this name.
    pub fn job_on_runner(&self, runner_name: &str) -> Result<Option<Job>, JobStoreError> {
        let conn = self.conn.lock();
        let raw = conn
            .query_row(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE runner_name = ?1 \
                     ORDER BY started_at DESC, id DESC LIMIT 1"
                ),
                params![runner_name],
                RawJob::from_row,
            )
            .optional()?;
        raw.map(RawJob::parse).transpose()
    }

    /// How many jobs are (queued, in progress, completed).
    pub fn counts(&self) -> Result<(usize, usize, usize), JobStoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?;
        let (mut queued, mut in_progress, mut completed) = (0, 0, 0);
        for row in rows {
            let (state, count) = row?;
            match JobState::from_action(&state) {
                Some(JobState::Queued) => queued += count_from_sql(count),
                Some(JobState::InProgress) => in_progress += count_from_sql(count),
                Some(JobState::Completed) => completed += count_from_sql(count),
                None => {
                    let id = conn.query_row(
                        "SELECT id FROM jobs WHERE state = ?1 LIMIT 1",
                        params![state],
                        |row| row.get(0).map(id_from_sql),
                    )?;
                    return Err(JobStoreError::Corrupt {
                        id,
                        what: format!("unknown state {state:?}"),
                    });
                }
            }
        }
        Ok((queued, in_progress, completed))
    }

    /// Marks queued jobs created before `older_than` completed (GitHub cancels a job that waited
    /// 24 hours for a runner); returns how many.
    pub fn expire_queued(
        &self,
        older_than: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<usize, JobStoreError> {
        let conn = self.conn.lock();
        let expired = conn.execute(
            "UPDATE jobs SET state = ?1, completed_at = ?2, updated_at = ?2 \
             WHERE state = ?3 AND created_at < ?4",
            params![
                JobState::Completed.as_str(),
                now.unix_timestamp(),
                JobState::Queued.as_str(),
                older_than.unix_timestamp(),
            ],
        )?;
        Ok(expired)
    }

    /// Deletes the completed jobs last changed before `completed_before`, and the deliveries
    /// received before it; returns how many rows went (jobs and deliveries).
    pub fn prune(&self, completed_before: OffsetDateTime) -> Result<usize, JobStoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let before = completed_before.unix_timestamp();
        let jobs = tx.execute(
            "DELETE FROM jobs WHERE state = ?1 AND updated_at < ?2",
            params![JobState::Completed.as_str(), before],
        )?;
        let deliveries = tx.execute(
            "DELETE FROM deliveries WHERE received_at < ?1",
            params![before],
        )?;
        tx.commit()?;
        Ok(jobs + deliveries)
    }
}

/// Creates the schema if missing, or checks its version; one immediate transaction so two
/// daemons opening the same new file do not both create it.
fn init_schema(conn: &mut Connection, path: &Path) -> Result<(), JobStoreError> {
    let open_err = |source: rusqlite::Error| JobStoreError::Open {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_err)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(open_err)?;
    if found > SCHEMA_VERSION {
        return Err(JobStoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    tx.execute_batch(SCHEMA).map_err(open_err)?;
    if found < SCHEMA_VERSION {
        tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .map_err(open_err)?;
    }
    tx.commit().map_err(open_err)
}

/// The job as `current` plus `event`: the state moves only forward; when it moves, the event's
/// facts win where it has them, otherwise they only fill what is missing. The flag says
/// whether anything changed (then `updated_at` is `now`).
fn merge(current: &Job, event: &JobEvent, now: OffsetDateTime) -> (Job, bool) {
    let mut job = current.clone();
    job.state = current.state.max(event.state);
    job.facts = current
        .facts
        .merged(&event.facts, event.state > current.state);
    let changed = job.state != current.state || job.facts.differs_stored(&current.facts);
    if changed {
        job.updated_at = now;
    }
    (job, changed)
}

impl JobFacts {
    /// These facts (the table's) with `other`'s (a delivery's): where both have a value,
    /// `other`'s wins when `other_wins`, else these stay. `created_at` never changes.
    fn merged(&self, other: &Self, other_wins: bool) -> Self {
        let (first, second) = if other_wins {
            (other, self)
        } else {
            (self, other)
        };
        let labels = if first.labels.is_empty() {
            &second.labels
        } else {
            &first.labels
        };
        Self {
            labels: labels.clone(),
            runner_name: first
                .runner_name
                .clone()
                .or_else(|| second.runner_name.clone()),
            created_at: self.created_at,
            started_at: first.started_at.or(second.started_at),
            completed_at: first.completed_at.or(second.completed_at),
        }
    }

    /// Whether the table would hold these facts differently from `other`: compared at its
    /// precision, so a refill with the same values is not a change.
    fn differs_stored(&self, other: &Self) -> bool {
        let secs = |t: Option<OffsetDateTime>| t.map(OffsetDateTime::unix_timestamp);
        self.labels != other.labels
            || self.runner_name != other.runner_name
            || self.created_at.unix_timestamp() != other.created_at.unix_timestamp()
            || secs(self.started_at) != secs(other.started_at)
            || secs(self.completed_at) != secs(other.completed_at)
    }
}

/// Inserts or replaces the job's row.
fn write_job(tx: &Transaction<'_>, job: &Job) -> Result<(), JobStoreError> {
    let labels = serde_json::Value::from(job.facts.labels.clone()).to_string();
    tx.execute(
        &format!(
            "INSERT OR REPLACE INTO jobs ({JOB_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            sql_id(job.id),
            sql_id(job.run_id),
            job.state.as_str(),
            labels,
            job.facts.runner_name,
            job.facts.created_at.unix_timestamp(),
            job.facts.started_at.map(OffsetDateTime::unix_timestamp),
            job.facts.completed_at.map(OffsetDateTime::unix_timestamp),
            job.updated_at.unix_timestamp(),
        ],
    )?;
    Ok(())
}

/// The job as the table now holds it (timestamps at its precision), after [`write_job`].
fn read_back(conn: &Connection, id: u64) -> Result<Job, JobStoreError> {
    get_job(conn, id)?.ok_or_else(|| JobStoreError::Corrupt {
        id,
        what: "the row just written is missing".to_owned(),
    })
}

fn get_job(conn: &Connection, id: u64) -> Result<Option<Job>, JobStoreError> {
    let raw = conn
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
            params![sql_id(id)],
            RawJob::from_row,
        )
        .optional()?;
    raw.map(RawJob::parse).transpose()
}

/// A `jobs` row as SQLite returns it, before parsing.
struct RawJob {
    id: u64,
    run_id: u64,
    state: String,
    labels: String,
    runner_name: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    completed_at: Option<i64>,
    updated_at: i64,
}

impl RawJob {
    /// Reads the columns of [`JOB_COLUMNS`], in that order.
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: id_from_sql(row.get(0)?),
            run_id: id_from_sql(row.get(1)?),
            state: row.get(2)?,
            labels: row.get(3)?,
            runner_name: row.get(4)?,
            created_at: row.get(5)?,
            started_at: row.get(6)?,
            completed_at: row.get(7)?,
            updated_at: row.get(8)?,
        })
    }

    fn parse(self) -> Result<Job, JobStoreError> {
        let id = self.id;
        let state = JobState::from_action(&self.state).ok_or_else(|| JobStoreError::Corrupt {
            id,
            what: format!("unknown state {:?}", self.state),
        })?;
        let optional_time = |what, secs: Option<i64>| secs.map(|s| parse_time(id, what, s));
        Ok(Job {
            id,
            run_id: self.run_id,
            state,
            facts: JobFacts {
                labels: parse_labels(id, &self.labels)?,
                runner_name: self.runner_name,
                created_at: parse_time(id, "created_at", self.created_at)?,
                started_at: optional_time("started_at", self.started_at).transpose()?,
                completed_at: optional_time("completed_at", self.completed_at).transpose()?,
            },
            updated_at: parse_time(id, "updated_at", self.updated_at)?,
        })
    }
}

/// A job or run id as SQLite's signed 64-bit integer, bit for bit (GitHub's ids are far below
/// 2^63, so they read the same in `sqlite3`); [`id_from_sql`] undoes it.
fn sql_id(id: u64) -> i64 {
    id as i64
}

fn id_from_sql(id: i64) -> u64 {
    id as u64
}

/// A `COUNT(*)`, never negative.
fn count_from_sql(count: i64) -> usize {
    usize::try_from(count).unwrap_or_default()
}

fn parse_labels(id: u64, labels: &str) -> Result<Vec<String>, JobStoreError> {
    serde_json::from_str(labels).map_err(|e| JobStoreError::Corrupt {
        id,
        what: format!("labels {labels:?} are not a JSON array of strings: {e}"),
    })
}

fn parse_time(id: u64, what: &str, secs: i64) -> Result<OffsetDateTime, JobStoreError> {
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| JobStoreError::Corrupt {
        id,
        what: format!("{what} {secs} is not a timestamp: {e}"),
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
