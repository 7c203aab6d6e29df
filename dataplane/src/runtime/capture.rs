//! Writing captures: while one runs, a thread drains every worker's capture ring into a pcap
//! file (through [`pcapio::Writer`](crate::pcapio::Writer), the writer of `sluice capture` and
//! `sluice filter`); starting and stopping it are control commands. A capture fed by `sample`
//! stages and rules, or, when started with a tcpdump `filter`, by that filter alone (compiled
//! here, published to the workers for the capture's lifetime, see `worker::capture`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use crate::pcapio::{LINKTYPE_ETHERNET, PcapIoError, Writer};
use crate::pipeline::capture::CaptureSink;
use crate::worker::capture::{CaptureFilter, CaptureFilterCell, CaptureFilterError};

/// How often the writer drains the rings: a ring holds [`RING_BUFFERS`] samples per worker.
const DRAIN_EVERY: Duration = Duration::from_millis(2);
/// Samples in flight per worker.
pub const RING_BUFFERS: usize = 1024;
/// How long stopping a filtered capture waits for the workers to let go of its filter.
const FILTER_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("a capture to {} is already running", .0.display())]
    Running(PathBuf),
    #[error("no capture is running")]
    NotRunning,
    #[error("{0}")]
    Filter(#[from] CaptureFilterError),
    #[error("{0}")]
    Create(PcapIoError),
    #[error("{0}")]
    Write(PcapIoError),
    #[error("spawn the capture writer: {0}")]
    Spawn(std::io::Error),
    #[error("the capture writer panicked")]
    Panicked,
}

/// What to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    pub path: PathBuf,
    /// Only this config port's samples; all when `None`.
    pub port: Option<usize>,
    pub limit: Option<u64>,
    pub snaplen: u32,
    /// A tcpdump expression: capture the matching frames of `port` (all ports when `None`)
    /// instead of what `sample` stages and rules pick.
    pub filter: Option<String>,
}

/// A capture's state, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureReport {
    pub request: CaptureRequest,
    pub packets: u64,
    /// Samples lost for want of a ring buffer while it ran.
    pub dropped: u64,
    pub running: bool,
}

struct Active {
    request: CaptureRequest,
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    missed_at_start: u64,
    thread: JoinHandle<Result<(), CaptureError>>,
}

/// The capture rings of every worker and the capture running on them, if any.
pub struct Captures {
    /// Per worker (by thread name), its ring. Locked by the writer thread while it drains
    /// and by the controller; never by a worker.
    sinks: Arc<Mutex<Vec<(String, CaptureSink)>>>,
    active: Mutex<Option<Active>>,
    /// Where a filtered capture's filter is published to the workers.
    filter: Arc<CaptureFilterCell>,
}

impl Captures {
    /// The capture rings of every worker (by worker name), and the cell the workers read
    /// capture filters from.
    pub fn new(sinks: Vec<(String, CaptureSink)>, filter: Arc<CaptureFilterCell>) -> Captures {
        Captures { sinks: Arc::new(Mutex::new(sinks)), active: Mutex::new(None), filter }
    }

    /// Adds the ring of a worker a reload started.
    pub fn add_sink(&self, worker: String, sink: CaptureSink) {
        lock(&self.sinks).push((worker, sink));
    }

    /// Drops the ring of a worker a reload stopped.
    pub fn remove_sink(&self, worker: &str) {
        lock(&self.sinks).retain(|(w, _)| w != worker);
    }

    /// Whether a capture is writing now.
    pub fn running(&self) -> bool {
        self.current().is_some_and(|r| r.running)
    }

    fn missed(&self) -> u64 {
        lock(&self.sinks).iter().map(|(_, s)| s.missed()).sum()
    }

    fn set_active(&self, on: bool) {
        for (_, s) in lock(&self.sinks).iter() {
            s.set_active(on);
        }
    }

