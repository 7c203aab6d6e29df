//! The swap storm: sequence-numbered UDP frames flow client → dut port a → port b → server
//! through an in-process dataplane while port a's pipeline is swapped 10,000 times between two
//! versions that tag every frame differently. Every frame must arrive exactly once, tagged
//! wholly by one version; the stage counters, whose ids both versions share, must account for
//! every frame.
//!
//! Privileged: skips with a message when not root, and must run under `CI=true`. The topology
//! (unique namespaces) is removed on every exit path; the dataplane is dropped before it.

use std::collections::HashMap;
use std::net::{SocketAddrV4, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::bpf::source::Format;
use sluice::config::Config;
use sluice::loadgen::UdpFrame;
use sluice::pipeline::{ActionSpec, DefaultAction, FilterSpec, PipelineSpec, StageSpec};
use sluice::runtime::Dataplane;
use sluice::testbed::netns::{CLIENT_MAC, SERVER_MAC, Topology, TopologyOpts, privileged};

const SERVER_PORT: u16 = 7000;
const SWAPS: usize = 10_000;
/// Frames in flight at most: the server's default socket buffer holds about 90 datagrams
/// forwarded by AF_XDP copy mode.
const WINDOW: u32 = 32;
/// Payload: 4-byte sequence number, then 14 bytes with the head tag first and the tail tag
/// last, so the frame is 60 bytes and the tags sit at frame offsets 46 and 59.
const PAYLOAD: usize = 18;
const HEAD: usize = 14 + 20 + 8 + 4;
const TAIL: usize = 14 + 20 + 8 + PAYLOAD - 1;

/// Version `tag`: stage `head` writes the tag at the head offset and counts; stage `tail`
/// writes it at the tail offset and returns XDP_REDIRECT (on to port b). A frame tagged
/// (1, 2) or (2, 1) would have met two versions.
fn version(tag: u8) -> PipelineSpec {
    let write = |off: usize, ret: u32| {
        format!("r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr3 -= r2\nr0 = 1\nif r3 < {len} goto +2\n*(u8 *)(r2 + {off}) = {tag}\nr0 = {ret}\nexit\n", len = TAIL + 1)
    };
    let stage = |id: &str, text: String, action| StageSpec { id: id.into(), filter: FilterSpec::Text { text, format: Format::Asm }, action };
    PipelineSpec {
        stages: vec![stage("head", write(HEAD, 1), ActionSpec::Count), stage("tail", write(TAIL, 4), ActionSpec::Verdict)],
        default: DefaultAction::Forward("b".into()),
    }
}

const CONFIG: &str = r#"
[dataplane]
cores = [0]
passthrough = ["tcp/22"]

[[port]]
name = "a"
interface = "dut-a0"
action = "forward"
forward_to = "b"

[[port]]
name = "b"
interface = "dut-b0"
action = "forward"
forward_to = "a"
"#;

#[test]
fn swap_storm_loses_nothing_and_never_mixes_versions() {
    if !privileged("swap_storm_loses_nothing_and_never_mixes_versions") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "swap".into(), ..Default::default() }).expect("build topology");
    let config = Config::parse(CONFIG, Path::new("swap.toml")).expect("config");
    let dataplane = topo.dut.run_in(|| Dataplane::start(config, None)).expect("enter dut").expect("start dataplane");
    let handle = dataplane.handle();
    handle.replace(0, version(1)).expect("install version 1");

    let server = SocketAddrV4::new(topo.server_if.addr.expect("server addr"), SERVER_PORT);
    let sock = topo.server.run_in(move || UdpSocket::bind(server)).expect("enter server").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
    // Sequence number → the (head, tail) tags of every copy that arrived.
    type Arrivals = HashMap<u32, Vec<(u8, u8)>>;
    let got: Arc<Mutex<Arrivals>> = Arc::default();
    let received = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (got, received, done) = (Arc::clone(&got), Arc::clone(&received), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf)
                    && n == PAYLOAD
                {
                    let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let tags = (buf[HEAD - 42], buf[TAIL - 42]);
                    got.lock().expect("lock").entry(seq).or_default().push(tags);
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let swapping = Arc::new(AtomicBool::new(true));
    let in_flight_seq = AtomicU32::new(0);
    let template = UdpFrame {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        src: SocketAddrV4::new(topo.client_if.addr.expect("client addr"), 9000),
        dst: server,
    };
    let sent = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            topo.client
                .run_in(|| {
                    let mut cap = pcap::Capture::from_device("cli0").expect("device").open().expect("open AF_PACKET on cli0");
                    let mut seq = 0u32;
                    let stall = Instant::now() + Duration::from_secs(600);
                    while swapping.load(Ordering::Relaxed) || seq < 1000 {
                        let mut frame = template.build(&[seq.to_be_bytes().as_slice(), &[0; PAYLOAD - 4]].concat()).expect("build frame");
                        // No UDP checksum (allowed over IPv4): the tags are written in flight.
                        frame[40] = 0;
                        frame[41] = 0;
                        cap.sendpacket(frame).expect("send frame");
                        seq += 1;
                        in_flight_seq.store(seq, Ordering::Relaxed);
                        // Keep at most WINDOW frames in flight, so no socket buffer overflows.
                        while seq - received.load(Ordering::Relaxed) > WINDOW && Instant::now() < stall {
                            std::thread::yield_now();
                        }
                    }
                    seq
                })
                .expect("enter client")
        });
        let mut grace = Vec::with_capacity(SWAPS);
        for i in 0..SWAPS {
            let out = handle.replace(0, version(if i % 2 == 0 { 2 } else { 1 })).expect("swap");
            grace.push(out.grace);
            // Spread the swaps over the traffic: at least one frame sent per two swaps.
            let stall = Instant::now() + Duration::from_secs(5);
            while in_flight_seq.load(Ordering::Relaxed) < (i / 2) as u32 && Instant::now() < stall {
                std::thread::yield_now();
            }
        }
        swapping.store(false, Ordering::Relaxed);
        grace.sort();
        eprintln!(
            "swap storm: {SWAPS} swaps, grace p50 {:?} p99 {:?} max {:?}",
            grace[SWAPS / 2],
            grace[SWAPS * 99 / 100],
            grace[SWAPS - 1]
        );
        sender.join().expect("sender")
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    done.store(true, Ordering::Relaxed);
    receiver.join().expect("receiver");

    let got = got.lock().expect("lock");
    let mut by_version = [0u32; 3];
    for seq in 0..sent {
        let tags = got.get(&seq).unwrap_or_else(|| panic!("frame {seq} of {sent} lost"));
        assert_eq!(tags.len(), 1, "frame {seq} arrived {} times", tags.len());
        let (h, t) = tags[0];
        assert!(h == t && (h == 1 || h == 2), "frame {seq} tagged ({h}, {t}): not one version");
        by_version[h as usize] += 1;
    }
    assert_eq!(got.len() as u32, sent, "frames that were never sent arrived");
    eprintln!("swap storm: {sent} frames, {} by version 1, {} by version 2", by_version[1], by_version[2]);
    assert!(by_version[1] > 0 && by_version[2] > 0, "one version never ran: {by_version:?}");
    assert!(sent as usize >= SWAPS / 2, "only {sent} frames crossed {SWAPS} swaps");
    assert_eq!(handle.generation(0), SWAPS as u64 + 2);

    // Both versions share the stage ids, so the counters saw every frame through all swaps.
    let totals = handle.stage_totals(0);
    let stage = |id: &str| totals.iter().find(|(i, _)| i.as_deref() == Some(id)).map(|(_, t)| *t).expect("stage");
    let (head, tail) = (stage("head"), stage("tail"));
    assert!(head.packets >= sent as u64, "head counted {} of {sent}", head.packets);
    assert_eq!(tail.packets, head.packets, "every frame head counted was redirected by tail");

    drop(handle);
    let done = dataplane.shutdown().expect("shutdown");
    for (wi, a) in done.accounts.iter().enumerate() {
        a.check().unwrap_or_else(|e| panic!("worker {wi}: {e}"));
    }
}

