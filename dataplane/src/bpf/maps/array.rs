//! Array storage (array, per-CPU array, device map, global data): `max_entries` values at
//! fixed places, found by arithmetic alone — no lock, no search.

use super::{Arena, EXIST, MapError, NOEXIST};

pub struct Array {
    values: Arena,
    len: u32,
    value_size: usize,
    /// Bytes from one copy of a value to the next (value size rounded up to 8).
    stride: usize,
    /// Copies per index (worker slots for per-CPU arrays, else 1).
    copies: usize,
}

/// The index a 4-byte array key holds.
#[inline(always)]
pub fn index(key: &[u8]) -> Option<u32> {
    key.try_into().ok().map(u32::from_le_bytes)
}

impl Array {
    pub fn new(len: u32, value_size: u32, copies: usize) -> Array {
        let stride = (value_size as usize).next_multiple_of(8);
        Array { values: Arena::new(len as usize * copies * stride), len, value_size: value_size as usize, stride, copies }
    }

    pub fn values(&self) -> &Arena {
        &self.values
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    fn offset(&self, index: u32, copy: usize) -> Option<usize> {
        (index < self.len && copy < self.copies).then(|| (index as usize * self.copies + copy) * self.stride)
    }

    #[inline(always)]
    pub fn addr(&self, index: u32, copy: usize) -> Option<u64> {
        let copy = if self.copies == 1 { 0 } else { copy };
        self.offset(index, copy).map(|o| self.values.addr(o))
    }

    /// Writes `value` at `key`: into copy `slot`, or (controller) every copy from `value`
    /// (one value for all, or one per copy, `stride` bytes apart).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64, slot: Option<usize>) -> Result<(), MapError> {
        let i = index(key).ok_or(MapError::KeySize { expected: 4, got: key.len() })?;
        if i >= self.len {
            return Err(MapError::Index { index: i, max: self.len });
        }
        // Every index always exists.
        if flags == NOEXIST {
            return Err(MapError::Exists);
        }
        debug_assert!(flags <= EXIST);
        match slot {
            Some(s) => {
                let s = if self.copies == 1 { 0 } else { s };
                let off = self.offset(i, s).ok_or(MapError::Index { index: i, max: self.len })?;
                self.values.write(off, value);
            }
            None => {
                for c in 0..self.copies {
                    if let Some(off) = self.offset(i, c) {
                        self.values.write(off, super::copy_of(value, c, self.value_size, self.stride));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_bounded_and_always_exist() {
        let a = Array::new(3, 4, 1);
        assert!(a.addr(2, 0).is_some() && a.addr(3, 0).is_none());
        assert_eq!(a.update(&3u32.to_le_bytes(), &[0; 4], 0, None), Err(MapError::Index { index: 3, max: 3 }));
        assert_eq!(a.update(&0u32.to_le_bytes(), &[0; 4], NOEXIST, None), Err(MapError::Exists));
        a.update(&1u32.to_le_bytes(), &[1, 2, 3, 4], EXIST, Some(0)).unwrap();
        let mut out = [0; 4];
        a.values().read(8, &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
    }
}
