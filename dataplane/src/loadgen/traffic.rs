//! What the generator sends: a [`Traffic`] description (protocol, addresses, port ranges,
//! VLAN, frame sizes, flow count) and the [`FrameSet`] of ready-made templates built from it,
//! one per (flow, frame size), each with correct IP and L4 checksums and a zeroed stamp at its
//! end (see [`super::stamp`]). Sending a packet is then a copy of a template plus a stamp: no
//! header building on the hot path.
//!
//! Flows: flow `i` is a mixed-radix number over the ranges, source port varying fastest, then
//! destination port, source address, destination address. With more flows than combinations
//! the flows repeat. Frame sizes are Ethernet frame lengths without the FCS; IMIX is the
//! simple 7:4:1 mix of 64, 594 and 1518-byte frames on the wire (60, 590, 1514 here), sent
//! interleaved in a fixed 12-packet pattern rather than in runs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use etherparse::{PacketBuilder, PacketBuilderStep, VlanId};
use etherparse::{IpHeaders, Icmpv4Header, Icmpv6Header, TcpHeader, UdpHeader};

use super::stamp::{CsumFix, STAMP_LEN};

/// Bytes the Ethernet PHY adds per frame besides the frame itself: FCS 4, preamble and start
/// delimiter 8, inter-frame gap 12. Bit rates count them, like a line rate does.
pub const L1_OVERHEAD: usize = 24;
/// Smallest Ethernet frame without FCS.
pub const MIN_FRAME: usize = 60;
/// Largest frame the generator builds (a 1500-byte MTU plus Ethernet and one VLAN tag).
pub const MAX_FRAME: usize = 1518;
/// Most templates a frame set holds (flows × sizes): bounds memory at a few tens of MB.
pub const MAX_TEMPLATES: usize = 1 << 16;

/// The simple IMIX sizes (without FCS) and the 12-packet order they are sent in (7:4:1).
const IMIX_SIZES: [usize; 3] = [60, 590, 1514];
const IMIX_PATTERN: [u8; 12] = [0, 1, 0, 0, 1, 0, 2, 0, 1, 0, 1, 0];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrafficError {
    #[error("invalid {what} {text:?}: {reason}")]
    Parse { what: &'static str, text: String, reason: String },
    #[error("source {src} and destination {dst} are not the same ip version")]
    MixedVersions { src: IpAddr, dst: IpAddr },
    #[error("frame size {size}: {proto} frames with a stamp need {min} to {max} bytes")]
    Size { size: usize, proto: Proto, min: usize, max: usize },
    #[error("flows must be at least 1")]
    NoFlows,
    #[error("{flows} flows × {sizes} frame sizes is more than {MAX_TEMPLATES} templates")]
    TooManyTemplates { flows: usize, sizes: usize },
    #[error("vlan id {0}: must be 0 to 4095")]
    Vlan(u16),
    #[error("build frame: {0}")]
    Build(String),
}

/// The L4 protocol of generated packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    Udp,
    /// TCP segments with only SYN set (the stamp rides as SYN data).
    TcpSyn,
    /// ICMP (or ICMPv6) echo requests.
    Icmp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::TcpSyn => "tcp-syn",
            Proto::Icmp => "icmp",
        })
    }
}

/// Frame sizes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameSize {
    Fixed(usize),
    Imix,
}

impl FromStr for FrameSize {
    type Err = TrafficError;
    fn from_str(s: &str) -> Result<Self, TrafficError> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(FrameSize::Imix);
        }
        s.parse().map(FrameSize::Fixed).map_err(|e: std::num::ParseIntError| TrafficError::Parse {
            what: "frame size",
            text: s.into(),
            reason: e.to_string(),
        })
    }
}

impl fmt::Display for FrameSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameSize::Fixed(n) => write!(f, "{n}"),
            FrameSize::Imix => f.write_str("imix"),
        }
    }
}

/// A range of addresses `first..first+count`, written `A` or `A-B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange {
    pub first: IpAddr,
    pub count: u64,
}

impl AddrRange {
    pub fn single(addr: IpAddr) -> Self {
        AddrRange { first: addr, count: 1 }
    }

    fn nth(&self, i: u64) -> IpAddr {
        match self.first {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(i as u32)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(u128::from(i))).into()),
        }
    }
}

