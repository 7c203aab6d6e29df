//! What `sluice run` prints: a start line, one summary per interval and the totals at exit,
//! as human text or as JSON lines (one object per line, `event` says which).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Config;
use crate::runtime::{FwRuleTotals, WorkerPlan};
use crate::stats::QueueSnapshot;
use crate::steer::{Steering, SteerCounters};
use crate::xsk::FrameAccount;

/// Identifies a queue's counters in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLabel {
    pub port: String,
    pub interface: String,
    pub queue: u32,
    pub mode: String,
    pub core: usize,
}

pub struct Reporter {
    json: bool,
    verbose: bool,
    labels: Vec<QueueLabel>,
    last: Vec<QueueSnapshot>,
    last_at: Duration,
}

impl Reporter {
    pub fn new(json: bool, verbose: bool, labels: Vec<QueueLabel>) -> Self {
        let last = vec![QueueSnapshot::default(); labels.len()];
        Reporter { json, verbose, labels, last, last_at: Duration::ZERO }
    }

    /// Follows a reload that added or removed queues: a queue that stays keeps its last
    /// reading (so its rate continues), a new one starts from zero.
    pub fn relabel(&mut self, labels: &[QueueLabel]) {
        if labels == self.labels.as_slice() {
            return;
        }
        let same = |a: &QueueLabel, b: &QueueLabel| (&a.port, &a.interface, a.queue) == (&b.port, &b.interface, b.queue);
        self.last = labels
            .iter()
            .map(|l| self.labels.iter().position(|o| same(o, l)).map_or_else(QueueSnapshot::default, |i| self.last[i]))
            .collect();
        self.labels = labels.to_vec();
    }

