//! Rows to clusters and topics: the nearest centre, and a zero-shot label
//! when one is close enough. Pure compute.

use super::kmeans::{self, Metric};

/// Zero-shot topics: labels embedded with the documents' model. A row takes
/// the most similar label (the first of equals) when its cosine reaches
/// `min_similarity`, else its cluster's topic (BERTopic's rule).
#[derive(Clone, Debug)]
pub struct ZeroShot {
    pub labels: Vec<String>,
    /// `labels.len() × dim`, row-major.
    pub vectors: Vec<f32>,
    pub min_similarity: f32,
}

/// Per-row results of [`Assigner::assign`].
pub struct Assigned {
    pub clusters: Vec<u32>,
    pub distances: Vec<f32>,
    /// Zero-shot labels are topics `0..L`, clusters `L..L+k`.
    pub topics: Vec<u32>,
    /// Cosine of the row to its label, or to its cluster's centre.
    pub scores: Vec<f32>,
}

/// Clusters and topics of rows, from the trained model and the labels.
pub struct Assigner {
    model: kmeans::Model,
    zero_shot: Option<ZeroShot>,
    /// Unit centres and unit label vectors, for cosine scores.
    unit_centres: Vec<f32>,
    unit_labels: Vec<f32>,
    dim: usize,
}

impl Assigner {
    pub fn new(model: kmeans::Model, zero_shot: Option<ZeroShot>, dim: usize) -> Assigner {
        let mut unit_centres = model.centroids.clone();
        crate::vectors::normalize_rows(&mut unit_centres, dim);
        let mut unit_labels = zero_shot
            .as_ref()
            .map(|z| z.vectors.clone())
            .unwrap_or_default();
        crate::vectors::normalize_rows(&mut unit_labels, dim);
        Assigner {
            model,
            zero_shot,
            unit_centres,
            unit_labels,
            dim,
        }
    }

    /// The trained k-means model rows are assigned with.
    pub fn model(&self) -> &kmeans::Model {
        &self.model
    }

    pub fn labels(&self) -> usize {
        self.zero_shot.as_ref().map_or(0, |z| z.labels.len())
    }

    /// Number of topics: zero-shot labels, then one per cluster.
    pub fn topics(&self) -> usize {
        self.labels() + self.model.k
    }

    pub fn zero_shot_label(&self, topic: usize) -> Option<&str> {
        self.zero_shot
            .as_ref()
            .and_then(|z| z.labels.get(topic))
            .map(String::as_str)
    }

    pub fn assign(&self, v: &[f32]) -> Assigned {
        let dim = self.dim;
        // Unit rows serve the scores, and the assignment itself in cosine
        // mode: normalised once.
        let unit = kmeans::prepare_rows(v, dim, Metric::Cosine);
        let (clusters, distances) = match self.model.metric {
            Metric::Cosine => self.model.assign_prepared(&unit),
            Metric::L2 => self.model.assign(v),
        };
        let n = clusters.len();
        let mut topics: Vec<u32> = clusters
            .iter()
            .map(|&c| (self.labels() + c as usize) as u32)
            .collect();
        let mut scores: Vec<f32> = unit
            .chunks_exact(dim)
            .zip(&clusters)
            .map(|(r, &c)| {
                let u = &self.unit_centres[c as usize * dim..(c as usize + 1) * dim];
                r.iter().zip(u).map(|(a, b)| a * b).sum()
            })
            .collect();
        if let Some(z) = &self.zero_shot {
            let l = z.labels.len();
            let mut sims = vec![0f32; n * l];
            kmeans::dot_block(&unit, &self.unit_labels, dim, l, &mut sims);
            for i in 0..n {
                let row = &sims[i * l..(i + 1) * l];
                let (best, sim) =
                    row.iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (j, &s)| if s > b.1 { (j, s) } else { b },
                        );
                if sim >= z.min_similarity {
                    topics[i] = best as u32;
                    scores[i] = sim;
                }
            }
        }
        Assigned {
            clusters,
            distances,
            topics,
            scores,
        }
    }
}
