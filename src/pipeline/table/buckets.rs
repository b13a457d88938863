//! The comparison of an incremental run, as a partitioned hash join: the
//! keys of both sides (id, content hash, position) are spilled to bucket
//! files by a hash of the id, and each bucket is joined in memory alone.
//! One id always lands in one bucket, so a bucket holds everything about
//! its ids: whether a source id repeats, whether the table holds it, with
//! which hash, and at which rows.
//!
//! Memory is one bucket's keys (about [`BUCKET_ROWS`] rows on each side,
//! whatever the table's size, up to [`MAX_BUCKETS`] buckets) plus one bit
//! per row for the two answers: which source rows to embed, which table
//! rows to copy.
//!
//! DataFusion did this before, and spilled, but its pool grew with the
//! table (a 1M-row comparison took 2.3× the memory of a 100k-row one), and
//! a smaller pool either failed its external sort or planned a hash join
//! that cannot spill.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Rows a bucket is sized for, on the larger side.
pub(crate) const BUCKET_ROWS: u64 = 131_072;
/// At most this many bucket files per side are open at once; past
/// `BUCKET_ROWS × MAX_BUCKETS` rows, buckets grow instead.
pub(crate) const MAX_BUCKETS: u64 = 512;
/// Write buffer per bucket file.
const SPILL_BUFFER: usize = 16 << 10;

/// How many buckets a comparison of `rows` (the larger side) needs.
pub(crate) fn buckets_for(rows: u64) -> usize {
    rows.div_ceil(BUCKET_ROWS).clamp(1, MAX_BUCKETS) as usize
}

/// A row: its file (an index in a listing) and its row within the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub file: u32,
    pub row: u64,
}

/// A set of rows, one bit per row of each file.
#[derive(Clone, Debug, Default)]
pub(crate) struct RowSet {
    files: Vec<Vec<u64>>,
}

impl RowSet {
    pub(crate) fn insert(&mut self, p: Pos) {
        let f = p.file as usize;
        if self.files.len() <= f {
            self.files.resize_with(f + 1, Vec::new);
        }
        let words = &mut self.files[f];
        let w = (p.row / 64) as usize;
        if words.len() <= w {
            words.resize(w + 1, 0);
        }
        words[w] |= 1u64 << (p.row % 64);
    }

    pub(crate) fn contains(&self, p: Pos) -> bool {
        self.files
            .get(p.file as usize)
            .and_then(|w| w.get((p.row / 64) as usize))
            .is_some_and(|w| w & (1u64 << (p.row % 64)) != 0)
    }

    /// Whether file `file` holds a row of the set.
    pub(crate) fn touches(&self, file: u32) -> bool {
        self.files
            .get(file as usize)
            .is_some_and(|w| w.iter().any(|&x| x != 0))
    }

    /// Which of rows `first..first + n` of `file` are in the set.
    pub(crate) fn mask(&self, file: u32, first: u64, n: usize) -> Vec<bool> {
        (first..first + n as u64)
            .map(|row| self.contains(Pos { file, row }))
            .collect()
    }
}

/// One side's keys, spilled to bucket files.
pub(crate) struct Spill {
    paths: Vec<PathBuf>,
    writers: Vec<BufWriter<File>>,
}

impl Spill {
    pub(crate) fn create(dir: &Path, side: &str, buckets: usize) -> Result<Spill> {
        let mut paths = Vec::with_capacity(buckets);
        let mut writers = Vec::with_capacity(buckets);
        for b in 0..buckets {
            let path = dir.join(format!("{side}-{b}.keys"));
            let file = File::create(&path).map_err(|e| spill_error(&path, e))?;
            writers.push(BufWriter::with_capacity(SPILL_BUFFER, file));
            paths.push(path);
        }
        Ok(Spill { paths, writers })
    }

