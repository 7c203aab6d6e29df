//! Connection tracking for one worker: a fixed-size 5-tuple flow table (RSS keeps a flow on one
//! queue, so one worker sees both directions of it) with TCP state, per-protocol timeouts,
//! eviction of the least recently seen flow when a neighbourhood is full, and counters.
//!
//! Nothing allocates after construction and nothing locks: the caller passes the time, read
//! once per batch. A flow is created when a packet in state `new` is accepted; the packets of a
//! flow are `established` once the flow has been accepted in both directions (the first reply
//! itself included), ICMP errors quoting a tracked flow are `related`, and TCP segments without
//! SYN that belong to no flow are `invalid` (no mid-stream pickup).

use super::config::{ConntrackConfig, state};
use super::packet::{FAMILY_V4, HAVE_ICMP, HAVE_PORTS, HAVE_TCP, Packet};

/// Slots probed from a flow's hash: a lookup reads at most this many.
const WINDOW: usize = 8;
const NS: u64 = 1_000_000_000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;
const RST: u8 = 0x04;

/// The flow's direction a packet travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// As the flow's first packet did.
    Original,
    Reply,
}

/// TCP progress (other protocols stay `Open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcpState {
    #[default]
    Open,
    SynSent,
    SynRecv,
    Established,
    /// A FIN was seen; both FINs or a RST end in `Closed`.
    Closing,
    Closed,
}

/// Canonical 5-tuple: the lower (address, port) endpoint first, so both directions share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
struct Key {
    a: u128,
    b: u128,
    pa: u16,
    pb: u16,
    proto: u8,
    family: u8,
}

#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    key: Key,
    live: bool,
    /// The original direction runs from endpoint `a` to `b`.
    orig_from_a: bool,
    replied: bool,
    tcp: TcpState,
    fin_orig: bool,
    fin_reply: bool,
    expires: u64,
    last: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
}

/// Table-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub inserted: u64,
    /// Live flows pushed out to make room.
    pub evicted: u64,
    /// Flows found expired and their slots reused.
    pub expired: u64,
    /// Flows ended by RST or the second FIN.
    pub closed: u64,
}

/// Where a packet's flow lives, from [`FlowTable::classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRef {
    slot: usize,
    dir: Dir,
}

/// A public view of one flow, for inspection and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub tcp: TcpState,
    pub replied: bool,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

pub struct FlowTable {
    flows: Box<[Flow]>,
    mask: usize,
    seed: u64,
    timeouts: Timeouts,
    stats: ConntrackStats,
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    handshake: u64,
    established: u64,
    closing: u64,
    udp: u64,
    icmp: u64,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable").field("slots", &self.flows.len()).field("stats", &self.stats).finish()
    }
}

