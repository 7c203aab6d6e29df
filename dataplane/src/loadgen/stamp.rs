//! The measurement stamp every generated frame ends with, and the checksum arithmetic that keeps
//! the frame valid when the stamp is written into a prepared template.
//!
//! Layout (16 bytes, the last bytes of the frame, big-endian):
//! ```text
//!  0      2      3      4             8                     16
//!  +------+------+------+-------------+---------------------+
//!  | 5C1E |stream| ver  |  seq (u32)  | tx time (u64, ns)   |
//!  +------+------+------+-------------+---------------------+
//! ```
//! At the end of the frame rather than after the headers, so a receiver finds it without
//! parsing VLAN tags, IP versions or L4 headers. The time is CLOCK_MONOTONIC (what the live-frames
//! program's `bpf_ktime_get_ns` reads), comparable because sender and receiver share a host. The
//! sequence number is 32 bits on the wire and widened back to 64 by the receiver.
//!
//! Templates are built with the stamp zeroed and the L4 checksum computed over that, so writing
//! a stamp only adds its 16-bit words to the checksum (RFC 1624); a stamp at an odd offset from
//! the L4 header adds them byte-swapped (RFC 1071's byte-order independence).

/// Bytes of the stamp.
pub const STAMP_LEN: usize = 16;
/// First two bytes of every stamp.
pub const MAGIC: u16 = 0x5c1e;
/// Stamp layout version.
pub const VERSION: u8 = 1;

/// A stamp read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stream: u8,
    pub seq: u32,
    pub tx_ns: u64,
}

impl Stamp {
    pub fn to_bytes(self) -> [u8; STAMP_LEN] {
        let mut b = [0u8; STAMP_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = self.stream;
        b[3] = VERSION;
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.tx_ns.to_be_bytes());
        b
    }

    /// The stamp at the end of `frame`, if it ends with one.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<Stamp> {
        let b = frame.get(frame.len().checked_sub(STAMP_LEN)?..)?;
        if u16::from_be_bytes([b[0], b[1]]) != MAGIC || b[3] != VERSION {
            return None;
        }
        Some(Stamp {
            stream: b[2],
            seq: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            tx_ns: u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        })
    }
}

/// Where a template's checksum lives and how writing the stamp affects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsumFix {
    /// Offset of the 16-bit L4 checksum field in the frame.
    pub field: usize,
    /// The stamp starts an odd number of bytes after the L4 header.
    pub odd: bool,
    /// UDP: a computed 0 is sent as 0xffff (0 means "no checksum").
    pub udp: bool,
}

/// Writes `stamp` over the (zeroed) last [`STAMP_LEN`] bytes of `frame` and adjusts the L4
/// checksum. `frame` must be a copy of a template built with a zero stamp.
#[inline]
pub fn write(frame: &mut [u8], stamp: Stamp, fix: Option<CsumFix>) {
    let Some(at) = frame.len().checked_sub(STAMP_LEN) else {
        return;
    };
    let bytes = stamp.to_bytes();
    frame[at..].copy_from_slice(&bytes);
    let Some(fix) = fix else { return };
    let Some(field) = frame.get(fix.field..fix.field + 2) else {
        return;
    };
    let old = u16::from_be_bytes([field[0], field[1]]);
    let mut add = words_sum(&bytes);
    if fix.odd {
        add = u32::from(fold(add).swap_bytes());
    }
    let mut new = !fold(u32::from(!old) + add);
    if fix.udp && new == 0 {
        new = 0xffff;
    }
    frame[fix.field..fix.field + 2].copy_from_slice(&new.to_be_bytes());
}

/// The sum of the big-endian 16-bit words of `b` (an even length), unfolded.
#[inline]
fn words_sum(b: &[u8]) -> u32 {
    b.chunks_exact(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum()
}

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline]
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the stamp, shared with `bpf_ktime_get_ns`.
#[inline]
pub fn mono_ns() -> u64 {
    super::sys::clock_monotonic_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_and_rejects_other_data() {
        let s = Stamp { stream: 3, seq: 0xdead_beef, tx_ns: 0x0102_0304_0506_0708 };
        let mut frame = vec![0xaa; 40];
        frame.extend_from_slice(&s.to_bytes());
        assert_eq!(Stamp::parse(&frame), Some(s));
        assert_eq!(&s.to_bytes()[..4], &[0x5c, 0x1e, 3, 1]);
        assert_eq!(Stamp::parse(&frame[..frame.len() - 1]), None);
        assert_eq!(Stamp::parse(&[0u8; 15]), None);
        let mut bad = s.to_bytes();
        bad[3] = 2;
        assert_eq!(Stamp::parse(&bad), None);
    }

    #[test]
    fn mono_clock_advances() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(a > 0 && b >= a);
    }
}
