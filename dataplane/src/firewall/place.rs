//! Where each rule runs on a given interface: in the steering program's maps (kernel, before
//! AF_XDP) or in the userspace engine, and why; and the kernel tables of an interface.
//!
//! The kernel takes the longest prefix of the rules that apply to the interface which are
//! stateless and expressible as lookups (address sets → LPM tries, port sets → bitmaps,
//! protocol, TCP flags, ICMP type/code, VLAN, length), within the program's table sizes. The
//! first rule that is not ends the prefix: everything after it runs in userspace, so the order
//! of evaluation, and so every verdict, is the same as if all ran in one place. The userspace
//! engine evaluates every rule (kernel ones included, for frames the kernel let through) and
//! counts only those the kernel did not.
//!
//! A group of rules ([`super::group`]) goes to the kernel whole or not at all, as one rule
//! slot whose address set is an LPM trie mapping each prefix to the counter and action of the
//! group's first rule holding it; every rule keeps its own counter.

use std::fmt;

use super::config::{Action, Family, FirewallConfig, Rule, Verdict};
use super::group::{self, Group, GroupField};
use super::set::{AddrSet, Cidr};
use crate::steer::firewall::{
    FW_ACT_ACCEPT, FW_ACT_COUNT, FW_ACT_DROP, FW_ANY, FW_F_GROUP_DST, FW_F_GROUP_SRC, FW_F_ICMP_CODE, FW_F_ICMP_TYPE,
    FW_F_PROTO, FW_F_V4, FW_F_V6, FW_F_VLAN, FW_MAX_COUNTERS, FW_MAX_PORT_SETS, FW_MAX_RULES, FwRule, KernelFirewall,
    group_value,
};

/// Where one rule runs on one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    Kernel,
    Userspace(String),
    /// The rule's `in` excludes the interface.
    NotHere,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Kernel => f.write_str("kernel"),
            Place::Userspace(why) => write!(f, "userspace: {why}"),
            Place::NotHere => f.write_str("not on this interface"),
        }
    }
}

/// The placement of every rule for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One entry per rule of the config.
    pub places: Vec<Place>,
    /// Rules before this index are kernel rules or not on this interface.
    pub prefix: usize,
    /// The default policy is applied in the kernel too (no rule went to userspace and the
    /// default is not accept).
    pub kernel_default: bool,
}

impl Placement {
    /// Config rule indices of the kernel rules, in kernel slot order.
    pub fn kernel_rules(&self) -> impl Iterator<Item = usize> + '_ {
        self.places.iter().enumerate().filter(|(_, p)| **p == Place::Kernel).map(|(i, _)| i)
    }
}

/// Whether `rule` applies to frames arriving on `ingress`; `None` = an interface no rule names.
pub fn applies(rule: &Rule, ingress: Option<&str>) -> bool {
    match (&rule.ingress, ingress) {
        (None, _) => true,
        (Some(names), Some(i)) => names.iter().any(|n| n == i),
        (Some(_), None) => false,
    }
}

/// Why a rule can only run in userspace, if it can.
fn userspace_only(rule: &Rule) -> Option<&'static str> {
    if rule.tcpdump.is_some() {
        return Some("tcpdump expressions run in the userspace JIT");
    }
    if rule.state.is_some() {
        return Some("connection state is tracked in userspace");
    }
    match rule.action {
        Action::RateLimit(_) => Some("rate limiting keeps its token buckets in userspace"),
        Action::Sample { .. } => Some("sampling feeds the userspace capture ring"),
        _ => None,
    }
}

pub fn place(cfg: &FirewallConfig, ingress: Option<&str>) -> Placement {
    let mut places = Vec::with_capacity(cfg.rules.len());
    let mut broken: Option<String> = None;
    let mut prefix = cfg.rules.len();
    let mut kernel = 0usize;
    let mut counted = 0usize;
    let mut port_sets: Vec<usize> = Vec::new();
    let groups = group::groups(cfg);
    let mut groups_ahead = groups.iter().peekable();
    // Rules before this index belong to a group whose first rule went to the kernel.
    let mut group_end = 0;
    for (i, rule) in cfg.rules.iter().enumerate() {
        if !applies(rule, ingress) {
            places.push(Place::NotHere);
            continue;
        }
        if let Some(first) = &broken {
            places.push(Place::Userspace(format!("follows userspace rule {first}")));
            continue;
        }
        if i < group_end {
            places.push(Place::Kernel);
            continue;
        }
        while groups_ahead.next_if(|g| g.first < i).is_some() {}
        let rules_here = groups_ahead.next_if(|g| g.first == i).map_or(1, |g| g.len);
        let mut needs: Vec<usize> = [rule.sport, rule.dport].into_iter().flatten().filter(|s| !port_sets.contains(s)).collect();
        needs.dedup();
        let why = if let Some(why) = userspace_only(rule) {
            Some(why.to_owned())
        } else if kernel == FW_MAX_RULES {
            Some(format!("the kernel rule table is full ({FW_MAX_RULES} rules)"))
        } else if counted + rules_here > FW_MAX_COUNTERS {
            Some(format!("the kernel counter table is full ({FW_MAX_COUNTERS} rules)"))
        } else if port_sets.len() + needs.len() > FW_MAX_PORT_SETS {
            Some(format!("the kernel port-set table is full ({FW_MAX_PORT_SETS} sets)"))
        } else {
            None
        };
        match why {
            Some(why) => {
                prefix = i;
                broken = Some(format!("`{}`", rule.name));
                places.push(Place::Userspace(why));
            }
            None => {
                kernel += 1;
                counted += rules_here;
                group_end = i + rules_here;
                port_sets.extend(needs);
                places.push(Place::Kernel);
            }
        }
    }
    let kernel_default = broken.is_none() && cfg.default != Verdict::Accept;
    Placement { places, prefix, kernel_default }
}

