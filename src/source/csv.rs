//! CSV through object_store, streamed: bytes are pushed through arrow's
//! push-based CSV decoder as they arrive.

use std::io::Cursor;
use std::sync::Arc;

use arrow::csv::reader::{Format, ReaderBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::{Buf, Bytes};
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use tokio::sync::mpsc;

use super::{Emitter, SourceBatch, projection};
use crate::store::FileEntry;
use crate::{Error, Result};

/// Bytes read from the start of the first file to infer column types.
const INFER_BYTES: u64 = 4 << 20;
/// Records used to infer column types.
const INFER_RECORDS: usize = 1000;

/// CSV dialect options.
#[derive(Clone, Debug)]
pub struct CsvOptions {
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub comment: Option<u8>,
    /// Infer numeric/boolean/date columns; when false every column is text.
    pub infer_types: bool,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: b',',
            quote: b'"',
            escape: None,
            comment: None,
            infer_types: true,
        }
    }
}

impl CsvOptions {
    fn format(&self) -> Format {
        let mut f = Format::default()
            .with_header(self.header)
            .with_delimiter(self.delimiter)
            .with_quote(self.quote);
        if let Some(e) = self.escape {
            f = f.with_escape(e);
        }
        if let Some(c) = self.comment {
            f = f.with_comment(c);
        }
        f
    }
}