/// A `sluice run` child, SIGKILLed on Drop if still running (before the namespaces go).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file removed on Drop.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn sigterm_under_load_exits_cleanly_with_frames_accounted() {
    use std::io::{BufRead, BufReader};
    use sluice::loadgen::{LiveSender, SinkAction, XdpSink};

    if !privileged("sigterm_under_load_exits_cleanly_with_frames_accounted") {
        return;
    }
    let topo = Topology::new(TopologyOpts { tag: "term".into(), ..Default::default() }).expect("build topology");
    let _sink = topo.server.run_in(|| XdpSink::attach("srv0", SinkAction::Drop)).expect("enter server").expect("sink");
    let config = TempFile(std::env::temp_dir().join(format!("sluice-term-{}.toml", std::process::id())));
    let stages = "[[port.stage]]\nid = \"udp\"\nfilter = \"udp\"\naction = \"count\"\n";
    let text = CONFIG.replace("forward_to = \"b\"\n", &format!("forward_to = \"b\"\n{stages}"));
    std::fs::write(&config.0, text).expect("write config");
    let mut child = Child(
        topo.dut
            .exec([env!("CARGO_BIN_EXE_sluice"), "run", "--json", "--stats-interval-ms", "100", "--config"])
            .arg(&config.0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sluice"),
    );
    let (tx, events) = std::sync::mpsc::channel::<serde_json::Value>();
    let stdout = child.0.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send(v).is_err()
            {
                break;
            }
        }
    });
    let wait = |name: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Ok(v) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if v["event"] == name && pred(&v) {
                return Some(v);
            }
        }
        None
    };
    assert!(wait("started", &|_| true).is_some(), "sluice did not start");

    let frame = UdpFrame {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        src: SocketAddrV4::new(topo.client_if.addr.expect("client addr"), 9000),
        dst: SocketAddrV4::new(topo.server_if.addr.expect("server addr"), 9001),
    }
    .build(&[0x5a; 18])
    .expect("frame");
    let sender = topo.client.run_in(|| LiveSender::new("cli0", &frame)).expect("enter client").expect("sender");
    let flooding = AtomicBool::new(true);
    let totals = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            topo.client
                .run_in(|| {
                    while flooding.load(Ordering::Relaxed) {
                        sender.send(100_000).expect("send burst");
                    }
                })
                .expect("enter client")
        });
        // Under load: the workers are busy when the signal arrives.
        let rx = |t: &serde_json::Value| {
            t.get("rx").and_then(serde_json::Value::as_u64).unwrap_or_else(|| {
                t["queues"].as_array().map_or(0, |qs| qs.iter().filter_map(|q| q["rx"].as_u64()).sum())
            })
        };
        let busy = wait("tick", &|t| rx(t) > 10_000);
        assert!(busy.is_some(), "no traffic reached sluice");
        let status = std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let exit = loop {
            if let Ok(Some(s)) = child.0.try_wait() {
                break Some(s);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        flooding.store(false, Ordering::Relaxed);
        flood.join().expect("flood thread");
        let exit = exit.expect("sluice did not exit within 20 s of SIGTERM");
        assert!(exit.success(), "sluice exit: {exit}");
        wait("totals", &|_| true).expect("totals event")
    });
    let frames = totals["frames"].as_array().expect("frame accounting in totals");
    assert!(!frames.is_empty(), "{totals}");
    for w in frames {
        assert_eq!(w["leaked"].as_u64(), Some(0), "worker leaked frames: {w}");
    }
    assert!(totals["rx"].as_u64().unwrap_or(0) > 10_000, "{totals}");
    for ifname in ["dut-a0", "dut-b0"] {
        let link = topo.dut.ip(&["-d", "link", "show", "dev", ifname]).expect("ip link");
        assert!(!link.contains("prog/xdp"), "{ifname}: XDP program left attached: {link}");
    }
}
