//! The header fields firewall rules look at, read from an Ethernet frame in one pass.
//!
//! The reading is exactly the kernel stage's (`fw_parse` in `programs/xdp/steer.bpf.c`), so
//! the two paths agree on every frame: up to two VLAN tags (the outer tag's id is kept), IPv4
//! (options skipped; later fragments carry no L4 fields) or IPv6 (the first next header only,
//! extension headers are not walked); TCP/UDP ports when 4 bytes are there, TCP flags when 14
//! are, ICMP (ICMPv6 on IPv6) type and code when 2 are.

const ETH_HLEN: usize = 14;

pub const HAVE_VLAN: u8 = 0x01;
pub const HAVE_PORTS: u8 = 0x02;
pub const HAVE_TCP: u8 = 0x04;
pub const HAVE_ICMP: u8 = 0x08;

/// IP version of a frame: 0 = not IP.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// A frame's rule-relevant fields. Addresses are u128 (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packet {
    /// Frame length, capped at 65535.
    pub len: u16,
    pub vlan: u16,
    pub family: u8,
    pub proto: u8,
    /// `HAVE_*` bits: which of the optional fields were readable.
    pub have: u8,
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Offset of the L4 header (0 when there is none).
    pub l4: u16,
}

#[inline]
fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

impl Packet {
    #[inline]
    pub fn parse(frame: &[u8]) -> Packet {
        let mut p = Packet { len: frame.len().min(0xffff) as u16, ..Packet::default() };
        if frame.len() < ETH_HLEN {
            return p;
        }
        let mut ethertype = be16(frame, 12);
        let mut l3 = ETH_HLEN;
        for tag in 0..2 {
            if ethertype != 0x8100 && ethertype != 0x88a8 {
                break;
            }
            if l3 + 4 > frame.len() {
                return p;
            }
            if tag == 0 {
                p.vlan = be16(frame, l3) & 0x0fff;
                p.have |= HAVE_VLAN;
            }
            ethertype = be16(frame, l3 + 2);
            l3 += 4;
        }
        match ethertype {
            0x0800 => {
                if l3 + 20 > frame.len() {
                    return p;
                }
                let hlen = usize::from(frame[l3] & 0x0f) * 4;
                p.family = FAMILY_V4;
                p.proto = frame[l3 + 9];
                p.src = u128::from(u32::from_be_bytes([frame[l3 + 12], frame[l3 + 13], frame[l3 + 14], frame[l3 + 15]]));
                p.dst = u128::from(u32::from_be_bytes([frame[l3 + 16], frame[l3 + 17], frame[l3 + 18], frame[l3 + 19]]));
                if hlen < 20 || be16(frame, l3 + 6) & 0x1fff != 0 {
                    return p;
                }
                p.l4_fields(frame, l3 + hlen);
            }
            0x86dd => {
                if l3 + 40 > frame.len() {
                    return p;
                }
                p.family = FAMILY_V6;
                p.proto = frame[l3 + 6];
                let addr = |at: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&frame[at..at + 16]);
                    u128::from_be_bytes(b)
                };
                p.src = addr(l3 + 8);
                p.dst = addr(l3 + 24);
                p.l4_fields(frame, l3 + 40);
            }
            _ => {}
        }
        p
    }

    #[inline]
    fn l4_fields(&mut self, frame: &[u8], l4: usize) {
        if l4 <= frame.len() {
            self.l4 = l4.min(0xffff) as u16;
        }
        match self.proto {
            6 | 17 => {
                if l4 + 4 > frame.len() {
                    return;
                }
                self.sport = be16(frame, l4);
                self.dport = be16(frame, l4 + 2);
                self.have |= HAVE_PORTS;
                if self.proto == 6 && l4 + 14 <= frame.len() {
                    self.tcp_flags = frame[l4 + 13];
                    self.have |= HAVE_TCP;
                }
            }
            1 | 58 if (self.proto == 1) == (self.family == FAMILY_V4) => {
                if l4 + 2 > frame.len() {
                    return;
                }
                self.icmp_type = frame[l4];
                self.icmp_code = frame[l4 + 1];
                self.have |= HAVE_ICMP;
            }
            _ => {}
        }
    }

    pub fn has(&self, bit: u8) -> bool {
        self.have & bit != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, VlanId};

    #[test]
    fn tcp_over_two_vlan_tags() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 22, 1, 100)
            .syn()
            .write(&mut f, &[])
            .unwrap();
        let p = Packet::parse(&f);
        assert_eq!((p.family, p.proto, p.vlan, p.sport, p.dport), (4, 6, 10, 1234, 22));
        assert_eq!(p.src, 0x0a00_0001);
        assert_eq!(p.tcp_flags, 0x02);
        assert!(p.has(HAVE_VLAN) && p.has(HAVE_PORTS) && p.has(HAVE_TCP) && !p.has(HAVE_ICMP));
        assert_eq!(usize::from(p.len), f.len());
    }

    #[test]
    fn icmp6_and_truncations() {
        let mut f = Vec::new();
        let (s, d) = ([0xfd; 16], [0xfe; 16]);
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(s, d, 64).icmpv6_echo_request(1, 2).write(&mut f, b"x").unwrap();
        let p = Packet::parse(&f);
        assert_eq!((p.family, p.proto, p.icmp_type, p.icmp_code), (6, 58, 128, 0));
        assert_eq!(p.src, u128::from_be_bytes(s));
        // Cut right after the IPv6 header: addresses yes, no ICMP fields.
        let p = Packet::parse(&f[..54]);
        assert_eq!((p.family, p.have), (6, 0));
        // Not even an Ethernet header.
        assert_eq!(Packet::parse(&f[..10]), Packet { len: 10, ..Packet::default() });
    }

    #[test]
    fn later_fragments_have_no_ports() {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64).udp(53, 53).write(&mut f, b"q").unwrap();
        f[14 + 7] = 0x10; // fragment offset 16
        let p = Packet::parse(&f);
        assert_eq!((p.family, p.proto, p.have), (4, 17, 0));
    }
}
