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

use crate::store::{self, FileEntry, Stores};
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

    /// Rows sent so far.
    pub(crate) fn rows(&self) -> u64 {
        self.next_row
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
}

/// Lists the files behind `path` and reads the schema of the first one.
pub async fn open(
    stores: &Stores,
    path: &str,
    format: Option<Format>,
    csv: &CsvOptions,
) -> Result<Input> {
    let (format, files) = match format.or_else(|| Format::from_name(path.trim_end_matches('/'))) {
        Some(f) => (f, stores.list_files(path, f.extensions()).await?),
        None if store::is_glob(path) => {
            return Err(Error::input(
                path,
                "cannot tell the format from this pattern: set input.format to \"parquet\" or \"csv\"",
            ));
        }
        None => {
            // A directory or prefix: take whichever format it holds (Parquet
            // first), listing it once.
            let exts: Vec<&str> = [Format::Parquet, Format::Csv]
                .iter()
                .flat_map(|f| f.extensions().iter().copied())
                .collect();
            let found = stores.list_files(path, &exts).await.map_err(|e| match e {
                Error::Input { file, message } if message.starts_with("the directory holds no") => {
                    Error::input(
                        file,
                        "the directory holds no Parquet (.parquet) or CSV (.csv, .tsv, .txt) file",
                    )
                }
                other => other,
            })?;
            let is =
                |f: Format, e: &FileEntry| Format::from_name(e.location.path.as_ref()) == Some(f);
            let format = if found.iter().any(|e| is(Format::Parquet, e)) {
                Format::Parquet
            } else {
                Format::Csv
            };
            let files = found.into_iter().filter(|e| is(format, e)).collect();
            (format, files)
        }
    };
    let (schema, total_rows) = match format {
        Format::Parquet => parquet::schema_and_rows(&files).await?,
        Format::Csv => (csv::infer_schema(&files[0], csv).await?, None),
    };
    Ok(Input {
        files,
        format,
        schema,
        total_rows,
        csv: csv.clone(),
    })
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
        let done = match input.format {
            Format::Parquet => parquet::read(file, &input.schema, columns, batch_rows, &tx).await,
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
            schema.index_of(c).map_err(|_| {
                Error::input(
                    file,
                    format!("no column '{c}'; the columns are: {}", column_list(schema)),
                )
            })
        })
        .collect()
}

/// `a, b, c` of a schema's field names, for messages.
pub fn column_list(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
