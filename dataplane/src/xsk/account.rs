//! Where every UMEM frame is: counted from ring transitions on the fast path, and audited
//! frame by frame (a bitmap over frame indices) once a run has stopped.
//!
//! Counting is cheap enough for the hot path: each socket keeps four monotonically growing
//! totals (frames produced to its fill ring, consumed from its RX ring, produced to its TX ring,
//! consumed from its completion ring), bumped once per batch. The difference of a pair is how
//! many frames the kernel holds on that side. Together with the free list and the frames the
//! worker holds, they must add up to the UMEM's frame count, or a frame was leaked (sum too
//! small) or duplicated (sum too large).

use std::fmt;

/// Per-socket transition totals. Differences are taken with wrapping arithmetic so they stay
/// right even if a total ever wrapped (it would take centuries at line rate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Moves {
    pub fill_produced: u64,
    pub rx_consumed: u64,
    pub tx_produced: u64,
    pub comp_consumed: u64,
}

impl Moves {
    /// Frames handed to the kernel for receiving and not yet consumed from RX: sitting in the
    /// fill ring, held by the kernel, or waiting on the RX ring.
    pub fn rx_side(&self) -> u64 {
        self.fill_produced.wrapping_sub(self.rx_consumed)
    }

    /// Frames handed to the kernel for sending and not yet reclaimed from the completion ring.
    pub fn tx_side(&self) -> u64 {
        self.tx_produced.wrapping_sub(self.comp_consumed)
    }
}

/// Where a group's frames are, at one moment. After a run has stopped and drained,
/// `free + fill + rx_or_kernel == total` with nothing held or in flight: see [`check`].
///
/// [`check`]: FrameAccount::check
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FrameAccount {
    /// Frames in the UMEM.
    pub total: u64,
    /// On the worker's free list.
    pub free: u64,
    /// Sitting in fill rings (read from the rings' consumer positions).
    pub fill: u64,
    /// Taken from fill rings by the kernel and not yet consumed back from RX rings: held by the
    /// kernel or driver, or on RX rings.
    pub rx_or_kernel: u64,
    /// Consumed from RX and not yet given a verdict (only non-zero inside a batch).
    pub held: u64,
    /// On TX rings, being sent, or on completion rings not yet reclaimed.
    pub tx_in_flight: u64,
    /// Frame-by-frame audit of the frames userspace can see.
    pub audit: FrameAudit,
}

/// The result of walking the frames userspace can see (the free list and, in debug builds,
/// the fill rings' contents) and marking each in a bitmap over frame indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FrameAudit {
    /// Frames looked at.
    pub inspected: u64,
    /// Frames seen more than once.
    pub duplicates: u64,
    /// Addresses outside the UMEM.
    pub foreign: u64,
    /// Whether fill ring contents were included (debug builds keep a shadow of what was put
    /// on each fill ring; release builds inspect the free list only).
    pub covers_fill: bool,
}

/// What [`FrameAccount::check`] found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame account: {problems} ({account})")]
pub struct AccountError {
    pub problems: String,
    pub account: FrameAccount,
}

impl FrameAccount {
    /// Frames missing from every place (positive) or counted twice (negative).
    pub fn leaked(&self) -> i64 {
        let placed = self.free + self.fill + self.rx_or_kernel + self.held + self.tx_in_flight;
        self.total as i64 - placed as i64
    }

    /// Frames given to the kernel for receiving (`fill + rx_or_kernel`).
    pub fn in_fill(&self) -> u64 {
        self.fill + self.rx_or_kernel
    }

    /// Succeeds when, after a drained run, every frame is accounted for exactly once: nothing
    /// leaked or duplicated, nothing held or still in flight, and the audit found no duplicate
    /// or foreign address and inspected exactly the frames counted as visible.
    pub fn check(&self) -> Result<(), AccountError> {
        let mut problems = Vec::new();
        match self.leaked() {
            0 => {}
            n if n > 0 => problems.push(format!("{n} frames leaked")),
            n => problems.push(format!("{} frames counted twice", -n)),
        }
        if self.held != 0 {
            problems.push(format!("{} frames still held", self.held));
        }
        if self.tx_in_flight != 0 {
            problems.push(format!("{} tx completions outstanding", self.tx_in_flight));
        }
        if self.audit.duplicates != 0 {
            problems.push(format!("{} duplicate frames", self.audit.duplicates));
        }
        if self.audit.foreign != 0 {
            problems.push(format!("{} addresses outside the umem", self.audit.foreign));
        }
        let visible = if self.audit.covers_fill {
            self.free + self.fill
        } else {
            self.free
        };
        if self.audit.inspected != visible {
            problems.push(format!(
                "audit inspected {} frames, counters say {visible}",
                self.audit.inspected
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AccountError {
                problems: problems.join(", "),
                account: *self,
            })
        }
    }
}

impl fmt::Display for FrameAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "total {} = free {} + fill {} + rx/kernel {} + held {} + tx {} (leaked {}), \
             audit {} inspected, {} duplicate, {} foreign",
            self.total,
            self.free,
            self.fill,
            self.rx_or_kernel,
            self.held,
            self.tx_in_flight,
            self.leaked(),
            self.audit.inspected,
            self.audit.duplicates,
            self.audit.foreign,
        )
    }
}

