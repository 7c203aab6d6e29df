//! End-to-end tests of the `sluice` binary on a veth topology: client —veth— dut (ports a, b)
//! —veth— server, with `sluice run` inside the dut namespace and traffic from the client.
//!
//! Privileged: each test skips with a message when not root, and must run under `CI=true`.
//! Every test builds its own [`Topology`] (unique namespaces), so they run in parallel; the
//! sluice process is killed and its config file removed when the guard drops, before the
//! namespaces go.

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::loadgen::{LiveSender, SinkAction, UdpFrame, XdpSink};
use sluice::testbed::netns::{
    CLIENT_MAC, DUT_A_MAC, Netns, SERVER_MAC, Topology, TopologyOpts, privileged,
};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");
/// Generous: the machine running the tests may be busy building.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
const SERVER_PORT: u16 = 7000;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn topology(tag: &str) -> Topology {
    Topology::new(TopologyOpts {
        tag: tag.into(),
        ..Default::default()
    })
    .expect("build topology")
}

/// A config for the topology's dut ports; `ports` is the `[[port]]` tables.
fn config(ports: &str) -> String {
    format!(
        r#"
[dataplane]
batch_size = 64
frame_count = 2048
frame_size = 2048
rx_ring = 1024
tx_ring = 1024
zero_copy = "auto"
attach = "auto"
cores = [0]
pass_local = true
passthrough = ["tcp/22"]
{ports}"#
    )
}

const FORWARD: &str = r#"
[[port]]
name = "a"
interface = "dut-a0"
queues = [0]
action = "forward"
forward_to = "b"

[[port]]
name = "b"
interface = "dut-b0"
queues = [0]
action = "forward"
forward_to = "a"
"#;

fn single_port(action: &str) -> String {
    format!(
        r#"
[[port]]
name = "a"
interface = "dut-a0"
queues = [0]
action = "{action}"
"#
    )
}

