//! Bringing an index up to date with its table without building it again.
//!
//! An incremental run writes a new Delta version: its unchanged rows are
//! copied (same vectors, new row positions), changed and new rows are
//! embedded, deleted rows are gone. The update reads only the new
//! version's key columns ([`super::keys`]) and matches each row with an
//! entry of the older index by key: a match keeps the entry (its vector,
//! at the row's new position); a row without one is read by position and
//! put in its nearest list; an entry nobody matched is dropped. Then the
//! lists are written anew, each old list's vectors copied in one ranged
//! read. Centroids are kept, so a table that drifts far from what they
//! were trained on is built again instead (`rebuild_after`).
//!
//! [`refresh`] chooses: nothing to do, an update, or a build (and why).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use arrow::datatypes::{Schema, SchemaRef};
use object_store::ObjectStoreExt;

use super::space::Space;
use crate::analysis::vector_file::{log, read, vectors_of};
use crate::store::Stores;
use crate::{Error, Result};

use super::build::{BuildOptions, Table, nearest_lists, offsets_of, staging_dir};
use super::files::{self, CODES, KEYS, META, ROWS, VECTORS};
use super::keys::{self, Matcher};
use super::sq::Sq;
use super::{IndexMeta, SourceId, UpdateInfo};

/// What [`refresh`] did.
#[derive(Debug)]
pub enum Refreshed {
    /// The index already indexes the table as it is.
    Current,
    /// Updated from the index at a folder.
    Updated { from_dir: String },
    /// Built from scratch; why, where an older index could not be updated.
    Built { because: Option<String> },
}

/// Makes the index at `dir` index `t` as it is now: leaves a current one
/// alone, updates an older one of the same table where it can, else
/// builds. A Delta table's indexes of versions before the one updated
/// from are removed.
pub async fn refresh(
    stores: &Stores,
    t: &Table<'_>,
    dir: &str,
    opts: &BuildOptions,
) -> Result<(IndexMeta, Refreshed)> {
    let now = SourceId::of(t.path, t.input);
    let fingerprint = keys::table_fingerprint(stores, t.input).await;
    // Older versions' folders are pruned only beside a Delta table's own.
    let beside_table = beside_table(t, dir);
    let mut because = None;
    if !opts.rebuild {
        if let Some(meta) = files::read_meta(stores, dir).await.ok().flatten()
            && unfit(&meta, t, opts, &fingerprint).is_none()
            && meta.source.differs(&now).is_none()
        {
            return Ok((meta, Refreshed::Current));
        }
        if let Some(older) = previous(stores, t, dir).await {
            because = unfit(&older.meta, t, opts, &fingerprint);
            if because.is_none() {
                let Older {
                    dir: from_dir,
                    version,
                    meta,
                } = older;
                match update(stores, t, (&from_dir, meta), dir, opts).await? {
                    Ok(meta) => {
                        if beside_table && let Some(v) = version {
                            prune(stores, t, v).await;
                        }
                        return Ok((meta, Refreshed::Updated { from_dir }));
                    }
                    Err(why) => because = Some(why),
                }
            }
        }
    }
    if let Some(why) = &because {
        log(opts.progress, format!("building the index again: {why}"));
    }
    let meta = super::build(stores, t, dir, opts).await?;
    if beside_table && let Some(table) = &t.input.table {
        prune(stores, t, table.version).await;
    }
    Ok((meta, Refreshed::Built { because }))
}

