//! Golden SQL files: `tests/sql/*.slt`, in a small subset of the
//! sqllogictest format, run through the library's SQL session (the same one
//! `embedflow sql` uses).
//!
//! ```text
//! # a comment
//! statement ok
//! CREATE TABLE t AS VALUES (1)
//!
//! statement error <text the error must contain>
//! SELECT nope
//!
//! query
//! SELECT 1, [1.0, 2.0]
//! ----
//! 1 [1, 2]
//! ```
//!
//! A record ends at a blank line. Result cells are separated by one space;
//! NULL is `NULL`, the empty string `(empty)`; floats, also inside vectors,
//! are rounded to 6 decimals so that the files do not depend on the last
//! bit of a sum. `query error <text>` is the same as `statement error`.
//! Set `EMBEDFLOW_UPDATE_GOLDEN=1` to write the actual results into the
//! files (then read the diff before committing it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type};
use embedflow::sql::{Session, SqlOptions};

use crate::util::root;

#[derive(Debug)]
enum Expect {
    Ok,
    Error(String),
    Rows(Vec<String>),
}

#[derive(Debug)]
struct Record {
    line: usize,
    sql: String,
    expect: Expect,
    /// The record's text in the file (for rewriting).
    span: (usize, usize),
}

fn parse(text: &str, file: &Path) -> Vec<Record> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_end();
        if l.is_empty() || l.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let head = l;
        let (kind, rest) = head.split_once(' ').unwrap_or((head, ""));
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim_end() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let expect = match (kind, rest.split_once(' ').unwrap_or((rest, ""))) {
            ("statement", ("ok", _)) => Expect::Ok,
            ("statement" | "query", ("error", msg)) => Expect::Error(msg.trim().to_string()),
            ("query", _) => {
                let mut rows = Vec::new();
                if i < lines.len() && lines[i].trim_end() == "----" {
                    i += 1;
                    while i < lines.len() && !lines[i].trim().is_empty() {
                        rows.push(lines[i].trim_end().to_string());
                        i += 1;
                    }
                }
                Expect::Rows(rows)
            }
            _ => panic!(
                "{}:{}: expected 'statement ok', 'statement error …' or 'query', found '{head}'",
                file.display(),
                start + 1
            ),
        };
        assert!(
            !sql.is_empty(),
            "{}:{}: a record without SQL",
            file.display(),
            start + 1
        );
        out.push(Record {
            line: start + 1,
            sql: sql.join("\n"),
            expect,
            span: (start, i),
        });
    }
    out
}

fn float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let r = (v * 1e6).round() / 1e6;
    // No "-0".
    format!("{}", if r == 0.0 { 0.0 } else { r })
}

fn cell(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return "NULL".into();
    }
    let list = |items: ArrayRef| -> String {
        let parts: Vec<String> = (0..items.len()).map(|j| cell(&items, j)).collect();
        format!("[{}]", parts.join(", "))
    };
    match a.data_type() {
        DataType::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::FixedSizeList(..) => list(a.as_fixed_size_list().value(i)),
        DataType::List(_) => list(a.as_list::<i32>().value(i)),
        DataType::LargeList(_) => list(a.as_list::<i64>().value(i)),
        _ => {
            let f = arrow::util::display::ArrayFormatter::try_new(a, &Default::default()).unwrap();
            let s = f.value(i).to_string();
            if s.is_empty() { "(empty)".into() } else { s }
        }
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b.columns().iter().map(|c| cell(c.as_ref(), i)).collect();
            out.push(cells.join(" "));
        }
    }
    out
}

/// Runs one file; returns the failures, and the file rewritten with the
/// actual results.
async fn run_file(path: &Path) -> (Vec<String>, String) {
    let text = std::fs::read_to_string(path).unwrap();
    let records = parse(&text, path);
    let session = Session::new(&SqlOptions::default()).await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut failures = Vec::new();
    let mut rewritten = String::new();
    let mut copied = 0;
    for r in &records {
        for l in &lines[copied..r.span.0] {
            writeln!(rewritten, "{l}").unwrap();
        }
        copied = r.span.1;
        let got = session.run(&r.sql).await;
        let at = format!("{}:{}", path.display(), r.line);
        let original = lines[r.span.0..r.span.1].join("\n");
        match (&r.expect, got) {
            (Expect::Ok, Ok(_)) => writeln!(rewritten, "{original}").unwrap(),
            (Expect::Error(want), Err(e)) => {
                let e = e.to_string();
                if !e.contains(want.as_str()) {
                    failures.push(format!(
                        "{at}: the error should contain\n  {want}\nbut is\n  {e}"
                    ));
                }
                writeln!(rewritten, "{original}").unwrap();
            }
            (Expect::Rows(want), Ok((_, batches))) => {
                let got = rows(&batches);
                if &got != want {
                    failures.push(format!(
                        "{at}: {}\nexpected:\n  {}\ngot:\n  {}",
                        r.sql,
                        want.join("\n  "),
                        got.join("\n  ")
                    ));
                }
                let head = lines[r.span.0];
                writeln!(rewritten, "{head}\n{}\n----", r.sql).unwrap();
                for g in &got {
                    writeln!(rewritten, "{g}").unwrap();
                }
            }
            (Expect::Ok | Expect::Rows(_), Err(e)) => {
                failures.push(format!("{at}: {}\nfailed: {e}", r.sql));
                writeln!(rewritten, "{original}").unwrap();
            }
            (Expect::Error(want), Ok((_, batches))) => {
                failures.push(format!(
                    "{at}: {}\nshould fail with '{want}' but gave {} rows",
                    r.sql,
                    rows(&batches).len()
                ));
                writeln!(rewritten, "{original}").unwrap();
            }
        }
    }
    for l in &lines[copied..] {
        writeln!(rewritten, "{l}").unwrap();
    }
    (failures, rewritten)
}

fn golden_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("tests/sql"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

#[test]
fn golden_sql_files() {
    let files = golden_files();
    assert!(files.len() >= 2, "no golden files found: {files:?}");
    let update = std::env::var_os("EMBEDFLOW_UPDATE_GOLDEN").is_some();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut failures = Vec::new();
    let mut records = 0;
    for f in &files {
        records += parse(&std::fs::read_to_string(f).unwrap(), f).len();
        let (mut fails, rewritten) = rt.block_on(run_file(f));
        if update {
            std::fs::write(f, rewritten).unwrap();
        } else {
            failures.append(&mut fails);
        }
    }
    assert!(records >= 20, "only {records} golden records");
    assert!(
        failures.is_empty(),
        "{} golden record(s) differ:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn golden_runner_reports_a_wrong_expectation() {
    // The runner itself must be able to fail.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.slt");
    std::fs::write(
        &f,
        "query\nSELECT 1 + 1\n----\n3\n\nstatement error nothing like this\nSELECT 1\n\nstatement ok\nSELECT nope\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (fails, rewritten) = rt.block_on(run_file(&f));
    assert_eq!(fails.len(), 3, "{fails:#?}");
    assert!(
        fails[0].contains("expected:\n  3\ngot:\n  2"),
        "{}",
        fails[0]
    );
    assert!(
        rewritten.starts_with("query\nSELECT 1 + 1\n----\n2\n"),
        "{rewritten}"
    );
}
