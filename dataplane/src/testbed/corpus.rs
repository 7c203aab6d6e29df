//! A deterministic, seedable corpus of Ethernet frames for differential tests and benches.
//!
//! Three parts: hand-picked frames that exercise what filters look at (every TCP flag mix,
//! well-known UDP ports, ICMP and ICMPv6 incl. neighbour discovery, ARP, 802.1Q and QinQ tags,
//! IPv4 options and fragments, IPv6 extension headers, broadcast and multicast, a size sweep from
//! 60 to 1514 bytes); the same frames cut at every header boundary a filter reads across, plus
//! runts; and seeded random combinations of all of the above. Frames are built with etherparse,
//! so lengths and checksums are right; complete frames shorter than 60 bytes are zero-padded to
//! 60 as a NIC would deliver them.

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    PacketBuilder, PacketBuilderStep, TcpOptionElement,
};

/// The seed [`corpus`] uses.
pub const DEFAULT_SEED: u64 = 0x51u64 << 56 | 0x00c0_ffee;

/// One frame and a name saying what it is (used in test failure messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub name: String,
    pub data: Vec<u8>,
}

/// The frames of [`frames`] with [`DEFAULT_SEED`], without names.
pub fn corpus() -> Vec<Vec<u8>> {
    frames(DEFAULT_SEED).into_iter().map(|f| f.data).collect()
}

/// The whole corpus: the fixed frames, their truncations and runts, then seeded random frames.
/// The same seed always gives the same frames.
pub fn frames(seed: u64) -> Vec<Frame> {
    let mut out = fixed_frames();
    out.extend(truncations(&out));
    let mut rng = Rng::new(seed);
    out.extend(runts(&mut rng));
    out.extend(random_frames(&mut rng, 400));
    out
}

/// Ten tcpdump filters of the kinds a pipeline holds (protocols, ports, hosts, nets, TCP
/// flags, VLAN): the pipeline benchmark's stages, and what the dispatch tests start from.
pub const FILTERS: [&str; 10] = [
    "udp dst port 53",
    "tcp dst port 80",
    "host 10.0.0.1",
    "ip6",
    "arp",
    "icmp",
    "udp port 123",
    "net 192.168.0.0/16",
    "tcp[tcpflags] & tcp-syn != 0",
    "vlan",
];

/// Every `step`th corpus frame, then copies of the long ones with the fields filters dispatch
/// on (ethertype; IPv4 protocol at 23, IPv6 next header at 20) set to values filters test
/// and values they do not, then the first few cut at lengths around those fields: packets
/// that take every arm of a pipeline's dispatch (`bpf::specialize`).
pub fn field_variants(step: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(DEFAULT_SEED);
    let base: Vec<Vec<u8>> = corpus().into_iter().step_by(step.max(1)).collect();
    let mut all = base.clone();
    let types: [u16; 9] = [0x0800, 0x86dd, 0x0806, 0x8035, 0x8100, 0x88a8, 0x9100, 0x88cc, 0x1234];
    let protos = [1u8, 6, 17, 58, 132, 0x2c, 0, 99];
    for p in base.iter().filter(|p| p.len() >= 60) {
        for &t in &types {
            let mut q = p.clone();
            q[12..14].copy_from_slice(&t.to_be_bytes());
            q[23] = rng.pick(&protos);
            q[20] = rng.pick(&protos);
            all.push(q);
        }
    }
    for p in base.iter().filter(|p| p.len() >= 60).take(8) {
        for len in [0, 1, 12, 13, 14, 15, 20, 21, 23, 24, 30, 34, 38, 54, 55, 57, 58] {
            all.push(p[..len].to_vec());
        }
    }
    all
}

