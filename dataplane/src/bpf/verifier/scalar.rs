//! What is known about a scalar: its bits (a [`Tnum`]) and its unsigned and signed ranges,
//! kept consistent with each other after every step. ALU transfer functions and the
//! refinement a conditional jump gives each of its two edges live here.
//!
//! Every operation over-approximates: the concrete result of the operation on any member is a
//! member of the result. 32-bit operations work on the "u32 view" of their operands (the
//! exact low 32 bits when the range already fits, else any 32-bit value with the known bits)
//! and zero-extend, as the ISA does.

use std::fmt;

use super::tnum::Tnum;
use crate::bpf::check::{AluOp, Cond};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scalar {
    pub tn: Tnum,
    pub umin: u64,
    pub umax: u64,
    pub smin: i64,
    pub smax: i64,
}

impl Scalar {
    pub const UNKNOWN: Scalar = Scalar { tn: Tnum::UNKNOWN, umin: 0, umax: u64::MAX, smin: i64::MIN, smax: i64::MAX };

    pub fn constant(v: u64) -> Scalar {
        Scalar { tn: Tnum::constant(v), umin: v, umax: v, smin: v as i64, smax: v as i64 }
    }

    /// Any value of `[lo, hi]` (unsigned).
    pub fn urange(lo: u64, hi: u64) -> Scalar {
        Scalar { umin: lo, umax: hi, ..Scalar::UNKNOWN }.normalize().unwrap_or(Scalar::UNKNOWN)
    }

    /// Any value of `[lo, hi]` (signed).
    pub fn srange(lo: i64, hi: i64) -> Scalar {
        Scalar { smin: lo, smax: hi, ..Scalar::UNKNOWN }.normalize().unwrap_or(Scalar::UNKNOWN)
    }

    pub fn from_tnum(tn: Tnum) -> Scalar {
        Scalar { tn, ..Scalar::UNKNOWN }.normalize().unwrap_or(Scalar::UNKNOWN)
    }

    /// A value loaded from `size` bytes, sign-extended when `signed`.
    pub fn loaded(size: u8, signed: bool) -> Scalar {
        let bits = size as u32 * 8;
        if bits >= 64 {
            return Scalar::UNKNOWN;
        }
        if signed {
            let h = 1i64 << (bits - 1);
            Scalar::srange(-h, h - 1)
        } else {
            Scalar::urange(0, (1u64 << bits) - 1)
        }
    }

    pub fn as_const(&self) -> Option<u64> {
        self.tn.is_const().then_some(self.tn.value)
    }

    /// Tightens the three descriptions against each other; `None` if they admit no value.
    pub fn normalize(mut self) -> Option<Scalar> {
        for _ in 0..2 {
            // Bits bound the ranges.
            self.umin = self.umin.max(self.tn.min());
            self.umax = self.umax.min(self.tn.max());
            let sign = 1u64 << 63;
            self.smin = self.smin.max((self.tn.value | (self.tn.mask & sign)) as i64);
            self.smax = self.smax.min((self.tn.value | (self.tn.mask & !sign)) as i64);
            // An unsigned range that does not cross the sign boundary is also a signed one.
            if (self.umin as i64) <= (self.umax as i64) {
                self.smin = self.smin.max(self.umin as i64);
                self.smax = self.smax.min(self.umax as i64);
            }
            // A signed range within one sign is also an unsigned one.
            if (self.smin as u64) <= (self.smax as u64) {
                self.umin = self.umin.max(self.smin as u64);
                self.umax = self.umax.min(self.smax as u64);
            }
            if self.umin > self.umax || self.smin > self.smax {
                return None;
            }
            self.tn = self.tn.intersect(Tnum::range(self.umin, self.umax))?;
        }
        (self.umin <= self.umax && self.smin <= self.smax).then_some(self)
    }

    /// Whether every value of `o` is a value of `self`.
    pub fn contains(&self, o: &Scalar) -> bool {
        self.umin <= o.umin && self.umax >= o.umax && self.smin <= o.smin && self.smax >= o.smax && self.tn.contains(o.tn)
    }

