//! Clustering and topics, pure compute: k-means ([`kmeans`]), class-based
//! TF-IDF keywords ([`ctfidf`]), exact neighbors ([`neighbors`]) and the
//! assignment of rows to clusters and zero-shot labels ([`assign`]). The
//! runners that read and write files are in `analysis::{cluster, neighbors}`.

pub mod assign;
pub mod ctfidf;
pub mod kmeans;
pub mod neighbors;
pub mod stop_words;

pub use assign::{Assigned, Assigner, ZeroShot};
pub use ctfidf::{Preprocess, TopicOptions};
pub use kmeans::Metric;
