//! Every counter the daemon exports, as one snapshot, and its Prometheus text exposition
//! (format 0.0.4: `# HELP`, `# TYPE`, one sample per line, histograms as cumulative `_bucket`
//! series with `_sum` and `_count`).
//!
//! The snapshot is plain data taken by the dataplane on request; rendering does no I/O, so the
//! controller can serve it over HTTP and tests can check it byte for byte.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::QueueSnapshot;

/// Counters of one (port, queue) socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub port: String,
    pub interface: String,
    pub queue: u32,
    #[serde(with = "QueueSnapshotDef")]
    pub counters: QueueSnapshot,
}

/// `QueueSnapshot` only serializes (the stats module has no use for reading one back); the
/// client does, so it is read through serde's remote-type mirror of its public fields.
#[derive(Serialize, Deserialize)]
#[serde(remote = "QueueSnapshot")]
struct QueueSnapshotDef {
    rx: u64,
    tx: u64,
    drop: u64,
    malformed: u64,
    ring_full: u64,
    fill_empty: u64,
    wakeups: u64,
    polls: u64,
    busy_ns: u64,
    busy_pkts: u64,
}

/// Counters of one stage, summed over the port's workers: packets and bytes its filter matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEntry {
    pub port: String,
    pub id: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The steering XDP program's counters on one interface, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SteerEntryCounters {
    /// Packets the program ran on.
    pub seen: u64,
    /// Sent to an AF_XDP socket.
    pub redirected: u64,
    /// Handed to the kernel (passthrough rules, local addresses, queues without a socket).
    pub passed: u64,
    /// Dropped by the program (a redirect that failed).
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerEntry {
    pub interface: String,
    #[serde(flatten)]
    pub counters: SteerEntryCounters,
}

/// One firewall rule's counters (or the default policy's, named `default`), summed over the
/// kernel stages of every port interface and the engines of every worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwRuleEntry {
    /// Index in the firewall file's rule order (0 = first); the default policy's is the number
    /// of rules.
    pub index: usize,
    pub rule: String,
    /// Line of the rule's `[[rule]]` header; 0 for the default policy.
    pub line: usize,
    /// Counted in the steering programs (dropped or passed before AF_XDP).
    pub kernel_packets: u64,
    pub kernel_bytes: u64,
    /// Counted by the workers' engines.
    pub user_packets: u64,
    pub user_bytes: u64,
    /// Interfaces whose kernel stage runs this rule.
    #[serde(default)]
    pub kernel_on: Vec<String>,
}

impl FwRuleEntry {
    pub fn packets(&self) -> u64 {
        self.kernel_packets + self.user_packets
    }

    pub fn bytes(&self) -> u64 {
        self.kernel_bytes + self.user_bytes
    }
}

/// Monotonic totals since the daemon started.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub queues: Vec<QueueEntry>,
    pub stages: Vec<StageEntry>,
    pub steering: Vec<SteerEntry>,
    /// Per firewall rule, in rule order, then the default policy; empty without a firewall.
    pub firewall: Vec<FwRuleEntry>,
    /// Pipelines published since start, over all ports.
    pub swaps: u64,
    /// Time a worker spent on one non-empty RX batch, in nanoseconds, over all workers.
    pub batch_ns: Histogram<u64>,
}

impl MetricsSnapshot {
    /// A snapshot with no counters and an empty histogram (for a dataplane with no workers
    /// yet, and for tests).
    pub fn empty() -> MetricsSnapshot {
        MetricsSnapshot {
            queues: Vec::new(),
            stages: Vec::new(),
            steering: Vec::new(),
            firewall: Vec::new(),
            swaps: 0,
            batch_ns: new_batch_histogram(),
        }
    }
}

/// The histogram shape every worker records batch times in: 1 ns to 10 s at 3 significant
/// digits, so histograms of different workers can be added.
pub fn new_batch_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("constant bounds are valid")
}

