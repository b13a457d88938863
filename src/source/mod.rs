//! Sources: an input path/URL → a bounded stream of record batches.
//!
//! Files are read one after another, one batch at a time: memory is bounded by
//! [`READ_BATCH_ROWS`] and the capacity of the channel the caller hands in,
//! never by the size of the input.

mod csv;
mod filter;
pub mod parquet;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use crate::delta::DeltaTarget;
use crate::store::{self, FileEntry, Missing, Stores};
use crate::{Error, Result};

pub use self::csv::CsvOptions;
pub use self::filter::RowFilter;

/// Rows per record batch read from a file. A batch is the unit that flows
/// through the pipeline, so this is also the embedder's sort window (1,024
/// rows: several inference batches even for short texts) and the step of
/// the progress display.
pub const READ_BATCH_ROWS: usize = 1024;

/// File formats embedflow reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Some(Format::Parquet),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Parquet => &[".parquet", ".parq"],
            Format::Csv => &[".csv", ".tsv", ".txt"],
        }
    }

    /// Extensions that make a file in a directory input part of it: `.txt`
    /// is not one (a README.txt is no data file), though a file named
    /// explicitly may have it.
    fn directory_extensions(self) -> &'static [&'static str] {
        match self {
            Format::Parquet => &[".parquet", ".parq"],
            Format::Csv => &[".csv", ".tsv"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "Parquet",
            Format::Csv => "CSV",
        }
    }

    /// Guesses the format from a file name.
    pub fn from_name(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        [Format::Parquet, Format::Csv]
            .into_iter()
            .find(|f| f.extensions().iter().any(|e| lower.ends_with(e)))
    }
}

/// A batch read from one file, with where it came from (for error messages).
pub struct SourceBatch {
    pub file: Arc<str>,
    /// 0-based index, within its file, of the batch's first data row.
    pub first_row: u64,
    pub batch: RecordBatch,
}

/// Sends a file's batches downstream, numbering their rows.
pub(crate) struct Emitter<'a> {
    file: Arc<str>,
    next_row: u64,
    tx: &'a mpsc::Sender<Result<SourceBatch>>,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(file: Arc<str>, tx: &'a mpsc::Sender<Result<SourceBatch>>) -> Self {
        Emitter {
            file,
            next_row: 0,
            tx,
        }
    }

    /// Sends one batch; false when the receiver is gone (the run is ending).
    pub(crate) async fn send(&mut self, batch: RecordBatch) -> bool {
        let n = batch.num_rows() as u64;
        let item = SourceBatch {
            file: Arc::clone(&self.file),
            first_row: self.next_row,
            batch,
        };
        self.next_row += n;
        self.tx.send(Ok(item)).await.is_ok()
    }

    /// The next row's position in the file (after the last batch sent).
    pub(crate) fn rows(&self) -> u64 {
        self.next_row
    }

    /// Skips to row `row` of the file (the start of the next row group read).
    pub(crate) fn skip_to(&mut self, row: u64) {
        self.next_row = row;
    }
}

/// An opened input: the files, their common schema and, when the format
/// records it, the total row count (for an ETA).
#[derive(Clone)]
pub struct Input {
    pub files: Vec<FileEntry>,
    pub format: Format,
    pub schema: SchemaRef,
    pub total_rows: Option<u64>,
    pub csv: CsvOptions,
    /// Set when the input is a Delta table: which, at which version.
    pub table: Option<TableInput>,
    /// Row groups to read, by file (its display name); a file not named is
    /// read whole. A shard reads the row groups of its units only.
    pub row_groups: Arc<std::collections::HashMap<Arc<str>, Vec<usize>>>,
}

/// A Delta table read as an input.
#[derive(Clone, Debug)]
pub struct TableInput {
    /// The table as the job names it (files are `PATH/RELATIVE`).
    pub path: String,
    pub version: i64,
}

impl Input {
    /// The file at `index` of the listing, as messages name it.
    pub fn display_of(&self, index: usize) -> &str {
        self.files
            .get(index)
            .map_or("?", |f| f.location.display.as_str())
    }

    /// Each file's index in the listing, by the name its batches carry
    /// ([`SourceBatch::file`]).
    pub fn file_indices(&self) -> std::collections::HashMap<Arc<str>, usize> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (Arc::from(f.location.display.as_str()), i))
            .collect()
    }

    /// A file's path relative to the input table (Delta files never
    /// change, so the same name is the same rows), or its name as shown.
    pub fn relative_name<'a>(&self, file: &'a FileEntry) -> &'a str {
        let shown = file.location.display.as_str();
        match &self.table {
            Some(t) => shown
                .strip_prefix(t.path.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(shown),
            None => shown,
        }
    }
}