    pub fn fits_u32(&self) -> bool {
        self.umax <= u32::MAX as u64
    }

    /// The low 32 bits, as a 64-bit scalar.
    pub fn view32(&self) -> Scalar {
        if self.fits_u32() { *self } else { Scalar::from_tnum(self.tn.truncate(4)).clamp_u32() }
    }

    fn clamp_u32(self) -> Scalar {
        Scalar { umax: self.umax.min(u32::MAX as u64), ..self }.normalize().unwrap_or(Scalar::urange(0, u32::MAX as u64))
    }

    /// The zero-extended low 32 bits of a 64-bit result.
    fn zext32(self) -> Scalar {
        if self.fits_u32() && self.smin >= 0 { self } else { Scalar::from_tnum(self.tn.truncate(4)).clamp_u32() }
    }

    /// The value as seen by a load or store of `size` bytes.
    pub fn truncate(&self, size: u8) -> Scalar {
        if size >= 8 {
            return *self;
        }
        let max = (1u64 << (size as u32 * 8)) - 1;
        if self.umax <= max { *self } else { Scalar::from_tnum(self.tn.truncate(size as u32)) }
    }
}

fn add_ranges(a: &Scalar, b: &Scalar, tn: Tnum) -> Scalar {
    let mut r = Scalar::from_tnum(tn);
    if let (Some(lo), Some(hi)) = (a.umin.checked_add(b.umin), a.umax.checked_add(b.umax)) {
        r.umin = r.umin.max(lo);
        r.umax = r.umax.min(hi);
    }
    if let (Some(lo), Some(hi)) = (a.smin.checked_add(b.smin), a.smax.checked_add(b.smax)) {
        r.smin = r.smin.max(lo);
        r.smax = r.smax.min(hi);
    }
    r.normalize().unwrap_or(Scalar::from_tnum(tn))
}

fn sub_ranges(a: &Scalar, b: &Scalar, tn: Tnum) -> Scalar {
    let mut r = Scalar::from_tnum(tn);
    if a.umin >= b.umax {
        r.umin = r.umin.max(a.umin - b.umax);
        r.umax = r.umax.min(a.umax - b.umin);
    }
    if let (Some(lo), Some(hi)) = (a.smin.checked_sub(b.smax), a.smax.checked_sub(b.smin)) {
        r.smin = r.smin.max(lo);
        r.smax = r.smax.min(hi);
    }
    r.normalize().unwrap_or(Scalar::from_tnum(tn))
}

/// The concrete result of `op` on `x` and `y` of unsigned type `$u` (signed `$s`), as the
/// interpreter computes it; `$sx` sign-extends a `MovSx` source of `$bits` bits.
macro_rules! eval {
    ($op:expr, $x:expr, $y:expr, $u:ty, $s:ty, |$v:ident, $bits:ident| $sx:expr) => {{
        let (x, y): ($u, $u) = ($x, $y);
        match $op {
            AluOp::Add => x.wrapping_add(y),
            AluOp::Sub => x.wrapping_sub(y),
            AluOp::Mul => x.wrapping_mul(y),
            AluOp::Div => x.checked_div(y).unwrap_or(0),
            AluOp::SDiv if y == 0 => 0,
            AluOp::SDiv => (x as $s).wrapping_div(y as $s) as $u,
            AluOp::Mod => x.checked_rem(y).unwrap_or(x),
            AluOp::SMod if y == 0 => x,
            AluOp::SMod => (x as $s).wrapping_rem(y as $s) as $u,
            AluOp::Or => x | y,
            AluOp::And => x & y,
            AluOp::Xor => x ^ y,
            AluOp::Lsh => x.wrapping_shl(y as u32),
            AluOp::Rsh => x.wrapping_shr(y as u32),
            AluOp::Arsh => (x as $s).wrapping_shr(y as u32) as $u,
            AluOp::Neg => x.wrapping_neg(),
            AluOp::Mov => y,
            AluOp::MovSx($bits) => {
                let $v = y;
                $sx
            }
        }
    }};
}

