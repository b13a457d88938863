//! An incremental run: which source rows the table already holds, as they
//! are now. Every source row gets a key (id, SHA-256 of the text embedded
//! and the columns copied); the keys are compared with the table's by
//! DataFusion, whose joins and sorts spill to disk under a memory limit, so
//! tables larger than memory are compared in bounded memory. The result:
//!
//! - counts (unchanged, changed, new, deleted);
//! - `todo.parquet`: the (file, row) positions to embed, sorted, which the
//!   prepare stage merges with the rows it reads;
//! - the unchanged rows' chunk rows and vectors, copied from the table into
//!   the new version's parts (never embedded again).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, UInt32Type, UInt64Type};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use tokio::sync::mpsc;

use crate::delta::{DeltaTarget, TableState};
use crate::progress::Changes;
use crate::sink::CONTENT_HASH;
use crate::source::{self, Input, SourceBatch};
use crate::{Error, Result};

use super::prepare::{PrepareStage, keys_schema};

/// Memory DataFusion may hold for the comparison before it spills.
const DIFF_MEMORY: usize = 512 << 20;

/// The comparison's files, in a folder removed when this is dropped.
pub(super) struct Diff {
    pub changes: Changes,
    dir: tempfile::TempDir,
    ctx: SessionContext,
    copy_sql: String,
}

impl Diff {
    pub(super) fn todo_path(&self) -> PathBuf {
        self.dir.path().join("todo.parquet")
    }

    /// The unchanged rows of the table, streamed.
    pub(super) async fn unchanged_rows(
        &self,
    ) -> Result<datafusion::physical_plan::SendableRecordBatchStream> {
        self.ctx
            .sql(&self.copy_sql)
            .await
            .map_err(diff_error)?
            .execute_stream()
            .await
            .map_err(diff_error)
    }
}

fn diff_error(e: datafusion::error::DataFusionError) -> Error {
    Error::internal(format!("comparing the input with the table: {e}"))
}

/// Reads the input once for its keys and compares them with the table.
pub(super) async fn compare(
    input: &Input,
    read_columns: &[String],
    prepare: Arc<PrepareStage>,
    id_column: &str,
    target: &DeltaTarget,
    base: &TableState,
) -> Result<Diff> {
    let dir = tempfile::Builder::new()
        .prefix("embedflow-diff-")
        .tempdir()
        .map_err(|e| Error::internal(format!("cannot make a temporary folder: {e}")))?;
    let keys_path = dir.path().join("keys.parquet");
    write_keys(input, read_columns, prepare, &keys_path).await?;

    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(DIFF_MEMORY)))
        .with_temp_file_path(dir.path())
        .build_arc()
        .map_err(diff_error)?;
    // Sort-merge joins spill where hash joins would hold a side in memory.
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .set_bool("datafusion.optimizer.prefer_hash_join", false)
        // The table's own types (Utf8, not views), for the copied rows.
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        );
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_parquet(
        "keys",
        keys_path.to_str().unwrap_or_default(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(diff_error)?;
    target.register(&ctx, "old", &base.files).await?;
    let id = quote(id_column);
    let hash = quote(CONTENT_HASH);
    ctx.sql(&format!(
        "CREATE VIEW od AS SELECT DISTINCT CAST(old.{id} AS VARCHAR) AS id, old.{hash} AS hash FROM old"
    ))
    .await
    .map_err(diff_error)?;

    // One row per id: a repeated id would make "the same row" a guess.
    let dup = one_value(
        &ctx,
        "SELECT id FROM keys GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 1",
    )
    .await?;
    if let Some(d) = dup {
        return Err(Error::Data(format!(
            "input {}: the id column {id_column} holds {d} more than once; an incremental run needs one row per id (or set output.mode = \"full\")",
            input
                .files
                .first()
                .map_or("", |f| f.location.display.as_str())
        )));
    }
    let count = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            one_value(&ctx, sql)
                .await?
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Error::internal(format!("no count from {sql}")))
        }
    };
    let rows = count("SELECT count(*) FROM keys").await?;
    let unchanged =
        count("SELECT count(*) FROM keys k JOIN od ON k.id = od.id AND k.hash = od.hash").await?;
    let new = count("SELECT count(*) FROM keys k LEFT ANTI JOIN od ON k.id = od.id").await?;
    let deleted = count("SELECT count(*) FROM od LEFT ANTI JOIN keys k ON k.id = od.id").await?;
    let changes = Changes {
        rows,
        unchanged,
        changed: rows - unchanged - new,
        new,
        deleted,
    };

    let todo = ctx
        .sql(
            "SELECT k.file, k.row FROM keys k LEFT ANTI JOIN od ON k.id = od.id AND k.hash = od.hash ORDER BY k.file, k.row",
        )
        .await
        .map_err(diff_error)?
        .execute_stream()
        .await
        .map_err(diff_error)?;
    write_stream(todo, &dir.path().join("todo.parquet")).await?;
    let copy_sql = format!(
        "SELECT old.* FROM old LEFT SEMI JOIN keys k ON CAST(old.{id} AS VARCHAR) = k.id AND old.{hash} = k.hash"
    );
    Ok(Diff {
        changes,
        dir,
        ctx,
        copy_sql,
    })
}

