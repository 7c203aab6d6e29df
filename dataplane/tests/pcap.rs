//! Offline filtering against tcpdump itself: the testbed corpus (every header layout filters
//! look at, truncations, runts, random frames) is written as pcap, as pcapng and as a
//! big-endian nanosecond pcap, then filtered by `sluice filter` (library and binary) and by
//! `tcpdump -r IN -w OUT EXPR` for each expression; the output files must be identical byte
//! for byte (header and every record).
//! Skipped with a message if tcpdump is not installed, except under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::DataLink;

use sluice::bpf::source::{Format, compile_text};
use sluice::pcapio::filter::{Matcher, filter_file};
use sluice::pcapio::{LINKTYPE_ETHERNET, Reader, Writer};
use sluice::testbed::corpus;

const EXPRESSIONS: &[&str] = &[
    "",
    "ip",
    "ip6",
    "arp",
    "tcp",
    "udp",
    "icmp",
    "icmp6",
    "vlan",
    "vlan and ip",
    "tcp port 80",
    "udp dst port 53",
    "tcp[tcpflags] & tcp-syn != 0",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "ip[6:2] & 0x1fff != 0",
    "ip and ip[8] < 64",
    "net 10.0.0.0/8",
    "host 192.168.1.1 or host 10.0.0.1",
    "ether broadcast",
    "ether multicast",
    "greater 200",
    "less 100",
    "ip6 and udp",
    "portrange 1000-2000",
    "not ip and not ip6",
    "icmp[icmptype] == icmp-echo",
    "ip proto 47 or ip6 proto 58",
    "tcp and (dst port 22 or src port 443)",
];

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sluice-pcap-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_tcpdump(test: &str) -> bool {
    let ok = Command::new("tcpdump").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: tcpdump is required under CI=true");
        eprintln!("{test}: skipped (tcpdump not installed)");
    }
    ok
}

/// The corpus with distinct microsecond timestamps, a second apart plus a fraction.
fn corpus_packets() -> Vec<(Duration, Vec<u8>)> {
    corpus::corpus()
        .into_iter()
        .enumerate()
        .map(|(i, data)| (Duration::new(1_700_000_000 + i as u64, (i as u32 * 7919) % 1_000_000 * 1000), data))
        .collect()
}

fn write_pcap(path: &Path, packets: &[(Duration, Vec<u8>)]) {
    let mut w = Writer::create(path, LINKTYPE_ETHERNET, 262_144).expect("create pcap");
    for (ts, data) in packets {
        w.write(*ts, data.len() as u32, data).expect("write packet");
    }
    w.finish().expect("flush pcap");
}

/// pcap with nanosecond timestamps, big-endian headers (what a capture from another host
/// may look like): tcpdump reads it as microseconds and writes its own byte order.
fn write_pcap_nanos_be(path: &Path, packets: &[(Duration, Vec<u8>)]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        endianness: pcap_file::Endianness::Big,
    };
    let mut w = PcapWriter::with_header(std::fs::File::create(path).expect("create"), header).expect("header");
    for (ts, data) in packets {
        w.write_packet(&PcapPacket::new(*ts + Duration::from_nanos(789), data.len() as u32, data)).expect("write");
    }
}

/// pcapng with nanosecond timestamps (`if_tsresol` 9).
fn write_pcapng(path: &Path, packets: &[(Duration, Vec<u8>)]) {
    let file = std::fs::File::create(path).expect("create pcapng");
    let mut w = PcapNgWriter::new(file).expect("pcapng header");
    let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
    idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
    w.write_pcapng_block(idb).expect("write idb");
    for (ts, data) in packets {
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            // The crate writes this field's nanoseconds as raw units (nanoseconds here).
            timestamp: *ts,
            original_len: data.len() as u32,
            data: std::borrow::Cow::Borrowed(data),
            options: vec![],
        };
        w.write_pcapng_block(epb).expect("write epb");
    }
}

