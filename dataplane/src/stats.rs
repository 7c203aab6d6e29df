//! Per-queue dataplane counters, shared between the one worker that writes them and the
//! reporter that reads them; and per-worker batch-time histograms handed to the controller.
//!
//! The worker keeps plain `u64` running totals and publishes them with one `store(Relaxed)` per
//! counter per batch: no read-modify-write atomics on the hot path, since exactly one thread
//! writes each [`QueueStats`]. Readers take a [`QueueSnapshot`] (plain numbers, serializable)
//! and compute rates from the difference of two snapshots.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Counters for one (interface, queue) socket. Aligned to a cache line so that two queues'
/// counters, written by different cores, never share one; the fields of one queue share lines
/// freely because a single thread writes them all.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct QueueStats {
    /// Packets taken off the RX ring.
    rx: AtomicU64,
    /// Packets placed on this queue's TX ring (forwarded here or reflected).
    tx: AtomicU64,
    /// Packets received here and dropped: by the drop action, as malformed, or discarded at
    /// shutdown.
    drop: AtomicU64,
    /// Of `drop`: frames too short for the action (e.g. under 14 bytes, no Ethernet header).
    malformed: AtomicU64,
    /// Packets bound for this queue's TX ring that were dropped because it was full.
    ring_full: AtomicU64,
    /// Times this queue's fill ring ran (nearly) dry with no free frame to refill it.
    fill_empty: AtomicU64,
    /// Wakeup syscalls (`sendto`) issued to get this queue's TX ring processed.
    wakeups: AtomicU64,
    /// Times the worker slept in `poll()` on this queue while idle.
    polls: AtomicU64,
    /// Nanoseconds spent processing non-empty RX batches received on this queue.
    busy_ns: AtomicU64,
    /// Packets processed during `busy_ns`.
    busy_pkts: AtomicU64,
    /// Non-empty RX batches those packets came in. Kept out of [`QueueSnapshot`], whose fields
    /// are the control protocol's; benches read it with [`busy_batches`](Self::busy_batches).
    busy_batches: AtomicU64,
}

/// The worker-side running totals for one queue; published with [`QueueStats::publish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueSnapshot {
    pub rx: u64,
    pub tx: u64,
    pub drop: u64,
    pub malformed: u64,
    pub ring_full: u64,
    pub fill_empty: u64,
    pub wakeups: u64,
    pub polls: u64,
    pub busy_ns: u64,
    pub busy_pkts: u64,
}

impl QueueStats {
    pub fn new() -> QueueStats {
        QueueStats::default()
    }

    /// Overwrites every counter with the writer's running totals. Only the single worker that
    /// owns this queue may call it; plain stores are enough because nobody else writes.
    #[inline]
    pub fn publish(&self, totals: &QueueSnapshot) {
        self.rx.store(totals.rx, Relaxed);
        self.tx.store(totals.tx, Relaxed);
        self.drop.store(totals.drop, Relaxed);
        self.malformed.store(totals.malformed, Relaxed);
        self.ring_full.store(totals.ring_full, Relaxed);
        self.fill_empty.store(totals.fill_empty, Relaxed);
        self.wakeups.store(totals.wakeups, Relaxed);
        self.polls.store(totals.polls, Relaxed);
        self.busy_ns.store(totals.busy_ns, Relaxed);
        self.busy_pkts.store(totals.busy_pkts, Relaxed);
    }

    /// Overwrites the count of non-empty batches; same writer rule as [`publish`](Self::publish).
    #[inline]
    pub fn publish_batches(&self, batches: u64) {
        self.busy_batches.store(batches, Relaxed);
    }

    /// Non-empty batches processed so far: `busy_pkts` over its difference between two reads
    /// is the average batch, which tells a per-batch cost from a per-packet one.
    pub fn busy_batches(&self) -> u64 {
        self.busy_batches.load(Relaxed)
    }

    /// Reads every counter. Each value is exact as of some moment during the call; values may
    /// come from different batches, which is harmless for once-a-second reporting.
    pub fn snapshot(&self) -> QueueSnapshot {
        QueueSnapshot {
            rx: self.rx.load(Relaxed),
            tx: self.tx.load(Relaxed),
            drop: self.drop.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            ring_full: self.ring_full.load(Relaxed),
            fill_empty: self.fill_empty.load(Relaxed),
            wakeups: self.wakeups.load(Relaxed),
            polls: self.polls.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            busy_pkts: self.busy_pkts.load(Relaxed),
        }
    }
}

