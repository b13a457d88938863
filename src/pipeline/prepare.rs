//! The prepare stage: filter, text, chunk and tokenize one input batch.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, LargeBinaryArray, RecordBatch, StringArray,
    UInt32Array, UInt64Array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use rayon::prelude::*;

use crate::chunk;
use crate::embed::image::ImageProcessor;
use crate::embed::{Encoded, TextEncoder};
use crate::job::{JobPlan, OnEmpty, OnError};
use crate::progress::Counters;
use crate::sink::UpdateMode;
use crate::source::{RowFilter, SourceBatch};
use crate::{Error, Result};

use super::stage::{Stop, spawn_thread};
use super::table::{RowKeys, UnitFilter, keys_schema};
use super::unit::WorkUnit;

/// What the prepare stage needs, shared with its rayon workers.
pub(super) struct PrepareStage {
    pub(super) plan: JobPlan,
    pub(super) encoder: Arc<TextEncoder>,
    pub(super) filter: Option<RowFilter>,
    /// Indices of the passthrough columns in the read batch.
    pub(super) passthrough_idx: Vec<usize>,
    pub(super) max_tokens: usize,
    pub(super) overlap: usize,
    pub(super) counters: Arc<Counters>,
    /// Hash each row's content (Delta outputs).
    pub(super) hash_rows: bool,
    /// An image job: how images are prepared, and where image paths are
    /// read from.
    pub(super) images: Option<ImageStage>,
}

/// What the prepare stage needs for images.
pub(super) struct ImageStage {
    pub(super) processor: ImageProcessor,
    pub(super) stores: Arc<crate::store::Stores>,
    /// The I/O runtime, for reading images named by path.
    pub(super) runtime: tokio::runtime::Handle,
    /// Bad rows reported so far (the first few are named on stderr).
    pub(super) reported: std::sync::atomic::AtomicU64,
}

/// Bad rows named one by one on stderr with `on_error = "skip"`; the rest
/// are counted.
const REPORTED_BAD_ROWS: u64 = 20;

/// Image files read at once from a path column.
const IMAGE_READS: usize = 16;

/// Each row's content: its text, or its image (bytes, or a path to them).
pub(super) enum Contents {
    Texts(Vec<Option<String>>),
    Images {
        data: LargeBinaryArray,
        /// The column holds paths (text), not the images' bytes.
        paths: bool,
    },
}

impl Contents {
    /// Nothing to embed: a null, empty or whitespace-only text; a null or
    /// 0-byte image, or an empty path.
    fn is_empty(&self, i: usize) -> bool {
        match self {
            Contents::Texts(t) => t[i].as_deref().is_none_or(|t| t.trim().is_empty()),
            Contents::Images { data, paths } => {
                data.is_null(i)
                    || data.value(i).is_empty()
                    || (*paths && data.value(i).trim_ascii().is_empty())
            }
        }
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Contents::Texts(t) => t[i].is_none(),
            Contents::Images { data, .. } => data.is_null(i),
        }
    }

    /// What a row's content hash covers: the text, the image's bytes, or
    /// its path (a path column's row changes when its path does).
    fn hashed(&self, i: usize) -> Option<&[u8]> {
        match self {
            Contents::Texts(t) => t[i].as_deref().map(str::as_bytes),
            Contents::Images { data, .. } => (!data.is_null(i)).then(|| data.value(i)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Contents::Texts(t) => t.len(),
            Contents::Images { data, .. } => data.len(),
        }
    }
}

/// One chunk of one row, before embedding.
pub(super) struct ChunkOut {
    pub(super) start: i64,
    pub(super) end: i64,
    pub(super) text: Option<String>,
    pub(super) encoded: Encoded,
}

impl PrepareStage {
    /// Starts the stage on its own thread: each read batch becomes a unit,
    /// but for the units `skip` says are done and the rows it masks.
    pub(super) fn spawn(
        self: Arc<Self>,
        skip: UnitFilter,
        stop: Stop,
        input: tokio::sync::mpsc::Receiver<Result<SourceBatch>>,
        output: tokio::sync::mpsc::Sender<Result<WorkUnit>>,
    ) -> Result<std::thread::JoinHandle<()>> {
        let span = tracing::info_span!("prepare_stage");
        spawn_thread("prepare", span, move || self.run(skip, stop, input, output))
    }

