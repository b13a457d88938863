//! An index array in memory or mapped from a local file. A local index's
//! lists are mapped: a search touches only the pages of the lists it
//! probes, and the page cache (not the process) holds them, so an index
//! larger than memory can be searched. An index on S3 is read whole.

use std::marker::PhantomData;
use std::path::Path;

use bytemuck::Pod;

/// A read-only array of `T`, owned or mapped.
pub enum Array<T: Pod> {
    Owned(Vec<T>),
    Mapped(memmap2::Mmap, PhantomData<T>),
}

impl<T: Pod> Array<T> {
    /// Maps the file at `path`, which must hold `len` values of `T`.
    /// The index's files are written once and renamed into place, never
    /// changed in place (a file truncated under the map would fault).
    pub fn map(path: &Path, len: usize) -> std::io::Result<Array<T>> {
        let file = std::fs::File::open(path)?;
        let bytes = file.metadata()?.len();
        let want = (len * size_of::<T>()) as u64;
        if bytes != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a corrupt index: {bytes} bytes where index.json says {want}"),
            ));
        }
        if len == 0 {
            return Ok(Array::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and the file is never written
        // again once published (see above).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Ok(Array::Mapped(map, PhantomData))
    }
}

impl<T: Pod> std::ops::Deref for Array<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match self {
            Array::Owned(v) => v,
            // A map starts on a page boundary: aligned for any `T`.
            Array::Mapped(m, _) => bytemuck::cast_slice(m),
        }
    }
}

impl<T: Pod> From<Vec<T>> for Array<T> {
    fn from(v: Vec<T>) -> Array<T> {
        Array::Owned(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_as_its_values_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.f32");
        let values = [1.5f32, -2.0, 3.25];
        std::fs::write(&path, bytemuck::cast_slice::<f32, u8>(&values)).unwrap();
        let mapped = Array::<f32>::map(&path, 3).unwrap();
        assert!(matches!(mapped, Array::Mapped(..)));
        assert_eq!(&*mapped, &values);
        let err = Array::<f32>::map(&path, 4).err().unwrap();
        assert!(
            err.to_string()
                .contains("12 bytes where index.json says 16")
        );
        std::fs::write(&path, b"").unwrap();
        assert!(Array::<f32>::map(&path, 0).unwrap().is_empty());
    }
}
