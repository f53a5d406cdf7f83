//! The counts of one check and their table.

use super::*;

/// The counts of one check.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub check: String,
    pub iterations: u64,
    pub failures: u64,
    /// Instances or registrations left after the final cleanup.
    pub leaks: u64,
    /// Named counts showing what was exercised (where the kills landed, what the passes did).
    pub evidence: Vec<(String, u64)>,
    /// One line per failure (iteration and reason).
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn new(check: &str) -> Self {
        Self {
            check: check.to_owned(),
            ..Self::default()
        }
    }

    pub fn add(&mut self, key: &str, n: u64) {
        crate::table::fold_count(&mut self.evidence, key, n, |old, n| old + n);
    }

    pub fn get(&self, key: &str) -> u64 {
        crate::table::named_count(&self.evidence, key)
    }

    pub fn fail(&mut self, note: String) {
        eprintln!("[{}] FAILURE: {note}", self.check);
        self.failures += 1;
        self.notes.push(note);
    }
}

/// `check | iterations | failures | leaks | evidence`, then the failure notes.
pub fn render(tallies: &[Tally]) -> String {
    let mut table = Table::new(&[
        "check",
        "iterations",
        "failures",
        "leaks",
        "time",
        "evidence",
    ]);
    for t in tallies {
        let evidence: Vec<String> = t
            .evidence
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        table.row(vec![
            t.check.clone(),
            t.iterations.to_string(),
            t.failures.to_string(),
            t.leaks.to_string(),
            format!("{:.0} s", t.elapsed.as_secs_f64()),
            evidence.join("; "),
        ]);
    }
    let mut out = table.render();
    for t in tallies {
        for note in &t.notes {
            out.push_str(&format!("FAILURE {}: {note}\n", t.check));
        }
    }
    out
}