/// The concrete result of a 64-bit ALU operation, as the interpreter computes it.
pub fn eval64(op: AluOp, a: u64, b: u64) -> u64 {
    eval!(op, a, b, u64, i64, |v, bits| match bits {
        8 => v as i8 as i64 as u64,
        16 => v as i16 as i64 as u64,
        _ => v as i32 as i64 as u64,
    })
}

/// The concrete result of a 32-bit ALU operation (zero-extended).
pub fn eval32(op: AluOp, a: u64, b: u64) -> u64 {
    eval!(op, a as u32, b as u32, u32, i32, |v, bits| match bits {
        8 => v as i8 as i32 as u32,
        _ => v as i16 as i32 as u32,
    }) as u64
}

/// `a op b` over all members (`b` is ignored by `Neg`; `Mov`/`MovSx` read only `b`).
pub fn alu(op: AluOp, wide: bool, a: &Scalar, b: &Scalar) -> Scalar {
    if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
        return Scalar::constant(if wide { eval64(op, x, y) } else { eval32(op, x, y) });
    }
    if wide { alu64(op, a, b) } else { alu32(op, a, b) }
}

fn alu64(op: AluOp, a: &Scalar, b: &Scalar) -> Scalar {
    let shift = b.as_const().filter(|&k| k < 64).map(|k| k as u32);
    match op {
        AluOp::Add => add_ranges(a, b, a.tn + b.tn),
        AluOp::Sub => sub_ranges(a, b, a.tn - b.tn),
        AluOp::Mul => {
            let tn = a.tn * b.tn;
            match a.umax.checked_mul(b.umax) {
                Some(hi) => Scalar { umin: a.umin * b.umin, umax: hi, ..Scalar::from_tnum(tn) }
                    .normalize()
                    .unwrap_or(Scalar::from_tnum(tn)),
                None => Scalar::from_tnum(tn),
            }
        }
        AluOp::Div => match b.as_const() {
            Some(k) if k > 0 => Scalar::urange(a.umin / k, a.umax / k),
            _ => Scalar::urange(0, a.umax),
        },
        AluOp::Mod => match b.as_const() {
            Some(k) if k > 0 => Scalar::urange(0, (k - 1).min(a.umax)),
            _ => Scalar::urange(0, a.umax),
        },
        AluOp::SDiv | AluOp::SMod | AluOp::Neg => Scalar::UNKNOWN,
        AluOp::And => {
            let tn = a.tn.and(b.tn);
            Scalar { umax: a.umax.min(b.umax), ..Scalar::from_tnum(tn) }.normalize().unwrap_or(Scalar::from_tnum(tn))
        }
        AluOp::Or => {
            let tn = a.tn.or(b.tn);
            Scalar { umin: a.umin.max(b.umin), ..Scalar::from_tnum(tn) }.normalize().unwrap_or(Scalar::from_tnum(tn))
        }
        AluOp::Xor => Scalar::from_tnum(a.tn.xor(b.tn)),
        AluOp::Lsh => match shift {
            Some(k) => {
                let tn = a.tn.lshift(k);
                if a.umax.leading_zeros() >= k {
                    Scalar { umin: a.umin << k, umax: a.umax << k, ..Scalar::from_tnum(tn) }
                        .normalize()
                        .unwrap_or(Scalar::from_tnum(tn))
                } else {
                    Scalar::from_tnum(tn)
                }
            }
            None => Scalar::UNKNOWN,
        },
        AluOp::Rsh => match shift {
            Some(k) => Scalar { umin: a.umin >> k, umax: a.umax >> k, ..Scalar::from_tnum(a.tn.rshift(k)) }
                .normalize()
                .unwrap_or(Scalar::from_tnum(a.tn.rshift(k))),
            // Shifting right never makes a value larger.
            None => Scalar::urange(0, a.umax),
        },
        AluOp::Arsh => match shift {
            Some(k) => Scalar { smin: a.smin >> k, smax: a.smax >> k, ..Scalar::from_tnum(a.tn.arshift(k, 64)) }
                .normalize()
                .unwrap_or(Scalar::from_tnum(a.tn.arshift(k, 64))),
            None => Scalar::UNKNOWN,
        },
        AluOp::Mov => *b,
        AluOp::MovSx(bits) => {
            let h = 1u64 << (bits - 1);
            if b.umax < h { *b } else { Scalar::srange(-(h as i64), h as i64 - 1) }
        }
    }
}

