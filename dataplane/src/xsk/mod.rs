//! AF_XDP sockets and their UMEM, behind a safe, batch-oriented API. This is one of only two
//! places in sluice allowed `unsafe` (xsk-rs's ring and UMEM operations are unsafe because a
//! frame handed to the kernel must not be touched or handed out again until it comes back).
//!
//! An [`XskGroup`] is one UMEM shared by the sockets of one worker: the ports at one queue
//! index that forward to each other (or a single port). Each socket has its own fill and
//! completion rings (xsk-rs shared UMEM), so forwarding a→b moves a frame descriptor from a's
//! RX ring to b's TX ring with no copy and no cross-thread handoff, and completions from any
//! socket return frames to the group's one free list, which refills whichever fill ring needs
//! them.
//!
//! Descriptors never leave this module: callers see packet bytes (`&mut [u8]` inside
//! [`XskGroup::process_rx`] and [`XskGroup::transmit`]) and answer with a [`Verdict`]. That is
//! what makes the API safe: no caller can submit a frame twice or use one the kernel owns.
//! Every move between places is counted (see [`FrameAccount`]) so a run can prove afterwards that
//! no frame leaked or was duplicated.

mod account;
mod baseline;
mod config;
mod sys;

pub use account::{AccountError, FrameAccount, FrameAudit};
pub use baseline::{BaselineReport, rxdrop_baseline};
pub use config::{XskConfig, XskMode, ZeroCopy};

/// Lifts RLIMIT_MEMLOCK for UMEM registration, where the process may (best effort).
pub fn raise_memlock_limit() -> std::io::Result<()> {
    sys::raise_memlock_limit()
}

use std::fmt;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use account::{Auditor, Moves};
use sys::Kick;

#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("invalid xsk config: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("xsk group has no ports")]
    NoPorts,
    #[error("port {ifname} queue {queue} appears twice in one xsk group")]
    DuplicatePort { ifname: String, queue: u32 },
    #[error("invalid interface name {ifname:?}")]
    InterfaceName { ifname: String },
    #[error("create umem of {frames} frames of {frame_size} bytes: {reason}")]
    Umem {
        frames: u32,
        frame_size: u32,
        reason: String,
    },
    #[error("zero-copy not supported on {ifname} queue {queue}: {source}")]
    ZeroCopyUnsupported {
        ifname: String,
        queue: u32,
        source: io::Error,
    },
    #[error("open af_xdp socket on {ifname} queue {queue} in {mode} mode: {source}")]
    Socket {
        ifname: String,
        queue: u32,
        mode: XskMode,
        source: io::Error,
    },
    #[error("open af_xdp socket on {ifname} queue {queue}: {reason}")]
    Rings {
        ifname: String,
        queue: u32,
        reason: &'static str,
    },
    #[error("wake up tx of {ifname} queue {queue}: {source}")]
    Wakeup {
        ifname: String,
        queue: u32,
        source: io::Error,
    },
    #[error("poll af_xdp sockets: {source}")]
    Poll { source: io::Error },
    #[error("read xdp statistics of {ifname} queue {queue}: {source}")]
    Statistics {
        ifname: String,
        queue: u32,
        source: io::Error,
    },
}

impl XskError {
    /// Whether the bind failed because the queue is still held (a socket on it closed a
    /// moment ago and the kernel has not released it yet).
    pub fn is_busy(&self) -> bool {
        matches!(self, XskError::Socket { source, .. } if source.raw_os_error() == Some(libc::EBUSY))
    }

    /// Whether a zero-copy bind failed because the driver cannot do zero-copy (rather than
    /// for a reason copy mode would hit too).
    fn zero_copy_refused(&self) -> bool {
        matches!(self, XskError::Socket { mode: XskMode::ZeroCopy, source, .. }
            if refuses_zero_copy(source))
    }
}

/// The errors a zero-copy bind fails with when the driver lacks zero-copy support.
fn refuses_zero_copy(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL))
}

/// What to do with a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Return the frame to the free list.
    Drop,
    /// Transmit on port `n` of the group (the receiving port itself to send it back).
    Tx(usize),
    /// Transmit only the first `len` bytes (a filter shortened the packet) on port `n`;
    /// a `len` past the packet's end sends it whole.
    TxTrim(usize, u32),
}

