//! `embedflow sql`: tables from flags and job files, a script or the
//! interactive prompt, output as a table, CSV, JSON or Parquet.

use std::process::ExitCode;

use anyhow::Context;
use embedflow::pipeline::{self, RunOptions};
use embedflow::{Error, embed, job};

pub fn sql(
    rt: &tokio::runtime::Runtime,
    s: &embedflow::cli::SqlOpts,
    opts: &RunOptions,
) -> anyhow::Result<ExitCode> {
    use embedflow::sql::{OutputFormat, Session, SqlOptions};
    let Sources {
        tables,
        model,
        s3,
        exec,
    } = sources(s, opts)?;
    let stores = embedflow::store::Stores::new(s3.clone());
    if let Some(out) = &s.output {
        refuse_output_clash(rt, &stores, out, &tables)?;
    }
    let model = match &model {
        Some(m) => Some(rt.block_on(pipeline::load_model(&stores, m))?),
        None => None,
    };
    let session = rt.block_on(Session::new(&SqlOptions {
        tables,
        model,
        allow_write: s.allow_write,
        s3,
        exec,
    }))?;
    let by_ext = s.output.as_deref().and_then(OutputFormat::from_extension);
    let format = s.format.or(by_ext).unwrap_or(OutputFormat::Table);
    if format == OutputFormat::Parquet && s.output.is_none() {
        anyhow::bail!("--format parquet: needs --output FILE.parquet");
    }
    let emitter = Emitter {
        rt,
        stores: &stores,
        format,
        output: s.output.as_deref(),
    };
    match script(s)? {
        Some(script) => {
            for stmt in embedflow::sql::statements(&script) {
                let (schema, batches) = rt.block_on(stoppable(session.run(&stmt)))?;
                if !schema.fields().is_empty() {
                    emitter.emit(&schema, &batches)?;
                }
            }
        }
        None => prompt(rt, &session, &emitter)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The tables, model, S3 settings and execution options of a query: from
/// `--table` and `--model`, and from a job file's outputs and model.
struct Sources {
    tables: Vec<(String, String)>,
    model: Option<embed::ModelOptions>,
    s3: embedflow::store::S3Options,
    exec: embed::SessionOptions,
}

fn sources(s: &embedflow::cli::SqlOpts, opts: &RunOptions) -> anyhow::Result<Sources> {
    let mut tables = Vec::new();
    for t in &s.tables {
        let Some((name, path)) = t.split_once('=') else {
            anyhow::bail!("--table {t}: expected NAME=PATH, e.g. --table news=out/news.parquet");
        };
        tables.push((name.trim().to_string(), path.trim().to_string()));
    }
    let mut model = s.model.as_ref().map(|m| embed::ModelOptions {
        path: m.clone(),
        ..Default::default()
    });
    let mut s3 = embedflow::store::S3Options::default();
    let mut exec = opts.exec_default();
    if let Some(path) = &s.job {
        let plan = job::load(path, &[])?;
        exec = opts.exec(&plan);
        let outputs = [
            Some(&plan.output.path),
            plan.output.documents_path.as_ref(),
            plan.cluster.as_ref().and_then(|c| c.clusters_path.as_ref()),
            plan.topics.as_ref().and_then(|t| t.topics_path.as_ref()),
        ];
        for p in outputs.into_iter().flatten() {
            let stem = p
                .rsplit('/')
                .next()
                .unwrap_or(p)
                .trim_end_matches(".parquet")
                .replace(['-', '.', ' '], "_");
            tables.push((stem, p.clone()));
        }
        // embed() takes texts: a CLIP image job's queries go through its
        // text graph.
        model = model.or(Some(embed::ModelOptions {
            images: false,
            ..plan.model.clone()
        }));
        s3 = plan.s3.clone();
    }
    if s.s3_endpoint.is_some() {
        s3.endpoint = s.s3_endpoint.clone();
    }
    Ok(Sources {
        tables,
        model,
        s3,
        exec,
    })
}

/// The statements to run: the query, or a file's; `None` for the prompt.
fn script(s: &embedflow::cli::SqlOpts) -> anyhow::Result<Option<String>> {
    Ok(match (&s.query, &s.file) {
        (Some(q), None) => Some(q.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?)
        }
        (Some(_), Some(_)) => anyhow::bail!("give a query or --file, not both"),
        (None, None) => None,
    })
}

/// Where a statement's result goes: a Parquet file (committed whole), a
/// text file, or stdout, in the chosen format.
struct Emitter<'a> {
    rt: &'a tokio::runtime::Runtime,
    stores: &'a embedflow::store::Stores,
    format: embedflow::sql::OutputFormat,
    output: Option<&'a str>,
}

