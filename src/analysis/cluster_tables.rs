//! The cluster runner's outputs: rows with their cluster and topic, the
//! clusters table and the topics table.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::runtime::spawn_cpu;
use crate::sink::{self, ParquetSink, WriteOptions};
use crate::source::Input;
use crate::store::Stores;
use crate::{Error, Result};

use crate::cluster::{Assigner, kmeans};

/// Rows nearest each centre kept for the clusters table.
use super::cluster_job::{ClusterJob, NEAREST, REPRESENTATIVES};
use super::vector_file::{batch_vectors, read};

/// The rows nearest one centre so far: (distance, id, text), best first.
#[derive(Default, Clone)]
pub(super) struct Nearest(Vec<(f32, String, Option<String>)>);

impl Nearest {
    pub(super) fn offer(
        &mut self,
        dist: f32,
        id: impl FnOnce() -> String,
        text: impl FnOnce() -> Option<String>,
    ) {
        if self.0.len() == NEAREST && dist >= self.0[NEAREST - 1].0 {
            return;
        }
        let pos = self.0.partition_point(|(d, _, _)| *d <= dist);
        self.0.insert(pos, (dist, id(), text()));
        self.0.truncate(NEAREST);
    }
}

/// A text column read as strings (nulls as empty).
pub(super) struct Texts(StringArray);

impl Texts {
    pub(super) fn value_or_empty(&self, i: usize) -> &str {
        if self.0.is_null(i) {
            ""
        } else {
            self.0.value(i)
        }
    }
}

pub(super) fn as_strings(col: &ArrayRef) -> Result<Texts> {
    let s = arrow::compute::cast(col, &DataType::Utf8).map_err(Error::internal)?;
    let s = s
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::internal("cast to Utf8"))?
        .clone();
    Ok(Texts(s))
}

/// What the writing pass learns: cluster sizes and nearest rows, topic
/// sizes and most representative rows.
pub(super) struct Tally {
    pub(super) cluster_sizes: Vec<u64>,
    pub(super) cluster_nearest: Vec<Nearest>,
    pub(super) topic_sizes: Vec<u64>,
    pub(super) topic_nearest: Vec<Nearest>,
}

pub(super) async fn write_rows(
    job: &ClusterJob,
    input: &Input,
    assigner: &Arc<Assigner>,
    dim: usize,
    topic_labels: Option<&[String]>,
    schema: &SchemaRef,
    sink: &mut ParquetSink,
) -> Result<Tally> {
    let all: Vec<String> = input
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let vidx = input
        .schema
        .index_of(&job.vector_column)
        .map_err(Error::internal)?;
    let idx = |c: &Option<String>| c.as_ref().and_then(|c| input.schema.index_of(c).ok());
    let (id_idx, text_idx) = (idx(&job.id_column), idx(&job.text_column));
    let k = assigner.model().k;
    let mut tally = Tally {
        cluster_sizes: vec![0; k],
        cluster_nearest: vec![Nearest::default(); k],
        topic_sizes: vec![0; assigner.topics()],
        topic_nearest: vec![Nearest::default(); assigner.topics()],
    };
    let mut rx = read(input, &all);
    let mut row0 = 0u64;
    while let Some(sb) = rx.recv().await {
        let sb = sb?;
        let b = &sb.batch;
        let v = batch_vectors(&sb, vidx, dim, &job.vector_column)?;
        let finite = crate::vectors::finite_rows(&v, dim);
        let asg = Arc::clone(assigner);
        let a = spawn_cpu(move || Ok(asg.assign(&v))).await?;
        let ids = id_idx.map(|i| as_strings(b.column(i))).transpose()?;
        let texts = text_idx.map(|i| as_strings(b.column(i))).transpose()?;
        let id = |i: usize| match &ids {
            Some(s) => s.value_or_empty(i).to_string(),
            None => (row0 + i as u64).to_string(),
        };
        let text = |i: usize| texts.as_ref().map(|t| t.value_or_empty(i).to_string());
        for i in (0..a.clusters.len()).filter(|&i| finite[i]) {
            let (c, t) = (a.clusters[i] as usize, a.topics[i] as usize);
            tally.cluster_sizes[c] += 1;
            tally.cluster_nearest[c].offer(a.distances[i], || id(i), || text(i));
            tally.topic_sizes[t] += 1;
            tally.topic_nearest[t].offer(1.0 - a.scores[i], || id(i), || text(i));
        }
        // A row left out of the clusters (a non-finite vector) gets nulls.
        let kept = |i: usize| finite[i].then_some(i);
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        cols.push(Arc::new(Int32Array::from_iter(
            (0..a.clusters.len()).map(|i| kept(i).map(|i| a.clusters[i] as i32)),
        )));
        cols.push(Arc::new(Float32Array::from_iter(
            (0..a.clusters.len()).map(|i| kept(i).map(|i| a.distances[i])),
        )));
        if let Some(topic_labels) = topic_labels {
            cols.push(Arc::new(Int32Array::from_iter(
                (0..a.topics.len()).map(|i| kept(i).map(|i| a.topics[i] as i32)),
            )));
            cols.push(Arc::new(StringArray::from_iter((0..a.topics.len()).map(
                |i| kept(i).map(|i| topic_labels[a.topics[i] as usize].as_str()),
            ))));
            cols.push(Arc::new(Float32Array::from_iter(
                (0..a.scores.len()).map(|i| kept(i).map(|i| a.scores[i])),
            )));
        }
        let out = RecordBatch::try_new(Arc::clone(schema), cols).map_err(Error::internal)?;
        sink.write(&out).await?;
        row0 += b.num_rows() as u64;
    }
    Ok(tally)
}

