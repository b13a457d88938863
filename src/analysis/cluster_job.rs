//! What a cluster run is asked to do, and what it reports.

use crate::cluster::{TopicOptions, ZeroShot, kmeans};
use crate::store::S3Options;

/// Rows nearest each centre kept for the clusters table.
pub const NEAREST: usize = 5;
/// Representative texts per topic.
pub const REPRESENTATIVES: usize = 3;
/// Keywords joined into a topic's label.
pub const LABEL_WORDS: usize = 4;

/// What to cluster and where to write it.
#[derive(Clone, Debug)]
pub struct ClusterJob {
    pub input: String,
    pub output: String,
    pub vector_column: String,
    /// Named in the clusters table (nearest rows); default: the row number.
    pub id_column: Option<String>,
    /// Texts for topics; `None`: no topics.
    pub text_column: Option<String>,
    pub kmeans: kmeans::Config,
    /// Rows trained on; `None`: 256·k.
    pub train_sample: Option<usize>,
    pub clusters_path: Option<String>,
    pub topics_path: Option<String>,
    pub topics: TopicOptions,
    pub overwrite: bool,
    pub s3: S3Options,
    /// Zero-shot topic labels, embedded.
    pub zero_shot: Option<ZeroShot>,
}

/// What a run did, printed at the end.
#[derive(Debug)]
pub struct ClusterSummary {
    pub rows: u64,
    pub k: usize,
    pub dim: usize,
    pub sampled: usize,
    pub iterations: usize,
    pub converged: bool,
    pub train_inertia: f64,
    pub train_seconds: f64,
    pub seconds: f64,
    pub outputs: Vec<String>,
}

impl std::fmt::Display for ClusterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for o in &self.outputs {
            writeln!(f, "wrote {o}")?;
        }
        writeln!(f, "  rows             {}", self.rows)?;
        writeln!(f, "  clusters         {} ({} dims)", self.k, self.dim)?;
        writeln!(f, "  trained on       {} sampled rows", self.sampled)?;
        writeln!(
            f,
            "  iterations       {}{}",
            self.iterations,
            if self.converged {
                " (converged)"
            } else {
                " (max_iter reached)"
            }
        )?;
        writeln!(f, "  train inertia    {:.6}", self.train_inertia)?;
        writeln!(f, "  train seconds    {:.2}", self.train_seconds)?;
        write!(f, "  seconds          {:.2}", self.seconds)
    }
}
