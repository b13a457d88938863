//! Runs over a written vector table: clusters and topics, the HTML report,
//! nearest neighbours. Each reads any Parquet or Delta table with a vector
//! column, streaming, and commits its outputs whole or not at all; none
//! needs the embedding pipeline, which calls [`cluster::run_cluster`] after
//! a job's embedding when the job has `[cluster]`.

pub mod cluster;
mod cluster_job;
mod cluster_tables;
pub mod index;
pub mod neighbors;
mod neighbors_index;
mod neighbors_io;
pub mod report;
pub(crate) mod vector_file;

pub use cluster_job::{ClusterJob, ClusterSummary};
