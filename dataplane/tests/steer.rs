//! Privileged tests of the steering loader (`sluice::steer`) on a veth pair in a private network
//! namespace: native/generic attachment and detachment (on drop and on SIGKILL of the owning
//! process), and the program's verdicts and counters on crafted frames (BPF_PROG_TEST_RUN).
//!
//! Without root they print that they were skipped; with `CI=true` they must run.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{Ipv6Addr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use etherparse::{EtherType, Ethernet2Header, PacketBuilder, VlanId};
use sluice::steer::{
    self, AttachMode, AttachPref, PassRule, SteerCounters, SteerError, Steering, XdpVerdict, attached_xdp_prog,
};
use sluice::testbed::netns::{Netns, privileged};

/// Set in the child process of `sigkill_leaves_nothing_attached` (started inside its namespace).
const CHILD_ENV: &str = "SLUICE_STEER_TEST_CHILD";
const CHILD_TEST: &str = "child_holds_an_attachment_until_killed";

/// A fresh namespace holding the veth pair `dut-a` / `dut-b`, both left down: no frame but the
/// crafted ones may reach the program (an up veth soon carries IPv6 autoconfiguration
/// traffic), so the counters are exact.
fn veth_ns() -> Netns {
    let ns = Netns::new("st").unwrap();
    let veth = ["link", "add", "dut-a", "numrxqueues", "1", "numtxqueues", "1", "type", "veth"];
    let peer = ["peer", "name", "dut-b", "numrxqueues", "1", "numtxqueues", "1"];
    ip(&ns, &[&veth[..], &peer[..]].concat());
    ns
}

fn ip(ns: &Netns, args: &[&str]) {
    ns.ip(args).unwrap();
}

fn enter<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ns.run_in(f).unwrap()
}

/// An unbound AF_XDP socket: enough for the XSKMAP to accept it and for the program's
/// redirect to report XDP_REDIRECT under BPF_PROG_TEST_RUN (nothing is delivered there).
fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2) call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "AF_XDP socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

// ---- frames -------------------------------------------------------------------------------

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const LOCAL_V4: [u8; 4] = [10, 77, 0, 1];
const LOCAL_V6: &str = "fd77::1";
const REMOTE_V4: [u8; 4] = [10, 77, 0, 2];
const OTHER_V4: [u8; 4] = [10, 77, 0, 9];

fn v6(text: &str) -> [u8; 16] {
    text.parse::<Ipv6Addr>().expect("ipv6 literal").octets()
}

fn udp4(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(REMOTE_V4, dst, 64).udp(5000, dport).write(&mut out, b"x").unwrap();
    out
}

fn tcp4(dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(REMOTE_V4, dst, 64)
        .tcp(5000, dport, 1, 1024)
        .write(&mut out, &[])
        .unwrap();
    out
}

fn tcp6(dst: &str, dport: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(v6("fd77::2"), v6(dst), 64)
        .tcp(5000, dport, 1, 1024)
        .write(&mut out, &[])
        .unwrap();
    out
}

/// ICMPv6 of `kind` to a remote address, behind `vlans` (0, 1 or 2) VLAN tags.
fn icmp6(kind: u8, vlans: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let (src, dst) = (v6("fe80::2"), v6("ff02::1:ff00:9"));
    let vlan = |id| VlanId::try_new(id).unwrap();
    match vlans {
        0 => eth.ipv6(src, dst, 255).icmpv6_raw(kind, 0, [0; 4]).write(&mut out, &[0; 20]),
        1 => eth.single_vlan(vlan(10)).ipv6(src, dst, 255).icmpv6_raw(kind, 0, [0; 4]).write(&mut out, &[0; 20]),
        _ => eth
            .double_vlan(vlan(10), vlan(20))
            .ipv6(src, dst, 255)
            .icmpv6_raw(kind, 0, [0; 4])
            .write(&mut out, &[0; 20]),
    }
    .unwrap();
    out
}

fn arp() -> Vec<u8> {
    let mut out =
        Ethernet2Header { source: SRC_MAC, destination: [0xff; 6], ether_type: EtherType::ARP }.to_bytes().to_vec();
    // Ethernet/IPv4 who-has: htype 1, ptype 0x0800, hlen 6, plen 4, op 1, sha, spa, tha, tpa.
    out.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    out.extend_from_slice(&SRC_MAC);
    out.extend_from_slice(&REMOTE_V4);
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&LOCAL_V4);
    out
}