/// A 64-bit mix (the finalizer of SplitMix64): cheap and spreads the key bits over the index.
#[inline]
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl FlowTable {
    pub fn new(cfg: &ConntrackConfig) -> FlowTable {
        let slots = cfg.max_flows.next_power_of_two().max(WINDOW);
        // A per-table secret, so no sender can aim flows at one neighbourhood.
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(slots);
            h.finish()
        };
        FlowTable {
            flows: vec![Flow::default(); slots].into_boxed_slice(),
            mask: slots - 1,
            seed,
            timeouts: Timeouts {
                handshake: cfg.tcp_handshake_timeout * NS,
                established: cfg.tcp_established_timeout * NS,
                closing: cfg.tcp_closing_timeout * NS,
                udp: cfg.udp_timeout * NS,
                icmp: cfg.icmp_timeout * NS,
            },
            stats: ConntrackStats::default(),
        }
    }

    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Flows alive at `now`.
    pub fn live(&self, now: u64) -> usize {
        self.flows.iter().filter(|f| f.live && f.expires > now).count()
    }

    #[inline]
    fn hash(&self, k: &Key) -> usize {
        let x = (k.a as u64) ^ ((k.a >> 64) as u64).rotate_left(17)
            ^ (k.b as u64).rotate_left(31)
            ^ ((k.b >> 64) as u64).rotate_left(47)
            ^ (u64::from(k.pa) << 48 | u64::from(k.pb) << 32 | u64::from(k.proto) << 8 | u64::from(k.family));
        mix(x ^ self.seed) as usize
    }

    #[inline]
    fn find(&self, key: &Key, now: u64) -> Option<usize> {
        let base = self.hash(key);
        (0..WINDOW).map(|i| (base + i) & self.mask).find(|&s| {
            let f = &self.flows[s];
            f.live && f.expires > now && f.key == *key
        })
    }

    /// The packet's connection state (one bit of [`state`]) and its flow, if tracked.
    #[inline]
    pub fn classify(&self, frame: &[u8], p: &Packet, now: u64) -> (u8, Option<FlowRef>) {
        let Some((key, from_a)) = flow_key(frame, p) else {
            return (self.related(frame, p, now), None);
        };
        if let Some(slot) = self.find(&key, now) {
            let f = &self.flows[slot];
            let dir = if from_a == f.orig_from_a { Dir::Original } else { Dir::Reply };
            let reopen = f.tcp == TcpState::Closed && p.tcp_flags & (SYN | ACK) == SYN;
            let st = if reopen {
                state::NEW
            } else if dir == Dir::Reply || f.replied {
                state::ESTABLISHED
            } else {
                state::NEW
            };
            return (st, Some(FlowRef { slot, dir }));
        }
        if p.proto == 6 && (!p.has(HAVE_TCP) || p.tcp_flags & (SYN | ACK | RST) != SYN) {
            return (state::INVALID, None);
        }
        (state::NEW, None)
    }

    /// ICMP errors (destination unreachable, time exceeded, …) quoting a tracked flow's packet.
    fn related(&self, frame: &[u8], p: &Packet, now: u64) -> u8 {
        let is_error = p.has(HAVE_ICMP)
            && if p.family == FAMILY_V4 { matches!(p.icmp_type, 3 | 4 | 5 | 11 | 12) } else { (1..=4).contains(&p.icmp_type) };
        if !is_error {
            return state::NEW;
        }
        // The quoted packet starts 8 bytes into the ICMP message, without an Ethernet header.
        let inner_l3 = usize::from(p.l4) + 8;
        let Some(inner) = quoted_packet(frame, inner_l3, p.family) else { return state::NEW };
        match flow_key(&inner.0[..inner.1], &Packet::parse(&inner.0[..inner.1])) {
            Some((key, _)) if self.find(&key, now).is_some() => state::RELATED,
            _ => state::NEW,
        }
    }

    /// Records an accepted packet: creates its flow (state `new`) or advances it.
    #[inline]
    pub fn accepted(&mut self, frame: &[u8], p: &Packet, flow: Option<FlowRef>, now: u64) {
        match flow {
            Some(FlowRef { slot, dir }) => {
                let f = &mut self.flows[slot];
                if f.tcp == TcpState::Closed && dir == Dir::Original && p.tcp_flags & (SYN | ACK) == SYN {
                    *f = Flow { key: f.key, live: true, orig_from_a: f.orig_from_a, last: now, ..Flow::default() };
                    f.tcp = TcpState::SynSent;
                }
                self.advance(slot, dir, p, now);
            }
            None => {
                if let Some((key, from_a)) = flow_key(frame, p) {
                    let slot = self.insert_slot(&key, now);
                    self.flows[slot] = Flow {
                        key,
                        live: true,
                        orig_from_a: from_a,
                        tcp: if key.proto == 6 { TcpState::SynSent } else { TcpState::Open },
                        ..Flow::default()
                    };
                    self.stats.inserted += 1;
                    self.advance(slot, Dir::Original, p, now);
                }
            }
        }
    }

    fn insert_slot(&mut self, key: &Key, now: u64) -> usize {
        let base = self.hash(key);
        let mut oldest = base & self.mask;
        for i in 0..WINDOW {
            let s = (base + i) & self.mask;
            let f = &self.flows[s];
            if !f.live {
                return s;
            }
            if f.expires <= now {
                self.stats.expired += 1;
                return s;
            }
            if f.last < self.flows[oldest].last {
                oldest = s;
            }
        }
        self.stats.evicted += 1;
        oldest
    }

    fn advance(&mut self, slot: usize, dir: Dir, p: &Packet, now: u64) {
        let t = self.timeouts;
        let f = &mut self.flows[slot];
        let d = usize::from(dir == Dir::Reply);
        f.packets[d] += 1;
        f.bytes[d] += u64::from(p.len);
        f.last = now;
        if dir == Dir::Reply {
            f.replied = true;
        }
        let timeout = match f.key.proto {
            6 => {
                let flags = if p.has(HAVE_TCP) { p.tcp_flags } else { 0 };
                let was_closed = f.tcp == TcpState::Closed;
                f.tcp = match (f.tcp, dir) {
                    _ if flags & RST != 0 => TcpState::Closed,
                    (TcpState::SynSent, Dir::Reply) if flags & (SYN | ACK) == SYN | ACK => TcpState::SynRecv,
                    (TcpState::SynRecv, Dir::Original) if flags & (SYN | ACK) == ACK => TcpState::Established,
                    (s, _) => s,
                };
                if flags & FIN != 0 && matches!(f.tcp, TcpState::Established | TcpState::Closing | TcpState::SynRecv) {
                    if dir == Dir::Original { f.fin_orig = true } else { f.fin_reply = true }
                    f.tcp = if f.fin_orig && f.fin_reply { TcpState::Closed } else { TcpState::Closing };
                }
                if f.tcp == TcpState::Closed && !was_closed {
                    self.stats.closed += 1;
                }
                match f.tcp {
                    TcpState::Established => t.established,
                    TcpState::Closing | TcpState::Closed => t.closing,
                    _ => t.handshake,
                }
            }
            1 | 58 => t.icmp,
            _ => t.udp,
        };
        f.expires = now.saturating_add(timeout);
    }

    /// The flow of a packet, for inspection.
    pub fn flow(&self, frame: &[u8], p: &Packet, now: u64) -> Option<FlowInfo> {
        let (key, _) = flow_key(frame, p)?;
        let f = &self.flows[self.find(&key, now)?];
        Some(FlowInfo { tcp: f.tcp, replied: f.replied, packets: f.packets, bytes: f.bytes })
    }
}

