//! The appliance configuration: parsing and validation of `configs/*.toml`.
//!
//! A config is parsed and fully validated into an immutable [`Config`] before anything touches an
//! interface; every error names the file, the key and the reason. Nothing is mutated in place:
//! a reload builds a new `Config` and swaps it in whole, or keeps the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::pipeline::{DefaultAction, Pipeline, PipelineSpec, PortEnv, StageSpec};

/// Linux caps interface names at IFNAMSIZ - 1 bytes.
const IFNAMSIZ_MAX: usize = 15;
/// Ring sizes and frame counts beyond this waste memory for no gain on any NIC we know.
const MAX_RING: u32 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
    #[error("{file}: {key}: {reason}")]
    Invalid { file: PathBuf, key: String, reason: String },
}

/// Whether to try zero-copy AF_XDP binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopyPref {
    /// Try zero-copy, fall back to copy mode where the driver lacks support (veth).
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode only.
    Off,
}

/// Where the steering XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachPref {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Native,
    Generic,
}

/// A port's action on every packet steered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortAction {
    Drop,
    /// Swap the Ethernet addresses and send it back out of the same port.
    Reflect,
    /// Send it out of the named port unchanged (bump in the wire).
    Forward(String),
}

/// Traffic the steering program hands to the kernel instead of the dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassRule {
    /// IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMPv6).
    pub proto: u8,
    /// Destination port; 0 = every packet of the protocol.
    pub port: u16,
}

impl FromStr for PassRule {
    type Err = String;

    /// `tcp/22`, `udp/53`, `tcp` (all TCP), `icmp`, `icmp6`, `proto/47`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, port) = match s.split_once('/') {
            Some((n, p)) => (n, Some(p)),
            None => (s, None),
        };
        let proto = match name {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmp6" => 58,
            "proto" => {
                let p = port.ok_or_else(|| format!("`{s}`: `proto` needs a number, e.g. `proto/47`"))?;
                let n = p.parse::<u8>().map_err(|_| format!("`{s}`: `{p}` is not a protocol number 0-255"))?;
                return Ok(PassRule { proto: n, port: 0 });
            }
            _ => return Err(format!("`{s}`: unknown protocol `{name}` (expected tcp, udp, icmp, icmp6 or proto/N)")),
        };
        let port = match port {
            None => 0,
            Some(_) if matches!(proto, 1 | 58) => return Err(format!("`{s}`: {name} has no ports")),
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(format!("`{s}`: `{p}` is not a port 1-65535")),
                Ok(n) => n,
            },
        };
        Ok(PassRule { proto, port })
    }
}

impl fmt::Display for PassRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.proto {
            6 => "tcp",
            17 => "udp",
            1 => return f.write_str("icmp"),
            58 => return f.write_str("icmp6"),
            n => return write!(f, "proto/{n}"),
        };
        if self.port == 0 { f.write_str(name) } else { write!(f, "{name}/{}", self.port) }
    }
}

/// Settings shared by every port.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataplane {
    pub batch_size: u32,
    pub frame_count: u32,
    pub frame_size: u32,
    pub rx_ring: u32,
    pub tx_ring: u32,
    pub zero_copy: ZeroCopyPref,
    pub attach: AttachPref,
    pub need_wakeup: bool,
    /// Workers are pinned to these cores round-robin.
    pub cores: Vec<usize>,
    /// Packets addressed to a port's own IP addresses go to the kernel (management traffic).
    pub pass_local: bool,
    pub passthrough: Vec<PassRule>,
    /// `firewall`: the firewall rules file (resolved against the config's directory), applied
    /// to every port's traffic before its pipeline. Its contents are read by the runtime (and
    /// `sluice check`), and re-read on every reload.
    pub firewall: Option<PathBuf>,
}

