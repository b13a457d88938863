//! The neighbors runner: every row's exact nearest rows, streamed in
//! batches of query rows.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, Float32Array, Int64Array, ListArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::runtime::spawn_cpu;
use crate::sink::{ParquetSink, WriteOptions};
use crate::source::{self, CsvOptions};
use crate::store::{self, S3Options, Stores};
use crate::{Error, Result};

use super::vector_file::{batch_vectors, log, read, vector_dim};
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
    pub overwrite: bool,
    pub s3: S3Options,
}

/// Rows scored and written per output batch.
const NEIGHBOR_BATCH: usize = 8192;

/// A file's vectors in memory, with the ids naming its rows.
struct LoadedVectors {
    x: Vec<f32>,
    ids: ArrayRef,
    dim: usize,
    display: String,
}

async fn load_vectors(
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
fn say_without_score(
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
    eprintln!(
        "embedflow: {count} vectors of {file} with NaN or infinite values{zero} {what} ({}{})",
        rows.join(", "),
        if count > first.len() { ", …" } else { "" }
    );
}

/// Exact k nearest neighbors of every row (or of every query row): all
/// vectors in memory (rows × dim × 4 bytes), results streamed to Parquet
/// batch by batch.
#[tracing::instrument(name = "neighbors", skip_all, fields(input = %job.input))]
pub async fn run_neighbors(job: &NeighborsJob, progress: bool) -> Result<(u64, f64)> {
    let started = Instant::now();
    let stores = Stores::new(job.s3.clone());
    let LoadedVectors {
        mut x,
        ids,
        dim,
        display,
    } = load_vectors(
        &stores,
        &job.input,
        &job.vector_column,
        job.id_column.as_deref(),
    )
    .await?;
    let queries = load_queries(job, &stores, dim).await?;
    check_output(job, &stores).await?;
    let n = x.len() / dim;
    let needed = if queries.is_some() { job.k } else { job.k + 1 };
    if n < needed {
        return Err(Error::input(
            &job.input,
            format!("{n} rows: k = {} needs more", job.k),
        ));
    }
    let without = neighbors::prepare(&mut x, dim, job.similarity);
    say_without_score(
        &display,
        without,
        job.similarity,
        "have no neighbours and are no row's neighbour",
    );
    let (query_ids, nq) = match &queries {
        Some(q) => (Arc::clone(&q.ids), q.x.len() / dim),
        None => (Arc::clone(&ids), n),
    };
    log(
        progress,
        match &queries {
            Some(_) => {
                format!("{n} vectors of {dim} dims in memory; scoring {nq} query rows against them")
            }
            None => format!("{n} vectors of {dim} dims in memory; scoring all pairs"),
        },
    );
    let schema = output_schema(job, &query_ids, &ids);
    let mut sink = ParquetSink::create(
        &stores,
        &job.output,
        Arc::clone(&schema),
        &write_options(job),
    )
    .await?;
    let k = job.k;
    // Shared with the scoring tasks, which run off the I/O runtime.
    let x = Arc::new(x);
    let query_x = queries.map(|q| Arc::new(q.x));
    for start in (0..nq).step_by(NEIGHBOR_BATCH) {
        let end = (start + NEIGHBOR_BATCH).min(nq);
        let (x, q) = (Arc::clone(&x), query_x.clone());
        let found = spawn_cpu(move || {
            Ok(match &q {
                Some(q) => neighbors::neighbors(&q[start * dim..end * dim], &x, dim, None, k),
                None => neighbors::neighbors(&x[start * dim..end * dim], &x, dim, Some(start), k),
            })
        })
        .await?;
        let batch = neighbor_batch(&found, &ids, query_ids.slice(start, end - start), &schema)?;
        if let Err(e) = sink.write(&batch).await {
            sink.abort().await;
            return Err(e);
        }
        log(progress, format!("{end} of {nq} rows"));
    }
    sink.commit().await?;
    Ok((nq as u64, started.elapsed().as_secs_f64()))
}

/// The rows to find neighbours for, from `--queries` (their vectors of the
/// same width, prepared as the rows searched), or `None`: every row.
async fn load_queries(
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
async fn check_output(job: &NeighborsJob, stores: &Stores) -> Result<()> {
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
fn output_schema(job: &NeighborsJob, query_ids: &ArrayRef, ids: &ArrayRef) -> SchemaRef {
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

/// The output's lineage: k and the similarity.
fn write_options(job: &NeighborsJob) -> WriteOptions {
    WriteOptions {
        overwrite: job.overwrite,
        metadata: vec![
            ("embedflow.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("embedflow.neighbors.k".into(), job.k.to_string()),
            (
                "embedflow.neighbors.similarity".into(),
                job.similarity.name(),
            ),
        ],
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
