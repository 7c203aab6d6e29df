//! One generator run end to end: opens the receiver (so it is ready before the first frame),
//! the senders, runs them on pinned threads, samples progress every [`SAMPLE`], waits for
//! frames still in flight, and assembles the [`GenReport`].
//!
//! Everything is opened in the calling thread's network namespace; the threads spawned here
//! inherit it (a new thread starts in its creator's namespaces).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::xsk::ZeroCopy;

use super::live::{LiveFlows, LiveSender};
use super::report::{GenReport, Percentiles, RxSummary, Sample};
use super::rx::{Receiver, RxState};
use super::traffic::{FrameSet, L1_OVERHEAD, Proto, Traffic};
use super::xsk_tx::{self, Limit, SenderReport};
use super::LoadgenError;

/// Interval of progress callbacks and rate samples.
pub const SAMPLE: Duration = Duration::from_millis(100);
/// After the senders finish, the receiver waits at most this long for the rest of the frames.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(500);

/// Which transmit engine to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// AF_XDP TX (any NIC; zero-copy where the driver has it).
    Xsk,
    /// Kernel live frames (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES).
    Live,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Xsk => "af_xdp",
            Engine::Live => "live-frames",
        }
    }
}

/// The target rate of the whole run (split evenly between senders).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Full,
    Pps(f64),
    /// Bits per second on the wire (frames plus FCS, preamble and inter-frame gap).
    Bps(f64),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct GenPlan {
    pub ifname: String,
    pub engine: Engine,
    /// Sender threads: AF_XDP sender `i` uses TX queue `i`; live-frames senders are spread
    /// over queues by the CPU they are pinned to.
    pub senders: u32,
    pub zero_copy: ZeroCopy,
    pub rate: Rate,
    pub ramp: Duration,
    /// For the whole run; a count is split between senders.
    pub limit: Limit,
    /// Receive and measure on this interface, over this many queues.
    pub rx: Option<(String, u32)>,
    pub linger: Duration,
    /// Pin threads to cores (senders from the first core on, the receiver on the last).
    pub pin: bool,
    /// Run the sender threads with SCHED_FIFO (see [`super::sched`]).
    pub realtime: bool,
}

/// A progress sample for the caller's display.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub elapsed: Duration,
    pub sent: u64,
    pub received: Option<u64>,
    pub tx_pps: f64,
    pub rx_pps: f64,
}

/// A finished run: the report and the latency histogram behind it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: GenReport,
    pub latency: Option<Histogram<u64>>,
}

/// What a sender thread owns.
enum Sender {
    Xsk(crate::xsk::XskGroup),
    Live(LiveSender),
}

/// How the live-frames engine varies flows for `t`: only the source port (ICMP: echo id).
fn live_flows(t: &Traffic, frames: &FrameSet) -> Result<Option<LiveFlows>, LoadgenError> {
    let unsupported = |reason: &str| LoadgenError::Unsupported { engine: "live-frames", reason: reason.into() };
    if frames.is_imix() {
        return Err(unsupported("sends one frame size (imix needs --engine xsk)"));
    }
    if t.src_ip.count > 1 || t.dst_ip.count > 1 || t.dst_port.count > 1 {
        return Err(unsupported("varies only the source port (address and destination port ranges need --engine xsk)"));
    }
    let count = t.flows.min(t.src_port.count);
    if count <= 1 {
        return Ok(None);
    }
    let field = t.l4_offset() + if t.proto == Proto::Icmp { 4 } else { 0 };
    Ok(Some(LiveFlows { offset: field, base: t.src_port.first, count }))
}

