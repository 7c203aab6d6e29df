//! Privileged tests of the load generator, replay and capture, each inside a throwaway network
//! namespace holding one veth pair `a0` — `b0` (one queue each, two in the multi-queue test;
//! IPv6 off so the kernel adds no frames of its own). Skipped with a message when not root,
//! unless `CI=true`.
//!
//! Timing tolerances, each stated again beside its test with the bugs it catches:
//! - rate within ±2 % of 100 kpps over 5 s;
//! - latency: every sample at least 0.5 µs, 90 % under 50 ms ([`assert_sane_latency`]);
//! - replay of 1 ms gaps: the median gap within ±0.1 ms, 75 % of gaps within ±0.5 ms, the
//!   median 50-packet span within ±1 % of 50 ms, by tcpdump's kernel timestamps.
//!
//! They are set for the machine CI runs on: two vCPUs shared with compilers, a kernel that
//! does not preempt kernel code (`preempt=none`) and a host that sometimes deschedules the VM.
//! A SCHED_FIFO sender is still occasionally held off there (26 ms seen), and a receiver on a
//! busy core waits its turn (latency p90 of several ms seen); the bounds leave room for that
//! and no more. The tests take turns ([`serial`]) so they do not compete with each other.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use sluice::capture::Capture;
use sluice::loadgen::replay::{self, ReplayPlan};
use sluice::loadgen::run::{self, Engine, GenPlan, Rate};
use sluice::loadgen::stamp::{Stamp, mono_ns};
use sluice::loadgen::traffic::{FrameSet, FrameSize, PortRange, Proto, Traffic};
use sluice::loadgen::xsk_tx::{self, Limit};
use sluice::loadgen::{LiveFlows, LiveSender, SinkAction, XdpSink};
use sluice::pcapio::filter::Matcher;
use sluice::pcapio::{LINKTYPE_ETHERNET, Packet, Reader, Writer};
use sluice::bpf::source::{Format, compile_text};
use sluice::testbed::netns::{Netns, privileged};
use sluice::xsk::ZeroCopy;

/// The tests measure rates and timing: run them one at a time so they do not compete for the
/// cores with each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A namespace with the veth pair a0 — b0, one queue each way.
fn veth_ns(tag: &str) -> Netns {
    veth_ns_queues(tag, 1)
}

/// A namespace with the veth pair a0 — b0, `queues` receive and transmit queues on each end.
fn veth_ns_queues(tag: &str, queues: u32) -> Netns {
    let ns = Netns::new(tag).expect("create namespace");
    for key in ["all", "default"] {
        ns.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1").expect("disable ipv6");
    }
    let q = queues.to_string();
    let each = ["numrxqueues", q.as_str(), "numtxqueues", q.as_str()];
    let mut args = vec!["link", "add", "a0"];
    args.extend(each);
    args.extend(["type", "veth", "peer", "name", "b0"]);
    args.extend(each);
    ns.ip(&args).expect("create veth");
    ns.ip(&["link", "set", "a0", "up"]).expect("a0 up");
    ns.ip(&["link", "set", "b0", "up"]).expect("b0 up");
    ns
}

fn traffic(flows: u32) -> Traffic {
    Traffic {
        proto: Proto::Udp,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_ip: "10.0.0.1".parse().unwrap(),
        dst_ip: "10.0.0.2".parse().unwrap(),
        src_port: "1000-1015".parse().unwrap(),
        dst_port: PortRange::single(9),
        vlan: None,
        size: FrameSize::Fixed(64),
        flows,
    }
}

fn plan(engine: Engine, rate: f64, limit: Limit, rx: bool) -> GenPlan {
    GenPlan {
        ifname: "a0".into(),
        engine,
        senders: 1,
        zero_copy: ZeroCopy::Auto,
        rate: Rate::Pps(rate),
        ramp: Duration::ZERO,
        limit,
        rx: rx.then(|| ("b0".to_string(), 1)),
        linger: Duration::from_secs(2),
        pin: true,
        realtime: true,
    }
}

