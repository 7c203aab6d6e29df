//! Rule groups: runs of adjacent rules that differ only in their source (or only in their
//! destination) addresses, matched by one lookup instead of one rule at a time.
//!
//! A blocklist written as 100,000 rules `src <address> drop` would otherwise cost a scan of
//! every rule for every packet that matches none. Inside a group every rule is stateless and
//! terminal (accept, drop, reject) and shares every other condition, so the rule a packet
//! meets first is the lowest-numbered rule whose addresses hold the packet's address. A
//! [`PrefixMap`] answers exactly that: it maps each prefix of the group to the lowest rule
//! holding it or any prefix around it, and a lookup takes the longest prefix holding the
//! address (one hash probe per prefix length present). Priority and per-rule counters stay
//! exact: the engine counts the very rule found.

use std::fmt;
use std::ops::Range;

use super::config::{Action, FirewallConfig, Rule};
use super::packet::{FAMILY_V4, FAMILY_V6};
use super::set::{AddrSet, Cidr, Exact, RangeKey};

/// Shorter runs are cheaper to evaluate rule by rule than to look up.
pub const GROUP_MIN: usize = 4;

/// The address a group's rules differ in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupField {
    Src,
    Dst,
}

impl fmt::Display for GroupField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupField::Src => "src",
            GroupField::Dst => "dst",
        })
    }
}

/// Rules `first .. first + len` of a config, looked up together by `field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Group {
    pub first: usize,
    pub len: usize,
    pub field: GroupField,
}

impl Group {
    pub fn rules(&self) -> Range<usize> {
        self.first..self.first + self.len
    }
}

fn field(r: &Rule, f: GroupField) -> Option<usize> {
    match f {
        GroupField::Src => r.src,
        GroupField::Dst => r.dst,
    }
}

/// A rule a group may hold: it ends evaluation when it matches and keeps no state.
fn groupable(r: &Rule, f: GroupField) -> bool {
    r.tcpdump.is_none() && r.state.is_none() && matches!(r.action, Action::Terminal(_)) && field(r, f).is_some()
}

/// Whether two sets hold the same prefixes (inline lists make a set per rule, so equal
/// conditions often have different set ids).
fn same_addrs(cfg: &FirewallConfig, a: Option<usize>, b: Option<usize>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || cfg.addr_sets[x].set.entries() == cfg.addr_sets[y].set.entries(),
        _ => false,
    }
}

fn same_ports(cfg: &FirewallConfig, a: Option<usize>, b: Option<usize>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y || cfg.port_sets[x].set.ranges() == cfg.port_sets[y].set.ranges(),
        _ => false,
    }
}

/// Every condition but `f` (and the verdict, which the lookup's rule brings) is the same.
fn same_except(cfg: &FirewallConfig, a: &Rule, b: &Rule, f: GroupField) -> bool {
    let other = match f {
        GroupField::Src => same_addrs(cfg, a.dst, b.dst),
        GroupField::Dst => same_addrs(cfg, a.src, b.src),
    };
    other
        && a.ingress == b.ingress
        && a.family == b.family
        && a.proto == b.proto
        && a.tcp_flags == b.tcp_flags
        && a.icmp_type == b.icmp_type
        && a.icmp_code == b.icmp_code
        && a.vlan == b.vlan
        && a.length == b.length
        && same_ports(cfg, a.sport, b.sport)
        && same_ports(cfg, a.dport, b.dport)
}

