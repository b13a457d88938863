//! Parquet files through object_store: footer first, then only the projected
//! columns, streamed batch by batch.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use tokio::sync::mpsc;

use super::{Emitter, SourceBatch, projection};
use crate::store::{FileEntry, Location};
use crate::{Error, Result};

/// Bytes read past the footer on the first request, so that a typical
/// footer (and page index) arrives in one GET.
const FOOTER_PREFETCH: usize = 64 << 10;

/// Ranged reads of one Parquet object: the footer first, then only the
/// column chunks the projection needs.
pub(crate) struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    location: Location,
    size: u64,
}

/// A read that failed in the store (not in the Parquet decoder), already
/// explained for the user: it travels through the decoder as an external
/// error and is reported as is, not as corrupt data.
#[derive(Debug)]
struct StoreFailure(String);

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreFailure {}

impl ObjectReader {
    fn failure(&self, e: object_store::Error) -> ParquetError {
        ParquetError::External(Box::new(StoreFailure(self.location.explain(&e))))
    }
}

/// The explained store failure behind a Parquet error, if that is what it is.
fn store_failure(e: &ParquetError) -> Option<&str> {
    match e {
        ParquetError::External(inner) => inner.downcast_ref::<StoreFailure>().map(|s| s.0.as_str()),
        _ => None,
    }
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.location.path, range)
                .await
                .map_err(|e| self.failure(e))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.location.path, &ranges)
                .await
                .map_err(|e| self.failure(e))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(FOOTER_PREFETCH))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A file's reader, its footer read (an unreadable one explained).
pub(crate) async fn builder(
    file: &FileEntry,
) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    builder_with(file, ArrowReaderOptions::new()).await
}

/// [`builder`] with reader options (the page index, for reading a few
/// rows: only their pages are then read and decoded).
async fn builder_with(
    file: &FileEntry,
    options: ArrowReaderOptions,
) -> Result<ParquetRecordBatchStreamBuilder<ObjectReader>> {
    let reader = ObjectReader {
        store: Arc::clone(&file.location.store),
        location: file.location.clone(),
        size: file.size,
    };
    ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
        .await
        .map_err(|e| match store_failure(&e) {
            Some(m) => Error::input(&file.location, m),
            None => Error::input(&file.location, unreadable(&e)),
        })
}

/// Why a file's footer cannot be read, in words: the decoder's own message
/// ("integer overflow decoding thrift value") says nothing to a user.
fn unreadable(e: &parquet::errors::ParquetError) -> String {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("thrift")
        || lower.contains("protocol")
        || lower.contains("footer")
        || lower.contains("metadata")
    {
        format!(
            "not a readable Parquet file: the footer (the file's table of contents) is corrupt; the file is damaged or was cut short ({text})"
        )
    } else {
        format!("not a readable Parquet file: {text}")
    }
}