    fn run(
        &self,
        skip: UnitFilter,
        stop: Stop,
        mut input: tokio::sync::mpsc::Receiver<Result<SourceBatch>>,
        output: tokio::sync::mpsc::Sender<Result<WorkUnit>>,
    ) {
        while let Some(item) = input.blocking_recv() {
            if stop.is_set() {
                return;
            }
            // Units an interrupted run finished are in its parts already.
            if let Ok(sb) = &item
                && skip.done(sb)
            {
                continue;
            }
            // An incremental run embeds its new and changed rows only.
            let unit = item.and_then(|sb| {
                let mask = skip.mask(&sb)?;
                self.unit(sb, mask.as_deref())
            });
            let failed = unit.is_err();
            if output.blocking_send(unit).is_err() || failed {
                return;
            }
        }
    }

    /// The rows of a read batch this job embeds: those `todo` marks (an
    /// incremental run's new and changed rows; all when `None`) that pass
    /// the filter, with their 0-based positions in the file.
    fn selected(&self, sb: &SourceBatch, todo: Option<&[bool]>) -> Result<(RecordBatch, Vec<u64>)> {
        let n = sb.batch.num_rows();
        let (batch, mut at): (RecordBatch, Vec<u64>) = match todo {
            Some(mask) => (
                filter_record_batch(&sb.batch, &BooleanArray::from(mask.to_vec()))
                    .map_err(Error::internal)?,
                (0..n as u64).filter(|&i| mask[i as usize]).collect(),
            ),
            None => (sb.batch.clone(), (0..n as u64).collect()),
        };
        let batch = match &self.filter {
            Some(f) => {
                let (b, kept) = f.apply(&batch)?;
                at = kept.iter().map(|&k| at[k as usize]).collect();
                b
            }
            None => batch,
        };
        Ok((batch, at.into_iter().map(|i| sb.first_row + i).collect()))
    }