    pub fn start(&self, request: CaptureRequest) -> Result<CaptureReport, CaptureError> {
        let mut active = lock(&self.active);
        if let Some(a) = active.as_ref() {
            if !a.thread.is_finished() {
                return Err(CaptureError::Running(a.request.path.clone()));
            }
            // A capture that hit its limit ended by itself: collect it before the next.
            let _ = active.take().map(|a| a.thread.join());
        }
        // The filter compiles before the file is created: a bad expression leaves no file.
        let filter = request.filter.as_deref().map(|e| CaptureFilter::compile(e, request.port)).transpose()?;
        let writer = open(&request.path, request.snaplen)?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (sinks, stop, written, req) = (Arc::clone(&self.sinks), Arc::clone(&stop), Arc::clone(&written), request.clone());
            std::thread::Builder::new()
                .name("sluice-capture".into())
                .spawn(move || write_loop(&sinks, writer, &req, &stop, &written))
                .map_err(CaptureError::Spawn)?
        };
        if let Some(f) = filter {
            // Nothing to wait for: no filter is published while no capture runs.
            self.filter.replace(Some(Arc::new(f)), Duration::ZERO);
        }
        self.set_active(true);
        *active = Some(Active { request: request.clone(), stop, written, missed_at_start: self.missed(), thread });
        Ok(CaptureReport { request, packets: 0, dropped: 0, running: true })
    }

    pub fn stop(&self) -> Result<CaptureReport, CaptureError> {
        let a = self.active.lock().unwrap_or_else(PoisonError::into_inner).take().ok_or(CaptureError::NotRunning)?;
        self.set_active(false);
        if self.filter.current().is_some() && !self.filter.replace(None, FILTER_GRACE) {
            tracing::warn!("a worker still held the capture filter after {FILTER_GRACE:?}");
        }
        a.stop.store(true, Ordering::Relaxed);
        a.thread.join().map_err(|_| CaptureError::Panicked)??;
        Ok(CaptureReport {
            packets: a.written.load(Ordering::Relaxed),
            dropped: self.missed() - a.missed_at_start,
            running: false,
            request: a.request,
        })
    }

    /// The running (or self-ended, not yet stopped) capture.
    pub fn current(&self) -> Option<CaptureReport> {
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        active.as_ref().map(|a| CaptureReport {
            request: a.request.clone(),
            packets: a.written.load(Ordering::Relaxed),
            dropped: self.missed() - a.missed_at_start,
            running: !a.thread.is_finished(),
        })
    }
}

impl Drop for Captures {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic (no multi-step updates under it).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open(path: &Path, snaplen: u32) -> Result<Writer, CaptureError> {
    // The header's snaplen bounds every packet's *original* length for some readers
    // (pcap-file refuses orig_len > snaplen), so it stays at the usual maximum while the
    // requested snaplen only truncates what is stored.
    Writer::create(path, LINKTYPE_ETHERNET, snaplen.max(65535)).map_err(CaptureError::Create)
}

fn write_loop(
    sinks: &Mutex<Vec<(String, CaptureSink)>>,
    mut writer: Writer,
    req: &CaptureRequest,
    stop: &AtomicBool,
    written: &AtomicU64,
) -> Result<(), CaptureError> {
    let limit = req.limit.unwrap_or(u64::MAX);
    let mut n = 0u64;
    let mut failed = None;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let sinks = lock(sinks);
        for (_, sink) in sinks.iter() {
            sink.drain(|s| {
                if n >= limit || failed.is_some() || req.port.is_some_and(|p| p != s.port as usize) {
                    return;
                }
                let keep = s.data.len().min(req.snaplen as usize);
                let ts = s.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                match writer.write(ts, s.orig_len, &s.data[..keep]) {
                    Ok(()) => n += 1,
                    Err(e) => failed = Some(e),
                }
            });
        }
        written.store(n, Ordering::Relaxed);
        if let Some(e) = failed {
            return Err(CaptureError::Write(e));
        }
        if n >= limit {
            for (_, s) in sinks.iter() {
                s.set_active(false);
            }
        }
        drop(sinks);
        if stopping || n >= limit {
            break;
        }
        std::thread::sleep(DRAIN_EVERY);
    }
    writer.finish().map(drop).map_err(CaptureError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::capture::capture_link;

    #[test]
    fn capture_writes_a_pcap_and_honours_the_limit() {
        let (tap, sink) = capture_link(8, 64);
        let captures = Captures::new(vec![("w0".into(), sink)], Arc::default());
        let path = std::env::temp_dir().join(format!("sluice-capture-{}.pcap", std::process::id()));
        let req = CaptureRequest { path: path.clone(), port: None, limit: Some(3), snaplen: 20, filter: None };
        captures.start(req.clone()).unwrap();
        assert!(matches!(captures.start(req.clone()), Err(CaptureError::Running(_))));
        for i in 0..5u8 {
            while !tap.take(0, 0, 0, &[i; 50]) && tap.active() {
                std::thread::yield_now();
            }
        }
        let report = captures.stop().unwrap();
        assert_eq!((report.packets, report.running), (3, false));
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut reader = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(p) = reader.next_packet() {
            let p = p.unwrap();
            seen.push((p.orig_len, p.data.len(), p.data[0]));
        }
        assert_eq!(seen, vec![(50, 20, 0), (50, 20, 1), (50, 20, 2)]);
        assert!(matches!(captures.stop(), Err(CaptureError::NotRunning)));
    }
}
