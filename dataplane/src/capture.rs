//! Filtered capture through AF_XDP (`sluice capture -i IFACE EXPR -w out.pcap`): the steering
//! program redirects the interface's queues to AF_XDP sockets, the filter (a tcpdump
//! expression or any sluice filter) runs JIT-compiled on each frame, and the matches are
//! written to a pcap file.
//!
//! Unlike tcpdump's AF_PACKET tap, frames taken through AF_XDP do not continue to the kernel
//! stack (ARP and neighbour discovery excepted, which steering passes): capture on a
//! monitoring port, a mirror, or a test namespace, not on a host's management interface.
//! Timestamps are CLOCK_REALTIME, read once per received batch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pcapio::filter::Matcher;
use crate::pcapio::{PcapIoError, Writer};
use crate::steer::{AttachPref, SteerError, Steering};
use crate::xsk::{IDLE_POLL_MS, Verdict, XskConfig, XskError, XskGroup, ZeroCopy};

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture on {ifname}: {source}")]
    Xsk { ifname: String, source: XskError },
    #[error("capture on {ifname}: {source}")]
    Steer { ifname: String, source: SteerError },
    #[error(transparent)]
    Write(#[from] PcapIoError),
}

/// What a capture did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStats {
    /// Frames received on the interface.
    pub seen: u64,
    /// Frames the filter accepted and that were written.
    pub written: u64,
}

/// An interface being captured: steering attached, one socket per queue.
pub struct Capture {
    group: XskGroup,
    _steering: Steering,
    ifname: String,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("ifname", &self.ifname).finish_non_exhaustive()
    }
}

impl Capture {
    /// Starts taking `ifname`'s queues `0..queues` (in the calling thread's namespace): frames
    /// are held on the sockets from the moment this returns until [`run`](Self::run) takes them.
    pub fn open(ifname: &str, queues: u32) -> Result<Capture, CaptureError> {
        let xsk = |source| CaptureError::Xsk { ifname: ifname.to_string(), source };
        let steer = |source| CaptureError::Steer { ifname: ifname.to_string(), source };
        let _ = crate::xsk::raise_memlock_limit();
        let ports: Vec<_> = (0..queues.max(1)).map(|q| (ifname.to_string(), q)).collect();
        let cfg = XskConfig { frame_count: 4096, rx_ring: 2048, tx_ring: 64, zero_copy: ZeroCopy::Auto, ..XskConfig::default() };
        let mut group = XskGroup::open(&cfg, &ports).map_err(xsk)?;
        // Fill rings before steering: from then on frames are redirected to the sockets, and
        // one arriving before the thread that runs the capture is scheduled would be dropped.
        for p in 0..group.len() {
            while group.refill(p) > 0 {}
        }
        let mut steering = Steering::attach(ifname, AttachPref::Auto, &[], false).map_err(steer)?;
        for (i, (_, q)) in ports.iter().enumerate() {
            steering.register_socket(*q, group.fd(i)).map_err(steer)?;
        }
        Ok(Capture { group, _steering: steering, ifname: ifname.to_string() })
    }

    /// Captures until `stop` or `count` matching frames, writing them to `out`. `progress`
    /// holds the number written so far.
    pub fn run(
        &mut self,
        matcher: &Matcher,
        out: &mut Writer,
        count: Option<u64>,
        stop: &AtomicBool,
        progress: &AtomicU64,
    ) -> Result<CaptureStats, CaptureError> {
        let xsk = |source| CaptureError::Xsk { ifname: self.ifname.clone(), source };
        let group = &mut self.group;
        let ports = group.len();
        let limit = count.unwrap_or(u64::MAX);
        let mut stats = CaptureStats { seen: 0, written: 0 };
        let mut scratch = Vec::with_capacity(2048);
        let mut failed = None;
        while stats.written < limit && !stop.load(Relaxed) && failed.is_none() {
            let mut got = 0;
            for p in 0..ports {
                group.refill(p);
                if group.rx_ready(p, 1) == 0 {
                    continue;
                }
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
                got += group
                    .process_rx(p, usize::MAX, |frame| {
                        if stats.written < limit && failed.is_none() && matcher.matches(frame, &mut scratch) {
                            match out.write(ts, frame.len() as u32, frame) {
                                Ok(()) => stats.written += 1,
                                Err(e) => failed = Some(e),
                            }
                        }
                        Verdict::Drop
                    })
                    .map_err(xsk)?;
            }
            stats.seen += got as u64;
            progress.store(stats.written, Relaxed);
            if got == 0 {
                group.poll(IDLE_POLL_MS).map_err(xsk)?;
            }
        }
        group.drain(Duration::from_millis(100));
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(stats),
        }
    }
}
