//! What of a model folder decides its vectors, as one digest: the graph
//! that runs, its external weights, the tokenizer and every configuration
//! file embedflow reads. A change to any of them is a change of model for
//! the incremental fingerprint and the resume identity; the per-file
//! digests go into the output's lineage.
//!
//! Every file under the folder counts except those that cannot change an
//! ONNX model's vectors: another graph (`*.onnx`, with its `*.onnx_data`),
//! framework weights ONNX Runtime never reads (`*.safetensors`,
//! `pytorch_model.bin`, …), documentation, pictures, scripts and hidden
//! files. Each file's digest is remembered by [`sha256_file`], so an
//! unchanged folder costs a `stat` per file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::model::{ModelConfig, sha256_file};
use crate::{Error, Result};

/// How deep a model folder is walked (sentence-transformers folders nest
/// one level: `1_Pooling/config.json`).
const MAX_DEPTH: usize = 4;

/// Extensions of files that never change an ONNX model's vectors.
const IGNORED_EXTENSIONS: [&str; 15] = [
    "md",
    "py",
    "png",
    "jpg",
    "jpeg",
    "webp",
    "gif",
    "npy",
    "npz",
    "parquet",
    "csv",
    "ipynb",
    "safetensors",
    "h5",
    "msgpack",
];

/// Framework weight files (by name) that ONNX Runtime never reads.
const IGNORED_NAMES: [&str; 6] = [
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "LICENSE",
    "NOTICE",
];

/// A model folder's digest: one for the folder, one per file counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDigest {
    /// SHA-256 (hex) over every counted file's path and digest.
    pub folder: String,
    /// Path relative to the folder → SHA-256 (hex) of the file.
    pub files: BTreeMap<String, String>,
}

impl ModelDigest {
    /// The per-file digests as one JSON object, for the lineage.
    pub fn files_json(&self) -> String {
        serde_json::to_string(&self.files).unwrap_or_default()
    }
}

impl ModelConfig {
    /// The digest of everything in the folder that decides this
    /// configuration's vectors (see the module's documentation).
    pub fn digest(&self) -> Result<ModelDigest> {
        if let Some(api) = &self.api {
            return self.api_digest(api);
        }
        let graph = self.graph_path().to_path_buf();
        let mut found = Vec::new();
        walk(&self.dir, &self.dir, &graph, 0, &mut found)?;
        let mut files = BTreeMap::new();
        for (rel, path) in found {
            files.insert(rel, sha256_file(&self.dir, &path)?);
        }
        Ok(ModelDigest::of(files))
    }
}

impl ModelDigest {
    /// The digest of `files` (name → value): SHA-256 over each pair.
    pub fn of(files: BTreeMap<String, String>) -> ModelDigest {
        let mut h = Sha256::new();
        for (rel, sha) in &files {
            h.update(format!("{rel}\0{sha}\n").as_bytes());
        }
        ModelDigest {
            folder: hex::encode(h.finalize()),
            files,
        }
    }
}

/// Collects (relative path, path) of the counted files under `dir`.
fn walk(
    root: &Path,
    dir: &Path,
    graph: &Path,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::model(
            root.display(),
            format!("cannot list {}: {e}", dir.display()),
        )
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::model(root.display(), e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Through symlinks (a cached model folder links to its files).
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth + 1 < MAX_DEPTH {
                walk(root, &path, graph, depth + 1, out)?;
            }
            continue;
        }
        if meta.is_file() && counts(&path, &name, graph) {
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            out.push((rel, path));
        }
    }
    Ok(())
}

/// Whether a file can change the vectors of the graph `graph`.
fn counts(path: &Path, name: &str, graph: &Path) -> bool {
    if path == graph {
        return true;
    }
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if IGNORED_NAMES.contains(&name) || IGNORED_EXTENSIONS.contains(&ext) {
        return false;
    }
    // Another graph, and the external weights of another graph.
    if ext == "onnx" {
        return false;
    }
    for suffix in [".onnx_data", ".onnx.data"] {
        if let Some(stem) = name.strip_suffix(suffix) {
            return path.with_file_name(format!("{stem}.onnx")) == graph;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_graphs_and_documents_do_not_count() {
        let g = Path::new("/m/model.onnx");
        assert!(counts(g, "model.onnx", g));
        assert!(counts(
            Path::new("/m/model.onnx_data"),
            "model.onnx_data",
            g
        ));
        assert!(counts(Path::new("/m/weights.bin"), "weights.bin", g));
        assert!(counts(Path::new("/m/tokenizer.json"), "tokenizer.json", g));
        assert!(counts(
            Path::new("/m/1_Pooling/config.json"),
            "config.json",
            g
        ));
        assert!(!counts(
            Path::new("/m/vision_model.onnx"),
            "vision_model.onnx",
            g
        ));
        assert!(!counts(
            Path::new("/m/model_q.onnx_data"),
            "model_q.onnx_data",
            g
        ));
        assert!(!counts(Path::new("/m/README.md"), "README.md", g));
        assert!(!counts(
            Path::new("/m/model.safetensors"),
            "model.safetensors",
            g
        ));
        assert!(!counts(
            Path::new("/m/pytorch_model.bin"),
            "pytorch_model.bin",
            g
        ));
    }
}
