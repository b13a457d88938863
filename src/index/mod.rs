//! Approximate nearest-neighbour indexes of a table's vectors, built by
//! `embedflow index` and used by `neighbors`.
//!
//! IVF-flat: the coarse quantizer is our k-means (one list per centroid),
//! each list holds its rows' vectors as they are scored (unit rows for
//! cosine) with their row positions in the table. A search scores a
//! query's `nprobe` best centroids, then every vector of those lists
//! exactly ([`search`]). Building streams the table three times (a sample
//! to train on, the lists' sizes, the vectors placed in their lists):
//! memory is the sample, four bytes a row and one batch, never the table
//! ([`build`]). The build measures recall@10 against the exact search on
//! a sample of rows for growing `nprobe` and keeps the smallest that
//! reaches the target as the index's default ([`tune`]).
//!
//! Each list also holds its vectors' int8 codes ([`sq`]): a search that
//! reads lists from storage (SQL top-k) ranks by the codes, a quarter of
//! the bytes, and re-scores the best candidates from their float vectors.
//!
//! On disk, a folder ([`files`]): `index.json` (what was indexed, from
//! which table version or file, how, and the measured recall curve) and
//! its arrays. It lives with its table (see [`default_dir`]) and names
//! what it indexed, so that an index of another table, another version or
//! another file is never used silently. A newer version of a Delta table
//! written by embedflow is indexed by updating the older index ([`update`]:
//! rows matched by content hash, new ones put in their lists) until too
//! much has changed since the build.

mod build;
mod files;
mod keys;
mod mapped;
mod search;
mod space;
mod sq;
mod tune;
mod update;

use serde::{Deserialize, Serialize};

use crate::cluster::neighbors::Similarity;
use crate::source::Input;

pub use build::{BuildOptions, DEFAULT_REBUILD_AFTER, Table, build, default_lists};
pub use files::{
    CODES, ROWS, VECTORS, child, default_dir, dir_for, load, load_head, load_sq, read_meta,
};
pub use search::{Ivf, best_lists, recall, score_list};
pub use space::{Metric, Space};
pub use sq::{Sq, SqQuery};
pub use update::{Refreshed, refresh, stale_note};

/// The on-disk format this build writes and reads.
pub const FORMAT: u32 = 1;
/// recall@k is measured with this k.
pub const RECALL_K: usize = 10;

/// The recall on the table's own rows that the default `nprobe` for
/// queries from outside it is tuned to: half the misses `target` allows.
/// (On the 1M tweet-like set of benches/index.sh, held-out queries found
/// 0.918 of their neighbours where the table's rows found 0.957.)
pub fn query_target(target: f64) -> f64 {
    1.0 - (1.0 - target) / 2.0
}

/// What an index holds and how it was made (`index.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct IndexMeta {
    pub format: u32,
    /// `ivf_flat`.
    pub kind: String,
    /// `cosine`, `inner_product` or `l2` ([`Metric`]).
    pub metric: String,
    /// The table's vectors' width (the index's rows are one wider for
    /// l2: see [`Space`]).
    pub dim: usize,
    pub lists: usize,
    pub vector_column: String,
    /// Rows of the table, and those indexed (a row without a score, NaN
    /// or for cosine a zero vector, is not).
    pub rows: u64,
    pub entries: u64,
    /// The `nprobe` a search of the table's own rows uses unless told
    /// (`neighbors` of every row): the smallest measured to reach
    /// `target_recall`.
    pub nprobe: usize,
    /// The `nprobe` a search for rows from outside the table uses unless
    /// told (`neighbors --queries`): the smallest measured to reach
    /// [`query_target`], as such rows are found less often than the
    /// table's own (see README, "Indexes").
    pub query_nprobe: usize,
    pub target_recall: f64,
    /// recall@10 against the exact search, by `nprobe`, measured on
    /// `recall_queries` rows of the table (each left out of its own list).
    pub recall_curve: Vec<RecallPoint>,
    pub recall_queries: usize,
    pub source: SourceId,
    pub seed: u64,
    pub embedflow: String,
    pub build_seconds: f64,
    /// `keys.u128` holds each entry's key ([`keys`]): the index can be
    /// updated to a newer version of its table.
    #[serde(default)]
    pub keys: bool,
    /// `codes.u8` and `sq.f32` hold each entry's int8 code ([`sq`]):
    /// searches that read lists from storage read those.
    #[serde(default)]
    pub codes: bool,
    /// Every indexed row has unit length: `l2_distance` then ranks rows
    /// as the dot product does, and the index answers it too.
    #[serde(default)]
    pub unit_norm: bool,
    /// The output fingerprint of the Delta table version indexed (what
    /// its vectors were made with); an update needs the new version's to
    /// be the same.
    #[serde(default)]
    pub table_fingerprint: Option<String>,
    /// Set when this index was updated from an older one, not built.
    #[serde(default)]
    pub update: Option<UpdateInfo>,
}

