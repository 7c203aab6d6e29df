//! The abstract machine state: what each register and stack byte of every live frame holds,
//! how much of the packet is proven present, and which ring-buffer reservations are open.
//! Also the subsumption test state pruning relies on.

use std::collections::HashMap;
use std::fmt;

use super::scalar::Scalar;
use crate::bpf::insn::{NUM_REGS, REG_FP, STACK_SIZE};

/// What a register holds. Pointers carry a constant offset (`Reg::off`) and a variable one
/// (`Reg::var`, a scalar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Never written on this path: reading it is an error.
    Uninit,
    Scalar,
    /// The `xdp_md` pointer.
    Ctx,
    /// Into the packet: `data + var + off`.
    Pkt,
    /// `data_end`.
    PktEnd,
    /// Into the stack of frame `frame` (0 = the entry function's): `r10(frame) + var + off`.
    Stack { frame: u8 },
    /// Into the value of map `map` (an element found by a lookup, or a global-data map).
    MapValue { map: u32 },
    /// A lookup result not yet compared with 0.
    MapValueOrNull { map: u32 },
    /// A map itself (`lddw rD = map[N]`): only a helper argument.
    MapPtr { map: u32 },
    /// A ring-buffer reservation of `size` bytes (reference `id` is open until submit/discard).
    RingMem { size: u32 },
    RingMemOrNull { size: u32 },
}

impl Kind {
    pub fn is_pointer(self) -> bool {
        !matches!(self, Kind::Uninit | Kind::Scalar)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Uninit => "uninit",
            Kind::Scalar => "scalar",
            Kind::Ctx => "ctx",
            Kind::Pkt => "pkt",
            Kind::PktEnd => "pkt_end",
            Kind::Stack { .. } => "fp",
            Kind::MapValue { .. } => "map_value",
            Kind::MapValueOrNull { .. } => "map_value_or_null",
            Kind::MapPtr { .. } => "map_ptr",
            Kind::RingMem { .. } => "ringbuf_mem",
            Kind::RingMemOrNull { .. } => "ringbuf_mem_or_null",
        }
    }
}

/// One register. For scalars `var` is the value and `off`, `id`, `range` are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reg {
    pub kind: Kind,
    pub off: i64,
    pub var: Scalar,
    /// Links registers that share a variable offset (packet pointers: a bounds check through
    /// one proves the others) or a nullable result (a null check of one settles all), or
    /// names a ring-buffer reservation. 0 = none.
    pub id: u32,
    /// Packet pointers with an `id`: bytes from `data + var` proven present.
    pub range: u32,
}

impl Reg {
    pub const UNINIT: Reg = Reg { kind: Kind::Uninit, off: 0, var: Scalar::UNKNOWN, id: 0, range: 0 };

    pub fn scalar(s: Scalar) -> Reg {
        Reg { kind: Kind::Scalar, off: 0, var: s, id: 0, range: 0 }
    }

    pub fn unknown() -> Reg {
        Reg::scalar(Scalar::UNKNOWN)
    }

    pub fn pointer(kind: Kind, off: i64) -> Reg {
        Reg { kind, off, var: Scalar::constant(0), id: 0, range: 0 }
    }

    pub fn is_init(&self) -> bool {
        self.kind != Kind::Uninit
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Uninit => write!(f, "uninit"),
            Kind::Scalar => write!(f, "{}", self.var),
            k => {
                write!(f, "{}", k.name())?;
                match k {
                    Kind::MapValue { map } | Kind::MapValueOrNull { map } | Kind::MapPtr { map } => {
                        write!(f, "[map {map}]")?
                    }
                    Kind::Stack { frame } if frame > 0 => write!(f, "[frame {frame}]")?,
                    Kind::RingMem { size } | Kind::RingMemOrNull { size } => write!(f, "[{size} bytes]")?,
                    _ => {}
                }
                let mut parts = vec![format!("off={}", self.off)];
                if self.var.as_const() != Some(0) {
                    parts.push(format!("var={}", self.var));
                }
                if self.id != 0 {
                    parts.push(format!("id={}", self.id));
                }
                if self.range != 0 {
                    parts.push(format!("r={}", self.range));
                }
                write!(f, "({})", parts.join(","))
            }
        }
    }
}

