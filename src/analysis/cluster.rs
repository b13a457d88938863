//! The cluster runner: clusters and topics over any Parquet with a vector column
//! (`FixedSizeList<Float32>` or `List<Float32>`), streaming:
//!
//! 1. a reservoir sample of `train_sample` rows (default 256·k, as faiss
//!    does) is read and held: memory is bounded by the sample, not the data;
//! 2. k-means is trained on it ([`kmeans`]);
//! 3. with topics, a pass assigns every row and counts terms per cluster
//!    ([`ctfidf`]), so the keywords are known before anything is written;
//! 4. a last pass assigns every row again and writes it with `cluster_id`,
//!    `cluster_distance` (and `topic_id`, `topic_label`, `topic_score`),
//!    then the `clusters` and `topics` tables.

use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::cluster_tables::{as_strings, write_clusters, write_rows, write_topics};
use crate::cluster::{Assigner, ctfidf, kmeans};
use crate::runtime::spawn_cpu;
use crate::sink::{ParquetSink, WriteOptions};
use crate::source::{self, CsvOptions, Input};
use crate::store::{self, Stores};
use crate::vectors::{NonFinite, finite_rows};
use crate::{Error, Result};

use super::cluster_job::{ClusterJob, ClusterSummary, LABEL_WORDS};
use super::vector_file::{batch_vectors, log, read, vector_dim};

/// Algorithm R over the stream: every row ends in the sample with
/// probability `size / rows`.
struct Reservoir {
    size: usize,
    dim: usize,
    seen: u64,
    rows: Vec<f32>,
    rng: kmeans::Rng,
}

impl Reservoir {
    fn add(&mut self, v: &[f32]) {
        for row in v.chunks_exact(self.dim) {
            if (self.seen as usize) < self.size {
                self.rows.extend_from_slice(row);
            } else {
                let j = self.rng.below(self.seen + 1) as usize;
                if j < self.size {
                    self.rows[j * self.dim..(j + 1) * self.dim].copy_from_slice(row);
                }
            }
            self.seen += 1;
        }
    }
}

/// Runs a clustering job end to end. On error nothing is committed.
#[tracing::instrument(name = "cluster", skip_all, fields(input = %job.input))]
pub async fn run_cluster(job: &ClusterJob, progress: bool) -> Result<ClusterSummary> {
    let started = Instant::now();
    let stores = Stores::new(job.s3.clone());
    let input = source::open(&stores, &job.input, None, &CsvOptions::default()).await?;
    let dim = vector_dim(&input, &job.vector_column).await?;
    check_columns(job, &input, dim)?;
    check_outputs(job, &stores, &input).await?;
    // 1. Sample.
    let (sample, rows) = sample_rows(job, &input, dim, progress).await?;
    // 2. Train.
    let (assigner, trained) = train(job, sample, dim, progress).await?;
    // 3. Topics: count terms per topic.
    let keywords = count_keywords(job, &input, &assigner, dim, progress).await?;
    let topic_labels = keywords.as_ref().map(|kw| topic_labels(&assigner, kw));
    // 4. Assign and write, keeping the input's lineage.
    let schema = output_schema(&input, keywords.is_some());
    let metadata =
        output_metadata(job, &input, &assigner, trained.sampled, keywords.is_some()).await?;
    let labelled = Labelled {
        assigner: &assigner,
        keywords: keywords.as_deref(),
        topic_labels: topic_labels.as_deref(),
    };
    let outputs = write_outputs(job, &stores, &input, dim, labelled, schema, metadata).await?;
    let model = assigner.model();
    Ok(ClusterSummary {
        rows,
        k: model.k,
        dim,
        sampled: trained.sampled,
        iterations: model.iterations,
        converged: model.converged,
        train_inertia: model.inertia,
        train_seconds: trained.seconds,
        seconds: started.elapsed().as_secs_f64(),
        outputs,
    })
}

