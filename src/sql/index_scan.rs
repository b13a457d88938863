//! SQL top-k from a table's index (see [`crate::index`]).
//!
//! A table registered with an index that fits it is an [`IndexedTable`]:
//! it scans like the table. The optimizer rule [`IndexTopK`] finds
//! `ORDER BY cosine_similarity(v, <constant>) DESC LIMIT k` (or
//! `inner_product`, as the index ranks) over it, through a projection and
//! filters, and replaces the table's scan with a [`CandidateScan`]: the
//! rows of the probed lists that score best, read by position from the
//! table's Parquet files. Everything above the scan (the filters, the
//! exact scores, the sort, the limit) runs as before on those rows, so a
//! `WHERE` is applied exactly; the scan takes more candidates until `k`
//! of them pass it, probing more lists when the first run short.
//! `SET embedflow.exact_search = true` scans every row instead;
//! `SET embedflow.nprobe = N` probes N lists. EXPLAIN shows `IndexScanExec`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, extensions_options};
use datafusion::config::ConfigExtension;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableType, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    Expr, LogicalPlan, Sort, TableProviderFilterPushDown, TableScanBuilder,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion::scalar::ScalarValue;
use object_store::ObjectStoreExt;

use crate::cluster::neighbors::TopK;
use crate::index::{self, IndexMeta};
use crate::store::{Location, Stores};
use crate::{Error, Result};

extensions_options! {
    /// `SET embedflow.…` settings of a SQL session.
    pub struct IndexOptions {
        /// Scan every row even where the table has an index.
        pub exact_search: bool, default = false
        /// Lists an index search probes (0: the index's own default).
        pub nprobe: usize, default = 0
        /// Refuse a top-k that no index answers (a table without one, or
        /// with one of an older version) rather than scan every row.
        pub require_index: bool, default = false
    }
}

impl ConfigExtension for IndexOptions {
    const PREFIX: &'static str = "embedflow";
}

/// What a search needs of a table's index, loaded once at registration:
/// its description, centroids and offsets (the lists are read when
/// probed), and the table's files with their rows.
#[derive(Debug)]
pub struct TableIndex {
    pub dir: String,
    pub meta: IndexMeta,
    centroids: Vec<f32>,
    offsets: Vec<u64>,
    vectors: Location,
    rows: Location,
    /// The int8 codes and their ranges, where the index has them: lists
    /// are then read as codes (a quarter of the bytes) and the best
    /// candidates re-scored from their float vectors.
    codes: Option<(Location, index::Sq)>,
    /// Each file of the table and its first row's position.
    files: Vec<(crate::store::FileEntry, u64)>,
    total_rows: u64,
}

