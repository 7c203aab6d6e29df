//! Named sets the rules refer to: address sets (IPv4/IPv6 addresses and CIDR prefixes) and port
//! sets (ports and ranges), with lookups whose cost barely grows with the set's size.
//!
//! An address set is kept as sorted, disjoint, merged ranges per family. Sets of more than
//! [`INDEX_MIN`] ranges get a 65,536-slot index on the top 16 address bits, so a lookup is one
//! index read plus a binary search over the few ranges starting in that slot: nearly flat from
//! 10 to 100,000 entries. A port set is a 65,536-bit bitmap: one load per lookup.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Below this many ranges a plain binary search is as fast as the index and far smaller.
const INDEX_MIN: usize = 64;
const INDEX_SLOTS: usize = 1 << 16;

/// An address prefix: `addr/len`, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    V4(u32, u8),
    V6(u128, u8),
}

impl Cidr {
    /// `10.0.0.0/8`, `192.0.2.1`, `2001:db8::/32`, `::1`. Host bits must be zero: a stray bit
    /// is usually a typo for a different prefix.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{text}` is not an IPv4/IPv6 address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{text}`: prefix length `{l}` is not 0-{max}")),
            },
        };
        let cidr = match addr {
            IpAddr::V4(a) => Cidr::V4(u32::from(a), len),
            IpAddr::V6(a) => Cidr::V6(u128::from(a), len),
        };
        if cidr.first() != cidr.addr_bits() {
            return Err(format!("`{text}`: host bits are set (the prefix is `{}`)", cidr.network()));
        }
        Ok(cidr)
    }

    fn addr_bits(self) -> u128 {
        match self {
            Cidr::V4(a, _) => u128::from(a),
            Cidr::V6(a, _) => a,
        }
    }

    pub fn len(self) -> u8 {
        match self {
            Cidr::V4(_, l) | Cidr::V6(_, l) => l,
        }
    }

    /// First address of the prefix (as u128; IPv4 in the low 32 bits).
    fn first(self) -> u128 {
        match self {
            Cidr::V4(a, l) => u128::from(a & mask32(l)),
            Cidr::V6(a, l) => a & mask128(l),
        }
    }

    fn last(self) -> u128 {
        match self {
            Cidr::V4(a, l) => u128::from(a | !mask32(l)),
            Cidr::V6(a, l) => a | !mask128(l),
        }
    }

    fn network(self) -> Cidr {
        match self {
            Cidr::V4(a, l) => Cidr::V4(a & mask32(l), l),
            Cidr::V6(a, l) => Cidr::V6(a & mask128(l), l),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cidr::V4(a, l) => write!(f, "{}/{l}", Ipv4Addr::from(a)),
            Cidr::V6(a, l) => write!(f, "{}/{l}", Ipv6Addr::from(a)),
        }
    }
}

pub(crate) fn mask32(len: u8) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) }
}

pub(crate) fn mask128(len: u8) -> u128 {
    if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) }
}

/// Sorted disjoint ranges of one family with an optional top-16-bit index.
///
/// With the index, ranges are cut at slot boundaries, so every candidate for an address lies
/// among the few pieces of its own slot: a lookup reads the index and one short run of pairs
/// (two cache lines at most), however large the set.
#[derive(Debug, Clone, Default)]
struct Ranges<K> {
    /// `(start, end)` pairs, so the range a search ends on is one cache line.
    ranges: Vec<(K, K)>,
    /// `index[b]` = number of ranges starting below slot `b` (len INDEX_SLOTS + 1), or empty.
    index: Vec<u32>,
}

trait RangeKey: Copy + Ord {
    const SHIFT: u32;
    fn slot(self) -> usize;
    fn slot_start(slot: usize) -> Self;
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Self;
}

