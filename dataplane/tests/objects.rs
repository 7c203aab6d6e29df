//! The example C filters of `programs/filters/`, built here with clang-19 exactly as a user
//! builds an XDP program: each loads, runs in the interpreter and the JIT with identical
//! verdicts and identical map contents, and does what its header comment says on crafted
//! packets. `kernel_accepts_the_examples` (root) loads the same objects into the kernel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;

use etherparse::{PacketBuilder, VlanId};
use sluice::bpf::Exec;
use sluice::bpf::helpers::RunEnv;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::{JitProgram, PacketRef};
use sluice::bpf::maps::{ANY, Map, MapKind};
use sluice::bpf::object::Object;

mod clang;

const DROP: u64 = 1;
const PASS: u64 = 2;
const IFINDEX: u32 = 3;

fn filters_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../programs/filters")
}

/// Compiles `programs/filters/NAME.c` into a private temp dir and returns the object bytes.
pub fn compile(name: &str) -> Vec<u8> {
    clang::build(name, &filters_dir().join(format!("{name}.c")))
}

type Make = fn(&sluice::bpf::Program) -> Box<dyn Exec>;

const BACKENDS: [(&str, Make); 2] = [
    ("interpreter", |p| Box::new(Interpreter::new(p))),
    ("jit", |p| Box::new(JitProgram::compile(p).expect("jit compile"))),
];

/// Worker slots the tests' maps are created with.
const SLOTS: usize = 2;

/// Runs `packets` (with the expected verdicts) through `program` of object `name` on each back
/// end, each with its own maps set up by `setup`; asserts the verdicts, then that both back
/// ends left identical map contents. Returns the objects (interpreter's, then JIT's).
fn scenario(
    name: &str,
    program: Option<&str>,
    setup: impl Fn(&Object),
    packets: &[(&str, Vec<u8>, u64)],
) -> Vec<Object> {
    let bytes = compile(name);
    let mut objects = Vec::new();
    for (backend, make) in BACKENDS {
        let obj = Object::load(&bytes, SLOTS).unwrap_or_else(|e| panic!("{name}: load: {e}"));
        setup(&obj);
        let exec = make(&obj.select(program).unwrap().program);
        for (what, packet, want) in packets {
            let got = run(&*exec, packet, 0);
            assert_eq!(got, *want, "{name} on {backend}: {what}");
        }
        objects.push(obj);
    }
    assert_eq!(snapshot(&objects[0]), snapshot(&objects[1]), "{name}: interpreter and jit maps differ");
    // The JIT's batch entry, all packets in one call, in order: same verdicts, same maps.
    let obj = Object::load(&bytes, SLOTS).unwrap_or_else(|e| panic!("{name}: load: {e}"));
    setup(&obj);
    let jit = JitProgram::compile(&obj.select(program).unwrap().program).expect("jit compile");
    let mut copies: Vec<Vec<u8>> = packets.iter().map(|(_, p, _)| p.clone()).collect();
    let mut refs: Vec<PacketRef<'_>> = copies.iter_mut().map(|p| PacketRef::new(p)).collect();
    let mut verdicts = vec![u64::MAX; packets.len()];
    let faults = RunEnv::new(0).run(|| jit.run_batch(&mut refs, IFINDEX, 0, &mut verdicts));
    let want: Vec<u64> = packets.iter().map(|(_, _, v)| *v).collect();
    assert_eq!((verdicts, faults), (want, 0), "{name}: jit batch entry");
    assert_eq!(snapshot(&objects[0]), snapshot(&obj), "{name}: interpreter and jit batch maps differ");
    objects
}

fn run(exec: &dyn Exec, packet: &[u8], slot: u32) -> u64 {
    let mut p = packet.to_vec();
    RunEnv::new(slot).run(|| exec.run_xdp(&mut p, IFINDEX, 0)).expect("run")
}

