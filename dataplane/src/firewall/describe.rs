//! Frames from one-line descriptions, for `sluice fw test --packet` and table-driven tests:
//!
//! ```text
//! tcp 10.0.0.1:1234 > 10.0.0.2:22 flags S
//! udp [fd00::1]:53 > [fd00::2]:5353 vlan 7 len 200
//! icmp 10.0.0.1 > 10.0.0.2 type 8 code 0
//! icmp6 fd00::1 > fd00::2 type 128
//! proto 47 10.0.0.1 > 10.0.0.2
//! 02 00 00 00 00 02 02 00 00 00 00 01 08 06 ...     (hex bytes, any spacing, `0x` optional)
//! ```
//! `flags` takes the letters F S R P A U E C; `len` pads the payload to that frame length;
//! `vlan` adds one 802.1Q tag. Checksums are correct.

use std::net::IpAddr;

use etherparse::{IpNumber, PacketBuilder, VlanId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("packet `{text}`: {reason}")]
pub struct DescribeError {
    pub text: String,
    pub reason: String,
}

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Builds the frame `text` describes.
pub fn frame(text: &str) -> Result<Vec<u8>, DescribeError> {
    let err = |reason: String| DescribeError { text: text.to_owned(), reason };
    let words: Vec<&str> = text.split_whitespace().collect();
    let Some(&first) = words.first() else { return Err(err("empty description".into())) };
    let (proto, rest) = match first {
        "tcp" => (6u8, &words[1..]),
        "udp" => (17, &words[1..]),
        "icmp" => (1, &words[1..]),
        "icmp6" => (58, &words[1..]),
        "proto" => {
            let n = words.get(1).and_then(|n| n.parse::<u8>().ok()).ok_or_else(|| err("`proto` needs a number 0-255".into()))?;
            (n, &words[2..])
        }
        _ => return hex(text).map_err(err),
    };
    let [src, arrow, dst, opts @ ..] = rest else {
        return Err(err("expected `SRC > DST` after the protocol".into()));
    };
    if *arrow != ">" {
        return Err(err(format!("expected `>` between the endpoints, found `{arrow}`")));
    }
    let with_ports = matches!(proto, 6 | 17);
    let (src, sport) = endpoint(src, with_ports).map_err(&err)?;
    let (dst, dport) = endpoint(dst, with_ports).map_err(&err)?;
    let mut flags = 0u8;
    let mut vlan = None;
    let mut len = None;
    let (mut icmp_type, mut icmp_code) = (if proto == 58 { 128 } else { 8 }, 0u8);
    let mut it = opts.iter();
    while let Some(&key) = it.next() {
        let value = it.next().ok_or_else(|| err(format!("`{key}` needs a value")))?;
        let num = |max: u32| value.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| err(format!("`{key} {value}`: not a number 0-{max}")));
        match key {
            "flags" if proto == 6 => flags = crate::firewall::config::parse_tcp_flags(value).map_err(&err)?.0,
            "vlan" => vlan = Some(num(4095)? as u16),
            "len" => len = Some(num(9000)? as usize),
            "type" if matches!(proto, 1 | 58) => icmp_type = num(255)? as u8,
            "code" if matches!(proto, 1 | 58) => icmp_code = num(255)? as u8,
            _ => return Err(err(format!("unknown option `{key}` for this protocol"))),
        }
    }
    let base = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let ip = |b: etherparse::PacketBuilderStep<etherparse::Ethernet2Header>| match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Ok(b.ipv4(s.octets(), d.octets(), 64)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Ok(b.ipv6(s.octets(), d.octets(), 64)),
        _ => Err(err("source and destination are of different IP versions".into())),
    };
    let l3 = match vlan {
        None => ip(base)?,
        Some(id) => {
            let id = VlanId::try_new(id).map_err(|e| err(e.to_string()))?;
            match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => base.single_vlan(id).ipv4(s.octets(), d.octets(), 64),
                (IpAddr::V6(s), IpAddr::V6(d)) => base.single_vlan(id).ipv6(s.octets(), d.octets(), 64),
                _ => return Err(err("source and destination are of different IP versions".into())),
            }
        }
    };
    // Each protocol's builder is its own type, so the writing is spelled out once per arm.
    macro_rules! emit {
        ($b:expr) => {{
            let b = $b;
            let payload = pad(len, 0, b.size(0));
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, &payload).map_err(|e| err(e.to_string()))?;
            out
        }};
    }
    let out = match proto {
        6 => {
            let mut t = l3.tcp(sport, dport, 1, 64240);
            for bit in (0..8).map(|i| 1u8 << i).filter(|b| flags & b != 0) {
                t = match bit {
                    0x01 => t.fin(),
                    0x02 => t.syn(),
                    0x04 => t.rst(),
                    0x08 => t.psh(),
                    0x10 => t.ack(1),
                    0x20 => t.urg(0),
                    0x40 => t.ece(),
                    _ => t.cwr(),
                };
            }
            emit!(t)
        }
        17 => emit!(l3.udp(sport, dport)),
        1 if src.is_ipv4() => emit!(l3.icmpv4_raw(icmp_type, icmp_code, [0, 1, 0, 1])),
        58 if src.is_ipv6() => emit!(l3.icmpv6_raw(icmp_type, icmp_code, [0, 1, 0, 1])),
        1 | 58 => return Err(err("icmp needs IPv4 addresses, icmp6 IPv6 ones".into())),
        n => {
            // Other protocols: the IP header only, with a few payload bytes.
            let header = 14 + if vlan.is_some() { 4 } else { 0 } + if src.is_ipv4() { 20 } else { 40 };
            let mut out = Vec::new();
            l3.write(&mut out, IpNumber(n), &pad(len, 4, header)).map_err(|e| err(e.to_string()))?;
            out
        }
    };
    Ok(out)
}