pub(super) fn string_lists(items: Vec<Vec<String>>) -> ArrayRef {
    let mut b = arrow::array::ListBuilder::new(arrow::array::StringBuilder::new());
    for row in items {
        for s in row {
            b.values().append_value(s);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

pub(super) fn float_lists(items: Vec<Vec<f64>>) -> ArrayRef {
    let mut b = arrow::array::ListBuilder::new(arrow::array::Float64Builder::new());
    for row in items {
        b.values().append_slice(&row);
        b.append(true);
    }
    Arc::new(b.finish())
}

pub(super) async fn write_table(
    stores: &Stores,
    path: &str,
    cols: Vec<(&str, ArrayRef)>,
    write: &WriteOptions,
) -> Result<()> {
    let fields: Vec<Field> = cols
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        cols.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(Error::internal)?;
    let mut sink = ParquetSink::create(stores, path, schema, write).await?;
    if let Err(e) = sink.write(&batch).await {
        sink.abort().await;
        return Err(e);
    }
    sink.commit().await?;
    Ok(())
}

pub(super) async fn write_clusters(
    stores: &Stores,
    path: &str,
    model: &kmeans::Model,
    tally: &Tally,
    write: &WriteOptions,
) -> Result<()> {
    let (sizes, nearest) = (&tally.cluster_sizes, &tally.cluster_nearest);
    let k = model.k;
    write_table(
        stores,
        path,
        vec![
            (
                "cluster_id",
                Arc::new(Int32Array::from_iter_values(0..k as i32)) as ArrayRef,
            ),
            (
                "size",
                Arc::new(Int64Array::from_iter_values(
                    sizes.iter().map(|&s| s as i64),
                )),
            ),
            (
                "centroid",
                sink::vector_array(model.centroids.clone(), model.dim)?,
            ),
            (
                "nearest_ids",
                string_lists(
                    nearest
                        .iter()
                        .map(|n| n.0.iter().map(|(_, id, _)| id.clone()).collect())
                        .collect(),
                ),
            ),
            (
                "nearest_distances",
                float_lists(
                    nearest
                        .iter()
                        .map(|n| n.0.iter().map(|(d, _, _)| *d as f64).collect())
                        .collect(),
                ),
            ),
        ],
        write,
    )
    .await
}

pub(super) async fn write_topics(
    stores: &Stores,
    path: &str,
    keywords: &[Vec<(String, f64)>],
    labels: &[String],
    tally: &Tally,
    write: &WriteOptions,
) -> Result<()> {
    let (sizes, nearest) = (&tally.topic_sizes, &tally.topic_nearest);
    let k = keywords.len();
    write_table(
        stores,
        path,
        vec![
            (
                "topic_id",
                Arc::new(Int32Array::from_iter_values(0..k as i32)) as ArrayRef,
            ),
            (
                "label",
                Arc::new(StringArray::from_iter_values(labels.iter())),
            ),
            (
                "keywords",
                string_lists(
                    keywords
                        .iter()
                        .map(|w| w.iter().map(|(w, _)| w.clone()).collect())
                        .collect(),
                ),
            ),
            (
                "keyword_scores",
                float_lists(
                    keywords
                        .iter()
                        .map(|w| w.iter().map(|(_, s)| *s).collect())
                        .collect(),
                ),
            ),
            (
                "size",
                Arc::new(Int64Array::from_iter_values(
                    sizes.iter().map(|&s| s as i64),
                )),
            ),
            (
                "representative_texts",
                string_lists(
                    nearest
                        .iter()
                        .map(|n| {
                            n.0.iter()
                                .take(REPRESENTATIVES)
                                .filter_map(|(_, _, t)| t.clone())
                                .collect()
                        })
                        .collect(),
                ),
            ),
        ],
        write,
    )
    .await
}
