//! The byte layouts of the steering maps' keys and values (mirrors of
//! `programs/xdp/steer.h`) and the passthrough rules that fill them. Pure logic, no syscalls.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Entries of the `xsks` XSKMAP (`STEER_MAX_QUEUES`): rx queues 0..64 can be steered.
pub const MAX_QUEUES: u32 = 64;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// A `passthrough` entry: packets of IP protocol `proto` whose TCP/UDP destination port is
/// `port` go to the kernel; `port` 0 means every packet of `proto`.
///
/// Parsed from `tcp/22`, `udp/53`, `tcp`, `udp` (whole protocol), `icmp`, `icmp6`, `proto/47`
/// (same syntax as the config file's `passthrough` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassRule {
    /// IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMPv6).
    pub proto: u8,
    /// Destination port in host byte order; 0 = every packet of the protocol.
    pub port: u16,
}

/// Why a passthrough rule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassRuleError {
    #[error("pass rule `{rule}`: unknown protocol `{name}` (expected tcp, udp, icmp, icmp6 or proto/N)")]
    UnknownProtocol { rule: String, name: String },
    #[error("pass rule `{rule}`: `{value}` is not a protocol number 0-255")]
    BadProtocol { rule: String, value: String },
    #[error("pass rule `{rule}`: `proto` needs a number, e.g. `proto/47`")]
    MissingProtocol { rule: String },
    #[error("pass rule `{rule}`: `{value}` is not a port 1-65535")]
    BadPort { rule: String, value: String },
    #[error("pass rule `{rule}`: {name} has no ports")]
    NoPorts { rule: String, name: String },
    #[error("pass rule `{rule}`: only tcp and udp rules have ports")]
    PortOnPortless { rule: String },
}

impl FromStr for PassRule {
    type Err = PassRuleError;

    fn from_str(rule: &str) -> Result<Self, PassRuleError> {
        let (name, port) = match rule.split_once('/') {
            Some((name, port)) => (name, Some(port)),
            None => (rule, None),
        };
        let proto = match name {
            "tcp" => PROTO_TCP,
            "udp" => PROTO_UDP,
            "icmp" | "icmp6" => {
                return match port {
                    None => Ok(PassRule { proto: if name == "icmp" { PROTO_ICMP } else { PROTO_ICMPV6 }, port: 0 }),
                    Some(_) => Err(PassRuleError::NoPorts { rule: rule.to_owned(), name: name.to_owned() }),
                };
            }
            "proto" => {
                let value = port.ok_or_else(|| PassRuleError::MissingProtocol { rule: rule.to_owned() })?;
                let proto = value
                    .parse::<u8>()
                    .map_err(|_| PassRuleError::BadProtocol { rule: rule.to_owned(), value: value.to_owned() })?;
                return Ok(PassRule { proto, port: 0 });
            }
            _ => return Err(PassRuleError::UnknownProtocol { rule: rule.to_owned(), name: name.to_owned() }),
        };
        let port = match port {
            None => 0,
            Some(value) => match value.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(PassRuleError::BadPort { rule: rule.to_owned(), value: value.to_owned() }),
            },
        };
        Ok(PassRule { proto, port })
    }
}

impl fmt::Display for PassRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.proto {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            PROTO_ICMP => return f.write_str("icmp"),
            PROTO_ICMPV6 => return f.write_str("icmp6"),
            n => return write!(f, "proto/{n}"),
        };
        if self.port == 0 { f.write_str(name) } else { write!(f, "{name}/{}", self.port) }
    }
}

impl PassRule {
    /// Rejects rules built by hand that the program can never match: a port on a protocol
    /// whose port the program does not read.
    pub fn validate(&self) -> Result<(), PassRuleError> {
        if self.port != 0 && self.proto != PROTO_TCP && self.proto != PROTO_UDP {
            return Err(PassRuleError::PortOnPortless { rule: format!("proto/{}:{}", self.proto, self.port) });
        }
        Ok(())
    }

    /// `struct steer_pass_key { u8 proto; u8 pad; __be16 port; }`: the port in network byte
    /// order, as the program compares it with the packet's bytes without swapping.
    pub fn key(&self) -> [u8; 4] {
        let [hi, lo] = self.port.to_be_bytes();
        [self.proto, 0, hi, lo]
    }
}

