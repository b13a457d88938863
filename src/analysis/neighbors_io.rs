//! What `embedflow neighbors` is asked, what it reads and what it writes:
//! the job, the vectors and ids loaded, the output's rows and lineage.
//! Shared by the exact search and the index's.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Int64Array, ListArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::sink::{ParquetSink, WriteOptions};
use crate::source::{self, CsvOptions, Input};
use crate::store::{self, S3Options, Stores};
use crate::{Error, Result};

use super::vector_file::{batch_vectors, read, vector_dim};
use crate::cluster::neighbors;

/// What `embedflow neighbors` does.
#[derive(Clone, Debug)]
pub struct NeighborsJob {
    pub input: String,
    pub output: String,
    /// Rows to find neighbors for, from another file (same vector column
    /// and width); default: every row of `input`.
    pub queries: Option<String>,
    pub vector_column: String,
    /// Names rows in the output; default: the row number.
    pub id_column: Option<String>,
    pub k: usize,
    pub similarity: neighbors::Similarity,
    /// Which index answers, if any.
    pub index: IndexUse,
    /// Lists an index search probes; default: the index's own (the
    /// smallest measured to reach its target recall).
    pub nprobe: Option<usize>,
    pub overwrite: bool,
    pub s3: S3Options,
}

/// Whether `neighbors` searches an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexUse {
    /// The table's own index when it has one that fits, else exact.
    Auto,
    /// The table's own index, which must fit (`--require-index`).
    Required,
    /// This index (`--index DIR`); an error when it does not fit.
    At(String),
    /// Every pair scored (`--exact`).
    Exact,
}

/// A file's vectors in memory, with the ids naming its rows.
pub(super) struct LoadedVectors {
    pub(super) x: Vec<f32>,
    pub(super) ids: ArrayRef,
    pub(super) dim: usize,
    pub(super) display: String,
}

pub(super) async fn load_vectors(
    stores: &Stores,
    path: &str,
    vector_column: &str,
    id_column: Option<&str>,
) -> Result<LoadedVectors> {
    let input = source::open(stores, path, None, &CsvOptions::default()).await?;
    let display = input.files[0].location.display.clone();
    let dim = vector_dim(&input, vector_column).await?;
    let mut cols = vec![vector_column.to_string()];
    if let Some(id) = id_column {
        if input.schema.field_with_name(id).is_err() {
            return Err(Error::missing_column(&display, id, &input.schema));
        }
        cols.push(id.to_string());
    }
    let mut x: Vec<f32> = Vec::new();
    let mut ids: Vec<ArrayRef> = Vec::new();
    let mut rx = read(&input, &cols);
    while let Some(sb) = rx.recv().await {
        let sb = sb?;
        x.extend(batch_vectors(&sb, 0, dim, vector_column)?);
        if id_column.is_some() {
            ids.push(Arc::clone(sb.batch.column(1)));
        }
    }
    let n = x.len() / dim;
    let ids: ArrayRef = if id_column.is_none() {
        Arc::new(Int64Array::from_iter_values(0..n as i64))
    } else if ids.is_empty() {
        arrow::array::new_empty_array(
            input
                .schema
                .field_with_name(&cols[1])
                .map_err(Error::internal)?
                .data_type(),
        )
    } else {
        let refs: Vec<&dyn Array> = ids.iter().map(|a| a.as_ref()).collect();
        arrow::compute::concat(&refs).map_err(Error::internal)?
    };
    Ok(LoadedVectors {
        x,
        ids,
        dim,
        display,
    })
}

/// Tells on stderr of rows that have no score (see [`neighbors::prepare`]).
pub(super) fn say_without_score(
    file: &str,
    (count, first): (usize, Vec<usize>),
    similarity: neighbors::Similarity,
    what: &str,
) {
    if count == 0 {
        return;
    }
    let rows: Vec<String> = first.iter().map(|i| format!("row {}", i + 1)).collect();
    let zero = match similarity {
        neighbors::Similarity::Cosine => " or zero (no direction)",
        _ => "",
    };
    crate::note!(
        "{count} vectors of {file} with NaN or infinite values{zero} {what} ({}{})",
        rows.join(", "),
        if count > first.len() { ", …" } else { "" }
    );
}

