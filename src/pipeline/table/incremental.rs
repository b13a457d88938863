//! An incremental run: which source rows the table already holds, as they
//! are now. Every source row gets a key (id, SHA-256 of the text embedded
//! and the columns copied); the keys are compared with the table's by a
//! partitioned join ([`super::buckets`]) in bounded memory, whatever the
//! table's size. The result:
//!
//! - counts (unchanged, changed, new, deleted);
//! - the source rows to embed (new and changed), which the prepare stage
//!   picks from the rows it reads;
//! - the unchanged rows' chunk rows and vectors, copied from the table into
//!   the new version's parts (never embedded again).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::mpsc;

use crate::delta::{DeltaTarget, TableState};
use crate::progress::Changes;
use crate::sink::CONTENT_HASH;
use crate::source::{self, Input, SourceBatch};
use crate::{Error, Result};

use super::buckets::{self, Pos, RowSet, Spill};
use super::fingerprint;
use super::run::{DoneUnits, TableRun};
use crate::job::JobPlan;
use crate::pipeline::check::CheckedJob;
use crate::sink::UpdateMode;

/// Rows per row group of the saved keys: what their writer buffers.
const KEYS_ROW_GROUP: usize = 65_536;

/// Each row's key for the comparison with the table: the prepare stage
/// knows what a row embeds (its text or image and passthrough values), the
/// table run only compares and copies.
pub(crate) trait RowKeys: Send + Sync {
    /// The keys ([`keys_schema`]) of the rows of a read batch that would be
    /// embedded: file index, file name, row, id as text, content hash.
    fn keys(&self, sb: &SourceBatch, file: u32, name: &str) -> Result<RecordBatch>;
}

/// Columns of an incremental run's keys file.
pub(crate) fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::UInt32, false),
        // The file's name (relative to a Delta input), for a later run
        // that reuses the keys of files that did not change.
        Field::new("path", DataType::Utf8, false),
        Field::new("row", DataType::UInt64, false),
        Field::new("id", DataType::Utf8, true),
        Field::new("hash", DataType::Binary, false),
    ]))
}

/// The comparison's result, with its files in a folder removed when this
/// is dropped.
pub(crate) struct Diff {
    pub changes: Changes,
    dir: tempfile::TempDir,
    /// Source rows to embed (new and changed), by input file index.
    pub todo: Arc<RowSet>,
    /// The table's rows to copy, by file index in `old`.
    keep: Arc<RowSet>,
    /// The table's files, read as an input.
    old: Option<Input>,
}

impl Diff {
    /// This run's keys, saved with the table version it commits so that the
    /// next run over a Delta input need not read the files that did not
    /// change.
    pub(crate) fn keys_path(&self) -> PathBuf {
        self.dir.path().join("keys.parquet")
    }