/// The benchmark frame: 64 bytes (no FCS), IPv4 UDP 10.0.0.1:1024 → 10.0.0.2:`dst_port`
/// between 02:00:00:00:00:01 and :02 with a 22-byte payload, so no padding is needed.
pub fn udp_64(dst_port: u16) -> Vec<u8> {
    let l3 = L3::v4(IP_A, IP_B);
    let frame = ip_frame(MAC_B, MAC_A, &[], &l3, &L4::Udp { sp: 1024, dp: dst_port }, &[0x5a; 22]);
    debug_assert_eq!(frame.len(), 64);
    frame
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_C: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MAC_BCAST: [u8; 6] = [0xff; 6];
const MAC_MCAST4: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
const MAC_MCAST6: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
const MACS: [[u8; 6]; 6] = [MAC_A, MAC_B, MAC_C, MAC_BCAST, MAC_MCAST4, MAC_MCAST6];

const IP_A: [u8; 4] = [10, 0, 0, 1];
const IP_B: [u8; 4] = [10, 0, 0, 2];
const IPS: [[u8; 4]; 12] = [
    IP_A,
    IP_B,
    [10, 1, 2, 3],
    [192, 168, 1, 10],
    [192, 168, 1, 255],
    [172, 16, 5, 4],
    [8, 8, 8, 8],
    [1, 1, 1, 1],
    [224, 0, 0, 251],
    [255, 255, 255, 255],
    [0, 0, 0, 0],
    [127, 0, 0, 1],
];

const IP6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const IP6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const IP6_DNS: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53];
const IP6_LL_A: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const IP6_LL_B: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const IP6_ALL_NODES: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const IP6_SOLICITED_B: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 2];
const IP6S: [[u8; 16]; 7] = [IP6_A, IP6_B, IP6_DNS, IP6_LL_A, IP6_LL_B, IP6_ALL_NODES, IP6_SOLICITED_B];

const PORTS: [u16; 14] = [53, 67, 68, 80, 123, 443, 22, 8080, 1024, 5353, 6000, 6010, 33434, 65535];

// TCP flag bits, as in the header's 13th byte.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;
const ECE: u8 = 0x40;
const CWR: u8 = 0x80;

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;

/// An IPv4 header to generate.
#[derive(Clone)]
struct V4 {
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    options: Vec<u8>,
    dont_fragment: bool,
    more_fragments: bool,
    /// In 8-byte units.
    frag_offset: u16,
}

impl V4 {
    fn new(src: [u8; 4], dst: [u8; 4]) -> Self {
        V4 { src, dst, ttl: 64, options: Vec::new(), dont_fragment: true, more_fragments: false, frag_offset: 0 }
    }
}

/// An IPv6 header and extension headers to generate.
#[derive(Clone)]
struct V6 {
    src: [u8; 16],
    dst: [u8; 16],
    hop_limit: u8,
    hop_by_hop: bool,
    /// (offset in 8-byte units, more fragments)
    fragment: Option<(u16, bool)>,
}

impl V6 {
    fn new(src: [u8; 16], dst: [u8; 16]) -> Self {
        V6 { src, dst, hop_limit: 64, hop_by_hop: false, fragment: None }
    }
}

/// Network layer of a generated frame.
#[derive(Clone)]
enum L3 {
    V4(V4),
    V6(V6),
}

impl L3 {
    fn v4(src: [u8; 4], dst: [u8; 4]) -> Self {
        L3::V4(V4::new(src, dst))
    }

    fn v6(src: [u8; 16], dst: [u8; 16]) -> Self {
        L3::V6(V6::new(src, dst))
    }

    fn ethertype(&self) -> u16 {
        match self {
            L3::V4(_) => ETH_IPV4,
            L3::V6(_) => ETH_IPV6,
        }
    }
}

/// Transport layer (or raw payload of an IP protocol).
#[derive(Clone)]
enum L4 {
    Udp {
        sp: u16,
        dp: u16,
    },
    Tcp {
        sp: u16,
        dp: u16,
        flags: u8,
        options: bool,
    },
    Icmp4 {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    Icmp6 {
        ty: u8,
        code: u8,
        rest: [u8; 4],
    },
    /// Payload only, under this IP protocol number (fragments after the first, GRE, ESP...).
    Raw(u8),
}

fn ip_headers(l3: &L3) -> IpHeaders {
    match l3 {
        L3::V4(v) => {
            let mut h = Ipv4Header::new(0, v.ttl, IpNumber::UDP, v.src, v.dst).expect("zero payload length fits");
            h.options = v.options[..].try_into().expect("corpus IPv4 options are a multiple of 4 bytes, at most 40");
            h.dont_fragment = v.dont_fragment;
            h.more_fragments = v.more_fragments;
            h.fragment_offset = IpFragOffset::try_new(v.frag_offset).expect("corpus fragment offsets fit 13 bits");
            h.identification = 0x1c46;
            IpHeaders::Ipv4(h, Default::default())
        }
        L3::V6(v) => {
            let h = Ipv6Header { hop_limit: v.hop_limit, source: v.src, destination: v.dst, ..Default::default() };
            let mut exts = Ipv6Extensions::default();
            if v.hop_by_hop {
                // Router alert (type 5) then a 0-byte PadN: 6 bytes, so the header is 8.
                exts.hop_by_hop_options =
                    Some(Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[5, 2, 0, 0, 1, 0]).expect("6-byte option area"));
            }
            if let Some((offset, more)) = v.fragment {
                let offset = IpFragOffset::try_new(offset).expect("corpus fragment offsets fit 13 bits");
                exts.fragment = Some(Ipv6FragmentHeader::new(IpNumber::UDP, offset, more, 0xabcd));
            }
            IpHeaders::Ipv6(h, exts)
        }
    }
}