impl TableIndex {
    /// The index of the table at `path` when it has one that fits, else
    /// why not (said on stderr when it has one that does not: another
    /// version's, another file's, a corrupt one).
    pub async fn find(
        stores: &Stores,
        path: &str,
    ) -> Result<std::result::Result<TableIndex, Option<String>>> {
        // Where its index would be, before anything of the table is read:
        // a table without one costs its session nothing.
        let delta = crate::delta::DeltaTarget::resolve_input(stores, path)?;
        let state = delta.state(None).await?;
        let version = state.as_ref().map(|s| s.version());
        let Ok(dir) = index::dir_for(path, version) else {
            return Ok(Err(None));
        };
        let unused = |why: String| {
            crate::note!("{why}; queries scan every row");
            Ok(Err(Some(why)))
        };
        let meta = match index::read_meta(stores, &dir).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return match version {
                    Some(v) => match index::stale_note(stores, path, v, None).await {
                        Some(why) => unused(why),
                        None => Ok(Err(None)),
                    },
                    None => Ok(Err(None)),
                };
            }
            Err(e) => return unused(format!("the index of {path} is not used: {e}")),
        };
        let csv = crate::source::CsvOptions::default();
        let input = crate::source::open(stores, path, None, &csv).await?;
        if input.format != crate::source::Format::Parquet {
            return Ok(Err(None));
        }
        if let Some(why) = meta.source.differs(&index::SourceId::of(path, &input)) {
            return unused(format!(
                "the index at {dir} is not used: {why} (`embedflow index {path}` brings it up to date)"
            ));
        }
        let head = index::load_head(stores, &dir, &meta).await?;
        let mut files = Vec::with_capacity(input.files.len());
        let mut first = 0u64;
        for f in &input.files {
            files.push((f.clone(), first));
            first += crate::source::parquet::file_rows(f).await?;
        }
        if first != meta.rows {
            return Err(Error::input(
                path,
                format!("{first} rows, its index {} says {}", dir, meta.rows),
            ));
        }
        let codes = match index::load_sq(stores, &dir, &meta).await? {
            Some(sq) => Some((stores.resolve(&index::child(&dir, index::CODES))?, sq)),
            None => None,
        };
        Ok(Ok(TableIndex {
            codes,
            vectors: stores.resolve(&index::child(&dir, index::VECTORS))?,
            rows: stores.resolve(&index::child(&dir, index::ROWS))?,
            dir,
            meta,
            centroids: head.0,
            offsets: head.1,
            files,
            total_rows: first,
        }))
    }

    fn lists(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The `nprobe` lists whose centroids score best for `q`.
    fn probe(&self, q: &[f32], nprobe: usize) -> Vec<usize> {
        let mut scores = vec![0f32; self.lists()];
        crate::cluster::kmeans::dot_block(
            q,
            &self.centroids,
            self.meta.space().width(),
            self.lists(),
            &mut scores,
        );
        let mut order = Vec::new();
        index::best_lists(&scores, nprobe, &mut order)
            .iter()
            .map(|&l| l as usize)
            .collect()
    }

    /// The vectors (or codes) and row positions of `list`, read from the
    /// index.
    async fn read_list(&self, list: usize) -> Result<(ListData, Vec<u32>)> {
        let (a, b) = (self.offsets[list], self.offsets[list + 1]);
        let d = self.meta.space().width() as u64;
        let (data, r) = match &self.codes {
            Some((codes, _)) => {
                let (c, r) =
                    futures::try_join!(get(codes, a * d..b * d), get(&self.rows, a * 4..b * 4))?;
                (ListData::Codes(c.to_vec()), r)
            }
            None => {
                let (v, r) = futures::try_join!(
                    get(&self.vectors, a * d * 4..b * d * 4),
                    get(&self.rows, a * 4..b * 4)
                )?;
                (ListData::Floats(bytemuck::pod_collect_to_vec(&v)), r)
            }
        };
        Ok((data, bytemuck::pod_collect_to_vec(&r)))
    }

    /// The exact scores of `entries` for `q`, their float vectors read
    /// from the index side by side.
    async fn exact_scores(&self, q: &[f32], entries: &[u32]) -> Result<Vec<f32>> {
        let d = self.meta.space().width() as u64;
        let read = entries.iter().map(|&e| {
            let e = u64::from(e);
            get(&self.vectors, e * d * 4..(e + 1) * d * 4)
        });
        let vectors = futures::future::try_join_all(read).await?;
        Ok(vectors
            .iter()
            .map(|v| {
                let v: Vec<f32> = bytemuck::pod_collect_to_vec(v);
                v.iter().zip(q).map(|(a, b)| a * b).sum()
            })
            .collect())
    }

    /// The row position of an entry of a list read.
    fn row_of(&self, entry: u32, read: &HashMap<usize, (ListData, Vec<u32>)>) -> Option<u32> {
        let e = u64::from(entry);
        let list = self.offsets.partition_point(|&o| o <= e).checked_sub(1)?;
        let (_, rows) = read.get(&list)?;
        rows.get((e - self.offsets[list]) as usize).copied()
    }

    /// The rows at `positions`, their `columns` (of `schema`), read from
    /// the table's files (only the pages holding them).
    async fn fetch(&self, positions: &[u32], schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
        let mut sorted: Vec<u64> = positions.iter().map(|&p| u64::from(p)).collect();
        sorted.sort_unstable();
        let files: Vec<_> = self
            .files
            .iter()
            .enumerate()
            .map(|(i, (file, first))| {
                let end = self.files.get(i + 1).map_or(self.total_rows, |f| f.1);
                (file, *first, end - first)
            })
            .collect();
        let read = crate::source::parquet::rows_at_positions(&files, &sorted, schema).await?;
        Ok(read.into_iter().flat_map(|f| f.batches).collect())
    }
}

