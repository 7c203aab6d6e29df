//! The userspace firewall: a compiled, shareable [`Ruleset`] and a per-worker [`Engine`] that
//! classifies frames into (rule, verdict).
//!
//! A `Ruleset` is immutable and `Send + Sync` (build it once off the data path, share it through
//! `Arc`); an `Engine` holds one worker's mutable state: flow table, token buckets, sample
//! counters and per-rule packet/byte counters. `classify` allocates nothing, takes no lock and
//! makes no syscall; the caller reads the clock once per batch and passes it in.

use std::sync::Arc;

use super::config::{Action, Family, FirewallConfig, Rule, Verdict, state};
use super::conntrack::{ConntrackStats, FlowTable};
use super::group::{self, GroupField, PrefixMap};
use super::packet::{FAMILY_V4, FAMILY_V6, HAVE_ICMP, HAVE_PORTS, HAVE_TCP, HAVE_VLAN, Packet};
use super::place::{self, Placement};
use super::ratelimit::Limiter;
use super::set::{AddrSet, PortSet};
use crate::bpf::jit::JitProgram;
use crate::bpf::source::{self, Format};
use crate::bpf::Exec;

/// Interfaces a ruleset can tell apart (`in` names), beyond which the others share one class.
pub const MAX_INGRESS_NAMES: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum RulesetError {
    #[error("rule `{rule}` (line {line}): match `{expr}`: {reason}")]
    Filter { rule: String, line: usize, expr: String, reason: String },
    #[error("rules name {0} distinct interfaces in `in`, at most {MAX_INGRESS_NAMES} are supported")]
    TooManyInterfaces(usize),
}

/// Which interface a frame came in on, as the ruleset knows it ([`Ruleset::ingress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressId(u8);

/// The outcome for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the rule that ended evaluation; `None` = the default policy.
    pub rule: Option<usize>,
    pub verdict: Verdict,
    /// A sample rule picked this frame for the capture ring.
    pub sampled: bool,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline]
    fn add(&mut self, len: u16) {
        self.packets += 1;
        self.bytes += u64::from(len);
    }
}

/// One rule, laid out for the hot loop.
struct Compiled {
    ingress: u64,
    family: u8,
    src: Option<Arc<AddrSet>>,
    dst: Option<Arc<AddrSet>>,
    proto: Option<u8>,
    sport: Option<Arc<PortSet>>,
    dport: Option<Arc<PortSet>>,
    tcp: Option<(u8, u8)>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    vlan: Option<u16>,
    length: (u16, u16),
    filter: Option<JitProgram>,
    state: Option<u8>,
    action: Action,
}

impl Compiled {
    #[inline]
    fn matches(&self, p: &Packet) -> bool {
        if p.len < self.length.0 || p.len > self.length.1 {
            return false;
        }
        if self.family != 0 && p.family != self.family {
            return false;
        }
        if let Some(v) = self.vlan
            && (!p.has(HAVE_VLAN) || p.vlan != v)
        {
            return false;
        }
        if let Some(proto) = self.proto
            && (p.family == 0 || p.proto != proto)
        {
            return false;
        }
        if let Some((value, mask)) = self.tcp
            && (!p.has(HAVE_TCP) || p.tcp_flags & mask != value)
        {
            return false;
        }
        if let Some(t) = self.icmp_type
            && (!p.has(HAVE_ICMP) || p.icmp_type != t)
        {
            return false;
        }
        if let Some(c) = self.icmp_code
            && (!p.has(HAVE_ICMP) || p.icmp_code != c)
        {
            return false;
        }
        if let Some(s) = &self.sport
            && (!p.has(HAVE_PORTS) || !s.contains(p.sport))
        {
            return false;
        }
        if let Some(s) = &self.dport
            && (!p.has(HAVE_PORTS) || !s.contains(p.dport))
        {
            return false;
        }
        if let Some(s) = &self.src
            && !addr_in(s, p, p.src)
        {
            return false;
        }
        if let Some(s) = &self.dst
            && !addr_in(s, p, p.dst)
        {
            return false;
        }
        true
    }
}