/// The latency tolerance: one sample per frame, every sample at least 0.5 µs and 90 % of them
/// under 50 ms, percentiles in order.
///
/// - The floor: no frame crosses a veth into an AF_XDP socket in under 0.5 µs (2.5 µs is the
///   least seen here), so samples below it mean a unit error (µs recorded as ns) or a receive
///   time read before the frame arrived.
/// - The ceiling: half a live-frames pacing call. A stamp carrying a stale time (the clock
///   read once per run, or a previous call's reading — which put 28 % of live frames at
///   +100 ms until calls were aligned), the wrong clock (CLOCK_REALTIME is decades off) or a
///   ×1000 unit error all push far more than 10 % of samples past it; a receiver waiting for
///   a loaded core (p90 of 2–9 ms seen at load 7 on two cores) does not. The last 10 % are
///   not bounded: a receiver held off for tens of milliseconds sees that many old frames.
fn assert_sane_latency(l: &sluice::loadgen::report::Percentiles, samples: u64) {
    assert_eq!(l.samples, samples, "one latency sample per frame");
    assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max, "{l:?}");
    assert!(l.min >= 500, "latency below 0.5 us: units or clocks are wrong: {l:?}");
    let ceiling = sluice::loadgen::live::PACED_CALL.as_nanos() as u64 / 2;
    assert!(l.p90 < ceiling, "90th percentile latency {} ns over {ceiling} ns: stale stamps or clocks: {l:?}", l.p90);
}

/// Exact counts with no loss, duplicates or reordering at 20 kpps; latency within
/// [`assert_sane_latency`].
#[test]
fn af_xdp_sends_exactly_n_with_zero_loss() {
    if !privileged("af_xdp_sends_exactly_n_with_zero_loss") {
        return;
    }
    let _serial = serial();
    let ns = veth_ns("gx");
    let outcome = ns
        .run_in(|| {
            let limit = Limit { count: Some(20_000), duration: None };
            run::run(&plan(Engine::Xsk, 20_000.0, limit, true), &traffic(16), &AtomicBool::new(false), &mut |_| {})
        })
        .expect("enter namespace")
        .expect("run");
    let r = &outcome.report;
    assert_eq!(r.sent, 20_000);
    let rx = r.rx.as_ref().expect("receiver report");
    assert_eq!((rx.received, rx.lost, rx.duplicated, rx.reordered, rx.other), (20_000, 0, 0, 0, 0), "{}", r.human());
    assert_sane_latency(&rx.latency_ns, 20_000);
    assert_eq!(outcome.latency.expect("histogram").len(), 20_000);
    assert!(!r.samples.is_empty());
}

/// Verifies the IPv4 header and UDP checksums of a frame.
fn udp4_checksums_ok(frame: &[u8]) -> bool {
    let p = etherparse::SlicedPacket::from_ethernet(frame).expect("parse frame");
    let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(udp))) = (&p.net, &p.transport) else {
        return false;
    };
    let h = ip.header().to_header();
    h.header_checksum == h.calc_header_checksum()
        && udp.to_header().calc_checksum_ipv4(&h, udp.payload()).expect("checksum") == udp.checksum()
}

