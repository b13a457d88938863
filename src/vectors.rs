//! Vector columns, one place for every stage: reading `FixedSizeList`,
//! `List` and `LargeList` columns of Float16/32/64 (with nulls) as f32 rows
//! (or f64 rows, for sums that must not round),
//! the `FixedSizeList<Float32, dim>` column embedflow writes, and the row
//! arithmetic the stages share (normalise, mean). Depends on arrow only;
//! callers turn [`VectorError`] into their own errors (with file, row and
//! column in the pipeline, `plan_err!`/`exec_err!` in SQL).

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, FixedSizeListArray, Float32Array, GenericListArray,
    LargeListArray, ListArray, OffsetSizeTrait, PrimitiveArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type};
use rayon::prelude::*;

/// Why a column or a row is not a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorError {
    /// The column's type is not a list.
    NotAList(DataType),
    /// A list whose items are not floats.
    NotFloats(DataType),
    /// Row `row` (from 0) is null where every row needs a vector.
    Null { row: usize },
    /// Row `row` has `len` values where `dim` are expected.
    Length { row: usize, len: usize, dim: usize },
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::NotAList(t) => write!(
                f,
                "expected a vector (FixedSizeList<Float32> or List<Float32>), found {t}"
            ),
            VectorError::NotFloats(t) => write!(f, "expected a vector of floats, found {t}"),
            VectorError::Null { .. } => write!(f, "null vector"),
            VectorError::Length { len, dim, .. } => {
                write!(f, "a vector of {len} values, expected {dim}")
            }
        }
    }
}

impl VectorError {
    /// The row the error is about, if it is about one.
    pub fn row(&self) -> Option<usize> {
        match self {
            VectorError::Null { row } | VectorError::Length { row, .. } => Some(*row),
            _ => None,
        }
    }
}

/// Plan-time check of a vector type: `Some(dim)` for a fixed-size list,
/// `None` for a variable-size one (and for the Null type of a NULL literal).
pub fn width(t: &DataType) -> Result<Option<usize>, VectorError> {
    let item = match t {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => f.data_type(),
        DataType::Null => return Ok(None),
        other => return Err(VectorError::NotAList(other.clone())),
    };
    if !matches!(
        item,
        DataType::Float16 | DataType::Float32 | DataType::Float64
    ) {
        return Err(VectorError::NotFloats(t.clone()));
    }
    Ok(match t {
        DataType::FixedSizeList(_, n) => Some(*n as usize),
        _ => None,
    })
}

/// A vector column read as rows of `T` (f32 unless asked otherwise): one
/// flat buffer and row bounds.
#[derive(Clone, Debug)]
pub struct VectorColumn<T: ArrowPrimitiveType = Float32Type> {
    values: Vec<T::Native>,
    /// Row i is `values[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    nulls: Option<NullBuffer>,
    /// The declared width of a fixed-size list.
    fixed: Option<usize>,
}

impl VectorColumn {
    /// Reads any list-of-floats column as f32 rows; a Null-typed column is
    /// all nulls.
    pub fn try_new(a: &dyn Array) -> Result<VectorColumn, VectorError> {
        VectorColumn::read(a)
    }
}

impl VectorColumn<Float64Type> {
    /// Reads any list-of-floats column as f64 rows (sums that must not
    /// round between batches).
    pub fn try_new_f64(a: &dyn Array) -> Result<VectorColumn<Float64Type>, VectorError> {
        VectorColumn::read(a)
    }
}