impl FromStr for AddrRange {
    type Err = TrafficError;
    fn from_str(s: &str) -> Result<Self, TrafficError> {
        let err = |reason: &str| TrafficError::Parse { what: "address range", text: s.into(), reason: reason.into() };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: IpAddr = a.trim().parse().map_err(|_| err("not an ip address"))?;
        let last: IpAddr = b.trim().parse().map_err(|_| err("not an ip address"))?;
        let count = match (first, last) {
            (IpAddr::V4(f), IpAddr::V4(l)) => u64::from(u32::from(l)).checked_sub(u64::from(u32::from(f))),
            (IpAddr::V6(f), IpAddr::V6(l)) => {
                u128::from(l).checked_sub(u128::from(f)).and_then(|d| u64::try_from(d).ok())
            }
            _ => return Err(err("ends are different ip versions")),
        };
        let count = count.ok_or_else(|| err("last address before the first"))?;
        Ok(AddrRange { first, count: count + 1 })
    }
}

/// A range of ports `first..first+count`, written `P` or `P-Q`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub count: u32,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { first: port, count: 1 }
    }
}

impl FromStr for PortRange {
    type Err = TrafficError;
    fn from_str(s: &str) -> Result<Self, TrafficError> {
        let err = |reason: &str| TrafficError::Parse { what: "port range", text: s.into(), reason: reason.into() };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: u16 = a.trim().parse().map_err(|_| err("not a port number"))?;
        let last: u16 = b.trim().parse().map_err(|_| err("not a port number"))?;
        if last < first {
            return Err(err("last port before the first"));
        }
        Ok(PortRange { first, count: u32::from(last - first) + 1 })
    }
}

/// Everything that determines the frames sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub proto: Proto,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: AddrRange,
    pub dst_ip: AddrRange,
    pub src_port: PortRange,
    pub dst_port: PortRange,
    pub vlan: Option<u16>,
    pub size: FrameSize,
    pub flows: u32,
}

impl Traffic {
    /// Bytes of headers before the payload (Ethernet, VLAN, IP, L4).
    pub fn header_len(&self) -> usize {
        let ip = if self.src_ip.first.is_ipv4() { 20 } else { 40 };
        let l4 = match self.proto {
            Proto::Udp | Proto::Icmp => 8,
            Proto::TcpSyn => 20,
        };
        14 + if self.vlan.is_some() { 4 } else { 0 } + ip + l4
    }

    /// Offset of the L4 header in the frame.
    pub fn l4_offset(&self) -> usize {
        self.header_len() - if self.proto == Proto::TcpSyn { 20 } else { 8 }
    }

    /// Smallest frame that holds the headers and the stamp.
    pub fn min_frame(&self) -> usize {
        (self.header_len() + STAMP_LEN).max(MIN_FRAME)
    }

    fn sizes(&self) -> Result<Vec<usize>, TrafficError> {
        let (min, max) = (self.min_frame(), MAX_FRAME - if self.vlan.is_some() { 0 } else { 4 });
        match self.size {
            FrameSize::Fixed(size) if (min..=max).contains(&size) => Ok(vec![size]),
            FrameSize::Fixed(size) => Err(TrafficError::Size { size, proto: self.proto, min, max }),
            // The small IMIX frame grows to what the headers and the stamp need.
            FrameSize::Imix => Ok(IMIX_SIZES.iter().map(|&s| s.max(min)).collect()),
        }
    }

    /// The headers of flow `i`: (src ip, dst ip, src port, dst port).
    fn flow(&self, i: u64) -> (IpAddr, IpAddr, u16, u16) {
        let mut n = i;
        let mut digit = |count: u64| {
            let d = n % count.max(1);
            n /= count.max(1);
            d
        };
        let sp = digit(u64::from(self.src_port.count));
        let dp = digit(u64::from(self.dst_port.count));
        let sa = digit(self.src_ip.count);
        let da = digit(self.dst_ip.count);
        (
            self.src_ip.nth(sa),
            self.dst_ip.nth(da),
            self.src_port.first.wrapping_add(sp as u16),
            self.dst_port.first.wrapping_add(dp as u16),
        )
    }
}

/// One prepared frame: bytes with a zeroed stamp at the end, and where its checksum is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub fix: Option<CsumFix>,
}

