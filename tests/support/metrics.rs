//! Reading `/metrics`: the one Prometheus text parser the tests and benchmarks share.

use super::{Proc, request};

/// One sample of a `/metrics` page.
#[derive(Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// Whether the sample has every `k="v"` of `labels` (and maybe more).
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(hk, hv)| hk == k && hv == v))
    }
}

/// One sample line: `name{k="v",...} value [timestamp]`; `None` for comments, blank and malformed lines.
pub fn sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (key, r) = rest.split_once("=\"")?;
            // The value runs to the first quote that is not escaped.
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_string(), value));
            rest = &r[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Sum of the samples of `name` (exact name: a histogram's `_bucket`, `_count` and `_sum` are other
/// names) whose labels include every `k="v"` of `labels`; `None` when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter_map(sample)
        .filter(|s| s.name == name && s.has(labels))
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

/// How much `name` (as [`metric`]) grew from `before` to `after`; a missing series counts as 0.
pub fn grew(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(after, name, labels).unwrap_or(0.0) - metric(before, name, labels).unwrap_or(0.0)
}

/// A process's `/metrics` page.
pub async fn metrics_text(p: &Proc) -> String {
    let r = request("GET", &format!("{}/metrics", p.url()), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// One metric of a process now, as [`metric`].
pub async fn gauge(p: &Proc, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metric(&metrics_text(p).await, name, labels)
}