/// What one stack byte holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Byte {
    Invalid,
    /// Written with data whose value is not tracked.
    Misc,
    /// Part of the 8-byte spill of a register kept in its slot.
    Spill,
}

/// One aligned 8-byte stack slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub bytes: [Byte; 8],
    /// The spilled register when all eight bytes are `Spill`.
    pub spill: Reg,
}

impl Slot {
    pub const EMPTY: Slot = Slot { bytes: [Byte::Invalid; 8], spill: Reg::UNINIT };

    pub fn spilled(&self) -> Option<&Reg> {
        (self.bytes == [Byte::Spill; 8]).then_some(&self.spill)
    }
}

pub const SLOTS: usize = STACK_SIZE / 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub regs: [Reg; NUM_REGS as usize],
    /// Slot `i` covers `r10 - 8 * (i + 1) .. r10 - 8 * i`; grown on demand.
    pub stack: Vec<Slot>,
    /// Index of the `call` that opened this frame (unused for frame 0).
    pub callsite: usize,
}

impl Frame {
    pub fn new(depth: u8, callsite: usize) -> Frame {
        let mut regs = [Reg::UNINIT; NUM_REGS as usize];
        regs[REG_FP as usize] = Reg::pointer(Kind::Stack { frame: depth }, 0);
        Frame { regs, stack: Vec::new(), callsite }
    }

    /// The slot covering byte `r10 + off` (`-512 <= off < 0`), growing the stack to reach it.
    pub fn slot_mut(&mut self, off: i64) -> (&mut Slot, usize) {
        let i = ((-off - 1) / 8) as usize;
        if self.stack.len() <= i {
            self.stack.resize(i + 1, Slot::EMPTY);
        }
        let byte = (off.rem_euclid(8)) as usize;
        (&mut self.stack[i], byte)
    }

    pub fn byte(&self, off: i64) -> Byte {
        let i = ((-off - 1) / 8) as usize;
        self.stack.get(i).map_or(Byte::Invalid, |s| s.bytes[off.rem_euclid(8) as usize])
    }

    pub fn slot(&self, off: i64) -> Option<&Slot> {
        self.stack.get(((-off - 1) / 8) as usize)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub frames: Vec<Frame>,
    /// Bytes of packet proven present from `data` (a bounds check at a constant offset).
    pub pkt_min: u32,
    /// Open ring-buffer reservations (their ids).
    pub refs: Vec<u32>,
}

impl State {
    pub fn entry() -> State {
        let mut f = Frame::new(0, 0);
        f.regs[1] = Reg::pointer(Kind::Ctx, 0);
        State { frames: vec![f], pkt_min: 0, refs: Vec::new() }
    }

    pub fn cur(&self) -> &Frame {
        self.frames.last().expect("a state always has a frame")
    }

    pub fn cur_mut(&mut self) -> &mut Frame {
        self.frames.last_mut().expect("a state always has a frame")
    }

    pub fn reg(&self, r: u8) -> &Reg {
        &self.cur().regs[r as usize]
    }

    pub fn set(&mut self, r: u8, v: Reg) {
        self.cur_mut().regs[r as usize] = v;
    }

    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// Applies `f` to every register and spilled register of every frame.
    pub fn for_each_reg(&mut self, mut f: impl FnMut(&mut Reg)) {
        for fr in &mut self.frames {
            for r in fr.regs.iter_mut() {
                f(r);
            }
            for s in fr.stack.iter_mut() {
                if s.bytes == [Byte::Spill; 8] {
                    f(&mut s.spill);
                }
            }
        }
    }

