//! Privileged integration tests for AF_XDP groups and the worker, each inside a throwaway
//! network namespace holding a veth pair. Skipped (with a message) when not root, unless
//! `CI=true`, where they must run.
//!
//! The peer end is driven with AF_PACKET sockets (libc), so these tests talk to the kernel
//! directly; every `unsafe` block is such a syscall.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sluice::stats::QueueStats;
use sluice::worker::{Action, Worker};
use sluice::xsk::{XskConfig, XskError, XskGroup, XskMode, ZeroCopy};

/// Whether privileged tests can run here; panics under `CI=true` when they cannot.
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: CI=true but not root; privileged AF_XDP tests must run in CI");
    }
    eprintln!("skipping privileged test {test}: needs root (AF_XDP, network namespaces)");
    false
}

/// A network namespace with a veth pair `xa` <-> `xb` (one queue each), removed on drop.
/// Interface names are fixed because they live only inside the uniquely named namespace.
struct Netns {
    name: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn with_veth() -> Netns {
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: format!("sluice-xsk-{}-{n}", std::process::id()),
        };
        run(&["ip", "netns", "add", &ns.name]);
        // Without IPv6 the kernel sends no router solicitations or MLD reports of its own,
        // so the only frames on the wire are the test's.
        for key in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]);
        }
        ns.ip(&[
            "link",
            "add",
            "xa",
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
            "type",
            "veth",
            "peer",
            "name",
            "xb",
            "numrxqueues",
            "1",
            "numtxqueues",
            "1",
        ]);
        ns.ip(&["link", "set", "xa", "up"]);
        ns.ip(&["link", "set", "xb", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }

    fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full);
    }

    /// Runs `f` on a fresh thread inside the namespace (setns changes only the calling
    /// thread, so the test thread itself stays where it was).
    fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        thread::scope(|s| {
            let handle = s.spawn(move || {
                let file = std::fs::File::open(&path).expect("open netns handle");
                // SAFETY: `file` is an open namespace descriptor for the duration of the call.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            });
            match handle.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn command");
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// EtherType from the IEEE "local experimental" range, so test frames are unmistakable.
const TEST_ETHERTYPE: u16 = 0x88b5;
const MAGIC: u32 = 0x51c3_e0a1;
const FRAME_LEN: usize = 60;
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Writes test frame `seq` into `buf`, returns its length.
fn write_frame(buf: &mut [u8], seq: u32) -> usize {
    buf[..FRAME_LEN].fill(0);
    buf[0..6].copy_from_slice(&DST_MAC);
    buf[6..12].copy_from_slice(&SRC_MAC);
    buf[12..14].copy_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    buf[14..18].copy_from_slice(&MAGIC.to_be_bytes());
    buf[18..22].copy_from_slice(&seq.to_be_bytes());
    FRAME_LEN
}

/// The sequence number of a test frame, or `None` for any other frame.
fn test_seq(frame: &[u8]) -> Option<u32> {
    if frame.len() < 22 || frame[12..14] != TEST_ETHERTYPE.to_be_bytes() {
        return None;
    }
    if frame[14..18] != MAGIC.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes([
        frame[18], frame[19], frame[20], frame[21],
    ]))
}

/// An AF_PACKET socket bound to one interface, seeing every frame on it.
struct RawSocket {
    fd: OwnedFd,
}

impl RawSocket {
    fn open(ifname: &str) -> RawSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "af_packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a freshly created descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = CString::new(ifname).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind af_packet to {ifname}: {}",
            std::io::Error::last_os_error()
        );
        let sock = RawSocket { fd };
        sock.set_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
        sock.set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 64 << 20);
        sock.set_int(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `tv` is a valid timeval and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0);
        sock
    }

    fn set_int(&self, level: i32, opt: i32, value: i32) {
        // SAFETY: `value` is a valid int and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "setsockopt {level}/{opt}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Receives until `want` test frames were seen or nothing arrived for `quiet`; returns
    /// how many times each sequence number (below `want`) was seen and other frames' count.
    fn collect(&self, want: usize, quiet: Duration) -> (Vec<u32>, usize) {
        let mut seen = vec![0u32; want];
        let mut got = 0;
        let mut other = 0;
        let mut buf = [0u8; 2048];
        let mut last = Instant::now();
        while got < want && last.elapsed() < quiet {
            // SAFETY: `buf` is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                continue; // timeout (EAGAIN) or EINTR: check the quiet period again
            }
            last = Instant::now();
            match test_seq(&buf[..n as usize]) {
                Some(seq) if (seq as usize) < want => {
                    seen[seq as usize] += 1;
                    got += 1;
                }
                _ => other += 1,
            }
        }
        (seen, other)
    }
}

fn small_config(zero_copy: ZeroCopy) -> XskConfig {
    XskConfig {
        frame_count: 1024,
        rx_ring: 512,
        tx_ring: 512,
        zero_copy,
        ..XskConfig::default()
    }
}

fn ports(names: &[&str]) -> Vec<(String, u32)> {
    names.iter().map(|n| (n.to_string(), 0)).collect()
}