/// The ids naming the `rows` rows of `input` (its `id_column`, else the
/// row numbers), in the table's order.
pub(super) async fn load_ids(
    input: &Input,
    id_column: Option<&str>,
    rows: usize,
) -> Result<ArrayRef> {
    let Some(id) = id_column else {
        return Ok(Arc::new(Int64Array::from_iter_values(0..rows as i64)));
    };
    let display = &input.files[0].location.display;
    let field = input
        .schema
        .field_with_name(id)
        .map_err(|_| Error::missing_column(display, id, &input.schema))?;
    let mut parts: Vec<ArrayRef> = Vec::new();
    let mut rx = read(input, &[id.to_string()]);
    while let Some(sb) = rx.recv().await {
        parts.push(Arc::clone(sb?.batch.column(0)));
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    let ids = match refs.is_empty() {
        true => arrow::array::new_empty_array(field.data_type()),
        false => arrow::compute::concat(&refs).map_err(Error::internal)?,
    };
    if ids.len() != rows {
        return Err(Error::input(
            display,
            format!("{} rows now, {rows} when its index was built", ids.len()),
        ));
    }
    Ok(ids)
}

/// The rows to find neighbours for, from `--queries` (their vectors of the
/// same width, prepared as the rows searched), or `None`: every row.
pub(super) async fn load_queries(
    job: &NeighborsJob,
    stores: &Stores,
    dim: usize,
) -> Result<Option<LoadedVectors>> {
    Ok(match &job.queries {
        None => None,
        Some(q) => {
            let mut loaded =
                load_vectors(stores, q, &job.vector_column, job.id_column.as_deref()).await?;
            if loaded.dim != dim {
                return Err(Error::input(
                    &loaded.display,
                    format!(
                        "column '{}' has {} dimensions; the rows searched ({}) have {dim}",
                        job.vector_column, loaded.dim, job.input
                    ),
                ));
            }
            let without = neighbors::prepare(&mut loaded.x, dim, job.similarity);
            say_without_score(
                &loaded.display,
                without,
                job.similarity,
                "have no neighbours",
            );
            Some(loaded)
        }
    })
}

/// The output can be written, and is none of the inputs, however spelled.
pub(super) async fn check_output(job: &NeighborsJob, stores: &Stores) -> Result<()> {
    ParquetSink::check_target(stores, &job.output, job.overwrite).await?;
    let inputs: Vec<&str> = [Some(&job.input), job.queries.as_ref()]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let clash = store::output_clash_any(stores, &job.output, &inputs).await;
    if let Some(why) = clash {
        let p = format!("OUTPUT: {} {why}", job.output);
        return Err(Error::Job {
            origin: "command line".into(),
            problems: vec![p],
        });
    }
    Ok(())
}

/// The id of each query row, its neighbours' ids and their scores.
pub(super) fn output_schema(job: &NeighborsJob, query_ids: &ArrayRef, ids: &ArrayRef) -> SchemaRef {
    let id_name = job.id_column.clone().unwrap_or_else(|| "row".into());
    let id_field = Field::new(&id_name, query_ids.data_type().clone(), true);
    Arc::new(Schema::new(vec![
        id_field.clone(),
        Field::new(
            "neighbor_ids",
            DataType::List(Arc::new(Field::new_list_field(
                ids.data_type().clone(),
                true,
            ))),
            false,
        ),
        Field::new(
            "scores",
            DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
            false,
        ),
    ]))
}

/// The output's lineage: k and the similarity, and `extra` (the index).
pub(super) fn write_options(job: &NeighborsJob, extra: Vec<(String, String)>) -> WriteOptions {
    let mut metadata = vec![
        ("embedflow.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("embedflow.neighbors.k".into(), job.k.to_string()),
        (
            "embedflow.neighbors.similarity".into(),
            job.similarity.name(),
        ),
    ];
    metadata.extend(extra);
    WriteOptions {
        overwrite: job.overwrite,
        metadata,
        ..WriteOptions::default()
    }
}

/// One output batch: each query row's neighbours (db rows, as ids) and
/// scores, as lists.
fn neighbor_batch(
    found: &[Vec<(u32, f32)>],
    ids: &ArrayRef,
    query_ids: ArrayRef,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut offsets = vec![0i32];
    let mut take: Vec<u32> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    for row in found {
        for &(r, s) in row {
            take.push(r);
            scores.push(s);
        }
        offsets.push(take.len() as i32);
    }
    let neighbor_ids = arrow::compute::take(ids, &arrow::array::UInt32Array::from(take), None)
        .map_err(Error::internal)?;
    let offs = arrow::buffer::OffsetBuffer::new(offsets.into());
    let cols: Vec<ArrayRef> = vec![
        query_ids,
        Arc::new(
            ListArray::try_new(
                Arc::new(Field::new_list_field(ids.data_type().clone(), true)),
                offs.clone(),
                neighbor_ids,
                None,
            )
            .map_err(Error::internal)?,
        ),
        Arc::new(
            ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Float32, true)),
                offs,
                Arc::new(Float32Array::from(scores)),
                None,
            )
            .map_err(Error::internal)?,
        ),
    ];
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(Error::internal)
}

/// What a neighbors run finds for a range of query rows: each one's
/// (row, score) pairs, best first.
pub(super) type Finder = Arc<dyn Fn(std::ops::Range<usize>) -> Vec<Vec<(u32, f32)>> + Send + Sync>;

/// The ids naming the rows searched and the query rows, and the output's
/// schema.
pub(super) struct OutputRows<'a> {
    pub(super) ids: &'a ArrayRef,
    pub(super) query_ids: &'a ArrayRef,
    pub(super) schema: &'a SchemaRef,
}

/// Finds the neighbours of query rows `0..nq`, `batch` rows at a time on
/// the CPU pool, and writes them; commits once all are written (nothing
/// on failure).
pub(super) async fn write_neighbours(
    mut sink: ParquetSink,
    rows: OutputRows<'_>,
    nq: usize,
    batch: usize,
    progress: bool,
    find: Finder,
) -> Result<()> {
    for start in (0..nq).step_by(batch) {
        let end = (start + batch).min(nq);
        let f = Arc::clone(&find);
        let found = crate::runtime::spawn_cpu(move || Ok(f(start..end))).await?;
        let query_ids = rows.query_ids.slice(start, end - start);
        let b = neighbor_batch(&found, rows.ids, query_ids, rows.schema)?;
        if let Err(e) = sink.write(&b).await {
            sink.abort().await;
            return Err(e);
        }
        super::vector_file::log(progress, format!("{end} of {nq} rows"));
    }
    sink.commit().await.map(|_| ())
}
