//! A plain Markdown table, printed as-is so that it can be pasted into BENCHMARKS.md.

/// Rows of cells under a header.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Markdown, columns padded to their widest cell.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let cell = cells.get(i).map(String::as_str).unwrap_or("");
                    format!("{cell:<w$}")
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Folds `n` into the count named `key` of the evidence list `counts` with `fold(old, n)`;
/// a new name starts at `n`.
pub fn fold_count(
    counts: &mut Vec<(String, u64)>,
    key: &str,
    n: u64,
    fold: impl FnOnce(u64, u64) -> u64,
) {
    match counts.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = fold(*v, n),
        None => counts.push((key.to_owned(), n)),
    }
}

/// The count named `key` in the evidence list `counts` (0 when absent).
pub fn named_count(counts: &[(String, u64)], key: &str) -> u64 {
    counts.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

/// `a / b` as `0.25×`, or `—` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "—".to_owned()
    } else {
        format!("{:.2}×", a / b)
    }
}

/// A table of `phases` (rows, in that order) by `columns` (a header each, and the profiles of its
/// rounds): each cell the phase's mean seconds per runner averaged over the column's rounds. A
/// phase that is 0 in every column is left out.
pub fn phase_table(phases: &[&str], columns: &[(String, Vec<&crate::real::Profile>)]) -> Table {
    let mut header = vec!["phase (mean s per runner)"];
    header.extend(columns.iter().map(|(h, _)| h.as_str()));
    let mut table = Table::new(&header);
    for phase in phases {
        let cells: Vec<f64> = columns
            .iter()
            .map(|(_, profiles)| {
                profiles
                    .iter()
                    .map(|p| p.mean.get(phase).copied().unwrap_or(0.0))
                    .sum::<f64>()
                    / profiles.len().max(1) as f64
            })
            .collect();
        if cells.iter().all(|v| *v == 0.0) {
            continue;
        }
        let mut row = vec![(*phase).to_owned()];
        row.extend(cells.iter().map(|v| format!("{v:.2}")));
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let mut t = Table::new(&["N", "requests"]);
        t.row(vec!["1000".into(), "10".into()]);
        assert_eq!(
            t.render(),
            "| N    | requests |\n|------|----------|\n| 1000 | 10       |\n"
        );
        assert_eq!(ratio(1.0, 4.0), "0.25×");
        assert_eq!(ratio(1.0, 0.0), "—");
    }

    #[test]
    fn phase_tables_average_each_column_and_leave_out_empty_phases() {
        let profile = |pairs: &[(&'static str, f64)]| crate::real::Profile {
            mean: pairs.iter().copied().collect(),
            runners: 1,
        };
        let (a, b) = (
            profile(&[("create", 1.0)]),
            profile(&[("create", 2.0), ("setup", 0.5)]),
        );
        let columns = [
            ("N=1".to_owned(), vec![&a, &b]),
            ("N=2".to_owned(), vec![&b]),
        ];
        assert_eq!(
            phase_table(&["setup", "idle", "create"], &columns).render(),
            "| phase (mean s per runner) | N=1  | N=2  |\n\
             |---------------------------|------|------|\n\
             | setup                     | 0.25 | 0.50 |\n\
             | create                    | 1.50 | 2.00 |\n"
        );
    }
}
