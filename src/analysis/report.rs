//! The report runner: one streaming pass over an embedded table (Parquet
//! file, folder, glob or Delta table; local or S3) that keeps, in bounded
//! memory, a seeded reservoir sample of rows for the map, per-topic sizes
//! and vector sums (the centroids of the similarity heatmap), and a sample
//! of `cluster_distance`; then the companion topics table, the layout
//! ([`crate::report::layout`]) and the page ([`crate::report::render`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};

use super::cluster_tables::{Texts, as_strings};
use super::vector_file::{batch_vectors, log, read, vector_dim};
use crate::cluster::kmeans::Rng;
use crate::report::{self, Histogram, MapPoints, ReportData, Topic};
use crate::runtime::spawn_cpu_stoppable;
use crate::sink::{self, ParquetSink};
use crate::source::{self, CsvOptions};
use crate::store::{self, S3Options, Stores};
use crate::{Error, Result};

/// Rows drawn on the map at most, by default: t-SNE over 20,000 rows takes
/// about a minute on two cores, and the page stays quick to open.
pub const DEFAULT_MAX_POINTS: usize = 20_000;
/// Topics a report draws at most.
pub const MAX_TOPICS: usize = 1_000;
/// Characters of a row's text kept for the map's hover.
const SNIPPET_CHARS: usize = 160;
/// `cluster_distance` values kept for the histogram.
const DISTANCE_SAMPLE: usize = 100_000;
const DISTANCE_BINS: usize = 40;
/// Keywords per topic in the table.
const KEYWORDS: usize = 10;

/// What to report on and where to write it.
#[derive(Clone, Debug)]
pub struct ReportJob {
    pub input: String,
    pub output: String,
    /// Default: the lineage's `embedflow.vector_column`, else `embedding`.
    pub vector_column: Option<String>,
    /// The text shown on hover. Default: `chunk_text`, else the column the
    /// lineage names as the text, else `text` or `title`.
    pub text_column: Option<String>,
    /// Default: the first column (embedflow writes the id column first).
    pub id_column: Option<String>,
    /// The topics table of `embedflow cluster --topics PATH` (keywords,
    /// representative texts). Default: the one the lineage names.
    pub topics_path: Option<String>,
    pub max_points: usize,
    pub seed: u64,
    pub title: Option<String>,
    pub overwrite: bool,
    pub s3: S3Options,
}

/// What a run did.
#[derive(Debug)]
pub struct ReportSummary {
    pub output: String,
    pub rows: u64,
    pub points: usize,
    pub topics: usize,
    pub bytes: usize,
    pub layout_seconds: f64,
    pub seconds: f64,
}

impl std::fmt::Display for ReportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "wrote {}", self.output)?;
        writeln!(f, "  rows             {}", self.rows)?;
        writeln!(f, "  on the map       {}", self.points)?;
        writeln!(f, "  topics           {}", self.topics)?;
        writeln!(f, "  size             {:.1} MB", self.bytes as f64 / 1e6)?;
        writeln!(f, "  layout seconds   {:.2}", self.layout_seconds)?;
        write!(f, "  seconds          {:.2}", self.seconds)
    }
}

/// The rows kept for the map (Algorithm R, seeded).
struct Sample {
    size: usize,
    dim: usize,
    seen: u64,
    vectors: Vec<f32>,
    ids: Vec<String>,
    texts: Vec<String>,
    groups: Vec<u32>,
    distances: Vec<f32>,
    rng: Rng,
}

impl Sample {
    /// Where row number `seen` goes: `Some(slot)` to keep it.
    fn slot(&mut self) -> Option<usize> {
        let seen = self.seen;
        self.seen += 1;
        if (seen as usize) < self.size {
            Some(seen as usize)
        } else {
            let j = self.rng.below(seen + 1) as usize;
            (j < self.size).then_some(j)
        }
    }