fn icmp4_echo() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv4(REMOTE_V4, OTHER_V4, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut out, b"ping")
        .unwrap();
    out
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn attach_native_and_generic_then_detach_on_drop() {
    if !privileged("attach_native_and_generic_then_detach_on_drop") {
        return;
    }
    let ns = veth_ns();
    enter(&ns, || {
        assert_eq!(attached_xdp_prog("dut-a").unwrap(), None);
        for (pref, want) in [
            (AttachPref::Native, AttachMode::Native),
            (AttachPref::Generic, AttachMode::Generic),
            (AttachPref::Auto, AttachMode::Native),
        ] {
            let steering = Steering::attach("dut-a", pref, &[], false).unwrap();
            assert_eq!(steering.mode(), want, "{pref:?}");
            assert_eq!(steering.ifname(), "dut-a");
            let attached = steer::xdp_attachment("dut-a").unwrap();
            let (slot, other) = match want {
                AttachMode::Native => (attached.native, attached.generic),
                AttachMode::Generic => (attached.generic, attached.native),
            };
            assert_eq!(slot, Some(steering.prog_id()), "{pref:?}: {attached:?}");
            assert_eq!(other, None, "{pref:?}: {attached:?}");
            assert_eq!(attached_xdp_prog("dut-a").unwrap(), Some(steering.prog_id()));
            drop(steering);
            assert_eq!(attached_xdp_prog("dut-a").unwrap(), None, "{pref:?}: still attached after drop");
        }

        // One instance per interface, each with its own maps.
        let a = Steering::attach("dut-a", AttachPref::Generic, &[], false).unwrap();
        let b = Steering::attach("dut-b", AttachPref::Generic, &[], false).unwrap();
        assert_ne!(a.prog_id(), b.prog_id());
        assert_eq!(a.test_run(&udp4(OTHER_V4, 9)).unwrap(), XdpVerdict::Pass);
        assert_eq!(a.counters().unwrap().seen, 1);
        assert_eq!(b.counters().unwrap(), SteerCounters::default());
        // A second program on an interface that already has one is refused, and says where.
        let err = Steering::attach("dut-a", AttachPref::Generic, &[], false).unwrap_err();
        assert!(err.to_string().starts_with("attach xdp to dut-a (generic): "), "{err}");
        assert!(err.to_string().ends_with("(another xdp program is already attached)"), "{err}");
    });
}

#[test]
fn auto_falls_back_to_generic_when_native_is_refused() {
    if !privileged("auto_falls_back_to_generic_when_native_is_refused") {
        return;
    }
    let ns = veth_ns();
    // veth refuses native XDP when the peer's MTU does not fit in a page.
    ip(&ns, &["link", "set", "dut-a", "mtu", "9000"]);
    ip(&ns, &["link", "set", "dut-b", "mtu", "9000"]);
    enter(&ns, || {
        let err = Steering::attach("dut-a", AttachPref::Native, &[], false).unwrap_err();
        assert!(matches!(err, SteerError::Attach { mode: AttachMode::Native, .. }), "{err:?}");
        assert!(err.to_string().starts_with("attach xdp to dut-a (native): "), "{err}");
        assert!(err.to_string().ends_with("(mtu too large for native xdp on this device or its peer)"), "{err}");
        assert_eq!(attached_xdp_prog("dut-a").unwrap(), None);

        let steering = Steering::attach("dut-a", AttachPref::Auto, &[], false).unwrap();
        assert_eq!(steering.mode(), AttachMode::Generic);
        assert_eq!(steer::xdp_attachment("dut-a").unwrap().generic, Some(steering.prog_id()));
    });
}