/// Why `old` cannot be updated to index `t` as `opts` ask (`None`: it
/// can).
fn unfit(
    old: &IndexMeta,
    t: &Table<'_>,
    opts: &BuildOptions,
    fingerprint: &Option<String>,
) -> Option<String> {
    let asked = opts.metric.name();
    if old.metric != asked {
        return Some(format!("it ranks by {}, {asked} is asked", old.metric));
    }
    if old.vector_column != t.column || old.dim != t.dim {
        return Some(format!(
            "it indexes column '{}' ({} dims), not '{}' ({} dims)",
            old.vector_column, old.dim, t.column, t.dim
        ));
    }
    if let Some(l) = opts.lists.filter(|&l| l != old.lists) {
        return Some(format!("it has {} lists, {l} are asked", old.lists));
    }
    if old.target_recall != opts.target_recall {
        return Some(format!(
            "it was tuned to recall {}, {} is asked",
            old.target_recall, opts.target_recall
        ));
    }
    if !old.codes {
        return Some("it was built by an earlier release, without int8 codes".into());
    }
    if !old.keys {
        return Some("it holds no row keys (the table has no content_hash column)".into());
    }
    if old.table_fingerprint.is_none() || old.table_fingerprint != *fingerprint {
        return Some(
            "the table's vectors are made otherwise now (another model, prompt or chunking)".into(),
        );
    }
    None
}

/// The newest older index of the same table: a Delta table's index of an
/// earlier version (when `dir` is its default folder), or what `dir`
/// holds.
async fn previous(stores: &Stores, t: &Table<'_>, dir: &str) -> Option<Older> {
    if let Some(table) = &t.input.table
        && beside_table(t, dir)
    {
        return newest_older(stores, t.path, table.version).await;
    }
    let meta = files::read_meta(stores, dir).await.ok().flatten()?;
    Some(Older {
        dir: dir.to_string(),
        version: meta.source.delta_version,
        meta,
    })
}

/// An older index: its folder, the Delta version it indexes, what it is.
struct Older {
    dir: String,
    version: Option<i64>,
    meta: IndexMeta,
}

/// The index of the newest version before `version` of the Delta table at
/// `path` that has a readable one.
async fn newest_older(stores: &Stores, path: &str, version: i64) -> Option<Older> {
    for v in index_versions(stores, path).await.into_iter().rev() {
        if v >= version {
            continue;
        }
        let dir = super::dir_for(path, Some(v)).ok()?;
        if let Ok(Some(meta)) = files::read_meta(stores, &dir).await {
            return Some(Older {
                dir,
                version: Some(v),
                meta,
            });
        }
    }
    None
}

/// Whether `dir` is the index folder of a Delta table's version, beside
/// its older ones.
fn beside_table(t: &Table<'_>, dir: &str) -> bool {
    t.input
        .table
        .as_ref()
        .is_some_and(|tb| super::dir_for(t.path, Some(tb.version)).ok().as_deref() == Some(dir))
}

/// The versions a Delta table has index folders for, in order.
async fn index_versions(stores: &Stores, table: &str) -> Vec<i64> {
    let Some(names) = index_objects(stores, table).await else {
        return Vec::new();
    };
    let mut versions: Vec<i64> = names.iter().filter_map(|n| version_of(n)).collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

/// The objects under the index folder of the Delta table at `table`
/// (names relative to it), or `None` when it cannot be listed.
async fn index_objects(stores: &Stores, table: &str) -> Option<Vec<String>> {
    let target = crate::delta::DeltaTarget::resolve_input(stores, table).ok()?;
    target
        .list(&format!("{}/index", crate::delta::STATE_DIR))
        .await
        .ok()
}

/// For a Delta table at `path`, at `version` with `rows_now` rows, that
/// has no index of that version: its newest older index, what it covers
/// against the table now, in words (`None`: there is none).
pub async fn stale_note(
    stores: &Stores,
    path: &str,
    version: i64,
    rows_now: Option<u64>,
) -> Option<String> {
    let older = newest_older(stores, path, version).await?;
    let now = rows_now.map_or_else(String::new, |r| format!(", {r} rows"));
    Some(format!(
        "the index at {} covers version {} of the table ({} rows), which is at version {version} now{now}; `embedflow index {path}` brings it up to date",
        older.dir,
        older.version.unwrap_or(0),
        older.meta.rows
    ))
}

/// The version of an object under `_embedflow/index/v<N>/`.
fn version_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix(&format!("{}/index/v", crate::delta::STATE_DIR))?;
    rest.split('/').next()?.parse().ok()
}

