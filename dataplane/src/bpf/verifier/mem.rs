//! Memory accesses (loads, stores, atomics) and helper arguments: every byte touched must lie
//! inside the memory the pointer's type names, stack bytes must be written before they are
//! read, and pointers may be kept on the stack only (never stored into packet or map memory).

use super::exec::{Checker, MAX_OFF};
use super::protos::{Arg, Proto, Ret};
use super::scalar::Scalar;
use super::state::{Byte, Kind, Reg, State};
use super::{Reason, Region};
use crate::bpf::check::AtomicOp;
use crate::bpf::insn::{Insn, STACK_SIZE};

/// How an access uses memory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Write,
    /// Read-modify-write.
    Atomic,
}

impl Use {
    fn word(self) -> &'static str {
        match self {
            Use::Read => "read from",
            Use::Write => "write to",
            Use::Atomic => "atomic access to",
        }
    }
}

/// `off` plus the pointer's variable part, for messages.
fn off_text(p: &Reg, off: i64) -> String {
    match p.var.as_const() {
        Some(c) => (off + c as i64).to_string(),
        None => format!("{off}+{}", p.var),
    }
}

impl Checker<'_> {
    /// Checks that `size` bytes at `ptr + off` may be used as `u`; returns the region.
    /// Stack reads also require every byte to be initialised.
    fn check_range(&self, st: &State, reg: u8, ptr: &Reg, off: i64, size: u64, u: Use) -> Result<Region, Reason> {
        let total = ptr.off as i128 + off as i128;
        let (vmin, vmax) = (ptr.var.smin as i128, ptr.var.smax as i128);
        match ptr.kind {
            Kind::Uninit => Err(Reason::UninitReg(reg)),
            Kind::Scalar | Kind::MapPtr { .. } | Kind::PktEnd => {
                Err(Reason::InvalidMem { reg, kind: ptr.kind.name() })
            }
            Kind::MapValueOrNull { .. } | Kind::RingMemOrNull { .. } => Err(Reason::NullDeref(reg)),
            Kind::Ctx => Err(Reason::CtxAccess(format!(
                "{}-byte {} R{reg}+{off}: only 32-bit loads of xdp_md fields through the unmodified ctx pointer",
                size,
                if u == Use::Read { "load from" } else { "store to" }
            ))),
            Kind::Pkt => {
                if u == Use::Atomic {
                    return Err(Reason::Atomic(format!("atomic operation on packet memory (R{reg}) is not allowed")));
                }
                if ptr.var.smin < 0 {
                    let detail = format!("variable offset {} may be negative: use an unsigned index or check it", ptr.var);
                    return Err(Reason::PacketOffset { reg, detail });
                }
                if total < 0 {
                    return Err(Reason::PacketRange { reg, off: total as i64, size, range: 0 });
                }
                let end = total + size as i128;
                let by_range = ptr.id != 0 && end <= ptr.range as i128;
                let by_min = vmax + end <= st.pkt_min as i128;
                if by_range || by_min {
                    Ok(Region::Packet)
                } else {
                    let range = if ptr.id != 0 { ptr.range as i64 } else { st.pkt_min as i64 - vmax as i64 };
                    Err(Reason::PacketRange { reg, off: total as i64, size, range })
                }
            }
            Kind::MapValue { map } => {
                let shape = self.env.maps.get(map as usize).ok_or_else(|| Reason::Map(format!("map index {map} does not exist")))?;
                if u != Use::Read && shape.read_only {
                    return Err(Reason::ReadOnlyMap(map));
                }
                let limit = shape.value_size;
                if total + vmin < 0 || total + vmax + size as i128 > limit as i128 {
                    let what = "map value";
                    return Err(Reason::ValueRange { reg, what, off: off_text(ptr, total as i64), size, limit });
                }
                Ok(Region::MapValue)
            }
            Kind::RingMem { size: limit } => {
                if total + vmin < 0 || total + vmax + size as i128 > limit as i128 {
                    let what = "ring buffer reservation";
                    return Err(Reason::ValueRange { reg, what, off: off_text(ptr, total as i64), size, limit });
                }
                Ok(Region::RingBuf)
            }
            Kind::Stack { frame } => {
                let (lo, hi) = (total + vmin, total + vmax + size as i128);
                if lo < -(STACK_SIZE as i128) || hi > 0 {
                    let what = if u == Use::Read { "read from" } else { u.word() };
                    return Err(Reason::StackRange { reg, what, off: off_text(ptr, total as i64), size });
                }
                if u != Use::Write {
                    let fr = &st.frames[frame as usize];
                    for b in lo as i64..hi as i64 {
                        if fr.byte(b) == Byte::Invalid {
                            return Err(Reason::StackUninit { reg, off: off_text(ptr, total as i64), size, byte: b });
                        }
                    }
                }
                Ok(Region::Stack)
            }
        }
    }

    pub(super) fn load(&mut self, st: &mut State, pc: usize, base: u8, off: i16, size: u8, signed: bool) -> Result<Reg, Reason> {
        let p = *st.reg(base);
        let region = self.check_range(st, base, &p, off as i64, size as u64, Use::Read)?;
        self.note(pc, Some(region));
        let mut v = Reg::scalar(Scalar::loaded(size, signed));
        if let (Kind::Stack { frame }, Some(c)) = (p.kind, p.var.as_const()) {
            let a = p.off + off as i64 + c as i64;
            let fr = &st.frames[frame as usize];
            if let Some(sp) = fr.slot(a).and_then(|s| s.spilled()) {
                if a % 8 == 0 && size == 8 {
                    v = *sp;
                } else if a % 8 == 0 && sp.kind == Kind::Scalar && !signed {
                    v = Reg::scalar(sp.var.truncate(size));
                }
            }
        }
        Ok(v)
    }

    pub(super) fn store(&mut self, st: &mut State, pc: usize, base: u8, off: i16, size: u8, v: &Reg) -> Result<(), Reason> {
        let p = *st.reg(base);
        let into = match p.kind {
            Kind::Pkt => Some("packet"),
            Kind::MapValue { .. } => Some("map value"),
            Kind::RingMem { .. } => Some("ring buffer memory"),
            _ => None,
        };
        let region = self.check_range(st, base, &p, off as i64, size as u64, Use::Write)?;
        if let (Some(into), true) = (into, v.kind.is_pointer()) {
            return Err(Reason::PointerLeak { reg: base, into });
        }
        self.note(pc, Some(region));
        if let Kind::Stack { frame } = p.kind {
            let fr = &mut st.frames[frame as usize];
            match p.var.as_const() {
                Some(c) => {
                    let a = p.off + off as i64 + c as i64;
                    if v.kind.is_pointer() && (size != 8 || a % 8 != 0) {
                        return Err(Reason::PointerSpill(format!(
                            "invalid spill of a {} pointer: {size} bytes at fp{a} (pointers are spilled whole, 8-byte aligned)",
                            v.kind.name()
                        )));
                    }
                    if size == 8 && a % 8 == 0 {
                        let (slot, _) = fr.slot_mut(a);
                        slot.bytes = [Byte::Spill; 8];
                        slot.spill = if v.kind == Kind::Scalar { Reg { id: v.id, ..Reg::scalar(v.var) } } else { *v };
                    } else {
                        for b in a..a + size as i64 {
                            let (slot, i) = fr.slot_mut(b);
                            if slot.spilled().is_some() {
                                slot.bytes = [Byte::Misc; 8];
                            }
                            slot.bytes[i] = Byte::Misc;
                        }
                    }
                }
                None => {
                    if v.kind.is_pointer() {
                        return Err(Reason::PointerSpill(format!(
                            "spill of a {} pointer at a variable stack offset",
                            v.kind.name()
                        )));
                    }
                    // Which bytes are written is unknown: none becomes initialised, and any
                    // spilled register the write may hit is no longer known.
                    let lo = p.off + off as i64 + p.var.smin;
                    let hi = p.off + off as i64 + p.var.smax + size as i64;
                    for b in lo..hi {
                        let (slot, _) = fr.slot_mut(b);
                        if slot.spilled().is_some() {
                            slot.bytes = [Byte::Misc; 8];
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn atomic(&mut self, st: &mut State, pc: usize, insn: Insn, wide: bool, op: AtomicOp) -> Result<(), Reason> {
        let (d, s) = (insn.dst, insn.src);
        let size: u8 = if wide { 8 } else { 4 };
        let v = *st.reg(s);
        if !v.is_init() {
            return Err(Reason::UninitReg(s));
        }
        if op == AtomicOp::Cmpxchg && !st.reg(0).is_init() {
            return Err(Reason::UninitReg(0));
        }
        let p = *st.reg(d);
        if v.kind.is_pointer() || (op == AtomicOp::Cmpxchg && st.reg(0).kind.is_pointer()) {
            return Err(Reason::PointerLeak { reg: d, into: "memory through an atomic operation" });
        }
        let region = self.check_range(st, d, &p, insn.off as i64, size as u64, Use::Atomic)?;
        self.note(pc, Some(region));
        if let Kind::Stack { frame } = p.kind {
            let Some(c) = p.var.as_const() else {
                return Err(Reason::Atomic("atomic operation on the stack needs a constant offset".into()));
            };
            let a = p.off + insn.off as i64 + c as i64;
            let fr = &mut st.frames[frame as usize];
            for b in a..a + size as i64 {
                let (slot, i) = fr.slot_mut(b);
                if let Some(sp) = slot.spilled() {
                    if sp.kind.is_pointer() {
                        return Err(Reason::Atomic(format!("atomic operation on a spilled {} pointer", sp.kind.name())));
                    }
                    slot.bytes = [Byte::Misc; 8];
                }
                slot.bytes[i] = Byte::Misc;
            }
        }
        let old = Reg::scalar(Scalar::loaded(size, false));
        if op == AtomicOp::Cmpxchg {
            st.set(0, old);
        } else if op.fetches() {
            st.set(s, old);
        }
        Ok(())
    }

    /// Checks the argument registers against `proto`; returns what r0 will hold. Releases a
    /// ring-buffer reservation passed to submit/discard.
    pub(super) fn check_args(&mut self, st: &mut State, proto: &Proto) -> Result<Reg, (Reason, Vec<u8>)> {
        let mut map: Option<u32> = None;
        let mut alloc = 0u32;
        for (k, arg) in proto.args.iter().enumerate() {
            let r = k as u8 + 1;
            let v = *st.reg(r);
            let bad = |want: &str| {
                (Reason::HelperArg { helper: proto.name, arg: r, want: want.to_string(), got: v.to_string() }, vec![r])
            };
            if !matches!(arg, Arg::None | Arg::Anything) && !v.is_init() {
                return Err((Reason::UninitReg(r), vec![r]));
            }
            match *arg {
                Arg::Anything => {
                    // Passed on unchecked: a stack pointer here may be read (as a string)
                    // past anything written.
                    self.stack_escapes |= matches!(v.kind, Kind::Stack { .. });
                }
                Arg::None | Arg::Size | Arg::SizeOrZero => {}
                Arg::Scalar => {
                    if v.kind != Kind::Scalar {
                        return Err(bad("a scalar"));
                    }
                }
                Arg::Ctx => {
                    if v.kind != Kind::Ctx || v.off != 0 {
                        return Err(bad("the ctx pointer"));
                    }
                }
                Arg::Map(which) => {
                    let Kind::MapPtr { map: m } = v.kind else { return Err(bad(which.describe())) };
                    let kind = self.env.maps.get(m as usize).map(|s| s.kind);
                    if !kind.is_some_and(|k| which.accepts(k)) || v.off != 0 {
                        return Err(bad(which.describe()));
                    }
                    map = Some(m);
                }
                Arg::MapKey | Arg::MapValue => {
                    let shape = map.and_then(|m| self.env.maps.get(m as usize)).copied();
                    let Some(shape) = shape else { return Err(bad("a map argument before it")) };
                    let size = if *arg == Arg::MapKey { shape.key_size } else { shape.value_size };
                    let want = format!("a pointer to {size} initialised bytes");
                    if !matches!(v.kind, Kind::Stack { .. } | Kind::MapValue { .. } | Kind::Pkt) {
                        return Err(bad(&want));
                    }
                    self.check_range(st, r, &v, 0, size as u64, Use::Read).map_err(|e| (e, vec![r]))?;
                }
                Arg::Mem | Arg::MemOrNull => {
                    let size = *st.reg(r + 1);
                    let zero_ok = *arg == Arg::MemOrNull;
                    if !size.is_init() {
                        return Err((Reason::UninitReg(r + 1), vec![r + 1]));
                    }
                    if size.kind != Kind::Scalar || size.var.umax > MAX_OFF as u64 {
                        let want = "a bounded size";
                        return Err((
                            Reason::HelperArg { helper: proto.name, arg: r + 1, want: want.into(), got: size.to_string() },
                            vec![r + 1],
                        ));
                    }
                    if zero_ok && v.kind == Kind::Scalar && v.var.as_const() == Some(0) {
                        if size.var.as_const() != Some(0) {
                            return Err(bad("memory (a null pointer needs a size of 0)"));
                        }
                        continue;
                    }
                    if size.var.umin == 0 && !zero_ok {
                        let want = "a size that is not 0";
                        return Err((
                            Reason::HelperArg { helper: proto.name, arg: r + 1, want: want.into(), got: size.to_string() },
                            vec![r + 1],
                        ));
                    }
                    if !matches!(v.kind, Kind::Stack { .. } | Kind::MapValue { .. } | Kind::Pkt | Kind::RingMem { .. }) {
                        return Err(bad("a pointer to readable memory"));
                    }
                    if size.var.umax > 0 {
                        self.check_range(st, r, &v, 0, size.var.umax, Use::Read).map_err(|e| (e, vec![r, r + 1]))?;
                    }
                }
                Arg::AllocSize => match (v.kind, v.var.as_const()) {
                    (Kind::Scalar, Some(n)) if n > 0 && n < MAX_OFF as u64 => alloc = n as u32,
                    _ => return Err(bad("a constant size")),
                },
                Arg::RingMem => {
                    let open = st.refs.contains(&v.id);
                    if !matches!(v.kind, Kind::RingMem { .. }) || v.off != 0 || v.var.as_const() != Some(0) || !open {
                        return Err(bad("an unmodified pointer from ringbuf_reserve"));
                    }
                    let id = v.id;
                    st.refs.retain(|&x| x != id);
                    st.for_each_reg(|x| {
                        if x.id == id && matches!(x.kind, Kind::RingMem { .. }) {
                            *x = Reg::unknown();
                        }
                    });
                }
            }
        }
        Ok(match proto.ret {
            Ret::Scalar => Reg::unknown(),
            Ret::Void => Reg::UNINIT,
            Ret::MapValueOrNull => {
                let map = map.unwrap_or(0);
                Reg { id: self.fresh_id(), ..Reg::pointer(Kind::MapValueOrNull { map }, 0) }
            }
            Ret::RingMemOrNull => {
                let id = self.fresh_id();
                st.refs.push(id);
                Reg { id, ..Reg::pointer(Kind::RingMemOrNull { size: alloc }, 0) }
            }
        })
    }
}
