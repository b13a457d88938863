//! Reading the vectors of a written table: its width, its batches as flat
//! `rows × dim` buffers. Shared by the cluster, report and neighbors runs.

use arrow::array::ArrayRef;
use tokio::sync::mpsc;

use crate::source::{self, Input, SourceBatch};
use crate::{Error, Result};

/// The vectors of a batch column as a flat `rows × dim` buffer.
pub(crate) fn vectors_of(
    col: &ArrayRef,
    dim: usize,
    file: &str,
    first_row: u64,
    name: &str,
) -> Result<Vec<f32>> {
    let bad = |row: usize, what: String| {
        Error::input(
            file,
            format!(
                "row {}, column '{name}': {what}",
                first_row + row as u64 + 1
            ),
        )
    };
    crate::vectors::VectorColumn::try_new(col)
        .and_then(|c| c.into_flat(dim))
        .map_err(|e| bad(e.row().unwrap_or(0), e.to_string()))
}

/// The vectors of column `index` of a source batch.
pub(crate) fn batch_vectors(
    sb: &SourceBatch,
    index: usize,
    dim: usize,
    name: &str,
) -> Result<Vec<f32>> {
    vectors_of(sb.batch.column(index), dim, &sb.file, sb.first_row, name)
}

/// The vector width the column's type declares, or the first row's length.
pub(crate) async fn vector_dim(input: &Input, column: &str) -> Result<usize> {
    let file = &input.files[0].location.display;
    let field = input
        .schema
        .field_with_name(column)
        .map_err(|_| Error::missing_column(file, column, &input.schema))?;
    match crate::vectors::width(field.data_type()) {
        Ok(Some(n)) => Ok(n),
        // A variable-size list: the width of its first vector.
        Ok(None) => {
            let mut rx = read(input, &[column.to_string()]);
            match rx.recv().await {
                Some(Ok(sb)) => {
                    let c = crate::vectors::VectorColumn::try_new(sb.batch.column(0).as_ref())
                        .map_err(|e| Error::input(file, format!("column '{column}': {e}")))?;
                    (0..c.len())
                        .find_map(|i| c.row(i).map(<[f32]>::len))
                        .ok_or_else(|| {
                            Error::input(file, format!("column '{column}': null vector"))
                        })
                }
                Some(Err(e)) => Err(e),
                None => Err(Error::input(file, "no rows")),
            }
        }
        Err(crate::vectors::VectorError::NotAList(other)) => Err(Error::input(
            file,
            format!(
                "column '{column}': expected a vector column (FixedSizeList<Float32> or List<Float32>), found {other}"
            ),
        )),
        Err(e) => Err(Error::input(file, format!("column '{column}': {e}"))),
    }
}

/// Streams `columns` of the input.
pub(crate) fn read(input: &Input, columns: &[String]) -> mpsc::Receiver<Result<SourceBatch>> {
    let (tx, rx) = mpsc::channel(2);
    let input = input.clone();
    let columns = columns.to_vec();
    tokio::spawn(async move {
        let _ = source::read(&input, &columns, source::READ_BATCH_ROWS, tx).await;
    });
    rx
}

/// Prints a step of a run when progress is on.
pub(crate) fn log(progress: bool, msg: impl std::fmt::Display) {
    if progress {
        crate::notice::emit(crate::notice::Kind::Plain, format_args!("{msg}"));
    }
}
