//! `vec_avg(vector)`: the element-wise mean of the non-null vectors of a
//! group (a centroid), summed in f64. Same layout out as in (Float32 items).

use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, ListArray, UInt64Array};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{
    DataFusionError, Result, ScalarValue, exec_datafusion_err, exec_err, plan_err,
};

use crate::vectors::VectorColumn;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};

#[derive(Debug, PartialEq, Eq, Hash)]
struct VecAvg {
    signature: Signature,
}

pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(VecAvg {
        signature: Signature::user_defined(Volatility::Immutable),
    })
}

fn item() -> FieldRef {
    Arc::new(Field::new_list_field(DataType::Float32, true))
}

impl AggregateUDFImpl for VecAvg {
    fn name(&self) -> &str {
        "vec_avg"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [DataType::FixedSizeList(f, _) | DataType::List(f)]
                if matches!(f.data_type(), DataType::Float32 | DataType::Float64) =>
            {
                Ok(arg_types.to_vec())
            }
            // Summed the same way once cast to List (same items).
            [DataType::LargeList(f)]
                if matches!(f.data_type(), DataType::Float32 | DataType::Float64) =>
            {
                Ok(vec![DataType::List(Arc::clone(f))])
            }
            [other] => plan_err!(
                "vec_avg: expected a vector (FixedSizeList<Float32> or List<Float32>), found {other}"
            ),
            _ => plan_err!(
                "vec_avg: takes one vector argument, found {}",
                arg_types.len()
            ),
        }
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match &arg_types[0] {
            DataType::FixedSizeList(_, d) => DataType::FixedSizeList(item(), *d),
            _ => DataType::List(item()),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[sum]", args.name),
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[count]", args.name),
                DataType::UInt64,
                false,
            )),
        ])
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let fixed = match acc_args.return_field.data_type() {
            DataType::FixedSizeList(_, d) => Some(*d as usize),
            _ => None,
        };
        Ok(Box::new(Acc {
            sum: Vec::new(),
            count: 0,
            fixed,
        }))
    }
}

#[derive(Debug)]
struct Acc {
    sum: Vec<f64>,
    count: u64,
    fixed: Option<usize>,
}

impl Acc {
    fn add(&mut self, row: &[f64]) -> Result<()> {
        if self.sum.is_empty() && self.count == 0 {
            self.sum = vec![0.0; row.len()];
        }
        if row.len() != self.sum.len() {
            return exec_err!(
                "vec_avg: vectors of different dimensions in one group: {} and {}",
                self.sum.len(),
                row.len()
            );
        }
        for (s, v) in self.sum.iter_mut().zip(row) {
            *s += v;
        }
        Ok(())
    }
}

/// Rows of a vector column as f64 (None for nulls).
fn rows(a: &ArrayRef) -> Result<VectorColumn<Float64Type>> {
    VectorColumn::try_new_f64(a.as_ref()).map_err(|e| exec_datafusion_err!("vec_avg: {e}"))
}

impl Accumulator for Acc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = rows(&values[0])?;
        for r in (0..rows.len()).filter_map(|i| rows.row(i)) {
            self.add(r)?;
            self.count += 1;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[1]
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataFusionError::Internal("vec_avg: count state".into()))?;
        let sums = rows(&states[0])?;
        for i in 0..sums.len() {
            if let Some(r) = sums.row(i)
                && counts.value(i) > 0
            {
                self.add(r)?;
                self.count += counts.value(i);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = ListArray::from_iter_primitive::<Float64Type, _, _>(vec![Some(
            self.sum.iter().map(|v| Some(*v)).collect::<Vec<_>>(),
        )]);
        Ok(vec![
            ScalarValue::List(Arc::new(list)),
            ScalarValue::UInt64(Some(self.count)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let n = self.count;
        let mean: Vec<f32> = self.sum.iter().map(|s| (s / n as f64) as f32).collect();
        let valid = n > 0;
        match self.fixed {
            Some(d) => {
                let values = if valid { mean } else { vec![0.0; d] };
                let a = FixedSizeListArray::try_new(
                    item(),
                    d as i32,
                    Arc::new(Float32Array::from(values)),
                    Some(vec![valid].into()),
                )?;
                Ok(ScalarValue::FixedSizeList(Arc::new(a)))
            }
            None => {
                let len = if valid { mean.len() } else { 0 };
                let a = ListArray::try_new(
                    item(),
                    arrow::buffer::OffsetBuffer::from_lengths([len]),
                    Arc::new(Float32Array::from(if valid { mean } else { vec![] })),
                    Some(vec![valid].into()),
                )?;
                Ok(ScalarValue::List(Arc::new(a)))
            }
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.sum.capacity() * 8
    }
}
