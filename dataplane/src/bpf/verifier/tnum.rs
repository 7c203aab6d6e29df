//! Tristate numbers: which bits of a 64-bit value are known, and to what.
//!
//! A `Tnum { value, mask }` stands for every `x` with `x & !mask == value`: bits set in `mask`
//! are unknown, the others equal `value`'s (which has no bit of `mask` set). The arithmetic
//! follows the kernel's `tnum.c` (Edward Cree's construction), rewritten from its definitions.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tnum {
    pub value: u64,
    pub mask: u64,
}

impl Tnum {
    pub const UNKNOWN: Tnum = Tnum { value: 0, mask: u64::MAX };

    pub const fn constant(v: u64) -> Tnum {
        Tnum { value: v, mask: 0 }
    }

    /// Smallest tnum holding every value of `[min, max]`.
    pub fn range(min: u64, max: u64) -> Tnum {
        let chi = min ^ max;
        let bits = 64 - chi.leading_zeros();
        if bits > 63 {
            return Tnum::UNKNOWN;
        }
        let delta = (1u64 << bits) - 1;
        Tnum { value: min & !delta, mask: delta }
    }

    pub fn is_const(self) -> bool {
        self.mask == 0
    }

    /// Whether every value of `other` is a value of `self`.
    pub fn contains(self, other: Tnum) -> bool {
        if other.mask & !self.mask != 0 {
            return false;
        }
        (other.value & !self.mask) == self.value
    }

    /// The values both allow, `None` if there are none.
    pub fn intersect(self, o: Tnum) -> Option<Tnum> {
        let known_both = !self.mask & !o.mask;
        if (self.value ^ o.value) & known_both != 0 {
            return None;
        }
        let v = self.value | o.value;
        let mask = self.mask & o.mask;
        Some(Tnum { value: v & !mask, mask })
    }

    fn plus(self, o: Tnum) -> Tnum {
        let sm = self.mask.wrapping_add(o.mask);
        let sv = self.value.wrapping_add(o.value);
        let sigma = sm.wrapping_add(sv);
        let chi = sigma ^ sv;
        let mu = chi | self.mask | o.mask;
        Tnum { value: sv & !mu, mask: mu }
    }

    fn minus(self, o: Tnum) -> Tnum {
        let dv = self.value.wrapping_sub(o.value);
        let alpha = dv.wrapping_add(self.mask);
        let beta = dv.wrapping_sub(o.mask);
        let chi = alpha ^ beta;
        let mu = chi | self.mask | o.mask;
        Tnum { value: dv & !mu, mask: mu }
    }

    pub fn and(self, o: Tnum) -> Tnum {
        let alpha = self.value | self.mask;
        let beta = o.value | o.mask;
        let v = self.value & o.value;
        Tnum { value: v, mask: alpha & beta & !v }
    }

    pub fn or(self, o: Tnum) -> Tnum {
        let v = self.value | o.value;
        let mu = self.mask | o.mask;
        Tnum { value: v, mask: mu & !v }
    }

    pub fn xor(self, o: Tnum) -> Tnum {
        let v = self.value ^ o.value;
        let mu = self.mask | o.mask;
        Tnum { value: v & !mu, mask: mu }
    }

    /// Long multiplication over the known and unknown parts of `self`'s bits.
    fn times(self, o: Tnum) -> Tnum {
        let acc_v = self.value.wrapping_mul(o.value);
        let mut acc_m = Tnum::constant(0);
        let (mut a, mut b) = (self, o);
        while a.value != 0 || a.mask != 0 {
            if a.value & 1 != 0 {
                acc_m = acc_m.plus(Tnum { value: 0, mask: b.mask });
            } else if a.mask & 1 != 0 {
                acc_m = acc_m.plus(Tnum { value: 0, mask: b.value | b.mask });
            }
            a = a.rshift(1);
            b = b.lshift(1);
        }
        Tnum::constant(acc_v).plus(acc_m)
    }