/// Frames [`XskGroup::process_rx_batch`] hands its callback at once, at most.
pub const RX_CHUNK: usize = 64;

/// Running totals for one port, kept by the group as it moves frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets consumed from the RX ring (including any discarded by [`XskGroup::drain`]).
    pub rx: u64,
    /// Packets placed on the TX ring.
    pub tx: u64,
    /// Packets received here and dropped: verdict `Drop`, a verdict naming a port the group
    /// does not have, or discarded at drain.
    pub dropped: u64,
    /// Packets bound for this port's TX ring and dropped because it was full.
    pub ring_full: u64,
    /// Times the fill ring ran (nearly) dry with no free frame to top it up: the kernel
    /// drops what arrives until frames come back (its own count is in [`KernelStats`]).
    pub fill_empty: u64,
    /// `sendto` calls made to get the TX ring processed.
    pub kicks: u64,
    /// `poll` calls this port's socket took part in.
    pub polls: u64,
}

/// The kernel's own per-socket statistics (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

/// Idle iterations before a loop sleeps in `poll()` (when the group uses need_wakeup). Shared
/// by the worker and the baseline loop so both idle alike.
pub const IDLE_SPINS: u32 = 1024;
/// How long an idle loop sleeps at most, so a stop request is noticed promptly.
pub const IDLE_POLL_MS: i32 = 50;

/// Frames refilled at once at most; refilling in chunks keeps the fill ring's producer
/// cache line from bouncing to the kernel on every batch.
const REFILL_CHUNK: u32 = 64;
/// How long `open` keeps retrying a queue the kernel reports busy.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// How many times one flush kicks a TX ring the kernel keeps answering `EAGAIN` for.
const KICK_TRIES: u32 = 4;

/// One socket of a group and everything that moves frames through it.
struct Port {
    ifname: String,
    queue: u32,
    fd: RawFd,
    mode: XskMode,
    rx: RxQueue,
    tx: TxQueue,
    fill: FillQueue,
    comp: CompQueue,
    fill_size: u32,
    tx_size: u32,
    /// Frames given a `Tx` verdict for this port during the current batch.
    stage: Box<[FrameDesc]>,
    stage_len: usize,
    moves: Moves,
    counters: PortCounters,
    /// Inside a fill-ring starvation episode (counted once in `fill_empty`).
    starved: bool,
    /// What was put at each fill ring index, so a drained run can audit the ring's contents.
    #[cfg(debug_assertions)]
    fill_shadow: Box<[u64]>,
}

/// One UMEM and the sockets sharing it; see the module docs. Opened in the main thread, then
/// moved into the worker thread that drives it.
pub struct XskGroup {
    // Ports are declared (and so dropped) before the UMEM they were created from.
    ports: Vec<Port>,
    umem: Umem,
    need_wakeup: bool,
    frame_size: u64,
    frame_count: u32,
    /// Frames each fill ring (plus the kernel and RX ring behind it) may hold: an even share,
    /// so one busy port cannot take every frame and starve the others of receive buffers.
    fill_target: u64,
    refill_min: u64,
    /// The free list, a stack: `free[..free_len]` are frames in no ring.
    free: Box<[FrameDesc]>,
    free_len: usize,
    /// Descriptors of the batch being processed; its length bounds every batch.
    rx_buf: Box<[FrameDesc]>,
    held: u64,
    pollfds: Vec<libc::pollfd>,
}

impl fmt::Debug for XskGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|p| (&p.ifname, p.queue, p.mode))
            .collect();
        f.debug_struct("XskGroup")
            .field("ports", &ports)
            .field("frame_count", &self.frame_count)
            .field("frame_size", &self.frame_size)
            .field("free", &self.free_len)
            .finish()
    }
}

