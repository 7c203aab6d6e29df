//! Zero-copy views of packet headers, in the style of smoltcp's `wire` module: a view wraps a
//! byte buffer (`T: AsRef<[u8]>`, mutable accessors when `T: AsMut<[u8]>`), `new_checked`
//! proves the buffer is long enough once so the accessors cannot fail, and field positions live
//! in a private `field` module. Owns nothing but byte layout: no I/O, no allocation.
//!
//! Only Ethernet II is here so far; it is what the forward/drop/reflect actions need.

use std::fmt;

/// Why a buffer could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated {layer} header: {len} bytes, need {need}")]
    Truncated {
        layer: &'static str,
        len: usize,
        need: usize,
    },
}

/// A 48-bit MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    pub const BROADCAST: EthernetAddress = EthernetAddress([0xff; 6]);

    /// Group (multicast or broadcast) addresses have the low bit of the first octet set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The EtherType field. Kept open (a newtype, not an enum) because any value may appear on
/// the wire and the dataplane passes unknown ones through untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: EtherType = EtherType(0x0800);
    pub const ARP: EtherType = EtherType(0x0806);
    pub const VLAN: EtherType = EtherType(0x8100);
    pub const IPV6: EtherType = EtherType(0x86dd);
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04x}", self.0)
    }
}

mod field {
    use std::ops::{Range, RangeFrom};

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of an Ethernet II header without a VLAN tag.
pub const ETHERNET_HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame (no FCS: AF_XDP never delivers one).
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length; accessors may then panic. Use only when the
    /// length is already known to be at least [`ETHERNET_HEADER_LEN`].
    pub fn new_unchecked(buffer: T) -> EthernetFrame<T> {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<EthernetFrame<T>, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ETHERNET_HEADER_LEN {
            return Err(WireError::Truncated {
                layer: "ethernet",
                len,
                need: ETHERNET_HEADER_LEN,
            });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> EthernetAddress {
        EthernetAddress(mac_at(self.buffer.as_ref(), field::DESTINATION.start))
    }

    pub fn src_addr(&self) -> EthernetAddress {
        EthernetAddress(mac_at(self.buffer.as_ref(), field::SOURCE.start))
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }

    /// Exchanges source and destination addresses in place.
    pub fn swap_addrs(&mut self) {
        let (dst, rest) = self.buffer.as_mut().split_at_mut(field::SOURCE.start);
        dst.swap_with_slice(&mut rest[..field::SOURCE.len()]);
    }
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}

/// Swaps the source and destination MACs of `frame` in place, so it can be sent back where it
/// came from (the reflect action). Frames too short for an Ethernet header are an error.
#[inline]
pub fn swap_macs(frame: &mut [u8]) -> Result<(), WireError> {
    EthernetFrame::new_checked(frame)?.swap_addrs();
    Ok(())
}

/// A parsed Ethernet II header, for building frames and comparing them in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    pub const fn header_len(&self) -> usize {
        ETHERNET_HEADER_LEN
    }

    /// Writes the header into the first [`ETHERNET_HEADER_LEN`] bytes of `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut EthernetFrame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ARP request from 02:00:00:00:00:01 to broadcast, header plus the first payload bytes.
    static FRAME_BYTES: [u8; 18] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // source
        0x08, 0x06, // ethertype: ARP
        0x00, 0x01, 0x08, 0x00, // payload
    ];

    static SWAPPED_BYTES: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, //
        0x08, 0x06, //
        0x00, 0x01, 0x08, 0x00,
    ];

    fn repr() -> EthernetRepr {
        EthernetRepr {
            src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            dst_addr: EthernetAddress::BROADCAST,
            ethertype: EtherType::ARP,
        }
    }

    #[test]
    fn deconstruct() {
        let frame = EthernetFrame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(frame.src_addr(), EthernetAddress([0x02, 0, 0, 0, 0, 0x01]));
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload(), &[0x00, 0x01, 0x08, 0x00]);
        assert_eq!(EthernetRepr::parse(&frame), repr());
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 18];
        let mut frame = EthernetFrame::new_checked(&mut bytes[..]).unwrap();
        repr().emit(&mut frame);
        frame
            .payload_mut()
            .copy_from_slice(&[0x00, 0x01, 0x08, 0x00]);
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn swap_macs_golden() {
        let mut bytes = FRAME_BYTES;
        swap_macs(&mut bytes).unwrap();
        assert_eq!(bytes, SWAPPED_BYTES);
        swap_macs(&mut bytes).unwrap();
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn swap_macs_on_bare_header_leaves_nothing_else_touched() {
        let mut bytes = [0u8; ETHERNET_HEADER_LEN];
        bytes.copy_from_slice(&FRAME_BYTES[..ETHERNET_HEADER_LEN]);
        swap_macs(&mut bytes).unwrap();
        assert_eq!(bytes[..], SWAPPED_BYTES[..ETHERNET_HEADER_LEN]);
    }

    #[test]
    fn truncated_frames_are_rejected_and_untouched() {
        for len in 0..ETHERNET_HEADER_LEN {
            let mut bytes = FRAME_BYTES;
            let err = swap_macs(&mut bytes[..len]).unwrap_err();
            assert_eq!(
                err,
                WireError::Truncated {
                    layer: "ethernet",
                    len,
                    need: 14
                }
            );
            assert_eq!(bytes, FRAME_BYTES);
        }
        assert_eq!(
            WireError::Truncated {
                layer: "ethernet",
                len: 3,
                need: 14
            }
            .to_string(),
            "truncated ethernet header: 3 bytes, need 14"
        );
    }

    #[test]
    fn address_display_and_multicast() {
        assert_eq!(
            EthernetAddress([0x02, 0xab, 0, 0, 0x0c, 0xff]).to_string(),
            "02:ab:00:00:0c:ff"
        );
        assert!(EthernetAddress::BROADCAST.is_multicast());
        assert!(EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!EthernetAddress([0x02, 0, 0, 0, 0, 1]).is_multicast());
        assert_eq!(EtherType::IPV6.to_string(), "0x86dd");
    }
}
