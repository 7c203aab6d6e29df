//! Plain-text result tables and the machine facts (TSC rate) needed to read them.

use std::fmt::Write as _;

/// A table printed with columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            let cells: Vec<String> = (0..cols)
                .map(|i| {
                    let cell = row.get(i).map(String::as_str).unwrap_or("");
                    // Numbers right-aligned so their digits line up; text left-aligned.
                    if cell.parse::<f64>().is_err() {
                        format!("{cell:<w$}", w = width[i])
                    } else {
                        format!("{cell:>w$}", w = width[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        };
        line(&mut out, &self.header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", rule.join("  "));
        for row in &self.rows {
            line(&mut out, row);
        }
        out
    }
}

/// The TSC rate in GHz. With `constant_tsc` (required here) the TSC ticks at the nominal
/// rate that the kernel reports as "cpu MHz" on a VM with a known TSC frequency; cycles per
/// packet are derived from nanoseconds with it rather than read with rdtsc (no unsafe here).
pub fn tsc_ghz() -> Option<f64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !cpuinfo.contains("constant_tsc") {
        return None;
    }
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some(mhz / 1000.0)
}

pub fn mpps(packets: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        packets as f64 / secs / 1e6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns() {
        let mut t = Table::new(&["what", "Mpps"]);
        t.row(vec!["sender".into(), "9.50".into()]);
        t.row(vec!["x".into(), "10.25".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "what    Mpps");
        assert_eq!(lines[1], "------  -----");
        assert_eq!(lines[2], "sender   9.50");
        assert_eq!(lines[3], "x       10.25");
    }

    #[test]
    fn mpps_handles_zero_time() {
        assert_eq!(mpps(5_000_000, 2.0), 2.5);
        assert_eq!(mpps(1, 0.0), 0.0);
    }
}