/// The IP packet (header, extensions, transport header, payload) with lengths and checksums set.
fn ip_packet(l3: &L3, l4: &L4, payload: &[u8]) -> Vec<u8> {
    let step = PacketBuilder::ip(ip_headers(l3));
    let mut v = Vec::new();
    let written = match *l4 {
        L4::Udp { sp, dp } => step.udp(sp, dp).write(&mut v, payload),
        L4::Tcp { sp, dp, flags, options } => {
            let tcp = tcp_flags(step.tcp(sp, dp, 0x1000_0000, 64240), flags);
            let tcp = if options {
                tcp.options(&[
                    TcpOptionElement::MaximumSegmentSize(1460),
                    TcpOptionElement::SelectiveAcknowledgementPermitted,
                    TcpOptionElement::Timestamp(0x0102_0304, 0),
                    TcpOptionElement::Noop,
                    TcpOptionElement::WindowScale(7),
                ])
                .expect("20 bytes of TCP options fit")
            } else {
                tcp
            };
            tcp.write(&mut v, payload)
        }
        L4::Icmp4 { ty, code, rest } => step.icmpv4_raw(ty, code, rest).write(&mut v, payload),
        L4::Icmp6 { ty, code, rest } => step.icmpv6_raw(ty, code, rest).write(&mut v, payload),
        L4::Raw(proto) => step.write(&mut v, IpNumber(proto), payload),
    };
    written.expect("corpus packets are well under the IP length limit");
    v
}

fn tcp_flags(mut tcp: PacketBuilderStep<etherparse::TcpHeader>, flags: u8) -> PacketBuilderStep<etherparse::TcpHeader> {
    if flags & FIN != 0 {
        tcp = tcp.fin();
    }
    if flags & SYN != 0 {
        tcp = tcp.syn();
    }
    if flags & RST != 0 {
        tcp = tcp.rst();
    }
    if flags & PSH != 0 {
        tcp = tcp.psh();
    }
    if flags & ACK != 0 {
        tcp = tcp.ack(0x2000_0001);
    }
    if flags & URG != 0 {
        tcp = tcp.urg(1);
    }
    if flags & ECE != 0 {
        tcp = tcp.ece();
    }
    if flags & CWR != 0 {
        tcp = tcp.cwr();
    }
    tcp
}

/// An Ethernet frame: addresses, VLAN tags as (TPID, TCI) from the outside in, ethertype,
/// payload; zero-padded to the 60-byte minimum.
fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype_and_payload: &(u16, Vec<u8>)) -> Vec<u8> {
    let (ethertype, payload) = ethertype_and_payload;
    let mut f = Vec::with_capacity(18 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// Shorthand for an IP frame.
fn ip_frame(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], l3: &L3, l4: &L4, payload: &[u8]) -> Vec<u8> {
    eth(dst, src, tags, &(l3.ethertype(), ip_packet(l3, l4, payload)))
}

/// An ARP request (op 1) or reply (op 2) for IPv4 over Ethernet.
fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> (u16, Vec<u8>) {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend_from_slice(&op.to_be_bytes());
    p.extend_from_slice(&sha);
    p.extend_from_slice(&spa);
    p.extend_from_slice(&tha);
    p.extend_from_slice(&tpa);
    (ETH_ARP, p)
}

/// A recognisable payload: byte i is i, except that it starts with 0x12 0x34 so
/// `udp[8:2] == 0x1234` has something to match.
fn payload(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| i as u8).collect();
    if len >= 2 {
        p[0] = 0x12;
        p[1] = 0x34;
    }
    p
}

fn named(name: impl Into<String>, data: Vec<u8>) -> Frame {
    Frame { name: name.into(), data }
}

