//! The results of a run and their outputs: the human summary, JSON, the latency histogram in
//! HdrHistogram's percentile-distribution text format, and an SVG plot of the latency
//! distribution and the rates over time.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use super::xsk_tx::SenderReport;

/// Rates sampled during a run (every [`super::run::SAMPLE`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    /// Packets per second sent and received over the interval ending at `t`.
    pub tx_pps: f64,
    pub rx_pps: f64,
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            samples: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What the receiver saw.
#[derive(Debug, Clone, Serialize)]
pub struct RxSummary {
    /// Unique generated frames received.
    pub received: u64,
    /// Sent and never received.
    pub lost: u64,
    pub duplicated: u64,
    /// Received after a later sequence number of the same stream.
    pub reordered: u64,
    /// Frames without a stamp (other traffic).
    pub other: u64,
    /// Frames the kernel dropped before the receiver's sockets (ring full, no fill frame).
    pub kernel_dropped: u64,
    /// Generated frames received on each receive queue (`0..rx_queues`), duplicates included.
    pub queues: Vec<u64>,
    pub latency_ns: Percentiles,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    pub engine: &'static str,
    pub interface: String,
    pub senders: Vec<SenderReport>,
    pub sent: u64,
    pub elapsed_s: f64,
    /// Target in packets per second (None: full speed).
    pub target_pps: Option<f64>,
    pub achieved_pps: f64,
    /// Bits per second on the wire (frames plus FCS, preamble and gap).
    pub achieved_bps: f64,
    pub mean_frame: f64,
    pub rx: Option<RxSummary>,
    pub samples: Vec<Sample>,
}

impl GenReport {
    /// The human-readable summary.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let mode = self
            .senders
            .iter()
            .find_map(|r| r.mode)
            .map_or(String::new(), |m| format!(" ({m})"));
        let _ = writeln!(
            s,
            "sent {} packets in {:.3} s on {} with {}{mode}, {} sender(s)",
            self.sent,
            self.elapsed_s,
            self.interface,
            self.engine,
            self.senders.len()
        );
        let target = self.target_pps.map_or("full speed".to_string(), |t| format!("target {}", pps(t)));
        let _ = writeln!(
            s,
            "rate {} ({}), {:.1} Mbit/s on the wire, mean frame {:.0} B",
            pps(self.achieved_pps),
            target,
            self.achieved_bps / 1e6,
            self.mean_frame
        );
        if self.senders.len() > 1 {
            let per: Vec<String> = self.senders.iter().enumerate().map(|(i, r)| sender_line(i, r)).collect();
            let _ = writeln!(s, "sent per sender: {}", per.join(", "));
        }
        let behind: u64 = self.senders.iter().map(|r| r.behind).sum();
        if behind > 0 {
            let _ = writeln!(s, "senders fell behind the schedule by {behind} packets (not made up)");
        }
        if let Some(rx) = &self.rx {
            let _ = writeln!(
                s,
                "received {} lost {} duplicated {} reordered {} (other frames {}, dropped by the kernel at the receiver {})",
                rx.received, rx.lost, rx.duplicated, rx.reordered, rx.other, rx.kernel_dropped
            );
            if rx.queues.len() > 1 {
                let per: Vec<String> = rx.queues.iter().enumerate().map(|(q, n)| format!("queue {q}: {n}")).collect();
                let _ = writeln!(s, "received per queue: {}", per.join(", "));
            }
            let l = &rx.latency_ns;
            let us = |ns: u64| ns as f64 / 1e3;
            let _ = writeln!(
                s,
                "latency us: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ({} samples)",
                us(l.p50),
                us(l.p90),
                us(l.p99),
                us(l.p999),
                us(l.max),
                l.samples
            );
        }
        s
    }
}

/// "#1 (queue 1, cpu 1): 10000" — where one sender sent from, and how much.
fn sender_line(i: usize, r: &SenderReport) -> String {
    let mut at = Vec::new();
    if let Some(q) = r.queue {
        at.push(format!("queue {q}"));
    }
    if let Some(c) = r.cpu {
        at.push(format!("cpu {c}"));
    }
    let at = if at.is_empty() { String::new() } else { format!(" ({})", at.join(", ")) };
    format!("#{i}{at}: {}", r.sent)
}

/// `1234567.0` as "1.235 Mpps".
pub fn pps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.3} Mpps", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} kpps", v / 1e3)
    } else {
        format!("{v:.0} pps")
    }
}

/// The histogram in HdrHistogram's percentile-distribution format (what
/// `outputPercentileDistribution` prints and HdrHistogram's plotter reads), values in
/// microseconds, five ticks per half distance.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let scale = 1000.0;
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    if h.is_empty() {
        return out;
    }
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / scale;
        total += v.count_since_last_iteration();
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(out, "#[Max     = {:12.3}, Total count    = {:12}]", h.max() as f64 / scale, h.len());
    let _ = writeln!(out, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), h.distinct_values());
    out
}

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {reason}")]
pub struct PlotError {
    path: String,
    reason: String,
}