#[test]
fn verdicts_and_counters_on_crafted_frames() {
    if !privileged("verdicts_and_counters_on_crafted_frames") {
        return;
    }
    let ns = veth_ns();
    ip(&ns, &["addr", "add", "10.77.0.1/24", "dev", "dut-a"]);
    ip(&ns, &["addr", "add", "fd77::1/64", "dev", "dut-a", "nodad"]);
    let rules = [PassRule { proto: 6, port: 22 }, PassRule { proto: 17, port: 53 }, PassRule { proto: 1, port: 0 }];
    enter(&ns, || {
        let mut steering = Steering::attach("dut-a", AttachPref::Generic, &rules, true).unwrap();
        let xsk = xdp_socket();
        steering.register_socket(0, xsk.as_raw_fd()).unwrap();

        let mut truncated_v4 = udp4(OTHER_V4, 9);
        truncated_v4.truncate(14 + 10);
        let mut ihl_4 = udp4(OTHER_V4, 9);
        ihl_4[14] = 0x44;
        let mut cut_before_port = tcp4(OTHER_V4, 22);
        cut_before_port.truncate(14 + 20 + 2);
        let mut cut_vlan = icmp6(135, 1);
        cut_vlan.truncate(14 + 2);
        let mut later_fragment = tcp4(OTHER_V4, 22);
        later_fragment[14 + 6..14 + 8].copy_from_slice(&0x0010u16.to_be_bytes()); // offset 128 bytes
        let mut qinq_8021q = icmp6(135, 2);
        qinq_8021q[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
        let mut three_tags = icmp6(135, 2);
        three_tags.splice(16..16, [0x81, 0x00, 0x00, 0x1e]); // a third tag after the outer one
        let mut lldp = arp();
        lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());

        use XdpVerdict::{Drop, Pass, Redirect};
        let cases: Vec<(&str, Vec<u8>, XdpVerdict)> = vec![
            ("arp", arp(), Pass),
            ("router solicitation", icmp6(133, 0), Pass),
            ("router advertisement", icmp6(134, 0), Pass),
            ("neighbour solicitation", icmp6(135, 0), Pass),
            ("neighbour advertisement", icmp6(136, 0), Pass),
            ("redirect", icmp6(137, 0), Pass),
            ("neighbour solicitation, one vlan", icmp6(135, 1), Pass),
            ("neighbour advertisement, two vlans", icmp6(136, 2), Pass),
            ("router advertisement, two vlans", icmp6(134, 2), Pass),
            ("neighbour solicitation, two 802.1q tags", qinq_8021q, Pass),
            ("neighbour solicitation, three tags (not parsed)", three_tags, Redirect),
            ("icmpv6 echo", icmp6(128, 0), Redirect),
            ("icmpv6 echo, one vlan", icmp6(128, 1), Redirect),
            ("tcp/22 passthrough", tcp4(OTHER_V4, 22), Pass),
            ("udp/53 passthrough", udp4(OTHER_V4, 53), Pass),
            ("icmp passthrough (whole protocol)", icmp4_echo(), Pass),
            ("tcp/80", tcp4(OTHER_V4, 80), Redirect),
            ("udp/22 (rule is tcp)", udp4(OTHER_V4, 22), Redirect),
            ("udp", udp4(OTHER_V4, 9), Redirect),
            ("tcp/22 over ipv6", tcp6("fd77::2", 22), Pass),
            ("tcp/80 over ipv6", tcp6("fd77::2", 80), Redirect),
            ("udp to local ipv4", udp4(LOCAL_V4, 9), Pass),
            ("tcp to local ipv6", tcp6(LOCAL_V6, 80), Pass),
            ("later fragment of tcp/22", later_fragment, Redirect),
            ("lldp", lldp, Redirect),
            ("ipv4 cut in the header", truncated_v4, Drop),
            ("ipv4 ihl 4", ihl_4, Drop),
            ("tcp cut before the port", cut_before_port, Drop),
            ("vlan tag cut", cut_vlan, Drop),
            ("ethernet header only, arp type", arp()[..14].to_vec(), Pass),
        ];
        let before = steering.counters().unwrap();
        let mut want = before;
        for (name, frame, verdict) in &cases {
            assert_eq!(steering.test_run(frame).unwrap(), *verdict, "{name}");
            want.seen += 1;
            match verdict {
                Pass => want.passed += 1,
                Redirect => want.redirected += 1,
                _ => want.dropped += 1,
            }
        }
        assert_eq!(steering.counters().unwrap(), want);

        // Without a socket for the queue, what would have gone to userspace goes to the kernel.
        steering.unregister_socket(0).unwrap();
        assert_eq!(steering.test_run(&udp4(OTHER_V4, 9)).unwrap(), Pass);
        want.seen += 1;
        want.passed += 1;
        let got = steering.counters().unwrap();
        assert_eq!(got, want);
        assert_eq!(got.seen, got.redirected + got.passed + got.dropped);

        let err = steering.register_socket(steer::MAX_QUEUES, xsk.as_raw_fd()).unwrap_err();
        assert_eq!(err.to_string(), "register socket of dut-a queue 64: queue out of range (xsks has 64 entries)");
    });
}

#[test]
fn local_addresses_only_pass_when_asked() {
    if !privileged("local_addresses_only_pass_when_asked") {
        return;
    }
    let ns = veth_ns();
    ip(&ns, &["addr", "add", "10.77.0.1/24", "dev", "dut-a"]);
    enter(&ns, || {
        let mut steering = Steering::attach("dut-a", AttachPref::Generic, &[], false).unwrap();
        let xsk = xdp_socket();
        steering.register_socket(0, xsk.as_raw_fd()).unwrap();
        assert_eq!(steering.test_run(&udp4(LOCAL_V4, 9)).unwrap(), XdpVerdict::Redirect);
        assert_eq!(steering.test_run(&tcp4(OTHER_V4, 22)).unwrap(), XdpVerdict::Redirect);
    });
}