/// Infers the schema from the first [`INFER_RECORDS`] records of `file`.
pub(super) async fn infer_schema(file: &FileEntry, opts: &CsvOptions) -> Result<SchemaRef> {
    let loc = &file.location;
    let range = GetRange::Bounded(0..file.size.min(INFER_BYTES));
    let head = loc
        .store
        .get_opts(&loc.path, GetOptions::new().with_range(Some(range)))
        .await
        .map_err(|e| Error::input(loc, loc.explain(&e)))?
        .bytes()
        .await
        .map_err(|e| Error::input(loc, loc.explain(&e)))?;
    let (schema, _) = opts
        .format()
        .infer_schema(Cursor::new(head.clone()), Some(INFER_RECORDS))
        .map_err(|e| {
            // Name the column: the header alone still parses.
            let header = opts
                .format()
                .infer_schema(Cursor::new(head.clone()), Some(0))
                .map(|(s, _)| s)
                .unwrap_or_else(|_| Schema::empty());
            csv_error(&loc.display, opts, &header, e)
        })?;
    if schema.fields().is_empty() {
        return Err(Error::input(loc, "the CSV file is empty (no header)"));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            // A header-only file (or a column with no value in the rows
            // looked at) infers as Null: such a column is text.
            let ty = if opts.infer_types && f.data_type() != &DataType::Null {
                f.data_type().clone()
            } else {
                DataType::Utf8
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Streams one CSV file. Returns Ok(false) if the receiver went away.
pub(super) async fn read(
    file: &FileEntry,
    schema: &SchemaRef,
    columns: &[String],
    opts: &CsvOptions,
    batch_rows: usize,
    tx: &mpsc::Sender<Result<SourceBatch>>,
) -> Result<bool> {
    let loc = &file.location;
    let name: Arc<str> = loc.display.as_str().into();
    let indices = projection(&name, schema, columns)?;
    let mut builder = ReaderBuilder::new(Arc::clone(schema))
        .with_format(opts.format())
        .with_batch_size(batch_rows)
        .with_projection(indices);
    if let Some(e) = opts.escape {
        builder = builder.with_escape(e);
    }
    let mut decoder = builder.build_decoder();
    let mut bytes = loc
        .store
        .get(&loc.path)
        .await
        .map_err(|e| Error::input(loc, loc.explain(&e)))?
        .into_stream();
    let mut buffered = Bytes::new();
    let mut out = Emitter::new(Arc::clone(&name), tx);
    loop {
        if buffered.is_empty() {
            buffered = match bytes.next().await {
                Some(b) => b.map_err(|e| Error::input(loc, loc.explain(&e)))?,
                None => Bytes::new(),
            };
        }
        let eof = buffered.is_empty();
        let consumed = decoder
            .decode(&buffered)
            .map_err(|e| csv_error(&name, opts, schema, e))?;
        buffered.advance(consumed);
        if eof || decoder.capacity() == 0 {
            let batch = decoder
                .flush()
                .map_err(|e| csv_error(&name, opts, schema, e))?;
            if let Some(batch) = batch
                && !out.send(batch).await
            {
                return Ok(false);
            }
            if eof {
                return Ok(true);
            }
        }
    }
}

/// Turns arrow's CSV errors into messages that name the file, the data row
/// and the column.
fn csv_error(file: &str, opts: &CsvOptions, schema: &Schema, e: ArrowError) -> Error {
    let msg = match &e {
        ArrowError::CsvError(m) | ArrowError::ParseError(m) => m.clone(),
        other => other.to_string(),
    };
    // arrow counts lines from 1 with the header; rows count data from 1.
    let row = |line: u64| {
        if opts.header {
            line.saturating_sub(1)
        } else {
            line
        }
    };
    if let Some((line, field)) = parse_utf8_error(&msg) {
        let row = row(line);
        let column = schema
            .fields()
            .get(field)
            .map(|f| format!("column '{}'", f.name()))
            .unwrap_or_else(|| format!("field {}", field + 1));
        return Error::input(
            file,
            format!(
                "row {row}, {column}: invalid UTF-8 (embedflow reads CSV as UTF-8; re-encode the file)"
            ),
        );
    }
    if let Some((line, expected, found)) = parse_ragged(&msg) {
        let row = row(line);
        let what = if opts.header {
            "the header has"
        } else {
            "the first row has"
        };
        return Error::input(
            file,
            format!(
                "row {row}: {found} field{}, where {what} {expected} (a delimiter or quote out of place? see input.csv)",
                if found == "1" { "" } else { "s" }
            ),
        );
    }
    Error::input(file, format!("invalid CSV: {msg}"))
}

/// Picks (line, expected fields, found) out of arrow's two messages for a
/// row with the wrong number of fields: the decoder's "incorrect number of
/// fields for line L, expected E got F" (or "got more than F") and schema
/// inference's "Expected E records, found F records at line L" (which says
/// records for fields). Lines are 1-based and count the header.
fn parse_ragged(msg: &str) -> Option<(u64, u64, String)> {
    if let Some(rest) = msg.split("incorrect number of fields for line ").nth(1) {
        let line = digits(rest)?;
        let rest = rest.split_once(", expected ")?.1;
        let expected = digits(rest)?;
        let got = rest.split_once(" got ")?.1;
        let found = match got.strip_prefix("more than ") {
            Some(n) => format!("more than {}", digits(n)?),
            None => digits(got)?.to_string(),
        };
        return Some((line, expected, found));
    }
    let rest = msg.split("Expected ").nth(1)?;
    let expected = digits(rest)?;
    let found = digits(rest.split_once("records, found ")?.1)?;
    let line = digits(rest.split_once(" at line ")?.1)?;
    Some((line, expected, found.to_string()))
}

/// The number at the start of `s`, if it starts with one.
fn digits(s: &str) -> Option<u64> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Picks (line, 0-based field) out of the two UTF-8 errors arrow's CSV
/// reading gives: the decoder's "Encountered invalid UTF-8 data for line L
/// and field F" (F 1-based) and schema inference's "invalid UTF-8 in field F
/// near byte index B at line L" (F 0-based). Lines are 1-based and count the
/// header.
fn parse_utf8_error(msg: &str) -> Option<(u64, usize)> {
    if let Some(rest) = msg.split("invalid UTF-8 data for line ").nth(1) {
        let (line, rest) = rest.split_once(" and field ")?;
        return Some((
            line.trim().parse().ok()?,
            (digits(rest)? as usize).checked_sub(1)?,
        ));
    }
    let rest = msg.split("invalid UTF-8 in field ").nth(1)?;
    let field = digits(rest)? as usize;
    let line = digits(rest.split(" at line ").nth(1)?)?;
    Some((line, field))
}

#[cfg(test)]
mod tests {
    use super::parse_utf8_error;

    #[test]
    fn reads_both_ragged_row_forms() {
        use super::parse_ragged;
        assert_eq!(
            parse_ragged("incorrect number of fields for line 3, expected 2 got 1"),
            Some((3, 2, "1".into()))
        );
        assert_eq!(
            parse_ragged("incorrect number of fields for line 9, expected 2 got more than 4"),
            Some((9, 2, "more than 4".into()))
        );
        assert_eq!(
            parse_ragged(
                "Encountered unequal lengths between records on CSV file. Expected 3 records, found 2 records at line 3"
            ),
            Some((3, 3, "2".into()))
        );
        assert_eq!(parse_ragged("something else"), None);
    }

    #[test]
    fn reads_both_utf8_error_forms() {
        assert_eq!(
            parse_utf8_error("Encountered invalid UTF-8 data for line 12 and field 2"),
            Some((12, 1))
        );
        assert_eq!(
            parse_utf8_error(
                "Encountered UTF-8 error while reading CSV file: invalid utf-8: invalid UTF-8 in field 1 near byte index 4 at line 4"
            ),
            Some((4, 1))
        );
        assert_eq!(parse_utf8_error("something else"), None);
    }
}