/// The kernel tables for one interface's placement.
pub fn kernel_tables(cfg: &FirewallConfig, placement: &Placement) -> KernelFirewall {
    let mut fw = KernelFirewall { fallback_drop: placement.kernel_default, ..KernelFirewall::default() };
    let mut port_slots: Vec<usize> = Vec::new();
    let mut addr_sets: Vec<usize> = Vec::new();
    let mut slot_of = |set: usize, fw: &mut KernelFirewall| -> u32 {
        let at = port_slots.iter().position(|&s| s == set).unwrap_or_else(|| {
            port_slots.push(set);
            fw.port_sets.push(Box::new(*cfg.port_sets[set].set.words()));
            port_slots.len() - 1
        });
        at as u32
    };
    let groups = group::groups(cfg);
    let kernel: Vec<usize> = placement.kernel_rules().collect();
    let mut at = 0;
    while at < kernel.len() {
        let (i, counter) = (kernel[at], at as u32);
        let r = &cfg.rules[i];
        // A group the placement took whole becomes one slot.
        let group = groups.iter().find(|g| g.first == i).filter(|g| kernel.get(at + g.len - 1) == Some(&(i + g.len - 1)));
        at += group.map_or(1, |g| g.len);
        let mut flags = 0;
        if r.proto.is_some() {
            flags |= FW_F_PROTO;
        }
        if r.icmp_type.is_some() {
            flags |= FW_F_ICMP_TYPE;
        }
        if r.icmp_code.is_some() {
            flags |= FW_F_ICMP_CODE;
        }
        if r.vlan.is_some() {
            flags |= FW_F_VLAN;
        }
        match r.family {
            Some(Family::V4) => flags |= FW_F_V4,
            Some(Family::V6) => flags |= FW_F_V6,
            None => {}
        }
        let (tcp_value, tcp_mask) = r.tcp_flags.unwrap_or((0, 0));
        let (len_min, len_max) = r.length.unwrap_or((0, u16::MAX));
        let (mut src_set, mut dst_set) = (r.src.map(|s| s as u32), r.dst.map(|s| s as u32));
        if let Some(g) = group {
            // Group sets are numbered after the config's.
            let id = (cfg.addr_sets.len() + fw.rules.len()) as u32;
            match g.field {
                GroupField::Src => (src_set, flags) = (Some(id), flags | FW_F_GROUP_SRC),
                GroupField::Dst => (dst_set, flags) = (Some(id), flags | FW_F_GROUP_DST),
            }
            group_tables(cfg, g, id, counter, &mut fw);
        }
        for set in [src_set, dst_set].into_iter().flatten().filter(|&s| (s as usize) < cfg.addr_sets.len()) {
            if !addr_sets.contains(&(set as usize)) {
                addr_sets.push(set as usize);
            }
        }
        let sport_set = r.sport.map_or(FW_ANY, |s| slot_of(s, &mut fw));
        let dport_set = r.dport.map_or(FW_ANY, |s| slot_of(s, &mut fw));
        fw.rules.push(FwRule {
            src_set: src_set.unwrap_or(FW_ANY),
            dst_set: dst_set.unwrap_or(FW_ANY),
            sport_set,
            dport_set,
            len_min,
            len_max,
            vlan: r.vlan.unwrap_or(0),
            proto: r.proto.unwrap_or(0),
            flags,
            tcp_mask,
            tcp_value,
            icmp_type: r.icmp_type.unwrap_or(0),
            icmp_code: r.icmp_code.unwrap_or(0),
            action: kernel_action(r.action),
            counter,
        });
    }
    for set in addr_sets {
        for &c in cfg.addr_sets[set].set.entries() {
            match c {
                Cidr::V4(a, l) => fw.v4.push((set as u32, a.to_be_bytes(), l)),
                Cidr::V6(a, l) => fw.v6.push((set as u32, a.to_be_bytes(), l)),
            }
        }
    }
    fw
}

