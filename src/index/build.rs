//! Building an IVF index from a table, streamed three times:
//!
//! 1. **sample**: a seeded reservoir of rows to train the centroids on
//!    (64 a list) and to measure recall with;
//! 2. **assign**: each row's list (four bytes a row kept), and the exact
//!    neighbours of the recall sample, batch by batch;
//! 3. **place**: each row's vector written at its place in its list.
//!
//! Then the recall curve is measured ([`super::tune`]) and the folder is
//! published ([`super::files::publish`]), `index.json` last.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::analysis::vector_file::{batch_vectors, log, read};
use crate::cluster::kmeans::{self, Rng};
use crate::cluster::neighbors::{self, TopK};
use crate::runtime::spawn_cpu;
use crate::source::Input;
use crate::store::Stores;
use crate::{Error, Result};

use super::files::{self, CODES, KEYS, META, ROWS, VECTORS};
use super::keys;
use super::space::{Metric, Space};
use super::sq::Sq;
use super::tune::Queries;
use super::{FORMAT, IndexMeta, RECALL_K, SourceId};

/// A row that is in no list (no score: NaN, or a zero vector for cosine).
pub(super) const NO_LIST: u32 = u32::MAX;
/// The default [`BuildOptions::rebuild_after`].
pub const DEFAULT_REBUILD_AFTER: f64 = 0.2;
/// Training rows per list.
const TRAIN_PER_LIST: usize = 64;

/// How to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Lists (centroids); default ≈ √rows.
    pub lists: Option<usize>,
    pub metric: Metric,
    /// The recall@10 the default `nprobe` must reach on the sample.
    pub target_recall: f64,
    /// Rows of the table recall is measured on.
    pub recall_queries: usize,
    pub seed: u64,
    pub progress: bool,
    /// Build again rather than update an older index.
    pub rebuild: bool,
    /// Entries added and dropped by updates since the build, as a
    /// fraction of the entries, past which a refresh builds again (the
    /// centroids were trained on the table as it was).
    pub rebuild_after: f64,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            lists: None,
            metric: Metric::Cosine,
            target_recall: 0.95,
            recall_queries: 1000,
            seed: 0,
            progress: false,
            rebuild: false,
            rebuild_after: DEFAULT_REBUILD_AFTER,
        }
    }
}

/// What is being indexed.
pub struct Table<'a> {
    /// As the command named it.
    pub path: &'a str,
    pub input: &'a Input,
    pub column: &'a str,
    pub dim: usize,
}