#[inline]
fn addr_in(set: &AddrSet, p: &Packet, addr: u128) -> bool {
    match p.family {
        FAMILY_V4 => set.contains_v4(addr as u32),
        FAMILY_V6 => set.contains_v6(addr),
        _ => false,
    }
}

/// One step of evaluation: a rule, or a group of rules found by one lookup.
enum Step {
    Rule(usize),
    Group(Box<GroupStep>),
}

/// Rules `first..` that differ only in `field`: `shared` holds their common conditions.
struct GroupStep {
    first: usize,
    field: GroupField,
    shared: Compiled,
    map: PrefixMap,
}

/// A compiled firewall: rules, sets, tcpdump filters (JIT) and the kernel/userspace split.
pub struct Ruleset {
    config: FirewallConfig,
    /// Indexed by config rule (counters, limiters and decisions use these indices).
    rules: Vec<Compiled>,
    /// What `classify` walks: rules one by one, runs of them grouped ([`group`]).
    steps: Vec<Step>,
    ingress_names: Vec<String>,
    /// Per ingress class (names, then "other"): the placement the kernel stage was built from.
    placements: Vec<Placement>,
    uses_state: bool,
}

impl std::fmt::Debug for Ruleset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ruleset").field("rules", &self.rules.len()).field("ingress", &self.ingress_names).finish()
    }
}

impl Ruleset {
    /// Compiles every rule (tcpdump expressions through libpcap → classic → JIT).
    pub fn new(config: FirewallConfig) -> Result<Ruleset, RulesetError> {
        let mut ingress_names: Vec<String> = Vec::new();
        for r in &config.rules {
            for n in r.ingress.iter().flatten() {
                if !ingress_names.contains(n) {
                    ingress_names.push(n.clone());
                }
            }
        }
        if ingress_names.len() > MAX_INGRESS_NAMES {
            return Err(RulesetError::TooManyInterfaces(ingress_names.len()));
        }
        let addr: Vec<Arc<AddrSet>> = config.addr_sets.iter().map(|s| Arc::new(s.set.clone())).collect();
        let port: Vec<Arc<PortSet>> = config.port_sets.iter().map(|s| Arc::new(s.set.clone())).collect();
        let mut rules = Vec::with_capacity(config.rules.len());
        for r in &config.rules {
            rules.push(compile(r, &ingress_names, &addr, &port)?);
        }
        let mut steps = Vec::with_capacity(rules.len());
        let mut next = 0;
        for g in group::groups(&config) {
            steps.extend((next..g.first).map(Step::Rule));
            let members = &config.rules[g.rules()];
            let sets: Vec<&AddrSet> = members
                .iter()
                .filter_map(|r| match g.field {
                    GroupField::Src => r.src,
                    GroupField::Dst => r.dst,
                })
                .map(|id| &config.addr_sets[id].set)
                .collect();
            let mut shared = members[0].clone();
            match g.field {
                GroupField::Src => shared.src = None,
                GroupField::Dst => shared.dst = None,
            }
            let shared = compile(&shared, &ingress_names, &addr, &port)?;
            steps.push(Step::Group(Box::new(GroupStep { first: g.first, field: g.field, shared, map: PrefixMap::new(&sets) })));
            next = g.first + g.len;
        }
        steps.extend((next..rules.len()).map(Step::Rule));
        let mut placements: Vec<Placement> =
            ingress_names.iter().map(|n| place::place(&config, Some(n))).collect();
        placements.push(place::place(&config, None));
        let uses_state = config.rules.iter().any(|r| r.state.is_some());
        Ok(Ruleset { config, rules, steps, ingress_names, placements, uses_state })
    }

    pub fn config(&self) -> &FirewallConfig {
        &self.config
    }

    /// The id frames from interface `name` are classified with.
    pub fn ingress(&self, name: &str) -> IngressId {
        let i = self.ingress_names.iter().position(|n| n == name).unwrap_or(self.ingress_names.len());
        IngressId(i as u8)
    }

    /// The placement (kernel/userspace) of every rule for an ingress.
    pub fn placement(&self, ingress: IngressId) -> &Placement {
        &self.placements[usize::from(ingress.0)]
    }