/// Per-second rates over an interval, plus the worker's cost per packet in that interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QueueRates {
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub drop_pps: f64,
    pub ring_full_pps: f64,
    pub wakeups_ps: f64,
    /// Busy nanoseconds per packet; `None` when no packet was processed.
    pub ns_per_packet: Option<f64>,
}

impl QueueSnapshot {
    /// What happened between `earlier` and `self`. Counters only grow, so a smaller current
    /// value (a different queue passed by mistake) saturates to zero rather than wrapping.
    pub fn delta(&self, earlier: &QueueSnapshot) -> QueueSnapshot {
        QueueSnapshot {
            rx: self.rx.saturating_sub(earlier.rx),
            tx: self.tx.saturating_sub(earlier.tx),
            drop: self.drop.saturating_sub(earlier.drop),
            malformed: self.malformed.saturating_sub(earlier.malformed),
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
            fill_empty: self.fill_empty.saturating_sub(earlier.fill_empty),
            wakeups: self.wakeups.saturating_sub(earlier.wakeups),
            polls: self.polls.saturating_sub(earlier.polls),
            busy_ns: self.busy_ns.saturating_sub(earlier.busy_ns),
            busy_pkts: self.busy_pkts.saturating_sub(earlier.busy_pkts),
        }
    }

    /// Sum of two queues' counters (for group or process totals).
    pub fn add(&self, other: &QueueSnapshot) -> QueueSnapshot {
        QueueSnapshot {
            rx: self.rx + other.rx,
            tx: self.tx + other.tx,
            drop: self.drop + other.drop,
            malformed: self.malformed + other.malformed,
            ring_full: self.ring_full + other.ring_full,
            fill_empty: self.fill_empty + other.fill_empty,
            wakeups: self.wakeups + other.wakeups,
            polls: self.polls + other.polls,
            busy_ns: self.busy_ns + other.busy_ns,
            busy_pkts: self.busy_pkts + other.busy_pkts,
        }
    }

    /// Average busy time per packet processed, if any was.
    pub fn ns_per_packet(&self) -> Option<f64> {
        (self.busy_pkts > 0).then(|| self.busy_ns as f64 / self.busy_pkts as f64)
    }

    /// Rates between `earlier` and `self`, taken `elapsed` apart. A zero interval gives zero
    /// rates rather than infinities.
    pub fn rates(&self, earlier: &QueueSnapshot, elapsed: Duration) -> QueueRates {
        let d = self.delta(earlier);
        let secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        QueueRates {
            rx_pps: per_sec(d.rx),
            tx_pps: per_sec(d.tx),
            drop_pps: per_sec(d.drop),
            ring_full_pps: per_sec(d.ring_full),
            wakeups_ps: per_sec(d.wakeups),
            ns_per_packet: d.ns_per_packet(),
        }
    }
}

/// Longest batch time a histogram records exactly (10 s); longer ones saturate to it.
const HIST_MAX_NS: u64 = 10_000_000_000;

/// An empty batch-time histogram: nanoseconds, 1 ns to 10 s, 3 significant digits.
pub fn batch_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("constant bounds are valid")
}

/// The worker's end: records batch times into a histogram only it touches, and at a batch
/// boundary trades it for a fresh one when the controller asks. Neither side ever locks:
/// the exchange is two one-slot channels, whose `try_recv`/`try_send` are a few atomics.
#[derive(Debug)]
pub struct HistRecorder {
    hist: Histogram<u64>,
    fresh: Receiver<Histogram<u64>>,
    full: SyncSender<Histogram<u64>>,
}

/// The controller's end of one worker's [`HistRecorder`].
#[derive(Debug)]
pub struct HistCollector {
    fresh: SyncSender<Histogram<u64>>,
    full: Receiver<Histogram<u64>>,
}

/// A linked recorder (for the worker) and collector (for the controller).
pub fn hist_link() -> (HistRecorder, HistCollector) {
    let (fresh_tx, fresh_rx) = sync_channel(1);
    let (full_tx, full_rx) = sync_channel(1);
    (HistRecorder { hist: batch_histogram(), fresh: fresh_rx, full: full_tx }, HistCollector { fresh: fresh_tx, full: full_rx })
}