    /// The unchanged rows of the table, streamed: the table's files that
    /// hold one, read in order, each batch filtered to its kept rows.
    pub(crate) fn unchanged_rows(&self) -> mpsc::Receiver<Result<RecordBatch>> {
        let (tx, rx) = mpsc::channel(2);
        let Some(old) = &self.old else {
            return rx;
        };
        let indices = old.file_indices();
        let keep = Arc::clone(&self.keep);
        let input = Input {
            files: old
                .files
                .iter()
                .enumerate()
                .filter(|(i, _)| keep.touches(*i as u32))
                .map(|(_, f)| f.clone())
                .collect(),
            ..old.clone()
        };
        let columns: Vec<String> = old
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        tokio::spawn(async move {
            let (src_tx, mut src_rx) = mpsc::channel::<Result<SourceBatch>>(2);
            let reading = tokio::spawn(async move {
                source::read(&input, &columns, source::READ_BATCH_ROWS, src_tx).await
            });
            while let Some(item) = src_rx.recv().await {
                let kept = item.and_then(|sb| {
                    let f = *indices
                        .get(&sb.file)
                        .ok_or_else(|| Error::internal("a batch of an unlisted table file"))?;
                    let mask =
                        BooleanArray::from(keep.mask(f as u32, sb.first_row, sb.batch.num_rows()));
                    arrow::compute::filter_record_batch(&sb.batch, &mask).map_err(Error::internal)
                });
                let failed = kept.is_err();
                if kept.as_ref().is_ok_and(|b| b.num_rows() == 0) {
                    continue;
                }
                if tx.send(kept).await.is_err() || failed {
                    return;
                }
            }
            if let Err(e) = reading.await.map_err(Error::internal).and_then(|r| r) {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }
}

/// A writer of the saved keys, with small row groups.
fn small_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<std::fs::File>> {
    let file = std::fs::File::create(path).map_err(Error::internal)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(KEYS_ROW_GROUP))
        .build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(Error::internal)
}

/// Reads the input once for its keys and compares them with the table.
pub(crate) async fn compare(
    c: &CheckedJob,
    row_keys: Arc<dyn RowKeys>,
    id_column: &str,
    target: &DeltaTarget,
    base: Option<&TableState>,
    units: DoneUnits,
) -> Result<Diff> {
    let (input, stores, read_columns) = (&c.input, &c.stores, &c.read_columns);
    let dir = tempfile::Builder::new()
        .prefix("embedflow-diff-")
        .tempdir()
        .map_err(|e| Error::internal(format!("cannot make a temporary folder: {e}")))?;
    let keys_path = dir.path().join("keys.parquet");
    // A shard keys its own rows: saved keys are the whole input's.
    let saved = match (units.sharded(), base) {
        (false, Some(base)) => saved_keys(input, stores, target, base, dir.path()).await,
        _ => None,
    };
    let files_reused = saved.as_ref().map_or(0, |s| s.unchanged.len());
    let new_rows = write_keys(
        input,
        read_columns,
        row_keys,
        saved.as_ref(),
        &keys_path,
        units,
    )
    .await?;

    let old = match base {
        Some(base) if !base.files.is_empty() => {
            Some(source::table_state_input(stores, target, base).await?)
        }
        _ => None,
    };
    let old_rows = old.as_ref().and_then(|o| o.total_rows).unwrap_or(0);
    let buckets = buckets::buckets_for(new_rows.max(old_rows));
    tracing::info!(
        new_rows,
        old_rows,
        buckets,
        "comparing the input with the table"
    );
    let new = {
        let (keys, dir) = (keys_path.clone(), dir.path().to_path_buf());
        tokio::task::spawn_blocking(move || spill_new(&keys, &dir, buckets))
            .await
            .map_err(Error::internal)??
    };
    let old_buckets = spill_old(old.as_ref(), id_column, dir.path(), buckets).await?;
    let joined = tokio::task::spawn_blocking(move || {
        buckets::join(&new, &old_buckets, crate::cancel::check)
    })
    .await
    .map_err(Error::internal)??;
    let outcome = joined.map_err(|r| repeated_id(input, id_column, &r))?;
    Ok(Diff {
        changes: Changes {
            rows: outcome.rows,
            unchanged: outcome.unchanged,
            changed: outcome.changed,
            new: outcome.new,
            deleted: outcome.deleted,
            files_reused,
        },
        dir,
        todo: Arc::new(outcome.todo),
        keep: Arc::new(outcome.keep),
        old,
    })
}

/// An id found twice in the input, in words.
fn repeated_id(input: &Input, id_column: &str, r: &buckets::Repeated) -> Error {
    let name = |p: Pos| input.display_of(p.file as usize);
    Error::Data(format!(
        "input {}: the id column {id_column} holds {} more than once (rows {} and {}{}); an incremental run needs one row per id (or set output.mode = \"full\")",
        name(r.first),
        r.id,
        r.first.row + 1,
        r.again.row + 1,
        if r.first.file == r.again.file {
            String::new()
        } else {
            format!(" of {}", name(r.again))
        }
    ))
}

/// Spills the source's keys (the saved keys file) to buckets.
fn spill_new(keys: &Path, dir: &Path, buckets: usize) -> Result<Vec<PathBuf>> {
    let mut spill = Spill::create(dir, "new", buckets)?;
    spill_keys_file(keys, &mut spill)?;
    spill.finish()
}

/// Adds a keys file's rows to a spill.
pub(crate) fn spill_keys_file(keys: &Path, spill: &mut Spill) -> Result<()> {
    let file = std::fs::File::open(keys).map_err(Error::internal)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(Error::internal)?;
    for b in reader {
        crate::cancel::check()?;
        let b = b.map_err(Error::internal)?;
        let files = b.column(0).as_primitive::<arrow::datatypes::UInt32Type>();
        let rows = b.column(2).as_primitive::<arrow::datatypes::UInt64Type>();
        let ids = b.column(3).as_string::<i32>();
        let hashes = b.column(4).as_binary::<i32>();
        for i in 0..b.num_rows() {
            let id = ids.is_valid(i).then(|| ids.value(i).as_bytes());
            let at = Pos {
                file: files.value(i),
                row: rows.value(i),
            };
            spill.push(id, hashes.value(i), at)?;
        }
    }
    Ok(())
}

/// Spills the table's keys (its id and content hash columns, one key per
/// chunk row) to buckets.
pub(crate) async fn spill_old(
    old: Option<&Input>,
    id_column: &str,
    dir: &Path,
    buckets: usize,
) -> Result<Vec<PathBuf>> {
    let mut spill = Spill::create(dir, "old", buckets)?;
    let Some(old) = old else {
        return spill.finish();
    };
    let indices = old.file_indices();
    let columns = vec![id_column.to_string(), CONTENT_HASH.to_string()];
    let (tx, mut rx) = mpsc::channel::<Result<SourceBatch>>(2);
    let input = old.clone();
    let reading =
        tokio::spawn(async move { source::read(&input, &columns, KEYS_ROW_GROUP, tx).await });
    let spilling = tokio::task::spawn_blocking(move || -> Result<Vec<PathBuf>> {
        while let Some(item) = rx.blocking_recv() {
            crate::cancel::check()?;
            let sb = item?;
            let file = *indices
                .get(&sb.file)
                .ok_or_else(|| Error::internal("a batch of an unlisted table file"))?
                as u32;
            let ids = arrow::compute::cast(sb.batch.column(0), &DataType::Utf8)
                .map_err(Error::internal)?;
            let ids = ids.as_string::<i32>();
            let hashes = arrow::compute::cast(sb.batch.column(1), &DataType::Binary)
                .map_err(Error::internal)?;
            let hashes = hashes.as_binary::<i32>();
            for i in 0..sb.batch.num_rows() {
                let id = ids.is_valid(i).then(|| ids.value(i).as_bytes());
                let at = Pos {
                    file,
                    row: sb.first_row + i as u64,
                };
                spill.push(id, hashes.value(i), at)?;
            }
        }
        spill.finish()
    });
    let spilled = spilling.await.map_err(Error::internal)?;
    let read = reading.await.map_err(Error::internal)?;
    read.and(spilled)
}

/// How a table run updates its table.
pub(crate) struct Update {
    /// What changed, for an incremental run over an existing table.
    pub(crate) diff: Option<Diff>,
    /// Why every row is embedded although the job is incremental.
    pub(crate) full_because: Option<String>,
}

/// Decides how a table run updates the table; an incremental one compares
/// the input with the table and copies the unchanged rows before any
/// embedding.
pub(crate) async fn start_update(
    run: &mut TableRun,
    c: &CheckedJob,
    plan: &JobPlan,
    row_keys: &Arc<dyn RowKeys>,
    fingerprint: &str,
    lineage: &[(String, String)],
) -> Result<Update> {
    if plan.output.mode == UpdateMode::Full {
        return Ok(Update {
            diff: None,
            full_because: None,
        });
    }
    let full_because = match run.base() {
        None => Some("the table is new".to_string()),
        Some(base) => {
            let props = base.properties();
            (props.get(fingerprint::FINGERPRINT).map(String::as_str) != Some(fingerprint))
                .then(|| fingerprint::fingerprint_change(props, lineage))
        }
    };
    let id = plan
        .input
        .id_column
        .as_deref()
        .ok_or_else(|| Error::internal("an incremental run without input.id_column"))?;
    let target = run.target();
    // A run that embeds every row still makes a table known by id: its keys
    // are compared with an empty table, which refuses a repeated id.
    let base = run.base().filter(|_| full_because.is_none());
    let diff = until_stopped(compare(
        c,
        Arc::clone(row_keys),
        id,
        &target,
        base,
        run.done_units(),
    ))
    .await?;
    if full_because.is_some() {
        return Ok(Update {
            diff: None,
            full_because,
        });
    }
    let rows = diff.unchanged_rows();
    until_stopped(run.copy(&c.stores, rows, diff.changes.unchanged)).await?;
    Ok(Update {
        diff: Some(diff),
        full_because: None,
    })
}

/// Where a table keeps the keys of the run that wrote a version.
pub(crate) fn saved_keys_name(table_version: i64) -> String {
    format!("{}/keys/v{table_version}.parquet", crate::delta::STATE_DIR)
}

/// Saves a committed run's keys beside the table, and drops older ones. A
/// failure costs the next run a full read of its input, nothing else.
pub(crate) async fn save_keys(target: &DeltaTarget, diff: &Diff, version: i64) {
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
pub(crate) const INPUT_VERSION: &str = "embedflow.input_version";

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
) -> Result<u64> {
    use arrow::array::{BooleanArray, UInt32Array};
    let file = std::fs::File::open(saved).map_err(Error::internal)?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(Error::internal)?;
    let mut rows = 0;
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
        rows += b.num_rows() as u64;
        w.write(&RecordBatch::try_new(keys_schema(), columns).map_err(Error::internal)?)
            .map_err(Error::internal)?;
    }
    Ok(rows)
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

/// Every source row's key, in a Parquet file: read and hashed, or, for the
/// files of a Delta input that did not change since the keys were saved,
/// taken from the saved keys.
async fn write_keys(
    input: &Input,
    read_columns: &[String],
    row_keys: Arc<dyn RowKeys>,
    saved: Option<&SavedKeys>,
    path: &Path,
    units: DoneUnits,
) -> Result<u64> {
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
    let hashing = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut w = small_writer(&path, keys_schema())?;
        let mut rows = 0;
        while let Some(item) = rx.blocking_recv() {
            crate::cancel::check()?;
            let sb = item?;
            if units.foreign(&sb.file, sb.first_row) {
                continue;
            }
            let f = *files
                .get(&sb.file)
                .ok_or_else(|| Error::internal("a batch of an unlisted file"))?;
            let keys = row_keys.keys(&sb, f as u32, &names[f])?;
            rows += keys.num_rows() as u64;
            w.write(&keys).map_err(Error::internal)?;
        }
        if let Some((saved, unchanged)) = saved_file {
            rows += copy_saved_keys(&saved, &unchanged, &index, &mut w)?;
        }
        w.close().map_err(Error::internal)?;
        Ok(rows)
    });
    let hashed = hashing.await.map_err(Error::internal)?;
    let read = reading.await.map_err(Error::internal)?;
    read.and(hashed)
}