impl Dataplane {
    /// The keys of `[dataplane]` that differ from `other` and that a reload cannot apply to
    /// running workers: UMEM and ring geometry, zero-copy, batch size, wakeup mode, and the
    /// steering programs' settings. A reload may change `firewall` and `cores` (workers it
    /// starts use the new cores; running ones stay where they are).
    pub fn fixed_keys_changed(&self, other: &Dataplane) -> Vec<&'static str> {
        let Dataplane {
            batch_size,
            frame_count,
            frame_size,
            rx_ring,
            tx_ring,
            zero_copy,
            attach,
            need_wakeup,
            cores: _,
            pass_local,
            passthrough,
            firewall: _,
        } = self;
        let mut keys = Vec::new();
        let mut check = |same: bool, key| {
            if !same {
                keys.push(key);
            }
        };
        check(*batch_size == other.batch_size, "batch_size");
        check(*frame_count == other.frame_count, "frame_count");
        check(*frame_size == other.frame_size, "frame_size");
        check(*rx_ring == other.rx_ring, "rx_ring");
        check(*tx_ring == other.tx_ring, "tx_ring");
        check(*zero_copy == other.zero_copy, "zero_copy");
        check(*attach == other.attach, "attach");
        check(*need_wakeup == other.need_wakeup, "need_wakeup");
        check(*pass_local == other.pass_local, "pass_local");
        check(*passthrough == other.passthrough, "passthrough");
        keys
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub interface: String,
    pub queues: Vec<u32>,
    /// The default action: what packets no terminal stage took get.
    pub action: PortAction,
    /// `[[port.stage]]`, in order; filter files already resolved against the config's
    /// directory and checked by their front ends.
    pub stages: Vec<StageSpec>,
}

impl Port {
    /// The forwarding peer, the only port a stage may forward to.
    pub fn peer(&self) -> Option<&str> {
        match &self.action {
            PortAction::Forward(p) => Some(p),
            _ => None,
        }
    }

    /// The port's pipeline: its stages, then its action.
    pub fn pipeline(&self) -> PipelineSpec {
        let default = match &self.action {
            PortAction::Drop => DefaultAction::Drop,
            PortAction::Reflect => DefaultAction::Reflect,
            PortAction::Forward(p) => DefaultAction::Forward(p.clone()),
        };
        PipelineSpec { stages: self.stages.clone(), default }
    }

    /// What the pipeline compiler needs to know about this port.
    pub fn env(&self) -> PortEnv<'_> {
        PortEnv { port: &self.name, peer: self.peer(), workers: self.queues.len() }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub dataplane: Dataplane,
    pub ports: Vec<Port>,
    pub daemon: Daemon,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates; `file` only labels errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            message: one_line_toml_error(&e, text),
        })?;
        raw.validate(file, available_cores())
    }

    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// toml's own message spans several lines with a source excerpt; keep line, column and reason.
fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    let reason = e.message().trim_end_matches('.').to_owned();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {reason}")
        }
        None => reason,
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    user: Option<String>,
    group: Option<String>,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    dataplane: RawDataplane,
    #[serde(default, rename = "port")]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDataplane {
    batch_size: u32,
    frame_count: u32,
    frame_size: u32,
    rx_ring: u32,
    tx_ring: u32,
    zero_copy: ZeroCopyPref,
    attach: AttachPref,
    need_wakeup: bool,
    cores: Option<Vec<usize>>,
    pass_local: bool,
    passthrough: Vec<String>,
    firewall: Option<String>,
}

