//! An index folder on disk or S3: `index.json` (written last: a folder
//! without it is no index), and little-endian arrays — `centroids.f32`
//! (lists × dim), `offsets.u64` (lists + 1 entry offsets), `vectors.f32`
//! (entries × dim, list after list), `rows.u32` (each entry's row
//! position), `codes.u8` (each entry's int8 code, entries × dim) with
//! `sq.f32` (the codes' ranges: dim lows, dim steps), and, for a table
//! written by embedflow, `keys.u128` (each entry's key, for updates).
//! numpy reads each with `np.fromfile(path, dtype="<f4")` (or `<u8`,
//! `<u4`, `u1`).

// The arrays are the machine's own floats and integers, written and read
// as bytes: little-endian machines only.
#[cfg(target_endian = "big")]
compile_error!("index files are little-endian");

use std::path::Path;

use object_store::ObjectStoreExt;
use tokio::io::AsyncWriteExt;

use crate::source::Input;
use crate::store::{self, Location, Stores};
use crate::{Error, Result};

use super::mapped::Array;
use super::{FORMAT, IndexMeta, Ivf};

pub(super) const META: &str = "index.json";
pub(super) const CENTROIDS: &str = "centroids.f32";
pub(super) const OFFSETS: &str = "offsets.u64";
pub const VECTORS: &str = "vectors.f32";
pub const ROWS: &str = "rows.u32";
/// Each entry's int8 code (entries × dim bytes) and the codes' ranges
/// (see [`super::sq`]).
pub const CODES: &str = "codes.u8";
pub(super) const SQ: &str = "sq.f32";
/// Each entry's key (see [`super::keys`]), where the table has them.
pub(super) const KEYS: &str = "keys.u128";

/// Where the index of `path` lives unless told: a Delta table's under its
/// `_embedflow/index/v<version>` folder (the version it indexes); files'
/// beside them, in `<path>.index`.
pub fn default_dir(path: &str, input: &Input) -> Result<String> {
    dir_for(path, input.table.as_ref().map(|t| t.version))
}

/// [`default_dir`] of a Delta table at `delta_version`, or of files.
pub fn dir_for(path: &str, delta_version: Option<i64>) -> Result<String> {
    let base = path.trim_end_matches('/');
    if let Some(v) = delta_version {
        return Ok(format!("{base}/{}/index/v{v}", crate::delta::STATE_DIR));
    }
    if store::is_glob(path) {
        return Err(Error::Usage(format!(
            "{path} is a pattern: say where its index lives with --index DIR (or -o DIR)"
        )));
    }
    Ok(format!("{base}.index"))
}

