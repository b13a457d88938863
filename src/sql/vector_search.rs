//! `vector_search(table, query, k [, nprobe])`: a table's `k` rows most
//! similar to `query` (a vector, or `embed('…')`), with their `score`, as
//! a table to select from, join or filter further (`ORDER BY score DESC`
//! for best first, `ASC` for an l2 index's distances: a table's rows come
//! in no set order). From the table's index where it has one that fits
//! (ranked as the index ranks, probing `nprobe` lists or its default),
//! else by an exact scan with `cosine_similarity`. The same as `SELECT *,
//! f(v, query) AS score FROM table ORDER BY score DESC LIMIT k`, said
//! once.

use std::any::Any;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, SortExpr, col};

use super::index_scan::{IndexOptions, IndexedTable, ranking};

/// The column of the score `vector_search` adds.
pub const SCORE: &str = "score";

#[derive(Debug, Default)]
pub struct VectorSearch;

fn usage(why: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Plan(format!("vector_search(table, query, k [, nprobe]): {why}"))
}

impl TableFunctionImpl for VectorSearch {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let session = args.session();
        let (name, query, k, nprobe) = match args.exprs() {
            [t, q, k] => (t, q, k, None),
            [t, q, k, n] => (t, q, k, Some(n)),
            other => return Err(usage(format!("{} arguments given", other.len()))),
        };
        let name = match constant(session, name)? {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) => s,
            other => return Err(usage(format!("table: a table's name, not {other}"))),
        };
        let query = query_vector(session, query)?;
        let k = count(session, k, "k")?;
        let nprobe = nprobe.map(|n| count(session, n, "nprobe")).transpose()?;
        let provider = table(session, &name)?;
        let plan = search_plan(session, &name, provider, query, k, nprobe)?;
        Ok(Arc::new(ViewTable::new(plan, None)))
    }
}

/// The plan: the table's rows (the index's candidates where it answers),
/// their score, sorted best first, `k` of them.
fn search_plan(
    session: &dyn Session,
    name: &str,
    provider: Arc<dyn TableProvider>,
    query: Vec<f32>,
    k: usize,
    nprobe: Option<usize>,
) -> DfResult<datafusion::logical_expr::LogicalPlan> {
    let opts = session
        .config()
        .options()
        .extensions
        .get::<IndexOptions>()
        .cloned()
        .unwrap_or_default();
    let any: &dyn Any = provider.as_ref();
    let indexed = any
        .downcast_ref::<IndexedTable>()
        .filter(|t| !opts.exact_search && t.index.meta.dim == query.len());
    let (function, ascending, column, scan) = match indexed {
        Some(t) => {
            let (f, asc) = ranking(&t.index.meta).map_err(usage)?;
            let nprobe = nprobe.unwrap_or(opts.nprobe);
            let scan = t.candidates(name, query.clone(), k, nprobe, Vec::new());
            (f, asc, t.index.meta.vector_column.clone(), scan)
        }
        None => (
            "cosine_similarity",
            false,
            "embedding".to_string(),
            Arc::clone(&provider),
        ),
    };
    let udf = session
        .scalar_functions()
        .get(function)
        .ok_or_else(|| usage(format!("{function} is not registered")))?;
    let vector = ScalarValue::List(Arc::new(arrow::array::ListArray::from_iter_primitive::<
        arrow::datatypes::Float32Type,
        _,
        _,
    >([Some(
        query.into_iter().map(Some).collect::<Vec<_>>(),
    )])));
    let score = udf
        .call(vec![col(column.as_str()), Expr::Literal(vector, None)])
        .alias(SCORE);
    let mut columns: Vec<Expr> = scan
        .schema()
        .fields()
        .iter()
        .map(|f| col(f.name()))
        .collect();
    columns.push(score);
    LogicalPlanBuilder::scan(name, provider_as_source(scan), None)?
        .project(columns)?
        .sort_with_limit(vec![SortExpr::new(col(SCORE), ascending, false)], Some(k))?
        .build()
}

/// A registered table's provider, by name.
fn table(session: &dyn Session, name: &str) -> DfResult<Arc<dyn TableProvider>> {
    let state = session
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| usage("no session state"))?;
    let reference = datafusion::common::TableReference::from(name);
    let schema = state.schema_for_ref(reference.clone())?;
    // Tables of this session are in memory: the lookup is ready at once.
    futures::executor::block_on(schema.table(reference.table()))?
        .ok_or_else(|| usage(format!("no table named {name}")))
}

/// An argument's value: a constant (or `embed('…')`), evaluated once.
fn constant(session: &dyn Session, e: &Expr) -> DfResult<ScalarValue> {
    let empty = DFSchema::empty();
    let physical = session.create_physical_expr(e.clone(), &empty)?;
    let one_row = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = physical.evaluate(&one_row)?;
    match value {
        datafusion::logical_expr::ColumnarValue::Scalar(s) => Ok(s),
        datafusion::logical_expr::ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
    }
}

/// The query vector: a list of numbers, or what `embed('…')` gives.
fn query_vector(session: &dyn Session, e: &Expr) -> DfResult<Vec<f32>> {
    let value = constant(session, e)?;
    let array = value.to_array()?;
    let v = crate::vectors::VectorColumn::try_new(array.as_ref())
        .map_err(|e| usage(format!("query: a vector or embed('…'): {e}")))?;
    v.row(0)
        .map(<[f32]>::to_vec)
        .ok_or_else(|| usage("query: a null vector"))
}

/// A positive integer argument.
fn count(session: &dyn Session, e: &Expr, what: &str) -> DfResult<usize> {
    match constant(session, e)? {
        ScalarValue::Int64(Some(n)) if n > 0 => Ok(n as usize),
        ScalarValue::Int32(Some(n)) if n > 0 => Ok(n as usize),
        ScalarValue::UInt64(Some(n)) if n > 0 => Ok(n as usize),
        other => Err(usage(format!("{what}: a positive integer, not {other}"))),
    }
}
