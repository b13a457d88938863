//! `embedflow index` and a job's `[index]`: the ANN index of a table's
//! vector column (see [`crate::index`]), put with its table, and kept up
//! to date: built, updated from the index of an older version, or left
//! alone when it is current.

use std::time::Instant;

use crate::index::{self, BuildOptions, IndexMeta, Refreshed};
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
    pub how: Refreshed,
    pub seconds: f64,
}

impl std::fmt::Display for IndexSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.meta;
        match &self.how {
            Refreshed::Current => {
                return write!(
                    f,
                    "the index of {} at {} is current ({})",
                    m.source.path,
                    self.dir,
                    m.source.version_name()
                );
            }
            Refreshed::Updated { from_dir } => {
                writeln!(f, "updated the index of {} at {}", m.source.path, self.dir)?;
                if let Some(u) = &m.update {
                    writeln!(
                        f,
                        "  from             {from_dir} ({}): {} entries kept, {} added, {} dropped",
                        u.from, u.kept, u.added, u.dropped
                    )?;
                    writeln!(
                        f,
                        "  since its build  {} entries added or dropped ({:.1} % of {})",
                        u.changed_since_build,
                        100.0 * u.changed_since_build as f64 / m.entries.max(1) as f64,
                        m.entries
                    )?;
                }
            }
            Refreshed::Built { because } => {
                writeln!(f, "wrote the index of {} to {}", m.source.path, self.dir)?;
                if let Some(why) = because {
                    writeln!(f, "  built again      {why}")?;
                }
            }
        }
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

impl IndexSummary {
    /// The summary as a JSON object (a job's `--summary json` carries it
    /// as `index`).
    pub fn to_json(&self) -> serde_json::Value {
        let m = &self.meta;
        let (how, because) = match &self.how {
            Refreshed::Current => ("current", None),
            Refreshed::Updated { .. } => ("updated", None),
            Refreshed::Built { because } => ("built", because.clone()),
        };
        serde_json::json!({
            "dir": self.dir,
            "how": how,
            "rebuilt_because": because,
            "rows": m.rows,
            "entries": m.entries,
            "lists": m.lists,
            "nprobe": m.nprobe,
            "query_nprobe": m.query_nprobe,
            "expected_recall": m.expected_recall(m.nprobe),
            "update": m.update,
            "seconds": self.seconds,
        })
    }
}

/// Makes the index of `job.table`'s vector column current.
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
    let (meta, how) = index::refresh(&stores, &table, &dir, &job.build).await?;
    Ok(IndexSummary {
        dir,
        meta,
        how,
        seconds: started.elapsed().as_secs_f64(),
    })
}