impl Template {
    /// Copies the template into `buf` and stamps it; returns the frame length (0 if `buf` is
    /// too small, which the engines rule out when they start).
    #[inline]
    pub fn write_into(&self, buf: &mut [u8], stamp: super::stamp::Stamp) -> usize {
        let len = self.bytes.len();
        let Some(dst) = buf.get_mut(..len) else { return 0 };
        dst.copy_from_slice(&self.bytes);
        super::stamp::write(dst, stamp, self.fix);
        len
    }
}

/// The templates of a [`Traffic`], indexed by packet number.
#[derive(Debug, Clone)]
pub struct FrameSet {
    templates: Vec<Template>,
    flows: usize,
    sizes: usize,
    pattern: Vec<u8>,
    mean_len: f64,
}

impl FrameSet {
    pub fn build(t: &Traffic) -> Result<FrameSet, TrafficError> {
        if t.flows == 0 {
            return Err(TrafficError::NoFlows);
        }
        if t.src_ip.first.is_ipv4() != t.dst_ip.first.is_ipv4() {
            return Err(TrafficError::MixedVersions { src: t.src_ip.first, dst: t.dst_ip.first });
        }
        if let Some(v) = t.vlan.filter(|&v| v > 4095) {
            return Err(TrafficError::Vlan(v));
        }
        let sizes = t.sizes()?;
        let flows = t.flows as usize;
        if flows.saturating_mul(sizes.len()) > MAX_TEMPLATES {
            return Err(TrafficError::TooManyTemplates { flows, sizes: sizes.len() });
        }
        let mut templates = Vec::with_capacity(flows * sizes.len());
        for i in 0..flows {
            for &size in &sizes {
                templates.push(build_template(t, i as u64, size)?);
            }
        }
        let pattern: Vec<u8> = if sizes.len() == 1 { vec![0] } else { IMIX_PATTERN.to_vec() };
        let mean_len =
            pattern.iter().map(|&p| sizes[usize::from(p)] as f64).sum::<f64>() / pattern.len() as f64;
        Ok(FrameSet { templates, flows, sizes: sizes.len(), pattern, mean_len })
    }

    /// The template of packet number `k`.
    #[inline]
    pub fn get(&self, k: u64) -> &Template {
        let flow = (k % self.flows as u64) as usize;
        let size = usize::from(self.pattern[(k % self.pattern.len() as u64) as usize]);
        &self.templates[flow * self.sizes + size]
    }

    /// The template of flow `flow` at the first size: what the live-frames engine sends.
    pub fn first(&self) -> &Template {
        &self.templates[0]
    }

    pub fn is_imix(&self) -> bool {
        self.sizes > 1
    }

    /// Mean frame length over the size pattern (without FCS).
    pub fn mean_len(&self) -> f64 {
        self.mean_len
    }

    /// Largest template.
    pub fn max_len(&self) -> usize {
        self.templates.iter().map(|t| t.bytes.len()).max().unwrap_or(0)
    }

    /// Packets per second that make `bits_per_sec` on the wire (counting [`L1_OVERHEAD`]).
    pub fn pps_for_bps(&self, bits_per_sec: f64) -> f64 {
        bits_per_sec / ((self.mean_len + L1_OVERHEAD as f64) * 8.0)
    }
}