/// A list as read: its float vectors, or its int8 codes.
enum ListData {
    Floats(Vec<f32>),
    Codes(Vec<u8>),
}

/// Candidates ranked by int8 codes for each row wanted, re-scored exactly.
const RERANK: usize = 4;

/// A byte range of an index file.
async fn get(loc: &Location, range: std::ops::Range<u64>) -> Result<bytes::Bytes> {
    loc.store
        .get_range(&loc.path, range)
        .await
        .map_err(|e| Error::input(&loc.display, format!("a list of the index: {e}")))
}

/// A table with an index: scans as the table does.
#[derive(Debug)]
pub struct IndexedTable {
    pub base: Arc<dyn TableProvider>,
    pub index: Arc<TableIndex>,
}

impl IndexedTable {
    /// The scan of the rows a top-`k` for `query` (a vector of the index's
    /// width) can return, probing `nprobe` lists (0: the index's
    /// default for queries), enough that `k` pass `filters`.
    pub fn candidates(
        &self,
        name: &str,
        query: Vec<f32>,
        k: usize,
        nprobe: usize,
        filters: Vec<Expr>,
    ) -> Arc<dyn TableProvider> {
        let meta = &self.index.meta;
        Arc::new(CandidateScan {
            table: Arc::clone(&self.index),
            base: Arc::clone(&self.base),
            table_name: name.to_string(),
            query: meta.space().queries(query),
            k,
            nprobe: if nprobe > 0 {
                nprobe
            } else {
                meta.query_nprobe
            },
            filters,
        })
    }
}

#[async_trait::async_trait]
impl TableProvider for IndexedTable {
    fn schema(&self) -> SchemaRef {
        self.base.schema()
    }

    fn table_type(&self) -> TableType {
        self.base.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.base.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: datafusion::catalog::ScanArgs<'a>,
    ) -> DfResult<datafusion::catalog::ScanResult> {
        self.base.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.base.supports_filters_pushdown(filters)
    }
}

/// The optimizer rule that answers top-k by similarity from an index.
#[derive(Debug, Default)]
pub struct IndexTopK {
    /// Why a registered table has no index that answers (its name's
    /// entry), for `SET embedflow.require_index = true`'s refusal.
    pub unusable: std::sync::Mutex<HashMap<String, String>>,
}

impl OptimizerRule for IndexTopK {
    fn name(&self) -> &str {
        "embedflow_index_top_k"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let opts = config
            .options()
            .extensions
            .get::<IndexOptions>()
            .cloned()
            .unwrap_or_default();
        if opts.exact_search {
            return Ok(Transformed::no(plan));
        }
        plan.transform_down(|node| match top_k(&node, &opts, &self.unusable)? {
            Some(new) => Ok(Transformed::new(new, true, TreeNodeRecursion::Jump)),
            None => Ok(Transformed::no(node)),
        })
    }
}

/// `node` with its indexed table's scan replaced by a [`CandidateScan`],
/// when it is a top-k by the index's similarity.
fn top_k(
    node: &LogicalPlan,
    opts: &IndexOptions,
    unusable: &std::sync::Mutex<HashMap<String, String>>,
) -> DfResult<Option<LogicalPlan>> {
    let LogicalPlan::Sort(Sort {
        expr,
        input,
        fetch: Some(k),
    }) = node
    else {
        return Ok(None);
    };
    let [by] = expr.as_slice() else {
        return Ok(None);
    };
    let (score, below) = resolve_score(&by.expr, input);
    let Some((func, vector_column, query)) = score.and_then(similarity_call) else {
        return Ok(None);
    };
    let Some((scan, filters)) = scan_below(below) else {
        return Ok(None);
    };
    let provider = source_as_provider(&scan.source)?;
    let name = scan.table_name.to_string();
    // No index answers: scanned exactly, or refused when one is required.
    let unanswered = |why: String| match opts.require_index {
        true => Err(DataFusionError::Plan(format!(
            "embedflow.require_index: no index answers this top-k over {name}: {why} (or SET embedflow.require_index = false to scan every row)"
        ))),
        false => Ok(None),
    };
    let any: &dyn Any = provider.as_ref();
    if any.is::<CandidateScan>() {
        // Answered by an earlier pass of the optimizer.
        return Ok(None);
    }
    let Some(table) = any.downcast_ref::<IndexedTable>() else {
        let known = unusable.lock().ok().and_then(|u| u.get(&name).cloned());
        return unanswered(
            known.unwrap_or_else(|| "it has none (build one with `embedflow index`)".to_string()),
        );
    };
    let meta = &table.index.meta;
    let asked = (func.as_str(), vector_column.as_str(), by.asc, query.len());
    if let Some(why) = answers(meta, asked) {
        return unanswered(why);
    }
    let filters = filters.into_iter().chain(scan.filters.iter().cloned());
    let candidates = table.candidates(&name, query, *k, opts.nprobe, filters.collect());
    let new_scan = TableScanBuilder::new(scan.table_name.clone(), provider_as_source(candidates))
        .with_projection(scan.projection.clone())
        .build()?;
    let rebuilt = replace_scan(node, &LogicalPlan::TableScan(new_scan))?;
    Ok(Some(rebuilt))
}