impl XskGroup {
    /// Creates the UMEM and binds one socket per `(ifname, queue)`. Sockets are bound with
    /// libxdp's program loading inhibited: sluice attaches its own steering program and puts
    /// each socket's [`fd`](Self::fd) into its XSKMAP. All frames start on the free list;
    /// [`refill`](Self::refill) hands them to the kernel.
    ///
    /// With [`ZeroCopy::Auto`], a driver refusing zero-copy (`EOPNOTSUPP`/`EINVAL`) makes the
    /// whole group reopen in copy mode: sockets sharing a UMEM must all use the same mode.
    pub fn open(cfg: &XskConfig, ports: &[(String, u32)]) -> Result<XskGroup, XskError> {
        cfg.validate()?;
        if ports.is_empty() {
            return Err(XskError::NoPorts);
        }
        let per_port = cfg.frame_count / ports.len() as u32;
        if per_port < config::MIN_FRAMES_PER_PORT {
            return Err(XskError::Config {
                field: "frame_count",
                reason: format!(
                    "{} frames leave {per_port} per port for {} ports, need {}",
                    cfg.frame_count,
                    ports.len(),
                    config::MIN_FRAMES_PER_PORT
                ),
            });
        }
        for (i, (ifname, queue)) in ports.iter().enumerate() {
            if ports[..i].iter().any(|(n, q)| n == ifname && q == queue) {
                return Err(XskError::DuplicatePort {
                    ifname: ifname.clone(),
                    queue: *queue,
                });
            }
        }
        match cfg.zero_copy {
            ZeroCopy::Off => Self::open_in(cfg, ports, XskMode::Copy),
            ZeroCopy::On => Self::open_in(cfg, ports, XskMode::ZeroCopy).map_err(|e| match e {
                XskError::Socket {
                    ifname,
                    queue,
                    source,
                    mode: XskMode::ZeroCopy,
                } if refuses_zero_copy(&source) => XskError::ZeroCopyUnsupported {
                    ifname,
                    queue,
                    source,
                },
                other => other,
            }),
            ZeroCopy::Auto => match Self::open_in(cfg, ports, XskMode::ZeroCopy) {
                Err(e) if e.zero_copy_refused() => {
                    tracing::info!("{e}; falling back to copy mode");
                    Self::open_in(cfg, ports, XskMode::Copy)
                }
                other => other,
            },
        }
    }

