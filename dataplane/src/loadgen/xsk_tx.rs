//! The AF_XDP transmit engine: one socket per sender on one TX queue, frames copied from the
//! templates into the UMEM, stamped and put on the TX ring in batches. Works on any NIC;
//! zero-copy where the driver has it, copy mode otherwise (the mode is reported).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::xsk::{XskConfig, XskGroup, XskMode, ZeroCopy};

use super::LoadgenError;
use super::pace::{Pacer, wait_until};
use super::stamp::{Stamp, mono_ns};
use super::traffic::{FrameSet, Template};

/// Batch when sending at full speed.
const FULL_BATCH: usize = 64;
/// How long a sender waits for its last frames to complete.
const DRAIN: Duration = Duration::from_secs(1);
/// Longest single wait, so a stop request is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// When a sender stops (whichever comes first; none means until `stop`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limit {
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// What one sender did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SenderReport {
    /// Frames put on the TX ring (AF_XDP) or handed to the kernel (live frames).
    pub sent: u64,
    #[serde(serialize_with = "super::report::secs")]
    pub elapsed: Duration,
    /// Packets the pacer wrote off because the sender fell behind its schedule.
    pub behind: u64,
    /// AF_XDP mode of the socket (None for live frames).
    pub mode: Option<XskMode>,
    /// Times the TX ring or the free list was full when frames were due.
    pub ring_full: u64,
    /// The TX queue of an AF_XDP sender (None for live frames, which have no TX queue: on veth
    /// they land on the peer's receive queue of the sending CPU).
    pub queue: Option<u32>,
    /// The core the sender thread was pinned to (None when not pinned).
    pub cpu: Option<usize>,
}

/// The socket configuration of a sender: a TX-heavy UMEM.
pub fn tx_config(zero_copy: ZeroCopy) -> XskConfig {
    XskConfig { frame_count: 4096, rx_ring: 64, tx_ring: 2048, zero_copy, ..XskConfig::default() }
}

/// Opens a single-port group on `ifname` queue `queue` for sending.
pub fn open(ifname: &str, queue: u32, zero_copy: ZeroCopy) -> Result<XskGroup, LoadgenError> {
    let _ = crate::xsk::raise_memlock_limit();
    Ok(XskGroup::open(&tx_config(zero_copy), &[(ifname.to_string(), queue)])?)
}

/// Sends `frames` as stream `stream` on port 0 of `group` at `rate` packets per second (None:
/// as fast as possible) until `limit` or `stop`. Publishes the running count in `progress`
/// once per batch. Every batch carries the time it is handed to the kernel.
pub fn send(
    group: &mut XskGroup,
    frames: &FrameSet,
    stream: u8,
    rate: Option<(f64, Duration)>,
    limit: Limit,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> Result<SenderReport, LoadgenError> {
    let max = frames.max_len();
    if max > tx_config(ZeroCopy::Auto).max_packet() as usize {
        return Err(LoadgenError::Frame { len: max, reason: "larger than an af_xdp frame holds" });
    }
    send_with(group, rate, limit, stop, progress, |k| frames.get(k), stream)
}

/// The send loop over any template source (`template(k)` for packet `k`).
fn send_with<'a>(
    group: &mut XskGroup,
    rate: Option<(f64, Duration)>,
    limit: Limit,
    stop: &AtomicBool,
    progress: &AtomicU64,
    template: impl Fn(u64) -> &'a Template,
    stream: u8,
) -> Result<SenderReport, LoadgenError> {
    let mut pacer = rate.map(|(pps, ramp)| Pacer::new(pps, ramp));
    let count = limit.count.unwrap_or(u64::MAX);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut ring_full = 0u64;
    while sent < count && !stop.load(Relaxed) {
        let elapsed = start.elapsed();
        if limit.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        group.service_tx(0)?;
        let due = match pacer.as_mut() {
            Some(p) => p.due(elapsed, sent) as usize,
            None => FULL_BATCH,
        };
        if due == 0 {
            if let Some(p) = &pacer {
                let next = p.time_of(sent + 1).min(elapsed + MAX_WAIT);
                wait_until(start, next);
            }
            continue;
        }
        let n = due.min((count - sent).min(FULL_BATCH as u64) as usize);
        let tx_ns = mono_ns();
        let base = sent;
        let put = group.transmit(0, n, |i, buf| {
            let k = base + i as u64;
            template(k).write_into(buf, Stamp { stream, seq: k as u32, tx_ns })
        })?;
        sent += put as u64;
        if put < n {
            ring_full += 1;
            // The kernel is behind: let it complete what it has before trying again.
            group.service_tx(0)?;
            std::hint::spin_loop();
        }
        progress.store(sent, Relaxed);
    }
    let elapsed = start.elapsed();
    let account = group.drain(DRAIN);
    if account.tx_in_flight > 0 {
        tracing::warn!(frames = account.tx_in_flight, "af_xdp sender: transmissions still pending at the end");
    }
    Ok(SenderReport {
        sent,
        elapsed,
        behind: pacer.map_or(0, |p| p.skipped()),
        mode: Some(group.mode(0)),
        ring_full,
        queue: None,
        cpu: None,
    })
}

/// A bare AF_XDP transmit loop: one fixed frame, no stamp, no pacing — the baseline the
/// benchmark compares the engine with.
pub fn baseline(group: &mut XskGroup, frame: &[u8], stop: &AtomicBool) -> Result<u64, LoadgenError> {
    if frame.len() > tx_config(ZeroCopy::Auto).max_packet() as usize {
        return Err(LoadgenError::Frame { len: frame.len(), reason: "larger than an af_xdp frame holds" });
    }
    let mut sent = 0u64;
    while !stop.load(Relaxed) {
        group.service_tx(0)?;
        sent += group.transmit(0, FULL_BATCH, |_, buf| {
            buf[..frame.len()].copy_from_slice(frame);
            frame.len()
        })? as u64;
    }
    group.drain(DRAIN);
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_config_is_valid_and_fits_the_largest_frame() {
        let cfg = tx_config(ZeroCopy::Auto);
        cfg.validate().unwrap();
        assert!(cfg.max_packet() as usize >= super::super::traffic::MAX_FRAME);
    }
}
