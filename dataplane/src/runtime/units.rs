//! The running workers, one [`Unit`] per worker plan: opening one (sockets bound, fill rings
//! primed, nothing steered to it yet), steering to it, starting it, and stopping it on its own
//! (a reload that removes its sockets) or with the rest (shutdown).
//!
//! Opening and starting are separate steps so that a reload can open every new unit — the part
//! that fails on a missing interface or a refused bind — before it disturbs a running one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use crate::config::{self, Config};
use crate::pipeline::Published;
use crate::pipeline::capture::{CaptureSink, capture_link};
use crate::stats::{HistCollector, QueueStats, hist_link};
use crate::steer::Steering;
use crate::worker::capture::{CaptureFilterCell, CaptureView};
use crate::worker::firewall::{FirewallCell, Gate};
use crate::worker::{Mailbox, PortSetup, Worker, WorkerSetup};
use crate::xsk::{FrameAccount, XskConfig, XskGroup, ZeroCopy};

use super::capture;
use super::plan::WorkerPlan;
use super::report::QueueLabel;

/// What makes two units the same worker across a reload: per socket, its port's name, the
/// interface, the queue, the forwarding peer's name and the counter slot. A unit whose key is
/// unchanged keeps running.
pub(super) type UnitKey = Vec<(String, String, u32, Option<String>, usize)>;

pub(super) fn key(config: &Config, plan: &WorkerPlan) -> UnitKey {
    plan.sockets
        .iter()
        .map(|s| {
            let port = &config.ports[s.port];
            (port.name.clone(), s.interface.clone(), s.queue, port.peer().map(str::to_owned), s.slot)
        })
        .collect()
}

/// What the controller publishes to a worker: pipelines, the firewall (with the worker's
/// index there), the capture filter.
pub(super) struct Cells<'a> {
    pub published: &'a Arc<Published>,
    pub firewall: (&'a Arc<FirewallCell>, usize),
    pub capture_filter: &'a Arc<CaptureFilterCell>,
}

/// A unit whose sockets are bound and primed, not yet steered to nor running.
pub(super) struct Opened {
    pub plan: WorkerPlan,
    pub key: UnitKey,
    pub labels: Vec<QueueLabel>,
    worker: Worker,
    hist: HistCollector,
    sink: CaptureSink,
    mailbox: Arc<Mailbox>,
}

fn xsk_config(d: &config::Dataplane) -> XskConfig {
    XskConfig {
        frame_count: d.frame_count,
        frame_size: d.frame_size,
        rx_ring: d.rx_ring,
        tx_ring: d.tx_ring,
        zero_copy: match d.zero_copy {
            config::ZeroCopyPref::Auto => ZeroCopy::Auto,
            config::ZeroCopyPref::On => ZeroCopy::On,
            config::ZeroCopyPref::Off => ZeroCopy::Off,
        },
        need_wakeup: d.need_wakeup,
    }
}

/// Opens the sockets of `plan` and builds its worker (which primes every fill ring). Steering
/// must be attached to every interface of the plan.
pub(super) fn open(config: &Config, plan: &WorkerPlan, cells: Cells<'_>, steering: &BTreeMap<String, Steering>) -> Result<Opened> {
    let Cells { published, firewall: (firewall, index), capture_filter } = cells;
    let d = &config.dataplane;
    let sockets: Vec<(String, u32)> = plan.sockets.iter().map(|s| (s.interface.clone(), s.queue)).collect();
    let group = XskGroup::open(&xsk_config(d), &sockets)?;
    let (hist, collector) = hist_link();
    let (tap, sink) = capture_link(capture::RING_BUFFERS, d.frame_size as usize);
    let mailbox = Arc::new(Mailbox::default());
    let mut ports = Vec::with_capacity(plan.sockets.len());
    for s in &plan.sockets {
        let st = steering.get(&s.interface).ok_or_else(|| anyhow!("no steering program on {}", s.interface))?;
        ports.push(PortSetup { port: s.port, peer: s.peer, queue: s.queue, ifindex: st.ifindex(), slot: s.slot });
    }
    let setup = WorkerSetup {
        published: Arc::clone(published),
        ports,
        batch_size: d.batch_size as usize,
        hist: Some(hist),
        capture: Some(tap),
        firewall: Some(Gate::new(Arc::clone(firewall), index, plan.sockets.iter().map(|s| s.interface.clone()).collect())),
        capture_filter: Some(CaptureView::new(Arc::clone(capture_filter))),
        mailbox: Some(Arc::clone(&mailbox)),
    };
    let worker = Worker::with_pipelines(group, setup)?;
    let labels = plan
        .sockets
        .iter()
        .enumerate()
        .map(|(i, s)| QueueLabel {
            port: config.ports[s.port].name.clone(),
            interface: s.interface.clone(),
            queue: s.queue,
            mode: worker.group().mode(i).to_string(),
            core: plan.core,
        })
        .collect();
    Ok(Opened { plan: plan.clone(), key: key(config, plan), labels, worker, hist: collector, sink, mailbox })
}

