//! Listing what an input names: one file, a directory or prefix, a glob;
//! and why nothing was found when nothing was.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::{Location, Stores, is_glob};
use crate::{Error, Result};

/// One file found under an input location.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub location: Location,
    pub size: u64,
    /// What the store says of this version of the file (its ETag, else its
    /// modification time): an in-place edit of the same size changes it.
    /// `None` where files never change in place (a Delta table's).
    pub version: Option<String>,
}

/// The version a store gives of an object: its ETag (on the local disk,
/// object_store's inode, mtime and size), else its modification time.
pub(crate) fn object_version(meta: &object_store::ObjectMeta) -> Option<String> {
    Some(
        meta.e_tag
            .clone()
            .unwrap_or_else(|| meta.last_modified.to_rfc3339()),
    )
}

/// Why a listing found nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// A glob matched no file.
    NoMatch,
    /// A local directory without a file of the kinds looked for.
    EmptyDirectory,
    /// An S3 key that is not there, with nothing under it as a prefix.
    NoSuchKey,
    /// A local path that is not there.
    NoSuchPath,
    /// What the server said (a missing bucket, a refused request).
    Explained(String),
}

impl Missing {
    /// The message, naming `kinds` (e.g. ".parquet or .csv") of file looked
    /// for when there are any.
    pub fn message(&self, kinds: &str) -> String {
        let kinds = if kinds.is_empty() {
            String::new()
        } else {
            format!("{kinds} ")
        };
        match self {
            Missing::NoMatch => "no file matches this pattern".into(),
            Missing::EmptyDirectory => format!("the directory holds no {kinds}file"),
            Missing::NoSuchKey => format!("no such key, and no {kinds}object under it as a prefix"),
            Missing::NoSuchPath => "no such file or directory".into(),
            Missing::Explained(m) => m.clone(),
        }
    }
}

impl Stores {
    /// Lists what `input` names: one file, every file under a directory or
    /// prefix whose name ends in one of `extensions` (any name when it is
    /// empty), or the files matching a glob. Hidden files are left out
    /// unless the glob names them. Sorted by key so runs are reproducible.
    /// Finding nothing is an error that says why.
    pub async fn list_files(&self, input: &str, extensions: &[&str]) -> Result<Vec<FileEntry>> {
        self.find_files(input, extensions)
            .await?
            .map_err(|m| Error::input(input, m.message(&extensions.join(" or "))))
    }

    /// [`list_files`](Stores::list_files), with finding nothing as a
    /// [`Missing`] the caller can describe in its own words.
    pub async fn find_files(
        &self,
        input: &str,
        extensions: &[&str],
    ) -> Result<std::result::Result<Vec<FileEntry>, Missing>> {
        let (base, pattern) = split_glob(input);
        let root = self.resolve(base)?;
        let hidden_wanted =
            pattern.is_some_and(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with('.')));
        let matcher = match pattern {
            Some(_) => Some(
                globset::GlobBuilder::new(self.resolve(input)?.path.as_ref())
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::input(input, format!("bad glob pattern: {e}")))?
                    .compile_matcher(),
            ),
            None => None,
        };
        // A single object? On S3 the prefix is listed first: a key that is
        // also a "directory" is better asked about by listing (some servers
        // fail a HEAD on it), and a LIST error carries the server's reason.
        let single = matcher.is_none() && !root.path.as_ref().is_empty();
        if single
            && root.s3.is_none()
            && let Some(file) = single_object(&root, input).await?
        {
            return Ok(Ok(vec![file]));
        }
        let prefix = (!root.path.as_ref().is_empty()).then_some(&root.path);
        let listed: std::result::Result<Vec<FileEntry>, object_store::Error> = root
            .store
            .list(prefix)
            .try_filter_map(|meta| {
                let key = meta.location.to_string();
                // Hidden files (an output's temporary files among them) are
                // never inputs, unless a pattern asks for them by name.
                let name = meta.location.filename().unwrap_or("");
                let keep = match &matcher {
                    Some(m) => m.is_match(&key) && (!name.starts_with('.') || hidden_wanted),
                    None => {
                        !name.starts_with('.')
                            && (extensions.is_empty()
                                || extensions
                                    .iter()
                                    .any(|ext| name.to_ascii_lowercase().ends_with(ext)))
                    }
                };
                let entry = keep.then(|| FileEntry {
                    location: root
                        .with_path(meta.location.clone(), display_child(&root, &meta.location)),
                    size: meta.size,
                    version: object_version(&meta),
                });
                futures::future::ready(Ok(entry))
            })
            .try_collect()
            .await;
        let mut files = match listed {
            Ok(f) => f,
            Err(e) => return Err(Error::input(input, root.explain(&e))),
        };
        if files.is_empty()
            && single
            && root.s3.is_some()
            && let Some(file) = single_object(&root, input).await?
        {
            return Ok(Ok(vec![file]));
        }
        files.sort_by(|a, b| a.location.path.cmp(&b.location.path));
        if !files.is_empty() {
            return Ok(Ok(files));
        }
        Ok(Err(if pattern.is_some() {
            Missing::NoMatch
        } else if root.local.as_ref().is_some_and(|p| p.is_dir()) {
            Missing::EmptyDirectory
        } else if root.s3.is_some() {
            root.explain_missing().await
        } else {
            Missing::NoSuchPath
        }))
    }
}

/// `root` as one object, if it is one.
async fn single_object(root: &Location, input: &str) -> Result<Option<FileEntry>> {
    // A FIFO, socket or device would block or never end: only regular
    // files (and folders, listed) are read.
    if let Some(local) = &root.local
        && let Ok(meta) = std::fs::metadata(local)
        && !meta.is_file()
        && !meta.is_dir()
    {
        return Err(Error::input(
            input,
            "is not a regular file (a FIFO, socket or device): embedflow reads files and folders",
        ));
    }
    match root.store.head(&root.path).await {
        Ok(meta) => Ok(Some(FileEntry {
            location: root.clone(),
            size: meta.size,
            version: object_version(&meta),
        })),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::input(input, root.explain(&e))),
    }
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
pub(super) fn split_glob(input: &str) -> (&str, Option<&str>) {
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
