//! Hash storage (hash, per-CPU hash, LRU hash): `max_entries` preallocated slots whose values
//! live in one arena, indexed by chained buckets. The index (buckets, chains, keys, free list,
//! LRU order) sits behind a mutex held only for the search itself; values are read and written
//! through their fixed addresses with no lock, as in the kernel's preallocated hash maps. As
//! there, a deleted slot may be reused while a filter still holds its address.

use std::sync::{Mutex, PoisonError};

use super::{Arena, EXIST, MapError, NOEXIST};

const NONE: u32 = u32::MAX;

pub struct Hash {
    key_size: usize,
    value_size: usize,
    stride: usize,
    copies: usize,
    lru: bool,
    values: Arena,
    index: Mutex<Index>,
}

struct Index {
    buckets: Box<[u32]>,
    /// Per slot: next slot in its bucket chain, or in the free list.
    next: Box<[u32]>,
    keys: Box<[u8]>,
    used: Box<[bool]>,
    free: u32,
    /// LRU order (most recent first), for LRU maps.
    newer: Box<[u32]>,
    older: Box<[u32]>,
    head: u32,
    tail: u32,
}

/// FNV-1a: keys are short and the table is private, so a simple hash is enough.
#[inline(always)]
fn hash(key: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in key {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ (h >> 29)
}

impl Index {
    fn key(&self, slot: u32, ks: usize) -> &[u8] {
        &self.keys[slot as usize * ks..(slot as usize + 1) * ks]
    }

    fn bucket(&self, key: &[u8]) -> usize {
        (hash(key) as usize) & (self.buckets.len() - 1)
    }

    fn find(&self, key: &[u8]) -> Option<u32> {
        let mut s = self.buckets[self.bucket(key)];
        while s != NONE {
            if self.key(s, key.len()) == key {
                return Some(s);
            }
            s = self.next[s as usize];
        }
        None
    }

    fn unlink_lru(&mut self, s: u32) {
        let (n, o) = (self.newer[s as usize], self.older[s as usize]);
        if n == NONE { self.head = o } else { self.older[n as usize] = o }
        if o == NONE { self.tail = n } else { self.newer[o as usize] = n }
        self.newer[s as usize] = NONE;
        self.older[s as usize] = NONE;
    }

    fn push_lru(&mut self, s: u32) {
        self.older[s as usize] = self.head;
        self.newer[s as usize] = NONE;
        if self.head != NONE {
            self.newer[self.head as usize] = s;
        }
        self.head = s;
        if self.tail == NONE {
            self.tail = s;
        }
    }

    fn touch(&mut self, s: u32) {
        if self.head != s {
            self.unlink_lru(s);
            self.push_lru(s);
        }
    }

    /// Removes `s` from its bucket chain and returns it to the free list.
    fn remove(&mut self, s: u32, ks: usize, lru: bool) {
        let b = self.bucket(self.key(s, ks));
        let mut at = self.buckets[b];
        if at == s {
            self.buckets[b] = self.next[s as usize];
        } else {
            while at != NONE {
                let n = self.next[at as usize];
                if n == s {
                    self.next[at as usize] = self.next[s as usize];
                    break;
                }
                at = n;
            }
        }
        if lru {
            self.unlink_lru(s);
        }
        self.used[s as usize] = false;
        self.next[s as usize] = self.free;
        self.free = s;
    }
}

impl Hash {
    pub fn new(key_size: u32, value_size: u32, max_entries: u32, copies: usize, lru: bool) -> Hash {
        let cap = max_entries as usize;
        let stride = (value_size as usize).next_multiple_of(8);
        let mut next: Box<[u32]> = (1..=cap as u32).collect();
        if let Some(last) = next.last_mut() {
            *last = NONE;
        }
        let index = Index {
            buckets: vec![NONE; cap.next_power_of_two()].into(),
            next,
            keys: vec![0; cap * key_size as usize].into(),
            used: vec![false; cap].into(),
            free: 0,
            newer: vec![NONE; if lru { cap } else { 0 }].into(),
            older: vec![NONE; if lru { cap } else { 0 }].into(),
            head: NONE,
            tail: NONE,
        };
        Hash {
            key_size: key_size as usize,
            value_size: value_size as usize,
            stride,
            copies,
            lru,
            values: Arena::new(cap * stride * copies),
            index: Mutex::new(index),
        }
    }

    pub fn values(&self) -> &Arena {
        &self.values
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        // The index is consistent after every operation (nothing panics midway), so a
        // poisoned lock is still usable.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn value_off(&self, slot: u32, copy: usize) -> usize {
        (slot as usize * self.copies + copy) * self.stride
    }

    fn addr(&self, slot: u32, copy: usize) -> Option<u64> {
        let copy = if self.copies == 1 { 0 } else { copy };
        (copy < self.copies).then(|| self.values.addr(self.value_off(slot, copy)))
    }

    /// A filter's lookup: counts as use for LRU order.
    pub fn lookup_addr(&self, key: &[u8], copy: usize) -> Option<u64> {
        if key.len() != self.key_size {
            return None;
        }
        let mut ix = self.lock();
        let s = ix.find(key)?;
        if self.lru {
            ix.touch(s);
        }
        drop(ix);
        self.addr(s, copy)
    }

    /// A lookup that leaves LRU order alone (controller reads).
    pub fn peek_addr(&self, key: &[u8], copy: usize) -> Option<u64> {
        let s = self.lock().find(key)?;
        self.addr(s, copy)
    }

    pub fn update(&self, key: &[u8], value: &[u8], flags: u64, slot: Option<usize>) -> Result<(), MapError> {
        // A slot the map has no copy for changes nothing, not even a new key.
        let slot = slot.map(|c| if self.copies == 1 { 0 } else { c });
        if let Some(c) = slot.filter(|&c| c >= self.copies) {
            return Err(MapError::Index { index: c as u32, max: self.copies as u32 });
        }
        let mut ix = self.lock();
        let s = match ix.find(key) {
            Some(s) => {
                if flags == NOEXIST {
                    return Err(MapError::Exists);
                }
                if self.lru {
                    ix.touch(s);
                }
                s
            }
            None => {
                if flags == EXIST {
                    return Err(MapError::NoEntry);
                }
                if ix.free == NONE {
                    if !self.lru || ix.tail == NONE {
                        return Err(MapError::Full);
                    }
                    let victim = ix.tail;
                    ix.remove(victim, self.key_size, true);
                }
                let s = ix.free;
                ix.free = ix.next[s as usize];
                let b = ix.bucket(key);
                ix.next[s as usize] = ix.buckets[b];
                ix.buckets[b] = s;
                ix.used[s as usize] = true;
                let ks = self.key_size;
                ix.keys[s as usize * ks..(s as usize + 1) * ks].copy_from_slice(key);
                if self.lru {
                    ix.push_lru(s);
                }
                self.values.zero(self.value_off(s, 0), self.stride * self.copies);
                s
            }
        };
        match slot {
            Some(c) => self.values.write(self.value_off(s, c), value),
            None => {
                for c in 0..self.copies {
                    self.values.write(self.value_off(s, c), super::copy_of(value, c, self.value_size, self.stride));
                }
            }
        }
        Ok(())
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let mut ix = self.lock();
        let s = ix.find(key).ok_or(MapError::NoEntry)?;
        ix.remove(s, self.key_size, self.lru);
        Ok(())
    }

    pub fn keys(&self) -> Vec<Vec<u8>> {
        let ix = self.lock();
        (0..ix.used.len() as u32).filter(|&s| ix.used[s as usize]).map(|s| ix.key(s, self.key_size).to_vec()).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().used.iter().filter(|u| **u).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: u32) -> [u8; 4] {
        v.to_le_bytes()
    }

    #[test]
    fn insert_find_delete_and_reuse() {
        let h = Hash::new(4, 8, 3, 1, false);
        for i in 0..3 {
            h.update(&k(i), &(i as u64 * 10).to_le_bytes(), 0, Some(0)).unwrap();
        }
        assert_eq!(h.update(&k(9), &[0; 8], 0, Some(0)), Err(MapError::Full));
        assert_eq!(h.update(&k(1), &[0; 8], NOEXIST, Some(0)), Err(MapError::Exists));
        assert_eq!(h.update(&k(7), &[0; 8], EXIST, Some(0)), Err(MapError::NoEntry));
        let a = h.lookup_addr(&k(2), 0).unwrap();
        let mut v = [0; 8];
        h.values().read((a - h.values().base()) as usize, &mut v);
        assert_eq!(u64::from_le_bytes(v), 20);
        h.delete(&k(1)).unwrap();
        assert_eq!(h.delete(&k(1)), Err(MapError::NoEntry));
        assert!(h.lookup_addr(&k(1), 0).is_none());
        h.update(&k(9), &[1; 8], 0, Some(0)).unwrap();
        let mut keys = h.keys();
        keys.sort();
        assert_eq!(keys, vec![k(0).to_vec(), k(2).to_vec(), k(9).to_vec()]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let h = Hash::new(4, 4, 2, 1, true);
        h.update(&k(1), &[1; 4], 0, Some(0)).unwrap();
        h.update(&k(2), &[2; 4], 0, Some(0)).unwrap();
        // Using 1 makes 2 the oldest.
        h.lookup_addr(&k(1), 0).unwrap();
        h.update(&k(3), &[3; 4], 0, Some(0)).unwrap();
        assert!(h.peek_addr(&k(2), 0).is_none());
        assert!(h.peek_addr(&k(1), 0).is_some() && h.peek_addr(&k(3), 0).is_some());
        h.update(&k(4), &[4; 4], 0, Some(0)).unwrap();
        assert!(h.peek_addr(&k(1), 0).is_none());
        h.delete(&k(3)).unwrap();
        h.update(&k(5), &[5; 4], 0, Some(0)).unwrap();
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn many_keys_survive_collisions() {
        let h = Hash::new(4, 4, 500, 1, false);
        for i in 0..500 {
            h.update(&k(i * 7919), &i.to_le_bytes(), 0, Some(0)).unwrap();
        }
        for i in (0..500).step_by(3) {
            h.delete(&k(i * 7919)).unwrap();
        }
        for i in 0..500 {
            assert_eq!(h.peek_addr(&k(i * 7919), 0).is_some(), i % 3 != 0, "key {i}");
        }
    }
}