/// Builds the index of `t` and puts it at `dir`.
pub async fn build(
    stores: &Stores,
    t: &Table<'_>,
    dir: &str,
    opts: &BuildOptions,
) -> Result<IndexMeta> {
    let started = Instant::now();
    let space = Space::new(opts.metric, t.dim);
    let (dim, w) = (t.dim, space.width());
    let expected = t.input.total_rows.unwrap_or(1_000_000);
    let lists = opts.lists.unwrap_or(default_lists(expected));
    let sample = sample_pass(t, space, opts.seed, lists * TRAIN_PER_LIST).await?;
    sample.check(t)?;
    let lists = opts
        .lists
        .unwrap_or(default_lists(sample.rows))
        .min(sample.len());
    log(
        opts.progress,
        format!(
            "{:.1} s: {} rows of {dim} dims; training {lists} lists on {} of them",
            started.elapsed().as_secs_f64(),
            sample.rows,
            sample.len()
        ),
    );
    let at = |what: &str| format!("{:.1} s: {what}", started.elapsed().as_secs_f64());
    let centroids = train(&sample, space, lists, opts.seed).await?;
    log(opts.progress, at("trained; assigning rows to their lists"));
    let queries = Arc::new(sample.queries(opts.recall_queries, opts.seed, space));
    let assigned = assign_pass(t, space, &centroids, &queries).await?;
    log(opts.progress, at("assigned; placing rows in their lists"));
    let built = staging_dir(stores, dir)?;
    let offsets = offsets_of(&assigned.counts);
    let sq = Sq::train(&sample.x, w);
    let placing = Placing {
        labels: &assigned.labels,
        offsets: &offsets,
        sq: &sq,
        built: built.path(),
    };
    let (keyed, rows) = place_pass(t, space, placing).await?;
    log(opts.progress, at("placed; measuring recall"));
    files::write_head(built.path(), &centroids, &sq, &offsets)
        .map_err(|e| Error::output(dir, e))?;
    let lists_built = super::tune::Built {
        dir: built.path(),
        centroids: &centroids,
        offsets: &offsets,
        rows: &rows,
        dim: w,
    };
    let curve = super::tune::curve(&lists_built, &queries, &assigned.exact, opts.target_recall)
        .map_err(|e| Error::output(dir, e))?;
    let meta = IndexMeta {
        lists,
        rows: sample.rows,
        entries: rows.len() as u64,
        nprobe: super::tune::smallest_reaching(&curve, opts.target_recall, lists),
        query_nprobe: super::tune::smallest_reaching(
            &curve,
            super::query_target(opts.target_recall),
            lists,
        ),
        recall_curve: curve,
        recall_queries: queries.rows.len(),
        build_seconds: started.elapsed().as_secs_f64(),
        keys: keyed,
        unit_norm: sample.unit_norm,
        table_fingerprint: keys::table_fingerprint(stores, t.input).await,
        ..described(t, opts)
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(Error::internal)?;
    std::fs::write(built.path().join(META), json).map_err(|e| Error::output(dir, e))?;
    files::publish(stores, built.path(), dir).await?;
    Ok(meta)
}

/// What an index of `t` built with `opts` is, before anything is
/// measured.
fn described(t: &Table<'_>, opts: &BuildOptions) -> IndexMeta {
    IndexMeta {
        format: FORMAT,
        kind: "ivf_flat".into(),
        metric: opts.metric.name(),
        dim: t.dim,
        lists: 0,
        vector_column: t.column.to_string(),
        rows: 0,
        entries: 0,
        nprobe: 1,
        query_nprobe: 1,
        target_recall: opts.target_recall,
        recall_curve: Vec::new(),
        recall_queries: 0,
        source: SourceId::of(t.path, t.input),
        seed: opts.seed,
        embedflow: env!("CARGO_PKG_VERSION").into(),
        build_seconds: 0.0,
        keys: false,
        codes: true,
        unit_norm: false,
        table_fingerprint: None,
        update: None,
    }
}

/// Lists for `rows` rows: √rows, at least 1.
pub fn default_lists(rows: u64) -> usize {
    ((rows as f64).sqrt().round() as usize).max(1)
}

/// A seeded reservoir of rows with a score, and the rows counted.
struct Sample {
    x: Vec<f32>,
    at: Vec<u32>,
    rows: u64,
    scored: u64,
    dim: usize,
    /// Every row with a score has unit length (see [`unit_length`]).
    unit_norm: bool,
}

impl Sample {
    fn len(&self) -> usize {
        self.at.len()
    }

    /// Refuses a table an index cannot hold.
    fn check(&self, t: &Table<'_>) -> Result<()> {
        if self.rows > u64::from(u32::MAX - 1) {
            return Err(Error::input(
                t.path,
                format!(
                    "{} rows: an index holds at most {}",
                    self.rows,
                    u32::MAX - 1
                ),
            ));
        }
        if self.scored == 0 {
            return Err(Error::input(
                t.path,
                format!("column '{}': no vector with a score to index", t.column),
            ));
        }
        Ok(())
    }

    /// Up to `n` rows of the sample, drawn at random, for measuring
    /// recall, as queries.
    fn queries(&self, n: usize, seed: u64, space: Space) -> Queries {
        let dim = space.width();
        let mut idx: Vec<usize> = (0..self.len()).collect();
        let mut rng = Rng::new(seed ^ 0x51);
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i as u64 + 1) as usize);
        }
        idx.truncate(n);
        idx.sort_unstable();
        let mut x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.x[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        space.stored_as_queries(&mut x);
        Queries {
            x,
            rows: idx.iter().map(|&i| self.at[i]).collect(),
        }
    }
}

