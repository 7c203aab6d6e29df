//! Per-stage counters: one block of slots per worker, written only by that worker, summed on
//! demand by whoever asks.
//!
//! A slot is updated with a Relaxed load and a Relaxed store (no read-modify-write), which
//! compiles to a plain `add` to memory: correct because exactly one thread writes a block, and
//! readers only need each value to be some value it had. Each slot fills a cache line, so
//! neither two workers nor a reader and a busy stage's neighbour fight over a line. The fused
//! native code (`bpf::jit::fuse`) updates the same slots at the offsets exported here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Byte offsets of a stage slot's fields, for code that updates slots without Rust (the fused
/// JIT). Each field is a 64-bit word: packets the stage matched (for `verdict` stages: decided
/// anything but PASS) and their bytes, runs that faulted or returned an unknown verdict (the
/// packet was dropped), matched packets copied to the capture ring.
pub mod offsets {
    pub const PACKETS: i32 = 0;
    pub const BYTES: i32 = 8;
    pub const ABORTED: i32 = 16;
    pub const SAMPLED: i32 = 24;
    /// Size of one slot, the stride between stages: a cache line.
    pub const SLOT: i32 = 64;
}

/// Words per slot.
const WORDS: usize = offsets::SLOT as usize / 8;
const _: () = assert!(offsets::SAMPLED < offsets::SLOT);

/// Single-writer increment: see the module docs.
#[inline(always)]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Counters of one stage in one worker: a view of its slot's words.
#[derive(Debug, Clone, Copy)]
pub struct StageSlot<'a> {
    words: &'a [AtomicU64],
}

impl StageSlot<'_> {
    #[inline(always)]
    fn word(&self, off: i32) -> &AtomicU64 {
        &self.words[off as usize / 8]
    }

    #[inline(always)]
    pub fn hit(&self, len: usize) {
        add(self.word(offsets::PACKETS), 1);
        add(self.word(offsets::BYTES), len as u64);
    }

    #[inline(always)]
    pub fn abort(&self) {
        add(self.word(offsets::ABORTED), 1);
    }

    #[inline(always)]
    pub fn sampled(&self) {
        add(self.word(offsets::SAMPLED), 1);
    }

    fn totals(&self) -> StageTotals {
        StageTotals {
            packets: self.word(offsets::PACKETS).load(Relaxed),
            bytes: self.word(offsets::BYTES).load(Relaxed),
            aborted: self.word(offsets::ABORTED).load(Relaxed),
            sampled: self.word(offsets::SAMPLED).load(Relaxed),
        }
    }
}

/// Plain numbers: one stage summed over workers (and over pipeline versions, see `runtime`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StageTotals {
    pub packets: u64,
    pub bytes: u64,
    pub aborted: u64,
    pub sampled: u64,
}

impl StageTotals {
    pub fn add(&self, o: &StageTotals) -> StageTotals {
        StageTotals {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
            aborted: self.aborted + o.aborted,
            sampled: self.sampled + o.sampled,
        }
    }

    /// What happened since `earlier` (a reset baseline); saturates rather than wrapping.
    pub fn since(&self, earlier: &StageTotals) -> StageTotals {
        StageTotals {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            aborted: self.aborted.saturating_sub(earlier.aborted),
            sampled: self.sampled.saturating_sub(earlier.sampled),
        }
    }
}

/// The counters of one compiled pipeline: per worker a block of `slots` slots (its stages,
/// then the default action's slot last), all in one allocation of words. Blocks and slots start
/// on a cache line: the allocation has a line's worth of spare words, and `base` skips to the
/// first line boundary (only 8-byte alignment is promised by the allocator).
#[derive(Debug)]
pub struct Counters {
    words: Box<[AtomicU64]>,
    base: usize,
    workers: usize,
    slots: usize,
}

impl Counters {
    pub fn new(workers: usize, slots: usize) -> Counters {
        let words: Box<[AtomicU64]> = (0..workers * slots * WORDS + WORDS - 1).map(|_| AtomicU64::new(0)).collect();
        let misalign = words.as_ptr() as usize % offsets::SLOT as usize;
        let base = (offsets::SLOT as usize - misalign) % offsets::SLOT as usize / 8;
        Counters { words, base, workers, slots }
    }

    /// Worker `w`'s block as words, for the fused code. Only that worker may write it.
    #[inline(always)]
    pub fn block(&self, w: usize) -> &[AtomicU64] {
        let start = self.base + w * self.slots * WORDS;
        &self.words[start..start + self.slots * WORDS]
    }

    /// Slot `i` of worker `w`'s block, if there is one.
    #[inline(always)]
    pub fn slot(&self, w: usize, i: usize) -> Option<StageSlot<'_>> {
        if w >= self.workers || i >= self.slots {
            return None;
        }
        let start = self.base + (w * self.slots + i) * WORDS;
        Some(StageSlot { words: &self.words[start..start + WORDS] })
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Slot `i` summed over every worker.
    pub fn totals(&self, i: usize) -> StageTotals {
        (0..self.workers).filter_map(|w| self.slot(w, i)).fold(StageTotals::default(), |t, s| t.add(&s.totals()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_slots_start_on_cache_lines() {
        for workers in 1..4 {
            let c = Counters::new(workers, 3);
            for w in 0..workers {
                let b = c.block(w);
                assert_eq!(b.as_ptr() as usize % 64, 0);
                assert_eq!(b.len(), 3 * WORDS);
            }
            assert!(c.slot(workers, 0).is_none() && c.slot(0, 3).is_none());
        }
        let c = Counters::new(2, 2);
        c.slot(1, 1).unwrap().sampled();
        assert_eq!(c.block(1)[WORDS + offsets::SAMPLED as usize / 8].load(Relaxed), 1);
    }

    #[test]
    fn totals_sum_workers() {
        let c = Counters::new(3, 2);
        c.slot(0, 1).unwrap().hit(60);
        c.slot(2, 1).unwrap().hit(100);
        c.slot(2, 1).unwrap().abort();
        c.slot(1, 0).unwrap().sampled();
        assert_eq!(c.totals(1), StageTotals { packets: 2, bytes: 160, aborted: 1, sampled: 0 });
        assert_eq!(c.totals(0).sampled, 1);
        assert_eq!(c.totals(5), StageTotals::default());
        let t = c.totals(1);
        assert_eq!(t.add(&t).since(&t), t);
        assert_eq!(StageTotals::default().since(&t), StageTotals::default());
    }
}