/// The columns asked for are there, the zero-shot labels have the
/// vectors' width, and the input has none of the columns the stage adds.
fn check_columns(job: &ClusterJob, input: &Input, dim: usize) -> Result<()> {
    let first = input.files[0].location.display.clone();
    for c in [&job.id_column, &job.text_column].into_iter().flatten() {
        if input.schema.field_with_name(c).is_err() {
            return Err(Error::missing_column(&first, c, &input.schema));
        }
    }
    if job.kmeans.k == 0 {
        return Err(Error::internal("k must be at least 1"));
    }
    if let Some(z) = &job.zero_shot
        && z.vectors.len() != z.labels.len() * dim
    {
        return Err(Error::input(
            &first,
            format!(
                "the zero-shot labels were embedded with {} dimensions, the vectors have {dim}",
                z.vectors.len() / z.labels.len().max(1)
            ),
        ));
    }
    for name in OUTPUT_COLUMNS {
        if input.schema.field_with_name(name).is_ok() {
            return Err(Error::input(
                &first,
                format!("already has a column '{name}'; drop it, or cluster the vectors alone"),
            ));
        }
    }
    Ok(())
}

/// Every output can be written, and none replaces the input (OUTPUT may be
/// INPUT itself: labels added in place, by rename) or another output.
async fn check_outputs(job: &ClusterJob, stores: &Stores, input: &Input) -> Result<()> {
    for out in [
        Some(&job.output),
        job.clusters_path.as_ref(),
        job.topics_path.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if *out != job.input {
            ParquetSink::check_target(stores, out, job.overwrite).await?;
        }
    }
    // OUTPUT may be INPUT itself (labels added in place, by rename); the
    // clusters and topics tables may not replace it, however spelled.
    let tables: Vec<(&str, &str)> = [
        ("--clusters", job.clusters_path.as_deref()),
        ("--topics", job.topics_path.as_deref()),
    ]
    .into_iter()
    .filter_map(|(flag, p)| p.map(|p| (flag, p)))
    .collect();
    let mut outputs = vec![("OUTPUT", job.output.as_str())];
    outputs.extend(tables.iter().copied());
    let mut problems: Vec<String> = tables
        .iter()
        .filter_map(|(flag, p)| {
            store::output_clash(stores, p, &job.input, &input.files)
                .map(|why| format!("{flag}: {p} {why}"))
        })
        .collect();
    problems.extend(store::same_file_outputs(stores, &outputs));
    if let Some(p) = problems.into_iter().next() {
        return Err(Error::Job {
            origin: "command line".into(),
            problems: vec![p],
        });
    }
    Ok(())
}

/// A seeded reservoir sample of the finite rows for training, and how
/// many finite rows there are; rows with non-finite vectors are named.
async fn sample_rows(
    job: &ClusterJob,
    input: &Input,
    dim: usize,
    progress: bool,
) -> Result<(Vec<f32>, u64)> {
    let size = job
        .train_sample
        .unwrap_or(256 * job.kmeans.k)
        .max(job.kmeans.k);
    let mut reservoir = Reservoir {
        size,
        dim,
        seen: 0,
        rows: Vec::new(),
        rng: kmeans::Rng::new(job.kmeans.seed ^ 0xa5a5),
    };
    let vcol = [job.vector_column.clone()];
    let mut rx = read(input, &vcol);
    let mut non_finite = NonFinite::default();
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        let sb = sb?;
        let v = batch_vectors(&sb, 0, dim, &job.vector_column)?;
        for (i, row) in v.chunks_exact(dim).enumerate() {
            if non_finite.check(row, &sb.file, sb.first_row + i as u64 + 1) {
                reservoir.add(row);
            }
        }
    }
    if let Some(why) = non_finite.describe(
        "are left out of the clusters and their centroids (their cluster and topic columns are null)",
    ) {
        crate::note!("{why}");
    }
    let rows = reservoir.seen;
    if rows < job.kmeans.k as u64 {
        return Err(Error::input(
            &job.input,
            format!("{rows} rows, fewer than k = {}", job.kmeans.k),
        ));
    }
    log(
        progress,
        format!(
            "sampled {} of {rows} rows; training k-means (k = {})",
            reservoir.rows.len() / dim,
            job.kmeans.k
        ),
    );
    Ok((std::mem::take(&mut reservoir.rows), rows))
}

