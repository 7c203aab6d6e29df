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
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sluice::stats::QueueStats;
use sluice::steer::{AttachPref, Steering};
use sluice::worker::{Action, Worker};
use sluice::xsk::{FrameAccount, Verdict, XskConfig, XskError, XskGroup, XskMode, ZeroCopy};

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

/// A network namespace holding veth pairs (one queue each), removed on drop. Interface
/// names are fixed because they live only inside the uniquely named namespace.
struct Netns {
    name: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// The pair `xa` <-> `xb`.
    fn with_veth() -> Netns {
        Netns::with_pairs(&[("xa", "xb")])
    }

    fn with_pairs(pairs: &[(&str, &str)]) -> Netns {
        let n = NS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let ns = Netns {
            name: format!("sluice-xsk-{}-{n}", std::process::id()),
        };
        run(&["ip", "netns", "add", &ns.name]);
        // Without IPv6 the kernel sends no router solicitations or MLD reports of its own,
        // and no address means no ARP: the only frames on the wire are the test's.
        for key in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ]);
        }
        for (a, b) in pairs {
            let one = ["numrxqueues", "1", "numtxqueues", "1"];
            let mut args = vec!["link", "add", a];
            args.extend(one);
            args.extend(["type", "veth", "peer", "name", b]);
            args.extend(one);
            ns.ip(&args);
            ns.ip(&["link", "set", a, "up"]);
            ns.ip(&["link", "set", b, "up"]);
        }
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
    /// thread, so the test thread itself stays where it was; threads `f` spawns inherit it).
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
    ifindex: i32,
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
        let sock = RawSocket { fd, ifindex };
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

    /// Receives until `want` test frames from `src` were seen or nothing arrived for `quiet`;
    /// returns how many times each sequence number (below `want`) was seen, and how many
    /// other frames arrived.
    fn collect(&self, want: usize, src: [u8; 6], quiet: Duration) -> (Vec<u32>, usize) {
        self.collect_counting(want, src, quiet, &AtomicU64::new(0))
    }

    /// [`collect`](Self::collect), storing the number of test frames seen so far in `progress`
    /// (for a paced sender to follow).
    fn collect_counting(
        &self,
        want: usize,
        src: [u8; 6],
        quiet: Duration,
        progress: &AtomicU64,
    ) -> (Vec<u32>, usize) {
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
            let frame = &buf[..n as usize];
            match test_seq(frame) {
                Some(seq) if (seq as usize) < want && frame[6..12] == src => {
                    seen[seq as usize] += 1;
                    got += 1;
                    progress.store(got as u64, Ordering::Relaxed);
                }
                _ => other += 1,
            }
        }
        (seen, other)
    }

    /// Sends test frames `first..first + count` in `sendmmsg` bursts. When `pace` is given,
    /// keeps at most `window` frames ahead of what it reports as received at the far end,
    /// so nothing is lost to a full ring; panics if the far end stops making progress.
    fn send(&self, first: u32, count: u32, pace: Option<(&dyn Fn() -> u64, u64)>) -> u64 {
        const BURST: usize = 64;
        let mut frames = vec![[0u8; FRAME_LEN]; BURST];
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&DST_MAC);
        let mut sent = 0u64;
        let mut seq = first;
        let end = first + count;
        let mut progress_at = (0, Instant::now());
        while seq < end {
            if let Some((received, window)) = pace {
                let now = received();
                if now != progress_at.0 {
                    progress_at = (now, Instant::now());
                }
                assert!(
                    progress_at.1.elapsed() < Duration::from_secs(5),
                    "receiver stuck at {now} of {sent} sent"
                );
                if sent >= now + window {
                    thread::sleep(Duration::from_micros(50));
                    continue;
                }
            }
            let n = (end - seq).min(BURST as u32) as usize;
            let mut iovs: Vec<libc::iovec> = Vec::with_capacity(n);
            for (i, frame) in frames.iter_mut().take(n).enumerate() {
                write_frame(frame, seq + i as u32);
                iovs.push(libc::iovec {
                    iov_base: frame.as_mut_ptr().cast(),
                    iov_len: FRAME_LEN,
                });
            }
            // SAFETY: mmsghdr is plain data; all-zero is a valid starting value.
            let mut msgs: Vec<libc::mmsghdr> =
                (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
                m.msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every header points at live buffers (`frames`, `iovs`, `sll`) that
            // outlive the call, and `n` is the number of headers.
            let rc = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
            if rc < 0 {
                let err = std::io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                        thread::yield_now();
                        continue;
                    }
                    _ => panic!("sendmmsg: {err}"),
                }
            }
            sent += rc as u64;
            seq += rc as u32;
        }
        sent
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