impl Default for RawDataplane {
    fn default() -> Self {
        // 2048 frames of 2 KiB = 4 MiB of UMEM per worker: two workers fit the default 8 MiB
        // RLIMIT_MEMLOCK of a process without CAP_IPC_LOCK.
        RawDataplane {
            batch_size: 64,
            frame_count: 2048,
            frame_size: 2048,
            rx_ring: 1024,
            tx_ring: 1024,
            zero_copy: ZeroCopyPref::Auto,
            attach: AttachPref::Auto,
            need_wakeup: true,
            cores: None,
            pass_local: true,
            passthrough: Vec::new(),
            firewall: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    interface: String,
    #[serde(default = "default_queues")]
    queues: Vec<u32>,
    action: String,
    forward_to: Option<String>,
    #[serde(default, rename = "stage")]
    stages: Vec<StageSpec>,
}

fn default_queues() -> Vec<u32> {
    vec![0]
}

impl RawConfig {
    fn validate(self, file: &Path, ncores: usize) -> Result<Config, ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid { file: file.to_owned(), key, reason };
        let daemon = daemon_settings(self.control, self.metrics, self.user, self.group).map_err(|(k, r)| bad(k, r))?;
        let d = self.dataplane;

        for (key, v) in [("frame_count", d.frame_count), ("rx_ring", d.rx_ring), ("tx_ring", d.tx_ring)] {
            if !v.is_power_of_two() || !(64..=MAX_RING).contains(&v) {
                return Err(bad(format!("dataplane.{key}"), format!("{v} must be a power of two from 64 to {MAX_RING}")));
            }
        }
        if !matches!(d.frame_size, 2048 | 4096) {
            return Err(bad("dataplane.frame_size".into(), format!("{} must be 2048 or 4096 (AF_XDP chunk size)", d.frame_size)));
        }
        if d.batch_size == 0 || d.batch_size > d.rx_ring {
            return Err(bad("dataplane.batch_size".into(), format!("{} must be from 1 to rx_ring ({})", d.batch_size, d.rx_ring)));
        }
        if d.frame_count < d.rx_ring {
            // Fewer frames than RX slots can never fill the ring: the kernel drops what it can't place.
            return Err(bad("dataplane.frame_count".into(), format!("{} is smaller than rx_ring ({})", d.frame_count, d.rx_ring)));
        }
        let cores = d.cores.unwrap_or_else(|| (0..ncores).collect());
        if cores.is_empty() {
            return Err(bad("dataplane.cores".into(), "must list at least one core".into()));
        }
        if let Some(c) = cores.iter().find(|&&c| c >= ncores) {
            return Err(bad("dataplane.cores".into(), format!("core {c} does not exist (this machine has {ncores})")));
        }
        let mut passthrough = Vec::new();
        for (i, s) in d.passthrough.iter().enumerate() {
            passthrough.push(s.parse::<PassRule>().map_err(|r| bad(format!("dataplane.passthrough[{i}]"), r))?);
        }
        let firewall = match &d.firewall {
            None => None,
            Some(f) if f.is_empty() => return Err(bad("dataplane.firewall".into(), "must name a file".into())),
            Some(f) => Some(file.parent().unwrap_or(Path::new(".")).join(f)),
        };

        if self.ports.is_empty() {
            return Err(bad("port".into(), "at least one [[port]] is required".into()));
        }
        let mut names = BTreeSet::new();
        let mut queues_of: BTreeMap<&str, BTreeSet<u32>> = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = |k: &str| format!("port[{i}].{k}");
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(bad(key("name"), format!("`{}` must be non-empty letters, digits, '-' or '_'", p.name)));
            }
            if !names.insert(p.name.as_str()) {
                return Err(bad(key("name"), format!("port `{}` is defined twice", p.name)));
            }
            if p.interface.is_empty() || p.interface.len() > IFNAMSIZ_MAX || p.interface.contains(['/', ' ']) {
                return Err(bad(key("interface"), format!("`{}` is not a valid interface name", p.interface)));
            }
            if p.queues.is_empty() {
                return Err(bad(key("queues"), "must list at least one queue".into()));
            }
            let seen = queues_of.entry(&p.interface).or_default();
            for q in &p.queues {
                if !seen.insert(*q) {
                    return Err(bad(key("queues"), format!("queue {q} of {} is used twice", p.interface)));
                }
            }
        }