/// The index's description, or `None` where the folder holds no index.
pub async fn read_meta(stores: &Stores, dir: &str) -> Result<Option<IndexMeta>> {
    let loc = stores.resolve(&child(dir, META))?;
    let bytes = match loc.store.get(&loc.path).await {
        Ok(r) => r.bytes().await.map_err(|e| Error::input(&loc.display, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::input(&loc.display, e)),
    };
    let meta: IndexMeta = serde_json::from_slice(&bytes)
        .map_err(|e| Error::input(&loc.display, format!("not an embedflow index: {e}")))?;
    if meta.format != FORMAT || meta.kind != "ivf_flat" || meta.metric().is_none() {
        return Err(Error::input(
            &loc.display,
            format!(
                "an index of format {} ({}, {}); this embedflow reads format {FORMAT} (ivf_flat; cosine, inner_product or l2): build it again with `embedflow index`",
                meta.format, meta.kind, meta.metric
            ),
        ));
    }
    Ok(Some(meta))
}

/// The index for searching, each array checked against the description:
/// a local index's lists mapped (see [`Array`]), an index on S3 read
/// into memory.
pub async fn load(stores: &Stores, dir: &str, meta: IndexMeta) -> Result<Ivf> {
    let (centroids, offsets) = load_head(stores, dir, &meta).await?;
    let (dim, entries) = (meta.space().width(), meta.entries as usize);
    let vectors: Array<f32> = lists_array(stores, dir, VECTORS, entries * dim).await?;
    let rows: Array<u32> = lists_array(stores, dir, ROWS, entries).await?;
    if rows.iter().any(|&r| u64::from(r) >= meta.rows) {
        return Err(Error::input(
            dir,
            "a corrupt index: a row position past the table's rows",
        ));
    }
    Ok(Ivf {
        meta,
        centroids,
        offsets,
        vectors,
        rows,
    })
}

/// The centroids and list offsets of an index (what a search reads before
/// the lists it probes), checked against its description; the sizes of
/// its vectors and rows files too.
pub async fn load_head(
    stores: &Stores,
    dir: &str,
    meta: &IndexMeta,
) -> Result<(Vec<f32>, Vec<u64>)> {
    let (lists, dim, entries) = (meta.lists, meta.space().width(), meta.entries);
    let centroids =
        bytemuck::pod_collect_to_vec(&array(stores, dir, CENTROIDS, lists * dim * 4).await?);
    let offsets: Vec<u64> =
        bytemuck::pod_collect_to_vec(&array(stores, dir, OFFSETS, (lists + 1) * 8).await?);
    if offsets.first() != Some(&0)
        || offsets.last() != Some(&entries)
        || offsets.windows(2).any(|w| w[0] > w[1])
    {
        return Err(Error::input(
            dir,
            "a corrupt index: its list offsets do not cover its entries in order",
        ));
    }
    let mut sized = vec![(VECTORS, entries * dim as u64 * 4), (ROWS, entries * 4)];
    if meta.keys {
        sized.push((KEYS, entries * 16));
    }
    if meta.codes {
        sized.push((CODES, entries * dim as u64));
    }
    for (name, len) in sized {
        let loc = stores.resolve(&child(dir, name))?;
        let head = loc
            .store
            .head(&loc.path)
            .await
            .map_err(|e| Error::input(&loc.display, format!("a file of the index: {e}")))?;
        if head.size != len {
            return Err(Error::input(
                &loc.display,
                format!(
                    "a corrupt index: {} bytes where index.json says {len}",
                    head.size
                ),
            ));
        }
    }
    Ok((centroids, offsets))
}

/// A file of `len` values of `T`: mapped where it is local, else read.
async fn lists_array<T: bytemuck::Pod>(
    stores: &Stores,
    dir: &str,
    name: &str,
    len: usize,
) -> Result<Array<T>> {
    let loc = stores.resolve(&child(dir, name))?;
    match &loc.local {
        Some(path) => Array::map(path, len)
            .map_err(|e| Error::input(&loc.display, format!("a file of the index: {e}"))),
        None => {
            let bytes = array(stores, dir, name, len * size_of::<T>()).await?;
            Ok(Array::from(bytemuck::pod_collect_to_vec::<u8, T>(&bytes)))
        }
    }
}

/// The ranges of the index's int8 codes, where it has them.
pub async fn load_sq(stores: &Stores, dir: &str, meta: &IndexMeta) -> Result<Option<super::Sq>> {
    if !meta.codes {
        return Ok(None);
    }
    let floats: Vec<f32> =
        bytemuck::pod_collect_to_vec(&array(stores, dir, SQ, meta.space().width() * 8).await?);
    Ok(Some(super::Sq::from_floats(&floats)))
}

/// A file of the index, which must have `len` bytes.
pub(super) async fn array(
    stores: &Stores,
    dir: &str,
    name: &str,
    len: usize,
) -> Result<bytes::Bytes> {
    let loc = stores.resolve(&child(dir, name))?;
    let bytes = loc
        .store
        .get(&loc.path)
        .await
        .map_err(|e| Error::input(&loc.display, format!("a file of the index: {e}")))?
        .bytes()
        .await
        .map_err(|e| Error::input(&loc.display, e))?;
    if bytes.len() != len {
        return Err(Error::input(
            &loc.display,
            format!(
                "a corrupt index: {} bytes where index.json says {len}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

/// Writes an index's small arrays into the local folder `built`: its
/// centroids, its codes' ranges and its list offsets.
pub(super) fn write_head(
    built: &Path,
    centroids: &[f32],
    sq: &super::Sq,
    offsets: &[u64],
) -> std::io::Result<()> {
    std::fs::write(
        built.join(CENTROIDS),
        bytemuck::cast_slice::<f32, u8>(centroids),
    )?;
    std::fs::write(
        built.join(SQ),
        bytemuck::cast_slice::<f32, u8>(&sq.to_floats()),
    )?;
    std::fs::write(
        built.join(OFFSETS),
        bytemuck::cast_slice::<u64, u8>(offsets),
    )
}

pub fn child(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// Puts the index built in the local folder `built` at `dir`: its arrays
/// first, its `index.json` last (the old one removed first), so that a
/// stop halfway leaves no folder that reads as an index.
pub(super) async fn publish(stores: &Stores, built: &Path, dir: &str) -> Result<()> {
    let meta_loc = stores.resolve(&child(dir, META))?;
    match meta_loc.store.delete(&meta_loc.path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(Error::output(&meta_loc.display, e)),
    }
    for name in [CENTROIDS, OFFSETS, VECTORS, ROWS, KEYS, CODES, SQ, META] {
        if name != META && !built.join(name).exists() {
            continue;
        }
        let to = stores.resolve(&child(dir, name))?;
        put_file(&built.join(name), &to).await?;
    }
    Ok(())
}

/// Copies a local file to `to` (a rename where both are on this disk).
async fn put_file(from: &Path, to: &Location) -> Result<()> {
    if let Some(local) = &to.local {
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::output(&to.display, e))?;
        }
        if std::fs::rename(from, local).is_ok() {
            return Ok(());
        }
    }
    let mut w = object_store::buffered::BufWriter::new(to.store.clone(), to.path.clone());
    let mut f = tokio::fs::File::open(from)
        .await
        .map_err(|e| Error::output(&to.display, e))?;
    let copied = tokio::io::copy(&mut f, &mut w).await;
    match copied {
        Ok(_) => w
            .shutdown()
            .await
            .map_err(|e| Error::output(&to.display, e)),
        Err(e) => {
            let _ = w.abort().await;
            Err(Error::output(&to.display, e))
        }
    }
}