    pub fn started(&self, config: &Config, steering: &BTreeMap<String, Steering>, plans: &[WorkerPlan]) {
        let ports: Vec<Value> = config
            .ports
            .iter()
            .map(|p| {
                let queues: Vec<Value> = self
                    .labels
                    .iter()
                    .filter(|l| l.port == p.name)
                    .map(|l| json!({"queue": l.queue, "mode": l.mode, "core": l.core}))
                    .collect();
                json!({
                    "port": p.name,
                    "interface": p.interface,
                    "attach": steering[&p.interface].mode().to_string(),
                    "queues": queues,
                })
            })
            .collect();
        if self.json {
            emit(json!({"event": "started", "workers": plans.len(), "ports": ports}));
            return;
        }
        println!("sluice: {} worker(s) running; Ctrl-C to stop", plans.len());
        for p in &ports {
            let queues: Vec<String> = p["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| format!("q{} {} core {}", q["queue"], q["mode"].as_str().unwrap_or("?"), q["core"]))
                .collect();
            println!(
                "  port {} on {}: xdp {}, {}",
                p["port"].as_str().unwrap_or("?"),
                p["interface"].as_str().unwrap_or("?"),
                p["attach"].as_str().unwrap_or("?"),
                queues.join(", ")
            );
        }
    }

    pub fn tick(&mut self, elapsed: Duration, now: &[QueueSnapshot]) {
        let dt = (elapsed - self.last_at).as_secs_f64().max(1e-9);
        let sum_now = sum(now);
        let sum_last = sum(&self.last);
        // A reload that removed queues lowers the sums.
        let rx_pps = sum_now.rx.saturating_sub(sum_last.rx) as f64 / dt;
        let tx_pps = sum_now.tx.saturating_sub(sum_last.tx) as f64 / dt;
        if self.json {
            let mut line = totals_json(&sum_now);
            line["event"] = json!("tick");
            line["elapsed_s"] = json!(round3(elapsed.as_secs_f64()));
            line["rx_pps"] = json!(rx_pps.round());
            line["tx_pps"] = json!(tx_pps.round());
            line["queues"] = self.queues_json(now);
            emit(line);
        } else {
            println!(
                "[{:7.1}s] rx {} tx {} | drop {} ring-full {} wakeups {}",
                elapsed.as_secs_f64(),
                rate(rx_pps),
                rate(tx_pps),
                sum_now.drop,
                sum_now.ring_full,
                sum_now.wakeups
            );
            if self.verbose {
                for (l, (n, p)) in self.labels.iter().zip(now.iter().zip(&self.last)) {
                    println!(
                        "           {}/{} q{}: rx {} tx {} drop {} ring-full {} wakeups {}",
                        l.port,
                        l.interface,
                        l.queue,
                        rate(n.rx.saturating_sub(p.rx) as f64 / dt),
                        rate(n.tx.saturating_sub(p.tx) as f64 / dt),
                        n.drop,
                        n.ring_full,
                        n.wakeups
                    );
                }
            }
        }
        self.last = now.to_vec();
        self.last_at = elapsed;
    }

    pub fn totals(
        &self,
        elapsed: Duration,
        now: &[QueueSnapshot],
        steer: &[(String, SteerCounters)],
        config: &Config,
        accounts: &[FrameAccount],
        firewall: &[FwRuleTotals],
    ) {
        let total = sum(now);
        let port_of = |ifname: &str| config.ports.iter().find(|p| p.interface == ifname).map_or("", |p| p.name.as_str());
        let steer_json: Vec<Value> = steer
            .iter()
            .map(|(ifname, c)| {
                json!({"port": port_of(ifname), "interface": ifname, "seen": c.seen,
                       "redirected": c.redirected, "passed": c.passed, "dropped": c.dropped})
            })
            .collect();
        let frames_json: Vec<Value> = accounts
            .iter()
            .enumerate()
            .map(|(wi, a)| {
                let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                v["worker"] = json!(wi);
                v["leaked"] = json!(a.leaked());
                v
            })
            .collect();
        if self.json {
            let mut line = totals_json(&total);
            line["event"] = json!("totals");
            line["elapsed_s"] = json!(round3(elapsed.as_secs_f64()));
            line["queues"] = self.queues_json(now);
            line["steer"] = Value::Array(steer_json);
            line["frames"] = Value::Array(frames_json);
            if !firewall.is_empty() {
                line["firewall"] = Value::Array(firewall.iter().map(rule_json).collect());
            }
            emit(line);
            return;
        }
        println!(
            "totals after {:.1}s: rx {} tx {} drop {} ring-full {} wakeups {}",
            elapsed.as_secs_f64(),
            total.rx,
            total.tx,
            total.drop,
            total.ring_full,
            total.wakeups
        );
        for (l, n) in self.labels.iter().zip(now) {
            println!(
                "  {}/{} q{} ({}): rx {} tx {} drop {} ring-full {} wakeups {}",
                l.port, l.interface, l.queue, l.mode, n.rx, n.tx, n.drop, n.ring_full, n.wakeups
            );
        }
        for (ifname, c) in steer {
            println!(
                "  xdp {ifname}: seen {} redirected {} passed {} dropped {}",
                c.seen, c.redirected, c.passed, c.dropped
            );
        }
        let leaked: i64 = accounts.iter().map(|a| a.leaked()).sum();
        let frames: u64 = accounts.iter().map(|a| a.total).sum();
        println!("  frames: {frames} in {} UMEM(s), {leaked} leaked", accounts.len());
        for r in firewall {
            let t = r.stats.total();
            println!(
                "  fw {}: packets {} bytes {} (kernel {} user {})",
                r.stats.name, t.packets, t.bytes, r.stats.kernel.packets, r.stats.user.packets
            );
        }
    }

    fn queues_json(&self, now: &[QueueSnapshot]) -> Value {
        Value::Array(
            self.labels
                .iter()
                .zip(now)
                .map(|(l, n)| {
                    let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                    v["port"] = json!(l.port);
                    v["interface"] = json!(l.interface);
                    v["queue"] = json!(l.queue);
                    v["mode"] = json!(l.mode);
                    v
                })
                .collect(),
        )
    }
}

fn sum(s: &[QueueSnapshot]) -> QueueSnapshot {
    s.iter().fold(QueueSnapshot::default(), |acc, q| acc.add(q))
}

/// One firewall rule's exit totals: kernel and userspace counts, merged.
fn rule_json(r: &FwRuleTotals) -> Value {
    let t = r.stats.total();
    json!({"rule": r.stats.name, "index": r.index, "line": r.line, "packets": t.packets, "bytes": t.bytes,
           "kernel_packets": r.stats.kernel.packets, "kernel_bytes": r.stats.kernel.bytes,
           "user_packets": r.stats.user.packets, "user_bytes": r.stats.user.bytes})
}

fn totals_json(t: &QueueSnapshot) -> Value {
    json!({"rx": t.rx, "tx": t.tx, "drop": t.drop, "ring_full": t.ring_full, "wakeups": t.wakeups})
}

fn emit(v: Value) {
    println!("{v}");
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Packets per second with a unit, e.g. `1.23 Mpps`.
fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}

#[cfg(test)]
mod tests {
    use super::rate;

    #[test]
    fn rates_pick_a_readable_unit() {
        assert_eq!(rate(4_600_000.0), "4.60 Mpps");
        assert_eq!(rate(12_340.0), "12.3 kpps");
        assert_eq!(rate(7.0), "7 pps");
    }
}
