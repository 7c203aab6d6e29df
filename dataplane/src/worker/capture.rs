//! A capture's own filter: a tcpdump expression compiled by the JIT, published to every worker
//! for a capture's lifetime (`capture_start` with `filter`). While one is published, it alone
//! decides what reaches the capture ring: each frame a socket of the filter's port receives is
//! run through it before the firewall and the pipeline (so the capture sees frames as they
//! arrived, even ones the firewall or a stage then drops), and `sample` stages and rules feed
//! no capture. Pipelines are left untouched, so stage counters and generations are too.
//!
//! Like a pipeline, the filter is stateless: a worker drops its reference before it sleeps, so
//! the controller can wait for the last worker to let go and free the code itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::bpf::Exec;
use crate::bpf::jit::JitProgram;
use crate::bpf::source::{self, Format};

/// The capture `stage` index of frames a capture filter picked.
pub const CAPTURE_FILTER_STAGE: u32 = u32::MAX - 1;

#[derive(Debug, thiserror::Error)]
#[error("capture filter `{expr}`: {reason}")]
pub struct CaptureFilterError {
    pub expr: String,
    pub reason: String,
}

/// A compiled capture filter.
pub struct CaptureFilter {
    expr: String,
    program: JitProgram,
    /// Only frames of this config port; every port when `None`.
    port: Option<usize>,
}

impl std::fmt::Debug for CaptureFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFilter").field("expr", &self.expr).field("port", &self.port).finish_non_exhaustive()
    }
}

impl CaptureFilter {
    /// Compiles a tcpdump expression (libpcap → classic BPF → JIT).
    pub fn compile(expr: &str, port: Option<usize>) -> Result<CaptureFilter, CaptureFilterError> {
        let err = |reason: String| CaptureFilterError { expr: expr.to_owned(), reason };
        let compiled = source::compile_text(expr, Format::Tcpdump).map_err(|e| err(e.to_string()))?;
        let program = JitProgram::compile(&compiled.program).map_err(|e| err(format!("jit: {e}")))?;
        Ok(CaptureFilter { expr: expr.to_owned(), program, port })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether this filter looks at frames of config port `port`.
    #[inline(always)]
    pub fn covers(&self, port: usize) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether `frame` matches (a filter fault counts as no match).
    #[inline]
    pub fn matches(&self, frame: &mut [u8]) -> bool {
        matches!(self.program.run_xdp(frame, 0, 0), Ok(v) if v != 0)
    }
}

/// The capture filter every worker applies; `None` = no filtered capture runs.
#[derive(Debug, Default)]
pub struct CaptureFilterCell {
    current: ArcSwapOption<CaptureFilter>,
    generation: AtomicU64,
}

impl CaptureFilterCell {
    /// Publishes `filter` (or none) and waits up to `timeout` until no worker holds the
    /// previous one, which is then freed here; true when it was.
    pub fn replace(&self, filter: Option<Arc<CaptureFilter>>, timeout: Duration) -> bool {
        let mut old = self.current.swap(filter);
        self.generation.fetch_add(1, Ordering::Release);
        let start = Instant::now();
        loop {
            match old.map(Arc::try_unwrap) {
                None | Some(Ok(_)) => return true,
                Some(Err(still)) => old = Some(still),
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    pub fn current(&self) -> Option<Arc<CaptureFilter>> {
        self.current.load_full()
    }
}

/// A worker's view of the capture filter.
#[derive(Debug)]
pub struct CaptureView {
    cell: Arc<CaptureFilterCell>,
    cached: Option<Arc<CaptureFilter>>,
    /// The generation `cached` is from; `u64::MAX` while parked.
    seen: u64,
}

impl CaptureView {
    pub fn new(cell: Arc<CaptureFilterCell>) -> CaptureView {
        CaptureView { cell, cached: None, seen: u64::MAX }
    }

    /// At a batch boundary: takes a newly published filter (or its removal).
    #[inline]
    pub fn refresh(&mut self) {
        let g = self.cell.generation.load(Ordering::Acquire);
        if g != self.seen {
            self.cached = self.cell.current();
            self.seen = g;
        }
    }

    /// Drops the reference before the worker sleeps.
    pub fn park(&mut self) {
        self.cached = None;
        self.seen = u64::MAX;
    }

    #[inline(always)]
    pub fn get(&self) -> Option<&CaptureFilter> {
        self.cached.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_pick_up_and_let_go_of_the_filter() {
        let cell = Arc::new(CaptureFilterCell::default());
        let mut view = CaptureView::new(Arc::clone(&cell));
        view.refresh();
        assert!(view.get().is_none());
        let f = CaptureFilter::compile("udp dst port 53", Some(1)).unwrap();
        assert!(f.covers(1) && !f.covers(0));
        assert!(cell.replace(Some(Arc::new(f)), Duration::ZERO));
        view.refresh();
        let mut dns = crate::firewall::describe::frame("udp 10.0.0.1:1000 > 10.0.0.2:53").unwrap();
        let mut other = crate::firewall::describe::frame("udp 10.0.0.1:1000 > 10.0.0.2:54").unwrap();
        let f = view.get().expect("published");
        assert!(f.matches(&mut dns) && !f.matches(&mut other));
        // The worker still holds it: removal waits, then succeeds once it parks.
        assert!(!cell.replace(None, Duration::from_millis(1)));
        view.park();
        assert!(cell.current().is_none());
        view.refresh();
        assert!(view.get().is_none());
        assert!(CaptureFilter::compile("udp port", None).unwrap_err().to_string().starts_with("capture filter `udp port`: "));
    }
}