/// Sends frames `first..count` out of port `p` of `group` with the transmit hook, reclaiming
/// completions as it goes.
fn transmit_all(group: &mut XskGroup, p: usize, first: u32, count: u32) {
    let mut seq = first;
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
            let _napi = napi_receive(peer);
            let sock = RawSocket::open(peer);
            let (seen, _other) = thread::scope(|s| {
                let rx = s.spawn(|| sock.collect(N as usize, SRC_MAC, Duration::from_secs(2)));
                // One kick sends a whole batch: the copy-mode budget was raised to the ring
                // size (the kernel default of 32 would take two).
                let kicks = group.counters(p).kicks;
                let sent = group
                    .transmit(p, 256, |i, buf| write_frame(buf, i as u32))
                    .unwrap();
                assert_eq!((sent, group.counters(p).kicks - kicks), (256, 1));
                transmit_all(&mut group, p, 256, N);
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

/// Attaches the steering program to every port of `group` and registers its sockets, so
/// frames arriving on those interfaces land on the group's RX rings. Keep the result alive
/// for as long as traffic should flow; dropping it detaches.
fn steer_into(group: &XskGroup) -> Vec<Steering> {
    (0..group.len())
        .map(|i| {
            let (ifname, queue) = group.port(i);
            let mut steering = Steering::attach(ifname, AttachPref::Auto, &[], false).unwrap();
            steering.register_socket(queue, group.fd(i)).unwrap();
            steering
        })
        .collect()
}

/// Runs `worker` on its own thread while `traffic` runs on this one, then stops it and
/// returns what `run` returned.
fn with_worker(
    worker: &mut Worker,
    stats: &[Arc<QueueStats>],
    traffic: impl FnOnce(),
) -> FrameAccount {
    /// Sets the flag when dropped, so a failing `traffic` (unwinding) still stops the worker
    /// instead of leaving the scope waiting for it forever.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let w = s.spawn(|| worker.run(&stop, stats));
        {
            let _stop = StopOnDrop(&stop);
            traffic();
        }
        w.join().unwrap().unwrap()
    })
}

/// Attaches the steering program, with no socket, to an observer interface: it passes every
/// test frame to the kernel, but from NAPI rather than through the per-CPU backlog queue that
/// plain veth receive uses. That queue is shared with every other namespace on the CPU, so a
/// parallel test flooding it could otherwise make this one lose frames.
fn napi_receive(ifname: &str) -> Steering {
    Steering::attach(ifname, AttachPref::Auto, &[], false).unwrap()
}

/// Frames a paced sender keeps in flight: well under the smallest ring on the way (veth's
/// 256-entry XDP ring), so nothing is dropped for lack of space.
const PACE_WINDOW: u64 = 128;

fn new_stats(n: usize) -> Vec<Arc<QueueStats>> {
    (0..n).map(|_| Arc::new(QueueStats::new())).collect()
}

/// Waits until `cond` holds, panicking with `what` after a few seconds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn received_frames_follow_their_verdicts() {
    if !privileged("received_frames_follow_their_verdicts") {
        return;
    }
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let mut group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa"])).unwrap();
        let _steering = steer_into(&group);
        while group.refill(0) > 0 {}
        let _napi = napi_receive("xb");
        let peer = RawSocket::open("xb");
        let listener = RawSocket::open("xb");

        // Receives exactly `n` frames with `verdict`, checking what the closure sees.
        let mut receive = |n: usize, verdict: Verdict| {
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(5);
            while got < n {
                assert!(Instant::now() < deadline, "received {got} of {n}");
                let _ = group.service_tx(0).unwrap();
                got += group
                    .process_rx(0, 64, |frame| {
                        assert_eq!(frame.len(), FRAME_LEN);
                        assert!(test_seq(frame).is_some());
                        verdict
                    })
                    .unwrap();
                group.refill(0);
            }
            assert_eq!(got, n);
            group.counters(0)
        };

        assert_eq!(peer.send(0, 100, None), 100);
        let c = receive(100, Verdict::Drop);
        assert_eq!((c.rx, c.dropped, c.tx), (100, 100, 0));

        // A verdict naming a port the group does not have drops the frame.
        assert_eq!(peer.send(0, 50, None), 50);
        let c = receive(50, Verdict::Tx(7));
        assert_eq!((c.rx, c.dropped, c.tx), (150, 150, 0));

        // Sending back unchanged: the frames come out of xa and arrive at xb as sent.
        assert_eq!(peer.send(0, 200, None), 200);
        let c = receive(200, Verdict::Tx(0));
        assert_eq!((c.rx, c.dropped, c.tx, c.ring_full), (350, 150, 200, 0));
        let (seen, _) = listener.collect(200, SRC_MAC, Duration::from_secs(2));
        assert!(
            seen.iter().all(|&c| c == 1),
            "every frame back once: {seen:?}"
        );

        let account = group.drain(Duration::from_secs(2));
        account.check().unwrap();
        assert_eq!(account.free + account.in_fill(), 1024, "{account}");
    });
}