    fn open_in(
        cfg: &XskConfig,
        ports: &[(String, u32)],
        mode: XskMode,
    ) -> Result<XskGroup, XskError> {
        let umem_err = |reason: String| XskError::Umem {
            frames: cfg.frame_count,
            frame_size: cfg.frame_size,
            reason,
        };
        let umem_cfg = UmemConfig::builder()
            .frame_size(FrameSize::new(cfg.frame_size).map_err(|e| umem_err(e.to_string()))?)
            .fill_queue_size(QueueSize::new(cfg.fill_ring()).map_err(|e| umem_err(e.to_string()))?)
            .comp_queue_size(QueueSize::new(cfg.comp_ring()).map_err(|e| umem_err(e.to_string()))?)
            .build()
            .map_err(|e| umem_err(e.to_string()))?;
        let frames =
            NonZeroU32::new(cfg.frame_count).ok_or_else(|| umem_err("no frames".to_string()))?;
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| {
            umem_err(match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })
        })?;

        let mut bind = match mode {
            XskMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            XskMode::Copy => BindFlags::XDP_COPY,
        };
        if cfg.need_wakeup {
            bind |= BindFlags::XDP_USE_NEED_WAKEUP;
        }
        let ring = |size| QueueSize::new(size).map_err(|e| umem_err(e.to_string()));
        let sock_cfg = SocketConfig::builder()
            .rx_queue_size(ring(cfg.rx_ring)?)
            .tx_queue_size(ring(cfg.tx_ring)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();

        let batch_cap = cfg.rx_ring as usize;
        let mut opened = Vec::with_capacity(ports.len());
        for (ifname, queue) in ports {
            let iface: Interface = ifname.parse().map_err(|_| XskError::InterfaceName {
                ifname: ifname.clone(),
            })?;
            let (tx, rx, rings) = bind_socket(sock_cfg, &umem, &iface, ifname, *queue, mode)?;
            let (fill, comp) = rings.ok_or_else(|| XskError::Rings {
                ifname: ifname.clone(),
                queue: *queue,
                reason: "no fill and completion rings for a new (interface, queue) pair",
            })?;
            let fd = rx.fd().as_raw_fd();
            let zc = sys::is_zero_copy(fd).map_err(|source| XskError::Socket {
                ifname: ifname.clone(),
                queue: *queue,
                mode,
                source,
            })?;
            if !zc {
                // Copy mode transmits at most a budget of frames per kick (32 by default);
                // letting one kick drain the whole ring saves syscalls when forwarding.
                // Kernels before 6.17 lack the option; they keep the default.
                if let Err(e) = sys::set_tx_budget(fd, cfg.tx_ring) {
                    tracing::debug!(
                        ifname,
                        queue,
                        "keeping the default copy-mode tx budget: {e}"
                    );
                }
            }
            opened.push(Port {
                ifname: ifname.clone(),
                queue: *queue,
                fd,
                mode: if zc { XskMode::ZeroCopy } else { XskMode::Copy },
                rx,
                tx,
                fill,
                comp,
                fill_size: cfg.fill_ring(),
                tx_size: cfg.tx_ring,
                stage: vec![FrameDesc::default(); batch_cap].into_boxed_slice(),
                stage_len: 0,
                moves: Moves::default(),
                counters: PortCounters::default(),
                starved: false,
                #[cfg(debug_assertions)]
                fill_shadow: vec![0; cfg.fill_ring() as usize].into_boxed_slice(),
            });
        }

        let pollfds = opened
            .iter()
            .map(|p| libc::pollfd {
                fd: p.fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let fill_target = u64::from(cfg.frame_count) / opened.len() as u64;
        Ok(XskGroup {
            ports: opened,
            umem,
            need_wakeup: cfg.need_wakeup,
            frame_size: u64::from(cfg.frame_size),
            frame_count: cfg.frame_count,
            fill_target,
            refill_min: u64::from(REFILL_CHUNK).min(fill_target / 4).max(1),
            free_len: descs.len(),
            free: descs.into_boxed_slice(),
            rx_buf: vec![FrameDesc::default(); batch_cap].into_boxed_slice(),
            held: 0,
            pollfds,
        })
    }

    /// Number of ports (sockets) in the group.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The socket descriptor of port `i`, for the steering program's XSKMAP. Panics if `i` is
    /// not a port of the group (a caller bug, not an input error).
    pub fn fd(&self, i: usize) -> RawFd {
        self.ports[i].fd
    }

    /// The mode port `i` runs in, as the kernel reports it.
    pub fn mode(&self, i: usize) -> XskMode {
        self.ports[i].mode
    }

    /// Interface name and queue of port `i`.
    pub fn port(&self, i: usize) -> (&str, u32) {
        (&self.ports[i].ifname, self.ports[i].queue)
    }

    /// Largest batch [`process_rx`](Self::process_rx) handles (the RX ring size).
    pub fn max_batch(&self) -> usize {
        self.rx_buf.len()
    }

    pub fn need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    pub fn counters(&self, i: usize) -> PortCounters {
        self.ports[i].counters
    }

    /// Frames on the free list.
    pub fn free_frames(&self) -> usize {
        self.free_len
    }

    /// Frames sent on port `i` and not yet reclaimed.
    pub fn tx_in_flight(&self, i: usize) -> u64 {
        self.ports[i].moves.tx_side()
    }

    /// Whether no port has frames out for transmission.
    pub fn tx_idle(&self) -> bool {
        self.ports.iter().all(|p| p.moves.tx_side() == 0)
    }

    /// Packets waiting on port `p`'s RX ring, up to `max` (cheap: usually answered from a
    /// cached ring position).
    #[inline]
    pub fn rx_ready(&mut self, p: usize, max: usize) -> usize {
        self.ports[p].rx.nb_avail(max.min(u32::MAX as usize) as u32) as usize
    }

    /// Whether the kernel needs a `poll` to keep filling port `p` (zero-copy drivers set this
    /// when they run out of fill frames and stop).
    pub fn fill_needs_wakeup(&self, p: usize) -> bool {
        self.need_wakeup && self.ports[p].fill.needs_wakeup()
    }

    /// Takes up to `max` packets off port `p`'s RX ring and asks `decide` what to do with each.
    /// Packets for transmission are queued per destination port and put on each TX ring with
    /// one produce call after the batch; the ring is kicked when the kernel asks for it. A full
    /// TX ring drops the overflow (counted as `ring_full` on the destination). Returns the
    /// number of packets received.
    #[inline]
    pub fn process_rx<F>(&mut self, p: usize, max: usize, mut decide: F) -> Result<usize, XskError>
    where
        F: FnMut(&mut [u8]) -> Verdict,
    {
        self.process_rx_batch(p, max, |frames, verdicts| {
            for (frame, verdict) in frames.iter_mut().zip(verdicts.iter_mut()) {
                *verdict = decide(frame);
            }
        })
    }

    /// [`process_rx`](Self::process_rx) for callers that decide a batch at once: the packets
    /// taken off the ring are handed to `decide` together, [`RX_CHUNK`] at a time (so once
    /// for batches up to that size), with a verdict slot per packet (`Drop` until set).
    #[inline]
    pub fn process_rx_batch<F>(&mut self, p: usize, max: usize, mut decide: F) -> Result<usize, XskError>
    where
        F: FnMut(&mut [&mut [u8]], &mut [Verdict]),
    {
        let n = max.min(self.rx_buf.len());
        let XskGroup {
            ports,
            umem,
            free,
            free_len,
            rx_buf,
            held,
            ..
        } = self;
        let port = &mut ports[p];
        // SAFETY: the descriptors the RX ring returns are frames of this UMEM: the ring belongs
        // to a socket created from `umem`, and only frames of `umem` are ever put on its fill
        // ring. `rx_buf` holds no frame we still need (its previous batch was fully disposed).
        let got = unsafe { port.rx.consume(&mut rx_buf[..n]) };
        if got == 0 {
            return Ok(0);
        }
        port.moves.rx_consumed += got as u64;
        port.counters.rx += got as u64;
        *held += got as u64;

        let mut dropped = 0u64;
        for chunk in rx_buf[..got].chunks_mut(RX_CHUNK) {
            let mut verdicts = [Verdict::Drop; RX_CHUNK];
            {
                let mut frames: [&mut [u8]; RX_CHUNK] = std::array::from_fn(|_| <&mut [u8]>::default());
                for (slot, desc) in frames.iter_mut().zip(chunk.iter_mut()) {
                    // SAFETY: `desc` was just consumed from the RX ring, so the kernel is done
                    // with its frame, and no other descriptor of the chunk names the same frame
                    // (a frame is on one ring at a time), so the slices are disjoint. Each
                    // slice lives in `frames`, which is dropped at the end of this block,
                    // before any descriptor is disposed of (put on a ring or the free list);
                    // the UMEM outlives it, borrowed for the whole call.
                    *slot = unsafe {
                        let mut data = umem.data_mut(desc);
                        let bytes = data.contents_mut();
                        std::slice::from_raw_parts_mut(bytes.as_mut_ptr(), bytes.len())
                    };
                }
                let k = chunk.len();
                decide(&mut frames[..k], &mut verdicts[..k]);
            }
            for (desc, &verdict) in chunk.iter_mut().zip(&verdicts) {
                dropped += dispose(ports, umem, free, free_len, desc, verdict);
            }
        }
        ports[p].counters.dropped += dropped;
        *held -= got as u64;

        for dst in ports.iter_mut() {
            if dst.stage_len > 0 {
                flush_tx(dst, free, free_len, self.need_wakeup)?;
            }
        }
        Ok(got)
    }

    /// Takes up to `count` frames from the free list, lets `write(i, buf)` fill the `i`-th
    /// (`buf` spans the whole frame; return the packet length) and queues them on port `p`'s
    /// TX ring. Returns how many were queued: fewer than `count` when the free list or the TX
    /// ring runs short. Used by traffic generators and tests; call
    /// [`service_tx`](Self::service_tx) to reclaim the frames once sent.
    pub fn transmit<F>(&mut self, p: usize, count: usize, mut write: F) -> Result<usize, XskError>
    where
        F: FnMut(usize, &mut [u8]) -> usize,
    {
        let room = self.ports[p]
            .tx
            .nb_free(count.min(u32::MAX as usize) as u32) as usize;
        let n = count
            .min(self.free_len)
            .min(room)
            .min(self.ports[p].stage.len());
        let XskGroup {
            ports,
            umem,
            free,
            free_len,
            ..
        } = self;
        let port = &mut ports[p];
        for i in 0..n {
            *free_len -= 1;
            let mut desc = free[*free_len];
            {
                // SAFETY: frames on the free list are in no ring, so nothing else references
                // this one until it is put on the TX ring below, after this borrow ends.
                let mut data = unsafe { umem.data_mut(&mut desc) };
                let mut cursor = data.cursor();
                let cap = cursor.buf_len();
                cursor.set_pos(cap);
                let len = write(i, data.contents_mut()).min(cap);
                data.cursor().set_pos(len);
            }
            port.stage[i] = desc;
        }
        port.stage_len = n;
        flush_tx(port, free, free_len, self.need_wakeup)?;
        Ok(n)
    }

    /// Reclaims port `p`'s completed transmissions onto the free list and, if frames are still
    /// waiting on its TX ring and the kernel wants a kick for them, kicks it. Returns the number
    /// of frames reclaimed.
    #[inline]
    pub fn service_tx(&mut self, p: usize) -> Result<usize, XskError> {
        let XskGroup {
            ports,
            free,
            free_len,
            ..
        } = self;
        let port = &mut ports[p];
        if port.moves.tx_side() == 0 {
            return Ok(0);
        }
        // SAFETY: completions name frames this socket transmitted, all of this UMEM; the slots
        // past `free_len` hold no live frame and are overwritten.
        let got = unsafe { port.comp.consume(&mut free[*free_len..]) };
        *free_len += got;
        port.moves.comp_consumed += got as u64;
        if port.moves.tx_side() > 0
            && port.tx.nb_free_exact() < port.tx_size
            && (!self.need_wakeup || port.tx.needs_wakeup())
        {
            kick(port)?;
        }
        Ok(got)
    }

    /// Tops port `p`'s fill ring up to its share of the frames, from the free list, once it
    /// is short by a worthwhile chunk. Returns the number of frames handed over.
    #[inline]
    pub fn refill(&mut self, p: usize) -> usize {
        let XskGroup {
            ports,
            free,
            free_len,
            fill_target,
            refill_min,
            ..
        } = self;
        let port = &mut ports[p];
        let want = fill_target.saturating_sub(port.moves.rx_side());
        if want < *refill_min {
            return 0;
        }
        let n = (want as usize).min(*free_len);
        if n == 0 {
            // No frame to give. Only a fill ring that is really running dry is worth
            // reporting (one count per episode); being short by a batch is the normal state
            // while frames are out on TX.
            if !port.starved && port.fill_size - port.fill.nb_free_exact() < *refill_min as u32 {
                port.starved = true;
                port.counters.fill_empty += 1;
            }
            return 0;
        }
        port.starved = false;
        let start = *free_len - n;
        // SAFETY: frames on the free list are this UMEM's and in no ring. The ring always has
        // room: it holds twice the UMEM's frame count.
        let put = unsafe { port.fill.produce(&free[start..*free_len]) };
        #[cfg(debug_assertions)]
        {
            let mask = port.fill_shadow.len() as u64 - 1;
            for (k, d) in free[start..start + put].iter().enumerate() {
                let idx = (port.moves.fill_produced + k as u64) & mask;
                port.fill_shadow[idx as usize] = d.addr() as u64;
            }
        }
        // `produce` is all or nothing; on the impossible "no room" the frames stay free.
        *free_len -= put;
        port.moves.fill_produced += put as u64;
        put
    }

    /// Sleeps until a packet arrives on any port or `timeout_ms` passes (a zero-copy driver
    /// that asked for a wakeup gets one from this too). Returns whether any socket is readable.
    pub fn poll(&mut self, timeout_ms: i32) -> Result<bool, XskError> {
        for port in &mut self.ports {
            port.counters.polls += 1;
        }
        sys::poll_readable(&mut self.pollfds, timeout_ms)
            .map_err(|source| XskError::Poll { source })
    }

    /// The kernel's statistics for port `i` (one `getsockopt`).
    pub fn kernel_stats(&self, i: usize) -> Result<KernelStats, XskError> {
        let port = &self.ports[i];
        let s = port
            .rx
            .fd()
            .xdp_statistics()
            .map_err(|source| XskError::Statistics {
                ifname: port.ifname.clone(),
                queue: port.queue,
                source,
            })?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped(),
            rx_invalid_descs: s.rx_invalid_descs(),
            tx_invalid_descs: s.tx_invalid_descs(),
            rx_ring_full: s.rx_ring_full(),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs(),
            tx_ring_empty_descs: s.tx_ring_empty_descs(),
        })
    }

    /// Ends a run: discards whatever waits on the RX rings (counted as received and dropped),
    /// then waits up to `timeout` for every outstanding transmission to complete, and accounts
    /// for every frame. Packets may keep arriving meanwhile; they stay counted as in the kernel.
    pub fn drain(&mut self, timeout: Duration) -> FrameAccount {
        for p in 0..self.ports.len() {
            while self
                .process_rx(p, usize::MAX, |_| Verdict::Drop)
                .unwrap_or(0)
                > 0
            {}
        }
        let deadline = Instant::now() + timeout;
        loop {
            for p in 0..self.ports.len() {
                // A device that went away cannot complete anything; the account will say so.
                let _ = self.service_tx(p);
            }
            if self.tx_idle() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.account()
    }

    /// Where every frame is right now, with an audit of the frames userspace can see. Exact
    /// when no worker is running; meant for after [`drain`](Self::drain).
    pub fn account(&mut self) -> FrameAccount {
        let mut fill = 0;
        let mut rx_side = 0;
        let mut tx_side = 0;
        let mut auditor = Auditor::new(
            u64::from(self.frame_count),
            self.frame_size,
            cfg!(debug_assertions),
        );
        for desc in &self.free[..self.free_len] {
            auditor.mark(desc.addr() as u64);
        }
        for port in &mut self.ports {
            let on_ring = u64::from(port.fill_size - port.fill.nb_free_exact());
            fill += on_ring;
            rx_side += port.moves.rx_side();
            tx_side += port.moves.tx_side();
            #[cfg(debug_assertions)]
            {
                let mask = port.fill_shadow.len() as u64 - 1;
                let end = port.moves.fill_produced;
                for idx in end.wrapping_sub(on_ring)..end {
                    auditor.mark(port.fill_shadow[(idx & mask) as usize]);
                }
            }
        }
        FrameAccount {
            total: u64::from(self.frame_count),
            free: self.free_len as u64,
            fill,
            rx_or_kernel: rx_side.saturating_sub(fill),
            held: self.held,
            tx_in_flight: tx_side,
            audit: auditor.finish(),
        }
    }
}

