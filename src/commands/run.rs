//! `embedflow run`, `embed` and `validate`: check the job, run it, print
//! the summary, choose the exit code.

use std::process::ExitCode;

use embedflow::analysis::index::{IndexJob, IndexSummary, run_index};
use embedflow::analysis::report::{ReportJob, ReportSummary, run_report};
use embedflow::metrics::Metrics;
use embedflow::pipeline::{self, RunOptions};
use embedflow::progress::SummaryFormat;
use embedflow::{Error, job};

use super::EXIT_NOTHING_EMBEDDED;
use super::say;

pub fn run(
    rt: &tokio::runtime::Runtime,
    plan: job::JobPlan,
    opts: &RunOptions,
    quiet: bool,
    format: SummaryFormat,
) -> anyhow::Result<ExitCode> {
    let filtered = plan.input.filter.is_some();
    let progress = !quiet && opts.progress != embedflow::progress::ProgressMode::Off;
    let after = After {
        index: index_job(&plan, progress),
        report: report_job(&plan),
        progress,
    };
    let metrics = start_metrics(rt, &plan, opts)?;
    let opts = &RunOptions {
        metrics: metrics.clone(),
        ..opts.clone()
    };
    let done = rt.block_on(async {
        let checked = pipeline::check(plan).await?;
        let (summary, clusters) = pipeline::run_job(checked, opts).await?;
        let (index, report) = after.run(&summary, opts).await?;
        Ok((summary, clusters, index, report))
    });
    if let Some(m) = &metrics {
        m.finish(done.as_ref().ok().map(|d| &d.0));
    }
    let (summary, clusters, index, report) = done.map_err(|e: Error| anyhow::anyhow!(e))?;
    match format {
        SummaryFormat::Json => say(with_index(&summary, index.as_ref())),
        SummaryFormat::Text if !quiet => {
            say(&summary);
            if let Some(c) = clusters {
                say(&c);
            }
            if let Some(i) = index {
                say(&i);
            }
            if let Some(r) = report {
                say(&r);
            }
        }
        SummaryFormat::Text => {}
    }
    let shard = summary.table.as_ref().and_then(|t| t.shard);
    if let Some((i, n)) = shard
        && summary.vectors_written == 0
    {
        // A shard with nothing to embed is no failure of the array: its
        // marker tells the commit it is done.
        embedflow::warning!(
            "shard {i} of {n} embedded nothing (no unit of the input is its own, or its rows were empty or unchanged)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if summary.vectors_written == 0 {
        let why = if summary.rows_read > 0 {
            "every row's text was empty or null"
        } else if filtered {
            "input.filter matched no row"
        } else {
            "the input has no rows"
        };
        embedflow::warning!(
            "nothing was embedded: {why}; {} holds no rows",
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

/// A run's JSON summary with its `[index]` step's, as `index`.
fn with_index(summary: &embedflow::progress::Summary, index: Option<&IndexSummary>) -> String {
    let mut json = summary.to_json_value();
    if let (Some(index), Some(o)) = (index, json.as_object_mut()) {
        o.insert("index".into(), index.to_json());
    }
    json.to_string()
}

/// What a job does with its committed output: `[index]`, `[report]`.
struct After {
    index: Option<IndexJob>,
    report: Option<ReportJob>,
    progress: bool,
}

impl After {
    /// The index brought up to date, then the report made, from the
    /// committed output (when it holds rows); a failure says the output
    /// itself was committed.
    async fn run(
        &self,
        summary: &embedflow::progress::Summary,
        opts: &RunOptions,
    ) -> Result<(Option<IndexSummary>, Option<ReportSummary>), Error> {
        if summary.vectors_written == 0 {
            return Ok((None, None));
        }
        let failed = |origin: &str, what: &str, e: Error| Error::Job {
            origin: origin.into(),
            problems: vec![format!(
                "the output {} was committed, {what}: {e}",
                summary.output
            )],
        };
        let index = match &self.index {
            Some(i) => Some({
                opts.stage("index");
                run_index(i)
                    .await
                    .map_err(|e| failed("[index]", "its index was not brought up to date", e))?
            }),
            None => None,
        };
        let report = match &self.report {
            Some(r) => Some({
                opts.stage("report");
                run_report(r, self.progress)
                    .await
                    .map_err(|e| failed("[report]", "its report was not", e))?
            }),
            None => None,
        };
        Ok((index, report))
    }
}

/// The run's metrics (`[metrics]`, `--metrics`), started before any work,
/// so that a path that cannot be written fails the run at once.
fn start_metrics(
    rt: &tokio::runtime::Runtime,
    plan: &job::JobPlan,
    opts: &RunOptions,
) -> anyhow::Result<Option<Metrics>> {
    let name = plan.name.clone().unwrap_or_else(|| plan.origin.clone());
    let shard = opts.shard.as_ref().map(|s| s.index);
    Ok(Metrics::start(
        plan.metrics.as_ref(),
        &name,
        shard,
        rt.handle().clone(),
    )?)
}

/// `[index]`: the output's index, made current once the run is committed.
fn index_job(plan: &job::JobPlan, progress: bool) -> Option<IndexJob> {
    plan.index.as_ref().map(|i| IndexJob {
        table: plan.output.path.clone(),
        output: None,
        vector_column: plan.output.vector_column.clone(),
        build: embedflow::index::BuildOptions {
            progress,
            ..i.build.clone()
        },
        s3: plan.s3.clone(),
    })
}

/// `[report]`: made from the committed output, once the run is done.
fn report_job(plan: &job::JobPlan) -> Option<ReportJob> {
    plan.report.as_ref().map(|r| ReportJob {
        input: plan.output.path.clone(),
        output: r.path.clone(),
        vector_column: Some(plan.output.vector_column.clone()),
        text_column: None,
        id_column: plan.input.id_column.clone(),
        topics_path: plan.topics.as_ref().and_then(|t| t.topics_path.clone()),
        max_points: r.max_points,
        seed: r.seed,
        title: r.title.clone(),
        overwrite: true,
        s3: plan.s3.clone(),
    })
}

pub fn validate(
    rt: &tokio::runtime::Runtime,
    v: &embedflow::cli::ValidateOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for path in &v.jobs {
        let checked = job::load(path, &v.sets)
            .and_then(|plan| rt.block_on(pipeline::check(opts.apply(plan))));
        match checked {
            Ok(c) => {
                if !quiet {
                    let what = match &c.plan.input.image_column {
                        Some(col) => format!("images from column {col}"),
                        None => format!(
                            "chunks of {} tokens{}",
                            c.max_tokens,
                            if c.plan.chunking.enabled {
                                ""
                            } else {
                                " (chunking off: truncation)"
                            }
                        ),
                    };
                    say(format!(
                        "ok: {path} ({} input file{}, {} columns passed through, model {}, {what})",
                        c.input.files.len(),
                        if c.input.files.len() == 1 { "" } else { "s" },
                        c.passthrough.len(),
                        c.model.name,
                    ));
                }
                match rt.block_on(remote_estimate(&c)) {
                    Ok(Some(line)) if !quiet => say(line),
                    Ok(_) => {}
                    Err(e) => {
                        failed += 1;
                        embedflow::error_line!("{path}: {e:#}");
                    }
                }
            }
            Err(e @ Error::Job { .. }) => {
                failed += 1;
                embedflow::error_line!("{e:#}");
            }
            Err(e) => {
                failed += 1;
                embedflow::error_line!("{path}: {e:#}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// For a remote model, what a run would send and cost, counted before
/// anything is sent (the same chunks and cuts as the run).
async fn remote_estimate(c: &pipeline::CheckedJob) -> embedflow::Result<Option<String>> {
    let Some(api) = &c.model.api else {
        return Ok(None);
    };
    let e = pipeline::estimate_all(c).await?;
    let cost = match api.price_per_million_tokens {
        Some(p) => format!(", estimated cost ${:.4}", p * e.tokens as f64 / 1e6),
        None => " (set model.price_per_million_tokens for its cost)".to_string(),
    };
    let incremental = match c.plan.output.format {
        embedflow::sink::OutputKind::Delta => {
            "; an incremental or resumed run sends only what its table lacks"
        }
        _ => "",
    };
    Ok(Some(format!(
        "  sends {} tokens to {} ({} inputs from {} rows){cost}{incremental}",
        e.tokens, api.model, e.chunks, e.rows
    )))
}

/// The run options with this process's shard: from `--shard`/`--shards`,
/// the job's `[shard]`, or the scheduler's environment (said on stderr).
pub fn with_shard(
    mut opts: RunOptions,
    r: &embedflow::cli::RunOpts,
    plan: &job::JobPlan,
    quiet: bool,
) -> anyhow::Result<RunOptions> {
    let req = embedflow::shard::ShardRequest {
        flag: r.shard.clone(),
        count: r.shards,
        job_index: plan.shard.index,
        job_count: plan.shard.count,
    };
    let shard = embedflow::shard::resolve(&req, |k| std::env::var(k).ok())?;
    if let Some(s) = &shard
        && !quiet
    {
        embedflow::note!("{s} (from {})", s.from);
    }
    opts.shard = shard;
    Ok(opts)
}

/// `embedflow commit JOB`: one table version of every shard's parts.
pub fn commit(
    rt: &tokio::runtime::Runtime,
    c: &embedflow::cli::CommitOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let plan = opts.apply(job::load(&c.job, &c.sets)?);
    let report = rt.block_on(async {
        let checked = pipeline::check(plan).await?;
        pipeline::commit(checked, c.shards).await
    })?;
    if !quiet {
        say(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// `embedflow status JOB`: each shard, done or not.
pub fn status(
    rt: &tokio::runtime::Runtime,
    s: &embedflow::cli::StatusOpts,
    opts: &RunOptions,
) -> anyhow::Result<ExitCode> {
    let plan = opts.apply(job::load(&s.job, &s.sets)?);
    let text = rt.block_on(async {
        let checked = pipeline::check(plan).await?;
        pipeline::status(checked).await
    })?;
    say(text);
    Ok(ExitCode::SUCCESS)
}

/// `embedflow unlock TABLE|JOB`: removes a table's lease, saying whose it was.
pub fn unlock(
    rt: &tokio::runtime::Runtime,
    u: &embedflow::cli::UnlockOpts,
) -> anyhow::Result<ExitCode> {
    let (table, s3) = if u.table.ends_with(".toml") {
        let plan = job::load(&u.table, &[])?;
        (plan.output.path.clone(), plan.s3.clone())
    } else {
        (u.table.clone(), Default::default())
    };
    let stores = embedflow::store::Stores::new(s3);
    let target = embedflow::delta::DeltaTarget::resolve(&stores, &table)?;
    match rt.block_on(target.break_lease())? {
        Some(holder) => say(format!("unlocked {table}: the lease of {holder} is broken")),
        None => say(format!("{table} has no lease")),
    }
    if u.discard {
        let gone = rt.block_on(pipeline::discard_runs(&target))?;
        if gone.is_empty() {
            say("no uncommitted run to discard");
        }
        for g in gone {
            say(format!("discarded {g}"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