/// Runs `plan` with `traffic` until its limit or `stop`; `on_progress` is called every
/// [`SAMPLE`] from the calling thread.
pub fn run(
    plan: &GenPlan,
    traffic: &Traffic,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome, LoadgenError> {
    let frames = Arc::new(FrameSet::build(traffic)?);
    let n = plan.senders.clamp(1, 255);
    let per_sender_pps = match plan.rate {
        Rate::Full => None,
        Rate::Pps(p) => Some(p / f64::from(n)),
        Rate::Bps(b) => Some(frames.pps_for_bps(b) / f64::from(n)),
    };
    let cores = if plan.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };

    // Receiver first, so its steering is attached before any frame leaves.
    let rx_stop = Arc::new(AtomicBool::new(false));
    let rx_count = Arc::new(AtomicU64::new(0));
    let mut rx_thread: Option<JoinHandle<Result<RxState, LoadgenError>>> = None;
    if let Some((ifname, queues)) = &plan.rx {
        let mut receiver = Receiver::open(ifname, *queues)?;
        let (stop, count) = (Arc::clone(&rx_stop), Arc::clone(&rx_count));
        let core = cores.last().copied();
        rx_thread = Some(spawn("gen-rx", move || {
            // Never real-time: the receiver busy-polls while traffic flows, and a spinning
            // SCHED_FIFO thread is throttled by the kernel (50 ms of every second) and starves
            // the softirq work that delivers frames on its core.
            super::sched::prepare_thread(core, false);
            let mut state = RxState::default();
            receiver.run(&mut state, &stop, &count)?;
            Ok(state)
        })?);
    }

    let result = run_senders(plan, traffic, &frames, n, per_sender_pps, &cores, stop, &rx_count, on_progress);
    // Whatever happened to the senders, the receiver thread is stopped and joined.
    let rx_state = match rx_thread {
        Some(handle) => {
            if let Ok((_, sent, _)) = &result {
                linger(plan.linger, *sent, &rx_count);
            }
            rx_stop.store(true, Relaxed);
            Some(join("gen-rx", handle)?)
        }
        None => None,
    };
    let (senders, sent, samples) = result?;

    let elapsed = senders.iter().map(|s| s.elapsed).max().unwrap_or_default().as_secs_f64();
    let achieved = if elapsed > 0.0 { sent as f64 / elapsed } else { 0.0 };
    let rx = rx_state.as_ref().map(|st| {
        let lost = senders
            .iter()
            .enumerate()
            .map(|(i, s)| s.sent.saturating_sub(st.unique(i as u8)))
            .sum();
        RxSummary {
            received: (0..senders.len()).map(|i| st.unique(i as u8)).sum(),
            lost,
            duplicated: st.duplicated(),
            reordered: st.reordered(),
            other: st.other,
            kernel_dropped: st.kernel_dropped,
            queues: st.queues.clone(),
            latency_ns: Percentiles::of(&st.latency),
        }
    });
    let report = GenReport {
        engine: plan.engine.name(),
        interface: plan.ifname.clone(),
        sent,
        elapsed_s: elapsed,
        target_pps: per_sender_pps.map(|p| p * f64::from(n)),
        achieved_pps: achieved,
        achieved_bps: achieved * (frames.mean_len() + L1_OVERHEAD as f64) * 8.0,
        mean_frame: frames.mean_len(),
        senders,
        rx,
        samples,
    };
    Ok(Outcome { report, latency: rx_state.map(|s| s.latency) })
}

type SendersResult = (Vec<SenderReport>, u64, Vec<Sample>);

