//! The table of the checks' tallies.

use super::*;

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