        let mut ports = Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            let key = |k: &str| format!("port[{i}].{k}");
            let action = match (p.action.as_str(), &p.forward_to) {
                ("drop", None) => PortAction::Drop,
                ("reflect", None) => PortAction::Reflect,
                ("forward", Some(to)) => {
                    let Some(peer) = self.ports.iter().find(|q| &q.name == to) else {
                        return Err(bad(key("forward_to"), format!("no port named `{to}`")));
                    };
                    if peer.name == p.name {
                        return Err(bad(key("forward_to"), "a port cannot forward to itself (use action = \"reflect\")".into()));
                    }
                    // A forwarding pair shares one UMEM and one worker per queue, so frames move
                    // between the two sockets without a copy or a cross-thread handoff.
                    if peer.action != "forward" || peer.forward_to.as_deref() != Some(p.name.as_str()) {
                        return Err(bad(key("forward_to"), format!("port `{to}` must forward back to `{}`: forwarding is a two-port bump in the wire", p.name)));
                    }
                    if sorted(&peer.queues) != sorted(&p.queues) {
                        return Err(bad(key("queues"), format!("must equal the queues of its forwarding peer `{to}`")));
                    }
                    PortAction::Forward(to.clone())
                }
                ("forward", None) => return Err(bad(key("forward_to"), "action \"forward\" needs forward_to".into())),
                ("drop" | "reflect", Some(_)) => {
                    return Err(bad(key("forward_to"), format!("only valid with action = \"forward\", not \"{}\"", p.action)));
                }
                (other, _) => {
                    return Err(bad(key("action"), format!("unknown action `{other}` (expected drop, reflect or forward)")));
                }
            };
            let base = file.parent().unwrap_or(Path::new("."));
            let stages: Vec<StageSpec> = p
                .stages
                .iter()
                .map(|s| {
                    let mut s = s.clone();
                    s.resolve_paths(base);
                    s
                })
                .collect();
            let port = Port { name: p.name.clone(), interface: p.interface.clone(), queues: p.queues.clone(), action, stages };
            // Front ends and actions now, so a bad filter is a config error naming the stage;
            // the JIT runs when the dataplane starts (or `sluice check` compiles it).
            if let Err(e) = Pipeline::check(&port.pipeline(), &port.env()) {
                let at = e.stage_id().and_then(|id| port.stages.iter().position(|s| s.id == id));
                let key = match at {
                    Some(j) => format!("port[{i}].stage[{j}]"),
                    None => format!("port[{i}].stage"),
                };
                return Err(bad(key, e.to_string()));
            }
            ports.push(port);
        }

        Ok(Config {
            dataplane: Dataplane {
                batch_size: d.batch_size,
                frame_count: d.frame_count,
                frame_size: d.frame_size,
                rx_ring: d.rx_ring,
                tx_ring: d.tx_ring,
                zero_copy: d.zero_copy,
                attach: d.attach,
                need_wakeup: d.need_wakeup,
                cores,
                pass_local: d.pass_local,
                passthrough,
                firewall,
            },
            ports,
            daemon,
        })
    }
}

// ---- Daemon settings: control socket, metrics listener, privileges ---------------------------
// (`user` and `group` are top-level keys, so in TOML they come before the first table.)

/// How the daemon is operated, as opposed to what it does with packets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Daemon {
    /// `control.socket`: where the control socket is created; none = no control socket.
    pub control_socket: Option<PathBuf>,
    /// `metrics.listen`: where Prometheus metrics are served; none = not served.
    pub metrics_listen: Option<SocketAddr>,
    /// `user`: the user to become once interfaces and sockets are set up.
    pub user: Option<String>,
    /// `group`: the group to become (default: the user's primary group).
    pub group: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

/// Longest control socket path: sun_path's 107 bytes less what binding beside it adds.
const MAX_SOCKET_PATH: usize = 80;

