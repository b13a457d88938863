//! embedflow binary: parse the command line, set up logging, dispatch, and
//! map the outcome to an exit code: 0 done, 1 failed, 2 done with skipped
//! rows, 3 done but nothing embedded, 64 a usage error on the command line,
//! 130 stopped by SIGINT or SIGTERM (nothing committed).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use embedflow::cli::{Cli, Command};

mod commands;
use embedflow::pipeline::RunOptions;
use embedflow::progress::ProgressMode;
use embedflow::{Error, job};

/// Exit status of a command line that does not parse (sysexits' EX_USAGE):
/// apart from 2, which says "done, but rows were skipped".
const EXIT_USAGE: u8 = 64;

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
    embedflow::notice::init(&cli.log, cli.log_format);
    match real_main(cli) {
        Ok(code) => code,
        Err(e)
            if e.chain()
                .any(|c| matches!(c.downcast_ref::<Error>(), Some(Error::Interrupted))) =>
        {
            match embedflow::cancel::signal() {
                Some(sig) => embedflow::error_line!("interrupted by {sig}: nothing was committed"),
                None => embedflow::error_line!("{e:#}"),
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
            embedflow::error_line!("{e:#}");
            ExitCode::from(1)
        }
    }
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
        workers: cli.workers,
        device: cli.device,
        shard: None,
        metrics_file: cli.metrics.clone(),
        metrics: None,
    };
    let outcome = match cli.command {
        Command::Run(r) => {
            let plan = opts.apply(job::load(&r.job, &r.sets)?);
            let opts = commands::run::with_shard(opts, &r, &plan, cli.quiet)?;
            commands::run::run(&rt, plan, &opts, cli.quiet, cli.summary)
        }
        Command::Embed(e) => {
            let mut table = e.to_table();
            let plan = opts.apply(job::from_table("command line", &mut table, &e.sets)?);
            commands::run::run(&rt, plan, &opts, cli.quiet, cli.summary)
        }
        Command::Cluster(c) => commands::cluster::cluster(&rt, &c, &opts, cli.quiet),
        Command::Neighbors(n) => commands::cluster::neighbors(&rt, &n, &opts, cli.quiet),
        Command::Index(i) => commands::cluster::index(&rt, &i, &opts, cli.quiet),
        Command::Sql(s) => commands::sql::sql(&rt, &s, &opts),
        Command::Validate(v) => commands::run::validate(&rt, &v, &opts, cli.quiet),
        Command::Unlock(u) => commands::run::unlock(&rt, &u),
        Command::Commit(c) => commands::run::commit(&rt, &c, &opts, cli.quiet),
        Command::Status(s) => commands::run::status(&rt, &s, &opts),
        Command::Model(m) => commands::model::model(&rt, &m, &opts),
        Command::Report(r) => commands::report::report(&rt, &r, &opts, cli.quiet),
    };
    // A computation left running after a stop (a t-SNE that cannot look at
    // the stop flag) holds nothing to clean up: the process does not wait
    // for it, as dropping the runtime would.
    rt.shutdown_background();
    outcome
}
