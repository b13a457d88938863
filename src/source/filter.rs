//! An optional SQL `WHERE` condition on the input rows, evaluated by
//! DataFusion on each batch as it streams past.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::{Error, Result};

#[derive(Debug)]
pub struct RowFilter {
    sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

impl RowFilter {
    /// The columns `sql` refers to, checked against the input's schema.
    pub fn columns(sql: &str, schema: &Schema) -> Result<Vec<String>> {
        let ctx = SessionContext::new();
        let df = DFSchema::try_from(schema.clone()).map_err(Error::internal)?;
        let expr = ctx.parse_sql_expr(sql, &df).map_err(|e| bad(sql, e))?;
        let mut cols: Vec<String> = expr
            .column_refs()
            .into_iter()
            .map(|c| c.name.clone())
            .collect();
        cols.sort();
        Ok(cols)
    }

    /// Compiles `sql` against the schema of the batches it will see.
    pub fn new(sql: &str, schema: &Schema) -> Result<RowFilter> {
        let ctx = SessionContext::new();
        let df = DFSchema::try_from(schema.clone()).map_err(Error::internal)?;
        let expr = ctx.parse_sql_expr(sql, &df).map_err(|e| bad(sql, e))?;
        let expr = ctx
            .create_physical_expr(expr, &df)
            .map_err(|e| bad(sql, e))?;
        let ty = expr.data_type(schema).map_err(|e| bad(sql, e))?;
        if ty != arrow::datatypes::DataType::Boolean {
            return Err(Error::Job {
                origin: "input.filter".into(),
                problems: vec![format!(
                    "\"{sql}\" is of type {ty}; expected a true/false condition"
                )],
            });
        }
        Ok(RowFilter {
            sql: sql.to_string(),
            expr,
        })
    }

    /// The rows of `batch` the condition holds for (null counts as false),
    /// and their indices in the batch.
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, Vec<u32>)> {
        let mask = self
            .expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| Error::Data(format!("input.filter \"{}\" failed: {e}", self.sql)))?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| Error::internal("filter did not give booleans"))?;
        let kept: Vec<u32> = (0..mask.len())
            .filter(|&i| mask.is_valid(i) && mask.value(i))
            .map(|i| i as u32)
            .collect();
        let out = filter_record_batch(batch, mask).map_err(Error::internal)?;
        Ok((out, kept))
    }
}

fn bad(sql: &str, e: impl std::fmt::Display) -> Error {
    Error::Job {
        origin: "input.filter".into(),
        problems: vec![format!("\"{sql}\": {e}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn keeps_matching_rows_and_reports_bad_sql() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("outlet", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("bbc"),
                    Some("cnn"),
                    None,
                    Some("bbc"),
                ])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let f = RowFilter::new("outlet = 'bbc' AND n > 1", &schema).unwrap();
        let (out, kept) = f.apply(&batch).unwrap();
        assert_eq!(out.num_rows(), 1);
        assert_eq!(kept, vec![3]);
        assert_eq!(
            RowFilter::columns("outlet = 'bbc' AND n > 1", &schema).unwrap(),
            vec!["n", "outlet"]
        );
        assert!(
            RowFilter::new("nope = 1", &schema)
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
        assert!(
            RowFilter::new("n + 1", &schema)
                .unwrap_err()
                .to_string()
                .contains("expected a true/false condition")
        );
    }
}