/// Pass 1: the rows counted, and a reservoir of `cap` of them (as
/// stored).
async fn sample_pass(t: &Table<'_>, space: Space, seed: u64, cap: usize) -> Result<Sample> {
    let dim = space.width();
    let mut s = Sample {
        x: Vec::new(),
        at: Vec::new(),
        rows: 0,
        scored: 0,
        dim,
        unit_norm: true,
    };
    let mut rng = Rng::new(seed);
    let mut rx = read(t.input, &[t.column.to_string()]);
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        let v = batch_vectors(&sb?, 0, t.dim, t.column)?;
        s.unit_norm &= unit_length(&v, t.dim);
        let v = space.stored(v);
        for row in v.chunks_exact(dim) {
            let at = s.rows as u32;
            s.rows += 1;
            if row[0].is_nan() {
                continue;
            }
            s.scored += 1;
            if s.at.len() < cap {
                s.x.extend_from_slice(row);
                s.at.push(at);
            } else {
                let j = rng.below(s.scored) as usize;
                if j < cap {
                    s.x[j * dim..(j + 1) * dim].copy_from_slice(row);
                    s.at[j] = at;
                }
            }
        }
    }
    debug_assert_eq!(s.dim, dim);
    Ok(s)
}

/// Whether every row of `x` with a score is of unit length (to 1e-4 in
/// its square): then `l2_distance` ranks as the dot product does, and an
/// index answers it.
pub(super) fn unit_length(x: &[f32], dim: usize) -> bool {
    x.chunks_exact(dim)
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .all(|r| (r.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() <= 1e-4)
}

/// The centroids, as stored: k-means on the sample's rows as the table
/// has them (spherical for cosine, unit rows then).
async fn train(sample: &Sample, space: Space, lists: usize, seed: u64) -> Result<Vec<f32>> {
    let cfg = kmeans::Config {
        k: lists,
        max_iter: 20,
        tol: 1e-4,
        seed,
        metric: space.kmeans(),
        mini_batch: None,
    };
    let x = space.unstored(&sample.x);
    let model = spawn_cpu(move || {
        kmeans::fit_until(&x, space.dim, &cfg, None, &crate::cancel::requested)
            .ok_or(Error::Interrupted)
    })
    .await?;
    Ok(space.centroids(model.centroids))
}

/// What pass 2 found.
struct Assigned {
    /// Each row's list ([`NO_LIST`] for a row without a score).
    labels: Vec<u32>,
    counts: Vec<u64>,
    /// The exact [`RECALL_K`] neighbours of each recall query.
    exact: Vec<Vec<(u32, f32)>>,
}

/// Pass 2: each row's list (its best-scoring centroid), and the exact
/// neighbours of the recall queries among all rows.
async fn assign_pass(
    t: &Table<'_>,
    space: Space,
    centroids: &[f32],
    queries: &Arc<Queries>,
) -> Result<Assigned> {
    let dim = space.width();
    let lists = centroids.len() / dim;
    let centroids = Arc::new(centroids.to_vec());
    let mut labels: Vec<u32> = Vec::new();
    let mut counts = vec![0u64; lists];
    let mut heaps: Vec<TopK> = (0..queries.rows.len())
        .map(|_| TopK::new(RECALL_K + 1))
        .collect();
    let mut rx = read(t.input, &[t.column.to_string()]);
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        let v = batch_vectors(&sb?, 0, t.dim, t.column)?;
        let first = labels.len() as u32;
        let (c, q) = (Arc::clone(&centroids), Arc::clone(queries));
        let (l, h) = spawn_cpu(move || {
            let v = space.stored(v);
            let labels = nearest_lists(&v, &c, space);
            let found = neighbors::neighbors(&q.x, &v, dim, None, RECALL_K + 1);
            Ok((labels, found))
        })
        .await?;
        for &label in &l {
            if label != NO_LIST {
                counts[label as usize] += 1;
            }
        }
        labels.extend(l);
        for (heap, found) in heaps.iter_mut().zip(h) {
            for (r, s) in found {
                heap.offer(s, first + r);
            }
        }
    }
    let exact = heaps
        .into_iter()
        .zip(&queries.rows)
        .map(|(h, &own)| {
            let mut v = h.into_sorted();
            v.retain(|c| c.0 != own);
            v.truncate(RECALL_K);
            v
        })
        .collect();
    Ok(Assigned {
        labels,
        counts,
        exact,
    })
}

