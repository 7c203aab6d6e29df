//! Shared harness of the tests that run `sluice run` in a namespace topology: a directory of
//! config files, the daemon itself, `sluice ctl`, UDP listeners that count datagrams, and raw
//! UDP frames sent from the client. Each piece cleans up on Drop, so every exit path of a test
//! leaves nothing behind.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice::testbed::netns::{CLIENT_MAC, Netns, SERVER_MAC, Topology};

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// A directory of files (`sluice-<tag>-<pid>` in the temp dir), removed on Drop.
pub struct Files(pub PathBuf);

impl Files {
    pub fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("sluice-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Files(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `sluice run --json` in the dut namespace; killed on Drop (before the namespaces go).
pub struct Sluice(Child, Option<JoinHandle<Vec<String>>>);

impl Sluice {
    /// Starts it and waits for its `started` event.
    pub fn start(topo: &Topology, config: &Path) -> Sluice {
        let mut child = topo
            .dut
            .exec([SLUICE, "run", "--json", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sluice");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let started = lines.by_ref().map_while(Result::ok).any(|l| l.contains("\"event\":\"started\""));
        let mut sluice = Sluice(child, None);
        if !started {
            let status = sluice.0.wait().expect("wait");
            panic!("sluice run did not start: {status}");
        }
        // Keep draining stdout so sluice never blocks on a full pipe; the lines are kept for
        // the exit totals.
        sluice.1 = Some(std::thread::spawn(move || lines.map_while(Result::ok).collect()));
        sluice
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill").args([sig, &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success());
    }

    /// Stops it with SIGINT, asserts a clean exit, returns what it printed after starting.
    pub fn stop(mut self) -> Vec<String> {
        self.signal("-INT");
        let status = self.0.wait().expect("wait for sluice");
        assert!(status.success(), "sluice exit: {status}");
        self.1.take().expect("stdout reader").join().expect("stdout reader")
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sluice ctl --socket S ARGS` in the dut namespace: (success, stdout, stderr).
pub fn ctl(topo: &Topology, socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = topo.dut.exec([SLUICE, "ctl", "--socket"]).arg(socket).args(args).output().expect("run sluice ctl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Datagrams arriving at an address in a namespace, counted in a background thread.
pub struct Listener {
    count: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl Listener {
    pub fn start(ns: &Netns, addr: SocketAddrV4) -> Listener {
        let sock = ns.run_in(move || UdpSocket::bind(addr)).expect("enter namespace").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let (count, stop) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
        let (c, s) = (Arc::clone(&count), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Listener { count, stop }
    }

    pub fn get(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until at least `want` arrived or `timeout` passed; returns the count.
    pub fn wait_for(&self, want: u32, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        while self.get() < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.get()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A UDP frame with correct checksums (stack-sent UDP on veth carries partial ones), with the
/// sequence number `seq` as its payload.
pub fn udp_frame(macs: ([u8; 6], [u8; 6]), src: SocketAddrV4, dst: SocketAddrV4, seq: u32) -> Vec<u8> {
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src.ip().octets(), dst.ip().octets(), 64)
        .udp(src.port(), dst.port())
        .write(&mut f, &seq.to_be_bytes())
        .expect("build frame");
    f
}

/// [`udp_frame`] from the client's MAC and port 9000 at `src` to the server's MAC, `dst:dport`.
pub fn client_frame(src: Ipv4Addr, dst: Ipv4Addr, dport: u16, seq: u32) -> Vec<u8> {
    udp_frame((CLIENT_MAC, SERVER_MAC), SocketAddrV4::new(src, 9000), SocketAddrV4::new(dst, dport), seq)
}

/// Runs `body` while a thread sends `frame(0)`, `frame(1)`, ... from the client through
/// AF_PACKET, at most 32 frames ahead of `delivered()` so no socket buffer overflows (waiting
/// up to 2 s per frame), until `body` returned and at least `min` frames went out. `body` sees
/// the count sent so far. Returns the frames sent. The sender stops when `body` panics too.
pub fn while_sending(
    topo: &Topology,
    min: u32,
    frame: impl Fn(u32) -> Vec<u8> + Sync,
    delivered: impl Fn() -> u32 + Sync,
    body: impl FnOnce(&AtomicU32),
) -> u32 {
    /// Stops the sender when the scope ends, a failed assertion included.
    struct StopSending<'a>(&'a AtomicBool);
    impl Drop for StopSending<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    let (sending, sent) = (AtomicBool::new(true), AtomicU32::new(0));
    std::thread::scope(|scope| {
        let stop = StopSending(&sending);
        let sender = scope.spawn(|| {
            topo.client
                .run_in(|| {
                    let mut cap = pcap::Capture::from_device(topo.client_if.name.as_str())
                        .and_then(|c| c.timeout(50).open())
                        .expect("open AF_PACKET on the client");
                    let mut n = 0u32;
                    while sending.load(Ordering::Relaxed) || n < min {
                        cap.sendpacket(frame(n)).expect("send");
                        n += 1;
                        sent.store(n, Ordering::Relaxed);
                        let stall = Instant::now() + Duration::from_secs(2);
                        while n - delivered() > 32 && Instant::now() < stall {
                            std::thread::yield_now();
                        }
                    }
                })
                .expect("enter client")
        });
        body(&sent);
        drop(stop);
        sender.join().expect("sender");
    });
    sent.load(Ordering::Relaxed)
}