/// Each map's name and sorted (key, value) pairs.
type Snapshot = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Every map's sorted (key, value) pairs; ring buffers drained. Timestamps (the first 8 bytes
/// of `syn_windows` values, from `bpf_ktime_get_ns`) differ between runs and are zeroed.
fn snapshot(obj: &Object) -> Snapshot {
    obj.maps()
        .iter()
        .map(|m| {
            let mut kv: Vec<_> = if m.kind() == MapKind::RingBuf {
                std::iter::from_fn(|| m.read_record()).map(|r| (Vec::new(), r)).collect()
            } else {
                m.keys().into_iter().map(|k| (k.clone(), m.get(&k).unwrap().unwrap())).collect()
            };
            if m.name() == "syn_windows" {
                kv.iter_mut().for_each(|(_, v)| v[..8].fill(0));
            }
            kv.sort();
            (m.name().to_string(), kv)
        })
        .collect()
}

fn map<'a>(obj: &'a Object, name: &str) -> &'a Map {
    obj.maps().by_name(name).unwrap_or_else(|| panic!("no map {name}"))
}

fn u64_at(v: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(v[off..off + 8].try_into().unwrap())
}

const SRC_A: [u8; 4] = [10, 0, 0, 1];
const SRC_B: [u8; 4] = [10, 0, 0, 2];
const DST: [u8; 4] = [10, 0, 0, 9];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn udp4(src: [u8; 4], sport: u16, dport: u16, payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, DST, 64).udp(sport, dport);
    let mut out = Vec::new();
    b.write(&mut out, &vec![0xab; payload]).unwrap();
    out
}

fn tcp4(src: [u8; 4], dport: u16, syn: bool, ack: bool) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, DST, 64).tcp(40000, dport, 1, 1000);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(7);
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn vlan_udp4(vlans: &[u16]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let vid = |v: u16| VlanId::try_new(v).unwrap();
    let mut out = Vec::new();
    match vlans {
        [one] => eth.single_vlan(vid(*one)).ipv4(SRC_A, DST, 64).udp(1, 2).write(&mut out, &[1, 2, 3]).unwrap(),
        [outer, inner] => {
            eth.double_vlan(vid(*outer), vid(*inner)).ipv4(SRC_A, DST, 64).udp(1, 2).write(&mut out, &[1]).unwrap()
        }
        _ => unreachable!("one or two tags"),
    }
    out
}

fn udp6() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([0x20; 16], [0x30; 16], 64).udp(5, 6);
    let mut out = Vec::new();
    b.write(&mut out, &[9; 8]).unwrap();
    out
}

