//! Sinks: the output schema (defined here and nowhere else) and a Parquet
//! writer over object_store that commits by rename.

mod parquet;

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

pub use self::parquet::{Compression, DEFAULT_ROW_GROUP_SIZE, ParquetSink, WriteOptions};
use crate::{Error, Result};

/// Chunk columns, in the order they are written.
pub const CHUNK_INDEX: &str = "chunk_index";
pub const CHUNK_START: &str = "chunk_start";
pub const CHUNK_END: &str = "chunk_end";
pub const CHUNK_TEXT: &str = "chunk_text";
/// In the documents output: how many chunks the document vector averages.
pub const N_CHUNKS: &str = "n_chunks";

/// What the output holds beside the passthrough columns.
#[derive(Clone, Debug)]
pub struct OutputLayout {
    pub chunk_columns: bool,
    pub chunk_text: bool,
    pub vector_column: String,
    pub dim: usize,
}

fn vector_field(name: &str, dim: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(
            Arc::new(Field::new_list_field(DataType::Float32, true)),
            dim as i32,
        ),
        false,
    )
}

/// The extra columns (after the passthrough ones) of the chunk output.
fn chunk_fields(layout: &OutputLayout) -> Vec<Field> {
    let mut f = Vec::new();
    if layout.chunk_columns {
        f.push(Field::new(CHUNK_INDEX, DataType::Int32, false));
        f.push(Field::new(CHUNK_START, DataType::Int64, false));
        f.push(Field::new(CHUNK_END, DataType::Int64, false));
        if layout.chunk_text {
            f.push(Field::new(CHUNK_TEXT, DataType::Utf8, false));
        }
    }
    f.push(vector_field(&layout.vector_column, layout.dim));
    f
}

fn with_passthrough(passthrough: &[FieldRef], extra: Vec<Field>) -> Result<SchemaRef> {
    for e in &extra {
        if passthrough.iter().any(|p| p.name() == e.name()) {
            return Err(Error::Job {
                origin: "output".into(),
                problems: vec![format!(
                    "the output column '{}' would collide with the input column of that name; leave it out of input.columns{}",
                    e.name(),
                    if e.name() == CHUNK_INDEX
                        || e.name() == CHUNK_START
                        || e.name() == CHUNK_END
                        || e.name() == CHUNK_TEXT
                    {
                        ""
                    } else {
                        " or set output.vector_column"
                    }
                )],
            });
        }
    }
    let mut fields: Vec<FieldRef> = passthrough.to_vec();
    fields.extend(extra.into_iter().map(Arc::new));
    Ok(Arc::new(Schema::new(fields)))
}

/// Schema of the main output: passthrough columns, chunk columns, vector.
pub fn output_schema(passthrough: &[FieldRef], layout: &OutputLayout) -> Result<SchemaRef> {
    with_passthrough(passthrough, chunk_fields(layout))
}

/// Schema of the documents output: passthrough columns, n_chunks, vector.
pub fn documents_schema(passthrough: &[FieldRef], layout: &OutputLayout) -> Result<SchemaRef> {
    with_passthrough(
        passthrough,
        vec![
            Field::new(N_CHUNKS, DataType::Int32, false),
            vector_field(&layout.vector_column, layout.dim),
        ],
    )
}

/// A `FixedSizeList<Float32, dim>` column from one flat buffer of rows × dim.
pub fn vector_array(values: Vec<f32>, dim: usize) -> Result<ArrayRef> {
    crate::vectors::to_fixed_size_list(values, dim)
        .map_err(|e| Error::internal(format!("vector column: {e}")))
}