/// Upper bounds of the exported batch-time buckets: 2^8 ns (256 ns) to 2^24 ns (16.8 ms).
/// Powers of two keep the series short and the boundaries exact in hdrhistogram's buckets.
const BUCKET_SHIFTS: std::ops::RangeInclusive<u32> = 8..=24;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The snapshot in the Prometheus text format.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(4096);
    type QueueField = fn(&QueueSnapshot) -> u64;
    let queue_counters: [(&str, &str, QueueField); 9] = [
        ("sluice_rx_packets_total", "Packets taken off the queue's RX ring.", |c| c.rx),
        ("sluice_tx_packets_total", "Packets placed on the queue's TX ring.", |c| c.tx),
        ("sluice_dropped_packets_total", "Packets received on the queue and dropped (by action, malformed, or at shutdown).", |c| c.drop),
        ("sluice_malformed_packets_total", "Of the dropped packets, those too short for their action.", |c| c.malformed),
        ("sluice_tx_ring_full_total", "Packets bound for the queue's TX ring dropped because it was full.", |c| c.ring_full),
        ("sluice_fill_ring_empty_total", "Times the queue's fill ring ran dry with no free frame to refill it.", |c| c.fill_empty),
        ("sluice_wakeups_total", "Wakeup syscalls issued to get the queue's TX ring processed.", |c| c.wakeups),
        ("sluice_idle_polls_total", "Times the worker slept in poll() on the queue while idle.", |c| c.polls),
        ("sluice_busy_packets_total", "Packets processed in non-empty batches (denominator of busy seconds).", |c| c.busy_pkts),
    ];
    for (name, help, get) in queue_counters {
        header(&mut out, name, help, "counter");
        for q in &m.queues {
            let _ = writeln!(out, "{name}{{{}}} {}", queue_labels(q), get(&q.counters));
        }
    }
    header(&mut out, "sluice_busy_seconds_total", "Time spent processing non-empty RX batches of the queue.", "counter");
    for q in &m.queues {
        let _ = writeln!(out, "sluice_busy_seconds_total{{{}}} {}", queue_labels(q), q.counters.busy_ns as f64 / 1e9);
    }

    header(&mut out, "sluice_stage_packets_total", "Packets a pipeline stage's filter matched.", "counter");
    for s in &m.stages {
        let _ = writeln!(out, "sluice_stage_packets_total{{port=\"{}\",stage=\"{}\"}} {}", escape(&s.port), escape(&s.id), s.packets);
    }
    header(&mut out, "sluice_stage_bytes_total", "Bytes of the packets a pipeline stage's filter matched.", "counter");
    for s in &m.stages {
        let _ = writeln!(out, "sluice_stage_bytes_total{{port=\"{}\",stage=\"{}\"}} {}", escape(&s.port), escape(&s.id), s.bytes);
    }

    type SteerField = fn(&SteerEntryCounters) -> u64;
    let steer_counters: [(&str, &str, SteerField); 4] = [
        ("sluice_steer_seen_total", "Packets the steering XDP program ran on.", |c| c.seen),
        ("sluice_steer_redirected_total", "Packets the steering program sent to an AF_XDP socket.", |c| c.redirected),
        ("sluice_steer_passed_total", "Packets the steering program handed to the kernel.", |c| c.passed),
        ("sluice_steer_dropped_total", "Packets the steering program dropped (failed redirects).", |c| c.dropped),
    ];
    for (name, help, get) in steer_counters {
        header(&mut out, name, help, "counter");
        for s in &m.steering {
            let _ = writeln!(out, "{name}{{interface=\"{}\"}} {}", escape(&s.interface), get(&s.counters));
        }
    }

    type FwField = fn(&FwRuleEntry) -> (u64, u64);
    let fw_counters: [(&str, &str, FwField); 2] = [
        ("sluice_firewall_rule_packets_total", "Packets a firewall rule matched, by where it was counted (kernel stage or userspace engine).", |r| (r.kernel_packets, r.user_packets)),
        ("sluice_firewall_rule_bytes_total", "Bytes of the packets a firewall rule matched, by where it was counted.", |r| (r.kernel_bytes, r.user_bytes)),
    ];
    for (name, help, get) in fw_counters {
        header(&mut out, name, help, "counter");
        for r in &m.firewall {
            let (kernel, user) = get(r);
            for (path, v) in [("kernel", kernel), ("userspace", user)] {
                let _ = writeln!(out, "{name}{{index=\"{}\",rule=\"{}\",path=\"{path}\"}} {v}", r.index, escape(&r.rule));
            }
        }
    }

    header(&mut out, "sluice_pipeline_swaps_total", "Pipelines published to the workers since start.", "counter");
    let _ = writeln!(out, "sluice_pipeline_swaps_total {}", m.swaps);

    let h = &m.batch_ns;
    let name = "sluice_batch_duration_seconds";
    header(&mut out, name, "Time a worker spent processing one non-empty RX batch.", "histogram");
    for shift in BUCKET_SHIFTS {
        let le_ns = 1u64 << shift;
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {}", le_ns as f64 / 1e9, h.count_between(0, le_ns));
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.len());
    // hdrhistogram keeps no exact sum; mean × count is exact to its 3 significant digits.
    let _ = writeln!(out, "{name}_sum {}", h.mean() * h.len() as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {}", h.len());
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn queue_labels(q: &QueueEntry) -> String {
    format!("port=\"{}\",interface=\"{}\",queue=\"{}\"", escape(&q.port), escape(&q.interface), q.queue)
}

/// Label values escape backslash, double quote and newline; nothing else.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MetricsSnapshot {
        let mut m = MetricsSnapshot::empty();
        m.queues.push(QueueEntry {
            port: "a".into(),
            interface: "dut-a".into(),
            queue: 0,
            counters: QueueSnapshot { rx: 10, tx: 9, drop: 1, busy_ns: 2_000_000_000, ..QueueSnapshot::default() },
        });
        m.stages.push(StageEntry { port: "a".into(), id: "q\"x".into(), packets: 4, bytes: 256 });
        m.steering.push(SteerEntry { interface: "dut-a".into(), counters: SteerEntryCounters { seen: 12, redirected: 10, passed: 2, dropped: 0 } });
        m.firewall.push(FwRuleEntry {
            index: 0,
            rule: "block".into(),
            line: 3,
            kernel_packets: 7,
            kernel_bytes: 420,
            user_packets: 1,
            user_bytes: 60,
            kernel_on: vec!["dut-a".into()],
        });
        m.swaps = 3;
        for v in [100, 300, 300, 5_000, 100_000_000] {
            m.batch_ns.record(v).unwrap();
        }
        m
    }

    #[test]
    fn samples_and_labels() {
        let text = render(&sample());
        for want in [
            "sluice_rx_packets_total{port=\"a\",interface=\"dut-a\",queue=\"0\"} 10\n",
            "sluice_busy_seconds_total{port=\"a\",interface=\"dut-a\",queue=\"0\"} 2\n",
            "sluice_stage_packets_total{port=\"a\",stage=\"q\\\"x\"} 4\n",
            "sluice_steer_passed_total{interface=\"dut-a\"} 2\n",
            "sluice_pipeline_swaps_total 3\n",
            "sluice_firewall_rule_packets_total{index=\"0\",rule=\"block\",path=\"kernel\"} 7\n",
            "sluice_firewall_rule_bytes_total{index=\"0\",rule=\"block\",path=\"userspace\"} 60\n",
            "sluice_batch_duration_seconds_bucket{le=\"0.000000256\"} 1\n",
            "sluice_batch_duration_seconds_bucket{le=\"0.000000512\"} 3\n",
            "sluice_batch_duration_seconds_bucket{le=\"0.016777216\"} 4\n",
            "sluice_batch_duration_seconds_bucket{le=\"+Inf\"} 5\n",
            "sluice_batch_duration_seconds_count 5\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_once_before_its_samples() {
        let text = render(&sample());
        let mut typed = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} typed twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            let kind = typed.get(name).or_else(|| typed.get(family)).unwrap_or_else(|| panic!("{name} has no # TYPE before it"));
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} must end in _total");
            }
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}: value is not a number");
        }
        assert_eq!(typed.get("sluice_batch_duration_seconds").map(String::as_str), Some("histogram"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_is_close() {
        let text = render(&sample());
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("sluice_batch_duration_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKET_SHIFTS.count() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        let sum: f64 = text.lines().find_map(|l| l.strip_prefix("sluice_batch_duration_seconds_sum ")).unwrap().parse().unwrap();
        let exact = (100.0 + 300.0 + 300.0 + 5_000.0 + 100_000_000.0) / 1e9;
        assert!((sum - exact).abs() / exact < 0.001, "{sum} vs {exact}");
    }

    #[test]
    fn empty_snapshot_still_declares_every_family() {
        let text = render(&MetricsSnapshot::empty());
        assert!(text.contains("# TYPE sluice_rx_packets_total counter\n"));
        assert!(text.contains("sluice_batch_duration_seconds_count 0\n"));
    }
}