/// Lists the files behind `path` and reads the schema of the first one.
///
/// A directory (or S3 prefix) is read in one format: the one `format` names,
/// else the one its files have. One that holds both Parquet and CSV files is
/// refused, naming them, rather than half read; files of another kind (a
/// README.txt) are skipped and named in a warning, never parsed by accident.
pub async fn open(
    stores: &Stores,
    path: &str,
    format: Option<Format>,
    csv: &CsvOptions,
) -> Result<Input> {
    // A folder that is a Delta table is read as one: the files of its
    // newest version, not every file in the folder.
    if format.is_none() && !store::is_glob(path) {
        let t = DeltaTarget::resolve_input(stores, path)?;
        if let Some(state) = t.state(None).await? {
            let data = t.readable_files(&state)?;
            return table_input(stores, path, None, state.version(), data).await;
        }
    }
    let named = format.or_else(|| Format::from_name(path.trim_end_matches('/')));
    let (format, files) = if store::is_glob(path) {
        let Some(f) = named else {
            return Err(Error::input(
                path,
                "cannot tell the format from this pattern: set input.format to \"parquet\" or \"csv\"",
            ));
        };
        (f, stores.list_files(path, f.extensions()).await?)
    } else {
        // Every file is listed, so a missing one is described by the
        // kinds this function reads.
        let all = stores.find_files(path, &[]).await?.map_err(|m| {
            let message = match m {
                Missing::EmptyDirectory => NO_DATA_FILES.to_string(),
                Missing::NoSuchKey => m.message(&match named {
                    Some(f) => f.extensions().join(" or "),
                    None => "Parquet or CSV".into(),
                }),
                m => m.message(""),
            };
            Error::input(path, message)
        })?;
        let single = all.len() == 1
            && stores
                .resolve(path)
                .is_ok_and(|root| root.path == all[0].location.path);
        match (single, named) {
            (true, Some(f)) => (f, all),
            (true, None) => {
                return Err(Error::input(
                    path,
                    "cannot tell the format from the file name: set input.format to \"parquet\" or \"csv\"",
                ));
            }
            (false, named) => directory_files(path, all, named)?,
        }
    };
    let (schema, total_rows) = match format {
        Format::Parquet => parquet::schema_and_rows(&files).await?,
        Format::Csv => (csv::infer_schema(&files[0], csv).await?, None),
    };
    unique_names(&files[0].location.display, &schema, format)?;
    Ok(Input {
        files,
        format,
        schema,
        total_rows,
        csv: csv.clone(),
        table: None,
        row_groups: Default::default(),
    })
}

/// Opens a Delta Lake table (local or S3) at `version`, newest when `None`:
/// its data files, read as Parquet.
pub async fn open_table(stores: &Stores, path: &str, version: Option<i64>) -> Result<Input> {
    let (read_version, data) = DeltaTarget::resolve_input(stores, path)?
        .data_files(version)
        .await?;
    table_input(stores, path, version, read_version, data).await
}

/// The data files of a table state already read, as an input.
pub async fn table_state_input(
    stores: &Stores,
    table: &DeltaTarget,
    state: &crate::delta::TableState,
) -> Result<Input> {
    let data = table.readable_files(state)?;
    table_input(
        stores,
        table.display(),
        Some(state.version()),
        state.version(),
        data,
    )
    .await
}

/// The input a table's data files (at `read_version`, the one `version`
/// asked for) make.
async fn table_input(
    stores: &Stores,
    path: &str,
    version: Option<i64>,
    read_version: i64,
    data: Vec<(String, u64)>,
) -> Result<Input> {
    if data.is_empty() {
        return Err(Error::input(
            path,
            match version {
                Some(v) => format!("version {v} of the Delta table holds no file"),
                None => "the Delta table holds no file".into(),
            },
        ));
    }
    let base = path.trim_end_matches('/');
    let mut files = Vec::with_capacity(data.len());
    for (rel, size) in data {
        let shown = format!("{base}/{rel}");
        files.push(FileEntry {
            location: stores.resolve(&shown)?,
            size,
            // A Delta table's files never change in place.
            version: None,
        });
    }
    let (schema, total_rows) = parquet::schema_and_rows(&files).await?;
    unique_names(&files[0].location.display, &schema, Format::Parquet)?;
    Ok(Input {
        files,
        format: Format::Parquet,
        schema,
        total_rows,
        csv: CsvOptions::default(),
        table: Some(TableInput {
            path: base.to_string(),
            version: read_version,
        }),
        row_groups: Default::default(),
    })
}

