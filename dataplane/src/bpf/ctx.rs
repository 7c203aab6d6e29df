//! The run context a filter sees through r1, and the verdicts it returns.
//!
//! Filters are written against the kernel's `struct xdp_md` (six `__u32` fields), so C written
//! for XDP compiles unchanged. Like the kernel, sluice rewrites those 32-bit context loads at
//! load time into loads of the real 64-bit fields of [`XdpContext`]; the rewritten instruction
//! uses the internal mode [`crate::bpf::insn::MODE_CTX`] which no user program may contain.

/// `struct xdp_md` field offsets, as user programs address them.
pub mod xdp_md {
    pub const DATA: i16 = 0;
    pub const DATA_END: i16 = 4;
    pub const DATA_META: i16 = 8;
    pub const INGRESS_IFINDEX: i16 = 12;
    pub const RX_QUEUE_INDEX: i16 = 16;
    pub const EGRESS_IFINDEX: i16 = 20;
    /// Size of the user-visible struct.
    pub const SIZE: i16 = 24;
}

/// A context field, as named by a rewritten load (`off` of a `MODE_CTX` instruction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CtxField {
    Data = 0,
    DataEnd = 1,
    DataMeta = 2,
    IngressIfindex = 3,
    RxQueueIndex = 4,
    EgressIfindex = 5,
}

impl CtxField {
    /// The field a 32-bit load at `xdp_md` offset `off` reads, if any.
    pub fn from_xdp_md_offset(off: i16) -> Option<Self> {
        Some(match off {
            xdp_md::DATA => CtxField::Data,
            xdp_md::DATA_END => CtxField::DataEnd,
            xdp_md::DATA_META => CtxField::DataMeta,
            xdp_md::INGRESS_IFINDEX => CtxField::IngressIfindex,
            xdp_md::RX_QUEUE_INDEX => CtxField::RxQueueIndex,
            xdp_md::EGRESS_IFINDEX => CtxField::EgressIfindex,
            _ => return None,
        })
    }

    pub fn from_index(i: i16) -> Option<Self> {
        [
            CtxField::Data,
            CtxField::DataEnd,
            CtxField::DataMeta,
            CtxField::IngressIfindex,
            CtxField::RxQueueIndex,
            CtxField::EgressIfindex,
        ]
        .get(usize::try_from(i).ok()?)
        .copied()
    }

    /// Byte offset of the field in [`XdpContext`].
    pub fn offset(self) -> i32 {
        match self {
            CtxField::Data => 0,
            CtxField::DataEnd => 8,
            CtxField::DataMeta => 16,
            CtxField::IngressIfindex => 24,
            CtxField::RxQueueIndex => 28,
            CtxField::EgressIfindex => 32,
        }
    }

    /// Pointer fields are 64-bit, the rest 32-bit (zero-extended into the register).
    pub fn is_pointer(self) -> bool {
        matches!(self, CtxField::Data | CtxField::DataEnd | CtxField::DataMeta)
    }

    pub fn name(self) -> &'static str {
        match self {
            CtxField::Data => "data",
            CtxField::DataEnd => "data_end",
            CtxField::DataMeta => "data_meta",
            CtxField::IngressIfindex => "ingress_ifindex",
            CtxField::RxQueueIndex => "rx_queue_index",
            CtxField::EgressIfindex => "egress_ifindex",
        }
    }
}

/// What r1 points to while an XDP-kind program runs. Built on the worker's stack per packet.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct XdpContext {
    pub data: u64,
    pub data_end: u64,
    /// sluice reserves no metadata area: always equal to `data`.
    pub data_meta: u64,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
    _pad: u32,
}

impl XdpContext {
    pub fn new(packet: &mut [u8], ingress_ifindex: u32, rx_queue_index: u32) -> Self {
        let data = packet.as_mut_ptr() as u64;
        XdpContext {
            data,
            data_end: data + packet.len() as u64,
            data_meta: data,
            ingress_ifindex,
            rx_queue_index,
            egress_ifindex: 0,
            _pad: 0,
        }
    }

    pub fn field(&self, f: CtxField) -> u64 {
        match f {
            CtxField::Data => self.data,
            CtxField::DataEnd => self.data_end,
            CtxField::DataMeta => self.data_meta,
            CtxField::IngressIfindex => self.ingress_ifindex as u64,
            CtxField::RxQueueIndex => self.rx_queue_index as u64,
            CtxField::EgressIfindex => self.egress_ifindex as u64,
        }
    }
}

/// XDP verdicts (`enum xdp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    /// Maps a program's r0; values outside the enum are treated as the kernel does: aborted.
    pub fn from_r0(r0: u64) -> Self {
        match r0 {
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            _ => Verdict::Aborted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_match_the_struct_layout() {
        let mut pkt = [0u8; 60];
        let ctx = XdpContext::new(&mut pkt, 7, 3);
        let base = &ctx as *const XdpContext as usize;
        assert_eq!(std::mem::offset_of!(XdpContext, data_end), CtxField::DataEnd.offset() as usize);
        assert_eq!(std::mem::offset_of!(XdpContext, rx_queue_index), CtxField::RxQueueIndex.offset() as usize);
        assert_eq!(std::mem::offset_of!(XdpContext, egress_ifindex), CtxField::EgressIfindex.offset() as usize);
        assert_eq!(ctx.data_end - ctx.data, 60);
        assert_eq!(ctx.field(CtxField::RxQueueIndex), 3);
        assert!(base != 0);
    }

    #[test]
    fn xdp_md_offsets_map_to_fields() {
        for i in 0..6i16 {
            let f = CtxField::from_index(i).unwrap();
            assert_eq!(CtxField::from_xdp_md_offset(i * 4), Some(f));
        }
        assert_eq!(CtxField::from_xdp_md_offset(2), None);
        assert_eq!(CtxField::from_xdp_md_offset(24), None);
    }
}