fn daemon_settings(control: RawControl, metrics: RawMetrics, user: Option<String>, group: Option<String>) -> Result<Daemon, (String, String)> {
    let control_socket = match control.socket {
        None => None,
        Some(s) => {
            let key = || "control.socket".to_owned();
            let path = PathBuf::from(&s);
            if !path.is_absolute() {
                return Err((key(), format!("`{s}` must be an absolute path")));
            }
            if s.len() > MAX_SOCKET_PATH || path.file_name().is_none() {
                return Err((key(), format!("`{s}` must name a file in at most {MAX_SOCKET_PATH} bytes")));
            }
            Some(path)
        }
    };
    let metrics_listen = match metrics.listen {
        None => None,
        Some(s) => Some(parse_listen(&s).map_err(|r| ("metrics.listen".to_owned(), r))?),
    };
    for (key, name) in [("user", &user), ("group", &group)] {
        if let Some(n) = name
            && (n.is_empty() || n.len() > 32 || !n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err((key.to_owned(), format!("`{n}` is not a valid {key} name or id")));
        }
    }
    if group.is_some() && user.is_none() {
        return Err(("group".to_owned(), "needs `user` as well (the daemon changes group only when it changes user)".to_owned()));
    }
    Ok(Daemon { control_socket, metrics_listen, user, group })
}

/// `PORT` (on 127.0.0.1, the safe default) or `ADDRESS:PORT` (`[::1]:9100` for IPv6).
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => s.parse::<SocketAddr>().map_err(|_| format!("`{s}` is not PORT or ADDRESS:PORT (e.g. 9100 or 127.0.0.1:9100)"))?,
    };
    if addr.port() == 0 {
        return Err(format!("`{s}`: port 0 would pick a random port; give a fixed one"));
    }
    Ok(addr)
}