    /// Each row's text, or image.
    fn contents(&self, batch: &RecordBatch) -> Result<Contents> {
        let Some(col) = &self.plan.input.image_column else {
            return Ok(Contents::Texts(self.plan.input.text.render(batch)?));
        };
        let a = batch
            .column_by_name(col)
            .ok_or_else(|| Error::internal(format!("the image column {col} was not read")))?;
        let paths = matches!(
            a.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let data = arrow::compute::cast(a, &DataType::LargeBinary).map_err(Error::internal)?;
        let data = data
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .ok_or_else(|| Error::internal("images as binary"))?
            .clone();
        Ok(Contents::Images { data, paths })
    }

    /// The rows a table holds: all but those whose text is empty, when
    /// `embed.on_empty = "skip"`.
    fn kept_rows<'a>(&self, texts: &'a Contents) -> impl Iterator<Item = usize> + 'a {
        let skip = self.plan.embed.on_empty == OnEmpty::Skip;
        (0..texts.len()).filter(move |&i| !(skip && texts.is_empty(i)))
    }

    /// An incremental table knows its rows by id, so a row it would hold
    /// (`(index, 0-based row)`) without one is refused, also in a run that
    /// embeds every row: the next run could not compare it.
    fn require_ids(
        &self,
        file: &str,
        ids: &dyn Array,
        rows: impl Iterator<Item = (usize, u64)>,
    ) -> Result<()> {
        if !self.hash_rows || self.plan.output.mode != UpdateMode::Incremental {
            return Ok(());
        }
        for (i, row) in rows {
            if ids.is_null(i) {
                return Err(Error::Data(format!(
                    "input {file}: row {}: the id column {} is null; an incremental run needs an id on every row (or set output.mode = \"full\")",
                    row + 1,
                    self.plan.input.id_column.as_deref().unwrap_or_default()
                )));
            }
        }
        Ok(())
    }

    pub(super) fn unit(&self, sb: SourceBatch, todo: Option<&[bool]>) -> Result<WorkUnit> {
        let (file, first_row) = (Arc::clone(&sb.file), sb.first_row);
        let (batch, at) = self.selected(&sb, todo)?;
        // 1-based, for messages.
        let rows: Vec<u64> = at.iter().map(|r| r + 1).collect();
        Counters::add(&self.counters.rows_read, batch.num_rows() as u64);
        let texts = self.contents(&batch)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .and_then(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8).ok()),
            None => None,
        };
        if let Some(ids) = &ids {
            let kept = self.kept_rows(&texts).map(|i| (i, at[i]));
            self.require_ids(&sb.file, ids, kept)?;
        }
        let per_row: Vec<Result<Vec<ChunkOut>>> = match &texts {
            Contents::Texts(t) => t
                .par_iter()
                .enumerate()
                .map(|(i, t)| self.row(t.as_deref(), &sb.file, rows[i], ids.as_ref(), i))
                .collect(),
            Contents::Images { data, paths } => {
                self.image_rows(data, *paths, &texts, &sb.file, &rows, ids.as_ref())?
            }
        };

        let mut unit = WorkUnit {
            file,
            first_row,
            batch: batch
                .project(&self.passthrough_idx)
                .map_err(Error::internal)?,
            row_chunks: Vec::with_capacity(texts.len()),
            chunk_row: Vec::new(),
            chunk_index: Vec::new(),
            chunk_start: Vec::new(),
            chunk_end: Vec::new(),
            chunk_text: Vec::new(),
            encoded: Vec::new(),
            vectors: Vec::new(),
            row_hash: Vec::new(),
        };
        if self.hash_rows {
            unit.row_hash = content_hashes(&texts, &unit.batch)?;
        }
        let mut skipped = 0;
        let mut tokens = 0;
        for (r, chunks) in per_row.into_iter().enumerate() {
            let chunks = chunks?;
            if chunks.is_empty() {
                skipped += 1;
            }
            unit.row_chunks.push(chunks.len() as u32);
            for (k, c) in chunks.into_iter().enumerate() {
                tokens += c.encoded.len() as u64;
                unit.chunk_row.push(r as u32);
                unit.chunk_index.push(k as i32);
                unit.chunk_start.push(c.start);
                unit.chunk_end.push(c.end);
                if let Some(t) = c.text {
                    unit.chunk_text.push(t);
                }
                unit.encoded.push(c.encoded);
            }
        }
        Counters::add(&self.counters.rows_skipped, skipped);
        Counters::add(&self.counters.chunks, unit.encoded.len() as u64);
        Counters::add(&self.counters.tokens, tokens);
        Ok(unit)
    }

    /// ` (id = 42)` for messages about row `i`, when the job has an id column.
    fn id_of(&self, ids: Option<&ArrayRef>, i: usize) -> String {
        match (ids, &self.plan.input.id_column) {
            (Some(a), Some(c)) => {
                let s = a.as_any().downcast_ref::<StringArray>();
                match s {
                    Some(s) if s.is_valid(i) => format!(" ({c} = {})", s.value(i)),
                    _ => format!(" ({c} is null)"),
                }
            }
            _ => String::new(),
        }
    }

    /// `embed.on_empty` for an empty row: `Ok(true)` when it is skipped.
    fn empty_row(
        &self,
        what: &str,
        null: bool,
        file: &str,
        row: u64,
        ids: Option<&ArrayRef>,
        i: usize,
    ) -> Result<bool> {
        match self.plan.embed.on_empty {
            OnEmpty::Skip => Ok(true),
            OnEmpty::Fail => Err(Error::Data(format!(
                "input {file}: row {row}{}: the {what} ({}) is {}, and embed.on_empty = \"fail\"; set it to \"skip\"{} to go on",
                self.id_of(ids, i),
                self.plan.input.text_source,
                if null { "null" } else { "empty" },
                if self.images.is_some() {
                    ""
                } else {
                    " or \"embed\""
                },
            ))),
            OnEmpty::Embed => Ok(false),
        }
    }

    /// A row's chunks; empty when the row is skipped.
    fn row(
        &self,
        text: Option<&str>,
        file: &str,
        row: u64,
        ids: Option<&ArrayRef>,
        i: usize,
    ) -> Result<Vec<ChunkOut>> {
        let empty = text.is_none_or(|t| t.trim().is_empty());
        if empty && self.empty_row("text", text.is_none(), file, row, ids, i)? {
            return Ok(Vec::new());
        }
        let text = text.unwrap_or("");
        let keep = self.plan.chunking.keep_text;
        if !self.plan.chunking.enabled {
            return Ok(vec![ChunkOut {
                start: 0,
                end: text.chars().count() as i64,
                text: keep.then(|| text.to_string()),
                encoded: self.encoder.encode(text)?,
            }]);
        }
        let tokens = self.encoder.chunk_tokens(text)?;
        let chunks = chunk::split(text.len(), &tokens, self.max_tokens, self.overlap);
        let bounds: Vec<usize> = chunks
            .iter()
            .flat_map(|c| [c.bytes.start, c.bytes.end])
            .collect();
        let chars = chunk::char_offsets(text, &bounds);
        chunks
            .iter()
            .enumerate()
            .map(|(k, c)| {
                let piece = &text[c.bytes.clone()];
                Ok(ChunkOut {
                    start: chars[2 * k] as i64,
                    end: chars[2 * k + 1] as i64,
                    text: keep.then(|| piece.to_string()),
                    encoded: self.encoder.encode(piece)?,
                })
            })
            .collect()
    }

    /// Each image row's one "chunk": the image read (from the column, or
    /// from the file its path names), decoded and prepared. A row that
    /// cannot be is a clear error, or skipped with `embed.on_error = "skip"`.
    fn image_rows(
        &self,
        data: &LargeBinaryArray,
        paths: bool,
        contents: &Contents,
        file: &str,
        rows: &[u64],
        ids: Option<&ArrayRef>,
    ) -> Result<Vec<Result<Vec<ChunkOut>>>> {
        let stage = self
            .images
            .as_ref()
            .ok_or_else(|| Error::internal("an image row without the image stage"))?;
        let skip = self.empty_images(paths, contents, file, rows, ids)?;
        let fetched = match paths {
            true => fetch_images(stage, data, &skip, file)?,
            false => (0..data.len()).map(|_| None).collect(),
        };
        let max_pixels = self.plan.embed.max_image_pixels;
        let prepared: Vec<Option<std::result::Result<Vec<u8>, String>>> = (0..data.len())
            .into_par_iter()
            .map(|i| {
                if skip[i] {
                    return None;
                }
                let bytes: &[u8] = match &fetched[i] {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return Some(Err(e.clone())),
                    None => data.value(i),
                };
                Some(
                    crate::embed::image::decode(bytes, max_pixels)
                        .and_then(|img| stage.processor.prepare(img))
                        .map(|img| img.data),
                )
            })
            .collect();
        let out = prepared.into_iter().enumerate().map(|(i, p)| match p {
            None => Ok(Vec::new()),
            Some(Ok(pixels)) => Ok(vec![ChunkOut {
                start: 0,
                end: 0,
                text: None,
                encoded: crate::embed::Encoded::image(pixels),
            }]),
            Some(Err(why)) => {
                let shown = match paths {
                    true => format!(" ({})", String::from_utf8_lossy(data.value(i)).trim()),
                    false => String::new(),
                };
                let message = format!(
                    "input {file}: row {}{}: column {}{shown}: {why}",
                    rows[i],
                    self.id_of(ids, i),
                    self.plan.input.text_source
                );
                self.bad_image(stage, message)
            }
        });
        Ok(out.collect())
    }

    /// Which image rows are empty and skipped (`embed.on_empty`).
    fn empty_images(
        &self,
        paths: bool,
        contents: &Contents,
        file: &str,
        rows: &[u64],
        ids: Option<&ArrayRef>,
    ) -> Result<Vec<bool>> {
        let mut skip = vec![false; contents.len()];
        for (i, s) in skip.iter_mut().enumerate() {
            if contents.is_empty(i) {
                let what = if paths { "image path" } else { "image" };
                *s = self.empty_row(what, contents.is_null(i), file, rows[i], ids, i)?;
                if !*s {
                    return Err(Error::internal("on_empty = embed in an image job"));
                }
            }
        }
        Ok(skip)
    }

    /// A row whose image cannot be embedded: the run fails, or the row is
    /// left out and said (the first few by name, then a count).
    fn bad_image(&self, stage: &ImageStage, message: String) -> Result<Vec<ChunkOut>> {
        match self.plan.embed.on_error {
            OnError::Fail => Err(Error::Data(format!(
                "{message}; set embed.on_error = \"skip\" to leave such rows out"
            ))),
            OnError::Skip => {
                let k = stage
                    .reported
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k < REPORTED_BAD_ROWS {
                    crate::note!("skipped: {message}");
                } else if k == REPORTED_BAD_ROWS {
                    crate::note!("more rows skipped for bad images; the summary counts them");
                }
                Ok(Vec::new())
            }
        }
    }
}