const NO_DATA_FILES: &str = "the directory holds no Parquet (.parquet) or CSV (.csv, .tsv) file";

/// Refuses two columns of one name: which one a name means would be a guess,
/// and Parquet readers (pyarrow, polars) refuse such a file as output.
fn unique_names(file: &str, schema: &arrow::datatypes::Schema, format: Format) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if let Some(j) = seen.insert(f.name().as_str(), i) {
            let holder = match format {
                Format::Csv => "the header",
                Format::Parquet => "the schema",
            };
            return Err(Error::input(
                file,
                format!(
                    "{holder} names the column '{}' twice (columns {} and {}); column names must be unique: rename one",
                    f.name(),
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

/// Picks a directory's files of one format (see [`open`]).
fn directory_files(
    path: &str,
    all: Vec<FileEntry>,
    format: Option<Format>,
) -> Result<(Format, Vec<FileEntry>)> {
    let kind = |e: &FileEntry| {
        let name = e
            .location
            .path
            .filename()
            .unwrap_or("")
            .to_ascii_lowercase();
        [Format::Parquet, Format::Csv]
            .into_iter()
            .find(|f| f.directory_extensions().iter().any(|x| name.ends_with(x)))
    };
    let of = |f: Format| all.iter().filter(|e| kind(e) == Some(f)).count();
    let (parquet, csv) = (of(Format::Parquet), of(Format::Csv));
    let format = match format {
        Some(f) => f,
        None if parquet > 0 && csv > 0 => {
            let list = |f: Format| {
                names(
                    all.iter()
                        .filter(|e| kind(e) == Some(f))
                        .map(|e| e.location.display.as_str()),
                )
            };
            return Err(Error::input(
                path,
                format!(
                    "holds both Parquet files ({}) and CSV files ({}); an input is read in one format: set input.format = \"parquet\" or \"csv\" (the other files are then skipped), or name the files with a glob",
                    list(Format::Parquet),
                    list(Format::Csv)
                ),
            ));
        }
        None if parquet > 0 => Format::Parquet,
        None if csv > 0 => Format::Csv,
        None => {
            return Err(Error::input(
                path,
                format!(
                    "{NO_DATA_FILES}{}",
                    if all.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; it holds {}",
                            names(all.iter().map(|e| e.location.display.as_str()))
                        )
                    }
                ),
            ));
        }
    };
    let (files, skipped): (Vec<FileEntry>, Vec<FileEntry>) =
        // A stray file (no Parquet or CSV extension) is never guessed at:
        // it is skipped and named.
        all.into_iter().partition(|e| kind(e) == Some(format));
    if !skipped.is_empty() {
        tracing::warn!(
            "input {path}: reading {} {} file{}; skipping {} other file{}: {}",
            files.len(),
            format.name(),
            if files.len() == 1 { "" } else { "s" },
            skipped.len(),
            if skipped.len() == 1 { "" } else { "s" },
            names(skipped.iter().map(|e| e.location.display.as_str()))
        );
    }
    if files.is_empty() {
        return Err(Error::input(
            path,
            format!(
                "the directory holds no {} file ({}); it holds {}",
                format.name(),
                format.directory_extensions().join(", "),
                names(skipped.iter().map(|e| e.location.display.as_str()))
            ),
        ));
    }
    Ok((format, files))
}

/// Up to five names, then how many more.
fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = it.collect();
    let mut out = all.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 5 {
        out.push_str(&format!(" and {} more", all.len() - 5));
    }
    out
}

/// Reads every file of `input` in order, sending batches of the `columns`
/// (by name) into `tx`. Returns early, without error, when the receiver is gone.
pub async fn read(
    input: &Input,
    columns: &[String],
    batch_rows: usize,
    tx: mpsc::Sender<Result<SourceBatch>>,
) -> Result<()> {
    for file in &input.files {
        let groups = input
            .row_groups
            .get(file.location.display.as_str())
            .map(Vec::as_slice);
        if groups.is_some_and(<[usize]>::is_empty) {
            continue;
        }
        let done = match input.format {
            Format::Parquet => {
                parquet::read(file, &input.schema, columns, batch_rows, groups, &tx).await
            }
            Format::Csv => {
                csv::read(file, &input.schema, columns, &input.csv, batch_rows, &tx).await
            }
        };
        match done {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Indices of `columns` in `schema`, with an error naming the file and the
/// columns it does have when one is missing.
fn projection(
    file: &str,
    schema: &arrow::datatypes::Schema,
    columns: &[String],
) -> Result<Vec<usize>> {
    columns
        .iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| Error::missing_column(file, c, schema))
        })
        .collect()
}
