//! Integration tests: one binary, real ONNX Runtime, real models, real
//! Parquet and CSV files in a temporary directory per test.

mod util;

mod architecture;
mod chunking;
mod cluster;
mod errors;
mod fidelity;
mod golden;
mod gpu;
mod hostile;
mod images;
mod index;
mod io;
mod jobs;
mod metrics;
mod model;
mod remote;
mod report;
mod s3;
mod safety;
mod shards;
mod slurm;
mod sql;
mod tables;