/// Removes a Delta table's index folders of versions before `keep`
/// (each folder's `index.json` first, so that a stop halfway leaves no
/// folder that reads as an index). A failure costs disk space only, and
/// is said.
async fn prune(stores: &Stores, t: &Table<'_>, keep: i64) {
    let Ok(target) = crate::delta::DeltaTarget::resolve_input(stores, t.path) else {
        return;
    };
    for v in index_versions(stores, t.path).await {
        if v >= keep {
            continue;
        }
        let folder = format!("{}/index/v{v}", crate::delta::STATE_DIR);
        let removed = async {
            target.delete(&format!("{folder}/{META}")).await?;
            target.remove_all(&folder).await
        };
        if let Err(e) = removed.await {
            tracing::warn!("cannot remove the old index {folder}: {e}");
            return;
        }
    }
}

/// Which entries of the old index the table's rows are, by key.
struct Matched {
    /// Each old entry's row position in the new table (`u32::MAX`:
    /// dropped).
    new_row: Vec<u32>,
    /// Rows without an entry: their positions and keys.
    fresh: Vec<(u32, u128)>,
    rows: u64,
    /// Each file's first row position and rows (files in the input's
    /// order; a file without rows has 0).
    files: Vec<(u64, u64)>,
}

impl Matched {
    fn kept(&self) -> u64 {
        self.new_row.iter().filter(|&&r| r != u32::MAX).count() as u64
    }
}

