//! The measuring receiver: takes generated frames off an interface through AF_XDP and accounts
//! for their stamps — received, duplicated, reordered per stream, and one-way latency.
//!
//! AF_XDP rather than AF_PACKET: it sees frames from both engines the same way (live frames
//! on veth are only delivered to a peer running native XDP, which the steering program is),
//! keeps up with millions of packets per second on one core, and takes the frames before the
//! kernel stack would answer them. The steering program still passes ARP and neighbour
//! discovery to the kernel. Latency is taken once per received batch (one clock read), so
//! it includes the batch's queueing, as a real application would see it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::steer::{AttachPref, Steering};
use crate::xsk::{IDLE_POLL_MS, IDLE_SPINS, Verdict, XskConfig, XskGroup, ZeroCopy};

use super::LoadgenError;
use super::stamp::{Stamp, mono_ns};

/// Sequence numbers remembered behind the highest seen, for telling duplicates from late
/// arrivals. Anything older is counted as reordered.
const WINDOW: u64 = 1 << 16;
/// How long the rings must stay empty after a stop request before the receiver ends.
const QUIET: Duration = Duration::from_millis(20);
/// Largest latency the histogram records (60 s); longer ones are clamped.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Loss accounting of one stream (one sender).
#[derive(Debug, Clone)]
pub struct StreamTracker {
    max: u64,
    seen_any: bool,
    bits: Box<[u64]>,
    pub unique: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl Default for StreamTracker {
    fn default() -> Self {
        StreamTracker {
            max: 0,
            seen_any: false,
            bits: vec![0; (WINDOW / 64) as usize].into_boxed_slice(),
            unique: 0,
            duplicated: 0,
            reordered: 0,
        }
    }
}

impl StreamTracker {
    /// The 64-bit sequence number closest to the highest seen that ends in `seq`.
    fn widen(&self, seq: u32) -> u64 {
        let cand = (self.max & !0xffff_ffff) | u64::from(seq);
        let up = cand.wrapping_add(1 << 32);
        let down = cand.wrapping_sub(1 << 32);
        let dist = |x: u64| x.abs_diff(self.max);
        if cand < self.max && dist(up) < dist(cand) {
            up
        } else if cand > self.max && self.max >= 1 << 32 && dist(down) < dist(cand) {
            down
        } else {
            cand
        }
    }

    fn bit(&mut self, seq: u64) -> (usize, u64) {
        let i = seq % WINDOW;
        ((i / 64) as usize, 1 << (i % 64))
    }

    /// Accounts for one received sequence number.
    #[inline]
    pub fn record(&mut self, seq32: u32) {
        let seq = self.widen(seq32);
        if !self.seen_any || seq > self.max {
            if self.seen_any {
                let gap = seq - self.max;
                if gap >= WINDOW {
                    self.bits.fill(0);
                } else {
                    for s in self.max + 1..seq {
                        let (w, m) = self.bit(s);
                        self.bits[w] &= !m;
                    }
                }
            } else {
                self.seen_any = true;
            }
            self.max = seq;
            let (w, m) = self.bit(seq);
            self.bits[w] |= m;
            self.unique += 1;
            return;
        }
        if self.max - seq >= WINDOW {
            self.unique += 1;
            self.reordered += 1;
            return;
        }
        let (w, m) = self.bit(seq);
        if self.bits[w] & m != 0 {
            self.duplicated += 1;
        } else {
            self.bits[w] |= m;
            self.unique += 1;
            self.reordered += 1;
        }
    }
}

/// Everything the receiver counted.
#[derive(Debug, Clone)]
pub struct RxState {
    /// Per stream id, created on its first packet.
    pub streams: Vec<Option<StreamTracker>>,
    /// Frames carrying a stamp.
    pub stamped: u64,
    /// Frames without one (other traffic on the interface).
    pub other: u64,
    /// Stamped frames per receive queue, indexed like the receiver's queues (`0..queues`).
    pub queues: Vec<u64>,
    /// One-way latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Frames the kernel could not deliver to the sockets (RX ring full, no fill frame, other
    /// drops), summed over queues at the end of the run.
    pub kernel_dropped: u64,
}

impl Default for RxState {
    fn default() -> Self {
        RxState {
            streams: vec![None; 256],
            stamped: 0,
            other: 0,
            queues: Vec::new(),
            // Three significant digits from 1 ns to 60 s: well under 1 MiB.
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("constant histogram bounds are valid"),
            kernel_dropped: 0,
        }
    }
}

impl RxState {
    /// Accounts for one frame received at `now_ns` (CLOCK_MONOTONIC).
    #[inline]
    pub fn record(&mut self, frame: &[u8], now_ns: u64) {
        let Some(stamp) = Stamp::parse(frame) else {
            self.other += 1;
            return;
        };
        self.stamped += 1;
        let tracker = self.streams[usize::from(stamp.stream)].get_or_insert_with(StreamTracker::default);
        tracker.record(stamp.seq);
        let latency = now_ns.saturating_sub(stamp.tx_ns).clamp(1, MAX_LATENCY_NS);
        // Within bounds by construction; a failure would only lose this one sample.
        let _ = self.latency.record(latency);
    }

    /// Unique stamped frames of `stream`.
    pub fn unique(&self, stream: u8) -> u64 {
        self.streams[usize::from(stream)].as_ref().map_or(0, |t| t.unique)
    }

    pub fn duplicated(&self) -> u64 {
        self.streams.iter().flatten().map(|t| t.duplicated).sum()
    }

    pub fn reordered(&self) -> u64 {
        self.streams.iter().flatten().map(|t| t.reordered).sum()
    }
}

/// The receiving side of a run: steering on the interface, one AF_XDP group over its queues.
pub struct Receiver {
    // The group is dropped before the steering that feeds it.
    group: XskGroup,
    _steering: Steering,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("group", &self.group).finish_non_exhaustive()
    }
}

