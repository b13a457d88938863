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

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
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

use super::check::CheckedJob;
use super::fingerprint;
use super::prepare::{PrepareStage, keys_schema};
use super::table::TableRun;
use crate::job::JobPlan;
use crate::sink::UpdateMode;

/// Memory DataFusion may hold for the comparison before it spills.
const DIFF_MEMORY: usize = 512 << 20;
/// Rows per row group of the comparison's own files: what their writers
/// buffer.
const KEYS_ROW_GROUP: usize = 65_536;

/// A writer of the comparison's files, with small row groups.
fn small_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<std::fs::File>> {
    let file = std::fs::File::create(path).map_err(Error::internal)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(KEYS_ROW_GROUP))
        .build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::internal)
}

/// The comparison's files, in a folder removed when this is dropped.
pub(super) struct Diff {
    pub changes: Changes,
    dir: tempfile::TempDir,
    ctx: SessionContext,
    copy_sql: String,
    /// Input files (by index) holding a row to embed: the only ones the
    /// embedding pass reads.
    pub todo_files: BTreeSet<u32>,
}

impl Diff {
    /// This run's keys, saved with the table version it commits so that the
    /// next run over a Delta input need not read the files that did not
    /// change.
    pub(super) fn keys_path(&self) -> PathBuf {
        self.dir.path().join("keys.parquet")
    }

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
    stores: &crate::store::Stores,
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
    let saved = saved_keys(input, stores, target, base, dir.path()).await;
    let files_reused = saved.as_ref().map_or(0, |s| s.unchanged.len());
    write_keys(input, read_columns, prepare, saved.as_ref(), &keys_path).await?;

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
    target.register(&ctx, "old", &base.paths()).await?;
    let id = quote(id_column);
    let hash = quote(CONTENT_HASH);
    // The table's keys, computed once (a DISTINCT over the whole table)
    // for the counts and the positions below.
    let old_keys = dir.path().join("old_keys.parquet");
    let stream = ctx
        .sql(&format!(
            "SELECT DISTINCT CAST(old.{id} AS VARCHAR) AS id, old.{hash} AS hash FROM old"
        ))
        .await
        .map_err(diff_error)?
        .execute_stream()
        .await
        .map_err(diff_error)?;
    write_stream(stream, &old_keys, |_| {}).await?;
    ctx.register_parquet(
        "od",
        old_keys.to_str().unwrap_or_default(),
        ParquetReadOptions::default(),
    )
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
        files_reused,
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
    let mut todo_files = BTreeSet::new();
    write_stream(todo, &dir.path().join("todo.parquet"), |b| {
        todo_files.extend(b.column(0).as_primitive::<UInt32Type>().values().iter())
    })
    .await?;
    let copy_sql = format!(
        "SELECT old.* FROM old LEFT SEMI JOIN keys k ON CAST(old.{id} AS VARCHAR) = k.id AND old.{hash} = k.hash"
    );
    Ok(Diff {
        changes,
        dir,
        ctx,
        copy_sql,
        todo_files,
    })
}

/// How a table run updates its table.
pub(super) struct Update {
    /// What changed, for an incremental run over an existing table.
    pub(super) diff: Option<Diff>,
    /// Why every row is embedded although the job is incremental.
    pub(super) full_because: Option<String>,
}