/// Updates the index `old` (at `from.0`) to index `t`, at `dir`; `Err`
/// with the reason where too much changed since it was built.
async fn update(
    stores: &Stores,
    t: &Table<'_>,
    from: (&str, IndexMeta),
    dir: &str,
    opts: &BuildOptions,
) -> Result<std::result::Result<IndexMeta, String>> {
    let started = Instant::now();
    let (from_dir, old) = from;
    let entries = old.entries as usize;
    let old_keys: Vec<u128> =
        bytemuck::pod_collect_to_vec(&files::array(stores, from_dir, KEYS, entries * 16).await?);
    let m = match_rows(t, &old_keys).await?;
    let (kept, dropped) = (m.kept(), old.entries - m.kept());
    let since = old.update.as_ref().map_or(0, |u| u.changed_since_build);
    if let Some(why) = drifted(&old, since + dropped + m.fresh.len() as u64, opts) {
        return Ok(Err(why));
    }
    let at = |what: String| format!("{:.1} s: {what}", started.elapsed().as_secs_f64());
    let matched = format!("{kept} entries kept, {dropped} dropped");
    let placing = format!("{} rows to place", m.fresh.len());
    log(
        opts.progress,
        at(format!("updating from {from_dir}: {matched}, {placing}")),
    );
    let (centroids, offsets) = files::load_head(stores, from_dir, &old).await?;
    let sq = files::load_sq(stores, from_dir, &old)
        .await?
        .ok_or_else(|| Error::internal("an index without codes updated"))?;
    let fresh = fresh_vectors(t, &m, opts).await?;
    let labels = nearest_lists(&fresh.x, &centroids, old.space());
    log(
        opts.progress,
        at(format!("{} rows read and placed", fresh.rows.len())),
    );
    let built = staging_dir(stores, dir)?;
    let placed = Placed {
        old: &old,
        from_dir,
        offsets: &offsets,
        old_keys: &old_keys,
        new_row: &m.new_row,
        fresh: &fresh,
        labels: &labels,
        sq: &sq,
    };
    let (new_offsets, added) = write_lists(stores, &placed, built.path()).await?;
    log(opts.progress, at("lists written".into()));
    files::write_head(built.path(), &centroids, &sq, &new_offsets)
        .map_err(|e| Error::output(dir, e))?;
    let meta = IndexMeta {
        rows: m.rows,
        entries: kept + added,
        source: SourceId::of(t.path, t.input),
        embedflow: env!("CARGO_PKG_VERSION").into(),
        unit_norm: old.unit_norm && fresh.unit_norm,
        update: Some(UpdateInfo {
            from: old.source.version_name(),
            kept,
            added,
            dropped,
            changed_since_build: since + dropped + added,
            seconds: started.elapsed().as_secs_f64(),
        }),
        ..old
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(Error::internal)?;
    std::fs::write(built.path().join(META), json).map_err(|e| Error::output(dir, e))?;
    files::publish(stores, built.path(), dir).await?;
    Ok(Ok(meta))
}

/// Why an index with `changed` entries added or dropped since its build
/// is built again rather than updated (`None`: it is updated).
fn drifted(old: &IndexMeta, changed: u64, opts: &BuildOptions) -> Option<String> {
    (changed as f64 > opts.rebuild_after * (old.entries.max(1) as f64)).then(|| {
        format!(
            "{changed} entries added or dropped since it was built, past rebuild_after = {} of its {} entries",
            opts.rebuild_after, old.entries
        )
    })
}

/// Streams the table's key columns and matches each row with an old
/// entry.
async fn match_rows(t: &Table<'_>, old_keys: &[u128]) -> Result<Matched> {
    let columns = keys::key_columns(&t.input.schema).ok_or_else(|| {
        Error::input(
            t.path,
            "no content_hash column: its index cannot be updated",
        )
    })?;
    let mut matcher = Matcher::new(old_keys);
    let indices = t.input.file_indices();
    let mut m = Matched {
        new_row: vec![u32::MAX; old_keys.len()],
        fresh: Vec::new(),
        rows: 0,
        files: vec![(0, 0); t.input.files.len()],
    };
    let mut rx = read(t.input, &columns);
    while let Some(sb) = rx.recv().await {
        crate::cancel::check()?;
        let sb = sb?;
        let f = *indices
            .get(&sb.file)
            .ok_or_else(|| Error::internal("a batch of an unlisted file"))?;
        if m.files[f].1 == 0 {
            m.files[f].0 = m.rows;
        }
        m.files[f].1 += sb.batch.num_rows() as u64;
        for k in keys::batch_keys(sb.batch.columns()) {
            let at = u32::try_from(m.rows)
                .map_err(|_| Error::input(t.path, "more rows than an index holds"))?;
            match matcher.take(k) {
                Some(e) => m.new_row[e as usize] = at,
                None => m.fresh.push((at, k)),
            }
            m.rows += 1;
        }
    }
    Ok(m)
}

/// The vectors of the rows without an entry, as the metric scores them;
/// rows without a score are left out.
struct Fresh {
    /// Every fresh row with a score has unit length.
    unit_norm: bool,
    x: Vec<f32>,
    rows: Vec<u32>,
    keys: Vec<u128>,
}

/// Reads the fresh rows' vectors by position (only the pages holding
/// them).
async fn fresh_vectors(t: &Table<'_>, m: &Matched, opts: &BuildOptions) -> Result<Fresh> {
    let dim = t.dim;
    let field = t
        .input
        .schema
        .field_with_name(t.column)
        .map_err(|_| Error::missing_column(t.path, t.column, &t.input.schema))?;
    let schema: SchemaRef = Arc::new(Schema::new(vec![field.clone()]));
    let mut out = Fresh {
        unit_norm: true,
        x: Vec::with_capacity(m.fresh.len() * dim),
        rows: Vec::with_capacity(m.fresh.len()),
        keys: Vec::with_capacity(m.fresh.len()),
    };
    let files: Vec<_> = t
        .input
        .files
        .iter()
        .zip(&m.files)
        .map(|(f, &(first, rows))| (f, first, rows))
        .collect();
    let positions: Vec<u64> = m.fresh.iter().map(|&(r, _)| u64::from(r)).collect();
    let read = crate::source::parquet::rows_at_positions(&files, &positions, &schema).await?;
    for f in read {
        let shown = t.input.display_of(f.file);
        let mut got = 0;
        for b in &f.batches {
            out.x
                .extend(vectors_of(b.column(0), dim, shown, 0, t.column)?);
            got += b.num_rows();
        }
        if got != f.asked.len() {
            return Err(Error::input(
                shown,
                format!("{got} rows read where {} were asked", f.asked.len()),
            ));
        }
        let mine = &m.fresh[f.asked];
        out.rows.extend(mine.iter().map(|(r, _)| *r));
        out.keys.extend(mine.iter().map(|(_, k)| *k));
    }
    out.unit_norm = super::build::unit_length(&out.x, dim);
    out.x = Space::new(opts.metric, dim).stored(std::mem::take(&mut out.x));
    Ok(out)
}

/// What the new lists are made of.
struct Placed<'a> {
    old: &'a IndexMeta,
    from_dir: &'a str,
    offsets: &'a [u64],
    old_keys: &'a [u128],
    new_row: &'a [u32],
    fresh: &'a Fresh,
    labels: &'a [u32],
    sq: &'a Sq,
}