fn kernel_action(action: Action) -> u8 {
    match action {
        Action::Terminal(Verdict::Accept) => FW_ACT_ACCEPT,
        Action::Terminal(_) => FW_ACT_DROP,
        _ => FW_ACT_COUNT,
    }
}

/// The LPM entries of group `g`'s set `id`: each prefix → counter and action of the first rule
/// holding it; the group's rules count in `first_counter..`.
fn group_tables(cfg: &FirewallConfig, g: &Group, id: u32, first_counter: u32, fw: &mut KernelFirewall) {
    let members = &cfg.rules[g.rules()];
    let sets: Vec<&AddrSet> = members
        .iter()
        .filter_map(|r| match g.field {
            GroupField::Src => r.src,
            GroupField::Dst => r.dst,
        })
        .map(|s| &cfg.addr_sets[s].set)
        .collect();
    let value = |k: u32| group_value(first_counter + k, kernel_action(members[k as usize].action));
    let (v4, v6) = group::resolved_prefixes(&sets);
    fw.group_v4.extend(v4.into_iter().map(|(a, l, k)| (id, a.to_be_bytes(), l, value(k))));
    fw.group_v6.extend(v6.into_iter().map(|(a, l, k)| (id, a.to_be_bytes(), l, value(k))));
}

/// `sluice fw explain`: each rule, where it runs on `ingress`, and why.
pub fn explain(cfg: &FirewallConfig, ingress: Option<&str>) -> String {
    use std::fmt::Write;
    let p = place(cfg, ingress);
    let mut out = String::new();
    let iface = ingress.unwrap_or("any interface not named in an `in` list");
    let _ = writeln!(out, "interface: {iface}");
    let groups = super::group::groups(cfg);
    let mut next_group = groups.iter().enumerate().peekable();
    for (i, (rule, place)) in cfg.rules.iter().zip(&p.places).enumerate() {
        if let Some((n, g)) = next_group.next_if(|(_, g)| g.first == i) {
            let _ = writeln!(
                out,
                "  group {}: rules {}-{} differ only in `{}`: one lookup finds the first of them that matches \
                 (in the kernel: one rule slot, an LPM trie; every rule keeps its counter)",
                n + 1,
                g.first + 1,
                g.first + g.len,
                g.field
            );
        }
        let _ = writeln!(out, "  {:>3}  {:<20} line {:<5} {place}", i + 1, rule.name, rule.line);
        let _ = writeln!(out, "       {}", describe(cfg, rule));
    }
    let default_place = if p.kernel_default {
        "kernel (every rule is in the kernel)"
    } else if cfg.default == Verdict::Accept {
        "userspace (accept hands the frame on)"
    } else {
        "userspace (rules run there)"
    };
    let _ = writeln!(out, "  default {}: {default_place}", cfg.default);
    let kernel = p.kernel_rules().count();
    let user = p.places.iter().filter(|p| matches!(p, Place::Userspace(_))).count();
    let _ = writeln!(out, "  {kernel} rules in the kernel, {user} in userspace");
    if !groups.is_empty() {
        let grouped: usize = groups.iter().map(|g| g.len).sum();
        let _ = writeln!(out, "  {grouped} rules in {} group(s), one lookup per group", groups.len());
    }
    out
}