/// Decides how a table run updates the table; an incremental one compares
/// the input with the table and copies the unchanged rows before any
/// embedding.
pub(super) async fn start_update(
    run: &mut TableRun,
    c: &CheckedJob,
    plan: &JobPlan,
    prepare: &Arc<PrepareStage>,
    fingerprint: &str,
    lineage: &[(String, String)],
) -> Result<Update> {
    if plan.output.mode == UpdateMode::Full {
        return Ok(Update {
            diff: None,
            full_because: None,
        });
    }
    let diff = {
        let Some(base) = run.base() else {
            return Ok(Update {
                diff: None,
                full_because: Some("the table is new".into()),
            });
        };
        let props = base.properties();
        if props.get(fingerprint::FINGERPRINT).map(String::as_str) != Some(fingerprint) {
            return Ok(Update {
                diff: None,
                full_because: Some(fingerprint::fingerprint_change(props, lineage)),
            });
        }
        let id = plan
            .input
            .id_column
            .as_deref()
            .ok_or_else(|| Error::internal("an incremental run without input.id_column"))?;
        let target = run.target();
        until_stopped(compare(
            &c.input,
            &c.stores,
            &c.read_columns,
            Arc::clone(prepare),
            id,
            &target,
            base,
        ))
        .await?
    };
    let rows = until_stopped(diff.unchanged_rows()).await?;
    until_stopped(run.copy(&c.stores, rows, diff.changes.unchanged)).await?;
    Ok(Update {
        diff: Some(diff),
        full_because: None,
    })
}

/// Where a table keeps the keys of the run that wrote a version.
pub(super) fn saved_keys_name(table_version: i64) -> String {
    format!("{}/keys/v{table_version}.parquet", crate::delta::STATE_DIR)
}

/// Saves a committed run's keys beside the table, and drops older ones. A
/// failure costs the next run a full read of its input, nothing else.
pub(super) async fn save_keys(target: &DeltaTarget, diff: &Diff, version: i64) {
    let saved = async {
        let bytes = std::fs::read(diff.keys_path()).map_err(Error::internal)?;
        let name = saved_keys_name(version);
        target.write_state(&name, bytes).await?;
        for old in target
            .list(&format!("{}/keys", crate::delta::STATE_DIR))
            .await?
        {
            if old != name {
                target.delete(&old).await?;
            }
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = saved.await {
        tracing::warn!("cannot save the run's keys ({e}); the next run reads every input file");
    }
}

/// The table property naming the version of a Delta input a run read.
pub(super) const INPUT_VERSION: &str = "embedflow.input_version";

/// Keys an earlier run saved, and the input files they still hold for.
struct SavedKeys {
    file: tempfile::NamedTempFile,
    /// Relative names of the input files present in both the input version
    /// the keys were made from and the one read now (a Delta table's file
    /// never changes under its name).
    unchanged: HashSet<String>,
}

/// The saved keys of the table's version, when the input is a Delta table
/// and both the keys and the input's old version can be read; otherwise
/// every file is read (and the log says why).
async fn saved_keys(
    input: &Input,
    stores: &crate::store::Stores,
    target: &DeltaTarget,
    base: &TableState,
    dir: &Path,
) -> Option<SavedKeys> {
    let table = input.table.as_ref()?;
    let old: i64 = base.properties().get(INPUT_VERSION)?.parse().ok()?;
    let bytes = match target.read_state(&saved_keys_name(base.version())).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            tracing::info!(
                "no saved keys for table version {}: reading every input file",
                base.version()
            );
            return None;
        }
        Err(e) => {
            tracing::warn!("cannot read the saved keys ({e}): reading every input file");
            return None;
        }
    };
    let source = DeltaTarget::resolve(stores, &table.path).ok()?;
    let before: HashSet<String> = match source.data_files(Some(old)).await {
        Ok((_, files)) => files.into_iter().map(|(p, _)| p).collect(),
        Err(e) => {
            tracing::warn!(
                "cannot read version {old} of the input table ({e}): reading every input file"
            );
            return None;
        }
    };
    let unchanged: HashSet<String> = input
        .files
        .iter()
        .map(|f| input.relative_name(f).to_string())
        .filter(|n| before.contains(n))
        .collect();
    let mut file = tempfile::NamedTempFile::new_in(dir).ok()?;
    std::io::Write::write_all(&mut file, &bytes).ok()?;
    Some(SavedKeys { file, unchanged })
}

