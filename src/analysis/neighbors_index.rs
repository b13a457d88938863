//! `neighbors` from an index (see [`crate::index`]): each row's, or each
//! query row's, neighbours among the rows of the lists it probes.

use std::sync::Arc;
use std::time::Instant;

use crate::index::{self, Ivf};
use crate::sink::ParquetSink;
use crate::source::Input;
use crate::store::Stores;
use crate::{Error, Result};

use super::neighbors_io::{
    Finder, IndexUse, NeighborsJob, OutputRows, load_ids, load_queries, output_schema,
    write_neighbours, write_options,
};
use super::vector_file::log;

/// Query rows searched and written per output batch.
const BATCH: usize = 65_536;

/// An index a run searches, and where it was found.
pub(super) struct Chosen {
    pub(super) ivf: Ivf,
    pub(super) dir: String,
    pub(super) nprobe: usize,
}

/// The index `job` searches: `--index DIR`, else the one kept with the
/// table when there is one and it fits; none with `--exact`. An index
/// that does not fit (another table, version or file; another metric,
/// column or width) is an error when named, and said and passed over
/// (the exact search runs) when found.
pub(super) async fn choose(
    job: &NeighborsJob,
    stores: &Stores,
    input: &Input,
    dim: usize,
) -> Result<Option<Chosen>> {
    let (dir, named) = match &job.index {
        IndexUse::Exact => return Ok(None),
        IndexUse::At(d) => (d.clone(), true),
        IndexUse::Auto | IndexUse::Required => match index::default_dir(&job.input, input) {
            Ok(d) => (d, job.index == IndexUse::Required),
            Err(_) if job.index == IndexUse::Auto => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    let meta = match index::read_meta(stores, &dir).await {
        Ok(Some(m)) => m,
        Ok(None) => {
            let stale = match &input.table {
                Some(t) => index::stale_note(stores, &job.input, t.version, input.total_rows).await,
                None => None,
            };
            if named {
                let why = stale.unwrap_or_else(|| "build one with `embedflow index`".into());
                return Err(Error::input(
                    &dir,
                    format!("no index here (no index.json): {why}"),
                ));
            }
            if let Some(why) = stale {
                crate::note!("{why}; searching exactly");
            }
            return Ok(None);
        }
        Err(e) if named => return Err(e),
        Err(e) => {
            crate::note!("the index with the table is not used: {e}; searching exactly");
            return Ok(None);
        }
    };
    if let Some(why) = misfit(&meta, job, input, dim) {
        if named {
            return Err(Error::input(
                &dir,
                format!("this index does not fit: {why}"),
            ));
        }
        crate::note!(
            "the index at {dir} is not used: {why}; searching exactly (rebuild it with `embedflow index {}`)",
            job.input
        );
        return Ok(None);
    }
    // Rows from outside the table are found less often than its own.
    let default = match job.queries {
        Some(_) => meta.query_nprobe,
        None => meta.nprobe,
    };
    let nprobe = job.nprobe.unwrap_or(default).clamp(1, meta.lists);
    let ivf = index::load(stores, &dir, meta).await?;
    Ok(Some(Chosen { ivf, dir, nprobe }))
}

/// Why an index of `meta` cannot answer `job` over `input` (`None`: it
/// can).
fn misfit(
    meta: &index::IndexMeta,
    job: &NeighborsJob,
    input: &Input,
    dim: usize,
) -> Option<String> {
    if meta.similarity() != Some(job.similarity) {
        return Some(format!(
            "it ranks by {}, this run by {}",
            meta.metric,
            job.similarity.name()
        ));
    }
    if meta.vector_column != job.vector_column {
        return Some(format!(
            "it indexes column '{}', this run searches '{}'",
            meta.vector_column, job.vector_column
        ));
    }
    if meta.dim != dim {
        return Some(format!(
            "its vectors have {} values, the table's {dim}",
            meta.dim
        ));
    }
    meta.source.differs(&index::SourceId::of(&job.input, input))
}

/// The neighbours of every row (or query row) from the index, streamed to
/// Parquet batch by batch.
pub(super) async fn run(
    job: &NeighborsJob,
    stores: &Stores,
    input: &Input,
    chosen: Chosen,
    progress: bool,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let Chosen { ivf, dir, nprobe } = chosen;
    let rows = ivf.meta.rows as usize;
    let ids = load_ids(input, job.id_column.as_deref(), rows).await?;
    let queries = load_queries(job, stores, ivf.dim()).await?;
    let nq = queries.as_ref().map_or(rows, |q| q.x.len() / ivf.dim());
    let recall = ivf.meta.expected_recall(nprobe);
    log(
        progress,
        format!(
            "searching the index at {dir}: {} lists, nprobe {nprobe} (recall@10 {} measured at build), {nq} query rows",
            ivf.lists(),
            recall.map_or("not".into(), |r| format!("{r:.3}"))
        ),
    );
    let query_ids = queries
        .as_ref()
        .map_or(Arc::clone(&ids), |q| Arc::clone(&q.ids));
    let schema = output_schema(job, &query_ids, &ids);
    let extra = vec![
        ("embedflow.neighbors.index".to_string(), dir.clone()),
        ("embedflow.neighbors.nprobe".to_string(), nprobe.to_string()),
        (
            "embedflow.neighbors.expected_recall".to_string(),
            recall.map_or(String::new(), |r| format!("{r:.4}")),
        ),
    ];
    let sink = ParquetSink::create(
        stores,
        &job.output,
        Arc::clone(&schema),
        &write_options(job, extra),
    )
    .await?;
    let k = job.k;
    let find: Finder = match queries {
        Some(q) => {
            let ivf = Arc::new(ivf);
            Arc::new(move |r| {
                let d = ivf.dim();
                ivf.search(&q.x[r.start * d..r.end * d], None, k, nprobe)
            })
        }
        None => every_row(ivf, k, nprobe, progress).await?,
    };
    let out = OutputRows {
        ids: &ids,
        query_ids: &query_ids,
        schema: &schema,
    };
    write_neighbours(sink, out, nq, BATCH, progress, find).await?;
    Ok((nq as u64, started.elapsed().as_secs_f64()))
}

/// Searches every indexed row (see [`Ivf::search_entries`]) before any is
/// written, keeping `k` neighbours a table row (8 bytes each; a row not
/// in the index, without a score, has none), and hands them out in the
/// table's order.
async fn every_row(ivf: Ivf, k: usize, nprobe: usize, progress: bool) -> Result<Finder> {
    let found = crate::runtime::spawn_cpu_stoppable(move || {
        let (rows, entries) = (ivf.meta.rows as usize, ivf.entries());
        let mut found = vec![(u32::MAX, f32::NAN); rows * k];
        let started = Instant::now();
        ivf.search_entries(k, nprobe, &mut found, |done| {
            let secs = started.elapsed().as_secs_f64();
            log(
                progress,
                format!("searched {done} of {entries} rows ({secs:.1} s)"),
            );
        })?;
        Ok(found)
    })
    .await?;
    Ok(Arc::new(move |r| {
        found[r.start * k..r.end * k]
            .chunks_exact(k)
            .map(|slots| {
                slots
                    .iter()
                    .take_while(|s| s.0 != u32::MAX)
                    .copied()
                    .collect()
            })
            .collect()
    }))
}