impl RowKeys for PrepareStage {
    /// An incremental run's keys of a read batch: for each row it would
    /// embed, its file, position, id (as text) and content hash.
    fn keys(&self, sb: &SourceBatch, file: u32, name: &str) -> Result<RecordBatch> {
        let (batch, at) = self.selected(sb, None)?;
        let texts = self.contents(&batch)?;
        let passthrough = batch
            .project(&self.passthrough_idx)
            .map_err(Error::internal)?;
        let hashes = content_hashes(&texts, &passthrough)?;
        let ids = match &self.plan.input.id_column {
            Some(c) => batch
                .column_by_name(c)
                .map(|a| arrow::compute::cast(a, &arrow::datatypes::DataType::Utf8))
                .transpose()
                .map_err(Error::internal)?,
            None => None,
        }
        .ok_or_else(|| Error::internal("an incremental run without input.id_column"))?;
        let ids = ids
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::internal("ids as text"))?;
        // Rows whose text is skipped are never in the table: not keys.
        let keep: Vec<usize> = self.kept_rows(&texts).collect();
        self.require_ids(&sb.file, ids, keep.iter().map(|&i| (i, at[i])))?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![file; keep.len()])),
            Arc::new(StringArray::from(vec![name; keep.len()])),
            Arc::new(UInt64Array::from_iter_values(keep.iter().map(|&i| at[i]))),
            Arc::new(StringArray::from_iter_values(
                keep.iter().map(|&i| ids.value(i)),
            )),
            Arc::new(BinaryArray::from_iter_values(
                keep.iter().map(|&i| hashes[i].as_slice()),
            )),
        ];
        RecordBatch::try_new(keys_schema(), columns).map_err(Error::internal)
    }
}