impl Opened {
    /// Steers the plan's queues to its sockets. Only after the worker primed its fill rings,
    /// or the first frames would find no frame to land in.
    pub fn register(&self, steering: &mut BTreeMap<String, Steering>) -> Result<()> {
        let group = self.worker.group();
        for (i, s) in self.plan.sockets.iter().enumerate() {
            let st = steering.get_mut(&s.interface).ok_or_else(|| anyhow!("no steering program on {}", s.interface))?;
            st.register_socket(s.queue, group.fd(i))
                .with_context(|| format!("register {} queue {} with the steering program", s.interface, s.queue))?;
            tracing::info!(interface = %s.interface, queue = s.queue, mode = %group.mode(i), "AF_XDP socket bound");
        }
        Ok(())
    }

    /// Undoes [`register`](Self::register) (the unit will not start).
    pub fn unregister(&self, steering: &mut BTreeMap<String, Steering>) {
        unregister(&self.plan, steering);
    }

    /// Starts the worker thread, named `name`, pinned to the plan's core, with fresh counters.
    /// Returns the unit with its histogram collector and capture sink.
    pub fn spawn(self, name: String) -> Result<(Unit, HistCollector, CaptureSink)> {
        let Opened { plan, key, labels, mut worker, hist, sink, mailbox } = self;
        let stats: Vec<Arc<QueueStats>> = (0..worker.group().len()).map(|_| Arc::new(QueueStats::new())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, stats, core, label) = (Arc::clone(&stop), stats.clone(), plan.core, name.clone());
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = %label, core, "could not pin worker to its core");
                    }
                    Ok(worker.run(&stop, &stats)?)
                })
                .context("spawn worker thread")?
        };
        Ok((Unit { name, plan, key, stats, labels, mailbox, stop, thread: Some(thread) }, hist, sink))
    }
}

/// A running worker. Dropping it stops and joins the thread.
pub(super) struct Unit {
    /// The thread's name, unique for the process's life.
    pub name: String,
    pub plan: WorkerPlan,
    pub key: UnitKey,
    pub stats: Vec<Arc<QueueStats>>,
    pub labels: Vec<QueueLabel>,
    pub mailbox: Arc<Mailbox>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<FrameAccount>>>,
}

impl Unit {
    /// Whether the thread ended on its own (an error).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the worker to stop; [`join`](Self::join) waits for it.
    pub fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the worker: it finishes what is in its rings, waits for its transmissions and
    /// reports where every frame is.
    pub fn join(mut self) -> Result<FrameAccount> {
        self.signal_stop();
        let thread = self.thread.take().ok_or_else(|| anyhow!("worker joined twice"))?;
        thread.join().map_err(|_| anyhow!("worker panicked"))?
    }

    /// Unsteers the unit's queues (the kernel gets their frames back) before it stops.
    pub fn unregister(&self, steering: &mut BTreeMap<String, Steering>) {
        unregister(&self.plan, steering);
    }
}

fn unregister(plan: &WorkerPlan, steering: &mut BTreeMap<String, Steering>) {
    for s in &plan.sockets {
        if let Some(st) = steering.get_mut(&s.interface)
            && let Err(e) = st.unregister_socket(s.queue)
        {
            tracing::warn!(interface = %s.interface, queue = s.queue, error = %e, "unregister socket");
        }
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::plan::plan;
    use std::path::Path;

    #[test]
    fn a_worker_keeps_its_key_when_other_ports_come_and_go() {
        let pair = "[[port]]\nname='a'\ninterface='x'\naction='forward'\nforward_to='b'\n\
                    [[port]]\nname='b'\ninterface='y'\naction='forward'\nforward_to='a'\n";
        let c = "[[port]]\nname='c'\ninterface='z'\naction='drop'\n";
        let before = Config::parse(pair, Path::new("t.toml")).unwrap();
        let after = Config::parse(&format!("{c}{pair}"), Path::new("t.toml")).unwrap();
        let (p0, p1) = (plan(&before), plan(&after));
        assert_eq!(p1[1].sockets[0].port, 1, "a is renumbered");
        assert_eq!(key(&before, &p0[0]), key(&after, &p1[1]));
        // Moving queue 0 to another counter slot of either side changes the pair's key.
        let moved = pair.replacen("interface='x'", "interface='x'\nqueues=[0,1]", 1).replacen("interface='y'", "interface='y'\nqueues=[1,0]", 1);
        let moved = Config::parse(&moved, Path::new("t.toml")).unwrap();
        let q0 = plan(&moved).into_iter().find(|p| p.sockets[0].queue == 0).unwrap();
        assert_ne!(key(&moved, &q0), key(&before, &p0[0]));
    }
}
