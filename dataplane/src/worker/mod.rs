//! The per-core packet loop. A [`Worker`] owns one [`XskGroup`] (the ports at one queue index
//! that forward to each other, or a single port) and runs each port's pipeline on every packet
//! received there, until told to stop. Safe code only: frame ownership is enforced by the
//! `xsk` module, this loop decides what happens to packets and when to sleep.
//!
//! Per iteration: take the current pipelines and firewall if new ones were published (a batch
//! boundary: each batch runs wholly on one version), hand over the batch-time histogram if
//! asked; then per port: reclaim TX completions, top up the fill ring, take a batch off the RX
//! ring, run the firewall on every packet and the pipeline on those it let through (one fused
//! call for the batch), put the batch's transmissions on the TX rings with one produce call
//! per ring (kicking only when the kernel asks), and publish the counters. No allocation, lock or syscall per packet; syscalls only for kicks
//! and idle sleeps.
//!
//! A config reload that changes the set of ports renumbers them; a worker whose own sockets
//! did not change keeps running and is re-pointed through its [`Mailbox`] ([`Rebind`]: the new
//! pipeline table, its ports' new indices, the new firewall cell), at a batch boundary.
//!
//! The firewall ([`firewall::Gate`]) is a gate in front of every port's pipeline: a frame its
//! rules drop or reject is dropped (counted in the queue's `drop`), a frame they accept goes on
//! to the port's pipeline, whose stages and default action decide where it goes. A firewall
//! `sample` rule copies the frame to the capture ring like a `sample` stage does. While a
//! capture runs with its own filter ([`capture`]), that filter alone feeds the capture ring.

pub mod capture;
pub mod firewall;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::firewall::Verdict as FwVerdict;
use crate::pipeline::capture::CaptureTap;
use crate::bpf::jit::PacketRef;
use crate::pipeline::{DefaultAction, Decision, Outcome, Pipeline, PipelineSpec, PortEnv, Published, WorkerView};
use crate::stats::{HistRecorder, QueueSnapshot, QueueStats};
use crate::wire::{self, ETHERNET_HEADER_LEN};
use crate::xsk::{
    FrameAccount, IDLE_POLL_MS, IDLE_SPINS, PortCounters, RX_CHUNK, Verdict, XskError, XskGroup,
};

/// A fixed action for every packet received on a port: the pipeline-less setup of
/// [`Worker::new`], kept for tests and benches of the bare dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Discard it.
    Drop,
    /// Swap its MAC addresses and send it back out of the port it came in on.
    Reflect,
    /// Send it unchanged out of the group's port with this index.
    Forward(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker has {actions} actions for {ports} ports")]
    ActionCount { actions: usize, ports: usize },
    #[error("port {port} forwards to port {to}, but the group has {ports} ports")]
    ForwardTarget {
        port: usize,
        to: usize,
        ports: usize,
    },
    #[error("batch size {batch} not in 1..={max}")]
    BatchSize { batch: usize, max: usize },
    #[error("worker has {stats} stats slots for {ports} ports")]
    StatsCount { stats: usize, ports: usize },
    #[error("worker has {setup} port setups for {ports} ports")]
    SetupCount { setup: usize, ports: usize },
    #[error("build the fixed pipeline of port {port}: {reason}")]
    Pipeline { port: usize, reason: String },
    #[error("worker loop: {0}")]
    Xsk(#[from] XskError),
}

/// How a worker serves one port of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSetup {
    /// Index of the port in the config (and in [`Published`]).
    pub port: usize,
    /// The group index of the forwarding peer, if the port has one.
    pub peer: Option<usize>,
    /// The queue this socket serves (the `rx_queue_index` filters see).
    pub queue: u32,
    /// The interface's index (the `ingress_ifindex` filters see).
    pub ifindex: u32,
    /// This worker's counter block in the port's pipelines.
    pub slot: usize,
}

/// Everything a pipeline worker needs besides its sockets.
#[derive(Debug)]
pub struct WorkerSetup {
    pub published: Arc<Published>,
    /// One per group port, in group order.
    pub ports: Vec<PortSetup>,
    pub batch_size: usize,
    pub hist: Option<HistRecorder>,
    pub capture: Option<CaptureTap>,
    /// The firewall in front of the pipelines, if the dataplane has one.
    pub firewall: Option<firewall::Gate>,
    /// Where a filtered capture's filter is published.
    pub capture_filter: Option<capture::CaptureView>,
    /// Where the controller re-points the worker when ports are renumbered.
    pub mailbox: Option<Arc<Mailbox>>,
}