/// A column name as an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn one_value(ctx: &SessionContext, sql: &str) -> Result<Option<String>> {
    let batches = ctx
        .sql(sql)
        .await
        .map_err(diff_error)?
        .collect()
        .await
        .map_err(diff_error)?;
    for b in batches {
        if b.num_rows() > 0 {
            let s = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(Error::internal)?;
            let s = s.as_string::<i32>();
            return Ok(s.is_valid(0).then(|| s.value(0).to_string()));
        }
    }
    Ok(None)
}

/// Every source row's key, in a Parquet file.
async fn write_keys(
    input: &Input,
    read_columns: &[String],
    prepare: Arc<PrepareStage>,
    path: &Path,
) -> Result<()> {
    let files: std::collections::HashMap<Arc<str>, u32> = input
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (Arc::from(f.location.display.as_str()), i as u32))
        .collect();
    let (tx, mut rx) = mpsc::channel::<Result<SourceBatch>>(2);
    let reading = {
        let input = input.clone();
        let columns = read_columns.to_vec();
        tokio::spawn(
            async move { source::read(&input, &columns, source::READ_BATCH_ROWS, tx).await },
        )
    };
    let path = path.to_path_buf();
    let hashing = tokio::task::spawn_blocking(move || -> Result<()> {
        let file = std::fs::File::create(&path).map_err(Error::internal)?;
        let mut w = ArrowWriter::try_new(file, keys_schema(), None).map_err(Error::internal)?;
        while let Some(item) = rx.blocking_recv() {
            crate::cancel::check()?;
            let sb = item?;
            let f = *files
                .get(&sb.file)
                .ok_or_else(|| Error::internal("a batch of an unlisted file"))?;
            w.write(&prepare.keys(&sb, f)?).map_err(Error::internal)?;
        }
        w.close().map_err(Error::internal)?;
        Ok(())
    });
    let hashed = hashing.await.map_err(Error::internal)?;
    let read = reading.await.map_err(Error::internal)?;
    read.and(hashed)
}

async fn write_stream(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    path: &Path,
) -> Result<()> {
    let file = std::fs::File::create(path).map_err(Error::internal)?;
    let mut w = ArrowWriter::try_new(file, stream.schema(), None).map_err(Error::internal)?;
    while let Some(b) = stream.next().await {
        w.write(&b.map_err(diff_error)?).map_err(Error::internal)?;
    }
    w.close().map_err(Error::internal)?;
    Ok(())
}

/// The sorted (file, row) positions to embed, read alongside the input.
pub(super) struct TodoCursor {
    reader: ParquetRecordBatchReader,
    ahead: VecDeque<(u32, u64)>,
    done: bool,
}

impl TodoCursor {
    pub(super) fn open(path: &Path) -> Result<TodoCursor> {
        let file = std::fs::File::open(path).map_err(Error::internal)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(Error::internal)?;
        Ok(TodoCursor {
            reader,
            ahead: VecDeque::new(),
            done: false,
        })
    }

    fn peek(&mut self) -> Result<Option<(u32, u64)>> {
        while self.ahead.is_empty() && !self.done {
            match self.reader.next() {
                Some(b) => self.fill(&b.map_err(Error::internal)?),
                None => self.done = true,
            }
        }
        Ok(self.ahead.front().copied())
    }

    fn fill(&mut self, b: &RecordBatch) {
        let files = b.column(0).as_primitive::<UInt32Type>();
        let rows = b.column(1).as_primitive::<UInt64Type>();
        self.ahead.extend(
            files
                .values()
                .iter()
                .copied()
                .zip(rows.values().iter().copied()),
        );
    }

    /// Which of rows `first..first + n` of file `file` are to be embedded.
    /// Batches come in file and row order, as the positions do.
    pub(super) fn mask(&mut self, file: u32, first: u64, n: usize) -> Result<Vec<bool>> {
        let mut mask = vec![false; n];
        while let Some((f, r)) = self.peek()? {
            if (f, r) >= (file, first + n as u64) {
                break;
            }
            if f == file && r >= first {
                mask[(r - first) as usize] = true;
            }
            self.ahead.pop_front();
        }
        Ok(mask)
    }
}

/// The table's schema is the new output's: the copied rows are written as
/// they are.
pub(super) fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::internal)?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| {
        Error::internal(format!(
            "the table's rows do not fit the output's columns ({e}); run with output.mode = \"full\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn the_cursor_marks_the_positions_of_each_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("todo.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("file", DataType::UInt32, false),
            Field::new("row", DataType::UInt64, false),
        ]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(UInt32Array::from(vec![0, 0, 0, 1, 2])),
                Arc::new(UInt64Array::from(vec![1, 4, 9, 0, 3])),
            ],
        )
        .unwrap();
        let mut w =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        let mut c = TodoCursor::open(&path).unwrap();
        assert_eq!(c.mask(0, 0, 5).unwrap(), [false, true, false, false, true]);
        assert_eq!(c.mask(0, 5, 5).unwrap(), [false, false, false, false, true]);
        // File 1 has one batch; file 2's first batch starts past row 3.
        assert_eq!(c.mask(1, 0, 2).unwrap(), [true, false]);
        assert_eq!(c.mask(2, 0, 3).unwrap(), [false, false, false]);
        assert_eq!(c.mask(2, 3, 2).unwrap(), [true, false]);
        assert_eq!(c.mask(3, 0, 2).unwrap(), [false, false]);
    }
}