    /// Appends a key. The hash is the content hash (at most 255 bytes).
    pub(crate) fn push(&mut self, id: Option<&[u8]>, hash: &[u8], at: Pos) -> Result<()> {
        let b = bucket_of(id, self.writers.len());
        let w = &mut self.writers[b];
        let hash_len = u8::try_from(hash.len())
            .map_err(|_| Error::internal("a content hash longer than 255 bytes"))?;
        let written = (|| {
            match id {
                Some(id) => {
                    let len = u32::try_from(id.len()).map_err(std::io::Error::other)?;
                    w.write_all(&[1])?;
                    w.write_all(&len.to_le_bytes())?;
                    w.write_all(id)?;
                }
                None => w.write_all(&[0])?,
            }
            w.write_all(&[hash_len])?;
            w.write_all(hash)?;
            w.write_all(&at.file.to_le_bytes())?;
            w.write_all(&at.row.to_le_bytes())
        })();
        written.map_err(|e| spill_error(&self.paths[b], e))
    }

    /// Flushes and closes the writers: the bucket files, in bucket order.
    pub(crate) fn finish(self) -> Result<Vec<PathBuf>> {
        for (w, p) in self.writers.into_iter().zip(&self.paths) {
            w.into_inner()
                .map_err(|e| spill_error(p, e.into_error()))?
                .sync_data()
                .ok();
        }
        Ok(self.paths)
    }
}

fn spill_error(path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!(
        "comparing the input with the table: cannot use the temporary file {}: {e}",
        path.display()
    ))
}

/// The bucket of an id: a hash with fixed keys, so both sides agree.
fn bucket_of(id: Option<&[u8]>, buckets: usize) -> usize {
    // `DefaultHasher::new()` hashes alike within a process.
    let mut h = std::hash::DefaultHasher::new();
    id.hash(&mut h);
    (h.finish() % buckets as u64) as usize
}

/// One key, read back.
struct Key {
    id: Option<Box<[u8]>>,
    hash: Box<[u8]>,
    at: Pos,
}

/// Reads one bucket file's keys.
struct Keys {
    r: BufReader<File>,
    path: PathBuf,
}

impl Keys {
    fn open(path: &Path) -> Result<Keys> {
        let f = File::open(path).map_err(|e| spill_error(path, e))?;
        Ok(Keys {
            r: BufReader::with_capacity(SPILL_BUFFER * 4, f),
            path: path.to_path_buf(),
        })
    }

    fn next_key(&mut self) -> Result<Option<Key>> {
        let mut flag = [0u8; 1];
        match self.r.read_exact(&mut flag) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(spill_error(&self.path, e)),
        }
        let r = &mut self.r;
        let key = (|| {
            let id = if flag[0] == 1 {
                let mut len = [0u8; 4];
                r.read_exact(&mut len)?;
                let mut id = vec![0u8; u32::from_le_bytes(len) as usize];
                r.read_exact(&mut id)?;
                Some(id.into_boxed_slice())
            } else {
                None
            };
            let mut hash_len = [0u8; 1];
            r.read_exact(&mut hash_len)?;
            let mut hash = vec![0u8; hash_len[0] as usize];
            r.read_exact(&mut hash)?;
            let mut file = [0u8; 4];
            r.read_exact(&mut file)?;
            let mut row = [0u8; 8];
            r.read_exact(&mut row)?;
            Ok::<_, std::io::Error>(Key {
                id,
                hash: hash.into_boxed_slice(),
                at: Pos {
                    file: u32::from_le_bytes(file),
                    row: u64::from_le_bytes(row),
                },
            })
        })();
        key.map(Some).map_err(|e| spill_error(&self.path, e))
    }
}

/// What the comparison found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub rows: u64,
    pub unchanged: u64,
    pub changed: u64,
    pub new: u64,
    /// (id, hash) pairs of the table whose id the source no longer holds.
    pub deleted: u64,
    /// Source rows to embed: new and changed.
    pub todo: RowSet,
    /// Table rows to copy: those of the unchanged source rows.
    pub keep: RowSet,
}

/// A source id found twice: the id and its two rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repeated {
    pub id: String,
    pub first: Pos,
    pub again: Pos,
}