/// Builds flow `i` at `size` bytes with a zero stamp and records its checksum position.
fn build_template(t: &Traffic, i: u64, size: usize) -> Result<Template, TrafficError> {
    let (src, dst, sp, dp) = t.flow(i);
    let payload = vec![0u8; size - t.header_len()];
    let eth = PacketBuilder::ethernet2(t.src_mac, t.dst_mac);
    let ip: PacketBuilderStep<IpHeaders> = match (src, dst, t.vlan) {
        (IpAddr::V4(s), IpAddr::V4(d), None) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V4(s), IpAddr::V4(d), Some(v)) => eth.single_vlan(vlan_id(v)?).ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d), None) => eth.ipv6(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d), Some(v)) => eth.single_vlan(vlan_id(v)?).ipv6(s.octets(), d.octets(), 64),
        _ => return Err(TrafficError::MixedVersions { src, dst }),
    };
    let mut bytes = Vec::with_capacity(size);
    let build = |e: etherparse::err::packet::BuildWriteError| TrafficError::Build(e.to_string());
    // Echo id and sequence stay fixed per flow (the id carries the flow's source port), so a
    // flow is one echo "session" for the receiver's stack.
    let csum_at = match (t.proto, src.is_ipv4()) {
        (Proto::Udp, _) => {
            let s: PacketBuilderStep<UdpHeader> = ip.udp(sp, dp);
            s.write(&mut bytes, &payload).map_err(build)?;
            6
        }
        (Proto::TcpSyn, _) => {
            let s: PacketBuilderStep<TcpHeader> = ip.tcp(sp, dp, 1, 65535).syn();
            s.write(&mut bytes, &payload).map_err(build)?;
            16
        }
        (Proto::Icmp, true) => {
            let s: PacketBuilderStep<Icmpv4Header> = ip.icmpv4_echo_request(sp, 1);
            s.write(&mut bytes, &payload).map_err(build)?;
            2
        }
        (Proto::Icmp, false) => {
            let s: PacketBuilderStep<Icmpv6Header> = ip.icmpv6_echo_request(sp, 1);
            s.write(&mut bytes, &payload).map_err(build)?;
            2
        }
    };
    let l4 = t.l4_offset();
    let stamp_at = size - STAMP_LEN;
    Ok(Template {
        bytes,
        fix: Some(CsumFix { field: l4 + csum_at, odd: (stamp_at - l4) % 2 == 1, udp: t.proto == Proto::Udp }),
    })
}

fn vlan_id(v: u16) -> Result<VlanId, TrafficError> {
    VlanId::try_new(v).map_err(|_| TrafficError::Vlan(v))
}

#[cfg(test)]
mod tests {
    use super::super::stamp::Stamp;
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn traffic(proto: Proto, v6: bool, vlan: Option<u16>, size: FrameSize) -> Traffic {
        let (s, d) = if v6 { ("fd00::1", "fd00::2") } else { ("10.0.0.1", "10.0.0.2") };
        Traffic {
            proto,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: s.parse().unwrap(),
            dst_ip: d.parse().unwrap(),
            src_port: "1000-1003".parse().unwrap(),
            dst_port: PortRange::single(9),
            vlan,
            size,
            flows: 4,
        }
    }

