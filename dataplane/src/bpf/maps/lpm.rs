//! LPM trie: longest-prefix-match lookups over keys `{ u32 prefixlen; u8 data[] }`, as the
//! kernel's `BPF_MAP_TYPE_LPM_TRIE` (prefix length in host order, data in network order).
//!
//! Entries are stored in a [`Hash`] under their key with the data masked to the prefix, and a
//! count per prefix length says which lengths exist; a lookup tries the lengths in use from the
//! longest down, masking the key into a stack buffer. That is at most `8 * data + 1` probes, no
//! allocation, and the values keep the fixed-arena guarantee of the hash storage.

use std::sync::{Mutex, PoisonError};

use super::hash::Hash;
use super::{Arena, LPM_DATA_MAX, MapError};

pub struct Lpm {
    table: Hash,
    data_len: usize,
    /// Entries per prefix length `0..=8 * data_len`.
    counts: Mutex<Box<[u32]>>,
}

/// Key buffer large enough for any LPM key.
const KEY_MAX: usize = 4 + LPM_DATA_MAX as usize;

impl Lpm {
    pub fn new(key_size: u32, value_size: u32, max_entries: u32) -> Lpm {
        let data_len = key_size as usize - 4;
        Lpm {
            table: Hash::new(key_size, value_size, max_entries, 1, false),
            data_len,
            counts: Mutex::new(vec![0; data_len * 8 + 1].into()),
        }
    }

    pub fn values(&self) -> &Arena {
        self.table.values()
    }

    /// `key` with its prefix length replaced by `plen` and its data masked to it, in `buf`.
    fn masked<'b>(&self, key: &[u8], plen: usize, buf: &'b mut [u8; KEY_MAX]) -> &'b [u8] {
        let out = &mut buf[..4 + self.data_len];
        out[..4].copy_from_slice(&(plen as u32).to_ne_bytes());
        for (i, (o, &b)) in out[4..].iter_mut().zip(&key[4..]).enumerate() {
            let keep = plen.saturating_sub(i * 8).min(8);
            *o = if keep == 0 { 0 } else { b & (0xffu8 << (8 - keep)) };
        }
        out
    }

    fn prefix_len(&self, key: &[u8]) -> Option<usize> {
        if key.len() != 4 + self.data_len {
            return None;
        }
        let plen = u32::from_ne_bytes(key[..4].try_into().ok()?) as usize;
        (plen <= self.data_len * 8).then_some(plen)
    }

    /// The value of the longest prefix that matches `key`'s first `prefixlen` bits.
    pub fn lookup_addr(&self, key: &[u8]) -> Option<u64> {
        let max = self.prefix_len(key)?;
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = [0u8; KEY_MAX];
        for plen in (0..=max).rev() {
            if counts[plen] == 0 {
                continue;
            }
            if let Some(a) = self.table.peek_addr(self.masked(key, plen, &mut buf), 0) {
                return Some(a);
            }
        }
        None
    }

    /// The value stored under exactly `key` (controller reads).
    pub fn exact_addr(&self, key: &[u8]) -> Option<u64> {
        let plen = self.prefix_len(key)?;
        let mut buf = [0u8; KEY_MAX];
        self.table.peek_addr(self.masked(key, plen, &mut buf), 0)
    }

    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        let plen = self.prefix_len(key).ok_or(MapError::KeySize { expected: 4 + self.data_len as u32, got: key.len() })?;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = [0u8; KEY_MAX];
        let k = self.masked(key, plen, &mut buf);
        let existed = self.table.peek_addr(k, 0).is_some();
        self.table.update(k, value, flags, Some(0))?;
        if !existed {
            counts[plen] += 1;
        }
        Ok(())
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let plen = self.prefix_len(key).ok_or(MapError::NoEntry)?;
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut buf = [0u8; KEY_MAX];
        self.table.delete(self.masked(key, plen, &mut buf))?;
        counts[plen] -= 1;
        Ok(())
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.table.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(plen: u32, ip: [u8; 4]) -> Vec<u8> {
        [plen.to_ne_bytes(), ip].concat()
    }

    fn value_at(l: &Lpm, addr: u64) -> u32 {
        let mut v = [0; 4];
        l.values().read((addr - l.values().base()) as usize, &mut v);
        u32::from_le_bytes(v)
    }

    #[test]
    fn longest_prefix_wins() {
        let l = Lpm::new(8, 4, 8);
        l.update(&key(8, [10, 0, 0, 0]), &1u32.to_le_bytes(), 0).unwrap();
        l.update(&key(24, [10, 1, 2, 99]), &2u32.to_le_bytes(), 0).unwrap();
        l.update(&key(0, [0; 4]), &3u32.to_le_bytes(), 0).unwrap();
        let find = |ip| l.lookup_addr(&key(32, ip)).map(|a| value_at(&l, a));
        assert_eq!(find([10, 1, 2, 3]), Some(2));
        assert_eq!(find([10, 1, 3, 3]), Some(1));
        assert_eq!(find([11, 0, 0, 1]), Some(3));
        // A lookup's own prefix length caps the match.
        assert_eq!(l.lookup_addr(&key(16, [10, 1, 2, 3])).map(|a| value_at(&l, a)), Some(1));
        l.delete(&key(0, [1, 2, 3, 4])).unwrap();
        assert_eq!(find([11, 0, 0, 1]), None);
        assert!(l.update(&key(33, [0; 4]), &[0; 4], 0).is_err());
        // Odd prefix lengths mask inside a byte.
        l.update(&key(12, [192, 0xa8, 0, 0]), &4u32.to_le_bytes(), 0).unwrap();
        assert_eq!(find([192, 0xaf, 1, 1]), Some(4));
        assert_eq!(find([192, 0x98, 1, 1]), None);
    }
}