/// Stamps, flows and checksums of live frames, then exact counts at 2 kpps with latency within
/// [`assert_sane_latency`] (the test that caught stale stamps across live-frames calls).
#[test]
fn live_frames_are_stamped_and_delivered_exactly() {
    if !privileged("live_frames_are_stamped_and_delivered_exactly") {
        return;
    }
    let _serial = serial();
    let ns = veth_ns("gl");
    let t = traffic(4);
    let frames = FrameSet::build(&t).unwrap();
    let (previews, before, after) = ns
        .run_in(|| {
            let flows = LiveFlows { offset: t.l4_offset(), base: 1000, count: 4 };
            let sender = LiveSender::stamped("a0", frames.first(), 9, Some(flows))?;
            let before = mono_ns();
            let previews: Result<Vec<_>, _> = (0..6).map(|_| sender.preview()).collect();
            Ok::<_, sluice::loadgen::LoadgenError>((previews?, before, mono_ns()))
        })
        .expect("enter namespace")
        .expect("preview");
    for (i, f) in previews.iter().enumerate() {
        assert_eq!(f.len(), 64);
        let s = Stamp::parse(f).expect("stamp");
        assert_eq!((s.stream, s.seq), (9, i as u32));
        assert!((before..=after).contains(&s.tx_ns), "stamp time {} not in {before}..{after}", s.tx_ns);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 1000 + (i as u16 % 4), "flow field");
        assert!(udp4_checksums_ok(f), "frame {i} has a bad checksum");
    }

    // A paced run in calls of 200 frames (2000 pps × 100 ms): each burst fits the veth ring.
    let outcome = ns
        .run_in(|| {
            let limit = Limit { count: Some(4_000), duration: None };
            run::run(&plan(Engine::Live, 2_000.0, limit, true), &t, &AtomicBool::new(false), &mut |_| {})
        })
        .expect("enter namespace")
        .expect("run");
    let r = &outcome.report;
    assert_eq!(r.sent, 4_000);
    let rx = r.rx.as_ref().expect("receiver report");
    assert_eq!((rx.received, rx.lost, rx.duplicated, rx.reordered), (4_000, 0, 0, 0), "{}", r.human());
    assert_sane_latency(&rx.latency_ns, 4_000);
}

/// Tolerance: the achieved rate over 5 s within ±2 % of 100 kpps, and the median of the
/// 100 ms rate samples within ±5 % of it (steady pacing rather than bursts).
#[test]
fn rate_control_within_two_percent_at_100kpps() {
    if !privileged("rate_control_within_two_percent_at_100kpps") {
        return;
    }
    let _serial = serial();
    let ns = veth_ns("gr");
    let report = ns
        .run_in(|| {
            // The peer drops in XDP, so the measurement is the sender's pacing alone.
            let _sink = XdpSink::attach("b0", SinkAction::Drop)?;
            let limit = Limit { count: None, duration: Some(Duration::from_secs(5)) };
            run::run(&plan(Engine::Xsk, 100_000.0, limit, false), &traffic(1), &AtomicBool::new(false), &mut |_| {})
                .map(|o| o.report)
        })
        .expect("enter namespace")
        .expect("run");
    let error = (report.achieved_pps - 100_000.0).abs() / 100_000.0;
    assert!(error <= 0.02, "achieved {:.0} pps, {:.2} % off\n{}", report.achieved_pps, error * 100.0, report.human());
    assert!((4.9..5.2).contains(&report.elapsed_s), "{}", report.elapsed_s);
    // Paced, not bursty: a sender keeping the average with a burst per second (or per 200 ms)
    // has most 100 ms samples near 0, a stall of a few ms dents a sample or two.
    let mut rates: Vec<f64> = report.samples.iter().map(|x| x.tx_pps).collect();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    assert!((median - 100_000.0).abs() <= 5_000.0, "median 100 ms rate {median:.0} pps\n{}", report.human());
}

