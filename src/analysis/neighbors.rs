//! The neighbors runner: every row's nearest rows (or every query row's),
//! from the table's index when it has one that fits (see
//! [`super::neighbors_index`]), else exact: all pairs scored, streamed in
//! batches of query rows.

use std::sync::Arc;
use std::time::Instant;

use crate::sink::ParquetSink;
use crate::source::{self, CsvOptions};
use crate::store::Stores;
use crate::{Error, Result};

use super::neighbors_index;
use super::neighbors_io::{
    Finder, LoadedVectors, OutputRows, check_output, load_queries, load_vectors, output_schema,
    say_without_score, write_neighbours, write_options,
};
pub use super::neighbors_io::{IndexUse, NeighborsJob};
use super::vector_file::{log, vector_dim};
use crate::cluster::neighbors;

/// Rows scored and written per output batch.
const NEIGHBOR_BATCH: usize = 8192;

/// The k nearest neighbors of every row (or of every query row).
#[tracing::instrument(name = "neighbors", skip_all, fields(input = %job.input))]
pub async fn run_neighbors(job: &NeighborsJob, progress: bool) -> Result<(u64, f64)> {
    let stores = Stores::new(job.s3.clone());
    if job.index != IndexUse::Exact {
        let input = source::open(&stores, &job.input, None, &CsvOptions::default()).await?;
        let dim = vector_dim(&input, &job.vector_column).await?;
        if let Some(chosen) = neighbors_index::choose(job, &stores, &input, dim).await? {
            check_output(job, &stores).await?;
            return neighbors_index::run(job, &stores, &input, chosen, progress).await;
        }
        if job.nprobe.is_some() {
            crate::note!(
                "no index of {} to search: --nprobe has no effect",
                job.input
            );
        }
    }
    run_exact(job, &stores, progress).await
}

/// Every pair scored: all vectors in memory (rows × dim × 4 bytes),
/// results streamed to Parquet batch by batch.
async fn run_exact(job: &NeighborsJob, stores: &Stores, progress: bool) -> Result<(u64, f64)> {
    let started = Instant::now();
    let LoadedVectors {
        mut x,
        ids,
        dim,
        display,
    } = load_vectors(
        stores,
        &job.input,
        &job.vector_column,
        job.id_column.as_deref(),
    )
    .await?;
    let queries = load_queries(job, stores, dim).await?;
    check_output(job, stores).await?;
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
    let sink = ParquetSink::create(
        stores,
        &job.output,
        Arc::clone(&schema),
        &write_options(
            job,
            vec![("embedflow.neighbors.index".into(), "exact".into())],
        ),
    )
    .await?;
    let k = job.k;
    let x = Arc::new(x);
    let find: Finder = match queries {
        Some(q) => Arc::new(move |r| {
            neighbors::neighbors(&q.x[r.start * dim..r.end * dim], &x, dim, None, k)
        }),
        None => Arc::new(move |r| {
            neighbors::neighbors(&x[r.start * dim..r.end * dim], &x, dim, Some(r.start), k)
        }),
    };
    let out = OutputRows {
        ids: &ids,
        query_ids: &query_ids,
        schema: &schema,
    };
    write_neighbours(sink, out, nq, NEIGHBOR_BATCH, progress, find).await?;
    Ok((nq as u64, started.elapsed().as_secs_f64()))
}