/// The key-value metadata of a file's footer (lineage written by an earlier run).
pub async fn key_value_metadata(file: &FileEntry) -> Result<Vec<(String, String)>> {
    let b = builder(file).await?;
    Ok(b.metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .map(|k| (k.key.clone(), k.value.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default())
}

/// The row counts of a file's row groups, in order (its footer).
pub async fn row_group_sizes(file: &FileEntry) -> Result<Vec<u64>> {
    let b = builder(file).await?;
    Ok(b.metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows().max(0) as u64)
        .collect())
}

/// Rows of a Parquet file.
pub(crate) async fn file_rows(file: &FileEntry) -> Result<u64> {
    let b = builder(file).await?;
    Ok(b.metadata().file_metadata().num_rows() as u64)
}

/// A file's share of [`rows_at_positions`]: its index among the files,
/// the range of the positions asked that it holds, and those rows.
pub(crate) struct FileRows {
    pub file: usize,
    pub asked: std::ops::Range<usize>,
    pub batches: Vec<RecordBatch>,
}

/// The rows at table positions `positions` (ascending) of files read end
/// to end, each given as (file, its first row's position, its rows), as
/// each file's batches of `schema`'s columns (only the pages holding
/// them are read; files holding none are left out).
pub(crate) async fn rows_at_positions(
    files: &[(&FileEntry, u64, u64)],
    positions: &[u64],
    schema: &SchemaRef,
) -> Result<Vec<FileRows>> {
    let mut out = Vec::new();
    for (i, &(file, first, rows)) in files.iter().enumerate() {
        let asked = positions.partition_point(|&p| p < first)
            ..positions.partition_point(|&p| p < first + rows);
        if asked.is_empty() {
            continue;
        }
        let within: Vec<usize> = positions[asked.clone()]
            .iter()
            .map(|&p| (p - first) as usize)
            .collect();
        let batches = rows_at(file, &within, rows as usize, schema).await?;
        out.push(FileRows {
            file: i,
            asked,
            batches,
        });
    }
    Ok(out)
}

/// The rows `rows` (sorted, within the file) of a Parquet file of
/// `total` rows, as batches of `schema`'s columns.
async fn rows_at(
    file: &FileEntry,
    rows: &[usize],
    total: usize,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let bad = |e: &dyn std::fmt::Display| Error::input(&file.location.display, e.to_string());
    let b = builder_with(
        file,
        ArrowReaderOptions::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
    )
    .await?;
    let file_schema = Arc::clone(b.schema());
    let roots: Vec<usize> = schema
        .fields()
        .iter()
        .map(|f| file_schema.index_of(f.name()).map_err(|e| bad(&e)))
        .collect::<Result<_>>()?;
    let mask = ProjectionMask::roots(b.parquet_schema(), roots);
    let stream = b
        .with_projection(mask)
        .with_row_selection(selection(rows, total))
        .build()
        .map_err(|e| bad(&e))?;
    let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(|e| bad(&e))?;
    batches.into_iter().map(|b| as_schema(b, schema)).collect()
}

/// A selection of the sorted `rows` of `total`.
fn selection(rows: &[usize], total: usize) -> RowSelection {
    let mut sel = Vec::new();
    let mut at = 0;
    for &r in rows {
        if r > at {
            sel.push(RowSelector::skip(r - at));
        }
        if r >= at {
            sel.push(RowSelector::select(1));
            at = r + 1;
        }
    }
    if total > at {
        sel.push(RowSelector::skip(total - at));
    }
    sel.into()
}

/// A batch of a file's columns as the table's schema has them.
fn as_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch
                .column_by_name(f.name())
                .ok_or_else(|| Error::internal(format!("column {} not read", f.name())))?;
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type()).map_err(Error::internal)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(Error::internal)
}

/// The first file's schema, and the sum of every file's row count from the
/// footers (cheap: footers only).
pub(super) async fn schema_and_rows(files: &[FileEntry]) -> Result<(SchemaRef, Option<u64>)> {
    let mut schema = None;
    let mut rows = 0u64;
    for file in files {
        let b = builder(file).await?;
        rows += b.metadata().file_metadata().num_rows().max(0) as u64;
        if schema.is_none() {
            schema = Some(Arc::clone(b.schema()));
        }
    }
    let schema = schema.ok_or_else(|| Error::internal("no input files"))?;
    Ok((schema, Some(rows)))
}

