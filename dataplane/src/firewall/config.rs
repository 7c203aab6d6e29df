//! The firewall rule language (`configs/firewall.toml`): parsing and validation into an
//! immutable [`FirewallConfig`]. Every error carries the file, line, column and reason; a file
//! that fails produces no config at all, so a bad reload changes nothing.
//!
//! ```toml
//! [firewall]
//! default = "drop"                  # accept | drop | reject
//! [set.blocklist]
//! addrs = ["192.0.2.0/24", "2001:db8::/32"]
//! file = "blocklist.txt"            # one address/prefix a line, `#` comments
//! [set.web]
//! ports = [80, 443, "8000-8100"]
//! [[rule]]
//! name = "block"
//! src = "@blocklist"
//! action = "drop"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::set::{AddrSet, Cidr, PortSet};

/// A set may hold at most this many entries (a typo'd file should not eat the box's memory).
pub const MAX_SET_ENTRIES: usize = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum FwConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}:{line}:{column}: {reason}")]
    At { file: PathBuf, line: usize, column: usize, reason: String },
}

/// A terminal verdict: what happens to a packet whose evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Forward it (the port's action applies).
    Accept,
    Drop,
    /// Dropped without telling the sender (no RST or ICMP is ever sent): a drop that is
    /// reported and counted as a reject.
    Reject,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Reject => "reject",
        })
    }
}

/// What a rate limit's token bucket is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// One bucket for the rule.
    Rule,
    /// One bucket per source prefix (`/32` and `/128` = per address).
    Source { v4_prefix: u8, v6_prefix: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Packets per second let through.
    pub rate: u64,
    /// Packets that may pass back to back after an idle period.
    pub burst: u64,
    pub key: LimitKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Terminal(Verdict),
    /// Count and go on to the next rule.
    Count,
    /// Accept within the rate, drop the excess.
    RateLimit(RateLimit),
    /// Mark one packet in `every` for the capture ring and go on.
    Sample { every: u32 },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Terminal(v) => v.fmt(f),
            Action::Count => f.write_str("count"),
            Action::RateLimit(r) => match r.key {
                LimitKey::Rule => write!(f, "rate-limit {}/s burst {}", r.rate, r.burst),
                LimitKey::Source { v4_prefix, v6_prefix } => {
                    write!(f, "rate-limit {}/s burst {} per source /{v4_prefix} /{v6_prefix}", r.rate, r.burst)
                }
            },
            Action::Sample { every } => write!(f, "sample 1/{every}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Connection states a rule may ask for (bits of [`Rule::state`]).
pub mod state {
    pub const NEW: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
    pub const RELATED: u8 = 4;
    /// TCP without SYN that belongs to no known connection.
    pub const INVALID: u8 = 8;
}

/// One rule; every condition present must hold (AND).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// Line of the `[[rule]]` header in the file.
    pub line: usize,
    /// Ingress interfaces; `None` = every interface.
    pub ingress: Option<Vec<String>>,
    pub family: Option<Family>,
    /// Indices into [`FirewallConfig::addr_sets`].
    pub src: Option<usize>,
    pub dst: Option<usize>,
    pub proto: Option<u8>,
    /// Indices into [`FirewallConfig::port_sets`].
    pub sport: Option<usize>,
    pub dport: Option<usize>,
    /// `(value, mask)`: `flags & mask == value`.
    pub tcp_flags: Option<(u8, u8)>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// Frame length bounds, inclusive.
    pub length: Option<(u16, u16)>,
    /// A tcpdump expression.
    pub tcpdump: Option<String>,
    /// Bits of [`state`].
    pub state: Option<u8>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub struct NamedAddrSet {
    pub name: String,
    pub set: AddrSet,
}

#[derive(Debug, Clone)]
pub struct NamedPortSet {
    pub name: String,
    pub set: PortSet,
}

/// Connection tracking limits and timeouts (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// Flow table slots per worker (rounded up to a power of two).
    pub max_flows: usize,
    pub tcp_handshake_timeout: u64,
    pub tcp_established_timeout: u64,
    pub tcp_closing_timeout: u64,
    pub udp_timeout: u64,
    pub icmp_timeout: u64,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            max_flows: 65536,
            tcp_handshake_timeout: 30,
            tcp_established_timeout: 300,
            tcp_closing_timeout: 10,
            udp_timeout: 30,
            icmp_timeout: 10,
        }
    }
}

