//! `vec_avg(vector)`: the element-wise mean of the non-null vectors of a
//! group (a centroid), summed in f64. Same layout out as in (Float32 items).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, ListArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
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

/// Rows of a list-like array as f64 slices (None for nulls).
fn rows(a: &ArrayRef) -> Result<Vec<Option<Vec<f64>>>> {
    let (values, bounds, nulls): (ArrayRef, Vec<(usize, usize)>, _) =
        if let Some(l) = a.as_any().downcast_ref::<FixedSizeListArray>() {
            let d = l.value_length() as usize;
            (
                Arc::clone(l.values()),
                (0..l.len())
                    .map(|i| ((l.offset() + i) * d, (l.offset() + i + 1) * d))
                    .collect(),
                l.nulls().cloned(),
            )
        } else if let Some(l) = a.as_any().downcast_ref::<ListArray>() {
            let o = l.value_offsets();
            (
                Arc::clone(l.values()),
                (0..l.len())
                    .map(|i| (o[i] as usize, o[i + 1] as usize))
                    .collect(),
                l.nulls().cloned(),
            )
        } else {
            return exec_err!("vec_avg: expected a vector, found {}", a.data_type());
        };
    let values = arrow::compute::cast(&values, &DataType::Float64)?;
    let values = values
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| DataFusionError::Internal("vec_avg: cast".into()))?;
    Ok(bounds
        .iter()
        .enumerate()
        .map(|(i, &(s, e))| {
            (!nulls.as_ref().is_some_and(|n| n.is_null(i))).then(|| values.values()[s..e].to_vec())
        })
        .collect())
}

impl Accumulator for Acc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for r in rows(&values[0])?.into_iter().flatten() {
            self.add(&r)?;
            self.count += 1;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[1]
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| DataFusionError::Internal("vec_avg: count state".into()))?;
        for (i, r) in rows(&states[0])?.into_iter().enumerate() {
            if let Some(r) = r
                && counts.value(i) > 0
            {
                self.add(&r)?;
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
