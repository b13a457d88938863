//! Model folders on an object store (`model.path = "s3://models/all-MiniLM-L6-v2/"`):
//! downloaded once into `$EMBEDFLOW_HOME/cache/models/<key>/<name>/`, where
//! `<key>` is a hash of the folder's listing (every object's key, size and
//! ETag). A later run lists the folder again (one request per 1,000 files)
//! and reuses the copy while nothing changed; a changed file gives a new key
//! and a fresh download. A copy appears under its key only when complete.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::store::{Location, Stores};
use crate::{Error, Result};

/// Where downloaded model folders live.
pub fn cache_dir() -> PathBuf {
    crate::paths::embedflow_home().join("cache").join("models")
}

/// One object of the model folder.
struct Remote {
    /// Key relative to the folder, `/`-separated.
    rel: String,
    location: Location,
    size: u64,
}

/// The local copy of the model folder at `url`, downloading it if the cache
/// holds no copy of its current listing.
pub async fn fetch(stores: &Stores, url: &str) -> Result<PathBuf> {
    let root = stores
        .resolve(url.trim_end_matches('/'))
        .map_err(|e| Error::model(url, e))?;
    let name = root
        .path
        .filename()
        .ok_or_else(|| {
            Error::model(
                url,
                "give the model folder, e.g. s3://bucket/models/all-MiniLM-L6-v2/",
            )
        })?
        .to_string();
    let listed: std::result::Result<Vec<_>, _> =
        root.store.list(Some(&root.path)).try_collect().await;
    let mut metas = match listed {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::model(url, root.explain_missing().await.message("")));
        }
        Err(e) => return Err(Error::model(url, root.explain(&e))),
    };
    if metas.is_empty() {
        return Err(Error::model(
            url,
            "no objects under this prefix (expected model.onnx, tokenizer.json and the sentence-transformers configs)",
        ));
    }
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    let prefix = format!("{}/", root.path);
    let mut hasher = Sha256::new();
    hasher.update(root.url().as_bytes());
    let mut files = Vec::with_capacity(metas.len());
    for m in metas {
        let rel = m
            .location
            .as_ref()
            .strip_prefix(&prefix)
            .unwrap_or(m.location.as_ref())
            .to_string();
        hasher.update(
            format!("\n{rel}\t{}\t{}", m.size, m.e_tag.as_deref().unwrap_or("")).as_bytes(),
        );
        let display = format!("{}/{rel}", url.trim_end_matches('/'));
        files.push(Remote {
            location: root.with_path(m.location, display),
            rel,
            size: m.size,
        });
    }
    let key = hex::encode(&hasher.finalize()[..12]);
    let base = cache_dir();
    let done = base.join(&key);
    let dir = done.join(&name);
    if dir.is_dir() {
        tracing::info!(model = url, cache = %dir.display(), "model folder unchanged; using the cached copy");
        return Ok(dir);
    }

    let total: u64 = files.iter().map(|f| f.size).sum();
    tracing::info!(
        model = url,
        files = files.len(),
        bytes = total,
        cache = %dir.display(),
        "downloading the model folder"
    );
    let staging = base.join(format!(".tmp-{key}-{}", std::process::id()));
    let result = download(&files, &staging.join(&name), url).await;
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    match std::fs::rename(&staging, &done) {
        Ok(()) => Ok(dir),
        // Another run finished the same copy first: use it.
        Err(_) if dir.is_dir() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(dir)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(Error::model(
                url,
                format!("cannot move the download into {}: {e}", done.display()),
            ))
        }
    }
}

async fn download(files: &[Remote], dir: &Path, url: &str) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| {
        Error::model(url, format!("cannot write {}: {e}", p.display()))
    };
    for f in files {
        let path = dir.join(&f.rel);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io(parent, e))?;
        }
        let explain = |e: object_store::Error| Error::model(url, f.location.explain(&e));
        let mut stream = f
            .location
            .store
            .get(&f.location.path)
            .await
            .map_err(explain)?
            .into_stream();
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io(&path, e))?;
        let mut written = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(explain)?;
            written += chunk.len() as u64;
            out.write_all(&chunk).await.map_err(|e| io(&path, e))?;
        }
        out.flush().await.map_err(|e| io(&path, e))?;
        if written != f.size {
            return Err(Error::model(
                url,
                format!(
                    "{}: got {written} bytes, the listing said {}",
                    f.location.display, f.size
                ),
            ));
        }
    }
    Ok(())
}
