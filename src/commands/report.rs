//! `embedflow report`: flags to a report job, run it, print the summary.

use std::process::ExitCode;

use embedflow::analysis::report::{ReportJob, run_report};
use embedflow::pipeline::RunOptions;
use embedflow::progress::ProgressMode;

use super::say;

pub fn report(
    rt: &tokio::runtime::Runtime,
    r: &embedflow::cli::ReportOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let job = ReportJob {
        input: r.table.clone(),
        output: r.output.clone(),
        vector_column: r.vector_column.clone(),
        text_column: r.text_column.clone(),
        id_column: r.id_column.clone(),
        topics_path: r.topics.clone(),
        max_points: r.max_points,
        seed: r.seed,
        title: r.title.clone(),
        overwrite: !r.no_overwrite,
        s3: embedflow::store::S3Options {
            endpoint: r.s3_endpoint.clone(),
            region: r.s3_region.clone(),
            ..Default::default()
        },
    };
    if job.max_points == 0 {
        anyhow::bail!("--max-points: must be at least 1");
    }
    let progress = !quiet && opts.progress != ProgressMode::Off;
    let summary = rt.block_on(run_report(&job, progress))?;
    if !quiet {
        say(&summary);
    }
    Ok(ExitCode::SUCCESS)
}
