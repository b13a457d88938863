//! `embedflow index`: the ANN index of a table's vector column (see
//! [`crate::index`]), built and put with its table.

use std::time::Instant;

use crate::index::{self, BuildOptions, IndexMeta};
use crate::source::{self, CsvOptions};
use crate::store::{self, S3Options, Stores};
use crate::{Error, Result};

use super::vector_file::{log, vector_dim};

/// What `embedflow index` does.
#[derive(Clone, Debug)]
pub struct IndexJob {
    /// A Parquet file, folder or glob, or a Delta table; local or s3://.
    pub table: String,
    /// Where the index goes; default: with the table ([`index::default_dir`]).
    pub output: Option<String>,
    pub vector_column: String,
    pub build: BuildOptions,
    pub s3: S3Options,
}

/// What was built, printed at the end.
pub struct IndexSummary {
    pub dir: String,
    pub meta: IndexMeta,
    pub seconds: f64,
}

impl std::fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.meta;
        writeln!(f, "wrote the index of {} to {}", m.source.path, self.dir)?;
        writeln!(f, "  rows             {} ({} indexed)", m.rows, m.entries)?;
        writeln!(
            f,
            "  lists            {} ({}, {})",
            m.lists, m.kind, m.metric
        )?;
        let reached = m.expected_recall(m.nprobe).unwrap_or(0.0);
        writeln!(
            f,
            "  nprobe           {} (recall@10 {reached:.3} on {} rows of the table; target {})",
            m.nprobe, m.recall_queries, m.target_recall
        )?;
        let for_queries = m.expected_recall(m.query_nprobe).unwrap_or(0.0);
        writeln!(
            f,
            "  query nprobe     {} for rows from outside the table (recall@10 {for_queries:.3} on the table's rows; target {:.3})",
            m.query_nprobe,
            index::query_target(m.target_recall)
        )?;
        let curve: Vec<String> = m
            .recall_curve
            .iter()
            .map(|p| format!("{}: {:.3}", p.nprobe, p.recall))
            .collect();
        writeln!(f, "  recall by nprobe {}", curve.join(", "))?;
        write!(f, "  seconds          {:.2}", self.seconds)
    }
}

/// Builds the index of `job.table`'s vector column.
#[tracing::instrument(name = "index", skip_all, fields(table = %job.table))]
pub async fn run_index(job: &IndexJob) -> Result<IndexSummary> {
    let started = Instant::now();
    let stores = Stores::new(job.s3.clone());
    let input = source::open(&stores, &job.table, None, &CsvOptions::default()).await?;
    let dim = vector_dim(&input, &job.vector_column).await?;
    let dir = match &job.output {
        Some(d) => {
            if let Some(why) = store::output_clash_any(&stores, d, &[&job.table]).await {
                return Err(Error::Usage(format!("--output {d} {why}")));
            }
            d.clone()
        }
        None => index::default_dir(&job.table, &input)?,
    };
    log(
        job.build.progress,
        format!(
            "indexing column '{}' of {} into {dir}",
            job.vector_column, job.table
        ),
    );
    let table = index::Table {
        path: &job.table,
        input: &input,
        column: &job.vector_column,
        dim,
    };
    let meta = index::build(&stores, &table, &dir, &job.build).await?;
    Ok(IndexSummary {
        dir,
        meta,
        seconds: started.elapsed().as_secs_f64(),
    })
}