/// Marks frames in a bitmap indexed by `addr / frame_size`.
pub(crate) struct Auditor {
    bits: Vec<u64>,
    frame_size: u64,
    total: u64,
    audit: FrameAudit,
}

impl Auditor {
    pub fn new(total: u64, frame_size: u64, covers_fill: bool) -> Auditor {
        Auditor {
            bits: vec![0; total.div_ceil(64) as usize],
            frame_size,
            total,
            audit: FrameAudit {
                covers_fill,
                ..FrameAudit::default()
            },
        }
    }

    /// Records one frame by any address inside it (packets may start anywhere in a frame).
    pub fn mark(&mut self, addr: u64) {
        self.audit.inspected += 1;
        let index = addr / self.frame_size;
        if index >= self.total {
            self.audit.foreign += 1;
            return;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.bits[word] & bit != 0 {
            self.audit.duplicates += 1;
        }
        self.bits[word] |= bit;
    }

    pub fn finish(self) -> FrameAudit {
        self.audit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> FrameAccount {
        FrameAccount {
            total: 64,
            free: 20,
            fill: 40,
            rx_or_kernel: 4,
            held: 0,
            tx_in_flight: 0,
            audit: FrameAudit {
                inspected: 60,
                duplicates: 0,
                foreign: 0,
                covers_fill: true,
            },
        }
    }

    #[test]
    fn clean_account_passes() {
        assert_eq!(clean().leaked(), 0);
        assert_eq!(clean().in_fill(), 44);
        assert_eq!(clean().check(), Ok(()));
        let mut release = clean();
        release.audit = FrameAudit {
            inspected: 20,
            covers_fill: false,
            ..FrameAudit::default()
        };
        assert_eq!(release.check(), Ok(()));
    }

    #[test]
    fn each_problem_is_reported() {
        let mut a = clean();
        a.free -= 3;
        a.audit.inspected -= 3;
        assert_eq!(a.leaked(), 3);
        assert!(a.check().unwrap_err().problems.contains("3 frames leaked"));

        let mut a = clean();
        a.fill += 2;
        a.audit.inspected += 2;
        assert_eq!(a.leaked(), -2);
        assert!(
            a.check()
                .unwrap_err()
                .problems
                .contains("2 frames counted twice")
        );

        let mut a = clean();
        a.free -= 5;
        a.tx_in_flight = 5;
        a.audit.inspected -= 5;
        assert_eq!(
            a.check().unwrap_err().problems,
            "5 tx completions outstanding"
        );

        let mut a = clean();
        a.free -= 1;
        a.held = 1;
        a.audit.inspected -= 1;
        assert_eq!(a.check().unwrap_err().problems, "1 frames still held");

        let mut a = clean();
        a.audit.duplicates = 1;
        a.audit.foreign = 2;
        a.audit.inspected = 59;
        let err = a.check().unwrap_err();
        assert_eq!(
            err.problems,
            "1 duplicate frames, 2 addresses outside the umem, audit inspected 59 frames, counters say 60"
        );
        assert!(
            err.to_string()
                .starts_with("frame account: 1 duplicate frames")
        );
    }

    #[test]
    fn auditor_finds_duplicates_and_foreign_addresses() {
        let mut au = Auditor::new(4, 2048, false);
        au.mark(256); // frame 0, packet start after the XDP headroom
        au.mark(2048 + 300); // frame 1
        au.mark(2047); // frame 0 again
        au.mark(3 * 2048); // frame 3
        au.mark(4 * 2048); // past the end
        let audit = au.finish();
        assert_eq!(
            audit,
            FrameAudit {
                inspected: 5,
                duplicates: 1,
                foreign: 1,
                covers_fill: false
            }
        );
    }

    #[test]
    fn auditor_handles_frame_counts_not_multiple_of_64() {
        let mut au = Auditor::new(65, 4096, true);
        for i in 0..65 {
            au.mark(i * 4096 + 256);
        }
        let audit = au.finish();
        assert_eq!(
            (audit.inspected, audit.duplicates, audit.foreign),
            (65, 0, 0)
        );
    }

    #[test]
    fn moves_differences_wrap() {
        let m = Moves {
            fill_produced: 3,
            rx_consumed: u64::MAX,
            tx_produced: 10,
            comp_consumed: 4,
        };
        assert_eq!(m.rx_side(), 4);
        assert_eq!(m.tx_side(), 6);
    }
}
