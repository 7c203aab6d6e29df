//! Token buckets for rate-limit rules: one per rule, or one per source prefix in a fixed-size
//! table per worker (least recently used bucket of a full neighbourhood is recycled, which can
//! only hand a flooding source a fresh burst, never block a quiet one).
//!
//! Tokens are kept in nano-packets (1 packet = 10^9), refilled from the time the caller passes,
//! so there is no float, allocation or clock read per packet.

use super::config::{LimitKey, RateLimit};
use super::packet::{FAMILY_V4, Packet};
use super::set::{mask128, mask32};

const UNIT: u64 = 1_000_000_000;
const WINDOW: usize = 8;
/// Buckets per per-source limiter.
pub const SOURCE_BUCKETS: usize = 1 << 14;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    tokens: u64,
    last: u64,
}

impl Bucket {
    #[inline]
    fn take(&mut self, rate: u64, cap: u64, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last);
        // Past the time a refill from empty takes, the bucket is full: avoids the overflow of
        // elapsed * rate for long idle periods.
        let refill = if elapsed > cap / rate { cap } else { elapsed * rate };
        self.tokens = self.tokens.saturating_add(refill).min(cap);
        self.last = now;
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u128,
    family: u8,
    live: bool,
    bucket: Bucket,
}

/// One rule's limiter.
#[derive(Debug)]
pub struct Limiter {
    rate: u64,
    cap: u64,
    key: LimitKey,
    single: Bucket,
    slots: Box<[Slot]>,
    seed: u64,
}

impl Limiter {
    pub fn new(r: &RateLimit, seed: u64) -> Limiter {
        let cap = r.burst.saturating_mul(UNIT);
        let slots = match r.key {
            LimitKey::Rule => Vec::new(),
            LimitKey::Source { .. } => vec![Slot::default(); SOURCE_BUCKETS],
        };
        Limiter {
            rate: r.rate,
            cap,
            key: r.key,
            // Starts full: a burst may pass right away.
            single: Bucket { tokens: cap, last: 0 },
            slots: slots.into_boxed_slice(),
            seed,
        }
    }

    /// Whether the packet is within the rate (and takes a token).
    #[inline]
    pub fn allow(&mut self, p: &Packet, now: u64) -> bool {
        let (v4_prefix, v6_prefix) = match self.key {
            LimitKey::Rule => return self.single.take(self.rate, self.cap, now),
            LimitKey::Source { v4_prefix, v6_prefix } => (v4_prefix, v6_prefix),
        };
        let key = if p.family == FAMILY_V4 {
            u128::from(p.src as u32 & mask32(v4_prefix))
        } else {
            p.src & mask128(v6_prefix)
        };
        let slot = self.slot(key, p.family, now);
        self.slots[slot].bucket.take(self.rate, self.cap, now)
    }

    fn slot(&mut self, key: u128, family: u8, now: u64) -> usize {
        let mask = self.slots.len() - 1;
        let h = (key as u64 ^ (key >> 64) as u64 ^ u64::from(family) ^ self.seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let base = (h >> 32) as usize;
        let mut oldest = base & mask;
        for i in 0..WINDOW {
            let s = (base + i) & mask;
            let slot = &self.slots[s];
            if slot.live && slot.key == key && slot.family == family {
                return s;
            }
            if !slot.live {
                oldest = s;
                break;
            }
            if slot.bucket.last < self.slots[oldest].bucket.last {
                oldest = s;
            }
        }
        self.slots[oldest] = Slot { key, family, live: true, bucket: Bucket { tokens: self.cap, last: now } };
        oldest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(a: u32) -> Packet {
        Packet { family: FAMILY_V4, src: u128::from(a), ..Packet::default() }
    }

    /// Offers `pps` packets per second for `secs` seconds; returns how many passed.
    fn offer(l: &mut Limiter, p: &Packet, pps: u64, secs: u64) -> u64 {
        let gap = UNIT / pps;
        (0..pps * secs).filter(|i| l.allow(p, 1 + i * gap)).count() as u64
    }

    #[test]
    fn rule_bucket_holds_its_rate_within_five_percent() {
        let r = RateLimit { rate: 1000, burst: 50, key: LimitKey::Rule };
        let mut l = Limiter::new(&r, 1);
        let passed = offer(&mut l, &src(1), 3000, 10);
        let want = 1000 * 10 + 50;
        assert!(passed.abs_diff(want) * 20 <= want, "passed {passed}, want {want}");
    }

    #[test]
    fn sources_get_their_own_buckets_by_prefix() {
        let r = RateLimit { rate: 10, burst: 10, key: LimitKey::Source { v4_prefix: 24, v6_prefix: 64 } };
        let mut l = Limiter::new(&r, 7);
        let a = src(0x0a00_0001);
        let a2 = src(0x0a00_00fe); // same /24
        let b = src(0x0a00_0101);
        assert_eq!((0..20).filter(|_| l.allow(&a, 5)).count(), 10);
        assert!(!l.allow(&a2, 5), "same /24 shares the bucket");
        assert!(l.allow(&b, 5), "another /24 has its own");
        assert!(l.allow(&a, 5 + UNIT / 10), "refilled after 100 ms");
    }

    #[test]
    fn long_idle_refills_without_overflow() {
        let r = RateLimit { rate: 1_000_000_000, burst: 5, key: LimitKey::Rule };
        let mut l = Limiter::new(&r, 0);
        for _ in 0..5 {
            assert!(l.allow(&src(1), 0));
        }
        assert!(!l.allow(&src(1), 0));
        assert!(l.allow(&src(1), u64::MAX / 2));
    }
}