/// A validated firewall.
#[derive(Debug, Clone)]
pub struct FirewallConfig {
    pub default: Verdict,
    pub conntrack: ConntrackConfig,
    /// Named sets first (in name order), then the anonymous sets of inline rule lists.
    pub addr_sets: Vec<NamedAddrSet>,
    pub port_sets: Vec<NamedPortSet>,
    pub rules: Vec<Rule>,
}

impl FirewallConfig {
    pub fn load(path: &Path) -> Result<FirewallConfig, FwConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| FwConfigError::Read { file: path.to_owned(), source })?;
        FirewallConfig::parse(&text, path)
    }

    /// Parses and validates `text`; `file` labels errors and anchors relative set files.
    pub fn parse(text: &str, file: &Path) -> Result<FirewallConfig, FwConfigError> {
        let at = |span: Range<usize>, reason: String| {
            let (line, column) = line_col(text, span.start);
            FwConfigError::At { file: file.to_owned(), line, column, reason }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let reason = e.message().trim_end_matches('.').to_owned();
            at(e.span().unwrap_or(0..0), reason)
        })?;
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Builder { file, at: &at, line_starts, addr_sets: Vec::new(), port_sets: Vec::new(), addr_names: BTreeMap::new(), port_names: BTreeMap::new() }
            .build(raw)
    }

    /// The rule's set, for display.
    pub fn addr_set(&self, id: usize) -> &NamedAddrSet {
        &self.addr_sets[id]
    }

    pub fn port_set(&self, id: usize) -> &NamedPortSet {
        &self.port_sets[id]
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

// ---- raw TOML shape ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    firewall: RawFirewall,
    #[serde(default)]
    set: BTreeMap<String, Spanned<RawSet>>,
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    default: Option<Spanned<String>>,
    #[serde(default)]
    conntrack: RawConntrack,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConntrack {
    max_flows: Option<Spanned<i64>>,
    tcp_handshake_timeout: Option<Spanned<i64>>,
    tcp_established_timeout: Option<Spanned<i64>>,
    tcp_closing_timeout: Option<Spanned<i64>>,
    udp_timeout: Option<Spanned<i64>>,
    icmp_timeout: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSet {
    addrs: Option<Vec<Spanned<String>>>,
    file: Option<Spanned<String>>,
    ports: Option<Vec<Spanned<PortItem>>>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum PortItem {
    Num(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<Spanned<String>>,
    #[serde(rename = "in")]
    ingress: Option<Spanned<OneOrMany<String>>>,
    family: Option<Spanned<String>>,
    src: Option<Spanned<OneOrMany<String>>>,
    dst: Option<Spanned<OneOrMany<String>>>,
    proto: Option<Spanned<PortItem>>,
    sport: Option<Spanned<OneOrMany<PortItem>>>,
    dport: Option<Spanned<OneOrMany<PortItem>>>,
    tcp_flags: Option<Spanned<String>>,
    icmp_type: Option<Spanned<i64>>,
    icmp_code: Option<Spanned<i64>>,
    vlan: Option<Spanned<i64>>,
    length: Option<Spanned<PortItem>>,
    #[serde(rename = "match")]
    tcpdump: Option<Spanned<String>>,
    state: Option<Spanned<OneOrMany<String>>>,
    action: Spanned<String>,
    rate: Option<Spanned<i64>>,
    burst: Option<Spanned<i64>>,
    per: Option<Spanned<String>>,
    prefix: Option<Spanned<i64>>,
    prefix6: Option<Spanned<i64>>,
    every: Option<Spanned<i64>>,
}

// ---- validation -------------------------------------------------------------------------

type At<'a> = &'a dyn Fn(Range<usize>, String) -> FwConfigError;

struct Builder<'a> {
    file: &'a Path,
    at: At<'a>,
    /// Byte offset of every line start, so a rule's line is a binary search rather than a
    /// count of the newlines before it (quadratic over a file of 100,000 rules).
    line_starts: Vec<usize>,
    addr_sets: Vec<NamedAddrSet>,
    port_sets: Vec<NamedPortSet>,
    addr_names: BTreeMap<String, usize>,
    port_names: BTreeMap<String, usize>,
}

fn int_in<T: TryFrom<i64>>(v: &Spanned<i64>, what: &str, lo: i64, hi: i64, at: At<'_>) -> Result<T, FwConfigError> {
    let n = *v.get_ref();
    if n < lo || n > hi {
        return Err(at(v.span(), format!("{what} {n} is not in {lo}..={hi}")));
    }
    T::try_from(n).map_err(|_| at(v.span(), format!("{what} {n} is out of range")))
}

pub(crate) fn proto_number(name: &str) -> Option<u8> {
    Some(match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmp6" | "ipv6-icmp" => 58,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "sctp" => 132,
        other => return other.parse().ok(),
    })
}

/// `S/SA` (value/mask) in tcpdump/pf letters: F S R P A U E C. Without `/mask` the mask is the
/// value (the listed flags set, others unconstrained).
pub(crate) fn parse_tcp_flags(text: &str) -> Result<(u8, u8), String> {
    let bits = |s: &str| -> Result<u8, String> {
        s.chars().try_fold(0u8, |acc, c| {
            let bit = match c.to_ascii_uppercase() {
                'F' => 0x01,
                'S' => 0x02,
                'R' => 0x04,
                'P' => 0x08,
                'A' => 0x10,
                'U' => 0x20,
                'E' => 0x40,
                'C' => 0x80,
                _ => return Err(format!("tcp flag `{c}` is not one of F S R P A U E C")),
            };
            Ok(acc | bit)
        })
    };
    let (value, mask) = match text.split_once('/') {
        Some((v, m)) => (bits(v)?, bits(m)?),
        None => {
            let v = bits(text)?;
            (v, v)
        }
    };
    if mask == 0 {
        return Err(format!("tcp flags `{text}` test nothing (empty mask)"));
    }
    if value & !mask != 0 {
        return Err(format!("tcp flags `{text}`: the value has flags outside the mask"));
    }
    Ok((value, mask))
}

impl Builder<'_> {
    fn build(mut self, raw: RawFile) -> Result<FirewallConfig, FwConfigError> {
        let at = self.at;
        let default = match &raw.firewall.default {
            None => Verdict::Accept,
            Some(d) => match d.get_ref().as_str() {
                "accept" => Verdict::Accept,
                "drop" => Verdict::Drop,
                "reject" | "reject-silently" => Verdict::Reject,
                other => return Err(at(d.span(), format!("default policy `{other}` is not accept, drop or reject"))),
            },
        };
        let conntrack = self.conntrack(&raw.firewall.conntrack)?;
        for (name, set) in &raw.set {
            self.named_set(name, set)?;
        }
        let mut rules = Vec::with_capacity(raw.rule.len());
        for (i, r) in raw.rule.iter().enumerate() {
            rules.push(self.rule(i, r)?);
        }
        Ok(FirewallConfig { default, conntrack, addr_sets: self.addr_sets, port_sets: self.port_sets, rules })
    }

    fn conntrack(&self, raw: &RawConntrack) -> Result<ConntrackConfig, FwConfigError> {
        let mut c = ConntrackConfig::default();
        let day = 86_400;
        if let Some(v) = &raw.max_flows {
            c.max_flows = int_in::<usize>(v, "max_flows", 16, 1 << 24, self.at)?.next_power_of_two();
        }
        for (field, slot) in [
            (&raw.tcp_handshake_timeout, &mut c.tcp_handshake_timeout),
            (&raw.tcp_established_timeout, &mut c.tcp_established_timeout),
            (&raw.tcp_closing_timeout, &mut c.tcp_closing_timeout),
            (&raw.udp_timeout, &mut c.udp_timeout),
            (&raw.icmp_timeout, &mut c.icmp_timeout),
        ] {
            if let Some(v) = field {
                *slot = int_in(v, "timeout (seconds)", 1, day, self.at)?;
            }
        }
        Ok(c)
    }

    fn named_set(&mut self, name: &str, set: &Spanned<RawSet>) -> Result<(), FwConfigError> {
        let at = self.at;
        let raw = set.get_ref();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(at(set.span(), format!("set name `{name}` may only hold letters, digits, `_` and `-`")));
        }
        match (&raw.ports, raw.addrs.is_some() || raw.file.is_some()) {
            (Some(_), true) => Err(at(set.span(), format!("set `{name}` mixes ports with addresses"))),
            (None, false) => Err(at(set.span(), format!("set `{name}` has neither `addrs`, `file` nor `ports`"))),
            (Some(ports), false) => {
                let mut ranges = Vec::with_capacity(ports.len());
                for p in ports {
                    ranges.push(port_item(p.get_ref()).map_err(|r| at(p.span(), r))?);
                }
                self.port_names.insert(name.to_owned(), self.port_sets.len());
                self.port_sets.push(NamedPortSet { name: name.to_owned(), set: PortSet::new(ranges) });
                Ok(())
            }
            (None, true) => {
                let mut cidrs = Vec::new();
                for a in raw.addrs.iter().flatten() {
                    cidrs.push(Cidr::parse(a.get_ref()).map_err(|r| at(a.span(), r))?);
                }
                if let Some(f) = &raw.file {
                    self.read_set_file(f, &mut cidrs)?;
                }
                if cidrs.len() > MAX_SET_ENTRIES {
                    return Err(at(set.span(), format!("set `{name}` has {} entries, more than {MAX_SET_ENTRIES}", cidrs.len())));
                }
                self.addr_names.insert(name.to_owned(), self.addr_sets.len());
                self.addr_sets.push(NamedAddrSet { name: name.to_owned(), set: AddrSet::new(cidrs) });
                Ok(())
            }
        }
    }

    fn read_set_file(&self, f: &Spanned<String>, cidrs: &mut Vec<Cidr>) -> Result<(), FwConfigError> {
        let base = self.file.parent().unwrap_or(Path::new("."));
        let path = base.join(f.get_ref());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| (self.at)(f.span(), format!("cannot read set file {}: {e}", path.display())))?;
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if cidrs.len() >= MAX_SET_ENTRIES {
                return Err(FwConfigError::At { file: path, line: n + 1, column: 1, reason: format!("more than {MAX_SET_ENTRIES} entries") });
            }
            let cidr = Cidr::parse(entry).map_err(|reason| {
                let column = line.find(entry).map_or(1, |c| line[..c].chars().count() + 1);
                FwConfigError::At { file: path.clone(), line: n + 1, column, reason }
            })?;
            cidrs.push(cidr);
        }
        Ok(())
    }

    /// An address list: `@set` names and literal prefixes; a single `@set` is used as is,
    /// anything else becomes an anonymous set named after the rule.
    fn addr_list(&mut self, rule: &str, field: &str, list: &Spanned<OneOrMany<String>>) -> Result<usize, FwConfigError> {
        let items = list.get_ref().to_vec();
        if items.is_empty() {
            return Err((self.at)(list.span(), format!("`{field}` is an empty list")));
        }
        if let [one] = items.as_slice()
            && let Some(name) = one.strip_prefix('@')
        {
            return self.addr_names.get(name).copied().ok_or_else(|| self.unknown_set(list.span(), name, "address"));
        }
        let mut cidrs = Vec::new();
        for item in &items {
            if let Some(name) = item.strip_prefix('@') {
                let id = *self.addr_names.get(name).ok_or_else(|| self.unknown_set(list.span(), name, "address"))?;
                cidrs.extend_from_slice(self.addr_sets[id].set.entries());
            } else {
                cidrs.push(Cidr::parse(item).map_err(|r| (self.at)(list.span(), r))?);
            }
        }
        self.addr_sets.push(NamedAddrSet { name: format!("{rule}.{field}"), set: AddrSet::new(cidrs) });
        Ok(self.addr_sets.len() - 1)
    }

    fn port_list(&mut self, rule: &str, field: &str, list: &Spanned<OneOrMany<PortItem>>) -> Result<usize, FwConfigError> {
        let items = list.get_ref().to_vec();
        if items.is_empty() {
            return Err((self.at)(list.span(), format!("`{field}` is an empty list")));
        }
        if let [PortItem::Text(one)] = items.as_slice()
            && let Some(name) = one.strip_prefix('@')
        {
            return self.port_names.get(name).copied().ok_or_else(|| self.unknown_set(list.span(), name, "port"));
        }
        let mut ranges = Vec::new();
        for item in &items {
            if let PortItem::Text(t) = item
                && let Some(name) = t.strip_prefix('@')
            {
                let id = *self.port_names.get(name).ok_or_else(|| self.unknown_set(list.span(), name, "port"))?;
                ranges.extend_from_slice(self.port_sets[id].set.ranges());
            } else {
                ranges.push(port_item(item).map_err(|r| (self.at)(list.span(), r))?);
            }
        }
        self.port_sets.push(NamedPortSet { name: format!("{rule}.{field}"), set: PortSet::new(ranges) });
        Ok(self.port_sets.len() - 1)
    }

    fn unknown_set(&self, span: Range<usize>, name: &str, kind: &str) -> FwConfigError {
        let known: Vec<&str> = match kind {
            "port" => self.port_names.keys().map(String::as_str).collect(),
            _ => self.addr_names.keys().map(String::as_str).collect(),
        };
        let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
        (self.at)(span, format!("no {kind} set named `{name}` (known: {known})"))
    }

    fn rule(&mut self, index: usize, raw: &Spanned<RawRule>) -> Result<Rule, FwConfigError> {
        let at = self.at;
        let r = raw.get_ref();
        let line = self.line_starts.partition_point(|&start| start <= raw.span().start);
        let name = match &r.name {
            Some(n) if n.get_ref().trim().is_empty() => return Err(at(n.span(), "rule name is empty".into())),
            Some(n) => n.get_ref().clone(),
            None => format!("rule{}", index + 1),
        };
        let ingress = match &r.ingress {
            None => None,
            Some(list) => {
                let names = list.get_ref().to_vec();
                if names.is_empty() || names.iter().any(|n| n.is_empty() || n.len() > 15) {
                    return Err(at(list.span(), "`in` needs interface names of 1-15 bytes".into()));
                }
                Some(names)
            }
        };
        let family = match &r.family {
            None => None,
            Some(f) => Some(match f.get_ref().as_str() {
                "ipv4" | "ip" | "inet" => Family::V4,
                "ipv6" | "ip6" | "inet6" => Family::V6,
                other => return Err(at(f.span(), format!("family `{other}` is not ipv4 or ipv6"))),
            }),
        };
        let proto = match &r.proto {
            None => None,
            Some(p) => Some(match p.get_ref() {
                PortItem::Num(n) if (0..=255).contains(n) => *n as u8,
                PortItem::Num(n) => return Err(at(p.span(), format!("protocol {n} is not 0-255"))),
                PortItem::Text(t) => proto_number(t).ok_or_else(|| {
                    at(p.span(), format!("unknown protocol `{t}` (tcp, udp, icmp, icmp6, gre, esp, ah, sctp or a number)"))
                })?,
            }),
        };
        let src = r.src.as_ref().map(|l| self.addr_list(&name, "src", l)).transpose()?;
        let dst = r.dst.as_ref().map(|l| self.addr_list(&name, "dst", l)).transpose()?;
        for ports in [&r.sport, &r.dport].into_iter().flatten() {
            if proto.is_some_and(|p| p != 6 && p != 17) {
                return Err(at(ports.span(), "ports need protocol tcp or udp (or no protocol)".into()));
            }
        }
        let sport = r.sport.as_ref().map(|l| self.port_list(&name, "sport", l)).transpose()?;
        let dport = r.dport.as_ref().map(|l| self.port_list(&name, "dport", l)).transpose()?;
        let tcp_flags = match &r.tcp_flags {
            None => None,
            Some(f) => {
                if proto != Some(6) {
                    return Err(at(f.span(), "`tcp_flags` needs proto = \"tcp\"".into()));
                }
                Some(parse_tcp_flags(f.get_ref()).map_err(|e| at(f.span(), e))?)
            }
        };
        let icmp = |v: &Option<Spanned<i64>>, what: &str| -> Result<Option<u8>, FwConfigError> {
            let Some(v) = v else { return Ok(None) };
            if !matches!(proto, Some(1) | Some(58)) {
                return Err(at(v.span(), format!("`{what}` needs proto = \"icmp\" or \"icmp6\"")));
            }
            int_in(v, what, 0, 255, at).map(Some)
        };
        let icmp_type = icmp(&r.icmp_type, "icmp_type")?;
        let icmp_code = icmp(&r.icmp_code, "icmp_code")?;
        let vlan = r.vlan.as_ref().map(|v| int_in(v, "vlan id", 0, 4095, at)).transpose()?;
        let length = match &r.length {
            None => None,
            Some(l) => Some(match l.get_ref() {
                PortItem::Num(n) => {
                    let n = u16::try_from(*n).map_err(|_| at(l.span(), format!("length {n} is not 0-65535")))?;
                    (n, n)
                }
                PortItem::Text(t) => PortSet::parse_range(t)
                    .map_err(|e| at(l.span(), format!("length: {}", e.replace("port", "length"))))?,
            }),
        };
        let tcpdump = match &r.tcpdump {
            Some(m) if m.get_ref().trim().is_empty() => return Err(at(m.span(), "`match` is empty".into())),
            Some(m) => Some(m.get_ref().clone()),
            None => None,
        };
        let state = match &r.state {
            None => None,
            Some(list) => {
                let mut bits = 0;
                for s in list.get_ref().to_vec() {
                    bits |= match s.as_str() {
                        "new" => state::NEW,
                        "established" => state::ESTABLISHED,
                        "related" => state::RELATED,
                        "invalid" => state::INVALID,
                        other => {
                            return Err(at(list.span(), format!("state `{other}` is not new, established, related or invalid")));
                        }
                    };
                }
                if bits == 0 {
                    return Err(at(list.span(), "`state` is an empty list".into()));
                }
                Some(bits)
            }
        };
        let action = self.action(r)?;
        Ok(Rule {
            name,
            line,
            ingress,
            family,
            src,
            dst,
            proto,
            sport,
            dport,
            tcp_flags,
            icmp_type,
            icmp_code,
            vlan,
            length,
            tcpdump,
            state,
            action,
        })
    }

    fn action(&self, r: &RawRule) -> Result<Action, FwConfigError> {
        let at = self.at;
        let name = r.action.get_ref().as_str();
        let only = |field: &Option<Spanned<i64>>, key: &str, for_action: &str| -> Result<(), FwConfigError> {
            match field {
                Some(f) if name != for_action => Err(at(f.span(), format!("`{key}` only goes with action = \"{for_action}\""))),
                _ => Ok(()),
            }
        };
        only(&r.rate, "rate", "rate-limit")?;
        only(&r.burst, "burst", "rate-limit")?;
        only(&r.prefix, "prefix", "rate-limit")?;
        only(&r.prefix6, "prefix6", "rate-limit")?;
        only(&r.every, "every", "sample")?;
        if let Some(p) = &r.per
            && name != "rate-limit"
        {
            return Err(at(p.span(), "`per` only goes with action = \"rate-limit\"".into()));
        }
        Ok(match name {
            "accept" => Action::Terminal(Verdict::Accept),
            "drop" => Action::Terminal(Verdict::Drop),
            "reject" | "reject-silently" => Action::Terminal(Verdict::Reject),
            "count" => Action::Count,
            "sample" => Action::Sample {
                every: r.every.as_ref().map(|e| int_in(e, "every", 1, u32::MAX.into(), at)).transpose()?.unwrap_or(1),
            },
            "rate-limit" => {
                let rate = r.rate.as_ref().ok_or_else(|| at(r.action.span(), "rate-limit needs `rate` (packets per second)".into()))?;
                let rate: u64 = int_in(rate, "rate", 1, 1_000_000_000, at)?;
                let burst = r.burst.as_ref().map(|b| int_in(b, "burst", 1, 1_000_000_000, at)).transpose()?.unwrap_or(rate.min(1_000_000));
                let key = match r.per.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None | Some((_, "rule")) => {
                        if let Some(f) = [&r.prefix, &r.prefix6].into_iter().flatten().next() {
                            return Err(at(f.span(), "`prefix`/`prefix6` need per = \"source\"".into()));
                        }
                        LimitKey::Rule
                    }
                    Some((_, "source")) => LimitKey::Source {
                        v4_prefix: r.prefix.as_ref().map(|p| int_in(p, "prefix", 1, 32, at)).transpose()?.unwrap_or(32),
                        v6_prefix: r.prefix6.as_ref().map(|p| int_in(p, "prefix6", 1, 128, at)).transpose()?.unwrap_or(128),
                    },
                    Some((p, other)) => return Err(at(p.span(), format!("per `{other}` is not rule or source"))),
                };
                Action::RateLimit(RateLimit { rate, burst, key })
            }
            other => {
                return Err(at(
                    r.action.span(),
                    format!("action `{other}` is not accept, drop, reject, count, rate-limit or sample"),
                ));
            }
        })
    }
}

