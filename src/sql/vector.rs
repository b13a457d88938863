//! Vector functions for SQL over `FixedSizeList<Float32, d>` (what
//! embedflow writes) and `List`/`LargeList<Float16|32|64>` (vectors from
//! elsewhere; vector results of those are `List<Float32>`).
//! Names follow pgvector and DuckDB's `array_*` functions, which are aliases.
//!
//! Types are checked when the query is planned: a non-vector argument, or
//! two fixed-size vectors of different widths, is an error naming the
//! function and the types. Nulls give nulls. Sums are accumulated in f64;
//! scalar results are Float64, vector results keep the input's layout with
//! Float32 items. A constant vector (a literal, or `embed('…')`) is used as
//! one row, never copied per row. A score with no value (a zero vector's
//! cosine, a NaN or infinite component) is NULL, never NaN, and the session
//! sorts NULL last in both directions.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, ListArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::vectors::{VectorColumn, dot};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    CosineSimilarity,
    CosineDistance,
    InnerProduct,
    L2Distance,
    L2Norm,
    Normalize,
    Add,
    Sub,
    Scale,
    Dims,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::CosineSimilarity,
        Op::CosineDistance,
        Op::InnerProduct,
        Op::L2Distance,
        Op::L2Norm,
        Op::Normalize,
        Op::Add,
        Op::Sub,
        Op::Scale,
        Op::Dims,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::CosineSimilarity => "cosine_similarity",
            Op::CosineDistance => "cosine_distance",
            Op::InnerProduct => "inner_product",
            Op::L2Distance => "l2_distance",
            Op::L2Norm => "l2_norm",
            Op::Normalize => "vec_normalize",
            Op::Add => "vec_add",
            Op::Sub => "vec_sub",
            Op::Scale => "vec_scale",
            Op::Dims => "vector_dims",
        }
    }

    /// DuckDB's and pgvector's names for the same function.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Op::CosineSimilarity => &["array_cosine_similarity"],
            Op::CosineDistance => &["array_cosine_distance"],
            Op::InnerProduct => &["array_inner_product", "array_dot_product"],
            Op::L2Distance => &["array_distance"],
            Op::L2Norm => &["vector_norm"],
            Op::Normalize => &["l2_normalize"],
            Op::Add | Op::Sub | Op::Scale => &[],
            Op::Dims => &[],
        }
    }

    /// Vector arguments, and whether a number follows them.
    fn arity(self) -> (usize, bool) {
        match self {
            Op::CosineSimilarity | Op::CosineDistance | Op::InnerProduct | Op::L2Distance => {
                (2, false)
            }
            Op::Add | Op::Sub => (2, false),
            Op::L2Norm | Op::Normalize | Op::Dims => (1, false),
            Op::Scale => (1, true),
        }
    }

    fn returns_vector(self) -> bool {
        matches!(self, Op::Normalize | Op::Add | Op::Sub | Op::Scale)
    }
}

/// One vector function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct VectorFn {
    op: Op,
    signature: Signature,
    aliases: Vec<String>,
}

