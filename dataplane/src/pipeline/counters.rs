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

/// Counters of one stage in one worker.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct StageSlot {
    /// Packets the stage matched (for `verdict` stages: decided anything but PASS).
    pub packets: AtomicU64,
    /// Bytes of those packets.
    pub bytes: AtomicU64,
    /// Runs that faulted or returned an unknown verdict (the packet was dropped).
    pub aborted: AtomicU64,
    /// Matched packets copied to the capture ring.
    pub sampled: AtomicU64,
}

/// Byte offsets of the fields, for code that updates slots without Rust (the fused JIT).
pub mod offsets {
    pub const PACKETS: i32 = 0;
    pub const BYTES: i32 = 8;
    pub const ABORTED: i32 = 16;
    /// Size of one slot: the stride between stages.
    pub const SLOT: i32 = 64;
}

/// Single-writer increment: see the module docs.
#[inline(always)]
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl StageSlot {
    #[inline(always)]
    pub fn hit(&self, len: usize) {
        add(&self.packets, 1);
        add(&self.bytes, len as u64);
    }

    #[inline(always)]
    pub fn abort(&self) {
        add(&self.aborted, 1);
    }

    #[inline(always)]
    pub fn sampled(&self) {
        add(&self.sampled, 1);
    }

    fn totals(&self) -> StageTotals {
        StageTotals {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            aborted: self.aborted.load(Relaxed),
            sampled: self.sampled.load(Relaxed),
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

/// The counters of one compiled pipeline: `slots` per worker (its stages, then the default
/// action's slot last).
#[derive(Debug)]
pub struct Counters {
    blocks: Box<[Box<[StageSlot]>]>,
    slots: usize,
}

impl Counters {
    pub fn new(workers: usize, slots: usize) -> Counters {
        let blocks = (0..workers).map(|_| (0..slots).map(|_| StageSlot::default()).collect()).collect();
        Counters { blocks, slots }
    }

    /// Worker `w`'s block. Only that worker may write it.
    #[inline(always)]
    pub fn block(&self, w: usize) -> &[StageSlot] {
        &self.blocks[w]
    }

    pub fn workers(&self) -> usize {
        self.blocks.len()
    }

    /// Slot `i` summed over every worker.
    pub fn totals(&self, i: usize) -> StageTotals {
        if i >= self.slots {
            return StageTotals::default();
        }
        self.blocks.iter().fold(StageTotals::default(), |t, b| t.add(&b[i].totals()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_layout_matches_the_exported_offsets() {
        assert_eq!(std::mem::size_of::<StageSlot>(), offsets::SLOT as usize);
        assert_eq!(std::mem::offset_of!(StageSlot, packets), offsets::PACKETS as usize);
        assert_eq!(std::mem::offset_of!(StageSlot, bytes), offsets::BYTES as usize);
        assert_eq!(std::mem::offset_of!(StageSlot, aborted), offsets::ABORTED as usize);
    }

    #[test]
    fn totals_sum_workers() {
        let c = Counters::new(3, 2);
        c.block(0)[1].hit(60);
        c.block(2)[1].hit(100);
        c.block(2)[1].abort();
        c.block(1)[0].sampled();
        assert_eq!(c.totals(1), StageTotals { packets: 2, bytes: 160, aborted: 1, sampled: 0 });
        assert_eq!(c.totals(0).sampled, 1);
        assert_eq!(c.totals(5), StageTotals::default());
        let t = c.totals(1);
        assert_eq!(t.add(&t).since(&t), t);
        assert_eq!(StageTotals::default().since(&t), StageTotals::default());
    }
}