    /// The registers of the current frame, for messages: `R0=scalar(...) R1=ctx(off=0)`.
    pub fn describe(&self, regs: &[u8]) -> String {
        let fr = self.cur();
        regs.iter()
            .filter(|&&r| (r as usize) < fr.regs.len())
            .map(|&r| format!("R{r}={}", fr.regs[r as usize]))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Every initialised register of the current frame and the stack summary, for the log.
    pub fn summary(&self) -> String {
        let fr = self.cur();
        let mut parts: Vec<String> = (0..NUM_REGS)
            .filter(|&r| fr.regs[r as usize].is_init() && r != REG_FP)
            .map(|r| format!("R{r}={}", fr.regs[r as usize]))
            .collect();
        for (i, s) in fr.stack.iter().enumerate() {
            let off = -8 * (i as i64 + 1);
            if let Some(r) = s.spilled() {
                parts.push(format!("fp{off}={r}"));
            } else if s.bytes.iter().any(|b| *b != Byte::Invalid) {
                let m: String = s.bytes.iter().map(|b| if *b == Byte::Invalid { '?' } else { 'm' }).collect();
                parts.push(format!("fp{off}={m}"));
            }
        }
        if self.pkt_min > 0 {
            parts.push(format!("pkt_min={}", self.pkt_min));
        }
        if self.depth() > 1 {
            parts.push(format!("frame={}", self.depth() - 1));
        }
        parts.join(" ")
    }
}

/// Matches the ids of an old state to those of a new one: two registers that share an id in
/// one state must share an id in the other.
#[derive(Default)]
struct IdMap {
    old_to_new: HashMap<u32, u32>,
    new_to_old: HashMap<u32, u32>,
}

impl IdMap {
    fn check(&mut self, old: u32, new: u32) -> bool {
        if old == 0 && new == 0 {
            return true;
        }
        if old == 0 || new == 0 {
            return false;
        }
        match (self.old_to_new.get(&old), self.new_to_old.get(&new)) {
            (Some(&n), Some(&o)) => n == new && o == old,
            (None, None) => {
                self.old_to_new.insert(old, new);
                self.new_to_old.insert(new, old);
                true
            }
            _ => false,
        }
    }
}

/// Whether every concrete run `new` stands for is also one `old` stands for, given that `old`
/// was fully explored without error. `live[f]` are the registers of frame `f` that may still
/// be read (the others cannot affect the outcome) and those whose exact value may matter (for
/// the others, any scalar will do).
pub fn subsumes(old: &State, new: &State, live: &[(u16, u16)]) -> bool {
    if old.frames.len() != new.frames.len() || new.pkt_min < old.pkt_min || old.refs.len() != new.refs.len() {
        return false;
    }
    let mut ids = IdMap::default();
    for (i, (fo, fnew)) in old.frames.iter().zip(&new.frames).enumerate() {
        if fo.callsite != fnew.callsite {
            return false;
        }
        let (mask, precise) = live.get(i).copied().unwrap_or((u16::MAX, u16::MAX));
        for r in 0..NUM_REGS as usize {
            if mask >> r & 1 == 0 {
                continue;
            }
            let (o, n) = (&fo.regs[r], &fnew.regs[r]);
            let ok = if precise >> r & 1 == 0 && o.kind == Kind::Scalar {
                n.kind == Kind::Scalar
            } else {
                reg_subsumes(o, n, &mut ids)
            };
            if !ok {
                return false;
            }
        }
        for (k, so) in fo.stack.iter().enumerate() {
            let sn = fnew.stack.get(k).unwrap_or(&Slot::EMPTY);
            for b in 0..8 {
                let ok = match so.bytes[b] {
                    Byte::Invalid => true,
                    // Unknown data may be anything but a pointer, which an 8-byte read would yield.
                    Byte::Misc => match sn.bytes[b] {
                        Byte::Invalid => false,
                        Byte::Misc => true,
                        Byte::Spill => !sn.spill.kind.is_pointer(),
                    },
                    Byte::Spill => sn.bytes[b] == Byte::Spill,
                };
                if !ok {
                    return false;
                }
            }
            if let Some(ro) = so.spilled() {
                let Some(rn) = sn.spilled() else { return false };
                if !reg_subsumes(ro, rn, &mut ids) {
                    return false;
                }
            }
        }
    }
    old.refs.iter().zip(&new.refs).all(|(&o, &n)| ids.check(o, n))
}

fn reg_subsumes(o: &Reg, n: &Reg, ids: &mut IdMap) -> bool {
    match o.kind {
        // Never read on any path from here (or it would have failed).
        Kind::Uninit => true,
        // Linked copies in the old state learned together: the new state must link them too.
        Kind::Scalar => n.kind == Kind::Scalar && o.var.contains(&n.var) && (o.id == 0 || ids.check(o.id, n.id)),
        _ => {
            if o.kind != n.kind || o.off != n.off || !o.var.contains(&n.var) || !ids.check(o.id, n.id) {
                return false;
            }
            // A packet pointer with less proven is weaker.
            n.range >= o.range
        }
    }
}
