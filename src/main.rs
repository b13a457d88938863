//! embedflow binary: parse the command line, set up logging, dispatch, and
//! map the outcome to an exit code (0 done, 1 failed, 2 done with skipped rows).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use embedflow::cli::{Cli, Command};
use embedflow::pipeline::{self, RunOptions};
use embedflow::progress::ProgressMode;
use embedflow::{Error, job};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    let opts = RunOptions {
        progress: if cli.quiet {
            ProgressMode::Off
        } else {
            cli.progress
        },
        threads: cli.threads,
    };
    match cli.command {
        Command::Run(r) => {
            let plan = job::load(&r.job, &r.sets)?;
            run(&rt, plan, &opts, cli.quiet)
        }
        Command::Embed(e) => {
            let mut table = e.to_table();
            let plan = job::from_table("command line", &mut table, &e.sets)?;
            run(&rt, plan, &opts, cli.quiet)
        }
        Command::Cluster(c) => cluster(&rt, &c, &opts, cli.quiet),
        Command::Validate(v) => {
            let mut failed = 0;
            for path in &v.jobs {
                let checked =
                    job::load(path, &v.sets).and_then(|plan| rt.block_on(pipeline::check(plan)));
                match checked {
                    Ok(c) => {
                        if !cli.quiet {
                            println!(
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
                            );
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
            opts.threads.unwrap_or(0),
        )?);
    }
    let progress = !quiet && opts.progress != ProgressMode::Off;
    let summary = rt.block_on(cluster::run(&job, progress))?;
    if !quiet {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run(
    rt: &tokio::runtime::Runtime,
    plan: job::JobPlan,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let done = rt.block_on(async {
        let checked = pipeline::check(plan).await?;
        pipeline::run_job(checked, opts).await
    });
    let (summary, clusters) = done.map_err(|e: Error| anyhow::anyhow!(e))?;
    if !quiet {
        println!("{summary}");
        if let Some(c) = clusters {
            println!("{c}");
        }
    }
    Ok(if summary.rows_skipped > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