/// An IPv6 TCP packet with one extension header (`ext_type`, 8 bytes) before the transport.
fn ipv6_with_ext(ext_type: u8, ext: [u8; 8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6([0x20; 16], [0x30; 16], 64).tcp(1, 2, 3, 4);
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    let ip = 14;
    let plen = u16::from_be_bytes([out[ip + 4], out[ip + 5]]) + 8;
    out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    out[ip + 6] = ext_type;
    out.splice(ip + 40..ip + 40, ext);
    out
}

/// An IPv6 extension header of type `ty` and `8 * (units + 1)` bytes; byte 2 is `third`
/// (the routing type, in a routing header). Its next-header byte is set by [`ipv6_chain`].
fn ext(ty: u8, units: u8, third: u8) -> (u8, Vec<u8>) {
    let mut h = vec![0u8; 8 * (units as usize + 1)];
    (h[1], h[2]) = (units, third);
    (ty, h)
}

/// An IPv6 UDP packet with the extension headers `exts`, in order, between the IPv6 and UDP
/// headers.
fn ipv6_chain(exts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = udp6();
    let ip = 14;
    let mut chain = Vec::new();
    for (i, (_, h)) in exts.iter().enumerate() {
        let mut h = h.clone();
        h[0] = exts.get(i + 1).map_or(17, |(ty, _)| *ty);
        chain.extend(h);
    }
    if let Some((first, _)) = exts.first() {
        out[ip + 6] = *first;
    }
    let plen = u16::from_be_bytes([out[ip + 4], out[ip + 5]]) + chain.len() as u16;
    out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
    out.splice(ip + 40..ip + 40, chain);
    out
}

fn arp() -> Vec<u8> {
    let mut p = vec![0u8; 42];
    p[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    p
}

#[test]
fn port_blocklist_drops_blocked_ports_in_both_programs() {
    let block = |obj: &Object| {
        for port in [53u16, 6000] {
            map(obj, "blocked_ports").set(&port.to_ne_bytes(), &0u64.to_le_bytes(), ANY).unwrap();
        }
    };
    let mut truncated = udp4(SRC_A, 1, 53, 0);
    truncated.truncate(14 + 20 + 4);
    let objs = scenario(
        "port_blocklist",
        Some("block_dst_port"),
        block,
        &[
            ("udp to 53", udp4(SRC_A, 1000, 53, 10), DROP),
            ("udp to 80", udp4(SRC_A, 1000, 80, 10), PASS),
            ("tcp to 6000", tcp4(SRC_A, 6000, true, false), DROP),
            ("udp from 53", udp4(SRC_A, 53, 1000, 10), PASS),
            ("arp", arp(), PASS),
            ("udp header cut short", truncated, PASS),
        ],
    );
    let drops = |obj: &Object, port: u16| u64_at(&map(obj, "blocked_ports").get(&port.to_ne_bytes()).unwrap().unwrap(), 0);
    assert_eq!((drops(&objs[0], 53), drops(&objs[0], 6000)), (1, 1));
    // The second program, in SEC("sluice"), shares the map and tests the source port.
    let obj = &objs[0];
    let names: Vec<_> = obj.programs().iter().map(|p| (p.name.as_str(), p.section.as_str())).collect();
    assert_eq!(names, [("block_dst_port", "xdp"), ("block_src_port", "sluice")]);
    let src = obj.select(Some("sluice")).unwrap();
    for (_, make) in BACKENDS {
        let exec = make(&src.program);
        assert_eq!(run(&*exec, &udp4(SRC_A, 53, 1000, 4), 0), DROP);
        assert_eq!(run(&*exec, &udp4(SRC_A, 1000, 53, 4), 0), PASS);
    }
    assert_eq!(drops(obj, 53), 3);
    map(obj, "blocked_ports").delete(&53u16.to_ne_bytes()).unwrap();
    assert_eq!(run(&Interpreter::new(&src.program), &udp4(SRC_A, 53, 1000, 4), 0), PASS);
    let e = obj.select(None).unwrap_err().to_string();
    assert!(e.contains("block_dst_port [xdp]") && e.contains("--section"), "{e}");
}

#[test]
fn src_counter_counts_per_source_and_per_worker() {
    let objs = scenario(
        "src_counter",
        None,
        |_| {},
        &[
            ("a 1", udp4(SRC_A, 1, 2, 10), PASS),
            ("a 2", udp4(SRC_A, 1, 2, 20), PASS),
            ("b 1", udp4(SRC_B, 1, 2, 30), PASS),
            ("arp", arp(), PASS),
            ("a 3", udp4(SRC_A, 1, 2, 0), PASS),
        ],
    );
    let len = |payload: usize| (14 + 20 + 8 + payload) as u64;
    for obj in &objs {
        let c = map(obj, "by_source").get(&SRC_A).unwrap().unwrap();
        assert_eq!((u64_at(&c, 0), u64_at(&c, 8)), (3, len(10) + len(20) + len(0)));
        let c = map(obj, "by_source").get(&SRC_B).unwrap().unwrap();
        assert_eq!((u64_at(&c, 0), u64_at(&c, 8)), (1, len(30)));
        assert_eq!(map(obj, "by_source").keys().len(), 2);
    }
    // Per-CPU totals: one copy per worker slot.
    let obj = &objs[1];
    let exec = Interpreter::new(&obj.programs()[0].program);
    run(&exec, &udp4(SRC_B, 1, 2, 0), 1);
    let packets = map(obj, "totals").get(&0u32.to_le_bytes()).unwrap().unwrap();
    assert_eq!((u64_at(&packets, 0), u64_at(&packets, 8)), (4, 1));
}

#[test]
fn syn_flood_limits_syns_per_source_per_window() {
    let mut packets: Vec<(&str, Vec<u8>, u64)> = (0..5).map(|_| ("syn a within limit", tcp4(SRC_A, 80, true, false), PASS)).collect();
    packets.extend([
        ("syn a over limit", tcp4(SRC_A, 80, true, false), DROP),
        ("syn-ack a", tcp4(SRC_A, 80, true, true), PASS),
        ("ack a", tcp4(SRC_A, 80, false, true), PASS),
        ("syn b", tcp4(SRC_B, 80, true, false), PASS),
        ("udp a", udp4(SRC_A, 1, 2, 3), PASS),
        ("syn a still over", tcp4(SRC_A, 443, true, false), DROP),
    ]);
    let bss_dropped = |obj: &Object| u64_at(&map(obj, ".bss").get(&0u32.to_le_bytes()).unwrap().unwrap(), 0);
    let objs = scenario("syn_flood", None, |_| {}, &packets);
    for obj in &objs {
        assert_eq!(bss_dropped(obj), 2);
        assert_eq!(map(obj, "syn_windows").keys().len(), 2);
    }
    // The limit is .rodata, patched by the controller before the filter runs.
    let lower = |obj: &Object| {
        let ro = map(obj, ".rodata");
        let mut v = ro.get(&0u32.to_le_bytes()).unwrap().unwrap();
        assert_eq!(u32::from_le_bytes(v[..4].try_into().unwrap()), 5, "syn_limit defaults to 5");
        v[..4].copy_from_slice(&2u32.to_le_bytes());
        ro.set(&0u32.to_le_bytes(), &v, ANY).unwrap();
    };
    let syn = || tcp4(SRC_A, 80, true, false);
    scenario("syn_flood", None, lower, &[("1", syn(), PASS), ("2", syn(), PASS), ("3", syn(), DROP)]);
}

#[test]
fn vlan_ipv6_parser_counts_transports_and_drops_blocked_vlans_and_fragments() {
    let hop_by_hop = [6, 0, 1, 4, 0, 0, 0, 0];
    let fragment = [17, 0, 0, 0, 0, 0, 0, 1];
    let objs = scenario(
        "vlan_ipv6",
        None,
        |_| {},
        &[
            ("vlan 13", vlan_udp4(&[13]), DROP),
            ("vlan 10", vlan_udp4(&[10]), PASS),
            ("vlan 100 then 13", vlan_udp4(&[100, 13]), DROP),
            ("vlan 100 then 10", vlan_udp4(&[100, 10]), PASS),
            ("ipv6 udp", udp6(), PASS),
            ("ipv6 hop-by-hop tcp", ipv6_with_ext(0, hop_by_hop), PASS),
            ("ipv6 fragment", ipv6_with_ext(44, fragment), DROP),
            ("ipv4 tcp", tcp4(SRC_A, 1, false, true), PASS),
            ("arp", arp(), PASS),
        ],
    );
    let count = |obj: &Object, proto: u32| u64_at(&map(obj, "l4_protocols").get(&proto.to_le_bytes()).unwrap().unwrap(), 0);
    for obj in &objs {
        assert_eq!((count(obj, 17), count(obj, 6), count(obj, 44), count(obj, 1)), (3, 2, 1, 0));
    }
    // The blocked VLAN is .data, writable by the controller while the filter is loaded.
    let block10 = |obj: &Object| map(obj, ".data").set(&0u32.to_le_bytes(), &10u32.to_le_bytes(), ANY).unwrap();
    scenario("vlan_ipv6", None, block10, &[("vlan 10", vlan_udp4(&[10]), DROP), ("vlan 13", vlan_udp4(&[13]), PASS)]);
}

#[test]
fn sampler_streams_every_fourth_packet_to_the_ring_buffer() {
    let packets: Vec<(&str, Vec<u8>, u64)> = (0..10u8)
        .map(|i| {
            let p = if i == 8 { vec![0xee; 10] } else { udp4(SRC_A, 1, 2, 30 + i as usize) };
            ("packet", p, PASS)
        })
        .collect();
    let bytes = compile("sampler");
    for (backend, make) in BACKENDS {
        let obj = Object::load(&bytes, SLOTS).unwrap();
        let exec = make(&obj.programs()[0].program);
        for (_, p, want) in &packets {
            assert_eq!(run(&*exec, p, 0), *want);
        }
        let ring = map(&obj, "samples");
        // Packets 0 and 4 are published; 8 is too short and is discarded.
        for n in [0usize, 4] {
            let rec = ring.read_record().unwrap_or_else(|| panic!("{backend}: record for packet {n}"));
            assert_eq!(rec.len(), 8 + 64);
            let p = &packets[n].1;
            assert_eq!(u32::from_le_bytes(rec[..4].try_into().unwrap()) as usize, p.len(), "{backend}");
            assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), IFINDEX);
            let snap = p.len().min(64);
            assert_eq!(&rec[8..8 + snap], &p[..snap], "{backend}: packet {n} head");
            assert!(rec[8 + snap..].iter().all(|&b| b == 0));
        }
        assert_eq!(ring.read_record(), None, "{backend}: the short packet's record was discarded");
        assert_eq!(u64_at(&map(&obj, ".bss").get(&0u32.to_le_bytes()).unwrap().unwrap(), 0), 10);
    }
}