fn alu32(op: AluOp, a: &Scalar, b: &Scalar) -> Scalar {
    let (a, b) = (a.view32(), b.view32());
    let any = Scalar::urange(0, u32::MAX as u64);
    let r = match op {
        // Shift amounts are masked to 5 bits; only a known amount below 32 is modelled.
        AluOp::Lsh | AluOp::Rsh => match b.as_const().filter(|&k| k < 32) {
            Some(_) => alu64(op, &a, &b),
            None if op == AluOp::Rsh => Scalar::urange(0, a.umax),
            None => any,
        },
        AluOp::Arsh => match b.as_const().filter(|&k| k < 32) {
            Some(k) => Scalar::from_tnum(a.tn.arshift(k as u32, 32)).clamp_u32(),
            None => any,
        },
        AluOp::SDiv | AluOp::SMod | AluOp::Neg => any,
        AluOp::MovSx(bits) => {
            let h = 1u64 << (bits - 1);
            if b.umax < h { b } else { any }
        }
        _ => alu64(op, &a, &b),
    };
    r.zext32()
}

/// Refinements of a conditional jump `a cond b`: `(a, b)` on the taken edge and on the
/// fall-through edge; `None` for an edge no member can take.
/// The operands on the taken and on the fall-through edge of a jump; `None` = edge never taken.
pub type Edges = (Option<(Scalar, Scalar)>, Option<(Scalar, Scalar)>);

pub fn branch(cond: Cond, wide: bool, a: &Scalar, b: &Scalar) -> Edges {
    if !wide {
        // A 32-bit comparison means the same as a 64-bit one when both values fit 31 bits
        // (signed and unsigned alike); otherwise only constants decide it.
        let small = |s: &Scalar| s.umax <= i32::MAX as u64;
        if !(small(a) && small(b)) {
            if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
                let t = holds32(cond, x as u32, y as u32);
                return if t { (Some((*a, *b)), None) } else { (None, Some((*a, *b))) };
            }
            return (Some((*a, *b)), Some((*a, *b)));
        }
    }
    if cond == Cond::Set {
        return (refine_set(a, b, true), refine_set(a, b, false));
    }
    (refine(cond, a, b), refine(negate(cond), a, b))
}

fn holds32(cond: Cond, x: u32, y: u32) -> bool {
    let (sx, sy) = (x as i32, y as i32);
    match cond {
        Cond::Eq => x == y,
        Cond::Ne => x != y,
        Cond::Gt => x > y,
        Cond::Ge => x >= y,
        Cond::Lt => x < y,
        Cond::Le => x <= y,
        Cond::Sgt => sx > sy,
        Cond::Sge => sx >= sy,
        Cond::Slt => sx < sy,
        Cond::Sle => sx <= sy,
        Cond::Set => x & y != 0,
    }
}

fn negate(c: Cond) -> Cond {
    match c {
        Cond::Eq => Cond::Ne,
        Cond::Ne => Cond::Eq,
        Cond::Gt => Cond::Le,
        Cond::Ge => Cond::Lt,
        Cond::Lt => Cond::Ge,
        Cond::Le => Cond::Gt,
        Cond::Sgt => Cond::Sle,
        Cond::Sge => Cond::Slt,
        Cond::Slt => Cond::Sge,
        Cond::Sle => Cond::Sgt,
        Cond::Set => Cond::Set,
    }
}

fn both(a: Scalar, b: Scalar) -> Option<(Scalar, Scalar)> {
    Some((a.normalize()?, b.normalize()?))
}