impl<T: ArrowPrimitiveType> VectorColumn<T> {
    fn read(a: &dyn Array) -> Result<VectorColumn<T>, VectorError> {
        width(a.data_type())?;
        if let Some(l) = a.as_any().downcast_ref::<FixedSizeListArray>() {
            let dim = l.value_length() as usize;
            let values = l.values().slice(l.offset() * dim, l.len() * dim);
            Ok(VectorColumn {
                values: floats::<T>(&values)?,
                offsets: (0..=l.len()).map(|i| i * dim).collect(),
                nulls: l.nulls().cloned(),
                fixed: Some(dim),
            })
        } else if let Some(l) = a.as_any().downcast_ref::<ListArray>() {
            variable(l)
        } else if let Some(l) = a.as_any().downcast_ref::<LargeListArray>() {
            variable(l)
        } else {
            // The Null type: as many null rows.
            Ok(VectorColumn {
                values: Vec::new(),
                offsets: vec![0; a.len() + 1],
                nulls: Some(NullBuffer::new_null(a.len())),
                fixed: None,
            })
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The declared width of a fixed-size list column.
    pub fn fixed_dim(&self) -> Option<usize> {
        self.fixed
    }

    /// Row `i`, `None` when it is null.
    pub fn row(&self, i: usize) -> Option<&[T::Native]> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(&self.values[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Every row, each exactly `dim` long, as one `rows × dim` buffer: the
    /// first null or wrong-length row is an error.
    pub fn into_flat(self, dim: usize) -> Result<Vec<T::Native>, VectorError> {
        for i in 0..self.len() {
            if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
                return Err(VectorError::Null { row: i });
            }
            let len = self.offsets[i + 1] - self.offsets[i];
            if len != dim {
                return Err(VectorError::Length { row: i, len, dim });
            }
        }
        // Offsets start at 0 (`try_new` rebases slices), so the values are
        // exactly the rows.
        Ok(self.values)
    }
}

fn variable<T: ArrowPrimitiveType, O: OffsetSizeTrait>(
    l: &GenericListArray<O>,
) -> Result<VectorColumn<T>, VectorError> {
    let offs = l.value_offsets();
    let base = offs[0].as_usize();
    let end = offs[l.len()].as_usize();
    let values = l.values().slice(base, end - base);
    Ok(VectorColumn {
        values: floats::<T>(&values)?,
        offsets: offs.iter().map(|o| o.as_usize() - base).collect(),
        nulls: l.nulls().cloned(),
        fixed: None,
    })
}

/// The items of a list as `T` (other float widths converted).
fn floats<T: ArrowPrimitiveType>(values: &ArrayRef) -> Result<Vec<T::Native>, VectorError> {
    if let Some(f) = values.as_any().downcast_ref::<PrimitiveArray<T>>() {
        return Ok(f.values().to_vec());
    }
    let cast = arrow::compute::cast(values, &T::DATA_TYPE)
        .map_err(|_| VectorError::NotFloats(values.data_type().clone()))?;
    let f = cast
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| VectorError::NotFloats(values.data_type().clone()))?;
    Ok(f.values().to_vec())
}

/// A `FixedSizeList<Float32, dim>` column (non-null rows) from one flat
/// `rows × dim` buffer, without copying it.
pub fn to_fixed_size_list(
    values: Vec<f32>,
    dim: usize,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    let a =
        FixedSizeListArray::try_new(item, dim as i32, Arc::new(Float32Array::from(values)), None)?;
    Ok(Arc::new(a))
}

/// A `List<Float32>` column of `dim`-long rows from one flat buffer (the
/// type Delta Lake's `array<float>` reads back as), without copying it.
pub fn to_list(values: Vec<f32>, dim: usize) -> Result<ArrayRef, arrow::error::ArrowError> {
    let rows = values.len().checked_div(dim).unwrap_or(0);
    let item = Arc::new(Field::new_list_field(DataType::Float32, true));
    let offsets = arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(dim, rows));
    let a = ListArray::try_new(item, offsets, Arc::new(Float32Array::from(values)), None)?;
    Ok(Arc::new(a))
}

/// Scales each row of `x` (`rows × dim`) to unit length, as torch's
/// `F.normalize` (sentence-transformers' Normalize): `x / max(‖x‖, 1e-12)`,
/// so a zero row stays zero.
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    x.par_chunks_mut(dim).for_each(|row| {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        for v in row {
            *v /= norm;
        }
    });
}