/// The groups of a config, in rule order, each the longest run from its first rule (of at
/// least [`GROUP_MIN`] rules). Rules in no group are evaluated one by one.
pub fn groups(cfg: &FirewallConfig) -> Vec<Group> {
    let rules = &cfg.rules;
    let mut out = Vec::new();
    let mut i = 0;
    while i < rules.len() {
        let mut best: Option<(GroupField, usize)> = None;
        for f in [GroupField::Src, GroupField::Dst] {
            if !groupable(&rules[i], f) {
                continue;
            }
            let mut end = i + 1;
            while end < rules.len() && groupable(&rules[end], f) && same_except(cfg, &rules[i], &rules[end], f) {
                end += 1;
            }
            if end - i >= GROUP_MIN && best.is_none_or(|(_, e)| end > e) {
                best = Some((f, end));
            }
        }
        match best {
            Some((field, end)) => {
                out.push(Group { first: i, len: end - i, field });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// Longest-prefix lookup of one family: per prefix length present (longest first), the
/// prefixes of that length and the first rule each stands for.
#[derive(Debug, Clone, Default)]
struct Lpm<K> {
    tables: Vec<Exact<K, u32>>,
}

/// `entries` (first address, prefix length, rule offset in the group), deduplicated and
/// resolved: each prefix's offset becomes the lowest among it and the prefixes around it, so
/// the longest prefix holding an address names the first rule holding it. By length, shortest
/// first.
fn resolve<K: RangeKey>(mut entries: Vec<(K, u8, u32)>) -> Vec<(u8, Vec<(K, u32)>)> {
    for e in &mut entries {
        e.0 = e.0 & K::mask(e.1);
    }
    // Shortest lengths first, and of equal prefixes the lowest rule first (kept).
    entries.sort_unstable_by_key(|&(p, len, rule)| (len, p, rule));
    entries.dedup_by(|b, a| (a.0, a.1) == (b.0, b.1));
    let mut out: Vec<(u8, Vec<(K, u32)>)> = Vec::new();
    let mut built: Vec<Exact<K, u32>> = Vec::new();
    let mut at = 0;
    while at < entries.len() {
        let len = entries[at].1;
        let end = at + entries[at..].partition_point(|e| e.1 == len);
        // A prefix inside a shorter one of an earlier rule belongs to that rule: the
        // shorter prefixes' values already are the lowest over their own ancestors.
        let resolved: Vec<(K, u32)> = entries[at..end]
            .iter()
            .map(|&(p, _, rule)| (p, built.iter().filter_map(|t| t.get(p)).fold(rule, u32::min)))
            .collect();
        built.push(Exact::build(len, &resolved));
        out.push((len, resolved));
        at = end;
    }
    out
}

/// Per family: (first address, prefix length, rule offset in the group).
type FamilyEntries = (Vec<(u32, u8, u32)>, Vec<(u128, u8, u32)>);

impl<K: RangeKey> Lpm<K> {
    fn build(entries: Vec<(K, u8, u32)>) -> Lpm<K> {
        let mut tables: Vec<Exact<K, u32>> =
            resolve(entries).iter().map(|(len, prefixes)| Exact::build(*len, prefixes)).collect();
        tables.reverse();
        Lpm { tables }
    }

    #[inline]
    fn get(&self, x: K) -> Option<u32> {
        self.tables.iter().find_map(|t| t.get(x))
    }
}

/// Address → offset (in its group) of the first rule whose addresses hold it.
#[derive(Debug, Clone, Default)]
pub struct PrefixMap {
    v4: Lpm<u32>,
    v6: Lpm<u128>,
}

/// `sets[k]`: the addresses of a group's k-th rule → per family, entries as [`resolve`] wants.
fn entries(sets: &[&AddrSet]) -> FamilyEntries {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (k, set) in sets.iter().enumerate() {
        for &c in set.entries() {
            match c {
                Cidr::V4(a, l) => v4.push((a, l, k as u32)),
                Cidr::V6(a, l) => v6.push((a, l, k as u32)),
            }
        }
    }
    (v4, v6)
}

/// The prefixes of a group, each with the offset of the first rule holding every address in
/// it (once the longest prefix holding an address is found, as an LPM trie does): what the
/// kernel stage's trie of a group holds. `sets[k]`: the addresses of the group's k-th rule.
pub fn resolved_prefixes(sets: &[&AddrSet]) -> FamilyEntries {
    fn flat<K: RangeKey>(by_len: Vec<(u8, Vec<(K, u32)>)>) -> Vec<(K, u8, u32)> {
        by_len.into_iter().flat_map(|(len, ps)| ps.into_iter().map(move |(p, k)| (p, len, k))).collect()
    }
    let (v4, v6) = entries(sets);
    (flat(resolve(v4)), flat(resolve(v6)))
}

impl PrefixMap {
    /// `sets[k]`: the addresses of the group's k-th rule.
    pub fn new(sets: &[&AddrSet]) -> PrefixMap {
        let (v4, v6) = entries(sets);
        PrefixMap { v4: Lpm::build(v4), v6: Lpm::build(v6) }
    }

    /// `addr` as in `Packet` (IPv4 in the low 32 bits).
    #[inline]
    pub fn first_rule(&self, family: u8, addr: u128) -> Option<u32> {
        match family {
            FAMILY_V4 => self.v4.get(addr as u32),
            FAMILY_V6 => self.v6.get(addr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> FirewallConfig {
        FirewallConfig::parse(text, Path::new("t.toml")).unwrap()
    }

    fn rule(src: &str, extra: &str, action: &str) -> String {
        format!("[[rule]]\nsrc = \"{src}\"\n{extra}action = \"{action}\"\n")
    }

    #[test]
    fn runs_break_at_a_different_condition_or_a_stateful_rule() {
        let mut text = String::new();
        for i in 0..5 {
            text += &rule(&format!("10.0.0.{i}"), "proto = \"udp\"\n", "drop");
        }
        text += &rule("10.0.1.0/24", "proto = \"tcp\"\n", "drop"); // other proto: ends the run
        for i in 0..3 {
            text += &rule(&format!("10.0.2.{i}"), "", "accept");
        }
        text += "[[rule]]\nstate = \"established\"\naction = \"accept\"\n";
        for i in 0..4 {
            // Same source, different destinations: grouped by dst, verdicts may differ.
            let action = if i == 2 { "reject" } else { "drop" };
            text += &format!("[[rule]]\nsrc = \"192.0.2.0/24\"\ndst = \"10.9.0.{i}\"\naction = \"{action}\"\n");
        }
        text += "[[rule]]\nsrc = \"1.1.1.1\"\naction = \"count\"\n";
        let c = cfg(&text);
        let g = groups(&c);
        assert_eq!(
            g,
            [Group { first: 0, len: 5, field: GroupField::Src }, Group { first: 10, len: 4, field: GroupField::Dst }]
        );
    }

    #[test]
    fn the_first_rule_holding_an_address_wins_across_nesting() {
        let sets: Vec<AddrSet> = [
            vec!["10.1.2.0/24"],
            vec!["10.0.0.0/8", "2001:db8::/32"],
            vec!["10.1.2.3", "0.0.0.0/0"],
            vec!["10.1.0.0/16", "2001:db8::1"],
        ]
        .iter()
        .map(|l| AddrSet::new(l.iter().map(|e| Cidr::parse(e).unwrap()).collect()))
        .collect();
        let refs: Vec<&AddrSet> = sets.iter().collect();
        let m = PrefixMap::new(&refs);
        let v4 = |a: &str| u128::from(u32::from(a.parse::<std::net::Ipv4Addr>().unwrap()));
        let v6 = |a: &str| u128::from(a.parse::<std::net::Ipv6Addr>().unwrap());
        assert_eq!(m.first_rule(FAMILY_V4, v4("10.1.2.3")), Some(0), "inside rule 0's /24");
        assert_eq!(m.first_rule(FAMILY_V4, v4("10.1.3.1")), Some(1), "rule 1's /8 before rule 3's /16");
        assert_eq!(m.first_rule(FAMILY_V4, v4("11.0.0.1")), Some(2), "only the /0");
        assert_eq!(m.first_rule(FAMILY_V4, v4("0.0.0.0")), Some(2));
        assert_eq!(m.first_rule(FAMILY_V6, v6("2001:db8::1")), Some(1), "the /32 of rule 1 holds rule 3's host");
        assert_eq!(m.first_rule(FAMILY_V6, v6("2001:db9::1")), None);
        assert_eq!(m.first_rule(0, 0), None);
    }
}
