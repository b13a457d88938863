//! Sinks: the output schema (defined here and nowhere else) and a Parquet
//! writer over object_store that commits by rename.

mod parquet;

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

pub(crate) use self::parquet::io_words_in;
pub use self::parquet::{
    Compression, DEFAULT_ROW_GROUP_SIZE, ParquetSink, WriteOptions, bytes_written,
    remove_stale_part_temporaries, sync_file_and_folder,
};
use crate::{Error, Result};

/// Chunk columns, in the order they are written.
pub const CHUNK_INDEX: &str = "chunk_index";
pub const CHUNK_START: &str = "chunk_start";
pub const CHUNK_END: &str = "chunk_end";
pub const CHUNK_TEXT: &str = "chunk_text";
/// In the documents output: how many chunks the document vector averages.
pub const N_CHUNKS: &str = "n_chunks";
/// In a Delta output: per row, the SHA-256 of the text embedded and the
/// columns copied, which an incremental run compares.
pub const CONTENT_HASH: &str = "content_hash";

/// What a job writes: one Parquet file, or a Delta Lake table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Parquet,
    Delta,
}

/// How a Delta output is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Rows the table holds as they are now are copied, not embedded again.
    Incremental,
    /// Every row is embedded.
    Full,
}

/// Input rows per resumable unit of a Delta output: at most this much work
/// is redone after a crash.
pub const DEFAULT_UNIT_ROWS: u64 = 16_384;

/// What the output holds beside the passthrough columns.
#[derive(Clone, Debug)]
pub struct OutputLayout {
    pub chunk_columns: bool,
    pub chunk_text: bool,
    pub vector_column: String,
    pub dim: usize,
    /// A [`CONTENT_HASH`] column after the vector (Delta outputs).
    pub content_hash: bool,
    /// Vectors as `List<Float32>` rather than `FixedSizeList<Float32, dim>`
    /// (Delta outputs: Delta's `array<float>` has no size, and readers such
    /// as polars refuse a part whose type is not the log's).
    pub vector_list: bool,
}

fn vector_field(name: &str, dim: usize, list: bool) -> Field {
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    let t = if list {
        DataType::List(item)
    } else {
        DataType::FixedSizeList(item, dim as i32)
    };
    Field::new(name, t, false)
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
    f.push(vector_field(
        &layout.vector_column,
        layout.dim,
        layout.vector_list,
    ));
    if layout.content_hash {
        f.push(Field::new(CONTENT_HASH, DataType::Binary, false));
    }
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
                        || e.name() == CONTENT_HASH
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
            vector_field(&layout.vector_column, layout.dim, layout.vector_list),
        ],
    )
}

/// A `FixedSizeList<Float32, dim>` column from one flat buffer of rows × dim.
pub fn vector_array(values: Vec<f32>, dim: usize) -> Result<ArrayRef> {
    crate::vectors::to_fixed_size_list(values, dim)
        .map_err(|e| Error::internal(format!("vector column: {e}")))
}

/// The vector column of `schema` (FixedSizeList or List) from rows × dim.
pub fn vector_column(
    schema: &Schema,
    name: &str,
    values: Vec<f32>,
    dim: usize,
) -> Result<ArrayRef> {
    match schema.field_with_name(name).map(|f| f.data_type()) {
        Ok(DataType::List(_)) => crate::vectors::to_list(values, dim)
            .map_err(|e| Error::internal(format!("vector column: {e}"))),
        _ => vector_array(values, dim),
    }
}