/// Streams one file. Returns Ok(false) if the receiver went away.
pub(super) async fn read(
    file: &FileEntry,
    expected: &Schema,
    columns: &[String],
    batch_rows: usize,
    groups: Option<&[usize]>,
    tx: &mpsc::Sender<Result<SourceBatch>>,
) -> Result<bool> {
    let name: Arc<str> = file.location.display.as_str().into();
    let mut b = builder(file).await?;
    // With row groups chosen, each batch is numbered from its group's first
    // row (the reader cuts batches within a group, never across one).
    let mut chosen: Option<std::collections::VecDeque<(u64, u64)>> = None;
    if let Some(groups) = groups {
        let sizes: Vec<u64> = b
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows().max(0) as u64)
            .collect();
        let starts: Vec<u64> = sizes
            .iter()
            .scan(0u64, |at, n| {
                let s = *at;
                *at += n;
                Some(s)
            })
            .collect();
        if let Some(&g) = groups.iter().find(|&&g| g >= sizes.len()) {
            return Err(Error::input(
                &name,
                format!(
                    "has {} row groups, not {}: the file changed since the run was planned",
                    sizes.len(),
                    g + 1
                ),
            ));
        }
        chosen = Some(groups.iter().map(|&g| (starts[g], sizes[g])).collect());
        b = b.with_row_groups(groups.to_vec());
    }
    let schema = Arc::clone(b.schema());
    let indices = projection(&name, &schema, columns)?;
    // Columns to convert to the first file's type: the same text (or bytes)
    // in another Arrow layout, as writers of one table differ on
    // (Utf8View from some, Utf8 from others).
    let mut convert: Vec<Option<DataType>> = vec![None; columns.len()];
    for (k, (&i, c)) in indices.iter().zip(columns).enumerate() {
        let want = expected
            .field_with_name(c)
            .map(|f| f.data_type().clone())
            .ok();
        let got = schema.field(i).data_type();
        if let Some(want) = want
            && &want != got
        {
            if same_kind(got, &want) {
                convert[k] = Some(want);
                continue;
            }
            return Err(Error::input(
                &name,
                format!("column '{c}' has type {got} here but {want} in the first input file"),
            ));
        }
    }
    let mask = ProjectionMask::roots(b.parquet_schema(), indices.iter().copied());
    let mut stream = b
        .with_projection(mask)
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| Error::input(&name, e))?;
    let mut out = Emitter::new(Arc::clone(&name), tx);
    // Rows left in the current chosen group.
    let mut left = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| match store_failure(&e) {
            Some(m) => Error::input(
                &name,
                format!("reading failed after row {}: {m}", out.rows()),
            ),
            None => Error::input(
                &name,
                format!("corrupt Parquet data after row {}: {e}", out.rows()),
            ),
        })?;
        // Reorder to the requested column order.
        let order: Vec<usize> = columns
            .iter()
            .map(|c| batch.schema().index_of(c))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::internal(format!("projected column vanished: {e}")))?;
        let mut batch = batch.project(&order).map_err(Error::internal)?;
        if convert.iter().any(Option::is_some) {
            batch = conform(batch, &convert, expected).map_err(|e| Error::input(&name, e))?;
        }
        if let Some(chosen) = chosen.as_mut() {
            // An empty group gives no batch: skip past it.
            while left == 0 {
                let (start, n) = chosen
                    .pop_front()
                    .ok_or_else(|| Error::internal("more rows than the chosen row groups hold"))?;
                out.skip_to(start);
                left = n;
            }
            left = left
                .checked_sub(batch.num_rows() as u64)
                .ok_or_else(|| Error::internal("a batch crossed a row group boundary"))?;
        }
        if !out.send(batch).await {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Text in any Arrow string layout, or bytes in any binary layout.
fn same_kind(a: &DataType, b: &DataType) -> bool {
    use DataType::*;
    let text = |t: &DataType| matches!(t, Utf8 | LargeUtf8 | Utf8View);
    let bytes = |t: &DataType| matches!(t, Binary | LargeBinary | BinaryView);
    (text(a) && text(b)) || (bytes(a) && bytes(b))
}

/// Casts the columns marked in `convert` to their type in `expected`.
fn conform(
    batch: RecordBatch,
    convert: &[Option<DataType>],
    expected: &Schema,
) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(convert.len());
    let mut cols = Vec::with_capacity(convert.len());
    for ((f, c), to) in schema.fields().iter().zip(batch.columns()).zip(convert) {
        match to {
            Some(t) => {
                cols.push(arrow::compute::cast(c, t)?);
                let nullable = expected
                    .field_with_name(f.name())
                    .map_or(f.is_nullable(), |e| e.is_nullable());
                fields.push(Field::new(f.name(), t.clone(), nullable || f.is_nullable()));
            }
            None => {
                cols.push(Arc::clone(c));
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}
