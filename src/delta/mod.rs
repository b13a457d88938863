//! Delta Lake tables (through `deltalake-core`, on our own arrow and
//! object_store). As inputs: the data files of a version, read as Parquet.
//! As outputs: a run writes ordinary Parquet part files into the
//! table's folder, where no reader looks until the log names them, and makes
//! them visible with **one** commit. Beside the log, `_embedflow/` holds what
//! a run needs to resume and to keep a second writer out:
//!
//! ```text
//! TABLE/_delta_log/…                       the table (Delta's)
//! TABLE/embedflow-RUN-fF-uU.parquet        parts, referenced once committed
//! TABLE/_embedflow/lease.json              who is writing now, until when
//! TABLE/_embedflow/runs/RUN/run.json       what the run is (to resume it)
//! TABLE/_embedflow/runs/RUN/units/fF-uU.json   one record per finished unit
//! ```
//!
//! Commits go through Delta's log store, which writes `_delta_log/N.json`
//! with put-if-absent: of two commits for one version, one lands.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::CommitBuilder;
use deltalake_core::kernel::{Action, Add, EagerSnapshot, Metadata, Protocol, Remove, StructType};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, logstore_with};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::store::{Location, Stores};
use crate::{Error, Result};

mod lease;

pub use lease::Lease;

/// Folder of embedflow's own files inside a table (Delta ignores `_` names).
pub const STATE_DIR: &str = "_embedflow";
/// The table property holding the fingerprint of the run that wrote a
/// version: what its vectors depend on (model, pooling, prompt, chunking…).
pub const FINGERPRINT: &str = "embedflow.fingerprint";
/// Prefix of the part files a run writes.
pub const PART_PREFIX: &str = "embedflow-";

/// A table location: the store, the table's URL and its Delta log store.
pub struct DeltaTarget {
    pub location: Location,
    log_store: LogStoreRef,
    /// Read as an input (`sql`, `report`, `input.format = "delta"`): its
    /// errors name it as an input.
    reading: bool,
}

/// The table as a run found it.
pub struct TableState {
    pub snapshot: EagerSnapshot,
    /// Its live files, sorted by path.
    pub files: Vec<TableFile>,
}

/// A live file of a table.
pub struct TableFile {
    /// Relative to the table.
    pub path: String,
    pub size: u64,
    /// Rows of the file are deleted by a deletion vector.
    pub deletion_vector: bool,
}

impl TableState {
    pub fn version(&self) -> i64 {
        self.snapshot.version() as i64
    }

    /// The table's own properties (Delta `configuration`).
    pub fn properties(&self) -> &HashMap<String, String> {
        self.snapshot.metadata().configuration()
    }

    /// Whether embedflow wrote this table (its properties carry embedflow's
    /// lineage).
    pub fn written_by_embedflow(&self) -> bool {
        self.properties()
            .keys()
            .any(|k| k.starts_with("embedflow."))
    }