#[test]
fn ipv6_exthdr_walks_the_chain_in_a_verified_loop() {
    const HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const DSTOPTS: u8 = 60;
    let eight: Vec<_> = (0..8).map(|i| ext(if i % 2 == 0 { DSTOPTS } else { HOP }, 0, 0)).collect();
    let nine: Vec<_> = (0..9).map(|_| ext(DSTOPTS, 0, 0)).collect();
    let mut cut = ipv6_chain(&[ext(HOP, 2, 0)]);
    cut.truncate(14 + 40 + 7);
    let mut fragment = ipv6_chain(&[ext(FRAGMENT, 0, 0), ext(HOP, 0, 0)]);
    fragment[14 + 40 + 1] = 5;
    let objs = scenario(
        "ipv6_exthdr",
        None,
        |_| {},
        &[
            ("ipv6 udp", udp6(), PASS),
            ("hop-by-hop", ipv6_chain(&[ext(HOP, 0, 0)]), PASS),
            ("24-byte dstopts", ipv6_chain(&[ext(DSTOPTS, 2, 0)]), PASS),
            // The fragment header's second byte is reserved: 8 bytes whatever it says.
            ("fragment, reserved byte set", fragment, PASS),
            (
                "four kinds, routing type 2",
                ipv6_chain(&[ext(HOP, 0, 0), ext(DSTOPTS, 1, 0), ext(ROUTING, 0, 2), ext(FRAGMENT, 0, 0)]),
                PASS,
            ),
            ("routing type 0", ipv6_chain(&[ext(HOP, 0, 0), ext(ROUTING, 0, 0)]), DROP),
            ("eight headers", ipv6_chain(&eight), PASS),
            ("nine headers", ipv6_chain(&nine), DROP),
            ("header cut short", cut, DROP),
            ("ipv4", udp4(SRC_A, 1, 2, 3), PASS),
            ("arp", arp(), PASS),
        ],
    );
    let obj = &objs[0];
    let p = &obj.programs()[0];
    // A real loop, loaded because the verifier bounded it.
    assert!(sluice::bpf::check::back_edge(p.program.insns()).is_some(), "clang unrolled the walk");
    assert!(p.verified.is_ok(), "{:?}", p.verified);
    for obj in &objs {
        let count = |n: u32| u64_at(&map(obj, "chain_lengths").get(&n.to_le_bytes()).unwrap().unwrap(), 0);
        let counts: Vec<u64> = (0..=8).map(count).collect();
        assert_eq!(counts, [1, 2, 1, 0, 1, 0, 0, 0, 1]);
        let bss = map(obj, ".bss").get(&0u32.to_le_bytes()).unwrap().unwrap();
        assert_eq!((u64_at(&bss, 0), u64_at(&bss, 8)), (1, 2), "dropped_rh0, dropped_chain");
    }
}

