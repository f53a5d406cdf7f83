//! The secrets searched for and the scanner that searches the collected text.

use super::*;

/// One secret value and the strings searched for it.
#[derive(Debug, Clone)]
pub(super) struct Needle {
    pub(super) kind: String,
    patterns: Vec<(String, String)>,
}

/// The base64 encodings of `value` that appear whenever it is embedded anywhere in a base64
/// text: for each of the three alignments, the characters that depend on `value` alone.
fn base64_variants(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for shift in 0..3usize {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(value.as_bytes());
            let encoded = engine.encode(&bytes);
            // Characters influenced by the padding bytes in front, and the last group (which
            // depends on what follows), are dropped.
            let start = (shift * 4).div_ceil(3);
            let end = encoded.len().saturating_sub(4);
            if end > start + 8 {
                out.push(encoded[start..end].to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub(super) fn needle(kind: &str, value: &str, base64: bool) -> Needle {
    let mut patterns = vec![("full".to_owned(), value.to_owned())];
    let chars: Vec<char> = value.chars().collect();
    if chars.len() >= 64 {
        // Long base64 documents (JIT configs) share their first characters (`{".runner"`
        // encoded): a slice from the middle is the distinctive one.
        let mid = chars.len() / 2;
        patterns.push((
            "middle 16".to_owned(),
            chars[mid..mid + 16].iter().collect(),
        ));
    } else if chars.len() >= 20 {
        patterns.push(("first 12".to_owned(), chars[..12].iter().collect()));
    }
    if base64 {
        for (i, variant) in base64_variants(value).into_iter().enumerate() {
            patterns.push((format!("base64 #{i}"), variant));
        }
    }
    Needle {
        kind: kind.to_owned(),
        patterns,
    }
}

/// Everything collected in one place: items (a log line, a config document, a process).
#[derive(Debug, Default)]
pub(super) struct Corpus {
    pub(super) items: Vec<(String, String)>,
}

impl Corpus {
    pub(super) fn add(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.items.push((label.into(), text.into()));
    }
    pub(super) fn add_lines(&mut self, label: &str, text: &str) {
        for (i, line) in text.lines().enumerate() {
            self.items
                .push((format!("{label}:{}", i + 1), line.to_owned()));
        }
    }
}

/// An excerpt around `at` with `pattern` masked.
fn excerpt(text: &str, at: usize, pattern: &str) -> String {
    let start = text[..at]
        .char_indices()
        .rev()
        .nth(80)
        .map(|(i, _)| i)
        .unwrap_or(0);
    let end_at = at + pattern.len();
    let end = text[end_at..]
        .char_indices()
        .nth(80)
        .map(|(i, _)| end_at + i)
        .unwrap_or(text.len());
    format!("{}<SECRET>{}", &text[start..at], &text[end_at..end]).replace('\n', "\\n")
}

/// Hits of `needles` in `corpus`: one per (item, secret).
pub(super) fn scan(
    corpus: &Corpus,
    needles: &[Needle],
    place: &str,
    mode: &str,
    hits: &mut Vec<String>,
) -> u64 {
    let mut count = 0;
    for (label, text) in &corpus.items {
        for needle in needles {
            if let Some((variant, at, pattern)) = needle
                .patterns
                .iter()
                .find_map(|(variant, p)| text.find(p.as_str()).map(|at| (variant, at, p)))
            {
                count += 1;
                hits.push(format!(
                    "[{mode}] {place} / {label}: {} ({variant}): …{}…",
                    needle.kind,
                    excerpt(text, at, pattern)
                ));
            }
        }
    }
    count
}
