//! `embedflow run`, `embed` and `validate`: check the job, run it, print
//! the summary, choose the exit code.

use std::process::ExitCode;

use embedflow::pipeline::{self, RunOptions};
use embedflow::{Error, job};

use super::EXIT_NOTHING_EMBEDDED;
use super::say;

pub fn run(
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