#[test]
fn veth_falls_back_to_copy_mode() {
    if !privileged("veth_falls_back_to_copy_mode") {
        return;
    }
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa"])).unwrap();
        assert_eq!(group.mode(0), XskMode::Copy);
        assert!(group.fd(0) >= 0);
        drop(group);

        let err = XskGroup::open(&small_config(ZeroCopy::On), &ports(&["xa"])).unwrap_err();
        assert!(
            matches!(err, XskError::ZeroCopyUnsupported { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("zero-copy not supported on xa queue 0: "),
            "{msg}"
        );

        let group = XskGroup::open(&small_config(ZeroCopy::Off), &ports(&["xa", "xb"])).unwrap();
        assert_eq!(
            (group.mode(0), group.mode(1)),
            (XskMode::Copy, XskMode::Copy)
        );
        assert_ne!(group.fd(0), group.fd(1));

        let err = XskGroup::open(&small_config(ZeroCopy::Off), &ports(&["nosuch0"])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("open af_xdp socket on nosuch0 queue 0 in copy mode: ")
        );
    });
}

/// Sends `count` frames out of port `p` of `group` with the transmit hook, reclaiming
/// completions as it goes.
fn transmit_all(group: &mut XskGroup, p: usize, count: u32) {
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seq < count {
        assert!(
            Instant::now() < deadline,
            "transmit stalled at {seq}/{count}"
        );
        group.service_tx(p).unwrap();
        let want = (count - seq).min(64) as usize;
        let base = seq;
        seq += group
            .transmit(p, want, |i, buf| write_frame(buf, base + i as u32))
            .unwrap() as u32;
    }
}

#[test]
fn shared_umem_transmits_on_both_ports_and_accounts_for_every_frame() {
    if !privileged("shared_umem_transmits_on_both_ports_and_accounts_for_every_frame") {
        return;
    }
    const N: u32 = 10_000;
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let mut group =
            XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa", "xb"])).unwrap();
        assert_eq!(group.free_frames(), 1024);
        // xa's frames arrive on xb and the other way round.
        for (p, peer) in [(0, "xb"), (1, "xa")] {
            let sock = RawSocket::open(peer);
            let (seen, _other) = thread::scope(|s| {
                let rx = s.spawn(|| sock.collect(N as usize, Duration::from_secs(2)));
                transmit_all(&mut group, p, N);
                rx.join().unwrap()
            });
            let missing = seen.iter().filter(|&&c| c == 0).count();
            let doubled = seen.iter().filter(|&&c| c > 1).count();
            assert_eq!(
                (missing, doubled),
                (0, 0),
                "port {p}: frames missing or doubled at {peer}"
            );
            assert_eq!(group.counters(p).tx, u64::from(N));
        }
        let account = group.drain(Duration::from_secs(2));
        account.check().unwrap();
        assert_eq!(
            (account.free, account.fill, account.tx_in_flight),
            (1024, 0, 0)
        );
        assert!(account.audit.inspected >= 1024);
    });
}

#[test]
fn idle_worker_sleeps_and_stops_promptly_with_frames_accounted() {
    if !privileged("idle_worker_sleeps_and_stops_promptly_with_frames_accounted") {
        return;
    }
    let ns = Netns::with_veth();
    let group =
        ns.run_in(|| XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa", "xb"])).unwrap());
    let mut worker = Worker::new(group, vec![Action::Forward(1), Action::Forward(0)], 64).unwrap();
    let stats: Vec<_> = (0..2).map(|_| Arc::new(QueueStats::new())).collect();
    let stop = AtomicBool::new(false);
    let (account, stopped_in) = thread::scope(|s| {
        let w = s.spawn(|| worker.run(&stop, &stats).unwrap());
        thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let account = w.join().unwrap();
        (account, t.elapsed())
    });
    assert!(
        stopped_in < Duration::from_millis(400),
        "worker took {stopped_in:?} to stop"
    );
    account.check().unwrap();
    // Everything went to the two fill rings, half each, and nothing was received.
    assert_eq!((account.free, account.in_fill()), (0, 1024), "{account}");
    let snap = stats[0].snapshot();
    assert_eq!(snap.rx, 0);
    assert!(
        snap.polls >= 1,
        "an idle worker should sleep in poll: {snap:?}"
    );
}

#[test]
fn worker_rejects_inconsistent_setups() {
    if !privileged("worker_rejects_inconsistent_setups") {
        return;
    }
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let open = || XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa", "xb"])).unwrap();
        let err = Worker::new(open(), vec![Action::Drop], 64).unwrap_err();
        assert_eq!(err.to_string(), "worker has 1 actions for 2 ports");
        let err = Worker::new(open(), vec![Action::Drop, Action::Forward(2)], 64).unwrap_err();
        assert_eq!(
            err.to_string(),
            "port 1 forwards to port 2, but the group has 2 ports"
        );
        let err = Worker::new(open(), vec![Action::Drop, Action::Drop], 0).unwrap_err();
        assert_eq!(err.to_string(), "batch size 0 not in 1..=512");
        let mut w = Worker::new(open(), vec![Action::Drop, Action::Reflect], 64).unwrap();
        let one = [Arc::new(QueueStats::new())];
        let err = w.run(&AtomicBool::new(true), &one).unwrap_err();
        assert_eq!(err.to_string(), "worker has 1 stats slots for 2 ports");
    });
}