#[test]
fn real_frames_follow_the_verdicts() {
    if !privileged("real_frames_follow_the_verdicts") {
        return;
    }
    let dut = veth_ns();
    let peer = Netns::new("sp").unwrap();
    ip(&dut, &["link", "set", "dut-b", "netns", peer.name()]);
    ip(&dut, &["addr", "add", "10.77.0.1/24", "dev", "dut-a"]);
    ip(&dut, &["link", "set", "dut-a", "up"]);
    ip(&peer, &["addr", "add", "10.77.0.2/24", "dev", "dut-b"]);
    ip(&peer, &["link", "set", "dut-b", "up"]);
    // Sockets stay in the namespace they were created in, whichever thread uses them later.
    let receiver = enter(&dut, || UdpSocket::bind("10.77.0.1:7777").unwrap());
    receiver.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let sender = enter(&peer, || UdpSocket::bind("10.77.0.2:0").unwrap());
    let xsk = xdp_socket();
    let mut buf = [0u8; 64];

    // Each case: attach (native: veth at MTU 1500 allows it), steer queue 0 to an unbound AF_XDP
    // socket (which refuses every frame redirected to it), send one datagram to the dut address.
    let udp_7777 = PassRule { proto: 17, port: 7777 };
    for (name, rules, pass_local, arrives) in [
        ("local address passes", &[][..], true, true),
        ("no rule: redirected away from the kernel", &[][..], false, false),
        ("udp/7777 rule passes", &[udp_7777][..], false, true),
    ] {
        let mut steering = enter(&dut, || Steering::attach("dut-a", AttachPref::Auto, rules, pass_local).unwrap());
        assert_eq!(steering.mode(), AttachMode::Native);
        steering.register_socket(0, xsk.as_raw_fd()).unwrap();
        sender.send_to(name.as_bytes(), "10.77.0.1:7777").unwrap();
        let got = receiver.recv_from(&mut buf).map(|(n, _)| buf[..n].to_vec());
        let counters = steering.counters().unwrap();
        if arrives {
            assert_eq!(got.unwrap(), name.as_bytes(), "{name}");
            assert!(counters.passed >= 1, "{name}: {counters:?}");
        } else {
            let err = got.unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{name}: {err}");
            assert!(counters.redirected >= 1, "{name}: {counters:?}");
        }
    }
}

/// Kills its child with SIGKILL (and reaps it) when dropped, whatever happened before.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigkill_leaves_nothing_attached() {
    if !privileged("sigkill_leaves_nothing_attached") {
        return;
    }
    let ns = veth_ns();
    let exe = std::env::current_exe().unwrap();
    let mut child = ChildGuard(
        // `ip netns exec` execs the test binary in place: the child's pid is the test process.
        ns.exec([exe.as_os_str(), CHILD_TEST.as_ref(), "--exact".as_ref(), "--ignored".as_ref()])
            .args(["--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let prog_id: u32 = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        // libtest prints the test's name on the same line first.
        .find_map(|line| line.split_once("attached prog ").map(|(_, id)| id.trim().parse().unwrap()))
        .expect("child exited before attaching");

    enter(&ns, || assert_eq!(attached_xdp_prog("dut-a").unwrap(), Some(prog_id)));
    child.0.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
    child.0.wait().unwrap();

    // The link goes when the dead process's descriptors are closed; allow for the reaping.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let attached = enter(&ns, || steer::xdp_attachment("dut-a").unwrap());
        if attached == steer::XdpAttachment::default() {
            break;
        }
        assert!(Instant::now() < deadline, "still attached after SIGKILL: {attached:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Not a test on its own: the process `sigkill_leaves_nothing_attached` spawns and kills.
#[test]
#[ignore = "child process of sigkill_leaves_nothing_attached"]
fn child_holds_an_attachment_until_killed() {
    if std::env::var(CHILD_ENV).is_err() {
        eprintln!("{CHILD_TEST}: only meaningful when spawned by sigkill_leaves_nothing_attached");
        return;
    }
    let steering = Steering::attach("dut-a", AttachPref::Auto, &[], false).unwrap();
    println!("attached prog {}", steering.prog_id());
    // Long enough for the parent; short enough that a parent dying first leaves no stray child.
    std::thread::sleep(Duration::from_secs(30));
    panic!("{CHILD_TEST}: not killed within 30 s");
}
