//! Rules about the code base itself: the module graph has no cycle, and
//! the test harness never skips silently.

use std::path::PathBuf;

use embedflow::paths::embedflow_home_from;

use crate::util::find_reference_python;

/// Without EMBEDFLOW_TEST_PYTHON and without the venv scripts/py-env makes,
/// the reference comparisons fail and say how to set them up (they used to
/// pass without comparing anything).
#[test]
fn reference_python_is_never_a_silent_skip() {
    let empty = tempfile::tempdir().unwrap();
    let e = find_reference_python(None, empty.path()).unwrap_err();
    assert!(e.contains("run scripts/py-env"), "{e}");
    assert!(e.contains("EMBEDFLOW_TEST_PYTHON"), "{e}");
    let e = find_reference_python(None, &embedflow_home_from(None, None, None)).unwrap_err();
    assert!(e.contains("run scripts/py-env"), "{e}");
    // The variable wins; else the venv under EMBEDFLOW_HOME, or the cache.
    let p = PathBuf::from("/x/python");
    assert_eq!(find_reference_python(Some(p.clone()), empty.path()), Ok(p));
    let venv = empty.path().join("embedflow/test-venv/bin");
    std::fs::create_dir_all(&venv).unwrap();
    std::fs::write(venv.join("python"), "").unwrap();
    let home = embedflow_home_from(None, Some(empty.path().into()), None);
    let found = find_reference_python(None, &home).unwrap();
    assert_eq!(found, venv.join("python"));
}

/// The stages never reach back into the job layer or the wiring: nothing
/// under src/{source,chunk,embed,sink,cluster,sql,delta} names `crate::job` or
/// `crate::pipeline` (the job↔stage cycle of the 2026-11 design review).
#[test]
fn stages_do_not_import_the_job_or_the_pipeline() {
    let src = crate::util::root().join("src");
    let mut found = Vec::new();
    for stage in [
        "source", "chunk", "embed", "sink", "cluster", "sql", "delta", "analysis",
    ] {
        for p in rust_files(&src.join(stage)) {
            let text = std::fs::read_to_string(&p).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if code.contains("crate::job") || code.contains("crate::pipeline") {
                    found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "stage files importing job/pipeline:\n{}",
        found.join("\n")
    );
}

/// No two files import each other (the cluster.rs ↔ cluster_tables.rs and
/// incremental.rs ↔ table.rs pairs of the 2026-12 design review). A file's
/// imports are the modules its `crate::`, `super::` and `self::` paths name;
/// a folder's `mod.rs` and the files under it are one room and its door, not
/// a pair.
#[test]
fn no_two_files_import_each_other() {
    let src = crate::util::root().join("src");
    let path = regex::Regex::new(r"\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let mut edges = std::collections::BTreeSet::new();
    for file in rust_files(&src) {
        let here = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for m in path.captures_iter(code) {
                let mut segs: Vec<String> = match &m[1] {
                    "crate" => Vec::new(),
                    "super" => here[..here.len().saturating_sub(1)].to_vec(),
                    _ => here.clone(),
                };
                for s in m[2].split("::").filter(|s| !s.is_empty()) {
                    match s {
                        "super" => drop(segs.pop()),
                        _ => segs.push(s.to_string()),
                    }
                }
                let Some(there) = longest_module(&src, &segs) else {
                    continue;
                };
                let related = there.starts_with(&here) || here.starts_with(&there);
                if !related {
                    edges.insert((here.join("/"), there.join("/")));
                }
            }
        }
    }
    let pairs: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    assert!(
        pairs.is_empty(),
        "files importing each other:\n{}",
        pairs.join("\n")
    );
}

/// The table run has one door: nothing outside src/pipeline/table/ names
/// a module under it, only what its mod.rs exports.
#[test]
fn the_table_run_is_entered_by_its_door() {
    let src = crate::util::root().join("src");
    let inner =
        regex::Regex::new(r"table::(run|incremental|buckets|fingerprint|shards|shard_commit)\b")
            .unwrap();
    let room = src.join("pipeline/table");
    let mut found = Vec::new();
    for p in rust_files(&src)
        .into_iter()
        .filter(|p| !p.starts_with(&room))
    {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if inner.is_match(code) {
                found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "past the table door:\n{}",
        found.join("\n")
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// The module path of a source file: src/pipeline/mod.rs is `pipeline`,
/// src/pipeline/table/run.rs is `pipeline/table/run`.
fn module_of(src: &std::path::Path, file: &std::path::Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if segs
        .last()
        .is_some_and(|s| s == "mod" || s == "lib" || s == "main")
    {
        segs.pop();
    }
    segs
}

/// The longest prefix of `segs` that is a module with its own file.
fn longest_module(src: &std::path::Path, segs: &[String]) -> Option<Vec<String>> {
    (1..=segs.len()).rev().find_map(|n| {
        let p = src.join(segs[..n].join("/"));
        (p.with_extension("rs").is_file() || p.join("mod.rs").is_file()).then(|| segs[..n].to_vec())
    })
}
