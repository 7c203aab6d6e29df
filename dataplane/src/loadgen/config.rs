//! Load-test settings: the `[traffic]` and `[run]` tables of `configs/loadtest.toml`, the
//! same fields as `sluice gen`'s flags. Every field is optional so a file and the flags can
//! be layered (flags win); [`Settings::resolve`] checks the result and turns it into a
//! [`GenPlan`] and a [`Traffic`].

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::xsk::ZeroCopy;

use super::run::{DEFAULT_LINGER, Engine, GenPlan, Rate};
use super::traffic::{AddrRange, FrameSize, PortRange, Proto, Traffic, TrafficError};
use super::xsk_tx::Limit;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Traffic(#[from] TrafficError),
}

/// What to send.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSettings {
    pub proto: Option<Proto>,
    pub src_mac: Option<String>,
    pub dst_mac: Option<String>,
    /// `A` or `A-B`.
    pub src_ip: Option<String>,
    pub dst_ip: Option<String>,
    /// `P` or `P-Q`.
    pub src_port: Option<String>,
    pub dst_port: Option<String>,
    pub vlan: Option<u16>,
    /// Frame length without FCS, or `imix`.
    pub size: Option<String>,
    pub flows: Option<u32>,
}

/// How to send it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    pub interface: Option<String>,
    pub engine: Option<Engine>,
    pub senders: Option<u32>,
    pub zero_copy: Option<ZeroCopy>,
    pub rate_pps: Option<f64>,
    pub rate_bps: Option<f64>,
    pub ramp_ms: Option<u64>,
    pub count: Option<u64>,
    pub duration_s: Option<f64>,
    pub rx_interface: Option<String>,
    pub rx_queues: Option<u32>,
    pub linger_ms: Option<u64>,
    pub pin: Option<bool>,
    pub realtime: Option<bool>,
}

/// Both tables.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub traffic: TrafficSettings,
    #[serde(default)]
    pub run: RunSettings,
}

macro_rules! layer {
    ($base:expr, $over:expr, $($f:ident),*) => {
        $( if $over.$f.is_some() { $base.$f = $over.$f.clone(); } )*
    };
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: p.clone(), source })?;
        toml::from_str(&text).map_err(|e| SettingsError::Parse { path: p, message: e.message().to_string() })
    }

    /// `self` with every field `over` sets replaced.
    pub fn layered(mut self, over: &Settings) -> Settings {
        let (t, o) = (&mut self.traffic, &over.traffic);
        layer!(t, o, proto, src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, vlan, size, flows);
        let (r, o) = (&mut self.run, &over.run);
        layer!(r, o, interface, engine, senders, zero_copy, rate_pps, rate_bps, ramp_ms, count, duration_s);
        layer!(r, o, rx_interface, rx_queues, linger_ms, pin, realtime);
        self
    }

    /// The plan and traffic these settings describe, with defaults for what is unset: UDP
    /// 10.0.0.1:1024 → 10.0.0.2:9, 64-byte frames, one flow, AF_XDP, full speed, until stopped.
    pub fn resolve(&self) -> Result<(GenPlan, Traffic), SettingsError> {
        let t = &self.traffic;
        let r = &self.run;
        let invalid = |field, reason: String| SettingsError::Invalid { field, reason };
        let ifname = r.interface.clone().ok_or_else(|| invalid("interface", "not given (-i IFACE)".into()))?;
        let mac = |field, v: &Option<String>, default: [u8; 6]| match v {
            Some(s) => parse_mac(s).ok_or_else(|| invalid(field, format!("{s:?} is not a mac address"))),
            None => Ok(default),
        };
        let parse = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_string());
        let traffic = Traffic {
            proto: t.proto.unwrap_or(Proto::Udp),
            src_mac: mac("src_mac", &t.src_mac, [0x02, 0, 0, 0, 0, 0x01])?,
            dst_mac: mac("dst_mac", &t.dst_mac, [0x02, 0, 0, 0, 0, 0x02])?,
            src_ip: parse(&t.src_ip, "10.0.0.1").parse::<AddrRange>()?,
            dst_ip: parse(&t.dst_ip, "10.0.0.2").parse::<AddrRange>()?,
            src_port: parse(&t.src_port, "1024").parse::<PortRange>()?,
            dst_port: parse(&t.dst_port, "9").parse::<PortRange>()?,
            vlan: t.vlan,
            size: parse(&t.size, "64").parse::<FrameSize>()?,
            flows: t.flows.unwrap_or(1),
        };
        let rate = match (r.rate_pps, r.rate_bps) {
            (Some(_), Some(_)) => return Err(invalid("rate", "give a packet rate or a bit rate, not both".into())),
            (Some(p), None) if p > 0.0 && p.is_finite() => Rate::Pps(p),
            (None, Some(b)) if b > 0.0 && b.is_finite() => Rate::Bps(b),
            (None, None) => Rate::Full,
            _ => return Err(invalid("rate", "must be a positive number".into())),
        };
        let duration = match r.duration_s {
            Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            Some(s) => return Err(invalid("duration_s", format!("{s} is not a positive number of seconds"))),
            None => None,
        };
        let senders = r.senders.unwrap_or(1);
        if !(1..=64).contains(&senders) {
            return Err(invalid("senders", format!("{senders} not in 1..=64")));
        }
        let plan = GenPlan {
            ifname,
            engine: r.engine.unwrap_or(Engine::Xsk),
            senders,
            zero_copy: r.zero_copy.unwrap_or_default(),
            rate,
            ramp: Duration::from_millis(r.ramp_ms.unwrap_or(0)),
            limit: Limit { count: r.count, duration },
            rx: r.rx_interface.clone().map(|i| (i, r.rx_queues.unwrap_or(1).max(1))),
            linger: r.linger_ms.map_or(DEFAULT_LINGER, Duration::from_millis),
            pin: r.pin.unwrap_or(true),
            realtime: r.realtime.unwrap_or(false),
        };
        Ok((plan, traffic))
    }
}