/// What training took: the rows sampled, the seconds.
struct Trained {
    sampled: usize,
    seconds: f64,
}

/// k-means on the sample (stopped by a signal between iterations).
async fn train(
    job: &ClusterJob,
    sample: Vec<f32>,
    dim: usize,
    progress: bool,
) -> Result<(Arc<Assigner>, Trained)> {
    let t = Instant::now();
    let sampled = sample.len() / dim;
    let cfg = job.kmeans.clone();
    let model = tokio::task::spawn_blocking(move || {
        kmeans::fit_until(&sample, dim, &cfg, None, &crate::cancel::requested)
    })
    .await
    .map_err(Error::internal)?
    .ok_or(Error::Interrupted)?;
    let train_seconds = t.elapsed().as_secs_f64();
    log(
        progress,
        format!(
            "trained in {train_seconds:.1} s ({} iterations, inertia {:.4})",
            model.iterations, model.inertia
        ),
    );
    let assigner = Arc::new(Assigner::new(model, job.zero_shot.clone(), dim));
    Ok((
        assigner,
        Trained {
            sampled,
            seconds: train_seconds,
        },
    ))
}

/// Keywords per topic (c-TF-IDF over the texts of its finite rows), empty
/// ones for zero-shot labels alone, or none without texts or labels.
async fn count_keywords(
    job: &ClusterJob,
    input: &Input,
    assigner: &Arc<Assigner>,
    dim: usize,
    progress: bool,
) -> Result<Option<Vec<Vec<(String, f64)>>>> {
    Ok(match &job.text_column {
        Some(text) => {
            let mut counts = ctfidf::TermCounts::new(assigner.topics(), job.topics.clone());
            let cols = [job.vector_column.clone(), text.clone()];
            let mut rx = read(input, &cols);
            while let Some(sb) = rx.recv().await {
                let sb = sb?;
                let v = batch_vectors(&sb, 0, dim, &job.vector_column)?;
                let finite = finite_rows(&v, dim);
                let asg = Arc::clone(assigner);
                let a = spawn_cpu(move || Ok(asg.assign(&v))).await?;
                let texts = as_strings(sb.batch.column(1))?;
                for (i, &t) in a.topics.iter().enumerate() {
                    if finite[i] {
                        counts.add(t as usize, texts.value_or_empty(i));
                    }
                }
            }
            log(progress, "counted terms per topic");
            Some(counts.keywords())
        }
        // Zero-shot labels alone (image vectors have no words): topics
        // without keywords.
        None if job.zero_shot.is_some() => Some(vec![Vec::new(); assigner.topics()]),
        None => None,
    })
}

/// Each topic's label: its zero-shot label, else its id and first keywords.
fn topic_labels(assigner: &Assigner, keywords: &[Vec<(String, f64)>]) -> Vec<String> {
    keywords
        .iter()
        .enumerate()
        .map(|(t, words)| match assigner.zero_shot_label(t) {
            Some(l) => l.to_string(),
            None => {
                let mut label = t.to_string();
                for (w, _) in words.iter().take(LABEL_WORDS) {
                    label.push('_');
                    label.push_str(w);
                }
                label
            }
        })
        .collect()
}

/// The input's columns and the stage's: cluster and distance, and the
/// topic columns when there are topics (null for rows left out).
fn output_schema(input: &Input, topics: bool) -> SchemaRef {
    let mut fields: Vec<Field> = input
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    // Null for a row whose vector is not finite (left out of the clusters).
    fields.push(Field::new("cluster_id", DataType::Int32, true));
    fields.push(Field::new("cluster_distance", DataType::Float32, true));
    if topics {
        fields.push(Field::new("topic_id", DataType::Int32, true));
        fields.push(Field::new("topic_label", DataType::Utf8, true));
        fields.push(Field::new("topic_score", DataType::Float32, true));
    }
    Arc::new(Schema::new(fields))
}