/// Why an index of `meta` cannot answer an ORDER BY `func(column, <a
/// vector of dim>)`, ascending or not (`None`: it can).
fn answers(
    meta: &IndexMeta,
    (func, column, asc, dim): (&str, &str, bool, usize),
) -> Option<String> {
    let (ranks, ranks_asc) = match ranking(meta) {
        Ok(r) => r,
        Err(why) => return Some(why),
    };
    // Over rows of unit length, l2_distance ascending ranks as the dot
    // product descending, whatever the query's length.
    let by_l2 = func == "l2_distance" && asc && meta.unit_norm;
    let ranked = (func == ranks && asc == ranks_asc) || by_l2;
    (!ranked || column != meta.vector_column || dim != meta.dim).then(|| {
        let order = if ranks_asc { "ASC" } else { "DESC" };
        let l2 = match (ranks_asc, meta.unit_norm) {
            (true, _) => "",
            (false, true) => " or l2_distance(…) ASC",
            (false, false) => " (l2_distance too had every row unit length)",
        };
        format!(
            "its index answers ORDER BY {ranks}({}, <a vector of {}>) {order}{l2}",
            meta.vector_column, meta.dim
        )
    })
}

/// The SQL function an index's metric ranks by, and whether ascending.
/// An index of a metric this build does not know is refused when read.
pub fn ranking(meta: &IndexMeta) -> Result<(&'static str, bool), String> {
    match meta.metric() {
        Some(index::Metric::Cosine) => Ok(("cosine_similarity", false)),
        Some(index::Metric::InnerProduct) => Ok(("inner_product", false)),
        Some(index::Metric::L2) => Ok(("l2_distance", true)),
        None => Err(format!("its index ranks by {}", meta.metric)),
    }
}

/// The table scan under `plan` through filters, and their predicates
/// (which stay where they are).
fn scan_below(plan: &LogicalPlan) -> Option<(&datafusion::logical_expr::TableScan, Vec<Expr>)> {
    let mut filters = Vec::new();
    let mut at = plan;
    while let LogicalPlan::Filter(f) = at {
        filters.push(f.predicate.clone());
        at = f.input.as_ref();
    }
    match at {
        LogicalPlan::TableScan(scan) => Some((scan, filters)),
        _ => None,
    }
}

