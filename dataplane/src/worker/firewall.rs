//! The firewall in front of the pipelines: the controller publishes a compiled [`Ruleset`]
//! (or none) in a [`FirewallCell`]; each worker's [`Gate`] keeps one [`Engine`] and, at a batch
//! boundary, adopts a newly published ruleset (flows, token buckets and the counters of rules
//! that keep their name carry over, see `Engine::adopt`).
//!
//! A published version also carries one counter block per worker, into which the worker copies
//! its engine's per-rule counters from time to time (every [`PUBLISH_EVERY`] while busy, before
//! it sleeps, right after adopting and when it stops): copying n rules' counters per batch
//! would cost O(rules) per batch, which a 100,000-rule firewall cannot afford. The blocks are
//! written by their worker only (Relaxed stores) and read by the controller.
//!
//! Unlike a pipeline, an engine holds state that must outlive a sleep (its flow table), so a
//! parked worker keeps its version: a reload waits at most one idle poll for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::firewall::{Counter, Decision, Engine, IngressId, Ruleset};

/// How often a busy worker copies its engine's counters out.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// One worker's published engine counters: packets then bytes, per rule then the default.
#[derive(Debug)]
struct Block(Box<[AtomicU64]>);

impl Block {
    fn new(entries: usize) -> Block {
        Block((0..entries * 2).map(|_| AtomicU64::new(0)).collect())
    }

    fn store(&self, counters: &[Counter]) {
        for (cell, c) in self.0.chunks_exact(2).zip(counters) {
            cell[0].store(c.packets, Ordering::Relaxed);
            cell[1].store(c.bytes, Ordering::Relaxed);
        }
    }

    fn load(&self) -> Vec<Counter> {
        self.0
            .chunks_exact(2)
            .map(|c| Counter { packets: c[0].load(Ordering::Relaxed), bytes: c[1].load(Ordering::Relaxed) })
            .collect()
    }
}

/// A published firewall: the ruleset and every worker's counter block for it.
#[derive(Debug)]
pub struct FirewallVersion {
    ruleset: Arc<Ruleset>,
    blocks: Box<[Block]>,
    /// Workers that adopted this version.
    adopted: AtomicU64,
}

impl FirewallVersion {
    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.ruleset
    }

    /// Every worker's engine counters as last published (rules, then the default).
    pub fn worker_counters(&self) -> Vec<Vec<Counter>> {
        self.blocks.iter().map(Block::load).collect()
    }

    /// How many workers run this version.
    pub fn adopted(&self) -> u64 {
        self.adopted.load(Ordering::Acquire)
    }
}

/// The firewall all workers apply; `None` = no firewall.
#[derive(Debug)]
pub struct FirewallCell {
    current: ArcSwapOption<FirewallVersion>,
    generation: AtomicU64,
    workers: usize,
}