fn sorted(q: &[u32]) -> Vec<u32> {
    let mut v = q.to_vec();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORWARD: &str = r#"
        [dataplane]
        batch_size = 32
        cores = [0]
        passthrough = ["tcp/22", "icmp"]

        [[port]]
        name = "a"
        interface = "dut-a"
        action = "forward"
        forward_to = "b"

        [[port]]
        name = "b"
        interface = "dut-b"
        action = "forward"
        forward_to = "a"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: "t.toml".into(),
            message: one_line_toml_error(&e, text),
        })?;
        raw.validate(Path::new("t.toml"), 2)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn forward_pair_parses_with_defaults() {
        let c = parse(FORWARD).unwrap();
        assert_eq!(c.dataplane.batch_size, 32);
        assert_eq!(c.dataplane.frame_count, 2048);
        assert_eq!(c.dataplane.cores, vec![0]);
        assert_eq!(c.dataplane.passthrough, vec![PassRule { proto: 6, port: 22 }, PassRule { proto: 1, port: 0 }]);
        assert_eq!(c.ports[0].action, PortAction::Forward("b".into()));
        assert_eq!(c.ports[1].queues, vec![0]);
        assert_eq!(c.port("b").unwrap().interface, "dut-b");
        assert_eq!(c.dataplane.firewall, None);
    }

    #[test]
    fn the_firewall_file_is_relative_to_the_config() {
        let base = "[[port]]\nname='a'\ninterface='x'\naction='drop'\n";
        let text = format!("[dataplane]\nfirewall = 'fw.toml'\n{base}");
        let raw: RawConfig = toml::from_str(&text).unwrap();
        let c = raw.validate(Path::new("/etc/sluice/sluice.toml"), 2).unwrap();
        assert_eq!(c.dataplane.firewall.as_deref(), Some(Path::new("/etc/sluice/fw.toml")));
        let other = Dataplane { firewall: None, ..c.dataplane.clone() };
        assert!(c.dataplane.fixed_keys_changed(&other).is_empty() && c.dataplane != other);
        let other = Dataplane { frame_count: 8192, zero_copy: ZeroCopyPref::On, cores: vec![3], ..c.dataplane.clone() };
        assert_eq!(c.dataplane.fixed_keys_changed(&other), ["frame_count", "zero_copy"], "cores may change live");
        assert!(err(&format!("[dataplane]\nfirewall = ''\n{base}")).contains("dataplane.firewall: must name a file"));
    }

    #[test]
    fn unknown_key_names_the_key_and_position() {
        let e = err("[dataplane]\nbatch = 3\n[[port]]\nname='a'\ninterface='x'\naction='drop'\n");
        assert!(e.contains("t.toml: line 2, column 1: unknown field `batch`"), "{e}");
    }

    #[test]
    fn bad_values_name_key_and_reason() {
        let base = "[[port]]\nname='a'\ninterface='x'\naction='drop'\n";
        let cases = [
            ("[dataplane]\nframe_count = 1000\n", "dataplane.frame_count: 1000 must be a power of two"),
            ("[dataplane]\nframe_size = 3000\n", "dataplane.frame_size: 3000 must be 2048 or 4096"),
            ("[dataplane]\nbatch_size = 0\n", "dataplane.batch_size: 0 must be from 1"),
            ("[dataplane]\ncores = [7]\n", "dataplane.cores: core 7 does not exist"),
            ("[dataplane]\npassthrough = ['sctp/5']\n", "dataplane.passthrough[0]: `sctp/5`: unknown protocol"),
            ("[dataplane]\npassthrough = ['tcp/0']\n", "`0` is not a port"),
            ("[dataplane]\nzero_copy = 'maybe'\n", "unknown variant `maybe`"),
            ("[dataplane]\nframe_count = 512\nrx_ring = 1024\n", "smaller than rx_ring"),
        ];
        for (extra, want) in cases {
            let e = err(&format!("{extra}{base}"));
            assert!(e.contains(want), "{extra:?}: got {e}");
        }
    }

    #[test]
    fn port_errors_are_specific() {
        let cases = [
            ("[[port]]\nname='a'\ninterface='x'\naction='fwd'\n", "port[0].action: unknown action `fwd`"),
            ("[[port]]\nname='a'\ninterface='x'\naction='forward'\n", "port[0].forward_to: action \"forward\" needs forward_to"),
            ("[[port]]\nname='a'\ninterface='x'\naction='forward'\nforward_to='z'\n", "no port named `z`"),
            ("[[port]]\nname='a'\ninterface='x'\naction='forward'\nforward_to='a'\n", "cannot forward to itself"),
            ("[[port]]\nname='a'\ninterface='averyveryverylongname'\naction='drop'\n", "port[0].interface"),
            ("[[port]]\nname='a'\ninterface='x'\naction='drop'\n[[port]]\nname='a'\ninterface='y'\naction='drop'\n", "defined twice"),
            ("[[port]]\nname='a'\ninterface='x'\naction='drop'\n[[port]]\nname='b'\ninterface='x'\naction='drop'\n", "queue 0 of x is used twice"),
            ("[[port]]\nname='a'\ninterface='x'\naction='drop'\nforward_to='a'\n", "only valid with action = \"forward\""),
            ("[[port]]\nname='a'\ninterface='x'\naction='forward'\nforward_to='b'\n[[port]]\nname='b'\ninterface='y'\naction='drop'\n", "must forward back"),
            ("[[port]]\nname='a'\ninterface='x'\nqueues=[0,1]\naction='forward'\nforward_to='b'\n[[port]]\nname='b'\ninterface='y'\naction='forward'\nforward_to='a'\n", "must equal the queues"),
            ("[dataplane]\n", "at least one [[port]]"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: got {e}");
        }
    }

    #[test]
    fn daemon_settings_parse_and_are_checked() {
        let base = "[[port]]\nname='a'\ninterface='x'\naction='drop'\n";
        let c = parse(&format!("user = 'sluice'\ngroup = 'sluice'\n[control]\nsocket = '/run/sluice/control.sock'\n[metrics]\nlisten = '9100'\n{base}")).unwrap();
        assert_eq!(c.daemon.control_socket.as_deref(), Some(Path::new("/run/sluice/control.sock")));
        assert_eq!(c.daemon.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!((c.daemon.user.as_deref(), c.daemon.group.as_deref()), (Some("sluice"), Some("sluice")));
        assert_eq!(parse(base).unwrap().daemon, Daemon::default());
        assert_eq!(parse(&format!("[metrics]\nlisten = '[::1]:9100'\n{base}")).unwrap().daemon.metrics_listen, Some("[::1]:9100".parse().unwrap()));

        let cases = [
            ("[control]\nsocket = 'ctl.sock'\n", "control.socket: `ctl.sock` must be an absolute path"),
            ("[control]\npath = '/x'\n", "unknown field `path`"),
            ("[metrics]\nlisten = 'localhost'\n", "metrics.listen: `localhost` is not PORT or ADDRESS:PORT"),
            ("[metrics]\nlisten = '0'\n", "port 0 would pick a random port"),
            ("user = 'a b'\n", "user: `a b` is not a valid user name"),
            ("group = 'net'\n", "group: needs `user` as well"),
        ];
        for (extra, want) in cases {
            let e = err(&format!("{extra}{base}"));
            assert!(e.contains(want), "{extra:?}: got {e}");
        }
        let long = format!("[control]\nsocket = '/{}'\n{base}", "s".repeat(90));
        assert!(err(&long).contains("at most 80 bytes"));
    }

    #[test]
    fn stages_parse_in_order_with_their_errors_located() {
        let base = "[[port]]\nname='a'\ninterface='x'\naction='forward'\nforward_to='b'\n";
        let peer = "[[port]]\nname='b'\ninterface='y'\naction='forward'\nforward_to='a'\n";
        let c = parse(&format!(
            "{base}[[port.stage]]\nid='dns'\nfilter='udp dst port 53'\naction='reflect'\n\
             [[port.stage]]\nid='rest'\nfile='f.bpf'\nformat='asm'\naction='verdict'\n{peer}"
        ));
        // The file does not exist: the error names the port, the stage and the file.
        let e = c.unwrap_err().to_string();
        assert!(e.contains("t.toml: port[0].stage[1]: stage `rest`: read filter file f.bpf"), "{e}");

        let c = parse(&format!("{base}[[port.stage]]\nid='dns'\nfilter='udp dst port 53'\naction='forward'\nto='b'\n{peer}")).unwrap();
        let p = c.ports[0].pipeline();
        assert_eq!(p.stages.len(), 1);
        assert_eq!(p.default, DefaultAction::Forward("b".into()));
        assert_eq!(c.ports[1].pipeline().stages, vec![]);

        let cases = [
            ("[[port.stage]]\nid='x'\nfilter='udp port'\naction='drop'\n", "port[0].stage[0]: stage `x`: tcpdump expression"),
            ("[[port.stage]]\nid='x'\nfilter='udp'\naction='forward'\nto='c'\n", "port[0].stage[0]: stage `x`: to: port a can only forward to its peer `b`"),
            ("[[port.stage]]\nid='x'\nfilter='udp'\naction='drop'\n[[port.stage]]\nid='x'\nfilter='tcp'\naction='drop'\n", "port[0].stage: id: stage id `x` is used twice"),
            ("[[port.stage]]\nid='x'\nfilter='udp'\naction='jump'\n", "unknown action `jump`"),
        ];
        for (stage, want) in cases {
            let e = err(&format!("{base}{stage}{peer}"));
            assert!(e.contains(want), "{stage:?}: got {e}");
        }
    }

    #[test]
    fn pass_rules_round_trip() {
        for s in ["tcp/22", "udp/53", "tcp", "icmp", "icmp6", "proto/47"] {
            assert_eq!(s.parse::<PassRule>().unwrap().to_string(), s);
        }
        let cases = [
            ("sctp/5", "unknown protocol `sctp`"),
            ("tcp/0", "`0` is not a port 1-65535"),
            ("udp/70000", "`70000` is not a port"),
            ("tcp/", "`` is not a port"),
            ("icmp/3", "icmp has no ports"),
            ("icmp6/1", "icmp6 has no ports"),
            ("proto", "`proto` needs a number"),
            ("proto/256", "`256` is not a protocol number"),
            ("", "unknown protocol ``"),
            ("TCP/22", "unknown protocol `TCP`"),
        ];
        for (text, want) in cases {
            let err = text.parse::<PassRule>().unwrap_err();
            assert!(err.contains(want), "{text:?}: got {err}");
        }
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("appliance") && n.ends_with(".toml")) {
                let text = std::fs::read_to_string(&path).unwrap();
                let raw: RawConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                raw.validate(&path, 2).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1, "no appliance*.toml in {}", dir.display());
    }
}