fn fixed_frames() -> Vec<Frame> {
    let mut out = Vec::new();
    let v4 = L3::v4(IP_A, IP_B);
    let v6 = L3::v6(IP6_A, IP6_B);
    let plain = |l3: &L3, l4: &L4, len: usize| ip_frame(MAC_B, MAC_A, &[], l3, l4, &payload(len));

    // TCP: handshake, teardown, resets, data, odd flag mixes, with and without options.
    let tcp_flag_sets: [(&str, u8); 11] = [
        ("syn", SYN),
        ("syn-ack", SYN | ACK),
        ("ack", ACK),
        ("psh-ack", PSH | ACK),
        ("fin-ack", FIN | ACK),
        ("fin", FIN),
        ("rst", RST),
        ("rst-ack", RST | ACK),
        ("urg-ack", URG | ACK),
        ("syn-ece-cwr", SYN | ECE | CWR),
        ("xmas", FIN | PSH | URG),
    ];
    for (name, flags) in tcp_flag_sets {
        for (sp, dp) in [(40000, 80), (443, 51000)] {
            let l4 = L4::Tcp { sp, dp, flags, options: false };
            let len = if flags & PSH != 0 { 300 } else { 0 };
            out.push(named(format!("ipv4/tcp/{name}/{sp}-{dp}"), plain(&v4, &l4, len)));
        }
        let l4 = L4::Tcp { sp: 22, dp: 50022, flags, options: flags & SYN != 0 };
        out.push(named(format!("ipv6/tcp/{name}"), plain(&v6, &l4, 0)));
    }
    let l4 = L4::Tcp { sp: 51515, dp: 443, flags: SYN, options: true };
    out.push(named("ipv4/tcp/syn-options", plain(&v4, &l4, 0)));

    // UDP on well-known ports, both directions, and the 0x1234 payload marker.
    for port in [53, 67, 68, 123, 443, 5353, 33434] {
        out.push(named(format!("ipv4/udp/to-{port}"), plain(&v4, &L4::Udp { sp: 40000, dp: port }, 40)));
        out.push(named(format!("ipv4/udp/from-{port}"), plain(&v4, &L4::Udp { sp: port, dp: 40000 }, 40)));
        out.push(named(format!("ipv6/udp/to-{port}"), plain(&v6, &L4::Udp { sp: 40000, dp: port }, 40)));
    }
    let dhcp = L3::v4([0, 0, 0, 0], [255, 255, 255, 255]);
    out.push(named(
        "ipv4/udp/dhcp-discover",
        ip_frame(MAC_BCAST, MAC_C, &[], &dhcp, &L4::Udp { sp: 68, dp: 67 }, &payload(240)),
    ));
    let dns6 = L3::v6(IP6_A, IP6_DNS);
    out.push(named("ipv6/udp/dns", plain(&dns6, &L4::Udp { sp: 53000, dp: 53 }, 30)));

    // ICMP: echo, unreachable and time exceeded carrying the offending header.
    let quoted = ip_packet(&L3::v4(IP_B, [8, 8, 8, 8]), &L4::Udp { sp: 33434, dp: 33434 }, &[]);
    for (name, ty, code, rest, body) in [
        ("echo-request", 8, 0, [0x12, 0x34, 0, 1], payload(56)),
        ("echo-reply", 0, 0, [0x12, 0x34, 0, 1], payload(56)),
        ("port-unreachable", 3, 3, [0; 4], quoted.clone()),
        ("frag-needed", 3, 4, [0, 0, 0x05, 0xdc], quoted.clone()),
        ("time-exceeded", 11, 0, [0; 4], quoted.clone()),
    ] {
        out.push(named(
            format!("ipv4/icmp/{name}"),
            ip_frame(MAC_B, MAC_A, &[], &v4, &L4::Icmp4 { ty, code, rest }, &body),
        ));
    }

    // ICMPv6: echo and neighbour discovery (solicitation to the solicited-node group,
    // advertisement, router solicitation to all nodes).
    let mut target = IP6_B.to_vec();
    target.extend_from_slice(&[1, 1]);
    target.extend_from_slice(&MAC_A);
    let nd = |src, dst, ty, rest: [u8; 4], body: &[u8], mac_dst| {
        let l3 = L3::V6(V6 { hop_limit: 255, ..V6::new(src, dst) });
        ip_frame(mac_dst, MAC_A, &[], &l3, &L4::Icmp6 { ty, code: 0, rest }, body)
    };
    out.push(named("ipv6/icmp6/echo-request", plain(&v6, &L4::Icmp6 { ty: 128, code: 0, rest: [0, 7, 0, 1] }, 56)));
    out.push(named("ipv6/icmp6/echo-reply", plain(&v6, &L4::Icmp6 { ty: 129, code: 0, rest: [0, 7, 0, 1] }, 56)));
    out.push(named(
        "ipv6/icmp6/neighbor-solicitation",
        nd(IP6_LL_A, IP6_SOLICITED_B, 135, [0; 4], &target, [0x33, 0x33, 0xff, 0, 0, 2]),
    ));
    out.push(named("ipv6/icmp6/neighbor-advertisement", nd(IP6_LL_B, IP6_LL_A, 136, [0x60, 0, 0, 0], &target, MAC_A)));
    out.push(named("ipv6/icmp6/router-solicitation", nd(IP6_LL_A, IP6_ALL_NODES, 133, [0; 4], &[], MAC_MCAST6)));

    // ARP.
    out.push(named("arp/request", eth(MAC_BCAST, MAC_A, &[], &arp(1, MAC_A, IP_A, [0; 6], IP_B))));
    out.push(named("arp/reply", eth(MAC_A, MAC_B, &[], &arp(2, MAC_B, IP_B, MAC_A, IP_A))));
    out.push(named(
        "arp/gratuitous",
        eth(MAC_BCAST, MAC_C, &[], &arp(1, MAC_C, [192, 168, 1, 10], [0; 6], [192, 168, 1, 10])),
    ));

    // 802.1Q, QinQ (802.1ad outer, and the older 0x9100 and double 0x8100).
    let udp53 = L4::Udp { sp: 40000, dp: 53 };
    let tcp_syn = L4::Tcp { sp: 40000, dp: 443, flags: SYN, options: false };
    for (name, tags) in [
        ("vlan100", vec![(0x8100, 100)]),
        ("vlan-pcp5-4095", vec![(0x8100, 0xa000 | 4095)]),
        ("qinq-88a8", vec![(0x88a8, 10), (0x8100, 20)]),
        ("qinq-8100", vec![(0x8100, 10), (0x8100, 20)]),
        ("qinq-9100", vec![(0x9100, 30), (0x8100, 40)]),
    ] {
        out.push(named(format!("{name}/ipv4/udp-53"), ip_frame(MAC_B, MAC_A, &tags, &v4, &udp53, &payload(20))));
        out.push(named(format!("{name}/ipv4/tcp-syn"), ip_frame(MAC_B, MAC_A, &tags, &v4, &tcp_syn, &[])));
        out.push(named(format!("{name}/ipv6/udp-53"), ip_frame(MAC_B, MAC_A, &tags, &v6, &udp53, &payload(20))));
        out.push(named(format!("{name}/arp"), eth(MAC_BCAST, MAC_A, &tags, &arp(1, MAC_A, IP_A, [0; 6], IP_B))));
    }

    // IPv4 options: router alert (ihl 6), 12 bytes of NOPs (ihl 8), the 40-byte maximum (ihl 15).
    for (name, opts) in [
        ("router-alert", vec![0x94, 4, 0, 0]),
        ("nop12", vec![1; 12]),
        ("max40", {
            let mut o = vec![7, 39, 4];
            o.resize(40, 0);
            o
        }),
    ] {
        let l3 = L3::V4(V4 { options: opts, ..V4::new(IP_A, IP_B) });
        out.push(named(format!("ipv4-opt-{name}/udp-53"), plain(&l3, &udp53, 20)));
        out.push(named(format!("ipv4-opt-{name}/tcp-syn"), plain(&l3, &tcp_syn, 0)));
        out.push(named(
            format!("ipv4-opt-{name}/tcp-ack-443"),
            plain(&l3, &L4::Tcp { sp: 443, dp: 40000, flags: ACK, options: true }, 100),
        ));
    }

    // IPv4 fragments of one UDP datagram: first (with the UDP header), middle, last.
    let frag = |more: bool, offset: u16| {
        L3::V4(V4 { dont_fragment: false, more_fragments: more, frag_offset: offset, ..V4::new(IP_A, IP_B) })
    };
    out.push(named("ipv4-frag/first/udp-53", plain(&frag(true, 0), &udp53, 1472)));
    out.push(named("ipv4-frag/middle", plain(&frag(true, 185), &L4::Raw(17), 1480)));
    out.push(named("ipv4-frag/last", plain(&frag(false, 370), &L4::Raw(17), 100)));
    out.push(named("ipv4-frag/last-tiny", plain(&frag(false, 1), &L4::Raw(6), 8)));

    // IPv6 extension headers: hop-by-hop, fragment (first and not), both.
    let ext =
        |hop_by_hop: bool, fragment: Option<(u16, bool)>| L3::V6(V6 { hop_by_hop, fragment, ..V6::new(IP6_A, IP6_B) });
    out.push(named("ipv6-hbh/udp-53", plain(&ext(true, None), &udp53, 20)));
    out.push(named("ipv6-hbh/tcp-syn", plain(&ext(true, None), &tcp_syn, 0)));
    out.push(named("ipv6-frag/first/udp-53", plain(&ext(false, Some((0, true))), &udp53, 1232)));
    out.push(named("ipv6-frag/last", plain(&ext(false, Some((154, false))), &L4::Raw(17), 100)));
    out.push(named("ipv6-hbh-frag/first/udp-53", plain(&ext(true, Some((0, true))), &udp53, 64)));

    // Other IP protocols: GRE (47), ESP (50), SCTP (132), IGMP (2).
    for proto in [47u8, 50, 132, 2] {
        out.push(named(format!("ipv4/proto-{proto}"), plain(&v4, &L4::Raw(proto), 40)));
    }
    out.push(named("ipv6/proto-47", plain(&v6, &L4::Raw(47), 40)));

    // Addressing: broadcast and multicast, other nets, loopback.
    let to = |src: [u8; 4], dst: [u8; 4]| L3::v4(src, dst);
    out.push(named(
        "ipv4/bcast/udp-67",
        ip_frame(
            MAC_BCAST,
            MAC_C,
            &[],
            &to([192, 168, 1, 10], [192, 168, 1, 255]),
            &L4::Udp { sp: 68, dp: 67 },
            &payload(20),
        ),
    ));
    out.push(named(
        "ipv4/mdns",
        ip_frame(
            MAC_MCAST4,
            MAC_C,
            &[],
            &to([192, 168, 1, 10], [224, 0, 0, 251]),
            &L4::Udp { sp: 5353, dp: 5353 },
            &payload(30),
        ),
    ));
    out.push(named(
        "ipv4/net-172/tcp-443",
        plain(&to([172, 16, 5, 4], [8, 8, 8, 8]), &L4::Tcp { sp: 50000, dp: 443, flags: SYN, options: false }, 0),
    ));
    out.push(named(
        "ipv4/net-10-1/udp-443",
        plain(&to([10, 1, 2, 3], [1, 1, 1, 1]), &L4::Udp { sp: 50000, dp: 443 }, 1200),
    ));
    out.push(named(
        "ipv4/public-to-10/tcp-443",
        plain(&to([1, 1, 1, 1], [10, 0, 0, 1]), &L4::Tcp { sp: 443, dp: 50000, flags: SYN | ACK, options: true }, 0),
    ));
    out.push(named("ipv4/loopback", plain(&to([127, 0, 0, 1], [127, 0, 0, 1]), &udp53, 10)));

    // Size sweep across the `len`/`less`/`greater` thresholds up to a full 1514-byte frame.
    for total in [60usize, 64, 79, 80, 81, 99, 100, 101, 128, 256, 512, 999, 1000, 1001, 1024, 1500, 1514] {
        for (name, l3, l4) in [
            ("ipv4/udp-53", &v4, &udp53),
            ("ipv6/tcp-ack", &v6, &L4::Tcp { sp: 40000, dp: 80, flags: ACK, options: false }),
        ] {
            let len = total.saturating_sub(14 + ip_packet(l3, l4, &[]).len());
            out.push(named(format!("size-{total}/{name}"), plain(l3, l4, len)));
        }
    }
    out
}

