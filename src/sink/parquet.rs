//! Parquet output over object_store, committed so that a reader never sees a
//! partial file under the output's name:
//!
//! - **Local disk**: written under a hidden temporary name beside the target
//!   (`.NAME.tmp-PID-N`) and renamed into place once complete; a failed run
//!   removes its temporary file.
//! - **S3**: written straight to the target key as a multipart upload (parts
//!   of 10 MiB, a single PUT when smaller). S3 shows an object only once its
//!   upload is completed, which happens after the Parquet footer is written;
//!   a failed run aborts the upload. No copy: a rename on S3 would be a
//!   server-side copy of the whole file (and CopyObject stops at 5 GB).

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::store::{Location, Stores};
use crate::{Error, Result};

/// Parquet compression codec of an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Compression {
    Zstd,
    Snappy,
    Lz4,
    Gzip,
    None,
}

/// Default rows per Parquet row group of an output.
pub const DEFAULT_ROW_GROUP_SIZE: usize = 8192;

/// A row group is closed once its encoded size passes this, whatever its
/// row count.
pub const MAX_ROW_GROUP_BYTES: usize = 128 << 20;

/// How to write.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub compression: Compression,
    pub row_group_size: usize,
    pub overwrite: bool,
    /// Key-value metadata (lineage) stored in the footer.
    pub metadata: Vec<(String, String)>,
    /// Remove what killed runs left beside the output before writing it
    /// (reads the output's folder). A Delta run writes many parts into one
    /// folder and sweeps it once itself ([`remove_stale_part_temporaries`]).
    pub sweep: bool,
    /// Hash the bytes written (SHA-256), for [`ParquetSink::commit_with_digest`]:
    /// a table's part records it as its proof; other outputs need not pay.
    pub digest: bool,
}

impl Default for WriteOptions {
    /// Zstd, [`DEFAULT_ROW_GROUP_SIZE`] rows, overwrite, no metadata.
    fn default() -> Self {
        WriteOptions {
            compression: Compression::Zstd,
            row_group_size: DEFAULT_ROW_GROUP_SIZE,
            overwrite: true,
            metadata: Vec::new(),
            sweep: true,
            digest: false,
        }
    }
}

pub struct ParquetSink {
    writer: Option<AsyncArrowWriter<ObjectWriter>>,
    /// Where the bytes go: a temporary name (local) or the target itself (S3).
    staging: Location,
    target: Location,
    overwrite: bool,
    rows: u64,
    digest: Option<std::sync::Arc<std::sync::Mutex<Sha256>>>,
}

/// The object writer under the Parquet writer: object_store's [`BufWriter`]
/// (a multipart upload once past its buffer), remembering whether completion
/// began, so that a failure before it can abort the upload instead.
struct ObjectWriter {
    inner: BufWriter,
    completing: bool,
    /// SHA-256 of every byte written (with [`WriteOptions::digest`]): the
    /// proof a table's unit record keeps of its part.
    digest: Option<std::sync::Arc<std::sync::Mutex<Sha256>>>,
}

/// Bytes handed to every Parquet output of this process (its metrics).
static BYTES_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Bytes of Parquet this process has written so far.
pub fn bytes_written() -> u64 {
    BYTES_WRITTEN.load(Ordering::Relaxed)
}

