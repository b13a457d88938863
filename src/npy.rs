//! Float32 matrices as NumPy `.npy` files (little-endian, C order): how
//! vectors are exchanged with the Python references in tests and benchmarks.

use std::path::Path;

use crate::{Error, Result};

/// Reads a float32 `.npy`: (rows, cols, values). A 1-D array is one row;
/// more than two dimensions are flattened after the first.
pub fn read(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let bad = |m: &str| Error::input(path.display(), m);
    let bytes = std::fs::read(path).map_err(|e| Error::input(path.display(), e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file"));
    }
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        let b = bytes.get(8..12).ok_or_else(|| bad("truncated header"))?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
    };
    let header = bytes
        .get(start..start + header_len)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("truncated header"))?;
    if !header.contains("'<f4'") || !header.contains("'fortran_order': False") {
        return Err(bad(&format!(
            "expected little-endian float32 in C order, found {header}"
        )));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let (rows, cols) = match dims.as_slice() {
        [r, c] => (*r, *c),
        [c] => (1, *c),
        [r, rest @ ..] if !rest.is_empty() => (*r, rest.iter().product()),
        _ => return Err(bad("expected an array of at least one dimension")),
    };
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if data.len() != rows * cols {
        return Err(bad("fewer values than the shape says"));
    }
    Ok((rows, cols, data))
}

/// Writes `rows × cols` float32 values as a version 1.0 `.npy`.
pub fn write(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    assert_eq!(
        data.len(),
        rows * cols,
        "npy::write: shape and data disagree"
    );
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + data.len() * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).map_err(|e| Error::output(path.display(), e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        super::write(&p, 3, 4, &data).unwrap();
        assert_eq!(super::read(&p).unwrap(), (3, 4, data));
    }
}