type SocketRings = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

/// Creates and binds one socket on `umem`. The kernel releases a closed socket's hold on its
/// queue from a workqueue, so a queue freed a moment ago (a restart, a previous test) reports
/// `EBUSY` briefly: that is retried for up to [`BUSY_RETRY`].
fn bind_socket(
    sock_cfg: SocketConfig,
    umem: &Umem,
    iface: &Interface,
    ifname: &str,
    queue: u32,
    mode: XskMode,
) -> Result<SocketRings, XskError> {
    let busy_until = Instant::now() + BUSY_RETRY;
    loop {
        // SAFETY: xsk-rs requires INHIBIT_PROG_LOAD when a UMEM is shared with a socket already
        // bound to the same (interface, queue); it is set for every socket sluice creates, and
        // `open` rejects duplicate pairs besides. A failed attempt leaves the UMEM's saved rings
        // where they were (libxdp clears them only on success), so retrying is sound.
        let err = match unsafe { Socket::new(sock_cfg, umem, iface, queue) } {
            Ok(rings) => return Ok(rings),
            Err(e) => e,
        };
        let source = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error)
            .map(io::Error::from_raw_os_error)
            .unwrap_or_else(|| io::Error::other(err.to_string()));
        if source.raw_os_error() == Some(libc::EBUSY) && Instant::now() < busy_until {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        return Err(XskError::Socket {
            ifname: ifname.to_string(),
            queue,
            mode,
            source,
        });
    }
}

