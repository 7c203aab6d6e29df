//! The bare AF_XDP "rxdrop" loop the benchmark measures sluice's worker against: take
//! packets off the RX ring and put the very same frames straight back on the fill ring, nothing
//! else. It drives the same [`XskGroup`] (same sockets, rings and idle policy) so the only
//! difference from the worker is the worker's own per-packet work.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{IDLE_POLL_MS, IDLE_SPINS, XskGroup};

/// What a baseline run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BaselineReport {
    /// Packets received (and dropped).
    pub packets: u64,
    /// Non-empty batches.
    pub batches: u64,
    /// Time spent on non-empty batches, measured like the worker's busy time.
    pub busy_ns: u64,
    /// The median time of a non-empty batch (0 without one). Unlike the mean `busy_ns`, it
    /// does not grow when the loop is descheduled in the middle of a batch on a loaded core.
    pub batch_ns_p50: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Times the loop slept in `poll()`.
    pub polls: u64,
}

impl BaselineReport {
    pub fn mpps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.packets as f64 / secs / 1e6
        } else {
            0.0
        }
    }

    pub fn ns_per_packet(&self) -> Option<f64> {
        (self.packets > 0).then(|| self.busy_ns as f64 / self.packets as f64)
    }
}

/// Runs the bare rxdrop loop on every port of `group` until `stop` is set, in batches of up to
/// `batch` packets. Frames go back to the fill ring they came from in the same step, so the
/// free list is used only to prime the rings. Call [`XskGroup::drain`] afterwards to account
/// for the frames.
pub fn rxdrop_baseline(group: &mut XskGroup, stop: &AtomicBool, batch: usize) -> BaselineReport {
    let batch = batch.clamp(1, group.rx_buf.len());
    let mut report = BaselineReport::default();
    let started = Instant::now();
    for p in 0..group.ports.len() {
        while group.refill(p) > 0 {}
    }
    let mut idle = 0u32;
    // Same bounds as the worker's batch-time histogram: 1 ns to 10 s, 3 significant digits.
    let mut times = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).ok();
    while !stop.load(Relaxed) {
        let mut received = 0;
        for p in 0..group.ports.len() {
            let port = &mut group.ports[p];
            if port.rx.nb_avail(batch as u32) == 0 {
                continue;
            }
            let t0 = Instant::now();
            // SAFETY: the RX ring returns frames of this group's UMEM (see `process_rx`), and
            // `rx_buf` holds no live frame between batches.
            let got = unsafe { port.rx.consume(&mut group.rx_buf[..batch]) };
            // SAFETY: the frames were just consumed, so userspace owns them; they go straight
            // back to the fill ring, which has room for twice the UMEM's frames.
            let put = unsafe { port.fill.produce(&group.rx_buf[..got]) };
            #[cfg(debug_assertions)]
            {
                let mask = port.fill_shadow.len() as u64 - 1;
                for (k, d) in group.rx_buf[..put].iter().enumerate() {
                    let idx = (port.moves.fill_produced + k as u64) & mask;
                    port.fill_shadow[idx as usize] = d.addr() as u64;
                }
            }
            port.moves.rx_consumed += got as u64;
            port.moves.fill_produced += put as u64;
            port.counters.rx += got as u64;
            port.counters.dropped += got as u64;
            if put < got {
                for desc in &group.rx_buf[put..got] {
                    super::push_free(&mut group.free, &mut group.free_len, *desc);
                }
            }
            let ns = t0.elapsed().as_nanos() as u64;
            report.busy_ns += ns;
            if let Some(h) = &mut times {
                h.saturating_record(ns.max(1));
            }
            report.batches += 1;
            received += got;
        }
        report.packets += received as u64;
        if received > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        let wake = (0..group.ports.len()).any(|p| group.fill_needs_wakeup(p));
        if group.need_wakeup && (idle >= IDLE_SPINS || wake) {
            // An error here means the sockets are gone; the run ends with what it has.
            if group.poll(IDLE_POLL_MS).is_err() {
                break;
            }
            report.polls += 1;
            idle = 0;
        }
    }
    report.elapsed = started.elapsed();
    report.batch_ns_p50 = times.filter(|h| !h.is_empty()).map_or(0, |h| h.value_at_quantile(0.5));
    report
}
