//! Publishing pipelines to running workers, and knowing when an old one is no longer run.
//!
//! One `ArcSwap` per port holds the current [`Pipeline`]; one generation counter says "some
//! port's pipeline changed". A worker ([`WorkerView`]) keeps its own `Arc` of each of its
//! ports' pipelines and, at every batch boundary, compares the generation with the one it
//! loaded: one Relaxed-cost load on a line nobody writes between swaps. Only when it moved does
//! the worker take the new `Arc`s. A batch therefore runs wholly on one version.
//!
//! Why Arc references held by the workers, rather than per-worker epoch counters, mark the
//! grace period: the reference a worker holds *is* the fact "I may still run this code", so
//! the controller's test (`Arc::try_unwrap` on the old pipeline succeeds) cannot be wrong
//! — there is no window between "worker acknowledged the epoch" and "worker stopped using the
//! pointer" to reason about, and no sentinel for idle workers. An idle worker drops its
//! references before it sleeps in `poll()` ([`WorkerView::park`]), so sleepers never hold up a
//! swap. Because the controller keeps its own reference until that test passes, the last
//! reference is always the controller's: code is freed, and final counters read, on the
//! controller thread, never on a worker. Workers never take per-batch reference counts
//! (which would bounce the count's cache line between cores); they clone only after a swap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::compile::Pipeline;

/// The current pipeline of every port (indexed like `Config::ports`).
#[derive(Debug)]
pub struct Published {
    cells: Box<[ArcSwap<Pipeline>]>,
    generation: AtomicU64,
}

/// How a swap ended.
#[derive(Debug)]
pub enum Retired {
    /// Every worker moved on; the old pipeline is ours alone, for its final counters.
    Done(Box<Pipeline>),
    /// A worker still held it when the wait ran out (a stuck worker): it lives on in the
    /// `Arc` and is freed by whoever lets go last. Try [`Retired::settle`] later.
    Lingering(Arc<Pipeline>),
}

impl Retired {
    /// Tries again to take sole ownership of a lingering pipeline.
    pub fn settle(self) -> Retired {
        match self {
            Retired::Lingering(old) => match Arc::try_unwrap(old) {
                Ok(p) => Retired::Done(Box::new(p)),
                Err(old) => Retired::Lingering(old),
            },
            done => done,
        }
    }
}

impl Published {
    pub fn new(pipelines: Vec<Arc<Pipeline>>) -> Published {
        Published { cells: pipelines.into_iter().map(ArcSwap::new).collect(), generation: AtomicU64::new(0) }
    }

    pub fn ports(&self) -> usize {
        self.cells.len()
    }

    /// Bumped once per publish. Acquire pairs with the Release in [`publish`](Self::publish):
    /// whoever sees the new number then loads the new pipeline.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current pipeline of `port`.
    pub fn current(&self, port: usize) -> Arc<Pipeline> {
        self.cells[port].load_full()
    }

    /// Makes `new` the pipeline of `port` and returns the one it replaces, still possibly in
    /// use by workers.
    pub fn publish(&self, port: usize, new: Arc<Pipeline>) -> Arc<Pipeline> {
        let old = self.cells[port].swap(new);
        self.generation.fetch_add(1, Ordering::Release);
        old
    }

    /// [`publish`](Self::publish), then waits up to `timeout` until no worker holds the old
    /// pipeline (every worker has passed a batch boundary since, or is asleep).
    pub fn replace(&self, port: usize, new: Arc<Pipeline>, timeout: Duration) -> Retired {
        let old = self.publish(port, new);
        wait_retired(old, timeout)
    }
}