/// Per row: SHA-256 over the text embedded (`None`: a null text) and the
/// row's passthrough values in arrow's row format, which encodes every type
/// unambiguously. Equal hashes: the same vectors and the same output row.
pub(super) fn content_hashes(texts: &Contents, batch: &RecordBatch) -> Result<Vec<[u8; 32]>> {
    use arrow::row::{RowConverter, SortField};
    use sha2::{Digest, Sha256};
    let fields: Vec<SortField> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(Error::internal)?;
    let rows = converter
        .convert_columns(batch.columns())
        .map_err(Error::internal)?;
    Ok((0..texts.len())
        .map(|i| {
            let mut h = Sha256::new();
            match texts.hashed(i) {
                Some(t) => {
                    h.update([1u8]);
                    h.update((t.len() as u64).to_le_bytes());
                    h.update(t);
                }
                None => h.update([0u8]),
            }
            h.update(rows.row(i).as_ref());
            h.finalize().into()
        })
        .collect())
}

/// The image files a unit's path column names, all read at once (a few
/// at a time); `None` for the rows skipped.
#[allow(clippy::type_complexity)]
fn fetch_images(
    stage: &ImageStage,
    data: &LargeBinaryArray,
    skip: &[bool],
    file: &str,
) -> Result<Vec<Option<std::result::Result<bytes::Bytes, String>>>> {
    let wanted: Vec<(usize, String)> = (0..data.len())
        .filter(|&i| !skip[i])
        .map(|i| (i, String::from_utf8_lossy(data.value(i)).trim().to_string()))
        .collect();
    // A read that hangs (a slow store) ends at the first signal.
    let read = stage.runtime.block_on(async {
        tokio::select! {
            biased;
            _ = crate::cancel::wait() => Err(Error::Interrupted),
            r = read_images(&stage.stores, file, wanted) => Ok(r),
        }
    })?;
    let mut out: Vec<Option<_>> = (0..data.len()).map(|_| None).collect();
    for (i, r) in read {
        out[i] = Some(r);
    }
    Ok(out)
}