impl RangeKey for u32 {
    const SHIFT: u32 = 16;
    fn slot(self) -> usize {
        (self >> Self::SHIFT) as usize
    }
    fn slot_start(slot: usize) -> u32 {
        (slot as u32) << Self::SHIFT
    }
    fn succ(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn pred(self) -> u32 {
        self.wrapping_sub(1)
    }
}

impl RangeKey for u128 {
    const SHIFT: u32 = 112;
    fn slot(self) -> usize {
        (self >> Self::SHIFT) as usize
    }
    fn slot_start(slot: usize) -> u128 {
        (slot as u128) << Self::SHIFT
    }
    fn succ(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn pred(self) -> u128 {
        self.wrapping_sub(1)
    }
}

impl<K: RangeKey> Ranges<K> {
    fn build(mut ranges: Vec<(K, K)>) -> Ranges<K> {
        ranges.sort_unstable();
        let mut merged: Vec<(K, K)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            if let Some((_, last)) = merged.last_mut() {
                // Overlapping or adjacent: extend the previous range.
                if last.succ().is_none_or(|next| s <= next) {
                    if e > *last {
                        *last = e;
                    }
                    continue;
                }
            }
            merged.push((s, e));
        }
        let mut index = Vec::new();
        if merged.len() > INDEX_MIN {
            let mut pieces = Vec::with_capacity(merged.len());
            for &(mut s, e) in &merged {
                while s.slot() != e.slot() {
                    let next = K::slot_start(s.slot() + 1);
                    pieces.push((s, next.pred()));
                    s = next;
                }
                pieces.push((s, e));
            }
            merged = pieces;
            index.reserve_exact(INDEX_SLOTS + 1);
            let mut i = 0usize;
            for slot in 0..INDEX_SLOTS {
                let bound = K::slot_start(slot);
                while i < merged.len() && merged[i].0 < bound {
                    i += 1;
                }
                index.push(i as u32);
            }
            index.push(merged.len() as u32);
        }
        Ranges { ranges: merged, index }
    }

    #[inline]
    fn contains(&self, x: K) -> bool {
        let (lo, hi) = if self.index.is_empty() {
            (0, self.ranges.len())
        } else {
            let slot = x.slot();
            (self.index[slot] as usize, self.index[slot + 1] as usize)
        };
        // The last range starting at or below x, among those of x's slot.
        let at = lo + self.ranges[lo..hi].partition_point(|&(s, _)| s <= x);
        at > lo && x <= self.ranges[at - 1].1
    }

    fn len(&self) -> usize {
        self.ranges.len()
    }
}

/// An address set: any mix of IPv4 and IPv6 addresses and prefixes.
#[derive(Debug, Clone, Default)]
pub struct AddrSet {
    /// The entries as written (deduplicated), for the kernel's LPM tries and for display.
    entries: Vec<Cidr>,
    v4: Ranges<u32>,
    v6: Ranges<u128>,
}

impl AddrSet {
    pub fn new(mut entries: Vec<Cidr>) -> AddrSet {
        entries.sort_unstable();
        entries.dedup();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &c in &entries {
            match c {
                Cidr::V4(..) => v4.push((c.first() as u32, c.last() as u32)),
                Cidr::V6(..) => v6.push((c.first(), c.last())),
            }
        }
        AddrSet { entries, v4: Ranges::build(v4), v6: Ranges::build(v6) }
    }

    pub fn entries(&self) -> &[Cidr] {
        &self.entries
    }

    #[inline]
    pub fn contains_v4(&self, addr: u32) -> bool {
        self.v4.len() != 0 && self.v4.contains(addr)
    }

    #[inline]
    pub fn contains_v6(&self, addr: u128) -> bool {
        self.v6.len() != 0 && self.v6.contains(addr)
    }
}

/// A port set: ports and inclusive ranges, as a bitmap.
#[derive(Clone)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
    bits: Box<[u64; 1024]>,
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortSet").field("ranges", &self.ranges).finish_non_exhaustive()
    }
}

impl PortSet {
    pub fn new(mut ranges: Vec<(u16, u16)>) -> PortSet {
        ranges.sort_unstable();
        ranges.dedup();
        let mut bits = Box::new([0u64; 1024]);
        for &(lo, hi) in &ranges {
            for p in lo..=hi {
                bits[usize::from(p >> 6)] |= 1 << (p & 63);
            }
        }
        PortSet { ranges, bits }
    }