/// Waits until `old` has no other holder; spins briefly first because a busy worker lets go
/// within one batch (microseconds), then yields, then sleeps in short steps.
pub fn wait_retired(mut old: Arc<Pipeline>, timeout: Duration) -> Retired {
    let start = Instant::now();
    let mut tries = 0u32;
    loop {
        match Arc::try_unwrap(old) {
            Ok(p) => return Retired::Done(Box::new(p)),
            Err(still) => old = still,
        }
        if start.elapsed() >= timeout {
            return Retired::Lingering(old);
        }
        tries += 1;
        if tries < 64 {
            std::hint::spin_loop();
        } else if tries < 1024 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// A worker's view of the pipelines of the ports it serves.
#[derive(Debug)]
pub struct WorkerView {
    published: Arc<Published>,
    /// Index into `published` of each of the worker's ports.
    ports: Box<[usize]>,
    /// This worker's counter block in each port's pipeline.
    slots: Box<[usize]>,
    /// Empty while parked; else one pipeline per port.
    cached: Vec<Arc<Pipeline>>,
    seen: u64,
}

impl WorkerView {
    /// `ports[i]` is the published index of the worker's port `i`, `slots[i]` its counter
    /// block there. Starts parked: the first [`refresh`](Self::refresh) loads.
    pub fn new(published: Arc<Published>, ports: Vec<usize>, slots: Vec<usize>) -> WorkerView {
        let cached = Vec::with_capacity(ports.len());
        WorkerView { published, ports: ports.into(), slots: slots.into(), cached, seen: 0 }
    }

    /// Call at every batch boundary: takes the new pipelines if any port's changed (or the
    /// worker was parked). No allocation: `cached` keeps its capacity.
    #[inline]
    pub fn refresh(&mut self) {
        let g = self.published.generation();
        if g != self.seen || self.cached.is_empty() {
            self.reload(g);
        }
    }

    #[cold]
    fn reload(&mut self, g: u64) {
        self.cached.clear();
        for &p in self.ports.iter() {
            self.cached.push(self.published.current(p));
        }
        self.seen = g;
    }

    /// Drops every reference before the worker sleeps, so it cannot delay a swap.
    pub fn park(&mut self) {
        self.cached.clear();
    }

    /// Port `i`'s pipeline and this worker's counter block in it. Only valid after
    /// [`refresh`](Self::refresh) in the same batch.
    #[inline(always)]
    pub fn get(&self, i: usize) -> (&Pipeline, usize) {
        (&self.cached[i], self.slots[i])
    }

    pub fn is_parked(&self) -> bool {
        self.cached.is_empty()
    }

    /// The publish generation the worker's pipelines are from (as of its last refresh).
    pub fn generation(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{PipelineSpec, PortEnv, spec::DefaultAction};

    fn pipe(default: DefaultAction) -> Arc<Pipeline> {
        let env = PortEnv { port: "a", peer: Some("b"), workers: 1 };
        Arc::new(Pipeline::compile(&PipelineSpec::empty(default), &env).unwrap())
    }

    #[test]
    fn workers_move_at_refresh_and_release_the_old_one() {
        let published = Arc::new(Published::new(vec![pipe(DefaultAction::Drop)]));
        let mut view = WorkerView::new(Arc::clone(&published), vec![0], vec![0]);
        view.refresh();
        assert_eq!(view.get(0).0.spec().default, DefaultAction::Drop);

        let old = published.publish(0, pipe(DefaultAction::Reflect));
        // The worker still runs the old version until its next batch boundary.
        assert_eq!(view.get(0).0.spec().default, DefaultAction::Drop);
        let Retired::Lingering(old) = wait_retired(old, Duration::from_millis(5)) else { panic!("worker still holds it") };
        view.refresh();
        assert_eq!(view.get(0).0.spec().default, DefaultAction::Reflect);
        assert!(matches!(Retired::Lingering(old).settle(), Retired::Done(_)));
    }

    #[test]
    fn a_parked_worker_does_not_hold_a_swap() {
        let published = Arc::new(Published::new(vec![pipe(DefaultAction::Drop)]));
        let mut view = WorkerView::new(Arc::clone(&published), vec![0], vec![0]);
        view.refresh();
        view.park();
        assert!(view.is_parked());
        let r = published.replace(0, pipe(DefaultAction::Reflect), Duration::from_secs(5));
        assert!(matches!(r, Retired::Done(_)));
        view.refresh();
        assert_eq!(view.get(0).0.spec().default, DefaultAction::Reflect);
    }

    #[test]
    fn swap_from_another_thread_completes_while_the_worker_runs() {
        let published = Arc::new(Published::new(vec![pipe(DefaultAction::Drop)]));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = {
            let (published, stop) = (Arc::clone(&published), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut view = WorkerView::new(published, vec![0], vec![0]);
                let mut pkt = crate::testbed::corpus::udp_64(1);
                while !stop.load(Ordering::Relaxed) {
                    view.refresh();
                    let (p, w) = view.get(0);
                    p.run(w, &mut pkt, 0, 0);
                }
            })
        };
        for i in 0..50 {
            let d = if i % 2 == 0 { DefaultAction::Reflect } else { DefaultAction::Drop };
            let r = published.replace(0, pipe(d), Duration::from_secs(10));
            assert!(matches!(r, Retired::Done(_)), "swap {i} did not complete");
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
    }
}
