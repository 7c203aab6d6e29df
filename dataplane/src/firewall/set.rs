//! Named sets the rules refer to: address sets (IPv4/IPv6 addresses and CIDR prefixes) and port
//! sets (ports and ranges), with lookups whose cost barely grows with the set's size.
//!
//! An address set is split per family and per prefix length. Every length holding at least
//! [`HASH_MIN`] prefixes gets an open-addressing hash table of its prefixes (half full, linear
//! probing): a lookup masks the address and reads, almost always, one cache line, whatever the
//! table's size. The few prefixes of rarer lengths are kept as sorted, disjoint, merged ranges
//! (with a 65,536-slot index on the top 16 address bits once there are more than
//! [`INDEX_MIN`] of them) and binary-searched. So a lookup costs one probe per populous length
//! (a blocklist of host addresses: one) plus a search over a small range list: nearly flat
//! from 10 to 100,000 entries. A port set is a 65,536-bit bitmap: one load per lookup.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Below this many ranges a plain binary search is as fast as the index and far smaller.
const INDEX_MIN: usize = 64;
const INDEX_SLOTS: usize = 1 << 16;
/// Prefix lengths with at least this many prefixes are hashed. A binary search over n ranges
/// takes about log2(n) branches the predictor cannot learn (random addresses), a probe one
/// load: past a handful the probe wins. Rarer lengths share the range search, which saves a
/// probe per length on every lookup.
const HASH_MIN: usize = 8;

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

    /// The prefix length (a bit count: nothing to be empty).
    #[allow(clippy::len_without_is_empty)]
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

    #[cfg(test)]
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

pub(super) trait RangeKey:
    Copy + Ord + Default + std::ops::BitAnd<Output = Self> + std::ops::BitOr<Output = Self> + std::ops::Not<Output = Self>
{
    const SHIFT: u32;
    /// Bits in an address.
    const BITS: u8;
    /// The prefix mask of `len` bits.
    fn mask(len: u8) -> Self;
    /// A well-mixed 64-bit hash (the top bits pick a table slot).
    fn hash(self) -> u64;
    fn slot(self) -> usize;
    fn slot_start(slot: usize) -> Self;
    fn succ(self) -> Option<Self>;
    fn pred(self) -> Self;
}

/// A 64-bit finalizer (multiply, fold, multiply, fold): every output bit depends on every
/// input bit. A single multiplication is not enough: addresses that are themselves a
/// multiplicative sequence (as generated lists often are) then cluster in the table, and
/// misses walk long runs.
#[inline]
fn mix(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let x = (x ^ (x >> 32)).wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 32)
}

impl RangeKey for u32 {
    const SHIFT: u32 = 16;
    const BITS: u8 = 32;
    fn mask(len: u8) -> u32 {
        mask32(len)
    }
    #[inline]
    fn hash(self) -> u64 {
        mix(u64::from(self))
    }
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
    const BITS: u8 = 128;
    fn mask(len: u8) -> u128 {
        mask128(len)
    }
    #[inline]
    fn hash(self) -> u64 {
        // Both halves count: a /64 has all its bits in the high one.
        mix(mix((self >> 64) as u64) ^ self as u64)
    }
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

/// The prefixes of one length, hashed, each with a value: looking an address up is one masked
/// probe. Sets use `V = ()`; rule groups map a prefix to a rule.
#[derive(Debug, Clone)]
pub(super) struct Exact<K, V> {
    mask: K,
    /// Power-of-two table at most half full; the zero key marks an empty slot, so the
    /// all-zero prefix's value is kept aside in `zero`.
    slots: Box<[(K, V)]>,
    /// `64 - log2(slots.len())`: the hash's top bits index the table.
    shift: u32,
    zero: Option<V>,
}

impl<K: RangeKey, V: Copy + Default> Exact<K, V> {
    /// `prefixes`: first addresses of `len`-bit prefixes; of duplicates, the first one's value
    /// is kept.
    pub(super) fn build(len: u8, prefixes: &[(K, V)]) -> Exact<K, V> {
        let size = (prefixes.len() * 2).next_power_of_two().max(16);
        let mut slots = vec![(K::default(), V::default()); size].into_boxed_slice();
        let shift = 64 - size.trailing_zeros();
        let mut zero = None;
        for &(p, v) in prefixes {
            let p = p & K::mask(len);
            if p == K::default() {
                zero.get_or_insert(v);
                continue;
            }
            let mut i = (p.hash() >> shift) as usize;
            while slots[i].0 != K::default() && slots[i].0 != p {
                i = (i + 1) & (size - 1);
            }
            if slots[i].0 != p {
                slots[i] = (p, v);
            }
        }
        Exact { mask: K::mask(len), slots, shift, zero }
    }