/// Joins the buckets one by one (`new` and `old` in bucket order), calling
/// `between` before each so that a stop is seen.
pub(crate) fn join(
    new: &[PathBuf],
    old: &[PathBuf],
    mut between: impl FnMut() -> Result<()>,
) -> Result<std::result::Result<Outcome, Repeated>> {
    let mut out = Outcome::default();
    for (n, o) in new.iter().zip(old) {
        between()?;
        if let Err(r) = join_bucket(n, o, &mut out)? {
            return Ok(Err(r));
        }
    }
    Ok(Ok(out))
}

/// The table's hashes of one id (one, unless the table was written by a
/// full run over repeated ids), each with its rows.
type Hashes = Vec<(Box<[u8]>, Vec<Pos>)>;

fn join_bucket(
    new: &Path,
    old: &Path,
    out: &mut Outcome,
) -> Result<std::result::Result<(), Repeated>> {
    let mut table: HashMap<Option<Box<[u8]>>, Hashes> = HashMap::new();
    let mut keys = Keys::open(old)?;
    while let Some(k) = keys.next_key()? {
        let hashes = table.entry(k.id).or_default();
        match hashes.iter_mut().find(|(h, _)| *h == k.hash) {
            Some((_, rows)) => rows.push(k.at),
            None => hashes.push((k.hash, vec![k.at])),
        }
    }
    let mut seen: HashMap<Box<[u8]>, Pos> = HashMap::new();
    let mut keys = Keys::open(new)?;
    while let Some(k) = keys.next_key()? {
        out.rows += 1;
        let Some(id) = k.id else {
            // No id: never the same row as one of the table's.
            out.new += 1;
            out.todo.insert(k.at);
            continue;
        };
        match seen.entry(id.clone()) {
            Entry::Occupied(e) => {
                let (first, again) = if *e.get() <= k.at {
                    (*e.get(), k.at)
                } else {
                    (k.at, *e.get())
                };
                return Ok(Err(Repeated {
                    id: String::from_utf8_lossy(&id).into_owned(),
                    first,
                    again,
                }));
            }
            Entry::Vacant(e) => {
                e.insert(k.at);
            }
        }
        match table.get(&Some(id)) {
            Some(hashes) => match hashes.iter().find(|(h, _)| *h == k.hash) {
                Some((_, rows)) => {
                    out.unchanged += 1;
                    for &r in rows {
                        out.keep.insert(r);
                    }
                }
                None => {
                    out.changed += 1;
                    out.todo.insert(k.at);
                }
            },
            None => {
                out.new += 1;
                out.todo.insert(k.at);
            }
        }
    }
    out.deleted += table
        .iter()
        .filter(|(id, _)| id.as_ref().is_none_or(|id| !seen.contains_key(id)))
        .map(|(_, hashes)| hashes.len() as u64)
        .sum::<u64>();
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn at(file: u32, row: u64) -> Pos {
        Pos { file, row }
    }

    /// The comparison spelled out with whole-table maps, to check the
    /// buckets against.
    fn by_maps(new: &[(Option<&str>, u8, Pos)], old: &[(Option<&str>, u8, Pos)]) -> Outcome {
        let mut out = Outcome::default();
        let mut table: BTreeMap<Option<&str>, BTreeMap<u8, Vec<Pos>>> = BTreeMap::new();
        for &(id, h, p) in old {
            table.entry(id).or_default().entry(h).or_default().push(p);
        }
        let ids: BTreeSet<Option<&str>> = new.iter().map(|k| k.0).collect();
        for &(id, h, p) in new {
            out.rows += 1;
            match (id, table.get(&id)) {
                (Some(_), Some(hashes)) => match hashes.get(&h) {
                    Some(rows) => {
                        out.unchanged += 1;
                        rows.iter().for_each(|&r| out.keep.insert(r));
                    }
                    None => {
                        out.changed += 1;
                        out.todo.insert(p);
                    }
                },
                _ => {
                    out.new += 1;
                    out.todo.insert(p);
                }
            }
        }
        out.deleted = table
            .iter()
            .filter(|(id, _)| id.is_none() || !ids.contains(id))
            .map(|(_, h)| h.len() as u64)
            .sum();
        out
    }

    fn run(
        new: &[(Option<&str>, u8, Pos)],
        old: &[(Option<&str>, u8, Pos)],
        buckets: usize,
    ) -> std::result::Result<Outcome, Repeated> {
        let dir = tempfile::tempdir().unwrap();
        let spill = |side, keys: &[(Option<&str>, u8, Pos)]| {
            let mut s = Spill::create(dir.path(), side, buckets).unwrap();
            for &(id, h, p) in keys {
                s.push(id.map(str::as_bytes), &[h; 32], p).unwrap();
            }
            s.finish().unwrap()
        };
        let n = spill("new", new);
        let o = spill("old", old);
        join(&n, &o, || Ok(())).unwrap()
    }

    fn same(a: &Outcome, b: &Outcome, rows: u64) {
        assert_eq!(
            (a.rows, a.unchanged, a.changed, a.new, a.deleted),
            (b.rows, b.unchanged, b.changed, b.new, b.deleted)
        );
        for f in 0..3 {
            assert_eq!(
                a.todo.mask(f, 0, rows as usize),
                b.todo.mask(f, 0, rows as usize)
            );
            assert_eq!(
                a.keep.mask(f, 0, rows as usize),
                b.keep.mask(f, 0, rows as usize)
            );
        }
    }

    #[test]
    fn buckets_agree_with_whole_table_maps() {
        // Seeded: ids from a small range so that rows repeat in the table
        // (chunks), change hash, disappear and appear.
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % n
        };
        let names: Vec<String> = (0..400).map(|i| format!("doc-{i}")).collect();
        for round in 0..20 {
            let mut old = Vec::new();
            for (row, name) in names.iter().enumerate().take(300) {
                if next(10) == 0 {
                    continue;
                }
                let chunks = 1 + next(3);
                for c in 0..chunks {
                    let row = row as u64 * 3 + c;
                    old.push((Some(name.as_str()), 1, at((row % 2) as u32, row)));
                }
            }
            old.push((None, 1, at(2, 0)));
            let mut new = Vec::new();
            let mut ids: Vec<usize> = (0..names.len()).filter(|_| next(4) != 0).collect();
            ids.sort_unstable();
            for (row, &i) in ids.iter().enumerate() {
                let hash = if next(5) == 0 { 2 } else { 1 };
                new.push((Some(names[i].as_str()), hash, at(0, row as u64)));
            }
            new.push((None, 1, at(1, 0)));
            let want = by_maps(&new, &old);
            for buckets in [1, 2, 7, 64] {
                let got = run(&new, &old, buckets).unwrap();
                same(&got, &want, 1200);
                assert!(got.unchanged > 0 && got.changed > 0, "round {round}");
            }
        }
    }

    #[test]
    fn a_repeated_source_id_is_named_with_its_two_rows() {
        let new = [
            (Some("a"), 1, at(0, 0)),
            (Some("b"), 1, at(0, 1)),
            (Some("a"), 2, at(1, 5)),
        ];
        for buckets in [1, 3] {
            let r = run(&new, &[], buckets).unwrap_err();
            assert_eq!(
                r,
                Repeated {
                    id: "a".into(),
                    first: at(0, 0),
                    again: at(1, 5)
                }
            );
        }
    }

    #[test]
    fn row_sets_hold_their_rows_only() {
        let mut s = RowSet::default();
        for p in [at(0, 0), at(0, 63), at(0, 64), at(2, 1000), at(2, 1000)] {
            s.insert(p);
        }
        assert!(s.contains(at(0, 63)) && s.contains(at(0, 64)) && s.contains(at(2, 1000)));
        assert!(!s.contains(at(0, 1)) && !s.contains(at(1, 0)) && !s.contains(at(9, 9)));
        assert!(s.touches(0) && !s.touches(1) && s.touches(2) && !s.touches(3));
        assert_eq!(s.mask(0, 62, 4), [false, true, true, false]);
    }

    #[test]
    fn bucket_counts_grow_with_rows_and_stop_at_the_cap() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(BUCKET_ROWS), 1);
        assert_eq!(buckets_for(BUCKET_ROWS + 1), 2);
        assert_eq!(buckets_for(u64::MAX / 2), MAX_BUCKETS as usize);
    }
}
