//! The byte layouts of the steering maps' keys and values (mirrors of
//! `programs/xdp/steer.h`) and the passthrough rules that fill them. Pure logic, no syscalls.

use std::net::IpAddr;

/// Entries of the `xsks` XSKMAP (`STEER_MAX_QUEUES`): rx queues 0..64 can be steered.
pub const MAX_QUEUES: u32 = 64;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// A `passthrough` entry: packets of IP protocol `proto` whose TCP/UDP destination port is
/// `port` go to the kernel; `port` 0 means every packet of `proto`.
/// The text form (`tcp/22`, `icmp`, …) is parsed by `config::PassRule`, which validates a whole
/// config before anything is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassRule {
    /// IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, 58 = ICMPv6).
    pub proto: u8,
    /// Destination port in host byte order; 0 = every packet of the protocol.
    pub port: u16,
}

/// Why a passthrough rule cannot be put into the program's map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassRuleError {
    #[error("pass rule `proto/{proto}:{port}`: only tcp and udp rules have ports")]
    PortOnPortless { proto: u8, port: u16 },
}

impl PassRule {
    /// Rejects rules built by hand that the program can never match: a port on a protocol
    /// whose port the program does not read.
    pub fn validate(&self) -> Result<(), PassRuleError> {
        if self.port != 0 && self.proto != PROTO_TCP && self.proto != PROTO_UDP {
            return Err(PassRuleError::PortOnPortless { proto: self.proto, port: self.port });
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
/// - `dropped`: XDP_DROP by the firewall stage (its `fw_counters` say which rule), and for
///   frames too short for the VLAN tag, IP header or TCP/UDP port
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
