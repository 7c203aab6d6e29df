//! The fixed value storage of one map: a zeroed, 8-byte-aligned block of bytes allocated when
//! the map is created and never moved or resized.
//!
//! Filters hold raw addresses into an arena (a looked-up value, a reserved ring-buffer
//! record) and read and write them with plain loads and stores, from several workers at once,
//! while the controller reads and writes the same bytes. That is the kernel's model for map
//! values too: races on value bytes are the program's business (it uses atomics when it
//! cares), and every byte pattern is a valid value, so a race can tear a value but never
//! break the host. Because the block never moves, "is this address inside one of the
//! program's arenas" is a complete run-time check for map memory.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub struct Arena {
    /// `u64` cells give the 8-byte alignment BPF programs assume for map values.
    cells: Box<[UnsafeCell<u64>]>,
    len: usize,
}

// SAFETY: the arena is shared memory by design (see the module comment): every access goes
// through raw pointers to bytes with no invalid representation, never through Rust references
// that claim exclusivity.
unsafe impl Sync for Arena {}
// SAFETY: as above; the box owns plain bytes.
unsafe impl Send for Arena {}

impl std::fmt::Debug for Arena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arena({} bytes at {:#x})", self.len, self.base())
    }
}

impl Arena {
    /// A zeroed arena of `len` bytes (rounded up to 8 internally).
    pub fn new(len: usize) -> Arena {
        let cells = (0..len.div_ceil(8)).map(|_| UnsafeCell::new(0)).collect();
        Arena { cells, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Address of byte 0, as programs see it.
    pub fn base(&self) -> u64 {
        self.ptr() as u64
    }

    fn ptr(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.cells.as_ptr()).cast::<u8>()
    }

    /// Whether `[addr, addr + size)` lies inside the arena.
    #[inline(always)]
    pub fn contains(&self, addr: u64, size: usize) -> bool {
        addr.checked_sub(self.base()).is_some_and(|off| off <= self.len as u64 && size as u64 <= self.len as u64 - off)
    }

    /// Address of byte `off` (which the caller keeps in range).
    pub fn addr(&self, off: usize) -> u64 {
        self.base() + off as u64
    }

    /// Copies `out.len()` bytes from offset `off` out. Out-of-range requests copy nothing.
    pub fn read(&self, off: usize, out: &mut [u8]) {
        if off.checked_add(out.len()).is_some_and(|end| end <= self.len) {
            // SAFETY: the range is inside the allocation (checked above); the bytes may be
            // written concurrently by a filter, which can only tear the copy (module comment).
            unsafe { std::ptr::copy_nonoverlapping(self.ptr().add(off), out.as_mut_ptr(), out.len()) }
        }
    }

    /// Copies `data` in at offset `off`. Out-of-range requests write nothing.
    pub fn write(&self, off: usize, data: &[u8]) {
        if off.checked_add(data.len()).is_some_and(|end| end <= self.len) {
            // SAFETY: in range (checked above); no Rust reference to these bytes exists.
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr().add(off), data.len()) }
        }
    }

    /// Zeroes `len` bytes at `off`.
    pub fn zero(&self, off: usize, len: usize) {
        if off.checked_add(len).is_some_and(|end| end <= self.len) {
            // SAFETY: in range (checked above).
            unsafe { std::ptr::write_bytes(self.ptr().add(off), 0, len) }
        }
    }

    /// The 32-bit atomic at `off` (ring-buffer record headers), if it is aligned and in range.
    pub fn atomic_u32(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: aligned (the base is 8-aligned and `off` a multiple of 4), in range, and
        // the arena outlives the returned reference; other accesses to these bytes are
        // atomics or racy byte copies, which the module comment accepts.
        Some(unsafe { AtomicU32::from_ptr(self.ptr().add(off).cast()) })
    }

    /// The 64-bit atomic at `off`, if aligned and in range.
    pub fn atomic_u64(&self, off: usize) -> Option<&AtomicU64> {
        if !off.is_multiple_of(8) || off.checked_add(8).is_none_or(|end| end > self.len) {
            return None;
        }
        // SAFETY: as in `atomic_u32`, with 8-byte alignment.
        Some(unsafe { AtomicU64::from_ptr(self.ptr().add(off).cast()) })
    }

    /// Adds `v` to the little-endian u64 at `off` (controller-side counters in tests).
    pub fn fetch_add_u64(&self, off: usize, v: u64) -> Option<u64> {
        self.atomic_u64(off).map(|a| a.fetch_add(v, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_is_exact_at_both_ends() {
        let a = Arena::new(16);
        let b = a.base();
        assert!(b.is_multiple_of(8));
        assert!(a.contains(b, 16) && a.contains(b + 8, 8) && a.contains(b + 16, 0));
        assert!(!a.contains(b + 9, 8) && !a.contains(b - 1, 1) && !a.contains(u64::MAX, 2));
    }

    #[test]
    fn read_write_and_atomics_share_bytes() {
        let a = Arena::new(24);
        a.write(8, &7u64.to_le_bytes());
        assert_eq!(a.fetch_add_u64(8, 3), Some(7));
        let mut out = [0u8; 8];
        a.read(8, &mut out);
        assert_eq!(u64::from_le_bytes(out), 10);
        assert!(a.atomic_u64(4).is_none() && a.atomic_u64(24).is_none());
        a.zero(8, 8);
        a.read(8, &mut out);
        assert_eq!(out, [0; 8]);
    }
}