/// Stages received frame `desc` for transmission as `verdict` says, or returns it to the free
/// list (a drop, an unknown port, a full staging area); returns 1 when it was dropped.
#[inline(always)]
fn dispose(ports: &mut [Port], umem: &Umem, free: &mut [FrameDesc], free_len: &mut usize, desc: &mut FrameDesc, verdict: Verdict) -> u64 {
    let (q, trim) = match verdict {
        Verdict::Drop => (None, None),
        Verdict::Tx(q) => (Some(q), None),
        Verdict::TxTrim(q, len) => (Some(q), Some(len)),
    };
    if let Some(len) = trim {
        // SAFETY: `desc` was consumed from the RX ring and is in no ring yet; no other
        // reference to its frame is alive (the caller's view of it has ended).
        let mut data = unsafe { umem.data_mut(desc) };
        let len = (len as usize).min(data.contents().len());
        data.cursor().set_pos(len);
    }
    let staged = match q.and_then(|q| ports.get_mut(q)) {
        Some(dst) => match dst.stage.get_mut(dst.stage_len) {
            Some(slot) => {
                *slot = *desc;
                dst.stage_len += 1;
                true
            }
            None => false,
        },
        None => false,
    };
    if staged {
        0
    } else {
        push_free(free, free_len, *desc);
        1
    }
}