    pub fn rule(&self, index: usize) -> &Rule {
        &self.config.rules[index]
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

fn compile(r: &Rule, names: &[String], addr: &[Arc<AddrSet>], port: &[Arc<PortSet>]) -> Result<Compiled, RulesetError> {
    let ingress = match &r.ingress {
        None => u64::MAX,
        Some(list) => list.iter().filter_map(|n| names.iter().position(|m| m == n)).fold(0, |m, i| m | 1 << i),
    };
    let filter = match &r.tcpdump {
        None => None,
        Some(expr) => {
            let err = |reason: String| RulesetError::Filter { rule: r.name.clone(), line: r.line, expr: expr.clone(), reason };
            let compiled = source::compile_text(expr, Format::Tcpdump).map_err(|e| err(e.to_string()))?;
            Some(JitProgram::compile(&compiled.program).map_err(|e| err(format!("jit: {e}")))?)
        }
    };
    Ok(Compiled {
        ingress,
        family: match r.family {
            None => 0,
            Some(Family::V4) => FAMILY_V4,
            Some(Family::V6) => FAMILY_V6,
        },
        src: r.src.map(|i| Arc::clone(&addr[i])),
        dst: r.dst.map(|i| Arc::clone(&addr[i])),
        proto: r.proto,
        sport: r.sport.map(|i| Arc::clone(&port[i])),
        dport: r.dport.map(|i| Arc::clone(&port[i])),
        tcp: r.tcp_flags,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        vlan: r.vlan,
        length: r.length.unwrap_or((0, u16::MAX)),
        filter,
        state: r.state,
        action: r.action,
    })
}

/// One worker's firewall.
pub struct Engine {
    rules: Arc<Ruleset>,
    flows: Option<FlowTable>,
    limiters: Vec<Option<Limiter>>,
    samples: Vec<u32>,
    /// Per rule, then the default policy last.
    counters: Vec<Counter>,
    /// The kernel stage runs the same ruleset: leave what it counts to it.
    kernel_offload: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("rules", &self.rules).field("kernel_offload", &self.kernel_offload).finish()
    }
}

impl Engine {
    /// `kernel_offload`: the interfaces' steering programs hold this ruleset's kernel tables,
    /// so rules (and a default) placed there are counted there, not again here.
    pub fn new(rules: Arc<Ruleset>, kernel_offload: bool) -> Engine {
        let n = rules.len();
        let flows = rules.uses_state.then(|| FlowTable::new(&rules.config.conntrack));
        let limiters = rules
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| match &r.action {
                Action::RateLimit(l) => Some(Limiter::new(l, 0x5bd1_e995 ^ i as u64)),
                _ => None,
            })
            .collect();
        Engine {
            rules,
            flows,
            limiters,
            samples: vec![0; n],
            counters: vec![Counter::default(); n + 1],
            kernel_offload,
        }
    }