impl VectorFn {
    pub fn udf(op: Op) -> ScalarUDF {
        ScalarUDF::new_from_impl(VectorFn {
            op,
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: op.aliases().iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// The width a vector type declares (`None` for variable-size lists), or an
/// error naming the function when the type is not a vector.
fn vector_width(name: &str, t: &DataType) -> Result<Option<usize>> {
    crate::vectors::width(t).or_else(|e| plan_err!("{name}: {e}"))
}

impl ScalarUDFImpl for VectorFn {
    fn name(&self) -> &str {
        self.op.name()
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let name = self.name();
        let (vectors, number) = self.op.arity();
        let want = vectors + usize::from(number);
        if arg_types.len() != want {
            return plan_err!(
                "{name}: takes {want} argument{}, found {}",
                if want == 1 { "" } else { "s" },
                arg_types.len()
            );
        }
        let mut widths = Vec::new();
        for t in &arg_types[..vectors] {
            widths.push(vector_width(name, t)?);
        }
        if let [Some(a), Some(b)] = widths[..]
            && a != b
        {
            return plan_err!(
                "{name}: the vectors have different dimensions: {} and {}",
                arg_types[0],
                arg_types[1]
            );
        }
        let mut out = arg_types.to_vec();
        if number {
            match &arg_types[vectors] {
                t if t.is_numeric() || t == &DataType::Null => out[vectors] = DataType::Float64,
                other => {
                    return plan_err!(
                        "{name}: expected a number as the last argument, found {other}"
                    );
                }
            }
        }
        Ok(out)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if self.op == Op::Dims {
            return Ok(DataType::Int32);
        }
        if !self.op.returns_vector() {
            return Ok(DataType::Float64);
        }
        // Keep the first non-null vector's layout, with Float32 items.
        let t = arg_types
            .iter()
            .take(self.op.arity().0)
            .find(|t| !matches!(t, DataType::Null))
            .unwrap_or(&arg_types[0]);
        let item: FieldRef = Arc::new(Field::new_list_field(DataType::Float32, true));
        Ok(match t {
            DataType::FixedSizeList(_, n) => DataType::FixedSizeList(item, *n),
            _ => DataType::List(item),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.name();
        let rows = args.number_rows;
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let (nvec, number) = self.op.arity();
        let vecs: Vec<Vectors> = args.args[..nvec]
            .iter()
            .map(|a| Vectors::new(name, a))
            .collect::<Result<_>>()?;
        let factor: Option<Vec<Option<f64>>> = if number {
            Some(match &args.args[nvec] {
                ColumnarValue::Scalar(s) => {
                    let v = match s.cast_to(&DataType::Float64)? {
                        ScalarValue::Float64(v) => v,
                        _ => None,
                    };
                    vec![v]
                }
                ColumnarValue::Array(a) => {
                    let a = arrow::compute::cast(a, &DataType::Float64)?;
                    let a = a
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .ok_or_else(|| DataFusionError::Internal("cast to f64".into()))?;
                    a.iter().collect()
                }
            })
        } else {
            None
        };
        let n = if all_scalar { 1 } else { rows };
        let result: ArrayRef = if self.op == Op::Dims {
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| vecs[0].row(i).map(|r| r.len() as i32)),
            ))
        } else if !self.op.returns_vector() {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(match (vecs[0].row(i), vecs.get(1).map(|v| v.row(i))) {
                    (None, _) | (_, Some(None)) => None,
                    (Some(a), b) => scalar_op(name, self.op, a, b.flatten())?,
                });
            }
            Arc::new(Float64Array::from(out))
        } else {
            let ret =
                self.return_type(&args.args.iter().map(|a| a.data_type()).collect::<Vec<_>>())?;
            let mut values: Vec<f32> = Vec::new();
            let mut valid = Vec::with_capacity(n);
            let mut offsets = vec![0i32];
            let fixed = match &ret {
                DataType::FixedSizeList(_, d) => Some(*d as usize),
                _ => None,
            };
            for i in 0..n {
                let a = vecs[0].row(i);
                let b = vecs.get(1).map(|v| v.row(i));
                let f = factor.as_ref().map(|f| f[if f.len() == 1 { 0 } else { i }]);
                let row = match (a, b, f) {
                    (None, _, _) | (_, Some(None), _) | (_, _, Some(None)) => None,
                    (Some(a), b, f) => Some(vector_op(name, self.op, a, b.flatten(), f.flatten())?),
                };
                valid.push(row.is_some());
                match row {
                    Some(r) => values.extend(r),
                    None => values.extend(std::iter::repeat_n(0.0, fixed.unwrap_or(0))),
                }
                offsets.push(values.len() as i32);
            }
            let item = Arc::new(Field::new_list_field(DataType::Float32, true));
            let nulls = Some(arrow::buffer::NullBuffer::from(valid));
            match fixed {
                Some(d) => Arc::new(FixedSizeListArray::try_new(
                    item,
                    d as i32,
                    Arc::new(Float32Array::from(values)),
                    nulls,
                )?),
                None => Arc::new(ListArray::try_new(
                    item,
                    OffsetBuffer::new(offsets.into()),
                    Arc::new(Float32Array::from(values)),
                    nulls,
                )?),
            }
        };
        if all_scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

/// A vector argument: a column, or one constant row used for every row.
enum Vectors {
    Column(VectorColumn),
    Constant(Option<Vec<f32>>),
}

impl Vectors {
    fn new(name: &str, v: &ColumnarValue) -> Result<Vectors> {
        let column = |a: &dyn Array| VectorColumn::try_new(a).or_else(|e| exec_err!("{name}: {e}"));
        match v {
            ColumnarValue::Scalar(s) => {
                if s.is_null() {
                    return Ok(Vectors::Constant(None));
                }
                let one = column(s.to_array_of_size(1)?.as_ref())?;
                Ok(Vectors::Constant(one.row(0).map(<[f32]>::to_vec)))
            }
            ColumnarValue::Array(a) => Ok(Vectors::Column(column(a.as_ref())?)),
        }
    }

    fn row(&self, i: usize) -> Option<&[f32]> {
        match self {
            Vectors::Column(c) => c.row(i),
            Vectors::Constant(v) => v.as_deref(),
        }
    }
}

fn same_dims(name: &str, a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != b.len() {
        return exec_err!(
            "{name}: the vectors have different dimensions: {} and {}",
            a.len(),
            b.len()
        );
    }
    Ok(())
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// A scalar function of one row: `None` (NULL) where it has no value, a
/// zero vector's cosine or any result that is not finite (a NaN or
/// infinite component), so that no NaN ever ranks first.
fn scalar_op(name: &str, op: Op, a: &[f32], b: Option<&[f32]>) -> Result<Option<f64>> {
    if let Some(b) = b {
        same_dims(name, a, b)?;
    }
    let b = b.unwrap_or(a);
    let v = match op {
        Op::InnerProduct => dot(a, b),
        Op::CosineSimilarity | Op::CosineDistance => {
            let d = norm(a) * norm(b);
            let cos = if d == 0.0 { f64::NAN } else { dot(a, b) / d };
            if op == Op::CosineSimilarity {
                cos
            } else {
                1.0 - cos
            }
        }
        Op::L2Distance => a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
        Op::L2Norm => norm(a),
        _ => return exec_err!("{name}: not a scalar function"),
    };
    Ok(v.is_finite().then_some(v))
}

fn vector_op(name: &str, op: Op, a: &[f32], b: Option<&[f32]>, f: Option<f64>) -> Result<Vec<f32>> {
    if let Some(b) = b {
        same_dims(name, a, b)?;
    }
    Ok(match (op, b) {
        (Op::Add, Some(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 + *y as f64) as f32)
            .collect(),
        (Op::Sub, Some(b)) => a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64) as f32)
            .collect(),
        (Op::Scale, _) => {
            let f = f.unwrap_or(f64::NAN);
            a.iter().map(|x| (*x as f64 * f) as f32).collect()
        }
        (Op::Normalize, _) => {
            let n = norm(a);
            if n == 0.0 {
                a.to_vec()
            } else {
                a.iter().map(|x| (*x as f64 / n) as f32).collect()
            }
        }
        _ => return exec_err!("{name}: not a vector function"),
    })
}

/// Every vector function, for registration.
pub fn functions() -> Vec<ScalarUDF> {
    Op::ALL.iter().map(|&op| VectorFn::udf(op)).collect()
}
