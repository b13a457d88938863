//! Rules about the code base itself: the test harness never skips silently.

use std::path::PathBuf;

use crate::util::find_reference_python;

/// Without EMBEDFLOW_TEST_PYTHON and without the venv scripts/py-env makes,
/// the reference comparisons fail and say how to set them up (they used to
/// pass without comparing anything).
#[test]
fn reference_python_is_never_a_silent_skip() {
    let empty = tempfile::tempdir().unwrap();
    let e = find_reference_python(None, Some(empty.path().into()), None, None).unwrap_err();
    assert!(e.contains("run scripts/py-env"), "{e}");
    assert!(e.contains("EMBEDFLOW_TEST_PYTHON"), "{e}");
    let e = find_reference_python(None, None, None, None).unwrap_err();
    assert!(e.contains("run scripts/py-env"), "{e}");
    // The variable wins; else the venv under EMBEDFLOW_HOME, or the cache.
    let p = PathBuf::from("/x/python");
    assert_eq!(
        find_reference_python(Some(p.clone()), None, None, None),
        Ok(p)
    );
    let venv = empty.path().join("embedflow/test-venv/bin");
    std::fs::create_dir_all(&venv).unwrap();
    std::fs::write(venv.join("python"), "").unwrap();
    let found = find_reference_python(None, None, Some(empty.path().into()), None).unwrap();
    assert_eq!(found, venv.join("python"));
}