/// Reads the image files a path column names, a few at a time: a path
/// relative to the input file's folder, an absolute path, or an `s3://` /
/// `file://` URL. Returns each row's bytes, or why they could not be read.
async fn read_images(
    stores: &crate::store::Stores,
    input_file: &str,
    wanted: Vec<(usize, String)>,
) -> Vec<(usize, std::result::Result<bytes::Bytes, String>)> {
    use futures::StreamExt;
    let base = input_file
        .rsplit_once('/')
        .map(|(dir, _)| dir.to_string())
        .unwrap_or_else(|| ".".into());
    futures::stream::iter(wanted)
        .map(|(i, path)| {
            let full = if path.contains("://") || path.starts_with('/') {
                path.clone()
            } else {
                format!("{base}/{path}")
            };
            async move {
                let read = async {
                    if full.starts_with("http://") || full.starts_with("https://") {
                        return Err(
                            "http(s) URLs are not read; give a local path or an s3:// URL"
                                .to_string(),
                        );
                    }
                    let loc = stores.resolve(&full).map_err(|e| e.to_string())?;
                    if let Some(local) = &loc.local {
                        return read_local_image(local, &full).await;
                    }
                    let got = object_store::ObjectStoreExt::get(loc.store.as_ref(), &loc.path)
                        .await
                        .map_err(|e| match e {
                            object_store::Error::NotFound { .. } => format!("no such file {full}"),
                            e => format!("cannot read {full}: {e}"),
                        })?;
                    got.bytes()
                        .await
                        .map_err(|e| format!("cannot read {full}: {e}"))
                };
                (i, read.await)
            }
        })
        .buffered(IMAGE_READS)
        .collect()
        .await
}

/// The most bytes read for one image file: far above any image a model
/// takes, far below what a mistaken path (a disk image, a log) would cost.
const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// Reads a local image file: only a regular file (a FIFO would block
/// forever, a device never ends, a directory is no image), never a file of
/// the system's own (/proc, /sys, /dev), and at most
/// [`MAX_IMAGE_FILE_BYTES`].
async fn read_local_image(
    path: &std::path::Path,
    shown: &str,
) -> std::result::Result<bytes::Bytes, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("no such file {shown}"),
            _ => format!("cannot read {shown}: {e}"),
        })?;
    if meta.is_dir() {
        return Err(format!("{shown} is a directory, not an image file"));
    }
    if !meta.is_file() {
        return Err(format!(
            "{shown} is not a regular file (a FIFO, socket or device): only image files are read"
        ));
    }
    let real = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if ["/proc", "/sys", "/dev"]
        .iter()
        .any(|d| real.starts_with(d))
    {
        return Err(format!(
            "{shown} is a file of the system ({}), not an image file",
            real.display()
        ));
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        return Err(format!(
            "{shown} is {} bytes, more than the {MAX_IMAGE_FILE_BYTES} bytes read for one image",
            meta.len()
        ));
    }
    tokio::fs::read(path)
        .await
        .map(bytes::Bytes::from)
        .map_err(|e| format!("cannot read {shown}: {e}"))
}