#[allow(clippy::too_many_arguments)]
fn run_senders(
    plan: &GenPlan,
    traffic: &Traffic,
    frames: &Arc<FrameSet>,
    n: u32,
    pps: Option<f64>,
    cores: &[core_affinity::CoreId],
    stop: &AtomicBool,
    rx_count: &AtomicU64,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<SendersResult, LoadgenError> {
    // Open every sender before starting any, so a bad queue fails the run cleanly.
    let mut opened = Vec::with_capacity(n as usize);
    let flows = match plan.engine {
        Engine::Live => live_flows(traffic, frames)?,
        Engine::Xsk => None,
    };
    for i in 0..n {
        opened.push(match plan.engine {
            Engine::Xsk => Sender::Xsk(xsk_tx::open(&plan.ifname, i, plan.zero_copy)?),
            Engine::Live => Sender::Live(LiveSender::stamped(&plan.ifname, frames.first(), i as u8, flows)?),
        });
    }
    let tx_stop = Arc::new(AtomicBool::new(false));
    let counters: Vec<Arc<AtomicU64>> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let count = plan.limit.count;
    let mut handles = Vec::with_capacity(n as usize);
    for (i, sender) in opened.into_iter().enumerate() {
        let share = count.map(|c| c / u64::from(n) + u64::from((i as u64) < c % u64::from(n)));
        let limit = Limit { count: share, duration: plan.limit.duration };
        let rate = pps.map(|p| (p, plan.ramp));
        let (frames, tx_stop, progress) = (Arc::clone(frames), Arc::clone(&tx_stop), Arc::clone(&counters[i]));
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let realtime = plan.realtime;
        handles.push(spawn(&format!("gen-tx{i}"), move || {
            super::sched::prepare_thread(core, realtime);
            let report = match sender {
                Sender::Xsk(mut group) => {
                    xsk_tx::send(&mut group, &frames, i as u8, rate, limit, &tx_stop, &progress)
                        .map(|r| SenderReport { queue: Some(i as u32), ..r })
                }
                Sender::Live(live) => live.send_paced(rate, limit, &tx_stop, &progress),
            };
            report.map(|r| SenderReport { cpu: core.map(|c| c.id), ..r })
        })?);
    }

    let start = Instant::now();
    let mut samples = Vec::new();
    let (mut last_tx, mut last_rx, mut last_t) = (0u64, 0u64, Duration::ZERO);
    let total = |c: &[Arc<AtomicU64>]| c.iter().map(|a| a.load(Relaxed)).sum::<u64>();
    loop {
        let finished = handles.iter().all(|h| h.is_finished());
        if stop.load(Relaxed) {
            tx_stop.store(true, Relaxed);
        }
        let now = start.elapsed();
        if now - last_t >= SAMPLE || finished {
            let dt = (now - last_t).as_secs_f64().max(1e-9);
            let (tx, rx) = (total(&counters), rx_count.load(Relaxed));
            let p = Progress {
                elapsed: now,
                sent: tx,
                received: plan.rx.as_ref().map(|_| rx),
                tx_pps: tx.saturating_sub(last_tx) as f64 / dt,
                rx_pps: rx.saturating_sub(last_rx) as f64 / dt,
            };
            samples.push(Sample { t: now.as_secs_f64(), tx_pps: p.tx_pps, rx_pps: p.rx_pps });
            on_progress(&p);
            (last_tx, last_rx, last_t) = (tx, rx, now);
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reports = Vec::with_capacity(handles.len());
    let mut first_err = None;
    for (i, h) in handles.into_iter().enumerate() {
        match join(&format!("gen-tx{i}"), h) {
            Ok(r) => reports.push(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let sent = reports.iter().map(|r| r.sent).sum();
    Ok((reports, sent, samples))
}

/// Waits until the receiver has counted `sent` frames, it stops making progress, or `max`.
fn linger(max: Duration, sent: u64, received: &AtomicU64) {
    let start = Instant::now();
    let mut last = received.load(Relaxed);
    let mut still_since = Instant::now();
    while start.elapsed() < max {
        let now = received.load(Relaxed);
        if now >= sent {
            return;
        }
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(500) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, LoadgenError> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|source| LoadgenError::Thread { thread: name.to_string(), source })
}

fn join<T>(name: &str, h: JoinHandle<Result<T, LoadgenError>>) -> Result<T, LoadgenError> {
    h.join().map_err(|_| LoadgenError::Panicked { thread: name.to_string() })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::super::traffic::{FrameSize, PortRange};

    fn traffic() -> Traffic {
        Traffic {
            proto: Proto::Udp,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.0.2".parse().unwrap(),
            src_port: "1000-1099".parse().unwrap(),
            dst_port: PortRange::single(9),
            vlan: None,
            size: FrameSize::Fixed(64),
            flows: 10,
        }
    }

    #[test]
    fn live_engine_varies_only_the_source_port() {
        let t = traffic();
        let frames = FrameSet::build(&t).unwrap();
        assert_eq!(live_flows(&t, &frames).unwrap(), Some(LiveFlows { offset: 34, base: 1000, count: 10 }));
        let mut icmp = traffic();
        icmp.proto = Proto::Icmp;
        assert_eq!(live_flows(&icmp, &FrameSet::build(&icmp).unwrap()).unwrap().unwrap().offset, 38);
        let mut ranged = traffic();
        ranged.dst_ip = "10.0.0.2-10.0.0.3".parse().unwrap();
        let err = live_flows(&ranged, &FrameSet::build(&ranged).unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("live-frames engine: varies only the source port"), "{err}");
        let mut imix = traffic();
        imix.size = FrameSize::Imix;
        assert!(live_flows(&imix, &FrameSet::build(&imix).unwrap()).is_err());
        let mut one = traffic();
        one.flows = 1;
        assert_eq!(live_flows(&one, &FrameSet::build(&one).unwrap()).unwrap(), None);
    }
}