    pub fn lshift(self, k: u32) -> Tnum {
        Tnum { value: self.value.wrapping_shl(k), mask: self.mask.wrapping_shl(k) }
    }

    pub fn rshift(self, k: u32) -> Tnum {
        Tnum { value: self.value.wrapping_shr(k), mask: self.mask.wrapping_shr(k) }
    }

    /// Arithmetic shift right of the low `bits` (32 or 64) bits, result zero-extended.
    pub fn arshift(self, k: u32, bits: u32) -> Tnum {
        if bits == 32 {
            let v = ((self.value as u32 as i32) >> k) as u32 as u64;
            let m = ((self.mask as u32 as i32) >> k) as u32 as u64;
            Tnum { value: v, mask: m }
        } else {
            Tnum { value: ((self.value as i64) >> k) as u64, mask: ((self.mask as i64) >> k) as u64 }
        }
    }

    /// The low `bytes` bytes, zero-extended.
    pub fn truncate(self, bytes: u32) -> Tnum {
        if bytes >= 8 {
            return self;
        }
        let keep = (1u64 << (bytes * 8)) - 1;
        Tnum { value: self.value & keep, mask: self.mask & keep }
    }

    pub fn min(self) -> u64 {
        self.value
    }

    pub fn max(self) -> u64 {
        self.value | self.mask
    }
}

impl std::ops::Add for Tnum {
    type Output = Tnum;
    fn add(self, o: Tnum) -> Tnum {
        self.plus(o)
    }
}

impl std::ops::Sub for Tnum {
    type Output = Tnum;
    fn sub(self, o: Tnum) -> Tnum {
        self.minus(o)
    }
}

/// Long multiplication over the known and unknown parts of the bits.
impl std::ops::Mul for Tnum {
    type Output = Tnum;
    fn mul(self, o: Tnum) -> Tnum {
        self.times(o)
    }
}

impl fmt::Debug for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every concrete member of a small tnum (all mask-bit combinations).
    fn members(t: Tnum) -> Vec<u64> {
        let bits: Vec<u32> = (0..64).filter(|b| t.mask >> b & 1 == 1).collect();
        (0..1u64 << bits.len())
            .map(|n| bits.iter().enumerate().fold(t.value, |v, (i, b)| v | ((n >> i & 1) << b)))
            .collect()
    }

    #[test]
    fn operations_contain_every_concrete_result() {
        let samples = [
            Tnum::constant(5),
            Tnum { value: 0x10, mask: 0x3 },
            Tnum { value: 0, mask: 0x0f },
            Tnum { value: 0x80, mask: 0x41 },
            Tnum { value: u64::MAX - 3, mask: 0x2 },
        ];
        for a in samples {
            for b in samples {
                for x in members(a) {
                    for y in members(b) {
                        assert!((a + b).contains(Tnum::constant(x.wrapping_add(y))), "{a:?}+{b:?}");
                        assert!((a - b).contains(Tnum::constant(x.wrapping_sub(y))), "{a:?}-{b:?}");
                        assert!((a * b).contains(Tnum::constant(x.wrapping_mul(y))), "{a:?}*{b:?}");
                        assert!(a.and(b).contains(Tnum::constant(x & y)));
                        assert!(a.or(b).contains(Tnum::constant(x | y)));
                        assert!(a.xor(b).contains(Tnum::constant(x ^ y)));
                    }
                }
            }
        }
    }

    #[test]
    fn range_and_intersection() {
        let r = Tnum::range(16, 31);
        assert_eq!(r, Tnum { value: 16, mask: 15 });
        assert!(r.contains(Tnum::constant(20)));
        assert_eq!(Tnum::range(0, u64::MAX), Tnum::UNKNOWN);
        assert_eq!(Tnum::constant(4).intersect(Tnum::constant(5)), None);
        assert_eq!(Tnum { value: 0, mask: 0xff }.intersect(Tnum::constant(7)), Some(Tnum::constant(7)));
        assert_eq!(Tnum { value: 0x100, mask: 0xff }.truncate(1), Tnum { value: 0, mask: 0xff });
    }
}