    /// The value of the prefix holding `x`.
    #[inline]
    pub(super) fn get(&self, x: K) -> Option<V> {
        let key = x & self.mask;
        if key == K::default() {
            return self.zero;
        }
        let last = self.slots.len() - 1;
        let mut i = (key.hash() >> self.shift) as usize;
        loop {
            let (k, v) = self.slots[i];
            if k == key {
                return Some(v);
            }
            if k == K::default() {
                return None;
            }
            i = (i + 1) & last;
        }
    }
}

/// One family's prefixes: hashed per populous length, the rest as ranges.
#[derive(Debug, Clone, Default)]
struct Prefixes<K> {
    /// Most populous length first, so a hit usually stops at the first probe.
    exact: Vec<Exact<K, ()>>,
    rest: Ranges<K>,
}

impl<K: RangeKey> Prefixes<K> {
    /// `prefixes`: (first address, prefix length).
    fn build(prefixes: &[(K, u8)]) -> Prefixes<K> {
        let mut by_len: Vec<Vec<(K, ())>> = vec![Vec::new(); usize::from(K::BITS) + 1];
        for &(first, len) in prefixes {
            by_len[usize::from(len)].push((first & K::mask(len), ()));
        }
        let mut hashed: Vec<(usize, u8)> = Vec::new();
        let mut rest = Vec::new();
        for (len, firsts) in by_len.iter().enumerate() {
            let len = len as u8;
            if firsts.len() >= HASH_MIN {
                hashed.push((firsts.len(), len));
            } else {
                rest.extend(firsts.iter().map(|&(f, ())| (f, f | !K::mask(len))));
            }
        }
        hashed.sort_unstable_by(|a, b| b.cmp(a));
        let exact = hashed.iter().map(|&(_, len)| Exact::build(len, &by_len[usize::from(len)])).collect();
        Prefixes { exact, rest: Ranges::build(rest) }
    }

    #[inline]
    fn contains(&self, x: K) -> bool {
        self.exact.iter().any(|e| e.get(x).is_some()) || (self.rest.len() != 0 && self.rest.contains(x))
    }
}

/// An address set: any mix of IPv4 and IPv6 addresses and prefixes.
#[derive(Debug, Clone, Default)]
pub struct AddrSet {
    /// The entries as written (deduplicated), for the kernel's LPM tries and for display.
    entries: Vec<Cidr>,
    v4: Prefixes<u32>,
    v6: Prefixes<u128>,
}

impl AddrSet {
    pub fn new(mut entries: Vec<Cidr>) -> AddrSet {
        entries.sort_unstable();
        entries.dedup();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for &c in &entries {
            match c {
                Cidr::V4(_, len) => v4.push((c.first() as u32, len)),
                Cidr::V6(_, len) => v6.push((c.first(), len)),
            }
        }
        AddrSet { entries, v4: Prefixes::build(&v4), v6: Prefixes::build(&v6) }
    }

    pub fn entries(&self) -> &[Cidr] {
        &self.entries
    }

    #[inline]
    pub fn contains_v4(&self, addr: u32) -> bool {
        self.v4.contains(addr)
    }

    #[inline]
    pub fn contains_v6(&self, addr: u128) -> bool {
        self.v6.contains(addr)
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
        assert_eq!(s.v4.rest.len(), 3);
        assert!(s.contains_v4(v4("10.0.1.255")));
        assert!(!s.contains_v4(v4("10.0.2.0")));
        assert!(s.contains_v4(0) && s.contains_v4(u32::MAX));
        assert!(!s.contains_v6(0));
    }