fn tcpdump(input: &Path, output: &Path, expr: &str) {
    let mut cmd = Command::new("tcpdump");
    cmd.args(["-q", "-r"]).arg(input).arg("-w").arg(output);
    if !expr.is_empty() {
        cmd.arg(expr);
    }
    let out = cmd.output().expect("run tcpdump");
    assert!(out.status.success(), "tcpdump {expr:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn sluice_filter(input: &Path, output: &Path, expr: &str) -> u64 {
    let matcher = Matcher::new(&compile_text(expr, Format::Tcpdump).expect("compile")).expect("jit");
    filter_file(input, output, &matcher, &mut |_, _| {}).expect("filter").matched
}

fn compare_all(input: &Path, dir: &TempDir, tag: &str) {
    let mut nonempty = 0;
    for (i, expr) in EXPRESSIONS.iter().enumerate() {
        let theirs = dir.path(&format!("{tag}-{i}-tcpdump.pcap"));
        let ours = dir.path(&format!("{tag}-{i}-sluice.pcap"));
        tcpdump(input, &theirs, expr);
        let matched = sluice_filter(input, &ours, expr);
        let (a, b) = (std::fs::read(&theirs).expect("read"), std::fs::read(&ours).expect("read"));
        if a != b {
            let count = |p: &Path| Reader::open(p).and_then(|mut r| r.read_all()).map(|v| v.len()).unwrap_or(0);
            panic!("{tag} {expr:?}: files differ (tcpdump {} packets, sluice {})", count(&theirs), count(&ours));
        }
        nonempty += usize::from(matched > 0);
    }
    // The comparison means something only if most expressions select some packets.
    assert!(nonempty >= EXPRESSIONS.len() - 2, "{tag}: only {nonempty} expressions matched anything");
}

#[test]
fn offline_filter_output_is_identical_to_tcpdumps() {
    if !have_tcpdump("offline_filter_output_is_identical_to_tcpdumps") {
        return;
    }
    assert!(EXPRESSIONS.len() >= 20);
    let dir = TempDir::new("same");
    let packets = corpus_packets();
    assert!(packets.len() > 500);
    let pcap = dir.path("in.pcap");
    write_pcap(&pcap, &packets);
    compare_all(&pcap, &dir, "pcap");
    let ng = dir.path("in.pcapng");
    write_pcapng(&ng, &packets);
    compare_all(&ng, &dir, "pcapng");
    let nanos = dir.path("in-ns-be.pcap");
    write_pcap_nanos_be(&nanos, &packets);
    compare_all(&nanos, &dir, "pcap-ns-be");
}

#[test]
fn the_binary_filters_like_tcpdump_and_keeps_compile() {
    if !have_tcpdump("the_binary_filters_like_tcpdump_and_keeps_compile") {
        return;
    }
    let dir = TempDir::new("bin");
    let pcap = dir.path("in.pcap");
    write_pcap(&pcap, &corpus_packets());
    let (ours, theirs) = (dir.path("sluice.pcap"), dir.path("tcpdump.pcap"));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["filter", "-r"])
        .arg(&pcap)
        .arg("-w")
        .arg(&ours)
        .args(["tcp", "or", "udp", "port", "53"])
        .output()
        .expect("run sluice");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("packets, wrote"));
    tcpdump(&pcap, &theirs, "tcp or udp port 53");
    assert_eq!(std::fs::read(&ours).unwrap(), std::fs::read(&theirs).unwrap());
    // The compile subcommand still parses beside the offline form.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["filter", "compile", "tcp"]).output().unwrap();
    assert!(out.status.success());
    // A bad expression is bad input: exit status 2, libpcap's message.
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["filter", "-r"])
        .arg(&pcap)
        .arg("-w")
        .arg(&ours)
        .arg("tcp port banana")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn large_files_keep_their_order_across_chunks() {
    let dir = TempDir::new("order");
    let pcap = dir.path("big.pcap");
    // More packets than one parallel chunk, each numbered in its payload.
    let packets: Vec<(Duration, Vec<u8>)> = (0..40_000u32)
        .map(|i| {
            let mut f = corpus::udp_64(if i % 3 == 0 { 53 } else { 80 });
            f.extend_from_slice(&i.to_be_bytes());
            (Duration::from_micros(u64::from(i)), f)
        })
        .collect();
    write_pcap(&pcap, &packets);
    let out = dir.path("out.pcap");
    let matched = sluice_filter(&pcap, &out, "udp dst port 53");
    assert_eq!(matched, 13_334);
    let got = Reader::open(&out).unwrap().read_all().unwrap();
    let numbers: Vec<u32> = got.iter().map(|p| u32::from_be_bytes(p.data[p.data.len() - 4..].try_into().unwrap())).collect();
    assert_eq!(numbers, (0..40_000).filter(|i| i % 3 == 0).collect::<Vec<_>>());
}