/// `02:00:00:00:00:01` as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_resolves() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/loadtest.toml");
        let s = Settings::load(&path).unwrap();
        let (plan, traffic) = s.resolve().unwrap();
        assert_eq!(plan.engine, Engine::Xsk);
        assert!(matches!(plan.rate, Rate::Pps(_)));
        super::super::traffic::FrameSet::build(&traffic).unwrap();
    }

    #[test]
    fn flags_override_the_file() {
        let file: Settings = toml::from_str(
            "[traffic]\nproto = \"tcp-syn\"\nsize = \"imix\"\n[run]\ninterface = \"a\"\nrate_pps = 1000.0\n",
        )
        .unwrap();
        let flags = Settings {
            run: RunSettings { interface: Some("b".into()), count: Some(5), ..Default::default() },
            traffic: TrafficSettings { src_ip: Some("fd00::1".into()), dst_ip: Some("fd00::2".into()), ..Default::default() },
        };
        let (plan, traffic) = file.layered(&flags).resolve().unwrap();
        assert_eq!(plan.ifname, "b");
        assert_eq!(plan.limit.count, Some(5));
        assert_eq!(plan.rate, Rate::Pps(1000.0));
        assert_eq!(traffic.proto, Proto::TcpSyn);
        assert_eq!(traffic.size, FrameSize::Imix);
        assert!(traffic.src_ip.first.is_ipv6());
    }

    #[test]
    fn bad_settings_name_the_field() {
        let err = |text: &str| toml::from_str::<Settings>(text).unwrap().resolve().unwrap_err().to_string();
        assert_eq!(err("[run]\nrate_pps = 1.0\n"), "interface: not given (-i IFACE)");
        assert_eq!(err("[run]\ninterface = \"a\"\nrate_pps = 1.0\nrate_bps = 2.0\n"), "rate: give a packet rate or a bit rate, not both");
        assert_eq!(err("[run]\ninterface = \"a\"\nrate_pps = -1.0\n"), "rate: must be a positive number");
        assert_eq!(err("[traffic]\nsrc_mac = \"zz\"\n[run]\ninterface = \"a\"\n"), "src_mac: \"zz\" is not a mac address");
        assert!(err("[traffic]\nsrc_ip = \"nope\"\n[run]\ninterface = \"a\"\n").starts_with("invalid address range"));
        assert!(toml::from_str::<Settings>("[run]\nbogus = 1\n").is_err());
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:00:01"), None);
    }
}