/// Payload bytes so the frame is `len` long (at least `min`), given `header` bytes before it.
fn pad(len: Option<usize>, min: usize, header: usize) -> Vec<u8> {
    vec![0x5a; len.map_or(min, |l| l.saturating_sub(header).max(min))]
}

/// `1.2.3.4:80`, `[fd00::1]:80`, or a bare address when `with_port` is false.
fn endpoint(text: &str, with_port: bool) -> Result<(IpAddr, u16), String> {
    if !with_port {
        let a = text.trim_start_matches('[').trim_end_matches(']');
        return a.parse().map(|a| (a, 0)).map_err(|_| format!("`{text}` is not an IP address"));
    }
    let (addr, port) = match text.strip_prefix('[') {
        Some(rest) => rest.split_once("]:").ok_or_else(|| format!("`{text}`: IPv6 endpoints are written [addr]:port"))?,
        None => text.rsplit_once(':').ok_or_else(|| format!("`{text}`: expected ADDR:PORT"))?,
    };
    let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
    let port = port.parse().map_err(|_| format!("`{port}` is not a port 0-65535"))?;
    Ok((addr, port))
}

fn hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .split_whitespace()
        .map(|w| w.trim_start_matches("0x").replace([':', ','], ""))
        .collect();
    if digits.is_empty() || !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("neither a packet description (tcp|udp|icmp|icmp6|proto N …) nor an even number of hex digits".into());
    }
    (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| e.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::packet::{HAVE_ICMP, HAVE_TCP, HAVE_VLAN, Packet};

    #[test]
    fn descriptions_become_the_frames_they_say() {
        let p = Packet::parse(&frame("tcp 10.0.0.1:1234 > 10.0.0.2:22 flags SA").unwrap());
        assert_eq!((p.family, p.proto, p.sport, p.dport, p.tcp_flags), (4, 6, 1234, 22, 0x12));
        assert!(p.has(HAVE_TCP));
        let f = frame("udp [fd00::1]:53 > [fd00::2]:5353 vlan 7 len 200").unwrap();
        let p = Packet::parse(&f);
        assert_eq!((f.len(), p.family, p.vlan, p.sport), (200, 6, 7, 53));
        assert!(p.has(HAVE_VLAN));
        let p = Packet::parse(&frame("icmp 10.0.0.1 > 10.0.0.2 type 3 code 1").unwrap());
        assert_eq!((p.icmp_type, p.icmp_code, p.has(HAVE_ICMP)), (3, 1, true));
        let p = Packet::parse(&frame("proto 47 10.0.0.1 > 10.0.0.2").unwrap());
        assert_eq!((p.proto, p.have), (47, 0));
        assert_eq!(frame("0x0102 03:04").unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn bad_descriptions_say_why() {
        for (text, want) in [
            ("tcp 10.0.0.1 > 10.0.0.2:22", "expected ADDR:PORT"),
            ("udp 10.0.0.1:1 -> 10.0.0.2:2", "expected `>`"),
            ("tcp 10.0.0.1:1 > [fd00::1]:2", "different IP versions"),
            ("udp 10.0.0.1:1 > 10.0.0.2:2 flags S", "unknown option `flags`"),
            ("icmp 10.0.0.1 > 10.0.0.2 type 300", "not a number 0-255"),
            ("zz", "neither a packet description"),
        ] {
            let e = frame(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