#[test]
fn worker_drops_every_frame_and_counts_it() {
    if !privileged("worker_drops_every_frame_and_counts_it") {
        return;
    }
    const N: u32 = 10_000;
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa"])).unwrap();
        let steering = steer_into(&group);
        let _napi = napi_receive("xb");
        let listener = RawSocket::open("xb");
        let mut worker = Worker::new(group, vec![Action::Drop], 64).unwrap();
        let stats = new_stats(1);
        let account = with_worker(&mut worker, &stats, || {
            let peer = RawSocket::open("xb");
            let rx = || stats[0].snapshot().rx;
            assert_eq!(peer.send(0, N, Some((&rx, PACE_WINDOW))), u64::from(N));
            wait_for("all frames received", || rx() == u64::from(N));
        });
        account.check().unwrap();
        let s = stats[0].snapshot();
        assert_eq!(
            (s.rx, s.drop, s.tx, s.malformed),
            (u64::from(N), u64::from(N), 0, 0)
        );
        assert_eq!(s.busy_pkts, u64::from(N));
        assert!(s.busy_ns > 0);
        let sc = steering[0].counters().unwrap();
        assert_eq!(sc.redirected, u64::from(N));
        let (seen, _) = listener.collect(1, DST_MAC, Duration::from_millis(200));
        assert_eq!(seen, [0], "nothing comes back in drop mode");
    });
}

#[test]
fn worker_reflects_frames_with_swapped_macs() {
    if !privileged("worker_reflects_frames_with_swapped_macs") {
        return;
    }
    const N: u32 = 10_000;
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa"])).unwrap();
        let _steering = steer_into(&group);
        let _napi = napi_receive("xb");
        let listener = RawSocket::open("xb");
        let mut worker = Worker::new(group, vec![Action::Reflect], 64).unwrap();
        let stats = new_stats(1);
        let mut seen = Vec::new();
        let account = with_worker(&mut worker, &stats, || {
            // Paced on what came back, so frames queued anywhere on the way stay bounded.
            let back_count = AtomicU64::new(0);
            thread::scope(|s| {
                let back = s.spawn(|| {
                    let quiet = Duration::from_secs(3);
                    listener.collect_counting(N as usize, DST_MAC, quiet, &back_count)
                });
                let peer = RawSocket::open("xb");
                let progress = || back_count.load(Ordering::Relaxed);
                assert_eq!(
                    peer.send(0, N, Some((&progress, PACE_WINDOW))),
                    u64::from(N)
                );
                seen = back.join().unwrap().0;
            });
        });
        account.check().unwrap();
        // Reflected frames come from DST_MAC (checked by `collect`) and go to SRC_MAC.
        let missing = seen.iter().filter(|&&c| c != 1).count();
        assert_eq!(missing, 0, "every frame reflected exactly once");
        let s = stats[0].snapshot();
        assert_eq!(
            (s.rx, s.tx, s.drop, s.ring_full),
            (u64::from(N), u64::from(N), 0, 0)
        );
        assert!(s.wakeups > 0, "copy-mode tx needs kicks");
    });
}