/// Two senders into a two-queue receiver, on each transmit engine: every frame arrives exactly
/// once and each receive queue carries exactly what one sender sent.
///
/// veth has no RSS and never hashes flows: the receive queue of b0 is decided by how a frame
/// leaves a0 (kernel 6.18, drivers/net/veth.c).
/// - AF_XDP TX (copy mode on veth) builds an skb whose queue mapping is the socket's queue id;
///   `veth_xmit` hands it to the peer's receive queue with that index. AF_XDP sender i (TX
///   queue i) lands on b0 queue i, whatever the flows — checked below with one sender on TX
///   queue 1 and sixteen flows, all on queue 1.
/// - Live frames leave by XDP_TX, i.e. `ndo_xdp_xmit` on a0, which picks the peer's receive
///   queue `smp_processor_id() % rx queues`: a live-frames sender lands on the queue of the
///   CPU it runs on, so the senders are pinned to different cores.
#[test]
fn two_queues_carry_both_engines_without_loss() {
    if !privileged("two_queues_carry_both_engines_without_loss") {
        return;
    }
    let _serial = serial();
    let ns = veth_ns_queues("gq", 2);
    // Odd counts: the senders' shares differ by one, so a swapped queue mapping shows.
    let two = |engine, rate, count| GenPlan {
        senders: 2,
        rx: Some(("b0".to_string(), 2)),
        ..plan(engine, rate, Limit { count: Some(count), duration: None }, true)
    };
    let check = |outcome: &run::Outcome, count: u64, expect_queue: &dyn Fn(usize) -> usize| {
        let r = &outcome.report;
        assert_eq!((r.sent, r.senders.len()), (count, 2), "{}", r.human());
        let rx = r.rx.as_ref().expect("receiver report");
        assert_eq!((rx.received, rx.lost, rx.duplicated, rx.reordered, rx.other), (count, 0, 0, 0, 0), "{}", r.human());
        assert_sane_latency(&rx.latency_ns, count);
        let mut expected = vec![0u64; 2];
        for (i, s) in r.senders.iter().enumerate() {
            expected[expect_queue(i)] += s.sent;
        }
        assert_eq!(rx.queues, expected, "per-queue counts (senders {:?})\n{}", r.senders, r.human());
        assert!(rx.queues.iter().all(|&q| q > 0), "a queue carried nothing: {:?}", rx.queues);
    };

    // AF_XDP: one socket per TX queue, 10 kpps each.
    let outcome = ns
        .run_in(|| run::run(&two(Engine::Xsk, 20_000.0, 20_001), &traffic(16), &AtomicBool::new(false), &mut |_| {}))
        .expect("enter namespace")
        .expect("af_xdp run");
    check(&outcome, 20_001, &|i| i);
    let queues: Vec<_> = outcome.report.senders.iter().map(|s| s.queue).collect();
    assert_eq!(queues, [Some(0), Some(1)], "af_xdp senders report their tx queue");

    // The command line reports the same split in its JSON summary.
    let out = ns
        .exec([env!("CARGO_BIN_EXE_sluice"), "gen", "-i", "a0", "--rx", "b0", "--rx-queues", "2", "--senders", "2"])
        .args(["--rate", "10k", "-n", "2001", "--json"])
        .output()
        .expect("run sluice gen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!((v["rx"]["received"].clone(), v["rx"]["lost"].clone()), (2001.into(), 0.into()), "{v}");
    assert_eq!(v["rx"]["queues"], serde_json::json!([1001, 1000]), "{v}");
    assert_eq!((v["senders"][0]["queue"].clone(), v["senders"][1]["queue"].clone()), (0.into(), 1.into()), "{v}");

    // Flows do not spread frames over queues: one AF_XDP sender on TX queue 1, sixteen flows.
    let outcome = ns
        .run_in(|| {
            let frames = FrameSet::build(&traffic(16))?;
            let mut receiver = sluice::loadgen::rx::Receiver::open("b0", 2)?;
            let mut group = xsk_tx::open("a0", 1, ZeroCopy::Auto)?;
            let (stop, count) = (AtomicBool::new(false), AtomicU64::new(0));
            let limit = Limit { count: Some(2_000), duration: None };
            std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    let mut state = sluice::loadgen::rx::RxState::default();
                    receiver.run(&mut state, &stop, &count).map(|()| state)
                });
                let sent = xsk_tx::send(&mut group, &frames, 0, Some((20_000.0, Duration::ZERO)), limit, &stop, &AtomicU64::new(0));
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while count.load(std::sync::atomic::Ordering::Relaxed) < 2_000 && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                let state = rx.join().expect("receiver thread")?;
                Ok::<_, sluice::loadgen::LoadgenError>((sent?.sent, state.queues))
            })
        })
        .expect("enter namespace")
        .expect("single-queue run");
    assert_eq!(outcome, (2_000, vec![0, 2_000]), "sent, per-queue counts");

    // Live frames: one sender per core. The queue follows the CPU, so the senders' cores (the
    // first two this process may use) must be one even and one odd.
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cores.len() < 2 || cores[0].id % 2 == cores[1].id % 2 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "live frames over two queues need cores 0 and 1 under CI=true");
        eprintln!("two_queues_carry_both_engines_without_loss: live-frames part skipped (cores {cores:?})");
        return;
    }
    let outcome = ns
        .run_in(|| run::run(&two(Engine::Live, 4_000.0, 4_001), &traffic(4), &AtomicBool::new(false), &mut |_| {}))
        .expect("enter namespace")
        .expect("live-frames run");
    check(&outcome, 4_001, &|i| cores[i % cores.len()].id % 2);
    let placed: Vec<_> = outcome.report.senders.iter().map(|s| (s.queue, s.cpu)).collect();
    assert_eq!(placed, [(None, Some(cores[0].id)), (None, Some(cores[1].id))], "live senders report their core");
}

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!("sluice-gen-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Captures on b0 with `expr` until `count` packets are written, while `send` runs on a0.
fn capture_while<T: Send>(
    ns: &Netns,
    expr: &str,
    count: u64,
    out: &TempFile,
    send: impl FnOnce() -> T + Send,
) -> (u64, T) {
    let matcher = Matcher::new(&compile_text(expr, Format::Tcpdump).expect("compile")).expect("jit");
    ns.run_in(|| {
        let mut capture = Capture::open("b0", 1).expect("open capture");
        let mut writer = Writer::create(&out.0, LINKTYPE_ETHERNET, 262_144).expect("create pcap");
        let stop = AtomicBool::new(false);
        let progress = AtomicU64::new(0);
        let result = std::thread::scope(|s| {
            let cap = s.spawn(|| capture.run(&matcher, &mut writer, Some(count), &stop, &progress));
            let sent = send();
            // Give the last frames a moment, then stop a capture that is still short.
            for _ in 0..100 {
                if cap.is_finished() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let stats = cap.join().expect("capture thread").expect("capture");
            (stats.written, sent)
        });
        writer.finish().expect("flush capture");
        result
    })
    .expect("enter namespace")
}

fn have_tcpdump(test: &str) -> bool {
    let ok = Command::new("tcpdump").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: tcpdump is required under CI=true");
        eprintln!("{test}: skipped (tcpdump not installed)");
    }
    ok
}

/// Replay timing is judged on the receiving side by tcpdump: its timestamps are the kernel's
/// (taken as the frame arrives on b0), so they do not depend on when a reader thread runs.
///
/// Tolerance for 300 packets 2 ms apart replayed at speed 2 (1 ms gaps): order exact; the
/// median gap within 1 ms ± 0.1 ms; at least 75 % of gaps within 1 ms ± 0.5 ms; the median
/// over all 50-packet stretches of their span within 50 ms ± 1 %.
/// - A replay ignoring timestamps (gaps ~0), applying the speed twice or not at all (0.5 or
///   2 ms) fails the median; a speed slightly off (drift of over 1 %) fails the span; pacing
///   coarser than the gaps (sleeping in 4 ms jiffies, sending in batches per wake-up) leaves
///   most gaps at 0 or several ms and fails the 75 %.
/// - A sender held off for S ms (the VM's stalls, see the module doc) sends the packets due
///   meanwhile back to back: about S gaps spoiled and S stretches skewed, the rest exact. The
///   75 % and the medians absorb up to about 70 ms of stalls in the 300 ms run (26 ms, which
///   failed the earlier 90 % bound, is the worst seen).
#[test]
fn replay_keeps_order_and_gaps() {
    if !privileged("replay_keeps_order_and_gaps") || !have_tcpdump("replay_keeps_order_and_gaps") {
        return;
    }
    let _serial = serial();
    // 300 stamped frames captured 2 ms apart, replayed at speed 2: 1 ms apart.
    let frames = FrameSet::build(&traffic(1)).unwrap();
    let packets: Vec<Packet> = (0..300u32)
        .map(|i| {
            let mut data = vec![0u8; 2048];
            let len = frames.get(u64::from(i)).write_into(&mut data, Stamp { stream: 1, seq: i, tx_ns: 0 });
            data.truncate(len);
            Packet { ts: Duration::from_secs(1_700_000_000) + Duration::from_millis(2 * u64::from(i)), orig_len: len as u32, data }
        })
        .collect();
    let ns = veth_ns("gp");
    let out = TempFile::new("replay.pcap");
    let mut dump = ns
        .exec(["tcpdump", "-i", "b0", "-nn", "-U", "-c", "300", "--time-stamp-precision", "nano", "-w"])
        .arg(&out.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    // tcpdump says "listening on b0" once its socket is bound.
    let mut stderr = std::io::BufReader::new(dump.stderr.take().expect("tcpdump stderr"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).expect("read tcpdump") > 0 && !line.contains("listening on") {
        line.clear();
    }
    let report = ns
        .run_in(|| {
            sluice::loadgen::sched::prepare_thread(None, true);
            let mut group = xsk_tx::open("a0", 0, ZeroCopy::Auto)?;
            let plan = ReplayPlan { speed: Some(2.0), loops: 1 };
            replay::replay(&mut group, &packets, plan, 1792, &AtomicBool::new(false), &AtomicU64::new(0))
        })
        .expect("enter namespace")
        .expect("replay");
    assert_eq!((report.sent, report.skipped), (300, 0));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while dump.try_wait().expect("wait tcpdump").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = dump.kill();
            let _ = dump.wait();
            panic!("tcpdump did not see 300 packets");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = Reader::open(&out.0).unwrap().read_all().unwrap();
    let seqs: Vec<u32> = got.iter().map(|p| Stamp::parse(&p.data).expect("stamp").seq).collect();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>(), "order");
    // Tolerance (see the doc comment): median gap error, share of gaps near 1 ms, time scale.
    let us = |d: Duration| d.as_micros() as i64;
    let gaps: Vec<i64> = got.windows(2).map(|w| us(w[1].ts - w[0].ts)).collect();
    let mut errors: Vec<i64> = gaps.iter().map(|g| (g - 1000).abs()).collect();
    errors.sort_unstable();
    let median = errors[errors.len() / 2];
    assert!(median <= 100, "median gap error {median} us; gaps {gaps:?}");
    let near = errors.iter().filter(|&&e| e <= 500).count();
    assert!(near * 4 >= gaps.len() * 3, "only {near} of {} gaps within 1 ms ± 0.5 ms; gaps {gaps:?}", gaps.len());
    let mut spans: Vec<i64> = got.iter().zip(&got[50..]).map(|(a, b)| us(b.ts - a.ts)).collect();
    spans.sort_unstable();
    let span = spans[spans.len() / 2];
    assert!((span - 50_000).abs() <= 500, "median 50-packet span {span} us, not 50 ms ± 1 %");
}

#[test]
fn capture_writes_only_matching_packets_and_tcpdump_reads_them() {
    if !privileged("capture_writes_only_matching_packets_and_tcpdump_reads_them") {
        return;
    }
    let _serial = serial();
    // Flows alternate between destination ports 9 and 10 (and 16 source ports).
    let mut t = traffic(32);
    t.dst_port = "9-10".parse().unwrap();
    t.src_port = PortRange::single(1000);
    t.flows = 2;
    let ns = veth_ns("gc");
    let out = TempFile::new("capture.pcap");
    let (written, sent) = capture_while(&ns, "udp dst port 10", 500, &out, || {
        let limit = Limit { count: Some(1_000), duration: None };
        run::run(&plan(Engine::Xsk, 20_000.0, limit, false), &t, &AtomicBool::new(false), &mut |_| {})
            .expect("run")
            .report
            .sent
    });
    assert_eq!((sent, written), (1_000, 500));
    let got = Reader::open(&out.0).unwrap().read_all().unwrap();
    assert_eq!(got.len(), 500);
    for p in &got {
        assert_eq!(u16::from_be_bytes([p.data[36], p.data[37]]), 10, "captured a packet the filter rejects");
        assert_eq!(p.orig_len as usize, p.data.len());
    }
    if !have_tcpdump("capture: reading the file back with tcpdump") {
        return;
    }
    let dump = Command::new("tcpdump").args(["-nn", "-r"]).arg(&out.0).output().expect("run tcpdump");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let text = String::from_utf8_lossy(&dump.stdout);
    assert_eq!(text.lines().count(), 500);
    assert!(text.lines().all(|l| l.contains("10.0.0.1.1000 > 10.0.0.2.10: UDP")), "{}", text.lines().next().unwrap_or(""));
}

/// The command line end to end: `sluice capture -c` in the background, `sluice gen --json`
/// with a receiver, the histogram file and the plot.
#[test]
fn command_line_gen_and_capture() {
    if !privileged("command_line_gen_and_capture") {
        return;
    }
    let _serial = serial();
    let ns = veth_ns("gcli");
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let (hdr, svg, cap) = (TempFile::new("cli.hgrm"), TempFile::new("cli.svg"), TempFile::new("cli.pcap"));
    let out = ns
        .exec([sluice, "gen", "-i", "a0", "--rx", "b0", "--rate", "10k", "-n", "5000", "--size", "128", "--json"])
        .args(["--proto", "icmp", "--hdr-out"])
        .arg(&hdr.0)
        .arg("--plot")
        .arg(&svg.0)
        .output()
        .expect("run sluice gen");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(v["sent"], 5000);
    assert_eq!(v["engine"], "af_xdp");
    assert_eq!(v["rx"]["received"], 5000, "{v}");
    assert_eq!(v["rx"]["lost"], 0);
    assert_eq!(v["rx"]["latency_ns"]["samples"], 5000);
    assert_eq!(v["mean_frame"], 128.0);
    assert!(v["senders"][0]["elapsed"].as_f64().is_some_and(|s| s > 0.4 && s < 5.0), "{v}");
    let hgrm = std::fs::read_to_string(&hdr.0).expect("histogram file");
    assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains("Total count    =         5000]"), "{hgrm}");
    assert!(std::fs::read_to_string(&svg.0).expect("plot").contains("rate over time"));

    // capture -c 100 of the ICMP echo requests only, while UDP and ICMP are sent.
    let mut capture = ns
        .exec([sluice, "capture", "-i", "b0", "-c", "100", "-w"])
        .arg(&cap.0)
        .arg("icmp[icmptype] == icmp-echo")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start sluice capture");
    let mut stderr = std::io::BufReader::new(capture.stderr.take().expect("stderr"));
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut line).expect("read capture") > 0 && !line.contains("capturing on") {
        line.clear();
    }
    for proto in ["udp", "icmp"] {
        let out = ns
            .exec([sluice, "gen", "-i", "a0", "--rate", "10k", "-n", "300", "--proto", proto])
            .output()
            .expect("run sluice gen");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = capture.try_wait().expect("wait capture") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = capture.kill();
            let _ = capture.wait();
            panic!("sluice capture did not stop after 100 packets");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let got = Reader::open(&cap.0).unwrap().read_all().unwrap();
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|p| p.data[23] == 1 && p.data[34] == 8), "only icmp echo requests");
}