/// `a cond b` holds: narrow both.
fn refine(cond: Cond, a: &Scalar, b: &Scalar) -> Option<(Scalar, Scalar)> {
    let (mut x, mut y) = (*a, *b);
    match cond {
        Cond::Eq => {
            let tn = x.tn.intersect(y.tn)?;
            let m = Scalar {
                tn,
                umin: x.umin.max(y.umin),
                umax: x.umax.min(y.umax),
                smin: x.smin.max(y.smin),
                smax: x.smax.min(y.smax),
            }
            .normalize()?;
            return Some((m, m));
        }
        Cond::Ne => {
            // Only an excluded constant at the edge of the other's range narrows it.
            if let (Some(k), Some(j)) = (y.as_const(), x.as_const())
                && k == j
            {
                return None;
            }
            if let Some(k) = y.as_const() {
                exclude(&mut x, k)?;
            }
            if let Some(k) = x.as_const() {
                exclude(&mut y, k)?;
            }
        }
        Cond::Gt => {
            x.umin = x.umin.max(y.umin.checked_add(1)?);
            y.umax = y.umax.min(x.umax.checked_sub(1)?);
        }
        Cond::Ge => {
            x.umin = x.umin.max(y.umin);
            y.umax = y.umax.min(x.umax);
        }
        // `a < b` is `b > a`, and so on: the mirrored rule, results swapped back.
        Cond::Lt | Cond::Le | Cond::Slt | Cond::Sle => {
            let mirror = match cond {
                Cond::Lt => Cond::Gt,
                Cond::Le => Cond::Ge,
                Cond::Slt => Cond::Sgt,
                _ => Cond::Sge,
            };
            return refine(mirror, b, a).map(|(y, x)| (x, y));
        }
        Cond::Sgt => {
            x.smin = x.smin.max(y.smin.checked_add(1)?);
            y.smax = y.smax.min(x.smax.checked_sub(1)?);
        }
        Cond::Sge => {
            x.smin = x.smin.max(y.smin);
            y.smax = y.smax.min(x.smax);
        }
        Cond::Set => return refine_set(a, b, true),
    }
    both(x, y)
}

/// Narrows `s` given that it is not `k`: a bound equal to `k` moves one step inward. `None`
/// when that empties a bound's range.
fn exclude(s: &mut Scalar, k: u64) -> Option<()> {
    if s.umin == k {
        s.umin = k.checked_add(1)?;
    }
    if s.umax == k {
        s.umax = k.checked_sub(1)?;
    }
    if s.smin == k as i64 {
        s.smin = (k as i64).checked_add(1)?;
    }
    if s.smax == k as i64 {
        s.smax = (k as i64).checked_sub(1)?;
    }
    Some(())
}

