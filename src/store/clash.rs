//! Whether two locations are one file, however they are spelled: real
//! paths, hard links, S3 buckets and keys, directories and globs that hold
//! a file. Used to refuse an output that is (or would later be read back as)
//! an input.

use std::path::{Path as FsPath, PathBuf};

use super::{FileEntry, Location, Stores, split_glob};

/// What a location is, whatever the spelling: for local paths the real path
/// (symlinks, `.` and `..` resolved through the longest part that exists),
/// for S3 the bucket and the key. Two locations with the same identity are
/// the same file (or directory, or prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Local(PathBuf),
    S3 { bucket: String, key: String },
}

impl Identity {
    /// Whether `self` is `other` or lies under it (a file in a directory,
    /// a key under a prefix).
    pub fn is_within(&self, other: &Identity) -> bool {
        match (self, other) {
            (Identity::Local(a), Identity::Local(b)) => a.starts_with(b),
            (Identity::S3 { bucket: a, key: ka }, Identity::S3 { bucket: b, key: kb }) => {
                a == b
                    && (kb.is_empty()
                        || ka == kb
                        || ka
                            .strip_prefix(kb.as_str())
                            .is_some_and(|r| r.starts_with('/')))
            }
            _ => false,
        }
    }

    /// The path or key as one string, for matching a glob against.
    fn key(&self) -> String {
        match self {
            Identity::Local(p) => p.to_string_lossy().into_owned(),
            Identity::S3 { key, .. } => key.clone(),
        }
    }

    /// Whether both are on one store: the local disk, or one S3 bucket.
    fn same_store(&self, other: &Identity) -> bool {
        match (self, other) {
            (Identity::Local(_), Identity::Local(_)) => true,
            (Identity::S3 { bucket: a, .. }, Identity::S3 { bucket: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Location {
    pub fn identity(&self) -> Identity {
        match (&self.local, &self.s3) {
            (Some(p), _) => Identity::Local(real_path(p)),
            (None, Some(b)) => Identity::S3 {
                bucket: b.bucket.clone(),
                key: self.path.to_string(),
            },
            (None, None) => Identity::Local(PathBuf::from(self.path.to_string())),
        }
    }

    /// Whether two local locations are one file through a hard link (same
    /// device and inode); false when either does not exist.
    pub fn same_file(&self, other: &Location) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (&self.local, &other.local) {
            (Some(a), Some(b)) => match (std::fs::metadata(a), std::fs::metadata(b)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The real path of a local path that may not exist yet: its longest
/// existing ancestor canonicalized (symlinks resolved), the rest appended.
fn real_path(p: &FsPath) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(real) = cur.canonicalize() {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// Why writing `output` would destroy or feed back into the input, if it
/// would: the output is one of the input's files (spelled another way, a
/// symlink or a hard link), or lies inside the input directory or prefix, or
/// matches the input's glob, so that the next run would read it back.
/// `input` is the input as the user wrote it; `files` what it lists now.
pub fn output_clash(
    stores: &Stores,
    output: &str,
    input: &str,
    files: &[FileEntry],
) -> Option<String> {
    let out = stores.resolve(output).ok()?;
    let out_id = out.identity();
    if files.is_empty() {
        // The input is not there (its own error says so): only the same name clashes.
        let root = stores.resolve(input).ok()?;
        return (root.identity() == out_id)
            .then(|| format!("is the input {input}: write the output elsewhere"));
    }
    for f in files {
        if f.location.identity() == out_id || f.location.same_file(&out) {
            let same = if f.location.display == input {
                format!("is the input {input}")
            } else {
                format!("is the input file {} (under {input})", f.location.display)
            };
            return Some(format!(
                "{same}, spelled another way: the run would replace its own input; write the output elsewhere"
            ));
        }
    }
    let (base, pattern) = split_glob(input);
    let root_id = stores.resolve(base).ok()?.identity();
    if let Some(pattern) = pattern {
        // The glob is matched against keys: the output's real key against
        // the pattern on the input's real directory.
        let full = format!("{}/{pattern}", root_id.key().trim_end_matches('/'));
        let matches = globset::GlobBuilder::new(full.trim_start_matches('/'))
            .literal_separator(true)
            .build()
            .map(|g| {
                g.compile_matcher()
                    .is_match(out_id.key().trim_start_matches('/'))
            })
            .unwrap_or(false);
        return (matches && out_id.same_store(&root_id)).then(|| {
            format!(
                "matches the input pattern {input}: the next run would read the output back as input; write it elsewhere or narrow the pattern"
            )
        });
    }
    let single_file = files.len() == 1 && files[0].location.identity() == root_id;
    (!single_file && out_id.is_within(&root_id)).then(|| {
        format!(
            "is inside the input directory {input}: the next run would read the output back as input; write it outside {input}"
        )
    })
}

/// [`output_clash`] of one output against several inputs, each listed first
/// (an input that cannot be listed is compared by its name alone): the
/// first clash, for commands whose inputs come from flags (`sql --table`,
/// `neighbors --queries`).
pub async fn output_clash_any(stores: &Stores, output: &str, inputs: &[&str]) -> Option<String> {
    for input in inputs {
        let files = match stores.find_files(input, &[]).await {
            Ok(Ok(files)) => files,
            _ => Vec::new(),
        };
        if let Some(why) = output_clash(stores, output, input, &files) {
            return Some(why);
        }
    }
    None
}

/// [`output_clash`] for each of several outputs (named by the field or flag
/// that gives them), then [`same_file_outputs`]: one message each.
pub fn output_clashes(
    stores: &Stores,
    input: &str,
    files: &[FileEntry],
    outputs: &[(&str, &str)],
) -> Vec<String> {
    let mut problems: Vec<String> = outputs
        .iter()
        .filter_map(|(field, path)| {
            output_clash(stores, path, input, files).map(|why| format!("{field}: {path} {why}"))
        })
        .collect();
    problems.extend(same_file_outputs(stores, outputs));
    problems
}

/// Any two of several outputs that are one file (the same real path or key,
/// or hard links): one message for each later one.
pub fn same_file_outputs(stores: &Stores, outputs: &[(&str, &str)]) -> Vec<String> {
    let resolved: Vec<Option<(Location, Identity)>> = outputs
        .iter()
        .map(|(_, p)| {
            stores.resolve(p).ok().map(|l| {
                let id = l.identity();
                (l, id)
            })
        })
        .collect();
    let mut problems = Vec::new();
    for (i, (field, path)) in outputs.iter().enumerate() {
        let Some((here, here_id)) = &resolved[i] else {
            continue;
        };
        for (j, (other_field, other)) in outputs[..i].iter().enumerate() {
            if resolved[j]
                .as_ref()
                .is_some_and(|(o, o_id)| o_id == here_id || o.same_file(here))
            {
                problems.push(format!(
                    "{field}: {path} is the same file as {other_field} ({other}); give each output its own file"
                ));
            }
        }
    }
    problems
}