/// Each stored row's best-scoring centroid, the list a query of it would
/// probe first ([`NO_LIST`] for a row of NaN).
pub(super) fn nearest_lists(stored: &[f32], centroids: &[f32], space: Space) -> Vec<u32> {
    let dim = space.width();
    let x = space.as_queries(stored);
    let n = x.len() / dim;
    let mut labels = vec![0u32; n];
    let mut scores = vec![0f32; n];
    let c = kmeans::Centres::new(centroids, dim, kmeans::Metric::Cosine);
    // Cosine mode ranks by the largest dot product, which is what every
    // metric probes by (see super::space).
    kmeans::nearest(&x, &vec![0.0; n], &c, &mut labels, &mut scores);
    for (l, row) in labels.iter_mut().zip(x.chunks_exact(dim)) {
        if row[0].is_nan() {
            *l = NO_LIST;
        }
    }
    labels
}

/// Entry offsets of the lists from their sizes.
pub(super) fn offsets_of(counts: &[u64]) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(counts.len() + 1);
    offsets.push(0);
    for c in counts {
        offsets.push(offsets.last().copied().unwrap_or(0) + c);
    }
    offsets
}

/// A folder to build in: beside `dir` when it is on this disk (so that
/// publishing renames), else under the system's temporary folder.
pub(super) fn staging_dir(stores: &Stores, dir: &str) -> Result<tempfile::TempDir> {
    let loc = stores.resolve(dir)?;
    let made = match loc.local.as_ref().and_then(|p| p.parent()) {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| Error::output(dir, e))?;
            tempfile::Builder::new()
                .prefix(".embedflow-index-")
                .tempdir_in(parent)
        }
        None => tempfile::Builder::new()
            .prefix("embedflow-index-")
            .tempdir(),
    };
    made.map_err(|e| Error::output(dir, format!("cannot make a folder to build in: {e}")))
}

/// Where pass 3 puts rows: each row's list, the lists' offsets, the
/// codes' ranges and the folder built in.
struct Placing<'a> {
    labels: &'a [u32],
    offsets: &'a [u64],
    sq: &'a Sq,
    built: &'a Path,
}

/// Pass 3: each row's vector, its int8 code and its position at its place
/// in its list; its key too where the table has keys. Returns whether it
/// has, and each entry's row position.
async fn place_pass(t: &Table<'_>, space: Space, placing: Placing<'_>) -> Result<(bool, Vec<u32>)> {
    let Placing {
        labels,
        offsets,
        sq,
        built,
    } = placing;
    let key_cols = keys::key_columns(&t.input.schema);
    let mut columns = vec![t.column.to_string()];
    columns.extend(key_cols.iter().flatten().cloned());
    let mut placer = Placer::create(t.path, space, offsets, sq, built)?;
    let mut at = 0usize;
    let mut rx = read(t.input, &columns);
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        let sb = sb?;
        let v = batch_vectors(&sb, 0, t.dim, t.column)?;
        let batch_keys = keys::batch_keys(&sb.batch.columns()[1..]);
        let n = v.len() / t.dim;
        let places = placer.places(&labels[at..at + n], at, &batch_keys);
        at += n;
        placer.write(v, places).await?;
    }
    if at != labels.len() {
        return Err(Error::input(
            t.path,
            format!(
                "{at} rows read where the pass before read {}: the table changed while it was indexed",
                labels.len()
            ),
        ));
    }
    let rows = placer.finish(built, key_cols.is_some())?;
    Ok((key_cols.is_some(), rows))
}