/// The expression a sort key stands for: itself, or the projection's
/// expression it names; and the plan below that projection.
fn resolve_score<'a>(key: &'a Expr, input: &'a LogicalPlan) -> (Option<&'a Expr>, &'a LogicalPlan) {
    match (key, input) {
        (Expr::Column(c), LogicalPlan::Projection(p)) => {
            let found = p
                .expr
                .iter()
                .zip(p.schema.columns())
                .find(|(_, out)| out.name == c.name)
                .map(|(e, _)| unalias(e));
            (found, p.input.as_ref())
        }
        (e, LogicalPlan::Projection(p)) => (Some(unalias(e)), p.input.as_ref()),
        (e, other) => (Some(unalias(e)), other),
    }
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// `f(column, constant vector)` (either order): the function's name, the
/// column's and the vector.
fn similarity_call(e: &Expr) -> Option<(String, String, Vec<f32>)> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    let [a, b] = f.args.as_slice() else {
        return None;
    };
    let (col, lit) = match (a, b) {
        (Expr::Column(c), Expr::Literal(v, _)) | (Expr::Literal(v, _), Expr::Column(c)) => (c, v),
        _ => return None,
    };
    let array = match lit {
        ScalarValue::FixedSizeList(a) => Arc::clone(a) as Arc<dyn Array>,
        ScalarValue::List(a) => Arc::clone(a) as Arc<dyn Array>,
        ScalarValue::LargeList(a) => Arc::clone(a) as Arc<dyn Array>,
        _ => return None,
    };
    let v = crate::vectors::VectorColumn::try_new(array.as_ref()).ok()?;
    let row = v.row(0)?.to_vec();
    Some((f.func.name().to_string(), col.name.clone(), row))
}

/// `node` with the one table scan under it replaced by `scan`.
fn replace_scan(node: &LogicalPlan, scan: &LogicalPlan) -> DfResult<LogicalPlan> {
    use datafusion::common::tree_node::TreeNode;
    node.clone()
        .transform_up(|n| match n {
            LogicalPlan::TableScan(_) => Ok(Transformed::yes(scan.clone())),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}

/// The rows of an indexed table that a top-k by similarity can return:
/// the best-scoring of the probed lists, enough that `k` pass `filters`.
#[derive(Debug)]
struct CandidateScan {
    table: Arc<TableIndex>,
    base: Arc<dyn TableProvider>,
    table_name: String,
    /// As the index scores it (unit for cosine).
    query: Vec<f32>,
    k: usize,
    nprobe: usize,
    filters: Vec<Expr>,
}

#[async_trait::async_trait]
impl TableProvider for CandidateScan {
    fn schema(&self) -> SchemaRef {
        self.base.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema().project(p)?),
            None => self.schema(),
        };
        let filters = self.compile_filters(state, &schema)?;
        let (batches, found) = self
            .candidates(&schema, &filters)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let inner = MemorySourceConfig::try_new_exec(&[batches], Arc::clone(&schema), None)?;
        Ok(Arc::new(IndexScanExec {
            inner,
            shown: format!(
                "IndexScanExec: {} via {} ({} lists, nprobe {}{}), {found}",
                self.table_name,
                self.table.dir,
                self.table.lists(),
                found.nprobe,
                if self.table.codes.is_some() {
                    ", ranked by int8 codes, re-scored exactly"
                } else {
                    ""
                }
            ),
        }))
    }
}

/// What a candidate search read.
#[derive(Clone, Copy, Debug, Default)]
struct Found {
    nprobe: usize,
    candidates: usize,
    passing: usize,
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} candidate rows, {} passing the filters",
            self.candidates, self.passing
        )
    }
}

impl CandidateScan {
    /// The filters over the scan's columns (a filter on others: none can
    /// be checked here, and every candidate counts as passing).
    fn compile_filters(
        &self,
        state: &dyn Session,
        schema: &SchemaRef,
    ) -> DfResult<Vec<Arc<dyn PhysicalExpr>>> {
        let df = DFSchema::try_from_qualified_schema(self.table_name.as_str(), schema)?;
        self.filters
            .iter()
            .filter_map(|f| state.create_physical_expr(f.clone(), &df).ok())
            .map(Ok)
            .collect()
    }