/// The input's lineage (its clustering and topics keys replaced) and this
/// run's: k, metric, seed, sample, iterations, the companion tables.
async fn output_metadata(
    job: &ClusterJob,
    input: &Input,
    assigner: &Assigner,
    sampled: usize,
    topics: bool,
) -> Result<Vec<(String, String)>> {
    let mut metadata: Vec<(String, String)> = match input.format {
        source::Format::Parquet => source::parquet::key_value_metadata(&input.files[0])
            .await?
            .into_iter()
            .filter(|(k, _)| {
                k.starts_with("embedflow.")
                    && !k.starts_with("embedflow.cluster.")
                    && !k.starts_with("embedflow.topics.")
            })
            .collect(),
        source::Format::Csv => Vec::new(),
    };
    let model = assigner.model();
    metadata.extend([
        ("embedflow.cluster.k".into(), model.k.to_string()),
        ("embedflow.cluster.metric".into(), model.metric.name()),
        ("embedflow.cluster.seed".into(), job.kmeans.seed.to_string()),
        ("embedflow.cluster.train_sample".into(), sampled.to_string()),
        (
            "embedflow.cluster.iterations".into(),
            model.iterations.to_string(),
        ),
        (
            "embedflow.cluster.vector_column".into(),
            job.vector_column.clone(),
        ),
    ]);
    // Where the companion tables went: `embedflow report` finds them here.
    if let Some(p) = &job.clusters_path {
        metadata.push(("embedflow.cluster.clusters_path".into(), p.clone()));
    }
    if let (Some(p), true) = (&job.topics_path, topics) {
        metadata.push(("embedflow.topics.topics_path".into(), p.clone()));
    }
    if let Some(z) = &job.zero_shot {
        metadata.push((
            "embedflow.topics.zero_shot_labels".into(),
            z.labels.join("\n"),
        ));
        metadata.push((
            "embedflow.topics.min_similarity".into(),
            z.min_similarity.to_string(),
        ));
    }
    Ok(metadata)
}

/// The trained model and the topics' words and labels, for writing.
struct Labelled<'a> {
    assigner: &'a Arc<Assigner>,
    keywords: Option<&'a [Vec<(String, f64)>]>,
    topic_labels: Option<&'a [String]>,
}

/// Assigns and writes every row (committed whole, or aborted), then the
/// clusters and topics tables; returns what was written, for the summary.
async fn write_outputs(
    job: &ClusterJob,
    stores: &Stores,
    input: &Input,
    dim: usize,
    labelled: Labelled<'_>,
    schema: SchemaRef,
    metadata: Vec<(String, String)>,
) -> Result<Vec<String>> {
    let Labelled {
        assigner,
        keywords,
        topic_labels,
    } = labelled;
    let model = assigner.model();
    let write = WriteOptions {
        overwrite: job.overwrite || job.output == job.input,
        metadata,
        ..WriteOptions::default()
    };
    let mut sink = ParquetSink::create(stores, &job.output, Arc::clone(&schema), &write).await?;
    let result = write_rows(job, input, assigner, dim, topic_labels, &schema, &mut sink).await;
    let tally = match result {
        Ok(r) => r,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    let written = sink.commit().await?;
    let mut outputs = vec![format!("{} ({written} rows)", job.output)];
    let tables = WriteOptions {
        overwrite: true,
        ..write
    };
    if let Some(p) = &job.clusters_path {
        write_clusters(stores, p, model, &tally, &tables).await?;
        outputs.push(format!("{p} ({} clusters)", model.k));
    }
    if let (Some(p), Some(kw), Some(labels)) = (&job.topics_path, keywords, topic_labels) {
        write_topics(stores, p, kw, labels, &tally, &tables).await?;
        outputs.push(format!("{p} ({} topics)", kw.len()));
    }
    Ok(outputs)
}

/// Columns the stage adds (an input that has them is refused).
pub const OUTPUT_COLUMNS: [&str; 5] = [
    "cluster_id",
    "cluster_distance",
    "topic_id",
    "topic_label",
    "topic_score",
];