impl AsyncFileWriter for ObjectWriter {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        BYTES_WRITTEN.fetch_add(bs.len() as u64, Ordering::Relaxed);
        if let Some(Ok(mut d)) = self.digest.as_ref().map(|d| d.lock()) {
            d.update(&bs);
        }
        Box::pin(async move {
            self.inner
                .put(bs)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.completing = true;
        Box::pin(async move {
            self.inner
                .shutdown()
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        })
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ParquetSink {
    /// Checks the target can be written: a file name, not a directory, not
    /// existing unless `overwrite`, and (on S3) a bucket that exists and
    /// answers with these credentials.
    pub async fn check_target(stores: &Stores, target: &str, overwrite: bool) -> Result<Location> {
        let loc = stores
            .resolve(target)
            .map_err(|e| Error::output(target, strip_input(e)))?;
        if loc.path.filename().is_none() {
            return Err(Error::output(target, "needs a file name"));
        }
        if let Some(local) = &loc.local
            && local.is_dir()
        {
            return Err(Error::output(
                target,
                "is a directory; give a file name such as out/embedded.parquet",
            ));
        }
        match loc.store.head(&loc.path).await {
            Ok(_) if !overwrite => {
                return Err(Error::output(
                    target,
                    "already exists and output.overwrite = false",
                ));
            }
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                if loc.s3.is_some() {
                    let missing = loc.explain_missing().await;
                    if missing != crate::store::Missing::NoSuchKey {
                        return Err(Error::output(target, missing.message("")));
                    }
                }
            }
            Err(e) if loc.s3.is_some() => return Err(Error::output(target, loc.explain(&e))),
            // A local path that cannot be stat'ed (e.g. its parent is a
            // file): the writability check below says why.
            Err(_) => {}
        }
        if let Some(local) = &loc.local {
            check_writable(local).map_err(|m| Error::output(target, m))?;
        }
        Ok(loc)
    }

    pub async fn create(
        stores: &Stores,
        target: &str,
        schema: SchemaRef,
        opts: &WriteOptions,
    ) -> Result<ParquetSink> {
        let target = Self::check_target(stores, target, opts.overwrite).await?;
        let staging = if target.s3.is_some() {
            target.clone()
        } else {
            if let Some(local) = &target.local
                && opts.sweep
            {
                remove_stale_temporaries(local);
            }
            let name = target.path.filename().unwrap_or("output");
            let tmp_name = format!(
                ".{name}.tmp-{}-{}",
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let parent: Vec<_> = target.path.parts().collect();
            let tmp_path = Path::from_iter(
                parent[..parent.len() - 1]
                    .iter()
                    .cloned()
                    .chain([tmp_name.as_str().into()]),
            );
            let tmp = target.with_path(
                tmp_path,
                format!("{} (temporary {tmp_name})", target.display),
            );
            if let Some(dir) = tmp.local.as_ref().and_then(|p| p.parent()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::output(&target, format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            tmp
        };
        let compression = match opts.compression {
            Compression::Zstd => {
                PqCompression::ZSTD(ZstdLevel::try_new(3).map_err(Error::internal)?)
            }
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::Gzip => PqCompression::GZIP(Default::default()),
            Compression::None => PqCompression::UNCOMPRESSED,
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(opts.row_group_size))
            // Rows of long passthrough values (a document repeated per chunk)
            // would otherwise pile up in memory until the row count is reached.
            .set_max_row_group_bytes(Some(MAX_ROW_GROUP_BYTES))
            .set_key_value_metadata(Some(
                opts.metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let digest = opts
            .digest
            .then(|| std::sync::Arc::new(std::sync::Mutex::new(Sha256::new())));
        let object_writer = ObjectWriter {
            inner: BufWriter::new(staging.store.clone(), staging.path.clone()),
            completing: false,
            digest: digest.clone(),
        };
        let writer = AsyncArrowWriter::try_new(object_writer, schema, Some(props))
            .map_err(|e| Error::output(&target, e))?;
        Ok(ParquetSink {
            writer: Some(writer),
            staging,
            target,
            overwrite: opts.overwrite,
            rows: 0,
            digest,
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        crate::cancel::check()?;
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("write after close"))?;
        if let Err(e) = w.write(batch).await {
            return Err(Error::output(&self.target, self.explain(e)));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Adds key-value metadata to the footer (known only at the end: what
    /// the run did). Before [`commit`](Self::commit).
    pub fn append_metadata(&mut self, kv: &[(String, String)]) {
        if let Some(w) = self.writer.as_mut() {
            for (k, v) in kv {
                w.append_key_value_metadata(KeyValue::new(k.clone(), v.clone()));
            }
        }
    }

    /// Finishes the file and puts it under its name, unless a stop was asked
    /// for (SIGINT, SIGTERM: [`crate::cancel`]): then the file is discarded
    /// and the result is [`Error::Interrupted`]. Returns the rows written.
    pub async fn commit(self) -> Result<u64> {
        if crate::cancel::requested() {
            self.abort().await;
            return Err(Error::Interrupted);
        }
        self.commit_unconditionally().await
    }

    /// [`commit`](Self::commit), also giving the SHA-256 (hex) of the
    /// file's bytes: what a table's unit record keeps to prove its part.
    pub async fn commit_with_digest(self) -> Result<(u64, String)> {
        let digest = self
            .digest
            .clone()
            .ok_or_else(|| Error::internal("a digest asked of a sink that did not hash"))?;
        let rows = self.commit().await?;
        let hex = digest
            .lock()
            .map(|d| hex::encode(d.clone().finalize()))
            .map_err(|_| Error::internal("the part digest is poisoned"))?;
        Ok((rows, hex))
    }

    /// [`commit`](Self::commit) without looking at the stop flag: for the
    /// second file of a pair whose first one already passed the commit point.
    pub async fn commit_unconditionally(mut self) -> Result<u64> {
        let mut w = self
            .writer
            .take()
            .ok_or_else(|| Error::internal("commit after close"))?;
        if !self.overwrite && self.target.s3.is_some() {
            // S3 has no portable create-if-absent for multipart uploads:
            // look again just before completing (another writer may still
            // race us; the run's start checked too).
            if self.target.store.head(&self.target.path).await.is_ok() {
                self.discard(w).await;
                return Err(Error::output(
                    &self.target,
                    "appeared while this run was writing it, and output.overwrite = false",
                ));
            }
        }
        if let Err(e) = w.finish().await {
            let msg = self.explain(e);
            self.discard(w).await;
            return Err(Error::output(&self.target, msg));
        }
        if self.target.s3.is_some() {
            return Ok(self.rows);
        }
        let store = &self.target.store;
        let moved = if self.overwrite {
            store.rename(&self.staging.path, &self.target.path).await
        } else {
            store
                .rename_if_not_exists(&self.staging.path, &self.target.path)
                .await
        };
        if let Err(e) = moved {
            self.remove_staging().await;
            return Err(Error::output(
                &self.target,
                format!("cannot move the finished file into place: {e}"),
            ));
        }
        if let Some(local) = &self.target.local {
            sync_file_and_folder(local).map_err(|e| {
                Error::output(&self.target, format!("cannot flush it to the disk: {e}"))
            })?;
        }
        Ok(self.rows)
    }

    /// Drops what was written; the target is left as it was.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            self.discard(w).await;
        }
    }

    /// Aborts the upload if it never began completing, and removes a local
    /// temporary file.
    async fn discard(&self, w: AsyncArrowWriter<ObjectWriter>) {
        let mut inner = w.into_inner();
        if !inner.completing {
            let _ = inner.inner.abort().await;
        }
        self.remove_staging().await;
    }

    async fn remove_staging(&self) {
        if self.target.s3.is_none() {
            let _ = self.staging.store.delete(&self.staging.path).await;
        }
    }

    /// A write error in words: store failures explained, others as Parquet says.
    fn explain(&self, e: ParquetError) -> String {
        if let Some(words) = io_words_in(&e) {
            return format!("{words}; nothing was committed");
        }
        if let ParquetError::External(inner) = &e {
            if let Some(se) = inner.downcast_ref::<object_store::Error>() {
                return self.target.explain(se);
            }
            if let Some(se) = inner
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|r| r.downcast_ref::<object_store::Error>())
            {
                return self.target.explain(se);
            }
        }
        e.to_string()
    }
}

/// Flushes a local file and the folder entry that names it to the disk, so
/// that a power loss after this cannot leave the name pointing at a hole.
pub fn sync_file_and_folder(path: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(path)?.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `Stores::resolve` speaks of inputs; for outputs say "output".
fn strip_input(e: Error) -> String {
    match e {
        Error::Input { message, .. } => message,
        other => other.to_string(),
    }
}

/// An operating-system error under a write failure, in words: looked for
/// through the whole chain, inside `io::Error` wrappers too (object_store's
/// writer wraps its own errors in one), and, last, in the text (`os error
/// 28`) for errors that keep only their message.
pub(crate) fn io_words_in(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(words) = io_words(io) {
                return Some(words);
            }
            if let Some(inner) = io.get_ref()
                && let Some(words) = io_words_in(inner)
            {
                return Some(words);
            }
        }
        cur = err.source();
    }
    let text = e.to_string();
    let code = text
        .split("(os error ")
        .nth(1)?
        .split(')')
        .next()?
        .parse()
        .ok()?;
    io_words(&std::io::Error::from_raw_os_error(code))
}

/// An operating-system error a user can act on, in words.
fn io_words(io: &std::io::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    Some(match io.kind() {
        ErrorKind::StorageFull => "the disk is full (no space left on the device)",
        ErrorKind::QuotaExceeded => "the disk quota is exceeded",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::ReadOnlyFilesystem => "the file system is read-only",
        _ => return None,
    })
}

/// Checks, before any row is read, that the output's folder can be written:
/// the nearest folder that exists on the way to it must be a folder and take
/// a new file (a probe, removed at once). Says why not in words.
fn check_writable(target: &std::path::Path) -> std::result::Result<(), String> {
    let mut dir = match target.parent() {
        Some(d) => d,
        None => return Ok(()),
    };
    while !dir.exists() {
        match dir.parent() {
            Some(p) => dir = p,
            None => return Ok(()),
        }
    }
    if !dir.is_dir() {
        return Err(format!(
            "{} is a file, not a folder, so nothing can be written under it",
            dir.display()
        ));
    }
    let probe = dir.join(format!(".embedflow-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot write in {}: {}",
            dir.display(),
            io_words(&e).map_or_else(|| e.to_string(), str::to_string)
        )),
    }
}

/// Removes what killed runs left beside `target`: its temporary files
/// (`.NAME.tmp-PID-N`) and a cluster stage's intermediate vectors
/// (`.NAME.embedded-PID.parquet`, and their own temporary files), when the
/// process PID is no longer an embedflow run. Files of a live run (two runs
/// at once) are left alone.
fn remove_stale_temporaries(target: &std::path::Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name().and_then(|n| n.to_str()))
    else {
        return;
    };
    remove_stale(dir, |file| stale_pid(file, name));
}

/// Removes the temporary files that killed runs left in a Delta table's
/// folder (`.PREFIX….parquet.tmp-PID-N` of its part files), once per run.
pub fn remove_stale_part_temporaries(dir: &std::path::Path, prefix: &str) {
    remove_stale(dir, |file| {
        let part = file.strip_prefix('.')?;
        if !part.starts_with(prefix) {
            return None;
        }
        let (name, _) = part.split_once(".parquet.")?;
        stale_pid(file, &format!("{name}.parquet"))
    });
}

/// Removes the files of `dir` that `stale` names with the PID of a process
/// that is no longer an embedflow run.
fn remove_stale(dir: &std::path::Path, stale: impl Fn(&str) -> Option<u32>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(pid) = stale(file) else {
            continue;
        };
        if pid == std::process::id() || crate::process::embedflow_alive(pid) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(
                "removed {} (left by an embedflow run, pid {pid}, that did not finish)",
                entry.path().display()
            ),
            Err(e) => tracing::warn!(
                "cannot remove {} (left by a run that did not finish): {e}",
                entry.path().display()
            ),
        }
    }
}

/// The PID in the name of a temporary file of the output `name`, if `file` is one.
fn stale_pid(file: &str, name: &str) -> Option<u32> {
    let rest = file.strip_prefix('.')?;
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    let rest = rest.strip_prefix(name)?.strip_prefix('.')?;
    let digits = rest
        .strip_prefix("tmp-")
        .or_else(|| rest.strip_prefix("embedded-"))?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_folder_is_swept_of_dead_runs_part_temporaries_only() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that is no process: well above any pid_max.
        let dead = 4_000_000_000u32;
        let me = std::process::id();
        let names = [
            format!(".embedflow-ab12-f0-u3.parquet.tmp-{dead}-0"),
            format!(".embedflow-ab12-f0-u4.parquet.tmp-{me}-1"),
            "embedflow-ab12-f0-u3.parquet".to_string(),
            format!(".other.parquet.tmp-{dead}-0"),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        remove_stale_part_temporaries(dir.path(), "embedflow-");
        let left: Vec<bool> = names.iter().map(|n| dir.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true]);
    }

    #[test]
    fn reads_pids_of_temporary_names() {
        assert_eq!(
            stale_pid(".out.parquet.tmp-123-0", "out.parquet"),
            Some(123)
        );
        assert_eq!(
            stale_pid(".out.parquet.embedded-77.parquet", "out.parquet"),
            Some(77)
        );
        assert_eq!(
            stale_pid("..out.parquet.embedded-77.parquet.tmp-78-1", "out.parquet"),
            Some(77)
        );
        assert_eq!(stale_pid("out.parquet", "out.parquet"), None);
        assert_eq!(stale_pid(".other.parquet.tmp-1-0", "out.parquet"), None);
        assert_eq!(stale_pid(".out.parquet.tmp-x-0", "out.parquet"), None);
    }

    #[test]
    fn unwritable_folders_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_writable(&file.join("sub/out.parquet")).unwrap_err();
        assert!(e.contains("is a file, not a folder"), "{e}");
        assert!(check_writable(&dir.path().join("new/deeper/out.parquet")).is_ok());
    }
}