    fn put(&mut self, slot: usize, v: &[f32], id: String, text: String, group: u32, d: f32) {
        if slot == self.ids.len() {
            self.vectors.extend_from_slice(v);
            self.ids.push(id);
            self.texts.push(text);
            self.groups.push(group);
            self.distances.push(d);
        } else {
            self.vectors[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(v);
            self.ids[slot] = id;
            self.texts[slot] = text;
            self.groups[slot] = group;
            self.distances[slot] = d;
        }
    }
}

/// Per-topic tallies, by the order topics are first seen.
#[derive(Default)]
struct Groups {
    index: HashMap<i64, u32>,
    ids: Vec<i64>,
    labels: Vec<Option<String>>,
    sizes: Vec<u64>,
    sums: Vec<Vec<f64>>,
}

impl Groups {
    fn of(&mut self, id: i64, dim: usize, file: &str) -> Result<u32> {
        if let Some(&g) = self.index.get(&id) {
            return Ok(g);
        }
        if self.ids.len() == MAX_TOPICS {
            return Err(Error::input(
                file,
                format!(
                    "more than {MAX_TOPICS} distinct topics or clusters; a report draws at most {MAX_TOPICS}"
                ),
            ));
        }
        let g = self.ids.len() as u32;
        self.index.insert(id, g);
        self.ids.push(id);
        self.labels.push(None);
        self.sizes.push(0);
        self.sums.push(vec![0.0; dim]);
        Ok(g)
    }
}

fn int_column(col: &ArrayRef) -> Result<arrow::array::Int64Array> {
    let c = arrow::compute::cast(col, &DataType::Int64).map_err(Error::internal)?;
    Ok(c.as_primitive::<Int64Type>().clone())
}

/// The first of `names` that `schema` has.
fn first_present(schema: &arrow::datatypes::Schema, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| schema.field_with_name(n).is_ok())
        .map(|n| n.to_string())
}

/// The table as opened: where the report goes, the input, and its lineage.
struct Opened {
    target: store::Location,
    input: source::Input,
    first: String,
    lineage: Vec<(String, String)>,
}