    /// Deterministic xorshift.
    fn rng(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn scan(cidrs: &[Cidr], a: u32) -> bool {
        cidrs.iter().any(|c| matches!(c, Cidr::V4(..)) && (c.first()..=c.last()).contains(&u128::from(a)))
    }

    #[test]
    fn hashed_and_indexed_lookups_agree_with_a_scan() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut cidrs = Vec::new();
        // Populous lengths (hashed): host addresses and /24s, the hosts clustered in one /10
        // as a blocklist's often are.
        for _ in 0..3000 {
            cidrs.push(Cidr::V4(0x6440_0000 | (rng(&mut x) as u32 & 0x003f_ffff), 32));
        }
        for _ in 0..200 {
            cidrs.push(Cidr::V4(rng(&mut x) as u32 & mask32(24), 24));
        }
        // Rare lengths (ranges, enough for the slot index), some spanning many slots.
        for len in 8..=31u8 {
            for _ in 0..(HASH_MIN - 1 - usize::from(len) % 7) {
                cidrs.push(Cidr::V4((rng(&mut x) >> 32) as u32 & mask32(len), len));
            }
        }
        cidrs.push(Cidr::V4(0, 32));
        cidrs.push(Cidr::V4(0xfffe_0000, 15)); // the last two slots
        cidrs.push(Cidr::V6(0x2001_0db8 << 96, 32));
        let s = AddrSet::new(cidrs.clone());
        assert_eq!(s.v4.exact.len(), 2, "the /32s and the /24s are hashed");
        assert!(!s.v4.rest.index.is_empty(), "the rare lengths are indexed ranges");
        assert!(s.contains_v4(0) && s.contains_v4(u32::MAX) && s.contains_v4(0xfffe_0000) && !s.contains_v4(1));
        let mut probes: Vec<u32> = Vec::new();
        for c in &cidrs {
            if let Cidr::V4(..) = c {
                let (f, l) = (c.first() as u32, c.last() as u32);
                probes.extend([f, l, f.wrapping_sub(1), l.wrapping_add(1)]);
            }
        }
        for i in 0..20_000u64 {
            probes.push((i.wrapping_mul(0x9e37_79b9) ^ (i << 20)) as u32);
            probes.push(0x6440_0000 | (rng(&mut x) as u32 & 0x003f_ffff));
        }
        for a in probes {
            assert_eq!(s.contains_v4(a), scan(&cidrs, a), "{}", Ipv4Addr::from(a));
        }
        assert!(s.contains_v6((0x2001_0db8 << 96) | 5));
        assert!(!s.contains_v6(1));
    }

    #[test]
    fn hashed_ipv6_prefixes() {
        let mut x = 7u64;
        let nets: Vec<u128> = (0..100).map(|_| u128::from(rng(&mut x)) << 64).collect();
        let mut cidrs: Vec<Cidr> = nets.iter().map(|&n| Cidr::V6(n, 64)).collect();
        cidrs.push(Cidr::V6(0, 64));
        let s = AddrSet::new(cidrs);
        assert_eq!(s.v6.exact.len(), 1);
        for &n in &nets {
            assert!(s.contains_v6(n | 0xdead) && !s.contains_v6(n ^ (1 << 64)));
        }
        assert!(s.contains_v6(42) && !s.contains_v4(42));
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

    #[test]
    fn misses_walk_short_runs_even_for_multiplicative_address_lists() {
        // Hosts spread by a golden-ratio multiplier, the pattern that clusters under plain
        // Fibonacci hashing.
        let hosts: Vec<(u32, ())> =
            (0..100_000u32).map(|i| (0x6440_0000 | (i.wrapping_mul(2_654_435_761) & 0x003f_ffff), ())).collect();
        let t = Exact::build(32, &hosts);
        let last = t.slots.len() - 1;
        let mut probes = 0;
        for i in 0..2048u32 {
            let a = 0x6440_0000 | ((200_000 + i * 997).wrapping_mul(2_654_435_761) & 0x003f_ffff);
            assert_eq!(t.get(a), None);
            let mut at = (a.hash() >> t.shift) as usize;
            probes += 1;
            while t.slots[at].0 != 0 {
                at = (at + 1) & last;
                probes += 1;
            }
        }
        assert!(probes < 2048 * 3, "{} probes per miss", f64::from(probes) / 2048.0);
    }
}