    /// `80`, `8000-8100`.
    pub fn parse_range(text: &str) -> Result<(u16, u16), String> {
        let port = |t: &str| t.trim().parse::<u16>().map_err(|_| format!("`{t}` is not a port 0-65535"));
        match text.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("port range `{text}` is empty (start above end)"));
                }
                Ok((lo, hi))
            }
            None => port(text).map(|p| (p, p)),
        }
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port >> 6)] >> (port & 63) & 1 == 1
    }

    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.ranges
    }

    /// The bitmap as the kernel's `fw_ports` words.
    pub fn words(&self) -> &[u64; 1024] {
        &self.bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(entries: &[&str]) -> AddrSet {
        AddrSet::new(entries.iter().map(|e| Cidr::parse(e).unwrap()).collect())
    }

    fn v4(a: &str) -> u32 {
        u32::from(a.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn cidr_parsing_and_errors() {
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap(), Cidr::V4(0x0a00_0000, 8));
        assert_eq!(Cidr::parse("192.0.2.1").unwrap(), Cidr::V4(v4("192.0.2.1"), 32));
        assert_eq!(Cidr::parse("::/0").unwrap(), Cidr::V6(0, 0));
        assert_eq!(Cidr::parse("10.0.0.1/8").unwrap_err(), "`10.0.0.1/8`: host bits are set (the prefix is `10.0.0.0/8`)");
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("prefix length `33`"));
        assert!(Cidr::parse("nope").unwrap_err().contains("not an IPv4/IPv6"));
        assert_eq!(Cidr::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
    }

    #[test]
    fn overlapping_and_adjacent_prefixes_merge() {
        let s = set(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "0.0.0.0/32", "255.255.255.255"]);
        assert_eq!(s.v4.len(), 3);
        assert!(s.contains_v4(v4("10.0.1.255")));
        assert!(!s.contains_v4(v4("10.0.2.0")));
        assert!(s.contains_v4(0) && s.contains_v4(u32::MAX));
        assert!(!s.contains_v6(0));
    }

    #[test]
    fn indexed_lookup_agrees_with_a_scan() {
        // Deterministic pseudo-random prefixes, enough to build the index.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut cidrs = Vec::new();
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 8 + (x % 25) as u8;
            cidrs.push(Cidr::V4((x >> 32) as u32 & mask32(len), len));
        }
        cidrs.push(Cidr::V6(0x2001_0db8 << 96, 32));
        cidrs.push(Cidr::V4(0x0a00_0000, 8)); // spans 256 slots
        cidrs.push(Cidr::V4(0xfffe_0000, 15)); // the last two
        let s = AddrSet::new(cidrs.clone());
        assert!(s.contains_v4(0x0a12_3456) && s.contains_v4(u32::MAX) && s.contains_v4(0xfffe_0000));
        assert!(!s.v4.index.is_empty());
        for i in 0..20_000u64 {
            let a = (i.wrapping_mul(0x9e37_79b9) ^ (i << 20)) as u32;
            let scan = cidrs.iter().any(|c| matches!(c, Cidr::V4(..)) && (c.first()..=c.last()).contains(&u128::from(a)));
            assert_eq!(s.contains_v4(a), scan, "{}", Ipv4Addr::from(a));
        }
        assert!(s.contains_v6((0x2001_0db8 << 96) | 5));
        assert!(!s.contains_v6(1));
    }

    #[test]
    fn port_sets() {
        assert_eq!(PortSet::parse_range("8000-8100").unwrap(), (8000, 8100));
        assert_eq!(PortSet::parse_range("22").unwrap(), (22, 22));
        assert!(PortSet::parse_range("9-1").unwrap_err().contains("empty"));
        assert!(PortSet::parse_range("70000").is_err());
        let p = PortSet::new(vec![(22, 22), (8000, 8100), (65535, 65535)]);
        assert!(p.contains(22) && p.contains(8050) && p.contains(65535));
        assert!(!p.contains(23) && !p.contains(0) && !p.contains(8101));
    }
}
