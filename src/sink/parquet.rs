//! Parquet output over object_store. The file is written under a hidden
//! temporary name beside the target (`.NAME.tmp-PID-N`) and renamed into
//! place only once complete: a reader never sees a partial file under the
//! output's name, and a failed run removes its temporary file.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::job::Compression;
use crate::store::{self, Location};
use crate::{Error, Result};

/// How to write.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    pub compression: Compression,
    pub row_group_size: usize,
    pub overwrite: bool,
    /// Key-value metadata (lineage) stored in the footer.
    pub metadata: Vec<(String, String)>,
}

pub struct ParquetSink {
    writer: Option<AsyncArrowWriter<BufWriter>>,
    tmp: Location,
    target: Location,
    overwrite: bool,
    rows: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ParquetSink {
    /// Checks the target can be written (and does not exist, unless `overwrite`).
    pub async fn check_target(target: &str, overwrite: bool) -> Result<Location> {
        let loc = store::resolve(target).map_err(|e| Error::output(target, strip_input(e)))?;
        if loc.path.filename().is_none() {
            return Err(Error::output(target, "needs a file name"));
        }
        if !overwrite && loc.store.head(&loc.path).await.is_ok() {
            return Err(Error::output(
                target,
                "already exists and output.overwrite = false",
            ));
        }
        if let Some(local) = &loc.local
            && local.is_dir()
        {
            return Err(Error::output(
                target,
                "is a directory; give a file name such as out/embedded.parquet",
            ));
        }
        Ok(loc)
    }

    pub async fn create(
        target: &str,
        schema: SchemaRef,
        opts: &WriteOptions,
    ) -> Result<ParquetSink> {
        let target = Self::check_target(target, opts.overwrite).await?;
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
            .set_key_value_metadata(Some(
                opts.metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        let object_writer = BufWriter::new(tmp.store.clone(), tmp.path.clone());
        let writer = AsyncArrowWriter::try_new(object_writer, schema, Some(props))
            .map_err(|e| Error::output(&target, e))?;
        Ok(ParquetSink {
            writer: Some(writer),
            tmp,
            target,
            overwrite: opts.overwrite,
            rows: 0,
        })
    }

    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("write after close"))?;
        w.write(batch)
            .await
            .map_err(|e| Error::output(&self.target, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file and moves it to its name. Returns the rows written.
    pub async fn commit(mut self) -> Result<u64> {
        let w = self
            .writer
            .take()
            .ok_or_else(|| Error::internal("commit after close"))?;
        if let Err(e) = w.close().await {
            self.remove_tmp().await;
            return Err(Error::output(&self.target, e));
        }
        let store = &self.target.store;
        let moved = if self.overwrite {
            store.rename(&self.tmp.path, &self.target.path).await
        } else {
            store
                .rename_if_not_exists(&self.tmp.path, &self.target.path)
                .await
        };
        if let Err(e) = moved {
            self.remove_tmp().await;
            return Err(Error::output(
                &self.target,
                format!("cannot move the finished file into place: {e}"),
            ));
        }
        Ok(self.rows)
    }

    /// Drops what was written; the target is left as it was.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            // Closing may fail (it is what failed); the file goes either way.
            let _ = w.close().await;
        }
        self.remove_tmp().await;
    }

    async fn remove_tmp(&self) {
        let _ = self.tmp.store.delete(&self.tmp.path).await;
    }
}

/// `store::resolve` speaks of inputs; for outputs say "output".
fn strip_input(e: Error) -> String {
    match e {
        Error::Input { message, .. } => message,
        other => other.to_string(),
    }
}