/// What a running worker switches to when the dataplane's ports are renumbered.
#[derive(Debug)]
pub struct Rebind {
    pub published: Arc<Published>,
    /// The new index in `published` of each group port, in group order (same slots).
    pub ports: Vec<usize>,
    /// The firewall cell the worker's gate reads from now, and its index there.
    pub firewall: Option<(Arc<firewall::FirewallCell>, usize)>,
}

/// Where the controller posts a [`Rebind`] for one worker. The worker looks at one counter per
/// batch boundary and locks only when something was posted.
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: Mutex<Option<Rebind>>,
    posted: AtomicU64,
    applied: AtomicU64,
}

impl Mailbox {
    /// Posts `rebind`, replacing one not yet applied; returns the ticket to wait for.
    pub fn post(&self, rebind: Rebind) -> u64 {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending = Some(rebind);
        self.posted.fetch_add(1, Ordering::Release) + 1
    }

    /// Waits up to `timeout` until the worker applied `ticket`; false on timeout.
    pub fn wait(&self, ticket: u64, timeout: Duration) -> bool {
        let start = Instant::now();
        while self.applied.load(Ordering::Acquire) < ticket {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    #[inline(always)]
    fn due(&self) -> bool {
        self.posted.load(Ordering::Acquire) != self.applied.load(Relaxed)
    }

    #[cold]
    fn take(&self) -> (Option<Rebind>, u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        (pending.take(), self.posted.load(Ordering::Acquire))
    }
}

/// The capture `stage` index of frames a firewall `sample` rule picked.
pub const FIREWALL_SAMPLE_STAGE: u32 = u32::MAX;

/// Batch size when the config does not say.
pub const DEFAULT_BATCH: usize = 64;
/// How long a stopping worker waits for its last transmissions to complete.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Worker-side totals the group does not keep.
#[derive(Debug, Clone, Copy, Default)]
struct Local {
    busy_ns: u64,
    busy_pkts: u64,
    busy_batches: u64,
    malformed: u64,
}

pub struct Worker {
    group: XskGroup,
    view: WorkerView,
    ports: Box<[PortSetup]>,
    batch_size: usize,
    hist: Option<HistRecorder>,
    capture: Option<CaptureTap>,
    firewall: Option<firewall::Gate>,
    capture_filter: Option<capture::CaptureView>,
    mailbox: Option<Arc<Mailbox>>,
    /// The pipeline's outcomes for the batch being processed; `run_batch` overwrites the
    /// slots it is given, so they are not reset between batches.
    outs: [Outcome; RX_CHUNK],
    /// When the last non-empty batch ended (read once per batch, reused by the firewall's
    /// counter publishing instead of another clock read).
    batch_end: Instant,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("group", &self.group)
            .field("ports", &self.ports)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl Worker {
    /// A worker applying `actions[i]` to every packet received on port `i` of `group`, through
    /// a private stage-less pipeline per port. Fills the group's fill rings right away, so
    /// traffic is received from the moment the sockets are steered to, and waits in the RX
    /// rings until [`run`](Self::run) starts.
    pub fn new(
        group: XskGroup,
        actions: Vec<Action>,
        batch_size: usize,
    ) -> Result<Worker, WorkerError> {
        let ports = group.len();
        if actions.len() != ports {
            return Err(WorkerError::ActionCount {
                actions: actions.len(),
                ports,
            });
        }
        let names: Vec<String> = (0..ports).map(|i| i.to_string()).collect();
        let mut pipelines = Vec::with_capacity(ports);
        let mut setups = Vec::with_capacity(ports);
        for (port, action) in actions.iter().enumerate() {
            let (default, peer) = match *action {
                Action::Drop => (DefaultAction::Drop, None),
                Action::Reflect => (DefaultAction::Reflect, None),
                Action::Forward(to) if to >= ports => {
                    return Err(WorkerError::ForwardTarget { port, to, ports });
                }
                Action::Forward(to) => (DefaultAction::Forward(names[to].clone()), Some(to)),
            };
            let env = PortEnv { port: &names[port], peer: peer.map(|p| names[p].as_str()), workers: 1 };
            let pipeline = Pipeline::compile(&PipelineSpec::empty(default), &env)
                .map_err(|e| WorkerError::Pipeline { port, reason: e.to_string() })?;
            pipelines.push(Arc::new(pipeline));
            // Stage-less pipelines never look at the ingress interface.
            setups.push(PortSetup { port, peer, queue: group.port(port).1, ifindex: 0, slot: 0 });
        }
        let setup = WorkerSetup {
            published: Arc::new(Published::new(pipelines)),
            ports: setups,
            batch_size,
            hist: None,
            capture: None,
            firewall: None,
            capture_filter: None,
            mailbox: None,
        };
        Worker::with_pipelines(group, setup)
    }

    /// A worker running the pipelines `setup.published` holds for its ports, picking up every
    /// new one at a batch boundary. Primes the fill rings like [`new`](Self::new).
    pub fn with_pipelines(group: XskGroup, setup: WorkerSetup) -> Result<Worker, WorkerError> {
        let ports = group.len();
        if setup.ports.len() != ports {
            return Err(WorkerError::SetupCount { setup: setup.ports.len(), ports });
        }
        for (port, s) in setup.ports.iter().enumerate() {
            if let Some(to) = s.peer
                && to >= ports
            {
                return Err(WorkerError::ForwardTarget { port, to, ports });
            }
        }
        let max = group.max_batch();
        if setup.batch_size == 0 || setup.batch_size > max {
            return Err(WorkerError::BatchSize {
                batch: setup.batch_size,
                max,
            });
        }
        let view = WorkerView::new(
            setup.published,
            setup.ports.iter().map(|s| s.port).collect(),
            setup.ports.iter().map(|s| s.slot).collect(),
        );
        let mut worker = Worker {
            group,
            view,
            ports: setup.ports.into(),
            batch_size: setup.batch_size,
            hist: setup.hist,
            capture: setup.capture,
            firewall: setup.firewall,
            capture_filter: setup.capture_filter,
            mailbox: setup.mailbox,
            outs: [PLAIN_DROP; RX_CHUNK],
            batch_end: Instant::now(),
        };
        worker.prime();
        Ok(worker)
    }

    /// Hands every port its share of frames for receiving, so packets steered to the
    /// sockets find fill frames even before the worker thread gets going.
    fn prime(&mut self) {
        for p in 0..self.group.len() {
            while self.group.refill(p) > 0 {}
        }
    }

    /// Records every non-empty batch's processing time into `hist` from now on, as a worker
    /// the runtime builds does (replacing any recorder it had).
    pub fn record_batch_times(&mut self, hist: HistRecorder) {
        self.hist = Some(hist);
    }

    pub fn group(&self) -> &XskGroup {
        &self.group
    }

    pub fn into_group(self) -> XskGroup {
        self.group
    }

    /// Processes packets until `stop` is set, publishing port `i`'s counters to `stats[i]`
    /// after every busy iteration, then drains and returns where every frame is.
    /// An idle worker (need_wakeup mode) sleeps in `poll()` for at most [`IDLE_POLL_MS`], so
    /// `stop` is noticed within that time.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        stats: &[Arc<QueueStats>],
    ) -> Result<FrameAccount, WorkerError> {
        let ports = self.group.len();
        if stats.len() != ports {
            return Err(WorkerError::StatsCount {
                stats: stats.len(),
                ports,
            });
        }
        let mut local = vec![Local::default(); ports];
        self.prime();
        let mut idle = 0u32;
        while !stop.load(Relaxed) {
            // The batch boundary: nothing of the previous batches is in flight in a pipeline.
            if self.mailbox.as_ref().is_some_and(|m| m.due()) {
                self.rebind();
            }
            self.view.refresh();
            if let Some(g) = &mut self.firewall {
                g.refresh();
            }
            if let Some(c) = &mut self.capture_filter {
                c.refresh();
            }
            if let Some(h) = &mut self.hist {
                h.serve();
            }
            let mut received = 0;
            for (p, l) in local.iter_mut().enumerate() {
                received += self.step(p, l)?;
            }
            if received > 0 {
                idle = 0;
                self.publish(&local, stats);
                if let Some(g) = &mut self.firewall {
                    g.maybe_publish(self.batch_end);
                }
                continue;
            }
            idle += 1;
            if self.group.need_wakeup()
                && self.group.tx_idle()
                && (idle >= IDLE_SPINS || (0..ports).any(|p| self.group.fill_needs_wakeup(p)))
            {
                // A sleeping worker must not hold up a pipeline swap.
                self.view.park();
                if let Some(c) = &mut self.capture_filter {
                    c.park();
                }
                if let Some(g) = &mut self.firewall {
                    g.publish();
                }
                self.group.poll(IDLE_POLL_MS)?;
                idle = 0;
                self.publish(&local, stats);
            }
        }
        self.view.park();
        if let Some(c) = &mut self.capture_filter {
            c.park();
        }
        let account = self.group.drain(DRAIN_TIMEOUT);
        self.publish(&local, stats);
        if let Some(g) = &mut self.firewall {
            g.publish();
        }
        Ok(account)
    }

    /// Applies a posted [`Rebind`]: the old table's pipelines are let go here, so a swap
    /// waiting on them completes.
    #[cold]
    fn rebind(&mut self) {
        let Some(mailbox) = self.mailbox.clone() else { return };
        let (rebind, ticket) = mailbox.take();
        if let Some(r) = rebind {
            for (setup, &port) in self.ports.iter_mut().zip(&r.ports) {
                setup.port = port;
            }
            let slots = self.ports.iter().map(|s| s.slot).collect();
            self.view = WorkerView::new(r.published, r.ports, slots);
            if let (Some(g), Some((cell, index))) = (&mut self.firewall, r.firewall) {
                g.rebind(cell, index);
            }
        }
        mailbox.applied.store(ticket, Ordering::Release);
    }

    /// One visit to port `p`: housekeeping, then at most one batch. Returns packets received.
    ///
    /// The batch is handed over whole ([`XskGroup::process_rx_batch`]): first each frame meets
    /// the capture filter and the firewall, in arrival order; the frames the firewall let
    /// through then run the port's pipeline in one fused call ([`Pipeline::run_batch`]); last,
    /// each frame's outcome is applied as [`fate`] says.
    #[inline]
    fn step(&mut self, p: usize, local: &mut Local) -> Result<usize, XskError> {
        self.group.service_tx(p)?;
        self.group.refill(p);
        let batch = self.batch_size;
        if self.group.rx_ready(p, batch) == 0 {
            return Ok(0);
        }
        let t0 = Instant::now();
        let mut malformed = 0u64;
        let setup = self.ports[p];
        let (pipeline, slot) = self.view.get(p);
        let capture = self.capture.as_ref();
        // A capture filter, while published, is the capture's only source.
        let filter = self.capture_filter.as_ref().and_then(capture::CaptureView::get);
        let sampling = capture.filter(|_| filter.is_none());
        let filter = filter.filter(|f| f.covers(setup.port)).zip(capture);
        let mut gate = self.firewall.as_mut().filter(|g| g.active());
        let now = gate.as_ref().map_or(0, |g| g.clock(t0));
        // Only a capture filter or a firewall looks at frames before the pipeline; without
        // either, every frame goes to it and the per-frame screening loop is skipped.
        let screened = filter.is_some() || gate.is_some();
        let outs = &mut self.outs;
        let got = self.group.process_rx_batch(p, batch, |frames, verdicts| {
            let mut pass = [true; RX_CHUNK];
            let mut passed = frames.len();
            if screened {
                passed = 0;
                for (frame, ok) in frames.iter_mut().zip(pass.iter_mut()) {
                    if let Some((f, tap)) = filter
                        && tap.active()
                        && f.matches(frame)
                    {
                        tap.take(setup.port as u32, setup.queue, capture::CAPTURE_FILTER_STAGE, frame);
                    }
                    if let Some(g) = gate.as_mut()
                        && let Some(d) = g.classify(p, frame, now)
                    {
                        if d.sampled
                            && let Some(tap) = sampling
                        {
                            tap.take(setup.port as u32, setup.queue, FIREWALL_SAMPLE_STAGE, frame);
                        }
                        if d.verdict != FwVerdict::Accept {
                            *ok = false;
                            continue;
                        }
                    }
                    passed += 1;
                }
            }
            // The pipeline runs on the frames let through, in arrival order; without screening
            // that is every frame, walked without consulting `pass`.
            {
                let mut refs = if screened {
                    packet_refs(frames.iter_mut().zip(&pass).filter_map(|(f, &ok)| ok.then_some(f)))
                } else {
                    packet_refs(frames.iter_mut())
                };
                pipeline.run_batch(slot, &mut refs[..passed], setup.ifindex, setup.queue, &mut outs[..passed]);
            }
            // A verdict slot holds `Drop` until set, which is what a plain drop comes to, so
            // only the other outcomes go through `fate`. Indexing rather than zipping the
            // frames, verdicts and outcomes keeps this loop as cheap as the scan it mostly is.
            if screened {
                let through = frames.iter_mut().zip(verdicts.iter_mut()).zip(&pass).filter_map(|(fv, &ok)| ok.then_some(fv));
                for ((frame, verdict), out) in through.zip(outs.iter()) {
                    if *out != PLAIN_DROP {
                        *verdict = fate(*out, frame, p, &setup, (pipeline, slot), sampling, &mut malformed);
                    }
                }
            } else {
                for (i, out) in outs[..passed].iter().enumerate() {
                    if *out != PLAIN_DROP {
                        verdicts[i] = fate(*out, frames[i], p, &setup, (pipeline, slot), sampling, &mut malformed);
                    }
                }
            }
        })?;
        self.group.refill(p);
        let t1 = Instant::now();
        let ns = t1.saturating_duration_since(t0).as_nanos() as u64;
        self.batch_end = t1;
        local.busy_ns += ns;
        if let Some(h) = &mut self.hist {
            h.record(ns);
        }
        local.busy_pkts += got as u64;
        local.busy_batches += 1;
        local.malformed += malformed;
        Ok(got)
    }

    fn publish(&self, local: &[Local], stats: &[Arc<QueueStats>]) {
        for (p, (l, s)) in local.iter().zip(stats).enumerate() {
            s.publish(&snapshot(self.group.counters(p), l));
            s.publish_batches(l.busy_batches);
        }
    }
}

/// The outcome that leaves a frame's verdict as it starts, `Drop`: nothing to sample or trim.
const PLAIN_DROP: Outcome = Outcome { decision: Decision::Drop, sample: None, window: None };

/// One pipeline descriptor per frame `frames` yields, in order; the slots past its end are
/// empty and never handed to the pipeline.
#[inline(always)]
fn packet_refs<'a, 'b: 'a>(mut frames: impl Iterator<Item = &'a mut &'b mut [u8]>) -> [PacketRef<'a>; RX_CHUNK] {
    std::array::from_fn(|_| PacketRef::new(frames.next().map_or_else(Default::default, |f| &mut **f)))
}

/// What becomes of a frame the pipeline ran on (received on group port `p`): its sample taken,
/// its window applied (a stage that moved the packet's start or end leaves the packet at the
/// front of the frame, shortened), then dropped, reflected (MAC addresses swapped), bounced or
/// sent to the peer. A frame too short for its action is dropped and counted as malformed.
#[inline(always)]
fn fate(
    out: Outcome,
    frame: &mut [u8],
    p: usize,
    setup: &PortSetup,
    (pipeline, slot): (&Pipeline, usize),
    sampling: Option<&CaptureTap>,
    malformed: &mut u64,
) -> Verdict {
    let trimmed = match out.window {
        None => None,
        Some((start, end)) => {
            let (start, end) = (start as usize, end as usize);
            if start > end || end > frame.len() {
                *malformed += 1;
                return Verdict::Drop;
            }
            frame.copy_within(start..end, 0);
            Some(end - start)
        }
    };
    let frame = match trimmed {
        Some(len) => &mut frame[..len],
        None => frame,
    };
    if let (Some(stage), Some(tap)) = (out.sample, sampling)
        && tap.take(setup.port as u32, setup.queue, stage, frame)
    {
        pipeline.note_sampled(slot, stage);
    }
    let to = match out.decision {
        Decision::Drop => return Verdict::Drop,
        Decision::Reflect => match wire::swap_macs(frame) {
            Ok(()) => p,
            Err(_) => {
                *malformed += 1;
                return Verdict::Drop;
            }
        },
        Decision::Bounce => p,
        Decision::Peer => match setup.peer {
            Some(peer) => peer,
            None => return Verdict::Drop,
        },
    };
    if frame.len() < ETHERNET_HEADER_LEN {
        *malformed += 1;
        return Verdict::Drop;
    }
    match trimmed {
        Some(len) => Verdict::TxTrim(to, len as u32),
        None => Verdict::Tx(to),
    }
}

fn snapshot(c: PortCounters, l: &Local) -> QueueSnapshot {
    QueueSnapshot {
        rx: c.rx,
        tx: c.tx,
        drop: c.dropped,
        malformed: l.malformed,
        ring_full: c.ring_full,
        fill_empty: c.fill_empty,
        wakeups: c.kicks,
        polls: c.polls,
        busy_ns: l.busy_ns,
        busy_pkts: l.busy_pkts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fates_match_the_outcome_and_windows_trim_the_frame() {
        let env = PortEnv { port: "a", peer: None, workers: 1 };
        let pipeline = Pipeline::compile(&PipelineSpec::empty(DefaultAction::Drop), &env).unwrap();
        let setup = PortSetup { port: 0, peer: None, queue: 0, ifindex: 0, slot: 0 };
        let out = |decision, window| Outcome { decision, sample: None, window };
        let frame = || (0..64u8).collect::<Vec<u8>>();
        let mut bad = 0;
        let run = |o: Outcome, f: &mut Vec<u8>, bad: &mut u64| fate(o, f, 1, &setup, (&pipeline, 0), None, bad);

        let mut f = frame();
        assert_eq!(run(out(Decision::Reflect, None), &mut f, &mut bad), Verdict::Tx(1));
        assert_eq!((&f[..6], &f[6..12]), (&frame()[6..12], &frame()[..6]), "MAC addresses swapped");
        assert_eq!(run(out(Decision::Peer, None), &mut frame(), &mut bad), Verdict::Drop, "no peer");
        assert_eq!(run(out(Decision::Drop, None), &mut frame(), &mut bad), Verdict::Drop);
        let mut f = frame();
        assert_eq!(run(PLAIN_DROP, &mut f, &mut bad), Verdict::Drop, "a verdict slot's default: the batch loop skips it");
        assert_eq!(f, frame());
        assert_eq!(bad, 0);
        assert_eq!(run(out(Decision::Reflect, None), &mut vec![0; 10], &mut bad), Verdict::Drop);
        assert_eq!(bad, 1, "too short to reflect");

        let mut f = frame();
        assert_eq!(run(out(Decision::Bounce, Some((14, 60))), &mut f, &mut bad), Verdict::TxTrim(1, 46));
        assert_eq!(f[..46], frame()[14..60]);
        assert_eq!(run(out(Decision::Bounce, Some((0, 10))), &mut frame(), &mut bad), Verdict::Drop);
        assert_eq!(run(out(Decision::Bounce, Some((0, 65))), &mut frame(), &mut bad), Verdict::Drop);
        assert_eq!(bad, 3, "a window too short or past the frame is malformed");

        let (tap, sink) = crate::pipeline::capture::capture_link(2, 128);
        sink.set_active(true);
        let sampled = Outcome { decision: Decision::Bounce, sample: Some(0), window: Some((2, 62)) };
        assert_eq!(fate(sampled, &mut frame(), 0, &setup, (&pipeline, 0), Some(&tap), &mut bad), Verdict::TxTrim(0, 60));
        let mut got = Vec::new();
        sink.drain(|s| got.push((s.stage, s.data.clone())));
        assert_eq!(got, vec![(0, frame()[2..62].to_vec())], "the sample holds the windowed packet");
    }

    #[test]
    fn a_mailbox_hands_over_the_latest_rebind_once() {
        let mailbox = Mailbox::default();
        assert!(!mailbox.due());
        let rebind = |port| Rebind { published: Arc::new(Published::new(Vec::new())), ports: vec![port], firewall: None };
        mailbox.post(rebind(1));
        let ticket = mailbox.post(rebind(2));
        assert!(mailbox.due());
        assert!(!mailbox.wait(ticket, Duration::ZERO), "not applied yet");
        let (got, seen) = mailbox.take();
        assert_eq!((got.map(|r| r.ports), seen), (Some(vec![2]), ticket), "the later post replaced the earlier");
        mailbox.applied.store(seen, Ordering::Release);
        assert!(!mailbox.due());
        assert!(mailbox.wait(ticket, Duration::ZERO));
    }

    #[test]
    fn snapshot_maps_every_counter() {
        let c = PortCounters {
            rx: 1,
            tx: 2,
            dropped: 3,
            ring_full: 4,
            fill_empty: 5,
            kicks: 6,
            polls: 7,
        };
        let l = Local {
            busy_ns: 8,
            busy_pkts: 9,
            busy_batches: 11,
            malformed: 10,
        };
        let s = snapshot(c, &l);
        assert_eq!(
            s,
            QueueSnapshot {
                rx: 1,
                tx: 2,
                drop: 3,
                ring_full: 4,
                fill_empty: 5,
                wakeups: 6,
                polls: 7,
                busy_ns: 8,
                busy_pkts: 9,
                malformed: 10,
            }
        );
    }
}