/// A config file removed on Drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sluice-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("write config");
        ConfigFile(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running `sluice run --json` in the dut namespace; SIGKILLed on Drop if still running.
struct Sluice {
    child: Child,
    events: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    /// Every event received so far, in order.
    seen: Vec<Value>,
    _config: ConfigFile,
}

impl Sluice {
    /// Starts sluice and waits for its `started` event.
    fn start(topo: &Topology, config_text: &str) -> Sluice {
        let config = ConfigFile::new(config_text);
        let mut child = topo
            .dut
            .exec([
                SLUICE,
                "run",
                "--json",
                "--stats-interval-ms",
                "100",
                "--config",
            ])
            .arg(&config.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Value::String(format!("not json ({e}): {line}")));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut sluice = Sluice {
            child,
            events,
            stderr,
            seen: Vec::new(),
            _config: config,
        };
        let started = sluice.wait_event("started", START_TIMEOUT);
        assert!(
            started.is_some(),
            "sluice did not start: {}",
            sluice.diagnostics()
        );
        sluice
    }

    /// The first event named `name` (looking at ones already seen too).
    fn wait_event(&mut self, name: &str, timeout: Duration) -> Option<Value> {
        if let Some(v) = self.seen.iter().find(|v| v["event"] == name) {
            return Some(v.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == name {
                        return Some(v);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Waits for a `tick` event satisfying `pred`.
    fn wait_tick(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if v["event"] == "tick" && pred(&v) {
                        return Some(v);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    fn started(&mut self) -> Value {
        self.wait_event("started", Duration::ZERO)
            .expect("started event")
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} failed");
    }

    /// SIGINT, then the exit status and the `totals` event.
    fn stop(mut self) -> (ExitStatus, Value) {
        self.signal("-INT");
        let status = self.wait_exit(STOP_TIMEOUT);
        let status =
            status.unwrap_or_else(|| panic!("sluice did not exit: {}", self.diagnostics()));
        let totals = self.wait_event("totals", Duration::from_secs(2));
        let totals = totals.unwrap_or_else(|| panic!("no totals event: {}", self.diagnostics()));
        (status, totals)
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last few events and everything sluice wrote to stderr, for failure messages.
    fn diagnostics(&self) -> String {
        let recent = &self.seen[self.seen.len().saturating_sub(4)..];
        format!(
            "last events: {recent:?}\nstderr: {}",
            self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
        )
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP socket bound in the server namespace, receiving in a background thread; `count`
/// returns how many datagrams arrived.
struct UdpCounter {
    received: Arc<AtomicU32>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpCounter {
    fn start(ns: &Netns, addr: SocketAddrV4) -> UdpCounter {
        let sock = ns
            .run_in(move || UdpSocket::bind(addr))
            .expect("enter server")
            .expect("bind server socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let received = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        UdpCounter {
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `want` arrived or `timeout` passes.
    fn wait_for(&self, want: u32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits until `want` arrived or nothing new arrived for `quiet`; returns the count.
    fn settle(&self, want: u32, quiet: Duration) -> u32 {
        let mut last = (self.received.load(Ordering::Relaxed), Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.received.load(Ordering::Relaxed);
            if n >= want {
                return n;
            }
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() >= quiet {
                return n;
            }
        }
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Datagrams per burst in [`send_udp`]. Two bursts must fit the server socket's default
/// receive buffer (212992 bytes), which holds only about 90 forwarded datagrams: each
/// arrives as an skb of about 2.3 KiB truesize from AF_XDP copy-mode transmit.
const BURST: u32 = 32;

/// Sends `total` UDP datagrams (payload: a sequence number) from the client to the server's
/// port as raw frames through AF_PACKET, calling `pace(sent)` after every [`BURST`].
///
/// Raw frames, not a UDP socket: the client's kernel would leave the UDP checksum to veth's
/// (virtual) offload, which XDP and AF_XDP copy mode pass on unresolved, so the server would
/// discard every datagram as a checksum error.
fn send_udp(topo: &Topology, total: u32, mut pace: impl FnMut(u32) + Send) {
    let template = UdpFrame {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        src: SocketAddrV4::new(topo.client_if.addr.expect("client addr"), 9000),
        dst: SocketAddrV4::new(topo.server_if.addr.expect("server addr"), SERVER_PORT),
    };
    topo.client
        .run_in(|| {
            let mut cap = client_capture(topo).expect("open AF_PACKET on the client");
            for i in 0..total {
                let frame = template.build(&i.to_be_bytes()).expect("build frame");
                cap.sendpacket(frame).expect("send frame");
                if i % BURST == BURST - 1 {
                    pace(i + 1);
                }
            }
        })
        .expect("enter client");
}

/// The non-zero kernel SNMP counters of `ns` whose names start with `prefix` (e.g. `Udp`).
fn nstat(ns: &Netns, prefix: &str) -> String {
    let out = ns.exec(["nstat", "-asz"]).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, value) = (f.next()?, f.next()?);
            (value != "0").then(|| format!("{name}={value}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Packets received so far according to a `tick` event: its `rx` total, or the sum over
/// its queues when it only reports those.
fn tick_rx(t: &Value) -> u64 {
    t.get("rx").and_then(Value::as_u64).unwrap_or_else(|| {
        t["queues"]
            .as_array()
            .map_or(0, |qs| qs.iter().filter_map(|q| q["rx"].as_u64()).sum())
    })
}

/// The client → server frame used with the live-frames sender.
fn client_frame(topo: &Topology) -> Vec<u8> {
    UdpFrame {
        src_mac: CLIENT_MAC,
        dst_mac: SERVER_MAC,
        src: SocketAddrV4::new(topo.client_if.addr.expect("client addr"), 9000),
        dst: SocketAddrV4::new(topo.server_if.addr.expect("server addr"), 9001),
    }
    .build(&[0x5a; 18])
    .expect("build frame")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn forward_delivers_every_udp_frame() {
    if !privileged("forward_delivers_every_udp_frame") {
        return;
    }
    let topo = topology("fwd");
    let server = UdpCounter::start(
        &topo.server,
        SocketAddrV4::new(topo.server_if.addr.expect("server addr"), SERVER_PORT),
    );
    let sluice = Sluice::start(&topo, &config(FORWARD));
    // Flow control: never more than two bursts ahead of the server's socket, so a receiver
    // thread starved by a busy machine cannot overflow its buffer. A lost frame only slows
    // this down (the wait times out); the count below catches it.
    send_udp(&topo, 10_000, |sent| {
        server.wait_for(sent.saturating_sub(BURST), Duration::from_millis(500));
    });
    let got = server.settle(10_000, Duration::from_secs(2));
    let (status, totals) = sluice.stop();
    let udp = nstat(&topo.server, "Udp");
    assert_eq!(
        got, 10_000,
        "frames lost through the forwarding dataplane\nsluice totals: {totals}\nserver: {udp}"
    );
    assert!(status.success(), "sluice exit: {status}");
    let a = totals["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["port"] == "a")
        .expect("port a totals");
    assert!(u(&a["rx"]) >= 10_000, "port a rx: {a}");
    assert!(u(&totals["tx"]) >= 10_000, "tx: {totals}");
}

#[test]
fn drop_mode_drops_and_counts_everything() {
    if !privileged("drop_mode_drops_and_counts_everything") {
        return;
    }
    let topo = topology("drop");
    let server = UdpCounter::start(
        &topo.server,
        SocketAddrV4::new(topo.server_if.addr.expect("server addr"), SERVER_PORT),
    );
    let mut sluice = Sluice::start(&topo, &config(&single_port("drop")));
    send_udp(&topo, 10_000, |_| {
        std::thread::sleep(Duration::from_millis(2))
    });
    // Wait until sluice has seen them all, so the totals below are not cut short.
    let seen = sluice.wait_tick(Duration::from_secs(10), |t| tick_rx(t) >= 10_000);
    assert!(
        seen.is_some(),
        "sluice never reported 10000 rx: {}",
        sluice.diagnostics()
    );
    let (status, totals) = sluice.stop();
    assert!(status.success(), "sluice exit: {status}");
    assert_eq!(
        server.settle(1, Duration::from_millis(300)),
        0,
        "a dropped frame arrived"
    );
    assert_eq!(u(&totals["drop"]), 10_000, "drop count: {totals}");
    assert_eq!(u(&totals["rx"]), 10_000, "rx count: {totals}");
    assert_eq!(u(&totals["tx"]), 0, "tx count: {totals}");
}

#[test]
fn reflect_mode_returns_frames_with_swapped_macs() {
    if !privileged("reflect_mode_returns_frames_with_swapped_macs") {
        return;
    }
    const N: usize = 200;
    let topo = topology("refl");
    let sluice = Sluice::start(&topo, &config(&single_port("reflect")));
    let frame = client_frame(&topo);
    let (sent, back) = topo
        .client
        .run_in(|| {
            let mut cap = client_capture(&topo)?;
            let mut back = Vec::new();
            for _ in 0..N {
                cap.sendpacket(frame.as_slice())?;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while back.len() < N && Instant::now() < deadline {
                match cap.next_packet() {
                    Ok(p) => back.push(p.data.to_vec()),
                    Err(pcap::Error::TimeoutExpired) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, pcap::Error>((N, back))
        })
        .expect("enter client")
        .expect("capture on the client");
    let (status, totals) = sluice.stop();
    assert!(status.success(), "sluice exit: {status}");
    assert_eq!(
        back.len(),
        sent,
        "reflected frames missing; totals: {totals}"
    );
    for f in &back {
        assert_eq!(&f[0..6], &CLIENT_MAC, "destination MAC not swapped");
        assert_eq!(&f[6..12], &SERVER_MAC, "source MAC not swapped");
        assert_eq!(&f[12..], &frame[12..], "payload changed");
    }
    assert!(u(&totals["tx"]) >= N as u64, "tx: {totals}");
}

/// An AF_PACKET capture of frames arriving on the client's interface, opened inside the
/// client namespace. Non-blocking with a short block timeout, polled by the caller until its
/// deadline: on this kernel, libpcap in immediate mode delivered only 32 of 200 reflected
/// frames, and a blocking read never returned once frames stopped arriving.
fn client_capture(topo: &Topology) -> Result<pcap::Capture<pcap::Active>, pcap::Error> {
    let cap = pcap::Capture::from_device(topo.client_if.name.as_str())?
        .timeout(50)
        .open()?
        .setnonblock()?;
    cap.direction(pcap::Direction::In)?;
    Ok(cap)
}

/// An ARP request from the client for `target`.
fn arp_request(topo: &Topology, target: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&topo.client_if.addr.expect("client addr").octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An ICMP echo request from the client to the dut's port a.
fn echo_request(topo: &Topology, target: Ipv4Addr, seq: u16) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ethernet2(CLIENT_MAC, DUT_A_MAC)
        .ipv4(
            topo.client_if.addr.expect("client addr").octets(),
            target.octets(),
            64,
        )
        .icmpv4_echo_request(0x5100, seq);
    let payload = b"sluice ping";
    let mut f = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut f, payload).expect("build echo request");
    f
}

#[test]
fn arp_and_ping_to_the_dut_work_while_running() {
    if !privileged("arp_and_ping_to_the_dut_work_while_running") {
        return;
    }
    let topo = topology("mgmt");
    let sluice = Sluice::start(&topo, &config(FORWARD));
    let dut_addr = topo.dut_a.addr.expect("dut address");
    let arp = arp_request(&topo, dut_addr);
    let pings: Vec<Vec<u8>> = (1..=3).map(|s| echo_request(&topo, dut_addr, s)).collect();
    let (arp_reply, echo_replies) = topo
        .client
        .run_in(|| {
            let mut cap = client_capture(&topo)?;
            let mut arp_reply = None;
            let mut echo_replies = 0;
            cap.sendpacket(arp.as_slice())?;
            for p in &pings {
                cap.sendpacket(p.as_slice())?;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while (arp_reply.is_none() || echo_replies < pings.len()) && Instant::now() < deadline {
                let data = match cap.next_packet() {
                    Ok(p) => p.data.to_vec(),
                    Err(pcap::Error::TimeoutExpired) => {
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                // ARP reply (opcode 2) telling the dut's MAC.
                if data.len() >= 28 + 14 && data[12..14] == [0x08, 0x06] && data[20..22] == [0, 2] {
                    arp_reply = Some((data[22..28].to_vec(), data[28..32].to_vec()));
                }
                // ICMP echo reply from the dut.
                if data.len() >= 34 && data[12..14] == [0x08, 0x00] && data[23] == 1 {
                    let ihl = usize::from(data[14] & 0x0f) * 4;
                    if data.get(14 + ihl) == Some(&0) && data[26..30] == dut_addr.octets() {
                        echo_replies += 1;
                    }
                }
            }
            Ok::<_, pcap::Error>((arp_reply, echo_replies))
        })
        .expect("enter client")
        .expect("capture on the client");
    let (status, totals) = sluice.stop();
    assert!(status.success(), "sluice exit: {status}");
    assert_eq!(
        arp_reply,
        Some((DUT_A_MAC.to_vec(), dut_addr.octets().to_vec())),
        "no ARP reply from the dut"
    );
    assert_eq!(echo_replies, 3, "echo replies from the dut");
    let steer_a = totals["steer"]
        .as_array()
        .expect("steer totals")
        .iter()
        .find(|s| s["port"] == "a")
        .expect("steer totals for port a");
    assert!(
        u(&steer_a["passed"]) >= 4,
        "ARP and pings not passed: {steer_a}"
    );
}

#[test]
fn reports_native_attach_and_copy_mode_on_veth() {
    if !privileged("reports_native_attach_and_copy_mode_on_veth") {
        return;
    }
    let topo = topology("mode");
    let mut sluice = Sluice::start(&topo, &config(FORWARD));
    let started = sluice.started();
    let ports = started["ports"].as_array().expect("ports in started event");
    assert_eq!(ports.len(), 2, "{started}");
    for (port, ifname) in [("a", "dut-a0"), ("b", "dut-b0")] {
        let p = ports
            .iter()
            .find(|p| p["port"] == port)
            .unwrap_or_else(|| panic!("port {port} missing: {started}"));
        assert_eq!(p["interface"], ifname, "{p}");
        assert_eq!(p["attach"], "native", "veth supports native XDP: {p}");
        let queues = p["queues"].as_array().expect("queues");
        assert_eq!(queues.len(), 1, "{p}");
        assert_eq!(queues[0]["queue"], 0, "{p}");
        assert_eq!(queues[0]["mode"], "copy", "veth has no zero-copy: {p}");
        assert_eq!(queues[0]["core"], 0, "{p}");
    }
    let (status, _) = sluice.stop();
    assert!(status.success(), "sluice exit: {status}");
}

/// The XDP program attached to `ifname` (`ip -d link` shows `prog/xdp id N`), if any.
fn xdp_prog_on(ns: &Netns, ifname: &str) -> Option<String> {
    let out = ns
        .ip(&["-d", "link", "show", "dev", ifname])
        .expect("ip link show");
    out.lines()
        .find(|l| l.contains("prog/xdp"))
        .map(|l| l.trim().to_string())
}

#[test]
fn sigkill_leaves_no_xdp_program_attached() {
    if !privileged("sigkill_leaves_no_xdp_program_attached") {
        return;
    }
    let topo = topology("kill");
    let mut sluice = Sluice::start(&topo, &config(FORWARD));
    for ifname in ["dut-a0", "dut-b0"] {
        assert!(
            xdp_prog_on(&topo.dut, ifname).is_some(),
            "{ifname}: nothing attached while running"
        );
    }
    sluice.signal("-KILL");
    assert!(
        sluice.wait_exit(STOP_TIMEOUT).is_some(),
        "sluice survived SIGKILL"
    );
    // The links close with the process's file descriptors; give the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        left = ["dut-a0", "dut-b0"]
            .iter()
            .filter_map(|i| xdp_prog_on(&topo.dut, i).map(|p| format!("{i}: {p}")))
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(left.is_empty(), "XDP programs left attached: {left:?}");
}

#[test]
fn no_frame_leaks_after_a_million_frames() {
    if !privileged("no_frame_leaks_after_a_million_frames") {
        return;
    }
    const TARGET: u64 = 1_000_000;
    let topo = topology("leak");
    // The server side just drops what sluice forwards, so its stack stays quiet.
    let _sink = topo
        .server
        .run_in(|| XdpSink::attach("srv0", SinkAction::Drop))
        .expect("enter server")
        .expect("attach sink on the server");
    let mut sluice = Sluice::start(&topo, &config(FORWARD));
    let frame = client_frame(&topo);
    let sender = topo
        .client
        .run_in(|| LiveSender::new("cli0", &frame))
        .expect("enter client")
        .expect("create live sender");
    // Bursts until sluice has processed a million: most of a burst may be dropped at the
    // socket's RX ring, which is fine — only what sluice takes in counts.
    let mut sent = 0u64;
    let mut rx = 0u64;
    while rx < TARGET && sent < 50 * TARGET {
        sent += topo
            .client
            .run_in(|| sender.send(200_000))
            .expect("enter client")
            .expect("send burst");
        if let Some(t) = sluice.wait_tick(Duration::from_secs(5), |_| true) {
            rx = rx.max(tick_rx(&t));
        }
    }
    let (status, totals) = sluice.stop();
    assert!(status.success(), "sluice exit: {status}");
    assert!(
        u(&totals["rx"]) >= TARGET,
        "only {} frames processed after {sent} sent",
        totals["rx"]
    );
    let frames = totals["frames"]
        .as_array()
        .expect("frame accounting in totals");
    assert!(!frames.is_empty(), "{totals}");
    for w in frames {
        assert_eq!(u(&w["leaked"]), 0, "worker leaked frames: {w}");
        assert!(u(&w["total"]) > 0, "{w}");
    }
}

#[test]
fn bad_config_exits_2_with_key_and_reason() {
    // Config errors are found before anything needs privileges.
    let base = config(FORWARD);
    for (text, key) in [
        (base.replace("batch_size = 64", "batch_size = 64\nbogus_key = 1"), "bogus_key"),
        (base.replace("batch_size = 64", "batch_size = 0"), "batch_size"),
        // An unknown identity is a config error too, like `sluice check` says.
        (format!("user = 'no-such-user-zz'\n{base}"), "user: user `no-such-user-zz` does not exist"),
        (format!("user = 'nobody'\ngroup = 'no-such-group-zz'\n{base}"), "group: group `no-such-group-zz`"),
    ] {
        let bad = &text;
        let config = ConfigFile::new(&text);
        let out = std::process::Command::new(SLUICE)
            .args(["run", "--config"])
            .arg(&config.0)
            .output()
            .expect("run sluice");
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let prefix = format!("error: {}: ", config.0.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(key)),
            "{bad}: stderr: {stderr}"
        );
    }
}
