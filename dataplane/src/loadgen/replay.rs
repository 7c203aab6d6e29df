//! pcap replay over AF_XDP: each packet leaves at its capture time offset from the first one,
//! divided by the speed factor (or back to back at full speed), the whole capture looped N
//! times. The live-frames engine cannot replay: it sends copies of one template.
//!
//! Timing: packets due at the same moment go out as one batch; the sender sleeps until the
//! next one is due and spins the last 100 µs (see [`super::pace::wait_precise`]). Between loops
//! the gap is the capture's mean inter-packet gap.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::pcapio::Packet;
use crate::xsk::XskGroup;

use super::LoadgenError;
use super::pace::wait_precise;

const BATCH: usize = 64;
const MAX_WAIT: Duration = Duration::from_millis(20);

/// How to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayPlan {
    /// Time scale: 2.0 plays twice as fast; None sends back to back.
    pub speed: Option<f64>,
    pub loops: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ReplayReport {
    pub sent: u64,
    /// Packets of the capture longer than an AF_XDP frame holds, left out.
    pub skipped: u64,
    #[serde(serialize_with = "super::report::secs")]
    pub elapsed: Duration,
    /// Latest a batch left after its due time.
    #[serde(serialize_with = "super::report::secs")]
    pub max_late: Duration,
}

/// Send offsets of one pass (from the first packet) and the period of a loop.
pub fn schedule(packets: &[Packet], speed: Option<f64>) -> (Vec<Duration>, Duration) {
    let Some(speed) = speed.filter(|s| *s > 0.0 && s.is_finite()) else {
        return (vec![Duration::ZERO; packets.len()], Duration::ZERO);
    };
    let first = packets.first().map_or(Duration::ZERO, |p| p.ts);
    // A capture's clock may step back; a packet is never scheduled before its predecessor.
    let mut last = Duration::ZERO;
    let offsets: Vec<Duration> = packets
        .iter()
        .map(|p| {
            last = last.max(p.ts.saturating_sub(first).div_f64(speed));
            last
        })
        .collect();
    let span = offsets.last().copied().unwrap_or_default();
    let gap = if packets.len() > 1 { span / (packets.len() as u32 - 1) } else { Duration::ZERO };
    (offsets, span + gap)
}

/// Replays `packets` on port 0 of `group`; `progress` holds the running count.
pub fn replay(
    group: &mut XskGroup,
    packets: &[Packet],
    plan: ReplayPlan,
    max_len: usize,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> Result<ReplayReport, LoadgenError> {
    let (all_offsets, period) = schedule(packets, plan.speed);
    let (sendable, offsets): (Vec<&Packet>, Vec<Duration>) = packets
        .iter()
        .zip(all_offsets)
        .filter(|(p, _)| p.data.len() <= max_len)
        .unzip();
    let skipped = (packets.len() - sendable.len()) as u64;
    let n = sendable.len() as u64;
    let total = n * u64::from(plan.loops);
    let due_at = |i: u64| period * (i / n.max(1)) as u32 + offsets[(i % n.max(1)) as usize];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut max_late = Duration::ZERO;
    while sent < total && !stop.load(Relaxed) {
        group.service_tx(0)?;
        let now = start.elapsed();
        let first = due_at(sent);
        if first > now {
            wait_precise(start, first.min(now + MAX_WAIT));
            continue;
        }
        max_late = max_late.max(now - first);
        let mut k = 1;
        while k < BATCH && sent + (k as u64) < total && due_at(sent + k as u64) <= now {
            k += 1;
        }
        let base = sent;
        let put = group.transmit(0, k, |i, buf| {
            let p = sendable[((base + i as u64) % n) as usize];
            let len = p.data.len().min(buf.len());
            buf[..len].copy_from_slice(&p.data[..len]);
            len
        })?;
        sent += put as u64;
        progress.store(sent, Relaxed);
    }
    let elapsed = start.elapsed();
    group.drain(Duration::from_secs(1));
    Ok(ReplayReport { sent, skipped, elapsed, max_late })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(us: u64) -> Packet {
        Packet { ts: Duration::from_micros(1_000_000 + us), orig_len: 60, data: vec![0; 60] }
    }

    #[test]
    fn schedule_scales_gaps_and_loops() {
        let p = [pkt(0), pkt(100), pkt(300), pkt(250)];
        let (off, period) = schedule(&p, Some(1.0));
        let us = |d: &Duration| d.as_micros();
        assert_eq!(off.iter().map(us).collect::<Vec<_>>(), vec![0, 100, 300, 300]);
        assert_eq!(period, Duration::from_micros(400));
        let (off, period) = schedule(&p, Some(2.0));
        assert_eq!(off.iter().map(us).collect::<Vec<_>>(), vec![0, 50, 150, 150]);
        assert_eq!(period, Duration::from_micros(200));
        let (off, period) = schedule(&p, None);
        assert!(off.iter().all(|d| d.is_zero()) && period.is_zero());
        assert_eq!(schedule(&[], Some(1.0)), (vec![], Duration::ZERO));
    }
}