/// Where filters read across a header boundary: the ethertype (12..14), the IPv4 header (14..34:
/// protocol at 23, addresses at 26..34), ports and TCP flags (34..48), the IPv6 header (next
/// header at 20, addresses at 22..54) and its ports (54..58), shifted by 4 behind a VLAN tag.
const CUTS: [usize; 37] = [
    0, 1, 6, 10, 12, 13, 14, 15, 16, 17, 18, 20, 21, 22, 23, 24, 26, 27, 30, 33, 34, 35, 36, 37, 38, 40, 41, 42, 46,
    47, 48, 50, 54, 55, 56, 57, 58,
];

/// Frames whose truncations are kept: one per header layout.
const TRUNCATED: [&str; 9] = [
    "ipv4/tcp/syn/40000-80",
    "ipv4/udp/to-53",
    "ipv4-opt-router-alert/tcp-syn",
    "ipv6/udp/to-53",
    "ipv6-hbh/udp-53",
    "vlan100/ipv4/udp-53",
    "qinq-88a8/ipv6/udp-53",
    "arp/request",
    "ipv4/icmp/echo-request",
];

fn truncations(fixed: &[Frame]) -> Vec<Frame> {
    let mut out = Vec::new();
    for f in fixed.iter().filter(|f| TRUNCATED.contains(&f.name.as_str())) {
        for cut in CUTS.iter().chain(&[62, 66, 70]).filter(|&&c| c < f.data.len()) {
            out.push(named(format!("cut-{cut}/{}", f.name), f.data[..*cut].to_vec()));
        }
    }
    out
}