impl Emitter<'_> {
    fn emit(
        &self,
        schema: &arrow::datatypes::SchemaRef,
        batches: &[arrow::array::RecordBatch],
    ) -> anyhow::Result<()> {
        use embedflow::sql::OutputFormat;
        use std::io::Write;
        let (rt, stores, format) = (self.rt, self.stores, self.format);
        if format == OutputFormat::Parquet {
            let out = self.output.unwrap_or_default();
            rt.block_on(async {
                let w = embedflow::sink::WriteOptions::default();
                let mut sink =
                    embedflow::sink::ParquetSink::create(stores, out, schema.clone(), &w).await?;
                for b in batches {
                    if let Err(e) = sink.write(b).await {
                        sink.abort().await;
                        return Err(e);
                    }
                }
                sink.commit().await.map(|_| ())
            })?;
            return Ok(());
        }
        let text = embedflow::sql::render(schema, batches, format)?;
        match self.output {
            Some(o) => std::fs::write(o, text).with_context(|| format!("cannot write {o}"))?,
            None => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", text.trim_end())?;
            }
        }
        Ok(())
    }
}

/// The interactive prompt: statements end with ';', history is kept in
/// $EMBEDFLOW_HOME/sql_history; \q or Ctrl-D quits, Ctrl-C drops the
/// statement being typed, and Ctrl-C during a statement stops that
/// statement, not the prompt.
fn prompt(
    rt: &tokio::runtime::Runtime,
    session: &embedflow::sql::Session,
    emitter: &Emitter,
) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder()
        .max_history_size(1000)?
        .history_ignore_dups(true)?
        .build();
    let mut rl = rustyline::DefaultEditor::with_config(config)?;
    let history = embedflow::paths::embedflow_home().join("sql_history");
    let _ = rl.load_history(&history);
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "embedflow> "
        } else {
            "       ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                if buf.is_empty() && line.trim() == "\\q" {
                    break;
                }
                buf.push_str(&line);
                buf.push('\n');
                if !line.trim_end().ends_with(';') {
                    continue;
                }
                let _ = rl.add_history_entry(buf.trim());
                for stmt in embedflow::sql::statements(&buf) {
                    match rt.block_on(stoppable(session.run(&stmt))) {
                        Ok((schema, batches)) if !schema.fields().is_empty() => {
                            if let Err(e) = emitter.emit(&schema, &batches) {
                                embedflow::error_line!("{e:#}");
                            }
                        }
                        Ok(_) => {}
                        // Ctrl-C during a statement stops that
                        // statement, not the prompt.
                        Err(Error::Interrupted) => {
                            embedflow::notice::emit(
                                embedflow::notice::Kind::Plain,
                                format_args!("query cancelled"),
                            );
                            embedflow::cancel::reset();
                            break;
                        }
                        Err(e) => embedflow::error_line!("{e}"),
                    }
                }
                buf.clear();
            }
            Err(ReadlineError::Interrupted) => buf.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(dir) = history.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = rl.save_history(&history);
    Ok(())
}

/// Refuses an `--output` that is one of the registered tables (or a file in
/// one, or a file a table's glob would read back), however it is spelled:
/// writing it would replace the table being queried.
fn refuse_output_clash(
    rt: &tokio::runtime::Runtime,
    stores: &embedflow::store::Stores,
    out: &str,
    tables: &[(String, String)],
) -> embedflow::Result<()> {
    for (name, path) in tables {
        if let Some(why) = rt.block_on(embedflow::store::output_clash_any(stores, out, &[path])) {
            return Err(Error::Job {
                origin: "command line".into(),
                problems: vec![format!("--output {out} {why} (table {name} = {path})")],
            });
        }
    }
    Ok(())
}

/// Runs a future that holds nothing to clean up (a query) until it finishes
/// or a stop is asked for.
async fn stoppable<T>(
    f: impl std::future::Future<Output = embedflow::Result<T>>,
) -> embedflow::Result<T> {
    tokio::select! {
        biased;
        _ = embedflow::cancel::wait() => Err(Error::Interrupted),
        r = f => r,
    }
}
