//! The one place where a user's path or URL becomes an object store and a key.
//!
//! Local paths (relative to the working directory, absolute, or `file://`) map
//! to [`LocalFileSystem`]. Other schemes are refused here with a clear message
//! until their store is wired in.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{Error, Result};

/// A resolved location: the store, the key inside it and how to name it to a user.
#[derive(Clone, Debug)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// What the user wrote (or the file found under it): used in every message.
    pub display: String,
    /// The local file-system path, when the store is local.
    pub local: Option<PathBuf>,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl Location {
    /// A sibling key in the same store (e.g. a temporary name next to the output).
    pub fn with_path(&self, path: Path, display: String) -> Location {
        let local = self
            .local
            .as_ref()
            .map(|_| PathBuf::from("/").join(path.as_ref()));
        Location {
            store: Arc::clone(&self.store),
            path,
            display,
            local,
        }
    }
}

/// Characters that make a path a glob pattern.
pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Resolves a path or URL to its store.
pub fn resolve(input: &str) -> Result<Location> {
    let scheme = input.split_once("://").map(|(s, _)| s);
    match scheme {
        None | Some("file") => {
            let raw = input.strip_prefix("file://").unwrap_or(input);
            if raw.is_empty() {
                return Err(Error::input(input, "empty path"));
            }
            let abs = std::path::absolute(raw).map_err(|e| Error::input(input, e))?;
            let abs = normalize(&abs);
            let path = Path::from_absolute_path(&abs)
                .map_err(|e| Error::input(input, format!("not a usable path: {e}")))?;
            Ok(Location {
                store: local_store(),
                path,
                display: input.to_string(),
                local: Some(abs),
            })
        }
        Some(other) => Err(Error::input(
            input,
            format!("the {other}:// scheme is not supported yet; use a local path"),
        )),
    }
}

fn local_store() -> Arc<dyn ObjectStore> {
    static STORE: std::sync::OnceLock<Arc<dyn ObjectStore>> = std::sync::OnceLock::new();
    Arc::clone(STORE.get_or_init(|| Arc::new(LocalFileSystem::new())))
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(p: &FsPath) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// One file found under an input location.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub location: Location,
    pub size: u64,
}

/// Lists what `input` names: one file, every file under a directory/prefix
/// whose name ends in one of `extensions`, or the files matching a glob.
/// Sorted by key so runs are reproducible.
pub async fn list_files(input: &str, extensions: &[&str]) -> Result<Vec<FileEntry>> {
    let (base, pattern) = split_glob(input);
    let root = resolve(base)?;
    let matcher = match pattern {
        Some(_) => Some(
            globset::GlobBuilder::new(resolve(input)?.path.as_ref())
                .literal_separator(true)
                .build()
                .map_err(|e| Error::input(input, format!("bad glob pattern: {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    if matcher.is_none() {
        // A single object?
        match root.store.head(&root.path).await {
            Ok(meta) => {
                return Ok(vec![FileEntry {
                    location: root.clone(),
                    size: meta.size,
                }]);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::input(input, e)),
        }
    }
    let mut files: Vec<FileEntry> = root
        .store
        .list(Some(&root.path))
        .map_err(|e| Error::input(input, e))
        .try_filter_map(|meta| {
            let key = meta.location.to_string();
            let keep = match &matcher {
                Some(m) => m.is_match(&key),
                None => {
                    let name = meta.location.filename().unwrap_or("");
                    !name.starts_with('.')
                        && extensions
                            .iter()
                            .any(|ext| name.to_ascii_lowercase().ends_with(ext))
                }
            };
            let entry = keep.then(|| FileEntry {
                location: root
                    .with_path(meta.location.clone(), display_child(&root, &meta.location)),
                size: meta.size,
            });
            futures::future::ready(Ok(entry))
        })
        .try_collect()
        .await?;
    files.sort_by(|a, b| a.location.path.cmp(&b.location.path));
    if files.is_empty() {
        let what = if pattern.is_some() {
            "no file matches this pattern".to_string()
        } else if root.local.as_ref().is_some_and(|p| p.is_dir()) {
            format!("the directory holds no {} file", extensions.join(" or "))
        } else {
            "no such file or directory".to_string()
        };
        return Err(Error::input(input, what));
    }
    Ok(files)
}

/// How to show a file found under `root` to the user: the path as they wrote
/// it for the root, followed by the rest of the key.
fn display_child(root: &Location, child: &Path) -> String {
    let root_key = root.path.as_ref();
    let rest = child
        .as_ref()
        .strip_prefix(root_key)
        .unwrap_or(child.as_ref())
        .trim_start_matches('/');
    let base = root.display.trim_end_matches('/');
    if rest.is_empty() {
        base.to_string()
    } else if base == "." {
        rest.to_string()
    } else {
        format!("{base}/{rest}")
    }
}

/// Splits `dir/sub/*.parquet` into (`dir/sub`, Some(`*.parquet`)).
fn split_glob(input: &str) -> (&str, Option<&str>) {
    if !is_glob(input) {
        return (input, None);
    }
    let first_glob = input.find(['*', '?', '[', '{']).unwrap_or(input.len());
    match input[..first_glob].rfind('/') {
        Some(0) => ("/", Some(&input[1..])),
        Some(i) => (&input[..i], Some(&input[i + 1..])),
        None => (".", Some(input)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_globs_at_the_last_plain_directory() {
        assert_eq!(split_glob("a/b/*.parquet"), ("a/b", Some("*.parquet")));
        assert_eq!(split_glob("*.csv"), (".", Some("*.csv")));
        assert_eq!(split_glob("/x/**/y?.csv"), ("/x", Some("**/y?.csv")));
        assert_eq!(split_glob("plain/file.csv"), ("plain/file.csv", None));
    }

    #[test]
    fn unsupported_scheme_is_named() {
        let e = resolve("gs://bucket/x.parquet").unwrap_err();
        assert_eq!(
            e.to_string(),
            "input gs://bucket/x.parquet: the gs:// scheme is not supported yet; use a local path"
        );
    }

    #[tokio::test]
    async fn lists_directories_globs_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        for f in ["a.parquet", "b.csv", "sub/c.parquet", ".hidden.parquet"] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        let ds = d.to_str().unwrap();
        let names = |v: Vec<FileEntry>| {
            v.into_iter()
                .map(|f| f.location.display)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(list_files(ds, &[".parquet"]).await.unwrap()),
            vec![format!("{ds}/a.parquet"), format!("{ds}/sub/c.parquet")]
        );
        assert_eq!(
            names(list_files(&format!("{ds}/*.parquet"), &[]).await.unwrap()),
            vec![format!("{ds}/.hidden.parquet"), format!("{ds}/a.parquet")]
        );
        assert_eq!(
            names(list_files(&format!("{ds}/b.csv"), &[]).await.unwrap()),
            vec![format!("{ds}/b.csv")]
        );
        let e = list_files(&format!("{ds}/nope.csv"), &[".csv"])
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("input {ds}/nope.csv: no such file or directory")
        );
        let e = list_files(&format!("{ds}/*.json"), &[]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("input {ds}/*.json: no file matches this pattern")
        );
    }
}