/// Pushes a frame on the free list. The list has a slot for every frame of the UMEM, so it
/// cannot be full unless the kernel returned a frame twice; such an extra copy is not kept (the
/// account then shows the discrepancy instead of the program crashing).
#[inline]
fn push_free(free: &mut [FrameDesc], free_len: &mut usize, desc: FrameDesc) {
    if let Some(slot) = free.get_mut(*free_len) {
        *slot = desc;
        *free_len += 1;
    }
}

/// Puts port's staged frames on its TX ring in one produce call, returns what does not fit to
/// the free list, and kicks the ring if the kernel needs it.
#[inline]
fn flush_tx(
    port: &mut Port,
    free: &mut [FrameDesc],
    free_len: &mut usize,
    need_wakeup: bool,
) -> Result<(), XskError> {
    let n = port.stage_len;
    port.stage_len = 0;
    let room = port.tx.nb_free(n as u32) as usize;
    let k = n.min(room);
    // SAFETY: staged frames are this UMEM's (from its RX rings or free list) and in no ring;
    // `k` is at most the free room, so `produce` takes all of them.
    let sent = unsafe { port.tx.produce(&port.stage[..k]) };
    for desc in &port.stage[sent..n] {
        push_free(free, free_len, *desc);
    }
    port.moves.tx_produced += sent as u64;
    port.counters.tx += sent as u64;
    port.counters.ring_full += (n - sent) as u64;
    if sent > 0 && (!need_wakeup || port.tx.needs_wakeup()) {
        kick(port)?;
    }
    Ok(())
}