/// How an index was brought up to date from an older one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpdateInfo {
    /// The Delta version (or files) the older index indexed.
    pub from: String,
    /// Entries kept, added (new and changed rows) and dropped (deleted
    /// and changed rows).
    pub kept: u64,
    pub added: u64,
    pub dropped: u64,
    /// Entries added and dropped since the index was last built, all
    /// updates together: past `rebuild_after` of the entries, the next
    /// refresh builds it again.
    pub changed_since_build: u64,
    pub seconds: f64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecallPoint {
    pub nprobe: usize,
    pub recall: f64,
}

/// What was indexed: a Delta table at a version, or files as they were.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SourceId {
    /// The table or files as the command named them (for messages).
    pub path: String,
    /// A Delta table's version.
    pub delta_version: Option<i64>,
    /// Each file: its name (relative to a table, else its last
    /// component), size and the store's version of it (ETag, else
    /// modification time).
    pub files: Vec<FileId>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileId {
    pub name: String,
    pub size: u64,
    pub version: Option<String>,
}

impl SourceId {
    pub fn of(path: &str, input: &Input) -> SourceId {
        let files = input
            .files
            .iter()
            .map(|f| FileId {
                name: match &input.table {
                    Some(_) => input.relative_name(f).to_string(),
                    None => f
                        .location
                        .path
                        .filename()
                        .unwrap_or(f.location.display.as_str())
                        .to_string(),
                },
                size: f.size,
                version: f.version.clone(),
            })
            .collect();
        SourceId {
            path: path.to_string(),
            delta_version: input.table.as_ref().map(|t| t.version),
            files,
        }
    }

    /// The version or files indexed, in words.
    pub fn version_name(&self) -> String {
        match self.delta_version {
            Some(v) => format!("version {v}"),
            None => format!("{} file(s) as they were", self.files.len()),
        }
    }

    /// Why an index of `self` does not index `now` (`None`: it does).
    pub fn differs(&self, now: &SourceId) -> Option<String> {
        match (self.delta_version, now.delta_version) {
            (Some(a), Some(b)) if a != b => {
                return Some(format!(
                    "it indexes version {a} of the table, which is at version {b} now"
                ));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Some("it indexes another kind of input (a Delta table / files)".into());
            }
            _ => {}
        }
        if self.files == now.files {
            return None;
        }
        let changed = self
            .files
            .iter()
            .filter(|f| !now.files.contains(f))
            .map(|f| f.name.as_str())
            .chain(
                now.files
                    .iter()
                    .filter(|f| !self.files.iter().any(|o| o.name == f.name))
                    .map(|f| f.name.as_str()),
            )
            .take(3)
            .collect::<Vec<_>>();
        Some(format!(
            "the files it indexed changed since it was built ({} then, {} now; {})",
            self.files.len(),
            now.files.len(),
            changed.join(", ")
        ))
    }
}

impl IndexMeta {
    pub fn metric(&self) -> Option<Metric> {
        crate::names::parse(&self.metric)
    }

    /// How the index's rows, centroids and queries are laid out (an
    /// unknown metric is refused when the index is read).
    pub fn space(&self) -> Space {
        Space::new(self.metric().unwrap_or(Metric::Cosine), self.dim)
    }

    /// The similarity of `neighbors` this index ranks by (none for l2).
    pub fn similarity(&self) -> Option<Similarity> {
        match self.metric()? {
            Metric::Cosine => Some(Similarity::Cosine),
            Metric::InnerProduct => Some(Similarity::InnerProduct),
            Metric::L2 => None,
        }
    }

    /// The recall measured at `nprobe`, or at the largest `nprobe` below
    /// it that was measured (a lower bound).
    pub fn expected_recall(&self, nprobe: usize) -> Option<f64> {
        self.recall_curve
            .iter()
            .rev()
            .find(|p| p.nprobe <= nprobe)
            .map(|p| p.recall)
    }

    /// A description of an index made in a test (its recall not measured).
    #[cfg(test)]
    pub(crate) fn placeholder(dim: usize, lists: usize) -> IndexMeta {
        IndexMeta {
            format: FORMAT,
            kind: "ivf_flat".into(),
            metric: Similarity::Cosine.name(),
            dim,
            lists,
            vector_column: "embedding".into(),
            rows: 0,
            entries: 0,
            nprobe: 1,
            query_nprobe: 1,
            target_recall: 0.95,
            recall_curve: Vec::new(),
            recall_queries: 0,
            source: SourceId {
                path: String::new(),
                delta_version: None,
                files: Vec::new(),
            },
            seed: 0,
            embedflow: String::new(),
            build_seconds: 0.0,
            keys: false,
            codes: false,
            unit_norm: false,
            table_fingerprint: None,
            update: None,
        }
    }
}