/// A loop the verifier cannot bound never loads: the object is refused with its message.
#[test]
fn an_unbounded_loop_is_refused_at_load() {
    const SPIN: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int spin(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 off = 0;
	/* Hops through the packet by the byte it lands on; the offset wraps, so a packet can
	 * make it cycle forever. */
#pragma clang loop unroll(disable)
	for (;;) {
		__u8 *b = data + (off & 0xfff);
		if ((void *)(b + 1) > data_end || *b == 0)
			break;
		off += *b;
	}
	return off ? XDP_DROP : XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"#;
    let e = Object::load(&clang::build_text("spin", SPIN), 1).unwrap_err().to_string();
    assert!(e.starts_with("program spin: it has a loop (back-edge from "), "{e}");
    assert!(e.contains("the verifier must bound it: verify: "), "{e}");
}

#[test]
fn objects_without_xdp_programs_or_with_unsupported_parts_are_refused() {
    let e = Object::load(b"\x7fELF", 1).unwrap_err().to_string();
    assert!(e.contains("not an eBPF ELF object"), "{e}");
    let obj = Object::load(&compile("src_counter"), 1).unwrap();
    let e = obj.select(Some("nope")).unwrap_err().to_string();
    assert_eq!(e, "no program or section named nope (programs: count_sources [xdp])");
}

/// The same objects load into the kernel as XDP programs (with aya, as `steer` loads its own),
/// and the kernel's verdicts (BPF_PROG_TEST_RUN) on the crafted packets are sluice's.
#[test]
fn kernel_accepts_the_examples_and_agrees_on_verdicts() {
    use aya::programs::Xdp;
    use aya::{EbpfLoader, TestRun, TestRunOptions};

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: this test must run as root");
        println!("skipping kernel_accepts_the_examples_and_agrees_on_verdicts: needs root");
        return;
    }
    let cases: [(&str, Vec<Vec<u8>>); EXAMPLES.len()] = [
        ("port_blocklist", vec![udp4(SRC_A, 1000, 53, 10), udp4(SRC_A, 53, 1000, 10), tcp4(SRC_A, 6000, true, false), arp()]),
        ("src_counter", vec![udp4(SRC_A, 1, 2, 10), arp()]),
        ("syn_flood", (0..7).map(|_| tcp4(SRC_A, 80, true, false)).chain([tcp4(SRC_A, 80, true, true)]).collect()),
        (
            "vlan_ipv6",
            vec![
                vlan_udp4(&[13]),
                vlan_udp4(&[100, 10]),
                udp6(),
                ipv6_with_ext(0, [6, 0, 1, 4, 0, 0, 0, 0]),
                ipv6_with_ext(44, [17, 0, 0, 0, 0, 0, 0, 1]),
                arp(),
            ],
        ),
        ("sampler", (0..6).map(|i| udp4(SRC_A, 1, 2, i)).collect()),
        (
            "ipv6_exthdr",
            vec![
                udp6(),
                ipv6_chain(&[ext(0, 0, 0), ext(43, 0, 2), ext(44, 0, 0)]),
                ipv6_chain(&[ext(43, 0, 0)]),
                ipv6_chain(&(0..9).map(|_| ext(60, 0, 0)).collect::<Vec<_>>()),
                arp(),
            ],
        ),
    ];
    for (name, packets) in cases {
        let bytes = compile(name);
        let ours = Object::load(&bytes, 1).unwrap();
        let mut ebpf = EbpfLoader::new()
            .load(&sluice::bpf::object::kernel_compatible(&bytes).unwrap())
            .unwrap_or_else(|e| panic!("{name}: kernel load: {e}"));
        if name == "port_blocklist" {
            let mut blocked: aya::maps::HashMap<_, u16, u64> =
                aya::maps::HashMap::try_from(ebpf.map_mut("blocked_ports").unwrap()).unwrap();
            for port in [53u16, 6000] {
                blocked.insert(port, 0, 0).unwrap();
                map(&ours, "blocked_ports").set(&port.to_ne_bytes(), &0u64.to_le_bytes(), ANY).unwrap();
            }
        }
        for p in ours.programs() {
            let xdp: &mut Xdp = ebpf.program_mut(&p.name).unwrap().try_into().unwrap();
            xdp.load().unwrap_or_else(|e| panic!("{name}/{}: the kernel refused it: {e:?}", p.name));
            let interp = Interpreter::new(&p.program);
            for (i, packet) in packets.iter().enumerate() {
                let opts = TestRunOptions { data_in: Some(packet), repeat: 1, ..TestRunOptions::default() };
                let kernel = xdp.test_run(opts).unwrap().return_value as u64;
                assert_eq!(run(&interp, packet, 0), kernel, "{name}/{}: packet {i}", p.name);
            }
        }
    }
}