/// Draws the latency distribution (by percentile, "nines" axis) above the send and receive
/// rates over time, as an SVG file.
pub fn plot(path: &Path, report: &GenReport, latency: Option<&Histogram<u64>>) -> Result<(), PlotError> {
    let err = |e: &dyn std::fmt::Display| PlotError { path: path.display().to_string(), reason: e.to_string() };
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(350);

    // Latency: x = -log10(1 - percentile), so 1 = p90, 2 = p99, 3 = p99.9.
    let points: Vec<(f64, f64)> = match latency {
        Some(h) if !h.is_empty() => h
            .iter_quantiles(5)
            .map(|v| {
                let q = v.quantile_iterated_to().min(0.999_999);
                (-(1.0 - q).log10(), h.highest_equivalent(v.value_iterated_to()) as f64 / 1e3)
            })
            .collect(),
        _ => Vec::new(),
    };
    let max_x = points.iter().map(|p| p.0).fold(3.0, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&top)
        .caption("latency by percentile", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_label_formatter(&|x| format!("{:.4}%", 100.0 * (1.0 - 10f64.powf(-x))))
        .draw()
        .map_err(|e| err(&e))?;
    chart.draw_series(LineSeries::new(points, &BLUE)).map_err(|e| err(&e))?;

    let max_t = report.samples.last().map_or(1.0, |s| s.t.max(1.0));
    let max_r = report.samples.iter().map(|s| s.tx_pps.max(s.rx_pps)).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("rate over time", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_t, 0.0..max_r / 1e3)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("kpps")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(report.samples.iter().map(|s| (s.t, s.tx_pps / 1e3)), &RED))
        .map_err(|e| err(&e))?
        .label("sent")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    if report.rx.is_some() {
        chart
            .draw_series(LineSeries::new(report.samples.iter().map(|s| (s.t, s.rx_pps / 1e3)), &BLUE))
            .map_err(|e| err(&e))?
            .label("received")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Serializes a duration as seconds (a float), for JSON summaries.
pub fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram() -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        h
    }

    #[test]
    fn percentiles_of_a_uniform_histogram() {
        let p = Percentiles::of(&histogram());
        assert_eq!(p.samples, 1000);
        assert!(p.p50.abs_diff(500_000) < 1_000, "{p:?}");
        assert!(p.p99.abs_diff(990_000) < 1_000, "{p:?}");
        assert!(p.max.abs_diff(1_000_000) < 1_000, "{p:?}");
    }

    #[test]
    fn distribution_has_the_hdrhistogram_layout() {
        let text = percentile_distribution(&histogram());
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<&str>> = lines.clone().take_while(|l| !l.starts_with('#')).map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.len() > 20);
        assert_eq!(rows[0][2], "1");
        let last = rows.last().unwrap();
        assert_eq!((last[1], last[2]), ("1.000000000000", "1000"));
        let counts: Vec<u64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert!(text.contains("#[Max     =     1000.447, Total count    =         1000]"), "{text}");
    }

    #[test]
    fn human_summary_splits_senders_and_queues_only_when_there_are_several() {
        let sender = |sent, queue, cpu| SenderReport {
            sent,
            elapsed: Duration::from_secs(1),
            behind: 0,
            mode: None,
            ring_full: 0,
            queue,
            cpu,
        };
        let rx = |queues: Vec<u64>| RxSummary {
            received: queues.iter().sum(),
            lost: 0,
            duplicated: 0,
            reordered: 0,
            other: 0,
            kernel_dropped: 0,
            queues,
            latency_ns: Percentiles::of(&histogram()),
        };
        let mut report = GenReport {
            engine: "af_xdp",
            interface: "a0".into(),
            senders: vec![sender(3, Some(0), Some(0)), sender(2, Some(1), None)],
            sent: 5,
            elapsed_s: 1.0,
            target_pps: None,
            achieved_pps: 5.0,
            achieved_bps: 100.0,
            mean_frame: 60.0,
            rx: Some(rx(vec![3, 2])),
            samples: vec![],
        };
        let text = report.human();
        assert!(text.contains("sent per sender: #0 (queue 0, cpu 0): 3, #1 (queue 1): 2\n"), "{text}");
        assert!(text.contains("received per queue: queue 0: 3, queue 1: 2\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rx"]["queues"], serde_json::json!([3, 2]));
        assert_eq!((json["senders"][1]["queue"].clone(), json["senders"][1]["cpu"].clone()), (1.into(), serde_json::Value::Null));

        report.senders.truncate(1);
        report.rx = Some(rx(vec![3]));
        let text = report.human();
        assert!(!text.contains("per sender") && !text.contains("per queue"), "{text}");
        assert_eq!(serde_json::to_value(&report).unwrap()["rx"]["queues"], serde_json::json!([3]));
    }

    #[test]
    fn plot_writes_an_svg() {
        let report = GenReport {
            engine: "xsk",
            interface: "x".into(),
            senders: vec![],
            sent: 10,
            elapsed_s: 1.0,
            target_pps: None,
            achieved_pps: 10.0,
            achieved_bps: 100.0,
            mean_frame: 60.0,
            rx: None,
            samples: vec![Sample { t: 0.1, tx_pps: 5.0, rx_pps: 4.0 }, Sample { t: 0.2, tx_pps: 6.0, rx_pps: 6.0 }],
        };
        let path = std::env::temp_dir().join(format!("sluice-plot-{}.svg", std::process::id()));
        plot(&path, &report, Some(&histogram())).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("latency by percentile") && svg.contains("<polyline"), "{}", &svg[..200.min(svg.len())]);
    }
}
