//! A shard's view of the input: the assignment of units to shards (from
//! the files' footers, the same in every shard) and the reading it implies
//! (the row groups of its own units; CSV files whole or not at all).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};

use crate::shard::{Assignment, FileShape, Shard};
use crate::source::{self, Format, Input};
use crate::{Error, Result};

use super::run::ShardOf;

/// The run's assignment of units to `shard.count` shards.
pub(crate) async fn assign(input: &Input, unit_rows: u64, shard: Shard) -> Result<ShardOf> {
    let mut shapes = Vec::with_capacity(input.files.len());
    for f in &input.files {
        shapes.push(match input.format {
            Format::Parquet => FileShape::RowGroups(source::parquet::row_group_sizes(f).await?),
            Format::Csv => FileShape::Unknown,
        });
    }
    let assignment = Assignment::new(
        &shapes,
        unit_rows,
        source::READ_BATCH_ROWS as u64,
        shard.count,
    );
    Ok(ShardOf {
        shard,
        assignment: Arc::new(assignment),
    })
}

/// The input as `s` reads it: every file still listed (file indices are
/// the whole listing's), each restricted to the row groups of its units;
/// another shard's CSV file is not read at all.
pub(crate) fn restrict(input: &Input, s: &ShardOf) -> Input {
    let mut groups: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
    for (i, f) in input.files.iter().enumerate() {
        let name: Arc<str> = Arc::from(f.location.display.as_str());
        match s.assignment.row_groups(i, s.shard.index) {
            Some(g) => {
                groups.insert(name, g);
            }
            None if !s.assignment.touches(i, s.shard.index) => {
                groups.insert(name, Vec::new());
            }
            None => {}
        }
    }
    Input {
        row_groups: Arc::new(groups),
        ..input.clone()
    }
}

/// A schema as text (an Arrow IPC stream with no batch, in hex), for a
/// shard's marker.
pub(crate) fn schema_to_hex(schema: &Schema) -> Result<String> {
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(Error::internal)?;
    w.finish().map_err(Error::internal)?;
    Ok(hex::encode(w.into_inner().map_err(Error::internal)?))
}

pub(crate) fn schema_from_hex(text: &str) -> Result<SchemaRef> {
    let bytes = hex::decode(text).map_err(Error::internal)?;
    let r = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(Error::internal)?;
    Ok(r.schema())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn schemas_survive_the_marker() {
        let item = Arc::new(Field::new("item", DataType::Float32, true));
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("embedding", DataType::List(item), false),
            Field::new("content_hash", DataType::Binary, false),
        ])
        .with_metadata([("k".to_string(), "v".to_string())].into());
        let back = schema_from_hex(&schema_to_hex(&schema).unwrap()).unwrap();
        assert_eq!(back.as_ref(), &schema);
    }
}
