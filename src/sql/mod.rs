//! `embedflow sql`: DataFusion over embedded datasets, with vector
//! functions ([`vector`]), `vec_avg`, and the model as `embed()`
//! ([`embed_fn`]). Tables are Parquet or CSV, local or on S3 (through the
//! same stores as the pipeline). Read-only unless asked: statements that
//! write (INSERT, COPY) need `allow_write`.

pub mod embed_fn;
pub mod index_scan;
mod vec_avg;
pub mod vector;
mod vector_search;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::execution::context::SessionContext;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SQLOptions, SessionConfig};

use crate::delta::DeltaTarget;
use crate::store::{S3Options, Stores};
use crate::{Error, Result};

/// What a SQL session needs.
#[derive(Clone, Debug, Default)]
pub struct SqlOptions {
    /// `(name, path)`: a Parquet or CSV file, directory or prefix.
    pub tables: Vec<(String, String)>,
    /// The model `embed()` runs, already resolved to a folder.
    pub model: Option<crate::embed::ModelConfig>,
    pub allow_write: bool,
    pub s3: S3Options,
    /// Where `embed()` runs (device, CPU threads).
    pub exec: crate::embed::SessionOptions,
}

/// A session with the tables, functions and model registered.
pub struct Session {
    pub ctx: SessionContext,
    allow_write: bool,
}

impl Session {
    pub async fn new(opts: &SqlOptions) -> Result<Session> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.sql_parser.collect_spans", true)
            // A score a vector function cannot give (a zero vector's
            // cosine, a non-finite vector) is NULL, and NULL sorts last in
            // both directions: `ORDER BY score DESC` and `ORDER BY distance`
            // never rank it first. `NULLS FIRST` in a query still wins.
            .set_str("datafusion.sql_parser.default_null_ordering", "nulls_last")
            .with_option_extension(index_scan::IndexOptions::default());
        let ctx = SessionContext::new_with_config(config);
        let top_k = Arc::new(index_scan::IndexTopK::default());
        ctx.add_optimizer_rule(Arc::clone(&top_k) as _);
        for f in vector::functions() {
            ctx.register_udf(f);
        }
        ctx.register_udaf(vec_avg::udaf());
        ctx.register_udtf("vector_search", Arc::new(vector_search::VectorSearch));
        match &opts.model {
            Some(m) => ctx.register_udf(embed_fn::EmbedFn::udf(m, opts.exec).await?),
            None => ctx.register_udf(embed_fn::NoModel::udf()),
        }
        let stores = Stores::new(opts.s3.clone());
        for (name, path) in &opts.tables {
            register_table(&ctx, &stores, name, path).await?;
            with_index(&ctx, &stores, name, path, &top_k).await?;
        }
        Ok(Session {
            ctx,
            allow_write: opts.allow_write,
        })
    }

    /// Runs one statement and collects its result.
    pub async fn run(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let options = SQLOptions::new()
            .with_allow_ddl(true)
            .with_allow_dml(self.allow_write)
            .with_allow_statements(true);
        let df = self
            .ctx
            .sql_with_options(sql, options)
            .await
            .map_err(|e| query_error(sql, e, self.allow_write))?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df
            .collect()
            .await
            .map_err(|e| query_error(sql, e, self.allow_write))?;
        Ok((schema, batches))
    }
}

async fn register_table(
    ctx: &SessionContext,
    stores: &Stores,
    name: &str,
    path: &str,
) -> Result<()> {
    let bad = |e: datafusion::error::DataFusionError| {
        Error::input(path, format!("cannot register table '{name}': {e}"))
    };
    let loc = stores.resolve(path.trim_end_matches('/'))?;
    let url = if let Some(b) = &loc.s3 {
        let base = url::Url::parse(&format!("s3://{}", b.bucket)).map_err(Error::internal)?;
        ctx.register_object_store(&base, Arc::clone(&b.store));
        path.to_string()
    } else {
        let local = loc.local.clone().unwrap_or_default();
        let mut s = local.display().to_string();
        if local.is_dir() {
            s.push('/');
        }
        s
    };
    // A Delta table: the files of its newest version, as one Parquet table.
    let table = DeltaTarget::resolve_input(stores, path)?;
    if let Some(state) = table.state(None).await? {
        let files: Vec<String> = table
            .readable_files(&state)?
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        if files.is_empty() {
            return Err(Error::input(path, "the Delta table holds no file"));
        }
        return table.register(ctx, name, &files).await;
    }
    let lower = path.to_ascii_lowercase();
    let csv = [".csv", ".tsv", ".txt"].iter().any(|e| lower.ends_with(e));
    if csv {
        let opts = CsvReadOptions::new().file_extension(
            [".csv", ".tsv", ".txt"]
                .into_iter()
                .find(|e| lower.ends_with(e))
                .unwrap_or(".csv"),
        );
        ctx.register_csv(name, &url, opts).await.map_err(bad)
    } else {
        let ext = if lower.ends_with(".parquet") || url.ends_with('/') || !lower.contains('.') {
            ".parquet"
        } else {
            ""
        };
        ctx.register_parquet(
            name,
            &url,
            ParquetReadOptions::default().file_extension(ext),
        )
        .await
        .map_err(bad)
    }
}