/// The mean of `rows` consecutive rows of `x` (from row `first`),
/// accumulated in f64.
pub fn mean_rows(x: &[f32], dim: usize, first: usize, rows: usize, out: &mut [f32]) {
    let mut acc = vec![0f64; dim];
    for r in x[first * dim..(first + rows) * dim].chunks_exact(dim) {
        for (a, &v) in acc.iter_mut().zip(r) {
            *a += v as f64;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = (a / rows as f64) as f32;
    }
}

/// The dot product of two rows, accumulated in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Rows whose vectors hold a NaN or an infinity: never placed, clustered,
/// averaged or ranked (one such row would make every centroid and score it
/// touches NaN), but counted and named.
#[derive(Debug, Default)]
pub struct NonFinite {
    pub count: u64,
    /// The first few, as "FILE row N".
    pub first: Vec<String>,
}

impl NonFinite {
    /// Whether `row` is finite; counts it when it is not.
    pub fn check(&mut self, row: &[f32], file: &str, row_number: u64) -> bool {
        if row.iter().all(|x| x.is_finite()) {
            return true;
        }
        self.count += 1;
        if self.first.len() < 5 {
            self.first.push(format!("{file} row {row_number}"));
        }
        false
    }

    /// One sentence for stderr and notes, or `None` when every row was finite.
    pub fn describe(&self, what: &str) -> Option<String> {
        (self.count > 0).then(|| {
            format!(
                "{} rows with NaN or infinite vector values {what} ({}{})",
                self.count,
                self.first.join(", "),
                if self.count as usize > self.first.len() {
                    ", …"
                } else {
                    ""
                }
            )
        })
    }
}

/// Per row of a flat `rows × dim` buffer: whether its values are all finite.
pub fn finite_rows(v: &[f32], dim: usize) -> Vec<bool> {
    v.chunks_exact(dim)
        .map(|r| r.iter().all(|x| x.is_finite()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int32Array};
    use arrow::buffer::OffsetBuffer;

    fn rows(c: &VectorColumn) -> Vec<Option<Vec<f32>>> {
        (0..c.len())
            .map(|i| c.row(i).map(<[f32]>::to_vec))
            .collect()
    }

    #[test]
    fn every_layout_and_float_type_reads_the_same_rows() {
        let want = vec![Some(vec![1.0, 2.0]), None, Some(vec![-0.5, 4.0])];
        let nulls = Some(NullBuffer::from(vec![true, false, true]));
        let flat = [1.0f64, 2.0, 0.0, 0.0, -0.5, 4.0];
        let items: Vec<ArrayRef> = vec![
            Arc::new(Float32Array::from(
                flat.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(flat.to_vec())),
            arrow::compute::cast(&Float64Array::from(flat.to_vec()), &DataType::Float16).unwrap(),
        ];
        for values in items {
            let f = Arc::new(Field::new_list_field(values.data_type().clone(), true));
            let fixed =
                FixedSizeListArray::try_new(Arc::clone(&f), 2, Arc::clone(&values), nulls.clone())
                    .unwrap();
            let offsets = OffsetBuffer::<i32>::from_lengths([2, 2, 2]);
            let list =
                ListArray::try_new(Arc::clone(&f), offsets, Arc::clone(&values), nulls.clone())
                    .unwrap();
            let offsets = OffsetBuffer::<i64>::from_lengths([2, 2, 2]);
            let large = LargeListArray::try_new(f, offsets, values, nulls.clone()).unwrap();
            assert_eq!(rows(&VectorColumn::try_new(&fixed).unwrap()), want);
            assert_eq!(rows(&VectorColumn::try_new(&list).unwrap()), want);
            assert_eq!(rows(&VectorColumn::try_new(&large).unwrap()), want);
            // A slice starts at its own first row.
            let sliced = VectorColumn::try_new(&large.slice(2, 1)).unwrap();
            assert_eq!(sliced.into_flat(2).unwrap(), vec![-0.5, 4.0]);
            assert_eq!(
                VectorColumn::try_new(&fixed).unwrap().into_flat(2),
                Err(VectorError::Null { row: 1 })
            );
        }
        let ints = Int32Array::from(vec![1]);
        assert!(matches!(
            VectorColumn::try_new(&ints),
            Err(VectorError::NotAList(_))
        ));
    }

    #[test]
    fn wrong_lengths_are_named_by_row() {
        let f = Arc::new(Field::new_list_field(DataType::Float32, true));
        let list = ListArray::try_new(
            f,
            OffsetBuffer::<i32>::from_lengths([2, 3]),
            Arc::new(Float32Array::from(vec![0.0; 5])),
            None,
        )
        .unwrap();
        let c = VectorColumn::try_new(&list).unwrap();
        assert_eq!(
            c.into_flat(2),
            Err(VectorError::Length {
                row: 1,
                len: 3,
                dim: 2
            })
        );
    }

    #[test]
    fn normalise_and_mean_against_f64() {
        let mut x = vec![3.0f32, 4.0, 0.0, 0.0];
        normalize_rows(&mut x, 2);
        assert_eq!(x, [0.6, 0.8, 0.0, 0.0]);
        let rows = [1.0f32, 2.0, 3.0, 5.0, 1e8, 1.0];
        let mut out = [0f32; 2];
        mean_rows(&rows, 2, 0, 3, &mut out);
        let want = [(1.0f64 + 3.0 + 1e8) / 3.0, (2.0f64 + 5.0 + 1.0) / 3.0];
        assert_eq!(out, [want[0] as f32, want[1] as f32]);
        assert_eq!(dot(&[1.0, 2.0], &[3.0, 4.0]), 11.0);
    }
}