/// `a & b != 0` (`set`) or `== 0`.
fn refine_set(a: &Scalar, b: &Scalar, set: bool) -> Option<(Scalar, Scalar)> {
    let possible = a.tn.and(b.tn);
    if set {
        if possible.max() == 0 {
            return None;
        }
        // A single-bit mask that is set makes that bit of `a` known.
        if let Some(k) = b.as_const().filter(|k| k.is_power_of_two()) {
            let tn = a.tn.intersect(Tnum { value: k, mask: !k })?;
            return both(Scalar { tn, ..*a }, *b);
        }
        Some((*a, *b))
    } else {
        if possible.min() != 0 {
            return None;
        }
        if let Some(k) = b.as_const() {
            let tn = a.tn.intersect(Tnum { value: 0, mask: !k })?;
            return both(Scalar { tn, ..*a }, *b);
        }
        Some((*a, *b))
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.as_const() {
            return write!(f, "{}", v as i64);
        }
        let mut parts = Vec::new();
        if self.umin != 0 {
            parts.push(format!("umin={}", self.umin));
        }
        if self.umax != u64::MAX {
            parts.push(format!("umax={}", self.umax));
        }
        if self.smin != i64::MIN && self.smin as u64 != self.umin {
            parts.push(format!("smin={}", self.smin));
        }
        if self.smax != i64::MAX && self.smax as u64 != self.umax {
            parts.push(format!("smax={}", self.smax));
        }
        if self.tn != Tnum::range(self.umin, self.umax) {
            parts.push(format!("var_off={:?}", self.tn));
        }
        write!(f, "scalar({})", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A scalar with a random member: the member is drawn first, then widened.
    fn scalar_with_member() -> impl Strategy<Value = (Scalar, u64)> {
        (any::<u64>(), 0u32..65, any::<u64>(), 0u8..4).prop_map(|(v, width, noise, kind)| {
            let s = match kind {
                0 => Scalar::constant(v),
                1 => {
                    let w = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
                    Scalar::urange(v.saturating_sub(noise & w), v.saturating_add(noise & w))
                }
                2 => {
                    let m = noise & if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
                    Scalar::from_tnum(Tnum { value: v & !m, mask: m })
                }
                _ => Scalar::loaded(1 << (width % 4), noise & 1 == 1).normalize().unwrap_or(Scalar::UNKNOWN),
            };
            // Pick a member: the given value if inside, else the minimum.
            let member = if s.tn.contains(Tnum::constant(v)) && v >= s.umin && v <= s.umax
                && (v as i64) >= s.smin && (v as i64) <= s.smax { v } else { s.umin.max(s.tn.min()) };
            (s, member)
        })
    }

    fn member_of(s: &Scalar, v: u64) -> bool {
        s.tn.contains(Tnum::constant(v)) && s.umin <= v && v <= s.umax && s.smin <= v as i64 && v as i64 <= s.smax
    }

    const OPS: &[AluOp] = &[
        AluOp::Add, AluOp::Sub, AluOp::Mul, AluOp::Div, AluOp::SDiv, AluOp::Or, AluOp::And, AluOp::Lsh,
        AluOp::Rsh, AluOp::Neg, AluOp::Mod, AluOp::SMod, AluOp::Xor, AluOp::Mov, AluOp::MovSx(8),
        AluOp::MovSx(16), AluOp::MovSx(32), AluOp::Arsh,
    ];

    const CONDS: &[Cond] = &[
        Cond::Eq, Cond::Gt, Cond::Ge, Cond::Set, Cond::Ne, Cond::Sgt, Cond::Sge, Cond::Lt, Cond::Le, Cond::Slt,
        Cond::Sle,
    ];

    fn holds64(cond: Cond, x: u64, y: u64) -> bool {
        let (sx, sy) = (x as i64, y as i64);
        match cond {
            Cond::Eq => x == y,
            Cond::Ne => x != y,
            Cond::Gt => x > y,
            Cond::Ge => x >= y,
            Cond::Lt => x < y,
            Cond::Le => x <= y,
            Cond::Sgt => sx > sy,
            Cond::Sge => sx >= sy,
            Cond::Slt => sx < sy,
            Cond::Sle => sx <= sy,
            Cond::Set => x & y != 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn alu_results_contain_the_concrete_result(
            (a, x) in scalar_with_member(), (b, y) in scalar_with_member(), op in 0usize..18, wide: bool,
        ) {
            prop_assert!(member_of(&a, x) && member_of(&b, y));
            let op = OPS[op];
            if !wide && op == AluOp::MovSx(32) { return Ok(()); }
            let r = alu(op, wide, &a, &b);
            let want = if wide { eval64(op, x, y) } else { eval32(op, x, y) };
            prop_assert!(member_of(&r, want), "{op:?} wide={wide} {a} ({x:#x}) , {b} ({y:#x}) -> {r}, want {want:#x}");
        }

        #[test]
        fn branch_edges_keep_the_members_that_take_them(
            (a, x) in scalar_with_member(), (b, y) in scalar_with_member(), c in 0usize..11, wide: bool,
        ) {
            let cond = CONDS[c];
            let taken = if wide { holds64(cond, x, y) } else { holds32(cond, x as u32, y as u32) };
            let (t, f) = branch(cond, wide, &a, &b);
            let edge = if taken { t } else { f };
            let Some((ra, rb)) = edge else {
                return Err(TestCaseError::fail(format!("{cond:?} wide={wide} {a} ({x:#x}) {b} ({y:#x}): edge taken={taken} pruned")));
            };
            prop_assert!(member_of(&ra, x) && member_of(&rb, y), "{cond:?} {a} {b} -> {ra} {rb}");
        }
    }
}