/// The canonical key of a trackable packet and whether it travels from endpoint `a`: TCP/UDP
/// with ports, ICMP echo (keyed by its identifier), any other IP protocol by addresses. ICMP
/// other than echo is not tracked.
#[inline]
fn flow_key(frame: &[u8], p: &Packet) -> Option<(Key, bool)> {
    if p.family == 0 {
        return None;
    }
    let (sp, dp) = match p.proto {
        6 | 17 if p.has(HAVE_PORTS) => (p.sport, p.dport),
        6 | 17 => return None,
        1 | 58 => {
            let echo = p.has(HAVE_ICMP)
                && if p.family == FAMILY_V4 { matches!(p.icmp_type, 0 | 8) } else { matches!(p.icmp_type, 128 | 129) };
            let at = usize::from(p.l4) + 4;
            if !echo || frame.len() < at + 2 {
                return None;
            }
            let id = u16::from_be_bytes([frame[at], frame[at + 1]]);
            (id, id)
        }
        _ => (0, 0),
    };
    let from_a = (p.src, sp) <= (p.dst, dp);
    let (a, pa, b, pb) = if from_a { (p.src, sp, p.dst, dp) } else { (p.dst, dp, p.src, sp) };
    Some((Key { a, b, pa, pb, proto: p.proto, family: p.family }, from_a))
}