/// Short frames as a broken NIC or a collision would leave them: random bytes, most with a real
/// ethertype so the filters get past the first check.
fn runts(rng: &mut Rng) -> Vec<Frame> {
    (0..40)
        .map(|i| {
            let len = 1 + rng.below(59) as usize;
            let mut data = rng.bytes(len);
            if len >= 14 && i % 4 != 0 {
                let et = rng.pick(&[ETH_IPV4, ETH_IPV6, ETH_ARP, 0x8100]);
                data[12..14].copy_from_slice(&et.to_be_bytes());
                if len > 14 && et == ETH_IPV4 {
                    data[14] = 0x45;
                }
            }
            named(format!("runt-{len}-{i}"), data)
        })
        .collect()
}

fn random_frames(rng: &mut Rng, count: usize) -> Vec<Frame> {
    (0..count)
        .map(|i| {
            let tags: Vec<(u16, u16)> = match rng.below(8) {
                0 => vec![(0x8100, rng.below(4096) as u16)],
                1 => vec![(0x88a8, rng.below(4096) as u16), (0x8100, rng.below(4096) as u16)],
                _ => Vec::new(),
            };
            let (dst, src) = (rng.pick(&MACS), rng.pick(&MACS[..3]));
            let l3 = if rng.below(3) == 0 {
                L3::V6(V6 {
                    src: rng.pick(&IP6S),
                    dst: rng.pick(&IP6S),
                    hop_limit: rng.pick(&[1, 64, 255]),
                    hop_by_hop: rng.below(6) == 0,
                    fragment: (rng.below(8) == 0).then(|| (rng.pick(&[0, 0, 1, 185]), rng.below(2) == 0)),
                })
            } else {
                let frag_offset = if rng.below(8) == 0 { rng.pick(&[0, 1, 185, 8191]) } else { 0 };
                L3::V4(V4 {
                    src: rng.pick(&IPS),
                    dst: rng.pick(&IPS),
                    ttl: rng.pick(&[1, 64, 128, 255]),
                    options: vec![1; 4 * rng.pick(&[0usize, 0, 0, 1, 2, 10])],
                    dont_fragment: rng.below(2) == 0,
                    more_fragments: rng.below(6) == 0,
                    frag_offset,
                })
            };
            let v6 = matches!(l3, L3::V6(_));
            let port = |rng: &mut Rng| if rng.below(3) == 0 { rng.below(65536) as u16 } else { rng.pick(&PORTS) };
            let l4 = match rng.below(10) {
                0..=3 => L4::Udp { sp: port(rng), dp: port(rng) },
                4..=7 => {
                    L4::Tcp { sp: port(rng), dp: port(rng), flags: rng.below(256) as u8, options: rng.below(3) == 0 }
                }
                8 if v6 => L4::Icmp6 { ty: rng.pick(&[1, 128, 129, 133, 135, 136]), code: 0, rest: [0; 4] },
                8 => L4::Icmp4 { ty: rng.pick(&[0, 3, 8, 11]), code: rng.below(4) as u8, rest: [0; 4] },
                _ => L4::Raw(rng.pick(&[2, 6, 17, 47, 50, 132, 255])),
            };
            let len = match rng.below(4) {
                0 => 0,
                1 => rng.below(64) as usize,
                2 => rng.below(600) as usize,
                _ => rng.below(1400) as usize,
            };
            let data = if rng.below(25) == 0 {
                eth(dst, src, &tags, &arp(1 + rng.below(2) as u16, src, rng.pick(&IPS), [0; 6], rng.pick(&IPS)))
            } else {
                ip_frame(dst, src, &tags, &l3, &l4, &payload(len))
            };
            named(format!("random-{i}"), data)
        })
        .collect()
}