impl HistRecorder {
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Hands the histogram over if the controller sent a fresh one. Call at batch boundaries.
    #[inline]
    pub fn serve(&mut self) {
        match self.fresh.try_recv() {
            Ok(fresh) => {
                let full = std::mem::replace(&mut self.hist, fresh);
                // A full slot means the controller gave up on an earlier reply and has not
                // drained it; this batch of samples is then lost rather than blocking.
                let _ = self.full.try_send(full);
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
    }
}

impl HistCollector {
    /// Asks the worker for its histogram (it answers at its next batch boundary).
    pub fn request(&self) {
        let _ = self.fresh.try_send(batch_histogram());
    }

    /// Waits until `deadline` for the answer to [`request`](Self::request).
    pub fn receive(&self, deadline: Instant) -> Option<Histogram<u64>> {
        self.full.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
    }
}

/// Collects from every worker at once (asks all, then waits for all until `timeout`) and adds
/// what arrives to `into`. Returns how many workers answered.
pub fn collect_histograms(collectors: &[HistCollector], into: &mut Histogram<u64>, timeout: Duration) -> usize {
    for c in collectors {
        c.request();
    }
    let deadline = Instant::now() + timeout;
    let mut answered = 0;
    for c in collectors {
        if let Some(h) = c.receive(deadline) {
            // Same bounds on both sides: adding cannot fail.
            let _ = into.add(&h);
            answered += 1;
        }
    }
    answered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_move_from_worker_to_collector_without_loss() {
        let (mut rec, col) = hist_link();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let worker = std::thread::spawn(move || {
            for i in 1..=1000u64 {
                rec.record(i * 100);
                rec.serve();
            }
            while !stop.load(Relaxed) {
                rec.serve();
                std::thread::yield_now();
            }
        });
        let mut total = batch_histogram();
        let deadline = Instant::now() + Duration::from_secs(20);
        while total.len() < 1000 && Instant::now() < deadline {
            collect_histograms(std::slice::from_ref(&col), &mut total, Duration::from_millis(100));
        }
        done.store(true, Relaxed);
        worker.join().unwrap();
        assert_eq!(total.len(), 1000);
        assert_eq!(total.value_at_quantile(1.0), total.highest_equivalent(100_000));
        let (mut rec, col) = hist_link();
        rec.record(5_000);
        rec.record(u64::MAX);
        col.request();
        rec.serve();
        let h = col.receive(Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.max() >= HIST_MAX_NS);
    }

    fn sample(k: u64) -> QueueSnapshot {
        QueueSnapshot {
            rx: 10 * k,
            tx: 9 * k,
            drop: k,
            malformed: k,
            ring_full: 2 * k,
            fill_empty: 3 * k,
            wakeups: 4 * k,
            polls: 5 * k,
            busy_ns: 100 * k,
            busy_pkts: 10 * k,
        }
    }

    #[test]
    fn publish_then_snapshot_round_trips() {
        let stats = QueueStats::new();
        assert_eq!(stats.snapshot(), QueueSnapshot::default());
        stats.publish(&sample(7));
        assert_eq!(stats.snapshot(), sample(7));
        assert_eq!(stats.busy_batches(), 0);
        stats.publish_batches(3);
        assert_eq!((stats.busy_batches(), stats.snapshot()), (3, sample(7)));
    }

    #[test]
    fn counters_do_not_share_a_cache_line_across_queues() {
        assert_eq!(std::mem::align_of::<QueueStats>(), 64);
        let pair = [QueueStats::new(), QueueStats::new()];
        let a = &pair[0] as *const QueueStats as usize;
        let b = &pair[1] as *const QueueStats as usize;
        assert!(b - a >= 64 && (b - a).is_multiple_of(64));
    }

    #[test]
    fn delta_add_and_rates() {
        let later = sample(5);
        let earlier = sample(2);
        assert_eq!(later.delta(&earlier), sample(3));
        assert_eq!(earlier.delta(&later), QueueSnapshot::default());
        assert_eq!(sample(2).add(&sample(3)), sample(5));

        let r = later.rates(&earlier, Duration::from_millis(500));
        assert_eq!(r.rx_pps, 60.0);
        assert_eq!(r.tx_pps, 54.0);
        assert_eq!(r.drop_pps, 6.0);
        assert_eq!(r.ring_full_pps, 12.0);
        assert_eq!(r.wakeups_ps, 24.0);
        assert_eq!(r.ns_per_packet, Some(10.0));

        let zero = later.rates(&earlier, Duration::ZERO);
        assert_eq!(zero.rx_pps, 0.0);
        assert_eq!(QueueSnapshot::default().ns_per_packet(), None);
    }

    #[test]
    fn snapshot_serializes_with_field_names() {
        let json = serde_json::to_value(sample(1)).unwrap();
        assert_eq!(json["rx"], 10);
        assert_eq!(json["busy_pkts"], 10);
        assert_eq!(json.as_object().unwrap().len(), 10);
    }
}