/// Kicks the TX ring, again while the kernel stops early and frames remain (copy mode sends a
/// bounded number per syscall).
fn kick(port: &mut Port) -> Result<(), XskError> {
    for _ in 0..KICK_TRIES {
        port.counters.kicks += 1;
        match sys::kick_tx(port.fd) {
            Ok(Kick::Done | Kick::Busy) => return Ok(()),
            Ok(Kick::Again) if port.tx.nb_free_exact() < port.tx_size => {}
            Ok(Kick::Again) => return Ok(()),
            Err(source) => {
                return Err(XskError::Wakeup {
                    ifname: port.ifname.clone(),
                    queue: port.queue,
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_rejects_bad_port_lists_before_touching_the_kernel() {
        let cfg = XskConfig::default();
        assert!(matches!(XskGroup::open(&cfg, &[]), Err(XskError::NoPorts)));
        let dup = [
            ("a".to_string(), 0),
            ("b".to_string(), 0),
            ("a".to_string(), 0),
        ];
        let err = XskGroup::open(&cfg, &dup).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port a queue 0 appears twice in one xsk group"
        );
        let few = XskConfig {
            frame_count: 64,
            ..cfg
        };
        let three = [
            ("a".to_string(), 0),
            ("b".to_string(), 0),
            ("c".to_string(), 0),
        ];
        let err = XskGroup::open(&few, &three).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid xsk config: frame_count: 64 frames leave 21 per port for 3 ports, need 32"
        );
        let bad = XskConfig { rx_ring: 3, ..cfg };
        assert!(matches!(
            XskGroup::open(&bad, &dup),
            Err(XskError::Config {
                field: "rx_ring",
                ..
            })
        ));
    }

    #[test]
    fn zero_copy_refusal_is_recognised_only_for_zero_copy_binds() {
        let e = |mode, errno| XskError::Socket {
            ifname: "x".into(),
            queue: 0,
            mode,
            source: io::Error::from_raw_os_error(errno),
        };
        assert!(e(XskMode::ZeroCopy, libc::EOPNOTSUPP).zero_copy_refused());
        assert!(e(XskMode::ZeroCopy, libc::EINVAL).zero_copy_refused());
        assert!(!e(XskMode::ZeroCopy, libc::ENODEV).zero_copy_refused());
        assert!(!e(XskMode::Copy, libc::EOPNOTSUPP).zero_copy_refused());
    }

    fn assert_send<T: Send>() {}

    #[test]
    fn group_can_move_to_a_worker_thread() {
        assert_send::<XskGroup>();
    }
}
