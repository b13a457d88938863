//! Each entry's key: what its vector was made from, so that an update can
//! tell the rows of a new table version that an index already holds.
//!
//! A table written by embedflow's Delta output has a `content_hash` column
//! (SHA-256 of the text embedded and the columns copied) and, chunked, a
//! `chunk_index`; within one output fingerprint (same model, prompt,
//! chunking) the same hash and chunk give the same vector. The key is 128
//! bits of both; 0 means "no key" (a table without those columns) and
//! never matches. The fingerprint of the table version (its Delta
//! property) says the vectors were made the same way.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int32Type, Schema};

use crate::sink::{CHUNK_INDEX, CONTENT_HASH};
use crate::source::Input;
use crate::store::Stores;

/// The output fingerprint of the Delta version `input` reads.
pub(super) async fn table_fingerprint(stores: &Stores, input: &Input) -> Option<String> {
    let table = input.table.as_ref()?;
    let target = crate::delta::DeltaTarget::resolve_input(stores, &table.path).ok()?;
    let state = target.state(Some(table.version)).await.ok()??;
    state.properties().get(crate::delta::FINGERPRINT).cloned()
}

/// A row without a key.
pub const NO_KEY: u128 = 0;

/// The columns an index's keys are made of, when the table has them.
pub fn key_columns(schema: &Schema) -> Option<Vec<String>> {
    let hash = schema.field_with_name(CONTENT_HASH).ok()?;
    if !matches!(hash.data_type(), DataType::Binary | DataType::LargeBinary) {
        return None;
    }
    let mut cols = vec![CONTENT_HASH.to_string()];
    if let Ok(f) = schema.field_with_name(CHUNK_INDEX)
        && f.data_type() == &DataType::Int32
    {
        cols.push(CHUNK_INDEX.to_string());
    }
    Some(cols)
}

/// The keys of a batch's rows from its key columns (in
/// [`key_columns`]' order).
pub fn batch_keys(columns: &[arrow::array::ArrayRef]) -> Vec<u128> {
    let Some(hash) = columns.first() else {
        return Vec::new();
    };
    let hash = arrow::compute::cast(hash, &DataType::Binary)
        .unwrap_or_else(|_| arrow::array::new_null_array(&DataType::Binary, hash.len()));
    let hash = hash.as_binary::<i32>();
    let chunk = columns.get(1).map(|c| c.as_primitive::<Int32Type>());
    (0..hash.len())
        .map(|i| {
            if hash.is_null(i) || hash.value(i).len() < 16 {
                return NO_KEY;
            }
            let mut b = [0u8; 16];
            b.copy_from_slice(&hash.value(i)[..16]);
            let c = chunk.map_or(0, |c| c.value(i) as u32);
            key_of(u128::from_le_bytes(b), c)
        })
        .collect()
}

/// One key of a content hash's first 16 bytes and a chunk number.
fn key_of(hash: u128, chunk: u32) -> u128 {
    // An odd multiplier spreads chunk numbers over the whole range; a
    // collision needs two SHA-256 prefixes 128 bits apart by a multiple.
    const SPREAD: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
    match hash.wrapping_add(u128::from(chunk).wrapping_mul(SPREAD)) {
        NO_KEY => 1,
        k => k,
    }
}

/// Old entries by key, each taken at most once.
pub struct Matcher {
    /// (key, entry), sorted.
    sorted: Vec<(u128, u32)>,
    taken: Vec<bool>,
}

impl Matcher {
    pub fn new(keys: &[u128]) -> Matcher {
        let mut sorted: Vec<(u128, u32)> = keys
            .iter()
            .enumerate()
            .filter(|(_, k)| **k != NO_KEY)
            .map(|(e, &k)| (k, e as u32))
            .collect();
        sorted.sort_unstable();
        Matcher {
            sorted,
            taken: vec![false; keys.len()],
        }
    }

    /// An entry with `key` not taken yet (rows of equal keys have equal
    /// vectors, so any one of them does).
    pub fn take(&mut self, key: u128) -> Option<u32> {
        if key == NO_KEY {
            return None;
        }
        let from = self.sorted.partition_point(|e| e.0 < key);
        for &(k, e) in &self.sorted[from..] {
            if k != key {
                break;
            }
            if !self.taken[e as usize] {
                self.taken[e as usize] = true;
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_are_taken_once_each_and_no_key_never() {
        let mut m = Matcher::new(&[5, NO_KEY, 5, 9]);
        assert_eq!(m.take(5), Some(0));
        assert_eq!(m.take(5), Some(2));
        assert_eq!(m.take(5), None);
        assert_eq!(m.take(NO_KEY), None);
        assert_eq!(m.take(9), Some(3));
        assert_eq!(m.take(7), None);
    }

    #[test]
    fn chunks_of_one_text_have_distinct_keys() {
        let h = 0x1234_5678_u128;
        let ks: std::collections::HashSet<u128> = (0..1000).map(|c| key_of(h, c)).collect();
        assert_eq!(ks.len(), 1000);
        assert!(!ks.contains(&NO_KEY));
    }
}