/// Bytes of old vectors read at once.
const COPY_BYTES: u64 = 64 << 20;

/// Writes the new lists (each old list's kept entries, then its fresh
/// ones) into `built`; returns the new offsets and the entries added.
async fn write_lists(
    stores: &Stores,
    p: &Placed<'_>,
    built: &std::path::Path,
) -> Result<(Vec<u64>, u64)> {
    let dim = p.old.space().width() as u64;
    let lists = p.offsets.len() - 1;
    let by_list = fresh_by_list(p.labels);
    let added = by_list.values().map(Vec::len).sum::<usize>() as u64;
    let mut old_vectors = OldFile::open(stores, p.from_dir, VECTORS)?;
    let mut old_codes = OldFile::open(stores, p.from_dir, CODES)?;
    let mut out = NewLists::create(built)?;
    let mut l = 0;
    while l < lists {
        // A run of lists of up to COPY_BYTES, read at once.
        let mut end = l + 1;
        let bytes = |a: usize, b: usize| (p.offsets[b] - p.offsets[a]) * dim * 4;
        while end < lists && bytes(l, end + 1) <= COPY_BYTES {
            end += 1;
        }
        let (a, b) = (p.offsets[l] * dim, p.offsets[end] * dim);
        let vectors: &[f32] = bytemuck::cast_slice(old_vectors.read(a * 4, b * 4).await?);
        let codes = old_codes.read(a, b).await?;
        let old = OldChunk {
            first: p.offsets[l],
            vectors,
            codes,
        };
        for list in l..end {
            out.list(p, &old, list, by_list.get(&(list as u32)))?;
        }
        l = end;
    }
    out.finish(built)?;
    Ok((offsets_of(&out.counts), added))
}

/// The fresh rows of each list.
fn fresh_by_list(labels: &[u32]) -> HashMap<u32, Vec<usize>> {
    let mut by_list: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &l) in labels.iter().enumerate() {
        if l != super::build::NO_LIST {
            by_list.entry(l).or_default().push(i);
        }
    }
    by_list
}

/// Old lists read from `first` on: their vectors and codes.
struct OldChunk<'a> {
    first: u64,
    vectors: &'a [f32],
    codes: &'a [u8],
}

/// The new lists' files, as they are written.
struct NewLists {
    vectors: std::io::BufWriter<std::fs::File>,
    codes: std::io::BufWriter<std::fs::File>,
    rows: Vec<u32>,
    keys: Vec<u128>,
    counts: Vec<u64>,
    shown: String,
}

impl NewLists {
    fn create(built: &std::path::Path) -> Result<NewLists> {
        let shown = built.display().to_string();
        let open = |name| {
            std::fs::File::create(built.join(name))
                .map(|f| std::io::BufWriter::with_capacity(8 << 20, f))
                .map_err(|e| Error::output(&shown, e))
        };
        Ok(NewLists {
            vectors: open(VECTORS)?,
            codes: open(CODES)?,
            rows: Vec::new(),
            keys: Vec::new(),
            counts: Vec::new(),
            shown: shown.clone(),
        })
    }

