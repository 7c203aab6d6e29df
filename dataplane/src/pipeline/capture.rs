//! The capture ring: copies of packets that matched a `sample` stage, passed from a worker to
//! whoever writes them out, while a capture is running.
//!
//! Buffers are allocated once, when the link is made, and circulate: the worker takes an empty
//! one, copies the packet into it (within its capacity, so no allocation) and sends it on; the
//! reader writes it out and sends it back. Both directions are bounded channels whose
//! `try_recv`/`try_send` are a few atomics, so the worker never blocks, locks or allocates:
//! when the reader falls behind, the worker finds no empty buffer and the sample is skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::SystemTime;

/// One captured packet.
#[derive(Debug)]
pub struct Sample {
    /// Index of the port in the config.
    pub port: u32,
    pub queue: u32,
    /// Index of the `sample` stage that matched.
    pub stage: u32,
    pub time: SystemTime,
    /// The packet's full length; `data` may be shorter (the buffer size).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// The worker's end.
#[derive(Debug)]
pub struct CaptureTap {
    active: Arc<AtomicBool>,
    /// Samples skipped for want of a buffer; written by this worker only.
    missed: Arc<AtomicU64>,
    empty: Receiver<Vec<u8>>,
    full: SyncSender<Sample>,
}

/// The reader's end.
#[derive(Debug)]
pub struct CaptureSink {
    active: Arc<AtomicBool>,
    missed: Arc<AtomicU64>,
    empty: SyncSender<Vec<u8>>,
    full: Receiver<Sample>,
}

/// A tap and a sink sharing `buffers` buffers of `snaplen` bytes, with capture off.
pub fn capture_link(buffers: usize, snaplen: usize) -> (CaptureTap, CaptureSink) {
    let buffers = buffers.max(1);
    let (empty_tx, empty_rx) = sync_channel(buffers);
    let (full_tx, full_rx) = sync_channel(buffers);
    for _ in 0..buffers {
        // Cannot fail: the channel has room for every buffer and its receiver is alive.
        let _ = empty_tx.try_send(Vec::with_capacity(snaplen));
    }
    let active = Arc::new(AtomicBool::new(false));
    let missed = Arc::new(AtomicU64::new(0));
    (
        CaptureTap { active: Arc::clone(&active), missed: Arc::clone(&missed), empty: empty_rx, full: full_tx },
        CaptureSink { active, missed, empty: empty_tx, full: full_rx },
    )
}

impl CaptureTap {
    /// Whether a capture is running (one Relaxed load: a stale answer costs one sample).
    #[inline(always)]
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Copies `packet` into a free buffer and queues it. False when capture is off or every
    /// buffer is in use.
    #[inline]
    pub fn take(&self, port: u32, queue: u32, stage: u32, packet: &[u8]) -> bool {
        if !self.active() {
            return false;
        }
        let mut data = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {
                // Single writer: a plain load and store, as for the stage counters.
                self.missed.store(self.missed.load(Relaxed) + 1, Relaxed);
                return false;
            }
        };
        let n = packet.len().min(data.capacity());
        data.clear();
        data.extend_from_slice(&packet[..n]);
        let sample = Sample { port, queue, stage, time: SystemTime::now(), orig_len: packet.len() as u32, data };
        // There are as many slots as buffers, so a buffer we hold always finds a slot.
        self.full.try_send(sample).is_ok()
    }
}

impl CaptureSink {
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Relaxed);
    }

    /// Samples the worker skipped because every buffer was in use, since the link was made.
    pub fn missed(&self) -> u64 {
        self.missed.load(Relaxed)
    }

    /// Hands every queued sample to `f`, then returns its buffer to the worker.
    pub fn drain(&self, mut f: impl FnMut(&Sample)) -> usize {
        let mut n = 0;
        while let Ok(mut s) = self.full.try_recv() {
            f(&s);
            n += 1;
            s.data.clear();
            let _ = self.empty.try_send(std::mem::take(&mut s.data));
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_flow_only_while_active_and_buffers_come_back() {
        let (tap, sink) = capture_link(2, 16);
        assert!(!tap.take(0, 0, 0, &[1; 10]));
        sink.set_active(true);
        assert!(tap.take(1, 2, 3, &[7; 40]));
        assert!(tap.take(1, 2, 3, &[8; 4]));
        assert!(!tap.take(1, 2, 3, &[9; 4]), "both buffers are out");
        assert_eq!(sink.missed(), 1);
        let mut seen = Vec::new();
        assert_eq!(sink.drain(|s| seen.push((s.port, s.queue, s.stage, s.orig_len, s.data.clone()))), 2);
        assert_eq!(seen[0], (1, 2, 3, 40, vec![7; 16]));
        assert_eq!(seen[1].4, vec![8; 4]);
        assert!(tap.take(0, 0, 0, &[1; 3]), "buffers returned");
        sink.set_active(false);
        assert!(!tap.take(0, 0, 0, &[1; 3]));
    }
}