impl FirewallCell {
    /// A cell for `workers` workers (numbered `0..workers`), holding `ruleset`.
    pub fn new(workers: usize, ruleset: Option<Arc<Ruleset>>) -> FirewallCell {
        let cell = FirewallCell { current: ArcSwapOption::empty(), generation: AtomicU64::new(0), workers };
        cell.publish(ruleset);
        cell
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The version workers are moving to (or run).
    pub fn current(&self) -> Option<Arc<FirewallVersion>> {
        self.current.load_full()
    }

    /// Makes `ruleset` the firewall; workers adopt it at their next batch boundary (sleeping
    /// ones when they wake, within one idle poll). Returns the new version.
    pub fn publish(&self, ruleset: Option<Arc<Ruleset>>) -> Option<Arc<FirewallVersion>> {
        let version = ruleset.map(|ruleset| {
            let entries = ruleset.len() + 1;
            Arc::new(FirewallVersion {
                ruleset,
                blocks: (0..self.workers).map(|_| Block::new(entries)).collect(),
                adopted: AtomicU64::new(0),
            })
        });
        self.current.store(version.clone());
        self.generation.fetch_add(1, Ordering::Release);
        version
    }

    /// Waits up to `timeout` until every worker runs `version`; false on timeout.
    pub fn wait_adopted(&self, version: &FirewallVersion, timeout: Duration) -> bool {
        let start = Instant::now();
        while version.adopted() < self.workers as u64 {
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    #[inline(always)]
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One worker's firewall: its engine and where it publishes the engine's counters.
#[derive(Debug)]
pub struct Gate {
    cell: Arc<FirewallCell>,
    /// This worker's counter block in every version.
    worker: usize,
    seen: u64,
    version: Option<Arc<FirewallVersion>>,
    engine: Option<Engine>,
    /// Per group port: its interface, and the id the current ruleset gives it.
    interfaces: Box<[String]>,
    ingress: Vec<IngressId>,
    epoch: Instant,
    last_publish: Instant,
    /// Counters changed since the last publish.
    dirty: bool,
}

impl Gate {
    /// The gate of worker `worker` whose group ports sit on `interfaces` (in group order).
    /// Adopts the current version on the first [`refresh`](Self::refresh).
    pub fn new(cell: Arc<FirewallCell>, worker: usize, interfaces: Vec<String>) -> Gate {
        let n = interfaces.len();
        let seen = cell.generation().wrapping_sub(1);
        let now = Instant::now();
        Gate {
            cell,
            worker,
            seen,
            version: None,
            engine: None,
            interfaces: interfaces.into(),
            ingress: Vec::with_capacity(n),
            epoch: now,
            last_publish: now,
            dirty: false,
        }
    }

    /// At a batch boundary: adopts a newly published firewall, if any.
    #[inline]
    pub fn refresh(&mut self) {
        if self.cell.generation() != self.seen {
            self.adopt();
        }
    }

    #[cold]
    fn adopt(&mut self) {
        self.publish();
        self.seen = self.cell.generation();
        let version = self.cell.current();
        match &version {
            None => self.engine = None,
            Some(v) => {
                let rs = Arc::clone(&v.ruleset);
                self.ingress.clear();
                self.ingress.extend(self.interfaces.iter().map(|name| rs.ingress(name)));
                match &mut self.engine {
                    Some(e) => e.adopt(rs),
                    // The kernel stage of every port interface holds this ruleset's tables.
                    None => self.engine = Some(Engine::new(rs, true)),
                }
            }
        }
        self.version = version;
        self.dirty = true;
        self.publish();
        if let Some(v) = &self.version {
            v.adopted.fetch_add(1, Ordering::Release);
        }
    }

    /// Moves to another cell (the dataplane's workers were renumbered), as worker `worker`
    /// there: the engine (flows, counters) stays and adopts that cell's version at the next
    /// [`refresh`](Self::refresh). Its counts go to the old version's block first, so they are
    /// never written at the new index into a version that numbers workers the old way.
    pub fn rebind(&mut self, cell: Arc<FirewallCell>, worker: usize) {
        self.publish();
        self.seen = cell.generation().wrapping_sub(1);
        self.cell = cell;
        self.worker = worker;
    }

    /// Whether a firewall is in force.
    #[inline(always)]
    pub fn active(&self) -> bool {
        self.engine.is_some()
    }

    /// The engine clock for a batch that started at `t0`.
    #[inline(always)]
    pub fn clock(&self, t0: Instant) -> u64 {
        t0.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Classifies a frame received on group port `port`; `None` without a firewall.
    #[inline]
    pub fn classify(&mut self, port: usize, frame: &mut [u8], now: u64) -> Option<Decision> {
        let engine = self.engine.as_mut()?;
        self.dirty = true;
        Some(engine.classify(frame, self.ingress[port], now))
    }

    /// Publishes the counters if due (busy worker) — call once per busy iteration.
    #[inline]
    pub fn maybe_publish(&mut self, now: Instant) {
        if self.dirty && now.saturating_duration_since(self.last_publish) >= PUBLISH_EVERY {
            self.last_publish = now;
            self.publish();
        }
    }

    /// Copies the engine's counters to this worker's block of the version it runs.
    pub fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        if let (Some(v), Some(e)) = (&self.version, &self.engine)
            && let Some(block) = v.blocks.get(self.worker)
        {
            block.store(e.counters());
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{FirewallConfig, Verdict};
    use std::path::Path;

    fn ruleset(text: &str) -> Arc<Ruleset> {
        Arc::new(Ruleset::new(FirewallConfig::parse(text, Path::new("t.toml")).unwrap()).unwrap())
    }

    fn udp(dport: u16) -> Vec<u8> {
        crate::firewall::describe::frame(&format!("udp 10.0.0.1:1000 > 10.0.0.2:{dport}")).unwrap()
    }

    #[test]
    fn workers_adopt_at_refresh_and_counters_follow_rule_names() {
        // `match` rules run in userspace, so the engine counts them despite kernel offload.
        let v1 = "[firewall]\ndefault = \"accept\"\n[[rule]]\nname = \"dns\"\nmatch = \"udp port 53\"\naction = \"count\"\n\
                  [[rule]]\nname = \"block\"\nmatch = \"udp port 9\"\naction = \"drop\"\n";
        let cell = Arc::new(FirewallCell::new(1, Some(ruleset(v1))));
        let mut gate = Gate::new(Arc::clone(&cell), 0, vec!["eth0".into()]);
        assert!(!gate.active(), "nothing adopted before the first refresh");
        gate.refresh();
        assert_eq!(cell.current().unwrap().adopted(), 1);
        assert_eq!(gate.classify(0, &mut udp(53), 0).unwrap().verdict, Verdict::Accept);
        assert_eq!(gate.classify(0, &mut udp(9), 0).unwrap().verdict, Verdict::Drop);
        gate.publish();
        let c = cell.current().unwrap().worker_counters();
        assert_eq!(c[0].iter().map(|c| c.packets).collect::<Vec<_>>(), [1, 1, 1]);

        // v2 drops port 53 first under a new name and keeps `dns` and `block`.
        let v2 = v1.replace("[[rule]]\nname = \"dns\"", "[[rule]]\nname = \"new\"\nmatch = \"udp port 53\"\naction = \"drop\"\n[[rule]]\nname = \"dns\"");
        let version = cell.publish(Some(ruleset(&v2))).unwrap();
        assert!(!cell.wait_adopted(&version, Duration::from_millis(1)));
        assert_eq!(gate.classify(0, &mut udp(53), 0).unwrap().verdict, Verdict::Accept, "old rules until the boundary");
        gate.refresh();
        assert!(cell.wait_adopted(&version, Duration::ZERO));
        assert_eq!(gate.classify(0, &mut udp(53), 0).unwrap().verdict, Verdict::Drop);
        gate.publish();
        let c = version.worker_counters();
        // new, dns (2 before the swap), block (1), default (2 before + 0).
        assert_eq!(c[0].iter().map(|c| c.packets).collect::<Vec<_>>(), [1, 2, 1, 2]);

        cell.publish(None);
        gate.refresh();
        assert!(!gate.active());
        assert!(gate.classify(0, &mut udp(53), 0).is_none());
    }

    #[test]
    fn a_rebound_gate_carries_its_counts_to_its_new_index_only() {
        let rules = ruleset("[firewall]\ndefault = \"accept\"\n[[rule]]\nname = \"dns\"\nmatch = \"udp port 53\"\naction = \"count\"\n");
        let old = Arc::new(FirewallCell::new(1, Some(Arc::clone(&rules))));
        let mut gate = Gate::new(Arc::clone(&old), 0, vec!["eth0".into()]);
        gate.refresh();
        for _ in 0..2 {
            gate.classify(0, &mut udp(53), 0);
        }
        // Renumbered: the worker is now number 1 of 2 in a new cell with the same rules.
        let new = Arc::new(FirewallCell::new(2, Some(rules)));
        gate.rebind(Arc::clone(&new), 1);
        assert_eq!(old.current().unwrap().worker_counters()[0][0].packets, 2, "the old block got the last counts");
        gate.refresh();
        let v = new.current().unwrap();
        assert_eq!(v.adopted(), 1);
        gate.classify(0, &mut udp(53), 0);
        gate.publish();
        let c = v.worker_counters();
        assert_eq!((c[0][0].packets, c[1][0].packets), (0, 3), "counts continue at the new index, none at the old");
    }
}