/// The packet an ICMP error quotes, with an Ethernet header put in front so [`Packet::parse`]
/// reads it, and the reply's roles swapped back: returns (buffer, length).
fn quoted_packet(frame: &[u8], at: usize, family: u8) -> Option<([u8; 128], usize)> {
    let quoted = frame.get(at..)?;
    let take = quoted.len().min(128 - 14);
    let mut buf = [0u8; 128];
    buf[12..14].copy_from_slice(if family == FAMILY_V4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
    buf[14..14 + take].copy_from_slice(&quoted[..take]);
    Some((buf, 14 + take))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, flags: &str) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64).tcp(sp, dp, 1, 1000);
        for c in flags.chars() {
            b = match c {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'R' => b.rst(),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    const C: [u8; 4] = [10, 0, 0, 1];
    const S: [u8; 4] = [10, 0, 0, 2];

    fn step(t: &mut FlowTable, frame: &[u8], now: u64) -> u8 {
        let p = Packet::parse(frame);
        let (st, flow) = t.classify(frame, &p, now);
        t.accepted(frame, &p, flow, now);
        st
    }

    #[test]
    fn tcp_handshake_data_and_close() {
        let mut t = FlowTable::new(&ConntrackConfig::default());
        assert_eq!(step(&mut t, &tcp(C, S, 1000, 80, "S"), 0), state::NEW);
        assert_eq!(step(&mut t, &tcp(S, C, 80, 1000, "SA"), 1), state::ESTABLISHED);
        assert_eq!(step(&mut t, &tcp(C, S, 1000, 80, "A"), 2), state::ESTABLISHED);
        let f = tcp(C, S, 1000, 80, "A");
        assert_eq!(t.flow(&f, &Packet::parse(&f), 3).unwrap().tcp, TcpState::Established);
        step(&mut t, &tcp(C, S, 1000, 80, "FA"), 4);
        step(&mut t, &tcp(S, C, 80, 1000, "FA"), 5);
        let info = t.flow(&f, &Packet::parse(&f), 6).unwrap();
        assert_eq!((info.tcp, info.packets), (TcpState::Closed, [3, 2]));
        assert_eq!(t.stats().closed, 1);
        // Gone after the closing timeout; a stray ACK is then invalid.
        let later = 6 + 11 * NS;
        assert_eq!(t.classify(&f, &Packet::parse(&f), later).0, state::INVALID);
    }

    #[test]
    fn unsolicited_segments_are_invalid_and_rst_closes() {
        let mut t = FlowTable::new(&ConntrackConfig::default());
        let ack = tcp(S, C, 80, 1000, "A");
        assert_eq!(t.classify(&ack, &Packet::parse(&ack), 0).0, state::INVALID);
        step(&mut t, &tcp(C, S, 1000, 80, "S"), 0);
        step(&mut t, &tcp(S, C, 80, 1000, "R"), 1);
        let syn = tcp(C, S, 1000, 80, "S");
        assert_eq!(t.classify(&syn, &Packet::parse(&syn), 2).0, state::NEW, "a closed flow reopens with SYN");
    }

    #[test]
    fn udp_times_out_and_icmp_errors_are_related() {
        let cfg = ConntrackConfig { udp_timeout: 2, ..ConntrackConfig::default() };
        let mut t = FlowTable::new(&cfg);
        let mut q = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(C, S, 64).udp(5353, 53).write(&mut q, b"q").unwrap();
        assert_eq!(step(&mut t, &q, 0), state::NEW);
        assert_eq!(step(&mut t, &q, NS), state::NEW, "no reply yet");
        // Port unreachable from S quoting the query.
        let mut err = Vec::new();
        PacketBuilder::ethernet2([4; 6], [2; 6])
            .ipv4(S, C, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
            .write(&mut err, &q[14..])
            .unwrap();
        assert_eq!(t.classify(&err, &Packet::parse(&err), 2 * NS).0, state::RELATED);
        assert_eq!(t.classify(&q, &Packet::parse(&q), 4 * NS).0, state::NEW, "expired");
        assert_eq!(t.classify(&err, &Packet::parse(&err), 4 * NS).0, state::NEW);
    }

    #[test]
    fn a_full_neighbourhood_evicts_the_oldest() {
        let cfg = ConntrackConfig { max_flows: 16, ..ConntrackConfig::default() };
        let mut t = FlowTable::new(&cfg);
        for i in 0..200u16 {
            let mut q = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(C, S, 64).udp(i, 53).write(&mut q, b"q").unwrap();
            step(&mut t, &q, u64::from(i));
        }
        let s = t.stats();
        assert_eq!(s.inserted, 200);
        assert!(s.evicted >= 200 - 16, "{s:?}");
        assert!(t.live(200) <= 16);
    }
}