#[test]
fn worker_forwards_between_two_ports_both_ways() {
    if !privileged("worker_forwards_between_two_ports_both_ways") {
        return;
    }
    const N: u32 = 10_000;
    // client ca <-> xa [sluice] xb <-> sb server
    let ns = Netns::with_pairs(&[("ca", "xa"), ("xb", "sb")]);
    ns.run_in(|| {
        let group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa", "xb"])).unwrap();
        let _steering = steer_into(&group);
        let mut worker =
            Worker::new(group, vec![Action::Forward(1), Action::Forward(0)], 64).unwrap();
        let stats = new_stats(2);
        let _napi = (napi_receive("ca"), napi_receive("sb"));
        let (client, server) = (RawSocket::open("ca"), RawSocket::open("sb"));
        let mut results = Vec::new();
        let account = with_worker(&mut worker, &stats, || {
            for (from, to) in [(&client, &server), (&server, &client)] {
                // Paced on arrivals at the far end: pacing on the worker's receive count
                // alone would let frames pile up on the TX side and starve the fill ring.
                let arrived = AtomicU64::new(0);
                thread::scope(|s| {
                    let far = s.spawn(|| {
                        let quiet = Duration::from_secs(3);
                        to.collect_counting(N as usize, SRC_MAC, quiet, &arrived)
                    });
                    let progress = || arrived.load(Ordering::Relaxed);
                    assert_eq!(
                        from.send(0, N, Some((&progress, PACE_WINDOW))),
                        u64::from(N)
                    );
                    results.push(far.join().unwrap().0);
                });
            }
        });
        account.check().unwrap();
        for (dir, seen) in ["client->server", "server->client"].iter().zip(&results) {
            let bad = seen.iter().filter(|&&c| c != 1).count();
            assert_eq!(bad, 0, "{dir}: every frame forwarded exactly once");
        }
        let (a, b) = (stats[0].snapshot(), stats[1].snapshot());
        assert_eq!(
            (a.rx, a.tx, b.rx, b.tx),
            (u64::from(N), u64::from(N), u64::from(N), u64::from(N))
        );
        assert_eq!((a.drop, b.drop, a.ring_full, b.ring_full), (0, 0, 0, 0));
    });
}

#[test]
fn a_million_forwarded_frames_leave_every_frame_accounted_for() {
    if !privileged("a_million_forwarded_frames_leave_every_frame_accounted_for") {
        return;
    }
    const MIN_FRAMES: u64 = 1_000_000;
    let ns = Netns::with_pairs(&[("ca", "xa"), ("xb", "sb")]);
    ns.run_in(|| {
        let group = XskGroup::open(&small_config(ZeroCopy::Auto), &ports(&["xa", "xb"])).unwrap();
        let _steering = steer_into(&group);
        let mut worker =
            Worker::new(group, vec![Action::Forward(1), Action::Forward(0)], 64).unwrap();
        let stats = new_stats(2);
        let _napi = napi_receive("sb");
        let client = RawSocket::open("ca");
        let started = Instant::now();
        let mut sent = 0;
        let account = with_worker(&mut worker, &stats, || {
            // Unpaced: the rings overflow at times and the kernel drops; keep sending until
            // the worker itself has handled a million frames.
            while stats[0].snapshot().rx < MIN_FRAMES {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "too slow: {:?}",
                    stats[0].snapshot()
                );
                sent += client.send(0, 65_536, None);
            }
        });
        account.check().unwrap();
        let (a, b) = (stats[0].snapshot(), stats[1].snapshot());
        assert!(a.rx >= MIN_FRAMES, "{a:?}");
        // Every frame received on xa was either put on xb's TX ring or lost to a full one.
        assert_eq!(a.rx, b.tx + b.ring_full + a.drop, "a {a:?} b {b:?}");
        assert_eq!(a.malformed, 0);
        let k = worker.group().kernel_stats(0).unwrap();
        eprintln!(
            "sent {sent}, received {}, forwarded {}, ring full {}; kernel: {k:?}; {account}",
            a.rx, b.tx, b.ring_full
        );
    });
}

#[test]
fn a_full_tx_ring_drops_the_overflow_and_counts_it() {
    if !privileged("a_full_tx_ring_drops_the_overflow_and_counts_it") {
        return;
    }
    let ns = Netns::with_veth();
    ns.run_in(|| {
        let cfg = XskConfig {
            tx_ring: 16,
            ..small_config(ZeroCopy::Auto)
        };
        let mut group = XskGroup::open(&cfg, &ports(&["xa"])).unwrap();
        let _steering = steer_into(&group);
        let _napi = napi_receive("xb");
        while group.refill(0) > 0 {}
        let peer = RawSocket::open("xb");
        let listener = RawSocket::open("xb");
        assert_eq!(peer.send(0, 64, None), 64);
        wait_for("64 frames on the rx ring", || group.rx_ready(0, 64) == 64);
        // All 64 are sent back at once, into a ring with room for 16.
        assert_eq!(group.process_rx(0, 64, |_| Verdict::Tx(0)).unwrap(), 64);
        let c = group.counters(0);
        assert_eq!((c.rx, c.tx, c.ring_full, c.dropped), (64, 16, 48, 0));
        let (seen, _) = listener.collect(64, SRC_MAC, Duration::from_millis(500));
        assert_eq!(seen.iter().filter(|&&n| n == 1).count(), 16);
        let account = group.drain(Duration::from_secs(2));
        account.check().unwrap();
    });
}