/// The receiver's socket configuration: deep rings (32 MiB of UMEM) so bursts from the
/// live-frames engine fit, and a receiver descheduled for a while on a busy machine loses
/// nothing (8192 frames are 400 ms at 20 kpps).
pub fn rx_config() -> XskConfig {
    XskConfig { frame_count: 16384, rx_ring: 8192, tx_ring: 64, zero_copy: ZeroCopy::Auto, ..XskConfig::default() }
}

impl Receiver {
    /// Binds a socket on each of queues `0..queues` of `ifname`, fills their fill rings and
    /// attaches steering (native XDP if the driver has it), in the calling thread's network
    /// namespace: frames are taken from the moment this returns.
    pub fn open(ifname: &str, queues: u32) -> Result<Receiver, LoadgenError> {
        let _ = crate::xsk::raise_memlock_limit();
        let ports: Vec<_> = (0..queues.max(1)).map(|q| (ifname.to_string(), q)).collect();
        let mut group = XskGroup::open(&rx_config(), &ports)?;
        // Fill rings first: a frame steered to a socket with an empty fill ring is dropped, and
        // the caller may start sending before the thread that runs the receiver is scheduled.
        for p in 0..group.len() {
            while group.refill(p) > 0 {}
        }
        let mut steering = Steering::attach(ifname, AttachPref::Auto, &[], false)?;
        for (i, (_, q)) in ports.iter().enumerate() {
            steering.register_socket(*q, group.fd(i))?;
        }
        Ok(Receiver { group, _steering: steering })
    }

    /// Receives until `stop`, accounting every frame into `state` and publishing the stamped
    /// count in `progress` once per batch. Frames are dropped after accounting.
    pub fn run(&mut self, state: &mut RxState, stop: &AtomicBool, progress: &AtomicU64) -> Result<(), LoadgenError> {
        let group = &mut self.group;
        let ports = group.len();
        state.queues.resize(ports, 0);
        let batch = group.max_batch().min(256);
        let mut idle = 0u32;
        // After a stop request, frames may still be on their way (veth rings, NAPI): stop
        // only once the rings have stayed empty this long.
        let mut quiet_since: Option<std::time::Instant> = None;
        loop {
            let mut got = 0;
            for p in 0..ports {
                group.refill(p);
                if group.rx_ready(p, 1) == 0 {
                    continue;
                }
                let now = mono_ns();
                let before = state.stamped;
                got += group.process_rx(p, batch, |frame| {
                    state.record(frame, now);
                    Verdict::Drop
                })?;
                state.queues[p] += state.stamped - before;
            }
            if got > 0 {
                progress.store(state.stamped, Relaxed);
                idle = 0;
                quiet_since = None;
                continue;
            }
            if stop.load(Relaxed) {
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= QUIET {
                    break;
                }
            }
            idle += 1;
            if idle >= IDLE_SPINS || (0..ports).any(|p| group.fill_needs_wakeup(p)) {
                group.poll(IDLE_POLL_MS.min(10))?;
                idle = 0;
            }
        }
        group.drain(Duration::from_millis(100));
        for p in 0..ports {
            let k = group.kernel_stats(p)?;
            // rx_dropped counts every frame the socket lost (ring full, no fill frame, too long);
            // the other counters classify the same drops again.
            state.kernel_dropped += k.rx_dropped;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_counts_unique_only() {
        let mut t = StreamTracker::default();
        for s in 0..1000 {
            t.record(s);
        }
        assert_eq!((t.unique, t.duplicated, t.reordered), (1000, 0, 0));
    }

    #[test]
    fn duplicates_reorders_and_gaps_are_told_apart() {
        let mut t = StreamTracker::default();
        for s in [0, 1, 2, 5, 4, 4, 3, 9, 2, 100_000, 6] {
            t.record(s);
        }
        // Unique: 0 1 2 5 4 3 9 100000 6; duplicates: the second 4 and the second 2; late:
        // 4, 3 and 6 (6 is out of the window behind 100000 and counted late, not duplicate).
        assert_eq!(t.unique, 9);
        assert_eq!(t.duplicated, 2);
        assert_eq!(t.reordered, 3);
    }

    #[test]
    fn sequence_numbers_widen_across_the_32_bit_wrap() {
        let mut t = StreamTracker::default();
        for s in (u32::MAX - 10)..=u32::MAX {
            t.record(s);
        }
        for s in 0..10u32 {
            t.record(s);
        }
        t.record(u32::MAX - 2);
        assert_eq!(t.max, (1 << 32) + 9);
        assert_eq!((t.unique, t.duplicated, t.reordered), (21, 1, 0));
    }

    #[test]
    fn state_splits_streams_and_records_latency() {
        let mut st = RxState::default();
        let frame = |stream, seq, tx_ns| {
            let mut f = vec![0u8; 44];
            f.extend_from_slice(&Stamp { stream, seq, tx_ns }.to_bytes());
            f
        };
        st.record(&frame(0, 0, 1_000), 11_000);
        st.record(&frame(0, 1, 2_000), 22_000);
        st.record(&frame(1, 0, 2_000), 102_000);
        st.record(&frame(1, 0, 2_000), 102_000);
        st.record(&[0u8; 60], 5);
        assert_eq!((st.stamped, st.other), (4, 1));
        assert_eq!((st.unique(0), st.unique(1), st.unique(2)), (2, 1, 0));
        assert_eq!(st.duplicated(), 1);
        assert_eq!(st.latency.len(), 4);
        assert_eq!(st.latency.min(), 10_000);
        assert!(st.latency.equivalent(st.latency.max(), 100_000));
    }
}