/// Every example filter of `programs/filters/`.
const EXAMPLES: [&str; 6] = ["port_blocklist", "src_counter", "syn_flood", "vlan_ipv6", "sampler", "ipv6_exthdr"];

/// The static verifier accepts every example program as clang built them, at load (the
/// verdict the object keeps) and when asked again.
#[test]
fn verifier_accepts_the_examples() {
    use sluice::bpf::verifier::{VerifyEnv, verify};
    for name in EXAMPLES {
        let obj = Object::load(&compile(name), 1).unwrap();
        let env = VerifyEnv::for_table(obj.maps());
        for p in obj.programs() {
            if let Err(e) = &p.verified {
                panic!("{name}/{}: at load: {e}", p.name);
            }
            if let Err(e) = verify(&p.program, &env) {
                panic!("{name}/{}: {e}", p.name);
            }
        }
    }
}

/// Two workers run the counter at once while the controller reads the maps: the filter's
/// atomic adds lose nothing, and each worker's per-CPU copy counts its own packets.
#[test]
fn counters_are_exact_with_concurrent_workers_and_controller_reads() {
    let bytes = compile("src_counter");
    let obj = Object::load(&bytes, SLOTS).unwrap();
    hammer("interpreter", &Interpreter::new(&obj.programs()[0].program), &obj);
    let obj = Object::load(&bytes, SLOTS).unwrap();
    hammer("jit", &JitProgram::compile(&obj.programs()[0].program).unwrap(), &obj);
}