/// `struct steer_addr_key { u8 addr[16]; u8 family; u8 pad[3]; }`: IPv4 in the first four
/// bytes (network order) with family 4, IPv6 in all sixteen with family 6.
pub fn addr_key(addr: IpAddr) -> [u8; 20] {
    let mut key = [0u8; 20];
    match addr {
        IpAddr::V4(v4) => {
            key[..4].copy_from_slice(&v4.octets());
            key[16] = 4;
        }
        IpAddr::V6(v6) => {
            key[..16].copy_from_slice(&v6.octets());
            key[16] = 6;
        }
    }
    key
}

/// Totals of the per-CPU `counters` entry (`struct steer_counters`), summed over CPUs.
///
/// - `seen`: every frame the program ran on;
/// - `redirected`: handed to the AF_XDP socket of the frame's rx queue (XDP_REDIRECT). A frame
///   the socket's full rx ring then refuses is still counted here (the kernel drops it and
///   counts it in the socket's own statistics);
/// - `passed`: given to the kernel stack (XDP_PASS): runts, ARP, IPv6 neighbour discovery,
///   local destinations, passthrough matches, and frames for queues without a socket;
/// - `dropped`: XDP_DROP for frames too short for the VLAN tag, IP header or TCP/UDP port
///   their headers announce, and IPv4 headers with IHL < 5.
///
/// `seen == redirected + passed + dropped` once no frame is in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SteerCounters {
    pub seen: u64,
    pub redirected: u64,
    pub passed: u64,
    pub dropped: u64,
}

impl SteerCounters {
    /// Sums the per-CPU values of `struct steer_counters` (four u64 in field order).
    pub fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a [u64; 4]>) -> SteerCounters {
        per_cpu.into_iter().fold(SteerCounters::default(), |acc, &[seen, redirected, passed, dropped]| SteerCounters {
            seen: acc.seen.wrapping_add(seen),
            redirected: acc.redirected.wrapping_add(redirected),
            passed: acc.passed.wrapping_add(passed),
            dropped: acc.dropped.wrapping_add(dropped),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rules_parse_and_round_trip() {
        let cases = [
            ("tcp/22", 6, 22),
            ("udp/53", 17, 53),
            ("tcp", 6, 0),
            ("udp", 17, 0),
            ("icmp", 1, 0),
            ("icmp6", 58, 0),
            ("proto/47", 47, 0),
            ("udp/65535", 17, 65535),
        ];
        for (text, proto, port) in cases {
            let rule: PassRule = text.parse().unwrap();
            assert_eq!(rule, PassRule { proto, port }, "{text}");
            assert_eq!(rule.to_string(), text);
            assert_eq!(rule.validate(), Ok(()));
        }
    }

    #[test]
    fn bad_rules_say_why() {
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
            let err = text.parse::<PassRule>().unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: got {err}");
            assert!(err.starts_with(&format!("pass rule `{text}`")), "{err}");
        }
    }

    #[test]
    fn hand_built_port_on_icmp_is_rejected() {
        let err = PassRule { proto: 1, port: 7 }.validate().unwrap_err();
        assert_eq!(err.to_string(), "pass rule `proto/1:7`: only tcp and udp rules have ports");
    }

    #[test]
    fn keys_match_the_c_layout() {
        assert_eq!(PassRule { proto: 6, port: 22 }.key(), [6, 0, 0x00, 0x16]);
        assert_eq!(PassRule { proto: 17, port: 0x1234 }.key(), [17, 0, 0x12, 0x34]);
        assert_eq!(PassRule { proto: 1, port: 0 }.key(), [1, 0, 0, 0]);

        let v4 = addr_key(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(v4[..4], [10, 1, 2, 3]);
        assert_eq!(v4[4..16], [0; 12]);
        assert_eq!(v4[16..], [4, 0, 0, 0]);

        let v6 = addr_key(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)));
        assert_eq!(v6[..2], [0xfe, 0x80]);
        assert_eq!(v6[15], 1);
        assert_eq!(v6[16..], [6, 0, 0, 0]);
    }

    #[test]
    fn counters_sum_over_cpus() {
        let per_cpu = [[5, 1, 3, 1], [2, 0, 2, 0], [0, 0, 0, 0]];
        let total = SteerCounters::sum(per_cpu.iter());
        assert_eq!(total, SteerCounters { seen: 7, redirected: 1, passed: 5, dropped: 1 });
        assert_eq!(SteerCounters::sum([[u64::MAX, 0, 0, 0], [2, 0, 0, 0]].iter()).seen, 1);
    }
}
