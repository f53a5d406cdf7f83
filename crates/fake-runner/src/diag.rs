//! `_diag/Runner_<utc time>.log`: what the listener did, for a manager to pull after a crash.
//! Secrets are never passed here (they are `secrecy::SecretString`s: redacted in Debug, no
//! Display).

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Diag {
    file: Mutex<Option<fs::File>>,
}

impl Diag {
    /// Opens a new log under `<root>/_diag/`; logging is skipped if that fails.
    pub fn open(root: &Path, prefix: &str) -> Self {
        let dir = root.join("_diag");
        let file = fs::create_dir_all(&dir).ok().and_then(|()| {
            let (date, time) = utc_parts(now_secs());
            let name = format!(
                "{prefix}_{}-{}-utc.log",
                date.replace('-', ""),
                time.replace(':', "")
            );
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(name))
                .ok()
        });
        Self {
            file: Mutex::new(file),
        }
    }

    pub fn info(&self, message: &str) {
        self.write("INFO", message);
    }

    pub fn error(&self, message: &str) {
        self.write("ERR ", message);
    }

    fn write(&self, level: &str, message: &str) {
        if let Ok(mut guard) = self.file.lock() {
            if let Some(file) = guard.as_mut() {
                let _ = writeln!(file, "[{} {level} Runner] {message}", timestamp());
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `2026-11-27 20:55:37Z`, as the real listener prints its console lines.
pub fn timestamp() -> String {
    let (date, time) = utc_parts(now_secs());
    format!("{date} {time}Z")
}

/// (`YYYY-MM-DD`, `HH:MM:SS`) of a Unix time, in UTC (Howard Hinnant's civil-from-days).
fn utc_parts(secs: u64) -> (String, String) {
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        let check = |secs: u64, date: &str, time: &str| {
            assert_eq!(
                utc_parts(secs),
                (date.to_string(), time.to_string()),
                "{secs}"
            );
        };
        check(0, "1970-01-01", "00:00:00");
        check(951_782_400, "2000-02-29", "00:00:00");
        check(1_700_000_000, "2023-11-14", "22:13:20");
        check(1_798_405_199, "2026-12-27", "20:59:59");
    }
}