    /// Verifies the IP and L4 checksums of `frame` with etherparse's own calculation.
    fn checksums_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).expect("parse");
        let payload_of = |t: &TransportSlice| match t {
            TransportSlice::Udp(u) => u.payload().to_vec(),
            TransportSlice::Tcp(t) => t.payload().to_vec(),
            TransportSlice::Icmpv4(i) => i.payload().to_vec(),
            TransportSlice::Icmpv6(i) => i.payload().to_vec(),
        };
        let transport = p.transport.as_ref().expect("transport");
        let payload = payload_of(transport);
        match (&p.net, transport) {
            (Some(NetSlice::Ipv4(ip)), t) => {
                let h = ip.header().to_header();
                if h.header_checksum != h.calc_header_checksum() {
                    return false;
                }
                match t {
                    TransportSlice::Udp(u) => {
                        u.to_header().calc_checksum_ipv4(&h, &payload).unwrap() == u.checksum()
                    }
                    TransportSlice::Tcp(tc) => {
                        tc.to_header().calc_checksum_ipv4(&h, &payload).unwrap() == tc.checksum()
                    }
                    TransportSlice::Icmpv4(i) => {
                        i.header().icmp_type.calc_checksum(&payload) == i.checksum()
                    }
                    _ => false,
                }
            }
            (Some(NetSlice::Ipv6(ip)), t) => {
                let h = ip.header().to_header();
                match t {
                    TransportSlice::Udp(u) => {
                        u.to_header().calc_checksum_ipv6(&h, &payload).unwrap() == u.checksum()
                    }
                    TransportSlice::Tcp(tc) => {
                        tc.to_header().calc_checksum_ipv6(&h, &payload).unwrap() == tc.checksum()
                    }
                    TransportSlice::Icmpv6(i) => {
                        i.header().icmp_type.calc_checksum(h.source, h.destination, &payload).unwrap()
                            == i.checksum()
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    #[test]
    fn every_kind_of_frame_stays_valid_after_stamping() {
        let mut checked = 0;
        for proto in [Proto::Udp, Proto::TcpSyn, Proto::Icmp] {
            for v6 in [false, true] {
                for vlan in [None, Some(42)] {
                    for size in [FrameSize::Fixed(101), FrameSize::Fixed(128), FrameSize::Imix] {
                        let t = traffic(proto, v6, vlan, size);
                        let set = FrameSet::build(&t).unwrap_or_else(|e| panic!("{proto} v6={v6}: {e}"));
                        for k in 0..24u64 {
                            let tpl = set.get(k);
                            let mut buf = vec![0u8; 2048];
                            let stamp = Stamp { stream: 7, seq: 0xffff_0000 + k as u32, tx_ns: u64::MAX - k * 977 };
                            let len = tpl.write_into(&mut buf, stamp);
                            let frame = &buf[..len];
                            assert!(checksums_ok(frame), "{proto} v6={v6} vlan={vlan:?} {size} k={k}");
                            assert_eq!(Stamp::parse(frame), Some(stamp));
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 2 * 2 * 3 * 24);
    }

    #[test]
    fn flows_vary_ports_then_addresses() {
        let mut t = traffic(Proto::Udp, false, None, FrameSize::Fixed(64));
        t.src_ip = "10.0.0.1-10.0.0.2".parse().unwrap();
        t.src_port = "1000-1001".parse().unwrap();
        t.flows = 4;
        assert_eq!(t.flow(0).2, 1000);
        assert_eq!(t.flow(1).2, 1001);
        assert_eq!(t.flow(2), ("10.0.0.2".parse().unwrap(), "10.0.0.2".parse().unwrap(), 1000, 9));
        assert_eq!(t.flow(4), t.flow(0));
        let set = FrameSet::build(&t).unwrap();
        let src_port = |k| u16::from_be_bytes([set.get(k).bytes[34], set.get(k).bytes[35]]);
        assert_eq!((src_port(0), src_port(1), src_port(5)), (1000, 1001, 1001));
    }

    #[test]
    fn imix_mixes_seven_four_one() {
        let set = FrameSet::build(&traffic(Proto::Udp, false, None, FrameSize::Imix)).unwrap();
        let mut counts = std::collections::BTreeMap::new();
        for k in 0..1200 {
            *counts.entry(set.get(k).bytes.len()).or_insert(0) += 1;
        }
        assert_eq!(counts.into_iter().collect::<Vec<_>>(), vec![(60, 700), (590, 400), (1514, 100)]);
        assert!((set.mean_len() - (7.0 * 60.0 + 4.0 * 590.0 + 1514.0) / 12.0).abs() < 1e-9);
        assert!((set.pps_for_bps(1e9) - 1e9 / ((set.mean_len() + 24.0) * 8.0)).abs() < 1e-6);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let t = traffic(Proto::TcpSyn, true, None, FrameSize::Fixed(60));
        let err = FrameSet::build(&t).unwrap_err().to_string();
        assert_eq!(err, "frame size 60: tcp-syn frames with a stamp need 90 to 1514 bytes");
        let mut t = traffic(Proto::Udp, false, None, FrameSize::Fixed(60));
        assert_eq!(t.min_frame(), 60);
        FrameSet::build(&t).unwrap();
        t.dst_ip = "fd00::2".parse().unwrap();
        assert!(matches!(FrameSet::build(&t), Err(TrafficError::MixedVersions { .. })));
        t.dst_ip = "10.0.0.2".parse().unwrap();
        t.flows = 0;
        assert_eq!(FrameSet::build(&t).unwrap_err(), TrafficError::NoFlows);
        t.flows = 40_000;
        t.size = FrameSize::Imix;
        assert!(matches!(FrameSet::build(&t), Err(TrafficError::TooManyTemplates { .. })));
        assert!("10.0.0.5-10.0.0.1".parse::<AddrRange>().is_err());
        assert!("10.0.0.1-fd00::1".parse::<AddrRange>().is_err());
        assert_eq!("fd00::1-fd00::ff".parse::<AddrRange>().unwrap().count, 255);
        assert!("9-8".parse::<PortRange>().is_err());
        assert_eq!("huge".parse::<FrameSize>().unwrap_err().to_string(), "invalid frame size \"huge\": invalid digit found in string");
        assert_eq!("IMIX".parse::<FrameSize>().unwrap(), FrameSize::Imix);
    }
}