    /// Switches to `rules` (a reload), at a batch boundary: the flow table survives when the
    /// new ruleset also tracks connections with the same table size, so established flows
    /// stay established; counters and token buckets of rules with the same name carry over.
    /// Allocates (new counter and limiter tables), so it belongs with the swap, not per packet.
    pub fn adopt(&mut self, rules: Arc<Ruleset>) {
        let mut next = Engine::new(Arc::clone(&rules), self.kernel_offload);
        let keep_flows = rules.config.conntrack == self.rules.config.conntrack;
        if let (Some(old), true, true) = (self.flows.take(), next.flows.is_some(), keep_flows) {
            next.flows = Some(old);
        }
        for (j, new_rule) in rules.config.rules.iter().enumerate() {
            let Some(i) = self.rules.config.rules.iter().position(|r| r.name == new_rule.name) else { continue };
            next.counters[j] = self.counters[i];
            next.samples[j] = self.samples[i];
            if self.rules.config.rules[i].action == new_rule.action {
                next.limiters[j] = self.limiters[i].take();
            }
        }
        let (old_default, new_default) = (self.rules.len(), rules.len());
        next.counters[new_default] = self.counters[old_default];
        *self = next;
    }

    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.rules
    }

    /// Classifies `frame` received on `ingress` at `now` (nanoseconds on any monotonic clock,
    /// read once per batch). `frame` is mutable only because JIT filters take it so; nothing
    /// writes to it.
    #[inline]
    pub fn classify(&mut self, frame: &mut [u8], ingress: IngressId, now: u64) -> Decision {
        let p = Packet::parse(frame);
        let rs = &*self.rules;
        let class = usize::from(ingress.0);
        let bit = 1u64 << class.min(63);
        let placement = &rs.placements[class];
        let (kernel_prefix, kernel_default) =
            if self.kernel_offload { (placement.prefix, placement.kernel_default) } else { (0, false) };
        let mut ct = None;
        let mut sampled = false;
        let mut decision = None;
        for step in &rs.steps {
            let i = match step {
                Step::Rule(i) => {
                    let r = &rs.rules[*i];
                    if r.ingress & bit == 0 || !r.matches(&p) {
                        continue;
                    }
                    if let Some(want) = r.state {
                        let flows = self.flows.as_ref().expect("a ruleset with state rules has a flow table");
                        let (st, _) = *ct.get_or_insert_with(|| flows.classify(frame, &p, now));
                        if st & want == 0 {
                            continue;
                        }
                    }
                    if let Some(f) = &r.filter
                        && !matches!(f.run_xdp(frame, 0, 0), Ok(v) if v != 0)
                    {
                        continue;
                    }
                    *i
                }
                Step::Group(g) => {
                    if g.shared.ingress & bit == 0 || !g.shared.matches(&p) {
                        continue;
                    }
                    let addr = match g.field {
                        GroupField::Src => p.src,
                        GroupField::Dst => p.dst,
                    };
                    match g.map.first_rule(p.family, addr) {
                        Some(k) => g.first + k as usize,
                        None => continue,
                    }
                }
            };
            let r = &rs.rules[i];
            if i >= kernel_prefix {
                self.counters[i].add(p.len);
            }
            match r.action {
                Action::Count => {}
                Action::Sample { every } => {
                    self.samples[i] += 1;
                    if self.samples[i] >= every {
                        self.samples[i] = 0;
                        sampled = true;
                    }
                }
                Action::Terminal(v) => {
                    decision = Some((i, v));
                    break;
                }
                Action::RateLimit(_) => {
                    let limiter = self.limiters[i].as_mut().expect("rate-limit rules have a limiter");
                    let v = if limiter.allow(&p, now) { Verdict::Accept } else { Verdict::Drop };
                    decision = Some((i, v));
                    break;
                }
            }
        }
        let (rule, verdict) = match decision {
            Some((i, v)) => (Some(i), v),
            None => {
                if !kernel_default {
                    self.counters[rs.rules.len()].add(p.len);
                }
                (None, rs.config.default)
            }
        };
        if verdict == Verdict::Accept
            && let Some(flows) = self.flows.as_mut()
        {
            let (st, flow) = ct.unwrap_or_else(|| flows.classify(frame, &p, now));
            if st != state::INVALID && st != state::RELATED {
                flows.accepted(frame, &p, flow, now);
            }
        }
        Decision { rule, verdict, sampled }
    }

    /// Per-rule counters of this engine, the default policy's last. Rules the kernel stage
    /// counts stay at zero here when the engine was built with `kernel_offload`.
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }

    pub fn conntrack(&self) -> Option<ConntrackStats> {
        self.flows.as_ref().map(FlowTable::stats)
    }

    pub fn flows(&self) -> Option<&FlowTable> {
        self.flows.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use std::path::Path;

    fn engine(text: &str) -> Engine {
        let c = FirewallConfig::parse(text, Path::new("t.toml")).unwrap();
        Engine::new(Arc::new(Ruleset::new(c).unwrap()), false)
    }

    fn udp(src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, [10, 0, 0, 2], 64).udp(999, dport).write(&mut f, b"x").unwrap();
        f
    }

    #[test]
    fn first_terminal_match_wins_and_counts_accumulate() {
        let mut e = engine(
            r#"
[firewall]
default = "drop"
[[rule]]
proto = "udp"
action = "count"
[[rule]]
dport = [53, "5000-5010"]
action = "accept"
[[rule]]
match = "udp"
action = "reject"
"#,
        );
        let any = e.ruleset().ingress("x");
        let d = e.classify(&mut udp([1, 1, 1, 1], 5005), any, 0);
        assert_eq!(d, Decision { rule: Some(1), verdict: Verdict::Accept, sampled: false });
        let d = e.classify(&mut udp([1, 1, 1, 1], 80), any, 0);
        assert_eq!((d.rule, d.verdict), (Some(2), Verdict::Reject));
        let mut arp = vec![0xffu8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(e.classify(&mut arp, any, 0).rule, None);
        let c = e.counters();
        assert_eq!((c[0].packets, c[1].packets, c[2].packets, c[3].packets), (2, 1, 1, 1));
        assert_eq!(c[3].bytes, 42);
    }

    #[test]
    fn established_only_lets_replies_in() {
        let mut e = engine(
            r#"
[firewall]
default = "drop"
[[rule]]
state = ["established", "related"]
action = "accept"
[[rule]]
in = "lan"
action = "accept"
"#,
        );
        let (lan, wan) = (e.ruleset().ingress("lan"), e.ruleset().ingress("wan"));
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([10, 0, 0, 1], [8, 8, 8, 8], 64).udp(4000, 53).write(&mut out, b"q").unwrap();
        let mut back = Vec::new();
        PacketBuilder::ethernet2([4; 6], [2; 6]).ipv4([8, 8, 8, 8], [10, 0, 0, 1], 64).udp(53, 4000).write(&mut back, b"a").unwrap();
        assert_eq!(e.classify(&mut back.clone(), wan, 0).verdict, Verdict::Drop, "unsolicited");
        assert_eq!(e.classify(&mut out, lan, 1).rule, Some(1));
        assert_eq!(e.classify(&mut back, wan, 2), Decision { rule: Some(0), verdict: Verdict::Accept, sampled: false });
        assert_eq!(e.conntrack().unwrap().inserted, 1);
    }

    #[test]
    fn adopting_a_new_ruleset_keeps_flows_and_counters_by_name() {
        let text = "[firewall]\ndefault = \"drop\"\n[[rule]]\nname = \"replies\"\nstate = \"established\"\naction = \"accept\"\n\
                    [[rule]]\nname = \"out\"\nin = \"lan\"\naction = \"accept\"\n";
        let mut e = engine(text);
        let lan = e.ruleset().ingress("lan");
        e.classify(&mut udp([10, 0, 0, 1], 53), lan, 0);
        let mut reply = Vec::new();
        PacketBuilder::ethernet2([4; 6], [2; 6]).ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64).udp(53, 999).write(&mut reply, b"a").unwrap();
        // The new ruleset puts a count rule first and renames nothing else.
        let next = text.replace("[[rule]]\nname = \"replies\"", "[[rule]]\nname = \"c\"\naction = \"count\"\n[[rule]]\nname = \"replies\"");
        let rs = Arc::new(Ruleset::new(FirewallConfig::parse(&next, Path::new("t")).unwrap()).unwrap());
        e.adopt(Arc::clone(&rs));
        let wan = rs.ingress("wan");
        assert_eq!(e.classify(&mut reply, wan, 1).rule, Some(1), "the flow survived the swap");
        let c = e.counters();
        assert_eq!((c[0].packets, c[1].packets, c[2].packets), (1, 1, 1));
    }

    #[test]
    fn sampling_marks_one_in_n_and_goes_on() {
        let mut e = engine("[[rule]]\naction = \"sample\"\nevery = 3\n");
        let any = e.ruleset().ingress("x");
        let picks: Vec<bool> = (0..6).map(|_| e.classify(&mut udp([1, 1, 1, 1], 1), any, 0).sampled).collect();
        assert_eq!(picks, [false, false, true, false, false, true]);
    }

    #[test]
    fn bad_tcpdump_expressions_are_reported_with_their_rule() {
        let c = FirewallConfig::parse("[[rule]]\nname = \"x\"\nmatch = \"tcp port\"\naction = \"drop\"\n", Path::new("t")).unwrap();
        let err = Ruleset::new(c).unwrap_err().to_string();
        assert!(err.starts_with("rule `x` (line 1): match `tcp port`: "), "{err}");
    }
}