    /// The best candidates: `k`, or with filters more until `k` pass
    /// (four times more at a time, then twice the lists), or every row
    /// of every list.
    async fn candidates(
        &self,
        schema: &SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> Result<(Vec<RecordBatch>, Found)> {
        tracing::debug!("index search starts");
        let all = self.table.lists();
        let mut nprobe = self.nprobe.clamp(1, all);
        let mut want = if filters.is_empty() {
            self.k
        } else {
            self.k * 4
        };
        let mut read: HashMap<usize, (ListData, Vec<u32>)> = HashMap::new();
        loop {
            let probed = self.table.probe(&self.query, nprobe);
            // The lists not read yet, read side by side.
            let missing: Vec<usize> = probed
                .iter()
                .copied()
                .filter(|l| !read.contains_key(l))
                .collect();
            let lists =
                futures::future::try_join_all(missing.iter().map(|&l| self.table.read_list(l)));
            read.extend(missing.iter().copied().zip(lists.await?));
            let (best, available) = self.best(&probed, &read, want).await?;
            tracing::debug!(
                nprobe,
                rows_scored = available,
                candidates = best.len(),
                "index lists scored"
            );
            let batches = self.table.fetch(&best, schema).await?;
            tracing::debug!(rows = best.len(), "candidate rows read");
            let passing = count_passing(&batches, filters)?;
            let found = Found {
                nprobe,
                candidates: best.len(),
                passing,
            };
            if passing >= self.k || (want >= available && nprobe == all) {
                return Ok((batches, found));
            }
            if want < available {
                want *= 4;
            } else {
                nprobe = (nprobe * 2).min(all);
            }
        }
    }

    /// The `want` best rows of the probed lists, and how many they hold:
    /// by their float vectors, or ranked by their codes and the best
    /// [`RERANK`] × `want` re-scored exactly.
    async fn best(
        &self,
        probed: &[usize],
        read: &HashMap<usize, (ListData, Vec<u32>)>,
        want: usize,
    ) -> Result<(Vec<u32>, usize)> {
        let d = self.table.meta.space().width();
        let sq = self
            .table
            .codes
            .as_ref()
            .map(|(_, sq)| sq.query(&self.query));
        let mut top = TopK::new(if sq.is_some() { want * RERANK } else { want });
        let mut available = 0;
        let mut scores = Vec::new();
        for &l in probed {
            let (data, rows) = &read[&l];
            available += rows.len();
            let first = self.table.offsets[l] as u32;
            let entries: Vec<u32> = (first..first + rows.len() as u32).collect();
            match (data, &sq) {
                (ListData::Codes(codes), Some(q)) => {
                    q.score(codes, &mut scores);
                    for (&s, &e) in scores.iter().zip(&entries) {
                        if s.is_finite() {
                            top.offer(s, e);
                        }
                    }
                }
                (ListData::Floats(vectors), _) => {
                    index::score_list(&self.query, vectors, &entries, d, &mut scores, |_, s, e| {
                        top.offer(s, e)
                    });
                }
                (ListData::Codes(_), None) => {
                    return Err(Error::internal("codes read without their ranges"));
                }
            }
        }
        let ranked: Vec<u32> = top.into_sorted().into_iter().map(|(e, _)| e).collect();
        let entries = if sq.is_some() {
            let exact = self.table.exact_scores(&self.query, &ranked).await?;
            let mut best = TopK::new(want);
            for (&e, s) in ranked.iter().zip(exact) {
                best.offer(s, e);
            }
            best.into_sorted().into_iter().map(|(e, _)| e).collect()
        } else {
            ranked
        };
        let rows = entries
            .iter()
            .map(|&e| self.table.row_of(e, read))
            .collect::<Option<Vec<u32>>>()
            .ok_or_else(|| Error::internal("a candidate outside the lists read"))?;
        Ok((rows, available))
    }
}

/// Rows of `batches` that every filter keeps.
fn count_passing(batches: &[RecordBatch], filters: &[Arc<dyn PhysicalExpr>]) -> Result<usize> {
    let mut n = 0;
    for b in batches {
        let mut keep = vec![true; b.num_rows()];
        for f in filters {
            let v = f
                .evaluate(b)
                .and_then(|v| v.into_array(b.num_rows()))
                .map_err(|e| Error::Query(e.to_string()))?;
            let Some(mask) = v.as_any().downcast_ref::<BooleanArray>() else {
                continue;
            };
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= mask.is_valid(i) && mask.value(i);
            }
        }
        n += keep.iter().filter(|&&k| k).count();
    }
    Ok(n)
}

/// The candidates, shown in EXPLAIN as what they are.
#[derive(Debug)]
struct IndexScanExec {
    inner: Arc<datafusion::datasource::source::DataSourceExec>,
    shown: String,
}

impl DisplayAs for IndexScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.shown)
    }
}

impl ExecutionPlan for IndexScanExec {
    fn name(&self) -> &str {
        "IndexScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }
}