/// The table `name` as an [`index_scan::IndexedTable`] when it has an
/// index that fits it: top-k queries by its similarity read the index.
async fn with_index(
    ctx: &SessionContext,
    stores: &Stores,
    name: &str,
    path: &str,
    top_k: &index_scan::IndexTopK,
) -> Result<()> {
    let index = match index_scan::TableIndex::find(stores, path).await? {
        Ok(index) => index,
        Err(why) => {
            if let (Some(why), Ok(mut unusable)) = (why, top_k.unusable.lock()) {
                unusable.insert(name.to_string(), why);
            }
            return Ok(());
        }
    };
    let bad = |e: datafusion::error::DataFusionError| Error::input(path, e.to_string());
    let base = ctx.table_provider(name).await.map_err(bad)?;
    ctx.deregister_table(name).map_err(bad)?;
    let table = index_scan::IndexedTable {
        base,
        index: Arc::new(index),
    };
    ctx.register_table(name, Arc::new(table)).map_err(bad)?;
    Ok(())
}

/// A DataFusion error with the query line and a caret under the position
/// when the error has one.
fn query_error(sql: &str, e: datafusion::error::DataFusionError, allow_write: bool) -> Error {
    let mut msg = e.strip_backtrace();
    if !allow_write && msg.contains("DML not supported") {
        msg = "this statement writes (INSERT, COPY …); embedflow sql is read-only unless --allow-write is given".into();
    }
    let pos = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| (s.start.line as usize, s.start.column as usize))
        .or_else(|| line_column(&msg))
        .or_else(|| {
            // "found: EOF": the query ended too soon; point past its end.
            msg.contains("found: EOF").then(|| {
                let lines: Vec<&str> = sql.lines().collect();
                (
                    lines.len().max(1),
                    lines.last().map_or(0, |l| l.chars().count()) + 1,
                )
            })
        });
    if let Some((line, col)) = pos
        && line >= 1
        && let Some(text) = sql.lines().nth(line - 1)
    {
        msg = format!(
            "{msg}\n  at line {line}, column {col}:\n  {text}\n  {}^",
            " ".repeat(col.saturating_sub(1))
        );
    }
    Error::Query(msg)
}

/// `... at Line: 1, Column: 8` in a parser message.
fn line_column(msg: &str) -> Option<(usize, usize)> {
    let rest = msg.split("Line: ").nth(1)?;
    let line: usize = rest.split(',').next()?.trim().parse().ok()?;
    let col: usize = rest
        .split("Column: ")
        .nth(1)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((line, col))
}

/// How results are printed, or written (Parquet needs a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

impl OutputFormat {
    /// The format an output file's extension names, if any.
    pub fn from_extension(path: &str) -> Option<OutputFormat> {
        let p = path.to_ascii_lowercase();
        [
            (OutputFormat::Csv, ".csv"),
            (OutputFormat::Json, ".json"),
            (OutputFormat::Parquet, ".parquet"),
        ]
        .into_iter()
        .find(|(_, e)| p.ends_with(e))
        .map(|(f, _)| f)
    }
}

/// Vectors and other nested values as text, for CSV.
fn flatten_for_text(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut cols = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if f.data_type().is_nested() {
            let s = arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                .map_err(Error::internal)?;
            let strings: arrow::array::StringArray = (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| s.value(i).to_string()))
                .collect();
            fields.push(arrow::datatypes::Field::new(f.name(), DataType::Utf8, true));
            cols.push(Arc::new(strings) as arrow::array::ArrayRef);
        } else {
            fields.push(f.as_ref().clone());
            cols.push(Arc::clone(c));
        }
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), cols)
        .map_err(Error::internal)
}

use arrow::array::Array;

/// Renders a result for a terminal or a pipe.
pub fn render(schema: &SchemaRef, batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    match format {
        OutputFormat::Table => {
            if batches.is_empty() {
                let empty = RecordBatch::new_empty(Arc::clone(schema));
                return Ok(arrow::util::pretty::pretty_format_batches(&[empty])
                    .map_err(Error::internal)?
                    .to_string());
            }
            Ok(arrow::util::pretty::pretty_format_batches(batches)
                .map_err(Error::internal)?
                .to_string())
        }
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                if batches.is_empty() {
                    w.write(&flatten_for_text(&RecordBatch::new_empty(Arc::clone(
                        schema,
                    )))?)
                    .map_err(Error::internal)?;
                }
                for b in batches {
                    w.write(&flatten_for_text(b)?).map_err(Error::internal)?;
                }
            }
            String::from_utf8(out).map_err(Error::internal)
        }
        OutputFormat::Json => {
            let mut out = Vec::new();
            {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                w.write_batches(&refs).map_err(Error::internal)?;
                w.finish().map_err(Error::internal)?;
            }
            String::from_utf8(out).map_err(Error::internal)
        }
        OutputFormat::Parquet => Err(Error::internal(
            "a Parquet result is written to a file, not rendered as text",
        )),
    }
}

/// Splits a script into statements at semicolons outside quotes and comments.
pub fn statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '-' if chars.peek() == Some(&'-') => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            cur.push('\n');
                            break;
                        }
                    }
                }
                ';' => {
                    if !cur.trim().is_empty() {
                        out.push(cur.trim().to_string());
                    }
                    cur.clear();
                }
                _ => cur.push(c),
            },
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        assert_eq!(
            statements("select 'a;b' as x; -- c;d\nselect 2;;"),
            vec!["select 'a;b' as x", "select 2"]
        );
        assert_eq!(
            line_column("Expected: x, found: y at Line: 2, Column: 15"),
            Some((2, 15))
        );
    }
}