fn hammer<E: Exec + Sync>(backend: &str, exec: &E, obj: &Object) {
    const PER_WORKER: u64 = 3000;
    let packet = udp4(SRC_A, 1, 2, 6);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2u32)
            .map(|slot| {
                let packet = &packet;
                s.spawn(move || {
                    let env = RunEnv::new(slot);
                    let mut p = packet.clone();
                    env.run(|| (0..PER_WORKER).for_each(|_| assert_eq!(exec.run_xdp(&mut p, IFINDEX, 0), Ok(PASS))));
                })
            })
            .collect();
        s.spawn(|| {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                if let Some(v) = map(obj, "by_source").get(&SRC_A).unwrap() {
                    let now = u64_at(&v, 0);
                    assert!(now >= last, "{backend}: counts never go back");
                    last = now;
                }
            }
        });
        workers.into_iter().for_each(|w| w.join().unwrap());
        done.store(true, Ordering::Relaxed);
    });
    let c = map(obj, "by_source").get(&SRC_A).unwrap().unwrap();
    assert_eq!(u64_at(&c, 0), 2 * PER_WORKER, "{backend}");
    let totals = map(obj, "totals").get(&0u32.to_le_bytes()).unwrap().unwrap();
    assert_eq!((u64_at(&totals, 0), u64_at(&totals, 8)), (PER_WORKER, PER_WORKER), "{backend}");
}

