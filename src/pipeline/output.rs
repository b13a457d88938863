//! Output rows from embedded units, and the lineage every output records.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow::compute::take_record_batch;

use crate::embed::{self, Device};
use crate::sink::{self, ParquetSink};
use crate::{Error, Result};

use super::check::CheckedJob;
use super::unit::WorkUnit;

/// Key-value metadata recorded in every output: where the vectors came from.
pub(super) fn lineage(
    c: &CheckedJob,
    digest: &embed::digest::ModelDigest,
    dim: usize,
    provider: &str,
    device: Device,
    server_model: Option<&str>,
) -> Vec<(String, String)> {
    let m = &c.model;
    let p = &c.plan;
    let mut kv = vec![
        ("embedflow.version", env!("CARGO_PKG_VERSION").to_string()),
        ("embedflow.model", m.name.clone()),
        // The folder's digest (every file that decides the vectors), and
        // each file's.
        ("embedflow.model_sha256", digest.folder.clone()),
        ("embedflow.model_files", digest.files_json()),
        ("embedflow.dim", dim.to_string()),
        (
            "embedflow.pooling",
            match m.family {
                // CLIP pools (and projects) inside its graphs.
                embed::model::Family::Clip => "graph".to_string(),
                _ => m.pooling.name().to_string(),
            },
        ),
        ("embedflow.normalize", m.normalize.to_string()),
        (
            "embedflow.max_seq_length",
            match m.static_embedding {
                // A static model truncates nothing.
                true => "none".to_string(),
                false => m.max_seq_length.to_string(),
            },
        ),
        ("embedflow.prompt", m.prompt.clone().unwrap_or_default()),
        (
            if p.input.image_column.is_some() {
                "embedflow.image_column"
            } else {
                "embedflow.text"
            },
            p.input.text_source.clone(),
        ),
        (
            "embedflow.chunking",
            if p.chunking.enabled { "tokens" } else { "none" }.to_string(),
        ),
        ("embedflow.vector_column", p.output.vector_column.clone()),
        ("embedflow.execution_provider", provider.to_string()),
        ("embedflow.device", device.to_string()),
        (
            "embedflow.onnxruntime",
            embed::session::ORT_VERSION.to_string(),
        ),
    ];
    if p.chunking.enabled {
        kv.push(("embedflow.chunk_max_tokens", c.max_tokens.to_string()));
        kv.push(("embedflow.chunk_overlap", c.overlap.to_string()));
    }
    if let Some(f) = &p.input.filter {
        kv.push(("embedflow.filter", f.clone()));
    }
    if let Some(api) = &m.api {
        // A remote model: what was asked of whom (never the key), and what
        // the server said it ran; no graph, no pooling of ours.
        kv.retain(|(k, _)| !matches!(*k, "embedflow.onnxruntime" | "embedflow.pooling"));
        kv.extend(api.lineage(server_model));
    }
    // A reduced-precision folder (scripts/quantize-model) says how it was
    // made and what its quality gate measured: the vectors carry that.
    if m.api.is_none()
        && let Some(q) = std::fs::read_to_string(m.dir.join("quantization.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    {
        kv.push(("embedflow.model_quantization", q.to_string()));
    }
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A hidden name beside `path` for an intermediate file.
pub(super) fn hidden_sibling(path: &str, what: &str) -> String {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    format!("{dir}.{name}.{what}-{}.parquet", std::process::id())
}

/// The shapes of the output rows, built from units.
pub(super) struct Rows {
    pub(super) schema: arrow::datatypes::SchemaRef,
    pub(super) docs_schema: arrow::datatypes::SchemaRef,
    pub(super) dim: usize,
    pub(super) vector_column: String,
    /// Indices, among a unit's batch columns (the documents' passthrough),
    /// of the columns each chunk row carries.
    pub(super) chunk_columns: Vec<usize>,
}

/// The most bytes one written batch of chunk rows holds: a long document's
/// chunks are written in slices of this size, so that a passthrough column
/// repeated per chunk never overflows Arrow's 32-bit offsets nor memory.
const SLICE_BYTES: usize = 64 << 20;

/// Builds and writes the output rows of one unit, in slices of at most
/// [`SLICE_BYTES`]. Returns (chunk rows, document rows).
pub(super) async fn write_unit(
    u: WorkUnit,
    rows: &Rows,
    out: &mut ParquetSink,
    docs: Option<&mut ParquetSink>,
) -> Result<(u64, u64)> {
    let n = u.chunk_row.len();
    if n == 0 {
        return Ok((0, 0));
    }
    let dim = rows.dim;
    let mut doc_rows = 0u64;
    if let Some(docs) = docs {
        let batch = documents_batch(&u, &rows.docs_schema, dim)?;
        doc_rows = batch.num_rows() as u64;
        docs.write(&batch).await?;
    }
    let pass = u
        .batch
        .project(&rows.chunk_columns)
        .map_err(Error::internal)?;
    let pass_bytes = row_bytes(&pass);
    let chunked = rows.schema.column_with_name(sink::CHUNK_INDEX).is_some();
    let with_text = rows.schema.column_with_name(sink::CHUNK_TEXT).is_some();
    let hashed = rows.schema.column_with_name(sink::CONTENT_HASH).is_some();
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut bytes = 0usize;
        while end < n {
            let b = pass_bytes[u.chunk_row[end] as usize]
                + u.chunk_text.get(end).map_or(0, String::len)
                + dim * 4;
            if end > start && bytes + b > SLICE_BYTES {
                break;
            }
            bytes += b;
            end += 1;
        }
        let take = UInt32Array::from(u.chunk_row[start..end].to_vec());
        let mut cols: Vec<ArrayRef> = take_record_batch(&pass, &take)
            .map_err(Error::internal)?
            .columns()
            .to_vec();
        if chunked {
            cols.push(Arc::new(Int32Array::from(
                u.chunk_index[start..end].to_vec(),
            )));
            cols.push(Arc::new(Int64Array::from(
                u.chunk_start[start..end].to_vec(),
            )));
            cols.push(Arc::new(Int64Array::from(u.chunk_end[start..end].to_vec())));
            if with_text {
                cols.push(Arc::new(StringArray::from_iter_values(
                    &u.chunk_text[start..end],
                )));
            }
        }
        cols.push(sink::vector_column(
            &rows.schema,
            &rows.vector_column,
            u.vectors[start * dim..end * dim].to_vec(),
            dim,
        )?);
        if hashed {
            cols.push(Arc::new(BinaryArray::from_iter_values(
                u.chunk_row[start..end]
                    .iter()
                    .map(|&r| u.row_hash[r as usize].as_slice()),
            )));
        }
        let batch =
            RecordBatch::try_new(Arc::clone(&rows.schema), cols).map_err(Error::internal)?;
        out.write(&batch).await?;
        start = end;
    }
    Ok((n as u64, doc_rows))
}

/// About how many bytes each row of `batch` holds: exact for strings and
/// binaries, the column's average otherwise.
fn row_bytes(batch: &RecordBatch) -> Vec<usize> {
    use arrow::array::AsArray;
    use arrow::datatypes::DataType;
    let n = batch.num_rows();
    let mut out = vec![0usize; n];
    for col in batch.columns() {
        let sizes: Box<dyn Fn(usize) -> usize> = match col.data_type() {
            DataType::Utf8 => {
                let a = col.as_string::<i32>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::LargeUtf8 => {
                let a = col.as_string::<i64>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::Binary => {
                let a = col.as_binary::<i32>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            DataType::LargeBinary => {
                let a = col.as_binary::<i64>();
                Box::new(move |i| a.value_length(i) as usize)
            }
            _ => {
                let avg = col.get_array_memory_size() / n.max(1);
                Box::new(move |_| avg)
            }
        };
        for (i, o) in out.iter_mut().enumerate() {
            *o += sizes(i);
        }
    }
    out
}

/// One row per document of the unit that has chunks: its passthrough
/// columns, its chunk count and the normalised mean of its chunk vectors.
fn documents_batch(
    u: &WorkUnit,
    schema: &arrow::datatypes::SchemaRef,
    dim: usize,
) -> Result<RecordBatch> {
    let kept: Vec<u32> = (0..u.row_chunks.len() as u32)
        .filter(|&r| u.row_chunks[r as usize] > 0)
        .collect();
    let counts: Vec<i32> = kept
        .iter()
        .map(|&r| u.row_chunks[r as usize] as i32)
        .collect();
    let mut means = vec![0f32; kept.len() * dim];
    // Chunks are stored row by row, so each document's chunks are contiguous.
    let mut chunk = 0usize;
    for (m, &nc) in means.chunks_exact_mut(dim).zip(&counts) {
        crate::vectors::mean_rows(&u.vectors, dim, chunk, nc as usize, m);
        chunk += nc as usize;
    }
    crate::vectors::normalize_rows(&mut means, dim);
    let rows = take_record_batch(&u.batch, &UInt32Array::from(kept)).map_err(Error::internal)?;
    let mut cols: Vec<ArrayRef> = rows.columns().to_vec();
    cols.push(Arc::new(Int32Array::from(counts)));
    cols.push(sink::vector_array(means, dim)?);
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(Error::internal)
}