/// Pass 3's files, written at each entry's place.
struct Placer {
    vectors: Arc<std::fs::File>,
    codes: Arc<std::fs::File>,
    sq: Arc<Sq>,
    space: Space,
    /// Each list's next free entry.
    next: Vec<u64>,
    rows: Vec<u32>,
    keys: Vec<u128>,
}

impl Placer {
    fn create(path: &str, space: Space, offsets: &[u64], sq: &Sq, built: &Path) -> Result<Placer> {
        let entries = *offsets.last().unwrap_or(&0);
        let sized = |name: &str, len: u64| {
            let f = std::fs::File::create(built.join(name))?;
            f.set_len(len)?;
            Ok(Arc::new(f))
        };
        let io = |e: std::io::Error| Error::output(path, e);
        let w = space.width() as u64;
        Ok(Placer {
            vectors: sized(VECTORS, entries * w * 4).map_err(io)?,
            codes: sized(CODES, entries * w).map_err(io)?,
            sq: Arc::new(sq.clone()),
            space,
            next: offsets[..offsets.len() - 1].to_vec(),
            rows: vec![0u32; entries as usize],
            keys: vec![keys::NO_KEY; entries as usize],
        })
    }

    /// Where each row of a batch goes (batch row, entry), its position
    /// and key noted.
    fn places(&mut self, labels: &[u32], first: usize, keys: &[u128]) -> Vec<(usize, u64)> {
        let mut places = Vec::with_capacity(labels.len());
        for (j, &l) in labels.iter().enumerate() {
            if l != NO_LIST {
                let e = self.next[l as usize];
                self.next[l as usize] += 1;
                self.rows[e as usize] = (first + j) as u32;
                if let Some(&k) = keys.get(j) {
                    self.keys[e as usize] = k;
                }
                places.push((j, e));
            }
        }
        places
    }

    /// Writes a batch's vectors (the table's, stored as the metric
    /// scores them) and codes at their places.
    async fn write(&self, v: Vec<f32>, places: Vec<(usize, u64)>) -> Result<()> {
        let (vectors, codes, sq, space) = (
            Arc::clone(&self.vectors),
            Arc::clone(&self.codes),
            Arc::clone(&self.sq),
            self.space,
        );
        spawn_cpu(move || {
            let bad = |e| Error::output("the index's files", e);
            let v = space.stored(v);
            let dim = space.width();
            let mut code = Vec::with_capacity(dim);
            for (j, e) in places {
                let row = &v[j * dim..(j + 1) * dim];
                vectors
                    .write_all_at(bytemuck::cast_slice(row), e * dim as u64 * 4)
                    .map_err(bad)?;
                code.clear();
                sq.encode(row, &mut code);
                codes.write_all_at(&code, e * dim as u64).map_err(bad)?;
            }
            Ok(())
        })
        .await
    }

    /// Writes the positions (and keys) and syncs the files; returns the
    /// positions.
    fn finish(self, built: &Path, keyed: bool) -> Result<Vec<u32>> {
        let io = |e: std::io::Error| Error::output(built.display().to_string(), e);
        std::fs::write(
            built.join(ROWS),
            bytemuck::cast_slice::<u32, u8>(&self.rows),
        )
        .map_err(io)?;
        if keyed {
            std::fs::write(
                built.join(KEYS),
                bytemuck::cast_slice::<u128, u8>(&self.keys),
            )
            .map_err(io)?;
        }
        self.vectors.sync_all().map_err(io)?;
        self.codes.sync_all().map_err(io)?;
        Ok(self.rows)
    }
}

#[cfg(test)]
mod tests {
    use super::unit_length;

    #[test]
    fn unit_length_holds_for_unit_rows_only_and_skips_rows_without_a_score() {
        let unit = [0.6f32, 0.8, 1.0, 0.0, f32::NAN, 3.0];
        assert!(unit_length(&unit, 2));
        assert!(!unit_length(&[0.6, 0.8, 1.2, 0.0], 2));
        assert!(unit_length(&[], 2));
    }
}