fn port_item(item: &PortItem) -> Result<(u16, u16), String> {
    match item {
        PortItem::Num(n) => u16::try_from(*n).map(|p| (p, p)).map_err(|_| format!("port {n} is not 0-65535")),
        PortItem::Text(t) => PortSet::parse_range(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FirewallConfig, String> {
        FirewallConfig::parse(text, Path::new("fw.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_rule_set_parses() {
        let c = parse(
            r#"
[firewall]
default = "drop"
[firewall.conntrack]
max_flows = 1000
udp_timeout = 5

[set.bad]
addrs = ["192.0.2.0/24", "2001:db8::/32"]
[set.web]
ports = [80, 443, "8000-8100"]

[[rule]]
name = "block"
src = "@bad"
action = "drop"

[[rule]]
in = ["dut-a0"]
proto = "tcp"
dport = "@web"
tcp_flags = "S/SA"
action = "accept"

[[rule]]
src = ["10.0.0.0/8", "@bad"]
proto = "icmp"
icmp_type = 8
length = "0-100"
vlan = 7
action = "rate-limit"
rate = 100
per = "source"
prefix = 24

[[rule]]
state = ["established", "related"]
match = "udp port 53"
action = "sample"
every = 10
"#,
        )
        .unwrap();
        assert_eq!(c.default, Verdict::Drop);
        assert_eq!(c.conntrack.max_flows, 1024);
        assert_eq!(c.conntrack.udp_timeout, 5);
        assert_eq!(c.rules.len(), 4);
        assert_eq!(c.rules[0].name, "block");
        assert_eq!(c.rules[0].line, 13);
        assert_eq!(c.rules[0].src, Some(0));
        assert_eq!(c.rules[1].tcp_flags, Some((0x02, 0x12)));
        assert_eq!(c.rules[1].ingress.as_deref(), Some(&["dut-a0".to_owned()][..]));
        assert_eq!(c.rules[1].dport, Some(0));
        let r = &c.rules[2];
        assert_eq!(r.name, "rule3");
        assert_eq!(c.addr_set(r.src.unwrap()).name, "rule3.src");
        assert_eq!(c.addr_set(r.src.unwrap()).set.entries().len(), 3);
        assert_eq!((r.proto, r.icmp_type, r.vlan, r.length), (Some(1), Some(8), Some(7), Some((0, 100))));
        assert_eq!(
            r.action,
            Action::RateLimit(RateLimit { rate: 100, burst: 100, key: LimitKey::Source { v4_prefix: 24, v6_prefix: 128 } })
        );
        assert_eq!(c.rules[3].state, Some(state::ESTABLISHED | state::RELATED));
        assert_eq!(c.rules[3].action, Action::Sample { every: 10 });
    }

    #[test]
    fn errors_carry_file_line_column_and_reason() {
        let cases = [
            ("[[rule]]\naction = \"dorp\"\n", "fw.toml:2:10: action `dorp` is not accept"),
            ("[[rule]]\nsrc = \"@nope\"\naction = \"drop\"\n", "fw.toml:2:7: no address set named `nope` (known: none)"),
            ("[[rule]]\nsrc = \"10.0.0.1/8\"\naction = \"drop\"\n", "fw.toml:2:7: `10.0.0.1/8`: host bits are set"),
            ("[[rule]]\nproto = \"icmp\"\ndport = 80\naction = \"drop\"\n", "fw.toml:3:9: ports need protocol tcp or udp"),
            ("[[rule]]\ntcp_flags = \"S\"\naction = \"drop\"\n", "fw.toml:2:13: `tcp_flags` needs proto"),
            ("[[rule]]\nproto = \"tcp\"\ntcp_flags = \"SX\"\naction = \"drop\"\n", "fw.toml:3:13: tcp flag `X`"),
            ("[[rule]]\nvlan = 5000\naction = \"drop\"\n", "fw.toml:2:8: vlan id 5000 is not in 0..=4095"),
            ("[[rule]]\naction = \"rate-limit\"\n", "fw.toml:2:10: rate-limit needs `rate`"),
            ("[[rule]]\naction = \"drop\"\nrate = 5\n", "fw.toml:3:8: `rate` only goes with action = \"rate-limit\""),
            ("[[rule]]\nstate = \"old\"\naction = \"drop\"\n", "fw.toml:2:9: state `old` is not new"),
            ("[[rule]]\nsurprise = 1\naction = \"drop\"\n", "fw.toml:2:1: unknown field `surprise`"),
            ("[firewall]\ndefault = \"maybe\"\n", "fw.toml:2:11: default policy `maybe`"),
            ("[set.x]\naddrs = [\"1.2.3.4\"]\nports = [1]\n", "fw.toml:1:1: set `x` mixes ports with addresses"),
            ("[set.x]\nports = [\"9-1\"]\n", "fw.toml:2:10: port range `9-1` is empty"),
            ("[set.x]\nfile = \"/nonexistent/list\"\n", "fw.toml:2:8: cannot read set file /nonexistent/list"),
            ("[[rule]]\nsrc = []\naction = \"drop\"\n", "fw.toml:2:7: `src` is an empty list"),
            ("[[rule]]\nproto = \"tcpp\"\naction = \"drop\"\n", "fw.toml:2:9: unknown protocol `tcpp`"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn set_files_are_read_relative_to_the_config_and_report_their_own_lines() {
        let dir = std::env::temp_dir().join(format!("sluice-fwcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("good.txt"), "# blocklist\n192.0.2.0/24\n\n 198.51.100.7 # one host\n2001:db8::1\n").unwrap();
        std::fs::write(dir.join("bad.txt"), "192.0.2.0/24\n  10.0.0.300\n").unwrap();
        let cfg = dir.join("fw.toml");
        let ok = FirewallConfig::parse("[set.b]\nfile = \"good.txt\"\n", &cfg).unwrap();
        assert_eq!(ok.addr_sets[0].set.entries().len(), 3);
        let err = FirewallConfig::parse("[set.b]\nfile = \"bad.txt\"\n", &cfg).unwrap_err().to_string();
        assert!(err.ends_with("bad.txt:2:3: `10.0.0.300` is not an IPv4/IPv6 address or prefix"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
