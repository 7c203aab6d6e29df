//! Rate control: how many packets are due at a moment of a run, on a monotonic clock.
//!
//! The schedule is a closed form, not a bucket refilled tick by tick: with target rate `r` and
//! a linear ramp-up over `R`, packets due by time `t` are `r·t²/2R` during the ramp and
//! `r·(t − R/2)` after it. Senders send what is due (up to a batch sized to the rate) and wait
//! for the moment the next batch is due, so the rate has no drift and no per-second bursts. A
//! sender that falls far behind (descheduled, ring full) may catch up only by a bounded
//! backlog; older credit is written off and reported, so a stall never turns into a burst.

use std::time::Duration;

/// The schedule of one sender. Pure arithmetic; the caller reads the clock.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Packets per second after the ramp.
    rate: f64,
    ramp: f64,
    /// Credit written off after stalls.
    skipped: u64,
    max_backlog: u64,
    batch: u64,
}

/// Time a batch of packets may take at most, at the target rate: sets the batch size (one
/// kick per batch; 50 µs keeps the syscalls few without visible bursts).
const BATCH_TIME: f64 = 50e-6;
/// Largest AF_XDP batch (a TX ring's worth is more than enough).
const MAX_BATCH: u64 = 64;
/// Backlog a late sender may still send back to back: enough for the scheduling delays of a
/// loaded machine (tens of milliseconds), short of a burst per second.
const BACKLOG_TIME: f64 = 50e-3;

impl Pacer {
    /// A schedule of `rate` packets per second reached linearly over `ramp`.
    pub fn new(rate: f64, ramp: Duration) -> Pacer {
        let rate = rate.max(1e-3);
        let batch = ((rate * BATCH_TIME) as u64).clamp(1, MAX_BATCH);
        Pacer {
            rate,
            ramp: ramp.as_secs_f64(),
            skipped: 0,
            max_backlog: ((rate * BACKLOG_TIME) as u64).max(4 * batch),
            batch,
        }
    }

    /// Like [`new`](Self::new) with a fixed batch (the live-frames engine sends one call's
    /// worth at a time).
    pub fn with_batch(rate: f64, ramp: Duration, batch: u64) -> Pacer {
        let mut p = Pacer::new(rate, ramp);
        p.batch = batch.max(1);
        p.max_backlog = p.max_backlog.max(2 * p.batch);
        p
    }

    /// Packets to send at once at most.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Credit written off so far because the sender fell behind.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn scheduled(&self, t: f64) -> f64 {
        if t <= 0.0 {
            0.0
        } else if t < self.ramp {
            self.rate * t * t / (2.0 * self.ramp)
        } else {
            self.rate * (t - self.ramp / 2.0)
        }
    }

    /// Packets due by `elapsed` into the run, given `sent` so far: how many to send now (at
    /// most a batch). Writes off credit beyond the backlog bound.
    pub fn due(&mut self, elapsed: Duration, sent: u64) -> u64 {
        let total = (self.scheduled(elapsed.as_secs_f64()) as u64).saturating_sub(self.skipped);
        let owed = total.saturating_sub(sent);
        if owed > self.max_backlog {
            self.skipped += owed - self.max_backlog;
        }
        owed.min(self.max_backlog).min(self.batch)
    }

    /// When (since the start) packet number `n` becomes due; what to wait for when nothing is.
    pub fn time_of(&self, n: u64) -> Duration {
        let n = (n + self.skipped) as f64;
        let ramp_packets = self.rate * self.ramp / 2.0;
        let t = if n <= ramp_packets { (2.0 * self.ramp * n / self.rate).sqrt() } else { n / self.rate + self.ramp / 2.0 };
        Duration::from_secs_f64(t.max(0.0))
    }
}

/// Waits until `deadline` (since `start`): sleeps unless the wait is shorter than a timer
/// wake-up, then spins. Sleeping rather than spinning leaves the core to others on a shared
/// machine, and a sleeper is woken promptly by the scheduler; waking late only means the next
/// batch carries what became due meanwhile (within the backlog bound).
pub fn wait_until(start: std::time::Instant, deadline: Duration) {
    const SPIN: Duration = Duration::from_micros(30);
    loop {
        let now = start.elapsed();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN {
            std::thread::sleep(left);
            return;
        }
        std::hint::spin_loop();
    }
}

/// Waits until `deadline` precisely: sleeps most of a long wait and spins the last 100 µs
/// (the scheduler's usual wake-up slack). For replay, where each gap matters.
pub fn wait_precise(start: std::time::Instant, deadline: Duration) {
    const SPIN: Duration = Duration::from_micros(100);
    loop {
        let now = start.elapsed();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > SPIN * 2 {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a sender that sends whatever is due at every step of `dt`.
    fn simulate(p: &mut Pacer, secs: f64, dt: f64) -> u64 {
        let mut sent = 0;
        let mut t = 0.0;
        while t < secs {
            loop {
                let n = p.due(Duration::from_secs_f64(t), sent);
                if n == 0 {
                    break;
                }
                sent += n;
            }
            t += dt;
        }
        sent
    }

    #[test]
    fn steady_rate_is_exact_and_batched() {
        let mut p = Pacer::new(100_000.0, Duration::ZERO);
        assert_eq!(p.batch(), 5);
        let sent = simulate(&mut p, 1.0, 1e-5);
        assert!((99_990..=100_010).contains(&sent), "{sent}");
        assert_eq!(Pacer::new(10e6, Duration::ZERO).batch(), 64);
        assert_eq!(Pacer::new(10.0, Duration::ZERO).batch(), 1);
    }

    #[test]
    fn ramp_sends_half_during_the_ramp() {
        let mut p = Pacer::new(1000.0, Duration::from_secs(2));
        let during = simulate(&mut p.clone(), 2.0, 1e-3);
        assert!((995..=1001).contains(&during), "{during}");
        let total = simulate(&mut p, 3.0, 1e-3);
        assert!((1995..=2001).contains(&total), "{total}");
        // Half-way through the ramp the rate is half the target: a quarter of its packets.
        let q = Pacer::new(1000.0, Duration::from_secs(2));
        assert!((q.time_of(250).as_secs_f64() - 1.0).abs() < 1e-9);
        assert!((q.time_of(2000).as_secs_f64() - 3.0).abs() < 1e-9);
    }

    #[test]
    fn a_stall_is_not_made_up_in_one_burst() {
        let mut p = Pacer::new(1e6, Duration::ZERO);
        // Nothing sent for 100 ms, then the sender looks again.
        let first = p.due(Duration::from_millis(100), 0);
        assert_eq!(first, p.batch());
        assert_eq!(p.skipped(), 100_000 - 50_000);
        let mut sent = first;
        while p.due(Duration::from_millis(100), sent) > 0 {
            sent += p.batch().min(50_000 - sent);
        }
        assert_eq!(sent, 50_000);
        // The schedule continues from the written-off point without a second burst.
        assert!(p.time_of(sent) <= Duration::from_millis(100));
        assert!(p.time_of(sent + 1000) > Duration::from_micros(100_900));
    }

    #[test]
    fn time_of_inverts_due() {
        let mut p = Pacer::new(50_000.0, Duration::from_millis(500));
        for n in [1u64, 10, 1000, 12_500, 12_501, 40_000] {
            let t = p.time_of(n);
            assert!(p.clone().due(t + Duration::from_nanos(50), n - 1) >= 1, "{n}");
            assert_eq!(p.due(t.saturating_sub(Duration::from_micros(30)), n), 0, "{n}");
        }
    }
}
