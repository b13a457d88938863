//! `embedflow cluster` and `embedflow neighbors`: flags to a job, run it,
//! print the summary.

use std::process::ExitCode;

use embedflow::pipeline::{self, RunOptions};
use embedflow::progress::ProgressMode;

use super::say;

pub fn cluster(
    rt: &tokio::runtime::Runtime,
    c: &embedflow::cli::ClusterOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use embedflow::analysis::{ClusterJob, cluster};
    // k, the metric, the n-gram range, … are checked where a job file's
    // [cluster] and [topics] are.
    let (plan, topics) = embedflow::job::cluster_sections("command line", &c.to_table())?;
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
        kmeans: plan.kmeans,
        train_sample: plan.train_sample,
        clusters_path: plan.clusters_path,
        topics_path: topics.as_ref().and_then(|t| t.topics_path.clone()),
        topics: topics
            .as_ref()
            .map(|t| t.options.clone())
            .unwrap_or_default(),
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
        let overrides = embedflow::embed::ModelOptions {
            path: model.clone(),
            ..Default::default()
        };
        let stores = embedflow::store::Stores::new(job.s3.clone());
        let config = rt.block_on(pipeline::load_model(&stores, &overrides))?;
        let t = topics.as_ref().expect("labels make a [topics] section");
        job.zero_shot = Some(pipeline::zero_shot(
            &config,
            &t.labels,
            t.label_prompt_name.as_deref(),
            t.min_similarity,
            opts.exec_default(),
        )?);
    }
    let progress = !quiet && opts.progress != ProgressMode::Off;
    let summary = rt.block_on(cluster::run_cluster(&job, progress))?;
    if !quiet {
        say(&summary);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn neighbors(
    rt: &tokio::runtime::Runtime,
    n: &embedflow::cli::NeighborsOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use embedflow::analysis::neighbors::{self, IndexUse, NeighborsJob};
    let job = NeighborsJob {
        input: n.input.clone(),
        output: n.output.clone(),
        queries: n.queries.clone(),
        vector_column: n.vector_column.clone(),
        id_column: n.id_column.clone(),
        k: n.k as usize,
        similarity: n.similarity,
        index: match (&n.index, n.exact) {
            (_, true) => IndexUse::Exact,
            (Some(d), false) => IndexUse::At(d.clone()),
            (None, false) if n.require_index => IndexUse::Required,
            (None, false) => IndexUse::Auto,
        },
        nprobe: n.nprobe.map(|p| p as usize),
        overwrite: !n.no_overwrite,
        s3: Default::default(),
    };
    let progress = !quiet && opts.progress != ProgressMode::Off;
    let (rows, secs) = rt.block_on(neighbors::run_neighbors(&job, progress))?;
    if !quiet {
        say(format!(
            "wrote {} ({rows} rows x {} neighbors)\n  seconds          {secs:.2}\n  throughput       {:.0} rows/s",
            n.output,
            n.k,
            rows as f64 / secs.max(1e-9)
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn index(
    rt: &tokio::runtime::Runtime,
    o: &embedflow::cli::IndexOpts,
    opts: &RunOptions,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    use embedflow::analysis::index::{IndexJob, run_index};
    if !(0.0..=1.0).contains(&o.target_recall) {
        anyhow::bail!("--target-recall {} is not between 0 and 1", o.target_recall);
    }
    if !(0.0..=1.0).contains(&o.rebuild_after) {
        anyhow::bail!("--rebuild-after {} is not between 0 and 1", o.rebuild_after);
    }
    let job = IndexJob {
        table: o.table.clone(),
        output: o.output.clone(),
        vector_column: o.vector_column.clone(),
        build: embedflow::index::BuildOptions {
            lists: o.lists.map(|l| l as usize),
            metric: o.metric,
            target_recall: o.target_recall,
            recall_queries: o.recall_queries.max(1),
            seed: o.seed,
            progress: !quiet && opts.progress != ProgressMode::Off,
            rebuild: o.rebuild,
            rebuild_after: o.rebuild_after,
        },
        s3: Default::default(),
    };
    let summary = rt.block_on(run_index(&job))?;
    if !quiet {
        say(&summary);
    }
    Ok(ExitCode::SUCCESS)
}
