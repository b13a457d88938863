//! `embedflow report`: one self-contained HTML file that shows an embedded
//! table: its lineage, a 2-D map of its rows coloured by topic, the topics
//! with their keywords, how the topics sit next to each other, and their
//! sizes and distances. Scripts and styles are inline (Apache ECharts,
//! vendored under `vendor/` with its license), so the file opens from disk
//! with no network. [`crate::analysis::report`] streams the table into a
//! [`ReportData`]; this module lays out the map and renders the page.

pub mod layout;

use serde::Serialize;

/// The vendored Apache ECharts (Apache-2.0; `vendor/LICENSE-echarts`).
pub const ECHARTS_VERSION: &str = "6.1.0";
const ECHARTS: &str = include_str!("vendor/echarts-6.1.0.min.js");
const TEMPLATE: &str = include_str!("template.html");
const STYLE: &str = include_str!("report.css");
const SCRIPT: &str = include_str!("report.js");

/// Everything the page draws, embedded as JSON.
#[derive(Serialize, Debug, Default)]
pub struct ReportData {
    /// The table, as the user named it.
    pub input: String,
    pub rows: u64,
    pub dim: usize,
    /// (key, value) pairs shown under "Run and lineage".
    pub lineage: Vec<(String, String)>,
    pub topics: Vec<Topic>,
    pub topics_note: String,
    pub map: MapPoints,
    pub map_note: String,
    /// Cosine similarity of the topics' centroids, `topics × topics`.
    pub similarity: Vec<Vec<f32>>,
    pub distance: Histogram,
}

/// One topic (or cluster) of the table.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Topic {
    pub id: i64,
    pub label: String,
    pub size: u64,
    /// Top keywords and their c-TF-IDF scores, best first.
    pub keywords: Vec<(String, f64)>,
    pub representative: Vec<String>,
}

/// The map's points, column by column: `t` indexes [`ReportData::topics`].
#[derive(Serialize, Debug, Default)]
pub struct MapPoints {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub t: Vec<u32>,
    pub id: Vec<String>,
    pub text: Vec<String>,
}

/// Counts of values in equal-width bins between `edges`.
#[derive(Serialize, Debug, Default)]
pub struct Histogram {
    pub title: String,
    pub edges: Vec<f32>,
    pub counts: Vec<u64>,
}

impl Histogram {
    /// `bins` equal-width bins from the smallest value to the largest.
    pub fn of(title: String, values: &[f32], bins: usize) -> Histogram {
        let finite = values.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            return Histogram {
                title,
                ..Default::default()
            };
        }
        let bins = if hi > lo { bins.max(1) } else { 1 };
        let width = if hi > lo {
            (hi - lo) / bins as f32
        } else {
            1.0
        };
        let mut counts = vec![0u64; bins];
        for &v in values.iter().filter(|v| v.is_finite()) {
            let b = (((v - lo) / width) as usize).min(bins - 1);
            counts[b] += 1;
        }
        let edges = (0..=bins).map(|i| lo + width * i as f32).collect();
        Histogram {
            title,
            edges,
            counts,
        }
    }
}

/// Rounds map coordinates to two decimals: the map is a few hundred units
/// wide, and shorter numbers make a smaller file.
pub fn round2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// The page: the template with the styles, ECharts, the data and our script
/// inline. The JSON is made safe inside `<script>` by writing every `<` as
/// `\u003c` (a JSON escape the parser reads back as `<`).
pub fn render(title: &str, data: &ReportData) -> String {
    let json = serde_json::to_string(data)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");
    // Each placeholder is replaced once, in template order, so text that
    // comes in with one (the data, ECharts) is never scanned for another.
    let parts = [
        ("{{VERSION}}", env!("CARGO_PKG_VERSION").to_string()),
        ("{{TITLE}}", escape_html(title)),
        ("{{STYLE}}", STYLE.to_string()),
        ("{{ECHARTS}}", ECHARTS.to_string()),
        ("{{TITLE}}", escape_html(title)),
        ("{{VERSION}}", env!("CARGO_PKG_VERSION").to_string()),
        ("{{ECHARTS_VERSION}}", ECHARTS_VERSION.to_string()),
        ("{{DATA}}", json),
        ("{{SCRIPT}}", SCRIPT.to_string()),
    ];
    let mut out = String::with_capacity(TEMPLATE.len() + ECHARTS.len() + SCRIPT.len() + 4096);
    let mut rest = TEMPLATE;
    for (mark, value) in parts {
        match rest.find(mark) {
            Some(at) => {
                out.push_str(&rest[..at]);
                out.push_str(&value);
                rest = &rest[at + mark.len()..];
            }
            None => debug_assert!(false, "template lacks {mark}"),
        }
    }
    out.push_str(rest);
    out
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The first `chars` characters of `s` (an ellipsis marks a cut).
pub fn snippet(s: &str, chars: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_cannot_close_the_script_it_is_in() {
        let data = ReportData {
            input: "</script><script>alert(1)</script>".into(),
            ..Default::default()
        };
        let html = render("a <b> & \"c\"", &data);
        // ECharts' and our script tags, the data's: nothing more.
        assert_eq!(html.matches("</script>").count(), 3);
        assert!(html.contains("\\u003c/script>\\u003cscript>alert(1)"));
        assert!(html.contains("<title>a &lt;b&gt; &amp; &quot;c&quot;</title>"));
        let at = html.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let end = at + html[at..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&html[at..end]).unwrap();
        assert_eq!(back["input"], "</script><script>alert(1)</script>");
    }

    #[test]
    fn histogram_bins_cover_the_values() {
        let h = Histogram::of("d".into(), &[0.0, 0.1, 0.5, 1.0, f32::NAN], 4);
        assert_eq!(h.counts, vec![2, 0, 1, 1]);
        assert_eq!(h.edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        let one = Histogram::of("d".into(), &[2.0, 2.0], 10);
        assert_eq!(one.counts, vec![2]);
        assert!(Histogram::of("d".into(), &[], 10).counts.is_empty());
    }

    #[test]
    fn snippets_cut_on_characters() {
        assert_eq!(snippet("  héllo wörld ", 5), "héllo…");
        assert_eq!(snippet("short", 10), "short");
    }
}