/// Appends the saved keys of the unchanged files, renumbered to this run's
/// listing.
fn copy_saved_keys(
    saved: &Path,
    unchanged: &HashSet<String>,
    index: &HashMap<String, u32>,
    w: &mut ArrowWriter<std::fs::File>,
) -> Result<()> {
    use arrow::array::{BooleanArray, UInt32Array};
    let file = std::fs::File::open(saved).map_err(Error::internal)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(Error::internal)?;
    for b in reader {
        let b = b.map_err(Error::internal)?;
        if b.schema().fields() != keys_schema().fields() {
            return Err(Error::internal(
                "the saved keys are not in this release's layout",
            ));
        }
        let paths = b.column(1).as_string::<i32>();
        let keep: BooleanArray = (0..b.num_rows())
            .map(|i| Some(unchanged.contains(paths.value(i))))
            .collect();
        let b = arrow::compute::filter_record_batch(&b, &keep).map_err(Error::internal)?;
        let paths = b.column(1).as_string::<i32>();
        let files: UInt32Array = (0..b.num_rows())
            .map(|i| index.get(paths.value(i)).copied())
            .collect();
        let mut columns = b.columns().to_vec();
        columns[0] = Arc::new(files);
        w.write(&RecordBatch::try_new(keys_schema(), columns).map_err(Error::internal)?)
            .map_err(Error::internal)?;
    }
    Ok(())
}

/// `work`, or [`Error::Interrupted`] as soon as a stop is asked for: a
/// DataFusion query has no batch boundary of ours to look at the flag.
async fn until_stopped<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        biased;
        _ = crate::cancel::wait() => Err(Error::Interrupted),
        r = work => r,
    }
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

/// Every source row's key, in a Parquet file: read and hashed, or, for the
/// files of a Delta input that did not change since the keys were saved,
/// taken from the saved keys.
async fn write_keys(
    input: &Input,
    read_columns: &[String],
    prepare: Arc<PrepareStage>,
    saved: Option<&SavedKeys>,
    path: &Path,
) -> Result<()> {
    let names: Vec<String> = input
        .files
        .iter()
        .map(|f| input.relative_name(f).to_string())
        .collect();
    let index: HashMap<String, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect();
    let files = input.file_indices();
    let reused = |f: &crate::store::FileEntry| {
        saved.is_some_and(|s| s.unchanged.contains(input.relative_name(f)))
    };
    let to_read = Input {
        files: input.files.iter().filter(|f| !reused(f)).cloned().collect(),
        ..input.clone()
    };
    let saved_file = saved.map(|s| (s.file.path().to_path_buf(), s.unchanged.clone()));
    let (tx, mut rx) = mpsc::channel::<Result<SourceBatch>>(2);
    let reading = {
        let columns = read_columns.to_vec();
        tokio::spawn(
            async move { source::read(&to_read, &columns, source::READ_BATCH_ROWS, tx).await },
        )
    };
    let path = path.to_path_buf();
    let hashing = tokio::task::spawn_blocking(move || -> Result<()> {
        let mut w = small_writer(&path, keys_schema())?;
        while let Some(item) = rx.blocking_recv() {
            crate::cancel::check()?;
            let sb = item?;
            let f = *files
                .get(&sb.file)
                .ok_or_else(|| Error::internal("a batch of an unlisted file"))?;
            w.write(&prepare.keys(&sb, f as u32, &names[f])?)
                .map_err(Error::internal)?;
        }
        if let Some((saved, unchanged)) = saved_file {
            copy_saved_keys(&saved, &unchanged, &index, &mut w)?;
        }
        w.close().map_err(Error::internal)?;
        Ok(())
    });
    let hashed = hashing.await.map_err(Error::internal)?;
    let read = reading.await.map_err(Error::internal)?;
    read.and(hashed)
}

/// Writes a query's result to a file of the comparison, showing each
/// batch to `seen` on the way.
async fn write_stream(
    mut stream: datafusion::physical_plan::SendableRecordBatchStream,
    path: &Path,
    mut seen: impl FnMut(&RecordBatch),
) -> Result<()> {
    let mut w = small_writer(path, stream.schema())?;
    while let Some(b) = stream.next().await {
        let b = b.map_err(diff_error)?;
        seen(&b);
        w.write(&b).map_err(Error::internal)?;
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