    /// The names of its columns, as its schema gives them.
    pub fn column_names(&self) -> Vec<String> {
        let meta = serde_json::to_value(self.snapshot.metadata()).unwrap_or_default();
        let schema: serde_json::Value = meta["schemaString"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        schema["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str().map(str::to_string))
            .collect()
    }

    /// The paths of its live files.
    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// A finished part file, as the commit names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartFile {
    /// Relative to the table.
    pub path: String,
    pub size: u64,
    pub rows: u64,
    /// SHA-256 (hex) of the file's bytes as written: with `size`, the
    /// proof that the file a resume or a commit finds is the one recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DeltaTarget {
    /// Resolves a table path (local folder or `s3://bucket/prefix`).
    pub fn resolve(stores: &Stores, path: &str) -> Result<DeltaTarget> {
        let location = stores.resolve(path.trim_end_matches('/'))?;
        let url = match (&location.local, &location.s3) {
            (Some(local), _) => url::Url::from_directory_path(local)
                .map_err(|_| Error::output(path, "not a usable table folder"))?,
            (None, Some(b)) => url::Url::parse(&format!("s3://{}/{}/", b.bucket, location.path))
                .map_err(|e| Error::output(path, format!("not a usable table URL: {e}")))?,
            (None, None) => return Err(Error::internal("a location that is neither local nor S3")),
        };
        register_s3_log_stores();
        let log_store = logstore_with(Arc::clone(&location.store), &url, StorageConfig::default())
            .map_err(|e| Error::output(path, format!("cannot open the Delta log: {e}")))?;
        Ok(DeltaTarget {
            location,
            log_store,
            reading: false,
        })
    }

    /// [`resolve`](Self::resolve) for a table that is read, not written:
    /// its errors say "input".
    pub fn resolve_input(stores: &Stores, path: &str) -> Result<DeltaTarget> {
        Ok(DeltaTarget {
            reading: true,
            ..Self::resolve(stores, path)?
        })
    }

    /// Checks a job's table target before any work: a folder (or prefix)
    /// that is a Delta table, or holds nothing yet.
    ///
    /// A table that embedflow did not write is another tool's data: replaced
    /// only when `replace_foreign` (`output.mode = "overwrite"`) says so.
    pub async fn check(
        stores: &Stores,
        path: &str,
        overwrite: bool,
        replace_foreign: bool,
    ) -> Result<()> {
        let t = DeltaTarget::resolve(stores, path)?;
        if let Some(local) = &t.location.local
            && local.is_file()
        {
            return Err(Error::output(
                path,
                "is a file; a Delta table is a folder (or set output.format = \"parquet\")",
            ));
        }
        if t.is_table().await? {
            if !overwrite {
                return Err(Error::output(
                    path,
                    "is a Delta table already and output.overwrite = false",
                ));
            }
            if let Some(state) = t.current().await?
                && !state.written_by_embedflow()
                && !replace_foreign
            {
                let mut columns = state.column_names();
                let more = columns.len().saturating_sub(12);
                columns.truncate(12);
                return Err(Error::output(
                    path,
                    format!(
                        "is a Delta table that embedflow did not write (columns: {}{}); a run would replace its rows with embedflow's. Give another folder, or set output.mode = \"overwrite\" to replace it",
                        columns.join(", "),
                        if more > 0 {
                            format!(" and {more} more")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
            return Ok(());
        }
        let foreign: Vec<String> = t
            .list("")
            .await?
            .into_iter()
            // Parts and records of an interrupted first run are ours.
            .filter(|n| {
                !n.starts_with(STATE_DIR)
                    && !n.starts_with("_delta_log")
                    && !n.starts_with(PART_PREFIX)
            })
            .take(3)
            .collect();
        if !foreign.is_empty() {
            return Err(Error::output(
                path,
                format!(
                    "holds files but is not a Delta table (no _delta_log), e.g. {}; give an empty or new folder",
                    foreign.join(", ")
                ),
            ));
        }
        Ok(())
    }

    pub fn display(&self) -> &str {
        &self.location.display
    }

    /// The path users see of a file inside the table.
    pub fn child_display(&self, name: &str) -> String {
        format!("{}/{name}", self.display().trim_end_matches('/'))
    }

    fn key(&self, name: &str) -> Path {
        let rel = Path::from(name);
        let mut parts: Vec<_> = self.location.path.parts().collect();
        parts.extend(rel.parts());
        Path::from_iter(parts)
    }

    /// The table's current version, or `None` where there is no table yet.
    pub async fn current(&self) -> Result<Option<TableState>> {
        self.state(None).await
    }

    /// The data files of the table at `version` (newest when `None`), with
    /// their sizes, for reading as Parquet. Tables whose files alone do not
    /// hold their rows (partition values, deletion vectors, column mapping)
    /// are refused, naming the feature.
    pub async fn data_files(&self, version: Option<i64>) -> Result<(i64, Vec<(String, u64)>)> {
        let Some(state) = self.state(version).await? else {
            return Err(Error::input(
                self.display(),
                "is not a Delta table (no _delta_log)",
            ));
        };
        Ok((state.version(), self.readable_files(&state)?))
    }

    /// [`data_files`](Self::data_files) of a state already read.
    pub fn readable_files(&self, state: &TableState) -> Result<Vec<(String, u64)>> {
        let snap = &state.snapshot;
        let md = serde_json::to_value(snap.metadata()).map_err(Error::internal)?;
        let partitioned = md["partitionColumns"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if partitioned {
            return Err(Error::input(
                self.display(),
                format!(
                    "is a partitioned Delta table ({}): its partition values are not in the files; read a table without partitions",
                    md["partitionColumns"]
                ),
            ));
        }
        let mapping = snap
            .metadata()
            .configuration()
            .get("delta.columnMapping.mode");
        if mapping.is_some_and(|m| m != "none") {
            return Err(Error::input(
                self.display(),
                "uses Delta column mapping: its files' column names are not the table's",
            ));
        }
        if state.files.iter().any(|f| f.deletion_vector) {
            return Err(Error::input(
                self.display(),
                "has deletion vectors: rows deleted from its files would be read; run OPTIMIZE (purge) on it first",
            ));
        }
        Ok(state
            .files
            .iter()
            .map(|f| (f.path.clone(), f.size))
            .collect())
    }

    /// Registers `files` (of this table) in a DataFusion session as one
    /// Parquet table named `name`, with the S3 store when the table is on S3.
    pub async fn register(
        &self,
        ctx: &datafusion::prelude::SessionContext,
        name: &str,
        files: &[String],
    ) -> Result<()> {
        use datafusion::datasource::file_format::parquet::ParquetFormat;
        use datafusion::datasource::listing::{
            ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
        };
        let bad = |e: datafusion::error::DataFusionError| {
            Error::input(
                self.display(),
                format!("cannot read the table as '{name}': {e}"),
            )
        };
        if let Some(b) = &self.location.s3 {
            let base = url::Url::parse(&format!("s3://{}", b.bucket)).map_err(Error::internal)?;
            ctx.register_object_store(&base, Arc::clone(&b.store));
        }
        let mut urls = Vec::with_capacity(files.len());
        for rel in files {
            let key = self.key(rel);
            let url = match (&self.location.s3, &self.location.local) {
                (Some(b), _) => format!("s3://{}/{key}", b.bucket),
                (None, Some(_)) => format!("/{key}"),
                (None, None) => return Err(Error::internal("a location neither local nor S3")),
            };
            urls.push(ListingTableUrl::parse(&url).map_err(bad)?);
        }
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .infer_schema(&ctx.state())
            .await
            .map_err(bad)?;
        let provider = ListingTable::try_new(config).map_err(bad)?;
        ctx.register_table(name, Arc::new(provider))
            .map(|_| ())
            .map_err(bad)
    }

    /// Whether the location holds a Delta table (a `_delta_log` with a
    /// commit). A location that cannot be listed is no table: reading it
    /// as files says why.
    pub async fn is_table(&self) -> Result<bool> {
        if let Some(local) = &self.location.local
            && !local.join("_delta_log").is_dir()
        {
            return Ok(false);
        }
        Ok(self
            .log_store
            .is_delta_table_location()
            .await
            .unwrap_or(false))
    }

    /// The table at `version` (the newest when `None`).
    pub async fn state(&self, version: Option<i64>) -> Result<Option<TableState>> {
        if !self.is_table().await? {
            return Ok(None);
        }
        let snapshot = EagerSnapshot::try_new(self.log_store.as_ref(), version.map(|v| v as u64))
            .await
            .map_err(|e| self.log_error(version, &e))?;
        let mut files: Vec<TableFile> = snapshot
            .file_views(self.log_store.as_ref(), None)
            .map_ok(|f| TableFile {
                path: f.path().to_string(),
                size: f.size() as u64,
                deletion_vector: f.deletion_vector_descriptor().is_some(),
            })
            .try_collect()
            .await
            .map_err(|e| self.error(e))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(TableState { snapshot, files }))
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        let message = format!("Delta table: {e}");
        match self.reading {
            true => Error::input(self.display(), message),
            false => Error::output(self.display(), message),
        }
    }

    /// A log that could not be read, in words: a version past the newest,
    /// or a damaged commit file (named, with what to do).
    fn log_error(&self, version: Option<i64>, e: &(dyn std::error::Error + 'static)) -> Error {
        let text = chain_text(e).replace("Kernel error: ", "");
        let log = self.child_display("_delta_log");
        let newest = self.newest_commit();
        if let (Some(v), Some(n)) = (version, newest)
            && v > n
        {
            return self.error(format!("version {v} does not exist; the newest is {n}"));
        }
        let lower = text.to_ascii_lowercase();
        let damaged = [
            "json",
            "eof",
            "truncated",
            "parse",
            "missing field",
            "expected",
        ]
        .iter()
        .any(|w| lower.contains(w));
        if damaged {
            let file = newest.map_or_else(String::new, |n| {
                format!(" (the newest commit file is {log}/{n:020}.json)")
            });
            return self.error(format!(
                "its log cannot be read: a commit file is damaged or truncated{file}. Restore the file from a backup or a copy of the table; the library said: {text}"
            ));
        }
        self.error(format!("its log ({log}) cannot be read: {text}"))
    }

    /// The newest commit in a local table's log, by file name.
    fn newest_commit(&self) -> Option<i64> {
        let dir = self.location.local.as_ref()?.join("_delta_log");
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse::<i64>()
                    .ok()
            })
            .max()
    }

    /// Replaces the table's content with `parts` in one commit (a new table
    /// where there is none). `base` is the state the run started from: a
    /// commit that landed since makes this one fail rather than merge.
    pub async fn commit_overwrite(
        &self,
        base: Option<&TableState>,
        schema: &SchemaRef,
        parts: &[PartFile],
        properties: &[(String, String)],
        app: &[(String, serde_json::Value)],
    ) -> Result<i64> {
        self.prove_parts(parts).await?;
        let kernel_schema: StructType = schema
            .as_ref()
            .try_into_kernel()
            .map_err(|e| self.error(format!("the output schema has no Delta type: {e}")))?;
        let mut metadata = serde_json::json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "format": { "provider": "parquet", "options": {} },
            "schemaString": serde_json::to_string(&kernel_schema).map_err(Error::internal)?,
            "partitionColumns": [],
            "configuration": properties.iter().cloned().collect::<HashMap<_, _>>(),
            "createdTime": now_ms(),
        });
        let mut actions = Vec::new();
        if let Some(b) = base {
            // The same table, new content: keep its identity.
            let old = serde_json::to_value(b.snapshot.metadata()).map_err(Error::internal)?;
            metadata["id"] = old["id"].clone();
            if let Some(t) = old.get("createdTime") {
                metadata["createdTime"] = t.clone();
            }
            for f in &b.files {
                actions.push(Action::Remove(Remove {
                    path: f.path.clone(),
                    deletion_timestamp: Some(now_ms()),
                    data_change: true,
                    ..Default::default()
                }));
            }
        } else {
            let protocol: Protocol = serde_json::from_value(serde_json::json!({
                "minReaderVersion": 1,
                "minWriterVersion": 2,
            }))
            .map_err(Error::internal)?;
            actions.push(Action::Protocol(protocol));
        }
        let metadata: Metadata = serde_json::from_value(metadata).map_err(Error::internal)?;
        actions.push(Action::Metadata(metadata));
        let modified = now_ms();
        for p in parts {
            actions.push(Action::Add(Add {
                path: p.path.clone(),
                size: p.size as i64,
                partition_values: HashMap::new(),
                modification_time: modified,
                data_change: true,
                stats: Some(serde_json::json!({ "numRecords": p.rows }).to_string()),
                ..Default::default()
            }));
        }
        let operation = DeltaOperation::Write {
            mode: SaveMode::Overwrite,
            partition_by: None,
            predicate: None,
        };
        let committed = CommitBuilder::default()
            .with_actions(actions)
            .with_app_metadata(app.iter().cloned().collect())
            // Never rebased onto a commit that landed since: that one would
            // be overwritten without being read.
            .with_max_retries(0)
            .build(
                base.map(|b| {
                    &b.snapshot as &dyn deltalake_core::kernel::transaction::TableReference
                }),
                Arc::clone(&self.log_store),
                operation,
            )
            .await
            .map_err(|e| self.commit_error(&e))?;
        Ok(committed.version() as i64)
    }

    /// A failed commit in words: a lost race with another writer, a full
    /// disk (or a read-only one: the sink's words), or what the Delta
    /// library said.
    fn commit_error(&self, e: &(dyn std::error::Error + 'static)) -> Error {
        let text = chain_text(e);
        let why = if let Some(words) = crate::sink::io_words_in(e) {
            format!("{words}. Free some space (or fix the disk) and run the job again")
        } else if text.contains("Failed to commit transaction")
            || text.contains("Tried committing existing table version")
        {
            "another writer committed a version of this table while this run was writing it, and this commit lost the race. Run the job again (it starts from the new version)".to_string()
        } else {
            format!("the Delta library said: {text}")
        };
        self.error(format!("the commit failed, nothing was committed: {why}"))
    }

    /// The size of a file of the table.
    pub async fn size_of(&self, name: &str) -> Result<u64> {
        self.location
            .store
            .head(&self.key(name))
            .await
            .map(|m| m.size)
            .map_err(|e| self.store_error(name, e))
    }

    /// Reads a file of `_embedflow/` (None when absent).
    pub async fn read_state(&self, name: &str) -> Result<Option<Bytes>> {
        match self.location.store.get(&self.key(name)).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(|e| self.store_error(name, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Writes a file of the table (a whole object, so readers never see half).
    pub async fn write_state(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.location
            .store
            .put(&self.key(name), PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_error(name, e))?;
        self.sync_local(name)
    }

    /// Flushes a local file of the table (and its folder entry) to the disk:
    /// a record or part counts only once a power loss cannot undo it. S3
    /// has nothing to flush: an object is durable once its PUT answered.
    pub fn sync_local(&self, name: &str) -> Result<()> {
        let Some(root) = &self.location.local else {
            return Ok(());
        };
        crate::sink::sync_file_and_folder(&root.join(name)).map_err(|e| {
            Error::output(
                self.child_display(name),
                format!("cannot flush it to the disk: {e}"),
            )
        })
    }

    /// Why a part is not the file its record describes (`None`: it is):
    /// missing, another size, or (with `check_digest`, on the local disk,
    /// where reading it back is cheap) other bytes. S3 replaces objects
    /// whole, so there the size is checked.
    pub async fn disproves(&self, part: &PartFile, check_digest: bool) -> Result<Option<String>> {
        let meta = match self.location.store.head(&self.key(&part.path)).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => {
                return Ok(Some(format!("{} is missing", part.path)));
            }
            Err(e) => return Err(self.store_error(&part.path, e)),
        };
        if meta.size != part.size {
            return Ok(Some(format!(
                "{} is {} bytes, but {} were written",
                part.path, meta.size, part.size
            )));
        }
        let (Some(want), Some(root), true) =
            (part.sha256.as_deref(), &self.location.local, check_digest)
        else {
            return Ok(None);
        };
        let path = root.join(&part.path);
        let got = crate::runtime::spawn_cpu(move || {
            crate::embed::model::file_sha256(&path).map_err(Error::internal)
        })
        .await
        .map_err(|e| Error::output(self.child_display(&part.path), e))?;
        Ok((got != want).then(|| {
            format!(
                "{} holds other bytes than were written (SHA-256 {got}, recorded {want})",
                part.path
            )
        }))
    }

    /// Refuses to commit parts that are not the files recorded (missing or
    /// of another size): the commit would point readers at holes.
    async fn prove_parts(&self, parts: &[PartFile]) -> Result<()> {
        use futures::StreamExt;
        let mut checks = futures::stream::iter(parts)
            .map(|p| self.disproves(p, false))
            .buffer_unordered(16);
        let mut bad = Vec::new();
        while let Some(r) = checks.next().await {
            if let Some(why) = r? {
                bad.push(why);
            }
        }
        if bad.is_empty() {
            return Ok(());
        }
        bad.sort();
        let shown: Vec<&str> = bad.iter().take(5).map(String::as_str).collect();
        Err(self.error(format!(
            "nothing was committed: {} of the run's {} parts are not the files it wrote ({}{}); something removed or changed them while the run was stopped or running. Run the job again: it redoes the units whose parts fail their records",
            bad.len(),
            parts.len(),
            shown.join("; "),
            if bad.len() > shown.len() { "; …" } else { "" }
        )))
    }

    /// Writes a file only if there is none of that name; false when there is.
    async fn create_state(&self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .location
            .store
            .put_opts(&self.key(name), PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.location.store.delete(&self.key(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(name, e)),
        }
    }

    /// Names (relative to the table) of the objects under `dir` ("" for
    /// the whole table).
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let prefix = if dir.is_empty() {
            self.location.path.clone()
        } else {
            self.key(dir)
        };
        let base: Vec<_> = self.location.path.parts().collect();
        let listed: Vec<object_store::ObjectMeta> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.store_error(dir, e)),
            })?;
        Ok(listed
            .into_iter()
            .map(|m| {
                let parts: Vec<_> = m.location.parts().skip(base.len()).collect();
                Path::from_iter(parts).to_string()
            })
            .collect())
    }

    /// Removes every object under `dir`, and on a local disk the folders
    /// they leave empty.
    pub async fn remove_all(&self, dir: &str) -> Result<()> {
        for name in self.list(dir).await? {
            self.delete(&name).await?;
        }
        self.remove_empty_dirs(dir);
        Ok(())
    }

    /// On a local disk, removes the folders left empty under `dir` (object
    /// stores have no folders to leave).
    pub fn remove_empty_dirs(&self, dir: &str) {
        fn prune(p: &std::path::Path) -> bool {
            let Ok(entries) = std::fs::read_dir(p) else {
                return false;
            };
            let mut empty = true;
            for e in entries.flatten() {
                let path = e.path();
                if !(path.is_dir() && prune(&path)) {
                    empty = false;
                }
            }
            empty && std::fs::remove_dir(p).is_ok()
        }
        if let Some(local) = &self.location.local {
            prune(&local.join(dir));
        }
    }

    fn store_error(&self, name: &str, e: object_store::Error) -> Error {
        Error::output(self.child_display(name), self.location.explain(&e))
    }
}

/// An error and its sources as one line: the first line of each (the
/// Delta library's Display carries a backtrace under RUST_BACKTRACE), each
/// once.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let first_line =
        |e: &dyn std::error::Error| e.to_string().lines().next().unwrap_or("").to_string();
    let mut text = first_line(e);
    let mut cur = e.source();
    while let Some(inner) = cur {
        let line = first_line(inner);
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cur = inner.source();
    }
    text
}

/// Registers Delta's default log store (commits by put-if-absent) for
/// `s3://`, which deltalake-core leaves to its AWS crate; our S3 client
/// comes configured from the job.
fn register_s3_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let factories = deltalake_core::logstore::logstore_factories();
        for scheme in ["s3://", "s3a://"] {
            if let Ok(u) = url::Url::parse(scheme) {
                factories.insert(u, Arc::new(PutIfAbsentLogStores));
            }
        }
    });
}

/// Delta's default log store, for schemes deltalake-core has none for.
struct PutIfAbsentLogStores;

impl deltalake_core::logstore::LogStoreFactory for PutIfAbsentLogStores {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &url::Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<LogStoreRef> {
        Ok(deltalake_core::logstore::default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
