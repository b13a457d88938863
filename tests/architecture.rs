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
        let mut stack = vec![src.join(stage)];
        while let Some(p) = stack.pop() {
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if p.extension().is_none_or(|e| e != "rs") {
                continue;
            }
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
