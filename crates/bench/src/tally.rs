//! The counts of one reliability check: its iterations, failures and leaks, the named counts
//! showing what it exercised, and its failure notes.

use std::time::Duration;

use crate::table::{fold_count, named_count};

/// How many failure notes [`Tally::fail`] keeps.
const NOTES_KEPT: usize = 20;

/// The counts of one check.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub check: String,
    pub iterations: u64,
    pub failures: u64,
    /// Instances or registrations left after the final cleanup.
    pub leaks: u64,
    /// Named counts showing what was exercised (where the races, faults or kills landed, what
    /// the passes did).
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
        fold_count(&mut self.evidence, key, n, |old, n| old + n);
    }

    /// Adds how much a counter grew from `before` to `after`.
    pub fn add_growth(&mut self, key: &str, before: u64, after: u64) {
        self.add(key, after - before);
    }

    pub fn get(&self, key: &str) -> u64 {
        named_count(&self.evidence, key)
    }

    /// Counts a failure; its note is kept while fewer than [`NOTES_KEPT`] are.
    pub fn fail(&mut self, note: String) {
        self.failures += 1;
        if self.notes.len() < NOTES_KEPT {
            self.notes.push(note);
        }
    }

    /// Counts a failure, prints its note at once (a long run shows its failures as they happen)
    /// and keeps every note.
    pub fn fail_and_print(&mut self, note: String) {
        eprintln!("[{}] FAILURE: {note}", self.check);
        self.failures += 1;
        self.notes.push(note);
    }

    /// Merges `other` (same check, another mode) into `self`.
    pub fn merge(&mut self, other: Tally) {
        self.iterations += other.iterations;
        self.failures += other.failures;
        self.leaks += other.leaks;
        self.elapsed += other.elapsed;
        for (k, v) in other.evidence {
            self.add(&k, v);
        }
        self.notes.extend(other.notes);
    }

    /// The check's line, then one line per named count and per failure note.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: iterations {}, failures {}, leaks {} ({:.1} s)\n",
            self.check,
            self.iterations,
            self.failures,
            self.leaks,
            self.elapsed.as_secs_f64()
        );
        for (k, v) in &self.evidence {
            out.push_str(&format!("    {k}: {v}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("    FAILURE: {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_render() {
        let mut a = Tally::new("R9");
        a.add("x", 2);
        let mut b = Tally::new("R9");
        b.add("x", 3);
        b.fail("boom".to_owned());
        b.iterations = 4;
        a.merge(b);
        assert_eq!((a.iterations, a.failures, a.get("x")), (4, 1, 5));
        assert!(a.render().contains("FAILURE: boom"));
    }

    #[test]
    fn fail_keeps_the_first_notes_and_fail_and_print_keeps_all() {
        let mut kept = Tally::new("R9");
        let mut all = Tally::new("R9");
        for i in 0..NOTES_KEPT + 5 {
            kept.fail(format!("note {i}"));
            all.fail_and_print(format!("note {i}"));
        }
        assert_eq!((kept.failures, kept.notes.len()), (25, NOTES_KEPT));
        assert_eq!((all.failures, all.notes.len()), (25, 25));
        assert_eq!(kept.notes.last().map(String::as_str), Some("note 19"));
    }
}