    /// Writes list `list`: its kept entries (runs of them at once), then
    /// its fresh rows.
    fn list(
        &mut self,
        p: &Placed<'_>,
        old: &OldChunk<'_>,
        list: usize,
        fresh: Option<&Vec<usize>>,
    ) -> Result<()> {
        let dim = p.old.space().width();
        let io = |e: std::io::Error| Error::output(&self.shown, e);
        let before = self.rows.len();
        let (mut e, b) = (p.offsets[list], p.offsets[list + 1]);
        while e < b {
            if p.new_row[e as usize] == u32::MAX {
                e += 1;
                continue;
            }
            let run = e;
            while e < b && p.new_row[e as usize] != u32::MAX {
                self.rows.push(p.new_row[e as usize]);
                self.keys.push(p.old_keys[e as usize]);
                e += 1;
            }
            let (x, y) = (
                (run - old.first) as usize * dim,
                (e - old.first) as usize * dim,
            );
            self.vectors
                .write_all(bytemuck::cast_slice(&old.vectors[x..y]))
                .map_err(io)?;
            self.codes.write_all(&old.codes[x..y]).map_err(io)?;
        }
        let mut code = Vec::with_capacity(dim);
        for &i in fresh.into_iter().flatten() {
            let row = &p.fresh.x[i * dim..(i + 1) * dim];
            self.vectors
                .write_all(bytemuck::cast_slice(row))
                .map_err(io)?;
            code.clear();
            p.sq.encode(row, &mut code);
            self.codes.write_all(&code).map_err(io)?;
            self.rows.push(p.fresh.rows[i]);
            self.keys.push(p.fresh.keys[i]);
        }
        self.counts.push((self.rows.len() - before) as u64);
        Ok(())
    }

    /// Writes the positions and keys, and syncs the files.
    fn finish(&mut self, built: &std::path::Path) -> Result<()> {
        let io = |e: std::io::Error| Error::output(&self.shown, e);
        for w in [&mut self.vectors, &mut self.codes] {
            w.flush().map_err(io)?;
            w.get_ref().sync_all().map_err(io)?;
        }
        let rows: &[u8] = bytemuck::cast_slice(&self.rows);
        std::fs::write(built.join(ROWS), rows).map_err(io)?;
        std::fs::write(
            built.join(KEYS),
            bytemuck::cast_slice::<u128, u8>(&self.keys),
        )
        .map_err(io)
    }
}

/// A file of the old index: read in place where it is on this disk, by
/// ranged requests elsewhere.
struct OldFile {
    local: Option<std::fs::File>,
    loc: crate::store::Location,
    /// Four-byte words, so that the bytes read cast to floats.
    buf: Vec<u32>,
}

impl OldFile {
    fn open(stores: &Stores, dir: &str, name: &str) -> Result<OldFile> {
        let loc = stores.resolve(&files::child(dir, name))?;
        let local = match &loc.local {
            Some(path) => {
                Some(std::fs::File::open(path).map_err(|e| Error::input(&loc.display, e))?)
            }
            None => None,
        };
        Ok(OldFile {
            local,
            loc,
            buf: Vec::new(),
        })
    }

    /// The bytes `from..to` of the file.
    async fn read(&mut self, from: u64, to: u64) -> Result<&[u8]> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::input(&self.loc.display, format!("a file of the index: {e}"))
        };
        let len = (to - from) as usize;
        self.buf.resize(len.div_ceil(4), 0);
        let into = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut self.buf)[..len];
        match &self.local {
            Some(f) => {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(into, from).map_err(|e| bad(&e))?;
            }
            None => {
                let got = self
                    .loc
                    .store
                    .get_range(&self.loc.path, from..to)
                    .await
                    .map_err(|e| bad(&e))?;
                if got.len() != len {
                    return Err(bad(&"a corrupt index: shorter than index.json says"));
                }
                into.copy_from_slice(&got);
            }
        }
        Ok(&bytemuck::cast_slice::<u32, u8>(&self.buf)[..len])
    }
}