/// `sluice filter compile prog.o [--section NAME]` picks a program and lists the maps.
#[test]
fn cli_compiles_an_object_program() {
    let dir = std::env::temp_dir().join(format!("sluice-objects-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("port_blocklist.o");
    std::fs::write(&path, compile("port_blocklist")).unwrap();
    let sluice = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().unwrap();
    let file = path.to_str().unwrap();
    let out = sluice(&["filter", "compile", file, "--section", "sluice"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ambiguous = sluice(&["filter", "compile", file]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("(eBPF object)") && text.contains("map: blocked_ports (hash, key 2 B, value 8 B, max_entries 1024)"), "{text}");
    assert!(text.contains("jit: "), "{text}");
    assert!(!ambiguous.status.success());
    let err = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(err.contains("object has 2 programs (block_dst_port [xdp], block_src_port [sluice])"), "{err}");
}

const LEGACY: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct legacy_def { unsigned int type, key_size, value_size, max_entries, map_flags; };
struct legacy_def SEC("maps") hits = { .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 4 };

static __noinline int slot(struct xdp_md *ctx) { return ctx->ingress_ifindex & 3; }

SEC("xdp/legacy")
int count_by_ifindex(struct xdp_md *ctx)
{
	__u32 k = slot(ctx);
	__u64 *v = bpf_map_lookup_elem(&hits, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
"#;

const TAIL_CALL: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_PROG_ARRAY); __uint(max_entries, 2); __type(key, __u32); __type(value, __u32); } jumps SEC(".maps");
SEC("xdp") int jump(struct xdp_md *ctx) { bpf_tail_call(ctx, &jumps, 0); return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"#;

const CALLS_TAIL: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); } a SEC(".maps");
SEC("xdp") int jump(struct xdp_md *ctx) { bpf_tail_call(ctx, &a, 0); return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"#;

/// Legacy `maps` definitions, a `xdp/NAME` section and a bpf-to-bpf call load and run; map
/// types and helpers sluice lacks are refused by name at load time.
#[test]
fn legacy_maps_load_and_unsupported_parts_are_named() {
    let bytes = clang::build_text("legacy", LEGACY);
    for (_, make) in BACKENDS {
        let obj = Object::load(&bytes, 1).unwrap();
        let p = obj.select(Some("xdp/legacy")).unwrap();
        let exec = make(&p.program);
        for _ in 0..2 {
            assert_eq!(run(&*exec, &arp(), 0), PASS);
        }
        let v = map(&obj, "hits").get(&(IFINDEX & 3).to_le_bytes()).unwrap().unwrap();
        assert_eq!(u64_at(&v, 0), 2);
    }
    let e = Object::load(&clang::build_text("tail", TAIL_CALL), 1).unwrap_err().to_string();
    assert!(e.contains("map jumps: map type 3 is not supported"), "{e}");
    let e = Object::load(&clang::build_text("calls_tail", CALLS_TAIL), 1).unwrap_err().to_string();
    assert!(e.starts_with("program jump: instruction ") && e.ends_with("helper 12 (bpf_tail_call) is not supported by sluice"), "{e}");
}

/// The example filters zero only the stack they can read: a few bytes for the run-time-checked
/// back ends (the pointers they pass to helpers are followed), nothing once verified (every
/// byte they read, they wrote first).
#[test]
fn examples_zero_only_the_stack_they_can_read() {
    use sluice::bpf::check::{StackReach, stack_reach};
    for name in EXAMPLES {
        let obj = Object::load(&compile(name), 1).unwrap();
        for p in obj.programs() {
            let reach = stack_reach(p.program.insns());
            let verified = p.verified.as_ref().unwrap().stack_reach(p.program.insns());
            let small = matches!(reach, StackReach::None | StackReach::Frame { lo: -64.., .. });
            assert!(small, "{name}/{}: {reach:?}", p.name);
            let nothing = if reach == StackReach::None { StackReach::None } else { StackReach::Frame { lo: 0, hi: 0 } };
            assert_eq!(verified, nothing, "{name}/{}", p.name);
        }
    }
}
