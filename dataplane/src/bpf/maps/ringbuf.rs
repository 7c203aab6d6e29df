//! Ring buffer (`BPF_MAP_TYPE_RINGBUF`): variable-size records that filters reserve, fill and
//! submit (or copy in with one call), and the controller reads in order.
//!
//! The data area is one arena of `size` bytes (a power of two). Each record is an 8-byte
//! header (`len | BUSY | DISCARD`, then the header's own offset) and its data, padded to 8. A
//! record never wraps: when it would, the rest of the area becomes a discarded padding record
//! and the record starts at offset 0, so a filter always writes one contiguous block. Producers
//! (workers) take a mutex only to move the producer position, as the kernel's spinlock does;
//! the consumer reads headers with acquire loads and never blocks producers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::Arena;

const HDR: u64 = 8;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const LEN_MASK: u32 = DISCARD - 1;

pub struct RingBuf {
    data: Arena,
    size: u64,
    producer: Mutex<u64>,
    /// Published producer position: every header below it is written.
    published: AtomicU64,
    consumer: AtomicU64,
    reader: Mutex<()>,
}

impl RingBuf {
    pub fn new(size: u32) -> RingBuf {
        RingBuf {
            data: Arena::new(size as usize),
            size: size as u64,
            producer: Mutex::new(0),
            published: AtomicU64::new(0),
            consumer: AtomicU64::new(0),
            reader: Mutex::new(()),
        }
    }

    pub fn data(&self) -> &Arena {
        &self.data
    }

    /// Reserves `len` bytes; returns the data address, or `None` when the ring is full.
    pub fn reserve(&self, len: u64) -> Option<u64> {
        if len > LEN_MASK as u64 {
            return None;
        }
        let need = HDR + len.next_multiple_of(8);
        if need > self.size {
            return None;
        }
        let mut prod = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        let cons = self.consumer.load(Ordering::Acquire);
        let mut pos = *prod;
        let mut off = pos % self.size;
        if off + need > self.size {
            let pad = self.size - off;
            if pos + pad + need - cons > self.size {
                return None;
            }
            let h = self.data.atomic_u32(off as usize)?;
            h.store((pad - HDR) as u32 | DISCARD, Ordering::Release);
            pos += pad;
            off = 0;
        }
        if pos + need - cons > self.size {
            return None;
        }
        self.data.atomic_u32(off as usize + 4)?.store(off as u32, Ordering::Relaxed);
        self.data.atomic_u32(off as usize)?.store(len as u32 | BUSY, Ordering::Release);
        *prod = pos + need;
        self.published.store(*prod, Ordering::Release);
        Some(self.data.addr(off as usize + HDR as usize))
    }

    /// Commits or discards the busy record whose data starts at `addr`; false if `addr` is
    /// not such a record.
    pub fn commit(&self, addr: u64, discard: bool) -> bool {
        let Some(off) = addr.checked_sub(self.data.base() + HDR).filter(|o| o + HDR <= self.size) else {
            return false;
        };
        let (Some(h), Some(me)) = (self.data.atomic_u32(off as usize), self.data.atomic_u32(off as usize + 4)) else {
            return false;
        };
        let v = h.load(Ordering::Acquire);
        if v & BUSY == 0 || me.load(Ordering::Relaxed) as u64 != off {
            return false;
        }
        let len = v & LEN_MASK;
        h.store(if discard { len | DISCARD } else { len }, Ordering::Release);
        true
    }

    /// Copies `data` into a new committed record.
    pub fn output(&self, data: &[u8]) -> Option<()> {
        let addr = self.reserve(data.len() as u64)?;
        self.data.write((addr - self.data.base()) as usize, data);
        self.commit(addr, false).then_some(())
    }

    /// The oldest committed record, or `None` when the next one is still busy or the ring is
    /// empty. Discarded records are skipped.
    pub fn read(&self) -> Option<Vec<u8>> {
        let _one_reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let cons = self.consumer.load(Ordering::Relaxed);
            if cons >= self.published.load(Ordering::Acquire) {
                return None;
            }
            let off = (cons % self.size) as usize;
            let v = self.data.atomic_u32(off)?.load(Ordering::Acquire);
            if v & BUSY != 0 {
                return None;
            }
            let len = (v & LEN_MASK) as usize;
            let record = (v & DISCARD == 0).then(|| {
                let mut out = vec![0u8; len];
                self.data.read(off + HDR as usize, &mut out);
                out
            });
            self.consumer.store(cons + HDR + (len as u64).next_multiple_of(8), Ordering::Release);
            if record.is_some() {
                return record;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_out_in_order_and_busy_ones_block() {
        let r = RingBuf::new(64);
        r.output(b"hello").unwrap();
        let a = r.reserve(3).unwrap();
        r.output(b"later").unwrap();
        assert_eq!(r.read().unwrap(), b"hello");
        // The reserved record is still busy: nothing after it is visible yet.
        assert_eq!(r.read(), None);
        r.data().write((a - r.data().base()) as usize, b"abc");
        assert!(r.commit(a, false));
        assert!(!r.commit(a, false), "a record commits once");
        assert_eq!(r.read().unwrap(), b"abc");
        assert_eq!(r.read().unwrap(), b"later");
        assert_eq!(r.read(), None);
    }

    #[test]
    fn full_rings_refuse_and_wrapping_records_stay_contiguous() {
        let r = RingBuf::new(64);
        // 3 records of 16 bytes each use 48 of 64.
        for i in 0..3u8 {
            r.output(&[i; 8]).unwrap();
        }
        assert!(r.output(&[9; 16]).is_none(), "24 bytes do not fit in 16");
        assert_eq!(r.read().unwrap(), [0; 8]);
        assert_eq!(r.read().unwrap(), [1; 8]);
        assert_eq!(r.read().unwrap(), [2; 8]);
        // 24 bytes at offset 48 would wrap: padding to the end, then the record at 0.
        r.output(&[7; 16]).unwrap();
        let d = r.reserve(1).unwrap();
        assert_eq!(d, r.data().base() + 24 + HDR);
        assert!(r.commit(d, true));
        assert_eq!(r.read().unwrap(), [7; 16]);
        assert_eq!(r.read(), None, "discarded records are skipped");
        assert!(r.reserve(1000).is_none());
    }
}