/// A one-line summary of a rule's conditions and action.
pub fn describe(cfg: &FirewallConfig, r: &Rule) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(i) = &r.ingress {
        parts.push(format!("in {}", i.join(",")));
    }
    if let Some(s) = r.src {
        parts.push(format!("src @{}", cfg.addr_set(s).name));
    }
    if let Some(s) = r.dst {
        parts.push(format!("dst @{}", cfg.addr_set(s).name));
    }
    if let Some(p) = r.proto {
        parts.push(format!("proto {p}"));
    }
    if let Some(s) = r.sport {
        parts.push(format!("sport @{}", cfg.port_set(s).name));
    }
    if let Some(s) = r.dport {
        parts.push(format!("dport @{}", cfg.port_set(s).name));
    }
    if r.tcp_flags.is_some() {
        parts.push("flags".into());
    }
    if r.icmp_type.is_some() || r.icmp_code.is_some() {
        parts.push("icmp".into());
    }
    if let Some(v) = r.vlan {
        parts.push(format!("vlan {v}"));
    }
    if let Some((lo, hi)) = r.length {
        parts.push(format!("len {lo}-{hi}"));
    }
    if r.tcpdump.is_some() {
        parts.push("match".into());
    }
    if r.state.is_some() {
        parts.push("state".into());
    }
    parts.push(format!("-> {}", r.action));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> FirewallConfig {
        FirewallConfig::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn the_prefix_stops_at_the_first_userspace_rule() {
        let c = cfg(r#"
[firewall]
default = "drop"
[set.bad]
addrs = ["192.0.2.0/24"]
[[rule]]
src = "@bad"
action = "drop"
[[rule]]
in = "eth1"
proto = "udp"
action = "drop"
[[rule]]
state = "established"
action = "accept"
[[rule]]
proto = "tcp"
dport = 22
action = "accept"
"#);
        let p = place(&c, Some("eth0"));
        assert_eq!(p.places[0], Place::Kernel);
        assert_eq!(p.places[1], Place::NotHere);
        assert_eq!(p.places[2], Place::Userspace("connection state is tracked in userspace".into()));
        assert_eq!(p.places[3], Place::Userspace("follows userspace rule `rule3`".into()));
        assert_eq!((p.prefix, p.kernel_default), (2, false));
        let k = kernel_tables(&c, &p);
        assert_eq!(k.rules.len(), 1);
        assert_eq!(k.v4, vec![(0, [192, 0, 2, 0], 24)]);
        assert!(!k.fallback_drop);
        let text = explain(&c, Some("eth0"));
        assert!(text.contains("    1  rule1                line 6     kernel\n       src @bad -> drop\n"), "{text}");
    }

    #[test]
    fn an_all_kernel_rule_set_drops_by_default_in_the_kernel() {
        let c = cfg("[firewall]\ndefault = \"reject\"\n[[rule]]\nproto = \"tcp\"\ndport = [22, \"80-81\"]\naction = \"accept\"\n");
        let p = place(&c, None);
        assert_eq!((p.prefix, p.kernel_default), (1, true));
        let k = kernel_tables(&c, &p);
        assert!(k.fallback_drop);
        assert_eq!(k.rules[0].dport_set, 0);
        assert_eq!(k.rules[0].flags, FW_F_PROTO);
        assert_eq!(k.port_sets[0][1] >> 16 & 3, 3, "ports 80, 81");
    }

    #[test]
    fn table_limits_send_the_rest_to_userspace() {
        let mut text = String::new();
        for i in 0..(FW_MAX_RULES + 2) {
            text.push_str(&format!("[[rule]]\nproto = \"udp\"\ndport = {}\naction = \"count\"\n", i + 1));
        }
        let p = place(&cfg(&text), None);
        assert_eq!(p.prefix, FW_MAX_PORT_SETS);
        assert!(matches!(&p.places[FW_MAX_PORT_SETS], Place::Userspace(w) if w.contains("port-set table is full")));
    }

    #[test]
    fn a_group_takes_one_kernel_slot_and_keeps_a_counter_per_rule() {
        let mut text = String::from("[firewall]\ndefault = \"accept\"\n[[rule]]\nproto = \"tcp\"\naction = \"count\"\n");
        // More rules than the kernel has slots, all in one group.
        for i in 0..FW_MAX_RULES + 10 {
            let action = if i == 1 { "accept" } else { "drop" };
            text.push_str(&format!("[[rule]]\nsrc = \"10.0.{}.{}\"\naction = \"{action}\"\n", i / 256, i % 256));
        }
        text.push_str("[[rule]]\nsrc = \"10.0.0.0/8\"\nproto = \"udp\"\naction = \"drop\"\n");
        let c = cfg(&text);
        let p = place(&c, None);
        assert!(p.places.iter().all(|p| *p == Place::Kernel), "{:?}", p.places.iter().find(|p| **p != Place::Kernel));
        let k = kernel_tables(&c, &p);
        assert_eq!(k.rules.len(), 3, "count rule, group slot, last rule");
        let g = k.rules[1];
        assert_eq!((g.flags & FW_F_GROUP_SRC, g.src_set, g.counter), (FW_F_GROUP_SRC, c.addr_sets.len() as u32 + 1, 1));
        assert_eq!(k.rules[2].counter, FW_MAX_RULES as u32 + 11);
        assert_eq!(k.group_v4.len(), FW_MAX_RULES + 10);
        assert!(k.group_v4.contains(&(g.src_set, [10, 0, 0, 1], 32, group_value(2, FW_ACT_ACCEPT))));
        assert!(k.group_v4.contains(&(g.src_set, [10, 0, 1, 9], 32, group_value(1 + 256 + 9, FW_ACT_DROP))));
        assert!(explain(&c, None).contains(&format!("group 1: rules 2-{} differ only in `src`", FW_MAX_RULES + 11)));
    }
}