/// SplitMix64: tiny, seedable and stable across releases (unlike `rand`'s algorithms), so a
/// failure reproduces from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn find<'a>(frames: &'a [Frame], name: &str) -> &'a Frame {
        frames.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no frame {name}"))
    }

    #[test]
    fn is_deterministic_and_seedable() {
        assert_eq!(frames(7), frames(7));
        assert_ne!(frames(7), frames(8));
        // The fixed part does not depend on the seed.
        assert_eq!(frames(7)[..100], frames(8)[..100]);
        assert_eq!(corpus().len(), frames(DEFAULT_SEED).len());
    }

    #[test]
    fn covers_sizes_from_runts_to_full_frames() {
        let all = frames(DEFAULT_SEED);
        let max = all.iter().map(|f| f.data.len()).max().unwrap_or(0);
        assert_eq!(max, 1514);
        assert!(all.iter().any(|f| f.data.is_empty()));
        for total in [60, 64, 100, 1000, 1001, 1514] {
            assert!(
                all.iter().any(|f| f.name.starts_with(&format!("size-{total}/")) && f.data.len() == total),
                "{total}"
            );
        }
        assert!(all.len() > 700, "{}", all.len());
    }

    #[test]
    fn udp_64_is_a_valid_64_byte_frame() {
        let f = udp_64(53);
        assert_eq!(f.len(), 64);
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(TransportSlice::Udp(udp)) = p.transport else { panic!("not udp") };
        assert_eq!((udp.source_port(), udp.destination_port()), (1024, 53));
        let Some(NetSlice::Ipv4(ip)) = p.net else { panic!("not ipv4") };
        assert_eq!(ip.header().total_len(), 50);
        // Correct checksums: recomputing gives the stored value.
        let h = ip.header().to_header();
        assert_eq!(h.calc_header_checksum(), h.header_checksum);
        assert_eq!(udp.to_header().calc_checksum_ipv4(&h, udp.payload()).unwrap(), udp.checksum());
    }

    #[test]
    fn headers_are_where_filters_look() {
        let all = frames(DEFAULT_SEED);
        let opt = &find(&all, "ipv4-opt-max40/udp-53").data;
        assert_eq!(opt[14], 0x4f);
        assert_eq!(&opt[14 + 60 + 2..14 + 60 + 4], &53u16.to_be_bytes());
        let qinq = &find(&all, "qinq-88a8/ipv4/udp-53").data;
        assert_eq!(&qinq[12..14], &[0x88, 0xa8]);
        assert_eq!(&qinq[16..18], &[0x81, 0x00]);
        assert_eq!(&qinq[20..22], &[0x08, 0x00]);
        let frag = &find(&all, "ipv4-frag/middle").data;
        assert_eq!(u16::from_be_bytes([frag[20], frag[21]]), 0x2000 | 185);
        let hbh = &find(&all, "ipv6-hbh-frag/first/udp-53").data;
        assert_eq!((hbh[20], hbh[54], hbh[62]), (0, 44, 17));
        let syn = &find(&all, "ipv4/tcp/syn-ack/40000-80").data;
        assert_eq!(syn[47], SYN | ACK);
        let arp = &find(&all, "arp/request").data;
        assert_eq!((arp.len(), &arp[12..14]), (60, &[0x08, 0x06][..]));
        let ns = &find(&all, "ipv6/icmp6/neighbor-solicitation").data;
        assert_eq!((ns[20], ns[21], ns[54]), (58, 255, 135));
    }

    #[test]
    fn complete_frames_parse_with_valid_checksums() {
        for f in fixed_frames() {
            let p = SlicedPacket::from_ethernet(&f.data).unwrap_or_else(|e| panic!("{}: {e}", f.name));
            if let Some(NetSlice::Ipv4(ip)) = &p.net {
                let h = ip.header().to_header();
                assert_eq!(h.calc_header_checksum(), h.header_checksum, "{}", f.name);
                if let Some(TransportSlice::Tcp(tcp)) = &p.transport {
                    let sum = tcp.to_header().calc_checksum_ipv4(&h, tcp.payload()).unwrap();
                    assert_eq!(sum, tcp.checksum(), "{}", f.name);
                }
            }
        }
    }

    #[test]
    fn truncations_cut_at_every_boundary() {
        let all = frames(DEFAULT_SEED);
        for cut in [0, 13, 14, 33, 34, 37, 47, 54] {
            let f = find(&all, &format!("cut-{cut}/ipv4/tcp/syn/40000-80"));
            assert_eq!(f.data.len(), cut);
        }
        assert!(all.iter().filter(|f| f.name.starts_with("runt-")).all(|f| (1..60).contains(&f.data.len())));
    }
}