impl Opened {
    /// A lineage value of the table's footer.
    fn meta(&self, key: &str) -> Option<String> {
        self.lineage
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

/// Which columns the report reads, by the flags, else the lineage, else
/// the usual names.
struct Columns {
    vector: String,
    dim: usize,
    text: Option<String>,
    id: Option<String>,
    chunk_index: Option<String>,
    group: Option<String>,
    label: Option<String>,
    distance: Option<String>,
}

impl Columns {
    /// The columns to read, the vector column first, each once.
    fn to_read(&self) -> Vec<String> {
        let mut columns = vec![self.vector.clone()];
        for c in [
            &self.id,
            &self.text,
            &self.chunk_index,
            &self.group,
            &self.label,
            &self.distance,
        ]
        .into_iter()
        .flatten()
        {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        columns
    }
}

/// What one pass over the table keeps: the map's sample, the per-topic
/// tallies, a sample of `cluster_distance`, the rows left out.
struct Pass {
    sample: Sample,
    groups: Groups,
    distances: Vec<f32>,
    distance_rng: Rng,
    non_finite: crate::vectors::NonFinite,
}

/// Writes the report of `job.input` to `job.output`. Nothing is written on
/// error; the file appears whole or not at all.
#[tracing::instrument(name = "report", skip_all, fields(input = %job.input))]
pub async fn run_report(job: &ReportJob, progress: bool) -> Result<ReportSummary> {
    let started = Instant::now();
    let stores = Stores::new(job.s3.clone());
    let opened = open(job, &stores).await?;
    let cols = choose_columns(job, &opened).await?;
    log(progress, format!("report: reading {}", job.input));
    let mut pass = read_pass(job, &opened.input, &cols).await?;
    let rows = pass.sample.seen;
    let left_off = said_left_off(&pass.non_finite, &opened.first, rows)?;
    let topics_path = match &job.topics_path {
        Some(p) => Some(p.clone()),
        None => opened
            .meta("embedflow.topics.topics_path")
            .filter(|p| lineage_path_is_beside(&stores, p, &job.input, &opened.input)),
    };
    let table = match &topics_path {
        Some(p) => Some(read_topics(&stores, p).await?),
        None => None,
    };
    // Topics in id order, with the topics table's keywords when there is one.
    let (order, rank) = topic_order(&pass.groups);
    let topics = topic_list(&order, &pass, table.as_ref(), cols.group.as_deref());
    let similarity = centroid_similarity(&order, &pass.groups);
    let points = pass.sample.ids.len();
    log(
        progress,
        format!("report: laying out {points} of {rows} rows (t-SNE)"),
    );
    let layout_started = Instant::now();
    let map = lay_out(&mut pass.sample, &rank, cols.dim, job.seed).await?;
    let layout_seconds = layout_started.elapsed().as_secs_f64();
    let notes = Notes {
        map: map_note(left_off.as_deref(), points, rows, job.seed),
        topics: topics_note(
            table.is_some(),
            topics_path.as_deref(),
            cols.group.as_deref(),
        ),
    };
    let data = report_data(
        job,
        opened.lineage,
        &cols,
        rows,
        topics,
        map,
        notes,
        similarity,
        &pass.distances,
    );
    let topics = data.topics.len();
    let bytes = write_page(job, &opened.target, &data).await?;
    Ok(ReportSummary {
        output: job.output.clone(),
        rows,
        points,
        topics,
        bytes,
        layout_seconds,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Checks the target, opens the table and reads its lineage; `-o` naming
/// the table (or a file of it), however spelled, would replace the data
/// with its own report.
async fn open(job: &ReportJob, stores: &Stores) -> Result<Opened> {
    let target = ParquetSink::check_target(stores, &job.output, job.overwrite).await?;
    let input = source::open(stores, &job.input, None, &CsvOptions::default()).await?;
    let first = input.files[0].location.display.clone();
    if let Some(why) = store::output_clash(stores, &job.output, &job.input, &input.files) {
        return Err(Error::output(&job.output, why));
    }
    let lineage: Vec<(String, String)> = match input.format {
        source::Format::Parquet => source::parquet::key_value_metadata(&input.files[0])
            .await?
            .into_iter()
            .filter(|(k, _)| k.starts_with("embedflow."))
            .collect(),
        source::Format::Csv => Vec::new(),
    };
    Ok(Opened {
        target,
        input,
        first,
        lineage,
    })
}

/// The columns the report reads (see [`ReportJob`] for the defaults).
async fn choose_columns(job: &ReportJob, opened: &Opened) -> Result<Columns> {
    let (input, first) = (&opened.input, &opened.first);
    let schema = Arc::clone(&input.schema);
    let vector_column = job
        .vector_column
        .clone()
        .or_else(|| opened.meta("embedflow.vector_column"))
        .unwrap_or_else(|| "embedding".to_string());
    let dim = vector_dim(input, &vector_column).await?;
    for c in [&job.text_column, &job.id_column].into_iter().flatten() {
        if schema.field_with_name(c).is_err() {
            return Err(Error::missing_column(first, c, &schema));
        }
    }
    let text_column = job.text_column.clone().or_else(|| {
        let named = opened
            .meta("embedflow.text")
            .filter(|t| schema.field_with_name(t).is_ok());
        first_present(&schema, &[sink::CHUNK_TEXT])
            .or(named)
            .or_else(|| first_present(&schema, &["text", "title", "content", "body"]))
    });
    let id_column = job.id_column.clone().or_else(|| {
        schema
            .fields()
            .iter()
            .map(|f| f.name())
            .find(|n| **n != vector_column && !n.starts_with("chunk_"))
            .cloned()
    });
    // Rows are grouped by topic when there are topics, else by cluster.
    let group_column = first_present(&schema, &["topic_id", "cluster_id"]);
    let label_column = match group_column.as_deref() {
        Some("topic_id") => first_present(&schema, &["topic_label"]),
        _ => None,
    };
    Ok(Columns {
        vector: vector_column,
        dim,
        text: text_column,
        id: id_column,
        chunk_index: first_present(&schema, &[sink::CHUNK_INDEX]),
        group: group_column,
        label: label_column,
        distance: first_present(&schema, &["cluster_distance"]),
    })
}

/// One streaming pass over the table: the map's reservoir sample, the
/// per-topic sizes and vector sums, a sample of `cluster_distance`; rows
/// with non-finite vectors are counted and left out.
async fn read_pass(job: &ReportJob, input: &source::Input, cols: &Columns) -> Result<Pass> {
    let mut pass = Pass::new(job, cols.dim);
    let mut rx = read(input, &cols.to_read());
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        pass.add_batch(&sb?, cols)?;
    }
    Ok(pass)
}

/// One batch's columns, as the pass reads them.
struct BatchColumns {
    vectors: Vec<f32>,
    ids: Option<Texts>,
    texts: Option<Texts>,
    chunks: Option<arrow::array::Int64Array>,
    group_ids: Option<arrow::array::Int64Array>,
    labels: Option<Texts>,
    distances: Option<arrow::array::Float32Array>,
}

impl BatchColumns {
    fn of(sb: &source::SourceBatch, cols: &Columns) -> Result<BatchColumns> {
        let b = &sb.batch;
        let col = |name: &Option<String>| -> Option<ArrayRef> {
            name.as_ref().and_then(|n| b.column_by_name(n).cloned())
        };
        let vi = b.schema().index_of(&cols.vector).map_err(Error::internal)?;
        Ok(BatchColumns {
            vectors: batch_vectors(sb, vi, cols.dim, &cols.vector)?,
            ids: col(&cols.id).map(|c| as_strings(&c)).transpose()?,
            texts: col(&cols.text).map(|c| as_strings(&c)).transpose()?,
            chunks: col(&cols.chunk_index).map(|c| int_column(&c)).transpose()?,
            group_ids: col(&cols.group).map(|c| int_column(&c)).transpose()?,
            labels: col(&cols.label).map(|c| as_strings(&c)).transpose()?,
            distances: col(&cols.distance)
                .map(|c| {
                    arrow::compute::cast(&c, &DataType::Float32)
                        .map(|a| a.as_primitive::<Float32Type>().clone())
                        .map_err(Error::internal)
                })
                .transpose()?,
        })
    }
}

impl Pass {
    fn new(job: &ReportJob, dim: usize) -> Pass {
        Pass {
            sample: Sample {
                size: job.max_points.max(1),
                dim,
                seen: 0,
                vectors: Vec::new(),
                ids: Vec::new(),
                texts: Vec::new(),
                groups: Vec::new(),
                distances: Vec::new(),
                rng: Rng::new(job.seed ^ 0x7e9a),
            },
            groups: Groups::default(),
            distances: Vec::new(),
            distance_rng: Rng::new(job.seed ^ 0xd157),
            non_finite: crate::vectors::NonFinite::default(),
        }
    }

    /// Adds a batch's rows: its topic's tallies, the distance sample and
    /// the map's sample.
    fn add_batch(&mut self, sb: &source::SourceBatch, cols: &Columns) -> Result<()> {
        let c = BatchColumns::of(sb, cols)?;
        let dim = cols.dim;
        for (i, row) in c.vectors.chunks_exact(dim).enumerate() {
            if !self
                .non_finite
                .check(row, &sb.file, sb.first_row + i as u64 + 1)
            {
                continue;
            }
            let g = self.tally(row, i, &c, &sb.file)?;
            let d = c
                .distances
                .as_ref()
                .filter(|d| d.is_valid(i))
                .map_or(f32::NAN, |d| d.value(i));
            if c.distances.is_some() {
                self.keep_distance(d);
            }
            if let Some(slot) = self.sample.slot() {
                let mut id = match &c.ids {
                    Some(s) => s.value_or_empty(i).to_string(),
                    None => (self.sample.seen - 1).to_string(),
                };
                if let Some(ch) = &c.chunks {
                    id = format!("{id}#{}", ch.value(i));
                }
                let text = c
                    .texts
                    .as_ref()
                    .map(|t| report::snippet(t.value_or_empty(i), SNIPPET_CHARS))
                    .unwrap_or_default();
                self.sample.put(slot, row, id, text, g, d);
            }
        }
        Ok(())
    }

    /// Counts row `i` (vector `row`) in its topic: size, vector sum, label.
    fn tally(&mut self, row: &[f32], i: usize, c: &BatchColumns, file: &str) -> Result<u32> {
        let groups = &mut self.groups;
        let gid = match &c.group_ids {
            Some(g) if g.is_valid(i) => g.value(i),
            _ => -1,
        };
        let g = groups.of(gid, row.len(), file)?;
        let gi = g as usize;
        groups.sizes[gi] += 1;
        for (s, &x) in groups.sums[gi].iter_mut().zip(row) {
            *s += x as f64;
        }
        if groups.labels[gi].is_none()
            && let Some(l) = &c.labels
        {
            groups.labels[gi] = Some(l.value_or_empty(i).to_string());
        }
        Ok(g)
    }

    /// Keeps `d` in the distance sample (Algorithm R, by the rows seen).
    fn keep_distance(&mut self, d: f32) {
        let seen = self.sample.seen as usize;
        if seen < DISTANCE_SAMPLE {
            self.distances.push(d);
        } else {
            let j = self.distance_rng.below(seen as u64 + 1) as usize;
            if j < DISTANCE_SAMPLE {
                self.distances[j] = d;
            }
        }
    }
}

/// Says on stderr which rows were left out (non-finite vectors), and
/// refuses a table with no row to report; the sentence, for the page.
fn said_left_off(
    non_finite: &crate::vectors::NonFinite,
    first: &str,
    rows: u64,
) -> Result<Option<String>> {
    let left_off = non_finite.describe("are left off the map, the topics and their centroids");
    if let Some(why) = &left_off {
        crate::note!("{why}");
    }
    if rows == 0 {
        return Err(Error::input(
            first,
            match &left_off {
                Some(why) => {
                    format!("has no row with finite vector values: nothing to report; {why}")
                }
                None => "has no rows: nothing to report".into(),
            },
        ));
    }
    Ok(left_off)
}

/// The topics in id order, and each topic's rank in it.
fn topic_order(groups: &Groups) -> (Vec<u32>, Vec<u32>) {
    let mut order: Vec<u32> = (0..groups.ids.len() as u32).collect();
    order.sort_by_key(|&g| groups.ids[g as usize]);
    let mut rank = vec![0u32; order.len()];
    for (r, &g) in order.iter().enumerate() {
        rank[g as usize] = r as u32;
    }
    (order, rank)
}

/// Each topic: its label, size, keywords and representative texts (from
/// the topics table, else the sampled rows nearest its centre).
fn topic_list(
    order: &[u32],
    pass: &Pass,
    table: Option<&HashMap<i64, Topic>>,
    group_column: Option<&str>,
) -> Vec<Topic> {
    let (groups, sample) = (&pass.groups, &pass.sample);
    order
        .iter()
        .map(|&g| {
            let g = g as usize;
            let id = groups.ids[g];
            let known = table.and_then(|t| t.get(&id));
            let label = known
                .map(|t| t.label.clone())
                .or_else(|| groups.labels[g].clone())
                .unwrap_or_else(|| match (group_column, id) {
                    (None, _) => "all rows".to_string(),
                    (Some(_), -1) => "no cluster".to_string(),
                    (Some(c), id) => format!("{} {id}", c.trim_end_matches("_id")),
                });
            let mut keywords = known.map(|t| t.keywords.clone()).unwrap_or_default();
            keywords.truncate(KEYWORDS);
            let representative = match known {
                Some(t) if !t.representative.is_empty() => t.representative.clone(),
                // The sampled rows nearest the centre.
                _ => {
                    let mut mine: Vec<usize> = (0..sample.groups.len())
                        .filter(|&i| sample.groups[i] as usize == g)
                        .collect();
                    mine.sort_by(|&a, &b| sample.distances[a].total_cmp(&sample.distances[b]));
                    mine.iter()
                        .take(3)
                        .map(|&i| sample.texts[i].clone())
                        .filter(|t| !t.is_empty())
                        .collect()
                }
            };
            Topic {
                id,
                label,
                size: groups.sizes[g],
                keywords,
                representative: representative
                    .iter()
                    .map(|t| report::snippet(t, 300))
                    .collect(),
            }
        })
        .collect()
}

/// Cosine similarity of the topics' centroids (the mean of their rows'
/// vectors), rounded to 3 decimals, in topic order.
fn centroid_similarity(order: &[u32], groups: &Groups) -> Vec<Vec<f32>> {
    let centroids: Vec<Vec<f64>> = order
        .iter()
        .map(|&g| {
            let s = &groups.sums[g as usize];
            let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
            s.iter()
                .map(|v| if norm > 0.0 { v / norm } else { 0.0 })
                .collect()
        })
        .collect();
    centroids
        .iter()
        .map(|a| {
            centroids
                .iter()
                .map(|b| {
                    let c: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                    (c * 1000.0).round() as f32 / 1000.0
                })
                .collect()
        })
        .collect()
}

/// The map: the sample laid out by t-SNE (stoppable at once by a signal),
/// each point with its topic's rank, id and text.
async fn lay_out(sample: &mut Sample, rank: &[u32], dim: usize, seed: u64) -> Result<MapPoints> {
    let vectors = std::mem::take(&mut sample.vectors);
    let xy = spawn_cpu_stoppable(move || Ok(report::layout::tsne_2d(&vectors, dim, seed))).await?;
    Ok(MapPoints {
        x: xy.iter().step_by(2).map(|&v| report::round2(v)).collect(),
        y: xy
            .iter()
            .skip(1)
            .step_by(2)
            .map(|&v| report::round2(v))
            .collect(),
        t: sample.groups.iter().map(|&g| rank[g as usize]).collect(),
        id: std::mem::take(&mut sample.ids),
        text: std::mem::take(&mut sample.texts),
    })
}

/// The page's two notes: under the map, and under the topics.
struct Notes {
    map: String,
    topics: String,
}

/// What the map shows and how it was laid out.
fn map_note(left_off: Option<&str>, points: usize, rows: u64, seed: u64) -> String {
    format!(
        "{}{} {}{} rows, placed by t-SNE (perplexity {}, {} epochs, cosine neighbours, PCA start, seed {seed}). Scroll to zoom, drag to pan, hover a point for its text; click a topic in the legend to hide it.",
        left_off.map_or_else(String::new, |why| format!("{why}. ")),
        if points as u64 == rows {
            "All"
        } else {
            "A seeded random sample of"
        },
        points,
        if points as u64 == rows {
            String::new()
        } else {
            format!(" of {rows}")
        },
        report::layout::PERPLEXITY,
        report::layout::EPOCHS,
    )
}

/// Where the topics came from.
fn topics_note(has_table: bool, topics_path: Option<&str>, group_column: Option<&str>) -> String {
    match (has_table, topics_path, group_column) {
        (true, Some(p), _) => format!("Keywords and representative texts from {p}."),
        (false, _, Some(c)) => format!(
            "Grouped by {c}; no topics table (embedflow cluster --topics PATH, or [topics] in a job, makes one with keywords)."
        ),
        _ => "No clusters: embedflow cluster (or [cluster] in a job) assigns them.".to_string(),
    }
}

/// The page's data: lineage rows first, then topics, map and histogram.
#[allow(clippy::too_many_arguments)]
fn report_data(
    job: &ReportJob,
    lineage: Vec<(String, String)>,
    cols: &Columns,
    rows: u64,
    topics: Vec<Topic>,
    map: MapPoints,
    notes: Notes,
    similarity: Vec<Vec<f32>>,
    distances: &[f32],
) -> ReportData {
    let mut lineage_rows = vec![
        ("table".to_string(), job.input.clone()),
        ("rows".to_string(), rows.to_string()),
        (
            "vector column".to_string(),
            format!("{} ({} dims)", cols.vector, cols.dim),
        ),
    ];
    lineage_rows.extend(
        lineage
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("embedflow.").to_string(), v)),
    );
    ReportData {
        input: job.input.clone(),
        rows,
        dim: cols.dim,
        lineage: lineage_rows,
        topics,
        topics_note: notes.topics,
        map,
        map_note: notes.map,
        similarity,
        distance: Histogram::of(
            match &cols.distance {
                Some(_) => "Distance to the cluster centre (cluster_distance)".to_string(),
                None => "No cluster_distance column".to_string(),
            },
            distances,
            DISTANCE_BINS,
        ),
    }
}

/// Renders and writes the page in one put (a local file under a temporary
/// name, renamed; an S3 object appears whole): never a half-written report.
/// Returns its size.
async fn write_page(job: &ReportJob, target: &store::Location, data: &ReportData) -> Result<usize> {
    let title = job
        .title
        .clone()
        .unwrap_or_else(|| format!("embedflow report: {}", job.input));
    let html = report::render(&title, data);
    let bytes = html.len();
    crate::cancel::check()?;
    object_store::ObjectStoreExt::put(
        target.store.as_ref(),
        &target.path,
        html.into_bytes().into(),
    )
    .await
    .map_err(|e| Error::output(&job.output, e.to_string()))?;
    Ok(bytes)
}

/// The topics table of the cluster runner, by topic id.
async fn read_topics(stores: &Stores, path: &str) -> Result<HashMap<i64, Topic>> {
    let input = source::open(stores, path, None, &CsvOptions::default()).await?;
    let file = input.files[0].location.display.clone();
    let want = [
        "topic_id",
        "label",
        "keywords",
        "keyword_scores",
        "size",
        "representative_texts",
    ];
    for c in want {
        if input.schema.field_with_name(c).is_err() {
            return Err(Error::input(
                &file,
                format!(
                    "is not a topics table (embedflow cluster --topics PATH): it has no column '{c}'"
                ),
            ));
        }
    }
    let columns: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let mut out = HashMap::new();
    let mut rx = read(&input, &columns);
    while let Some(sb) = rx.recv().await {
        let b: RecordBatch = sb?.batch;
        let ids = int_column(b.column(0))?;
        let labels = as_strings(b.column(1))?;
        let words = b.column(2).as_list_opt::<i32>();
        let scores = b.column(3).as_list_opt::<i32>();
        let sizes = int_column(b.column(4))?;
        let reps = b.column(5).as_list_opt::<i32>();
        let (Some(words), Some(scores), Some(reps)) = (words, scores, reps) else {
            return Err(Error::input(
                &file,
                "keywords, keyword_scores and representative_texts must be lists",
            ));
        };
        for i in 0..b.num_rows() {
            let w = as_strings(&words.value(i))?;
            let s = arrow::compute::cast(&scores.value(i), &DataType::Float64)
                .map_err(Error::internal)?;
            let s = s.as_primitive::<Float64Type>();
            let r = as_strings(&reps.value(i))?;
            out.insert(
                ids.value(i),
                Topic {
                    id: ids.value(i),
                    label: labels.value_or_empty(i).to_string(),
                    size: sizes.value(i).max(0) as u64,
                    keywords: (0..s.len().min(words.value(i).len()))
                        .map(|j| (w.value_or_empty(j).to_string(), s.value(j)))
                        .collect(),
                    representative: (0..reps.value(i).len())
                        .map(|j| r.value_or_empty(j).to_string())
                        .collect(),
                },
            );
        }
    }
    Ok(out)
}

/// Whether a path named in a table's own metadata may be read: only a file
/// beside the table (in the folder that holds it, or in its own folder).
/// An untrusted table must not make the report read another local file (or
/// another bucket) into the page; one that points elsewhere is not read,
/// and the user is told to name it with `--topics` if they trust it.
fn lineage_path_is_beside(stores: &Stores, path: &str, table: &str, input: &source::Input) -> bool {
    let Ok(named) = stores.resolve(path) else {
        return false;
    };
    let first = &input.files[0].location;
    let dir = match first.display.rsplit_once('/') {
        Some((d, _)) => d.to_string(),
        None => ".".to_string(),
    };
    // A Delta table's files are in its folder; the folder's parent holds
    // the tables written beside it.
    let homes = [dir.clone(), format!("{}/..", table.trim_end_matches('/'))];
    let beside = homes.iter().any(|home| {
        stores
            .resolve(home)
            .is_ok_and(|h| named.identity().is_within(&h.identity()))
    });
    if !beside {
        crate::note!(
            "the table's lineage names a topics table outside its folder ({path}): not read; pass --topics {path} to use it"
        );
    }
    beside
}
