//! embedflow binary: parse the command line, set up logging, dispatch, and
//! map the outcome to an exit code: 0 done, 1 failed, 2 done with skipped
//! rows, 3 done but nothing embedded, 64 a usage error on the command line,
//! 130 stopped by SIGINT or SIGTERM (nothing committed).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use embedflow::cli::{Cli, Command};
use embedflow::pipeline::{self, RunOptions};
use embedflow::progress::ProgressMode;
use embedflow::{Error, job};

/// Exit status of a command line that does not parse (sysexits' EX_USAGE):
/// apart from 2, which says "done, but rows were skipped".
const EXIT_USAGE: u8 = 64;
/// Exit status of a run that finished but embedded nothing (an empty input,
/// a filter that matched no row, only empty texts): its output has no rows.
const EXIT_NOTHING_EMBEDDED: u8 = 3;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.log);
    match real_main(cli) {
        Ok(code) => code,
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Interrupted))) =>
        {
            match embedflow::cancel::signal() {
                Some(sig) => eprintln!("error: interrupted by {sig}: nothing was committed"),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::from(embedflow::cancel::EXIT_INTERRUPTED)
        }
        // A reader that went away (`embedflow sql … | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Prints a line to stdout; a closed pipe (`| head`) ends printing quietly
/// instead of panicking as `println!` does. Called after the work is done.
fn say(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("embedflow-io")
        .build()
        .context("cannot start the async runtime")?;
    // Before any work: from here on SIGINT and SIGTERM only ask the run to
    // stop, and every stage sees it (embedflow::cancel).
    embedflow::cancel::install(rt.handle()).context("cannot install the signal handlers")?;
    let opts = RunOptions {
        progress: if cli.quiet {
            ProgressMode::Off
        } else {
            cli.progress
        },
        threads: cli.threads,
        device: cli.device,
    };
    match cli.command {
        Command::Run(r) => {
            let plan = opts.apply(job::load(&r.job, &r.sets)?);
            run(&rt, plan, &opts, cli.quiet)
        }
        Command::Embed(e) => {
            let mut table = e.to_table();
            let plan = opts.apply(job::from_table("command line", &mut table, &e.sets)?);
            run(&rt, plan, &opts, cli.quiet)
        }
        Command::Cluster(c) => cluster(&rt, &c, &opts, cli.quiet),
        Command::Sql(s) => sql(&rt, &s, &opts),
        Command::Neighbors(n) => {
            use embedflow::cluster::{self, NeighborsJob, neighbors::Similarity};
            if n.k == 0 {
                anyhow::bail!("--k: must be at least 1");
            }
            let job = NeighborsJob {
                input: n.input.clone(),
                output: n.output.clone(),
                queries: n.queries.clone(),
                vector_column: n.vector_column.clone(),
                id_column: n.id_column.clone(),
                k: n.k,
                similarity: if n.similarity == "inner_product" {
                    Similarity::InnerProduct
                } else {
                    Similarity::Cosine
                },
                overwrite: !n.no_overwrite,
                s3: Default::default(),
            };
            let progress = !cli.quiet && opts.progress != ProgressMode::Off;
            let (rows, secs) = rt.block_on(cluster::run_neighbors(&job, progress))?;
            if !cli.quiet {
                say(format!(
                    "wrote {} ({rows} rows x {} neighbours)\n  seconds          {secs:.2}\n  throughput       {:.0} rows/s",
                    n.output,
                    n.k,
                    rows as f64 / secs.max(1e-9)
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(v) => {
            let mut failed = 0;
            for path in &v.jobs {
                let checked = job::load(path, &v.sets)
                    .and_then(|plan| rt.block_on(pipeline::check(opts.apply(plan))));
                match checked {
                    Ok(c) => {
                        if !cli.quiet {
                            say(format!(
                                "ok: {path} ({} input file{}, {} columns passed through, model {}, chunks of {} tokens{})",
                                c.input.files.len(),
                                if c.input.files.len() == 1 { "" } else { "s" },
                                c.passthrough.len(),
                                c.model.name,
                                c.max_tokens,
                                if c.plan.chunking.enabled {
                                    ""
                                } else {
                                    " (chunking off: truncation)"
                                }
                            ));
                        }
                    }
                    Err(e @ Error::Job { .. }) => {
                        failed += 1;
                        eprintln!("error: {e:#}");
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {path}: {e:#}");
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn sql(
    rt: &tokio::runtime::Runtime,
    s: &embedflow::cli::SqlOpts,
    opts: &RunOptions,
) -> anyhow::Result<ExitCode> {
    use embedflow::sql::{self, OutputFormat, Session, SqlOptions};
    use std::io::Write;
    let mut tables = Vec::new();
    for t in &s.tables {
        let Some((name, path)) = t.split_once('=') else {
            anyhow::bail!("--table {t}: expected NAME=PATH, e.g. --table news=out/news.parquet");
        };
        tables.push((name.trim().to_string(), path.trim().to_string()));
    }
    let mut model = s.model.as_ref().map(|m| job::ModelOverrides {
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
        model = model.or(Some(plan.model.clone()));
        s3 = plan.s3.clone();
    }
    if s.s3_endpoint.is_some() {
        s3.endpoint = s.s3_endpoint.clone();
    }
    let stores = embedflow::store::Stores::new(s3.clone());
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
    let by_ext = s.output.as_deref().and_then(|o| {
        let o = o.to_ascii_lowercase();
        [("csv", ".csv"), ("json", ".json"), ("parquet", ".parquet")]
            .into_iter()
            .find(|(_, e)| o.ends_with(e))
            .map(|(f, _)| f)
    });
    let format = s.format.as_deref().or(by_ext).unwrap_or("table");
    if format == "parquet" && s.output.is_none() {
        anyhow::bail!("--format parquet: needs --output FILE.parquet");
    }
    let script = match (&s.query, &s.file) {
        (Some(q), None) => Some(q.clone()),
        (None, Some(f)) => {
            Some(std::fs::read_to_string(f).with_context(|| format!("cannot read {f}"))?)
        }
        (Some(_), Some(_)) => anyhow::bail!("give a query or --file, not both"),
        (None, None) => None,
    };
    let emit = |schema: &arrow::datatypes::SchemaRef,
                batches: &[arrow::array::RecordBatch]|
     -> anyhow::Result<()> {
        if format == "parquet" {
            let out = s.output.as_deref().unwrap_or_default();
            rt.block_on(async {
                let w = embedflow::sink::WriteOptions {
                    compression: job::Compression::Zstd,
                    row_group_size: job::DEFAULT_ROW_GROUP_SIZE,
                    overwrite: true,
                    metadata: Vec::new(),
                };
                let mut sink =
                    embedflow::sink::ParquetSink::create(&stores, out, schema.clone(), &w).await?;
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
        let f = match format {
            "csv" => OutputFormat::Csv,
            "json" => OutputFormat::Json,
            _ => OutputFormat::Table,
        };
        let text = sql::render(schema, batches, f)?;
        match &s.output {
            Some(o) => std::fs::write(o, text).with_context(|| format!("cannot write {o}"))?,
            None => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", text.trim_end())?;
            }
        }
        Ok(())
    };
    match script {
        Some(script) => {
            for stmt in sql::statements(&script) {
                let (schema, batches) = rt.block_on(stoppable(session.run(&stmt)))?;
                if !schema.fields().is_empty() {
                    emit(&schema, &batches)?;
                }
            }
        }
        None => {
            // Interactive: statements end with ';', history is kept in
            // $EMBEDFLOW_HOME/sql_history; \q or Ctrl-D quits, Ctrl-C
            // drops the statement being typed.
            use rustyline::error::ReadlineError;
            let config = rustyline::Config::builder()
                .max_history_size(1000)?
                .history_ignore_dups(true)?
                .build();
            let mut rl = rustyline::DefaultEditor::with_config(config)?;
            let history = embedflow::embed::embedflow_home().join("sql_history");
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
                        for stmt in sql::statements(&buf) {
                            match rt.block_on(stoppable(session.run(&stmt))) {
                                Ok((schema, batches)) if !schema.fields().is_empty() => {
                                    if let Err(e) = emit(&schema, &batches) {
                                        eprintln!("error: {e:#}");
                                    }
                                }
                                Ok(_) => {}
                                // Ctrl-C during a statement stops that
                                // statement, not the prompt.
                                Err(Error::Interrupted) => {
                                    eprintln!("query cancelled");
                                    embedflow::cancel::reset();
                                    break;
                                }
                                Err(e) => eprintln!("error: {e}"),
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
        }
    }
    Ok(ExitCode::SUCCESS)
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

fn cluster(
    rt: &tokio::runtime::Runtime,
    c: &embedflow::cli::ClusterOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use embedflow::cluster::{self, ClusterJob, Metric, Preprocess, TopicOptions, kmeans};
    if c.k == 0 {
        anyhow::bail!("--k: must be at least 1");
    }
    if c.ngram[0] == 0 || c.ngram[0] > c.ngram[1] {
        anyhow::bail!(
            "--ngram: expected MIN,MAX with 1 <= MIN <= MAX, found {},{}",
            c.ngram[0],
            c.ngram[1]
        );
    }
    if c.topics.is_some() && c.text_column.is_none() {
        anyhow::bail!(
            "--topics: needs --text-column (the texts whose words describe each cluster)"
        );
    }
    let job = ClusterJob {
        input: c.input.clone(),
        output: c.output.clone(),
        vector_column: c.vector_column.clone(),
        id_column: c.id_column.clone(),
        text_column: c.text_column.clone(),
        kmeans: kmeans::Config {
            k: c.k,
            max_iter: c.max_iter,
            tol: c.tol,
            seed: c.seed,
            mini_batch: (c.algorithm == "minibatch").then_some(c.batch_size),
            metric: if c.metric == "cosine" {
                Metric::Cosine
            } else {
                Metric::L2
            },
        },
        train_sample: c.train_sample,
        clusters_path: c.clusters.clone(),
        topics_path: c.topics.clone(),
        topics: TopicOptions {
            preprocess: if c.preprocess == "english" {
                Preprocess::English
            } else {
                Preprocess::Unicode
            },
            english_stop_words: c.stop_words.is_some(),
            ngram: (c.ngram[0], c.ngram[1]),
            bm25_weighting: c.bm25_weighting,
            reduce_frequent_words: c.reduce_frequent_words,
            top_n: c.top_n,
        },
        overwrite: !c.no_overwrite,
        s3: embedflow::store::S3Options {
            endpoint: c.s3_endpoint.clone(),
            region: c.s3_region.clone(),
            ..Default::default()
        },
        zero_shot: None,
    };
    let mut job = job;
    if !c.labels.is_empty() {
        let Some(model) = &c.model else {
            anyhow::bail!(
                "--labels: needs --model (the model the vectors were made with) to embed the labels"
            );
        };
        if c.text_column.is_none() {
            anyhow::bail!("--labels: needs --text-column (topics are made of texts)");
        }
        let overrides = embedflow::job::ModelOverrides {
            path: model.clone(),
            ..Default::default()
        };
        let stores = embedflow::store::Stores::new(job.s3.clone());
        let config = rt.block_on(pipeline::load_model(&stores, &overrides))?;
        job.zero_shot = Some(pipeline::zero_shot(
            &config,
            &c.labels,
            c.label_prompt_name.as_deref(),
            c.min_similarity,
            opts.exec_default(),
        )?);
    }
    let progress = !quiet && opts.progress != ProgressMode::Off;
    let summary = rt.block_on(cluster::run(&job, progress))?;
    if !quiet {
        say(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

fn run(
    rt: &tokio::runtime::Runtime,
    plan: job::JobPlan,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let filtered = plan.input.filter.is_some();
    let done = rt.block_on(async {
        let checked = pipeline::check(plan).await?;
        pipeline::run_job(checked, opts).await
    });
    let (summary, clusters) = done.map_err(|e: Error| anyhow::anyhow!(e))?;
    if !quiet {
        say(&summary);
        if let Some(c) = clusters {
            say(&c);
        }
    }
    if summary.vectors_written == 0 {
        let why = if summary.rows_read > 0 {
            "every row's text was empty or null"
        } else if filtered {
            "input.filter matched no row"
        } else {
            "the input has no rows"
        };
        eprintln!(
            "warning: nothing was embedded: {why}; {} holds no rows",
            summary.output
        );
        return Ok(ExitCode::from(EXIT_NOTHING_EMBEDDED));
    }
    Ok(if summary.rows_skipped > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
