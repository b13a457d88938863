//! embedflow: turns document warehouses into embeddings.
//!
//! Parquet/CSV in → chunk → tokenize → embed with ONNX Runtime → Parquet with
//! a `FixedSizeList<Float32, dim>` vector column out. One module per stage;
//! [`pipeline`] is the only one that knows them all.

pub mod analysis;
pub mod cancel;
pub mod chunk;
pub mod cli;
pub mod cluster;
pub mod delta;
pub mod embed;
pub mod error;
pub mod index;
pub mod job;
pub mod metrics;
pub mod names;
pub mod notice;
pub mod npy;
pub mod paths;
pub mod pipeline;
pub mod process;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod shard;
pub mod sink;
pub mod source;
pub mod sql;
pub mod store;
pub mod text;
pub mod vectors;

pub use error::{Error, Result};
