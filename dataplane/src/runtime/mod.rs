//! Brings a validated config to life and takes it down again: config → steering programs →
//! AF_XDP sockets → pinned workers; signals, the periodic report and an orderly shutdown.
//!
//! This is the only module that spawns threads. Everything it starts is owned by a value whose
//! `Drop` undoes it (steering links, sockets, threads joined on every exit path), so an error
//! half-way through start-up leaves no XDP program attached and no socket open.

mod plan;
mod report;

pub use plan::{SocketAction, SocketPlan, WorkerPlan, plan};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::config::{self, Config};
use crate::stats::QueueStats;
use crate::steer::{self, Steering};
use crate::worker::{Action, Worker};
use crate::xsk::{FrameAccount, XskConfig, XskGroup, ZeroCopy};
use report::{QueueLabel, Reporter};

pub struct RunOptions {
    pub config: PathBuf,
    pub json: bool,
    pub verbose: bool,
    pub stats_interval: Duration,
}

/// Runs the dataplane until SIGINT/SIGTERM.
pub fn run(opts: &RunOptions) -> Result<()> {
    let config = Config::load(&opts.config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    raise_memlock_limit();

    let mut steering = attach_steering(&config)?;
    let plans = plan(&config);
    let mut labels = Vec::new();
    let mut workers = Vec::new();
    for (wi, p) in plans.iter().enumerate() {
        let (worker, worker_labels) = open_worker(&config, p, &mut steering)
            .with_context(|| format!("start worker {wi}"))?;
        labels.extend(worker_labels);
        workers.push((p.core, worker));
    }

    let mut reporter = Reporter::new(opts.json, opts.verbose, labels);
    reporter.started(&config, &steering, &plans);

    let running = Running::spawn(workers, Arc::clone(&stop))?;
    let started = Instant::now();
    let mut next = started + opts.stats_interval;
    while !stop.load(Ordering::Relaxed) && !running.any_finished() {
        std::thread::sleep(Duration::from_millis(20).min(opts.stats_interval));
        if Instant::now() >= next {
            reporter.tick(started.elapsed(), &running.stats());
            next += opts.stats_interval;
        }
    }

    // Stop accepting first: with the steering programs detached, nothing new reaches the rings;
    // then the workers finish what is in them and wait for their transmissions to complete.
    let steer_totals = steering
        .iter()
        .map(|(ifname, s)| s.counters().map(|c| (ifname.clone(), c)).with_context(|| format!("read steering counters of {ifname}")))
        .collect::<Result<Vec<_>>>()?;
    drop(steering);
    stop.store(true, Ordering::Relaxed);
    let stats = running.stats();
    let accounts = running.join()?;
    reporter.totals(started.elapsed(), &stats, &steer_totals, &config, &accounts);
    for (wi, a) in accounts.iter().enumerate() {
        a.check().with_context(|| format!("worker {wi}"))?;
    }
    Ok(())
}

/// One steering program per interface, attached before any socket exists so that traffic
/// reaching a queue without a socket goes to the kernel rather than nowhere.
fn attach_steering(config: &Config) -> Result<BTreeMap<String, Steering>> {
    let pref = match config.dataplane.attach {
        config::AttachPref::Auto => steer::AttachPref::Auto,
        config::AttachPref::Native => steer::AttachPref::Native,
        config::AttachPref::Generic => steer::AttachPref::Generic,
    };
    let pass: Vec<steer::PassRule> =
        config.dataplane.passthrough.iter().map(|r| steer::PassRule { proto: r.proto, port: r.port }).collect();
    let mut steering = BTreeMap::new();
    for port in &config.ports {
        if !steering.contains_key(&port.interface) {
            let s = Steering::attach(&port.interface, pref, &pass, config.dataplane.pass_local)
                .with_context(|| format!("port {}", port.name))?;
            steering.insert(port.interface.clone(), s);
        }
    }
    Ok(steering)
}

fn open_worker(config: &Config, p: &WorkerPlan, steering: &mut BTreeMap<String, Steering>) -> Result<(Worker, Vec<QueueLabel>)> {
    let d = &config.dataplane;
    let xcfg = XskConfig {
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
    };
    let sockets: Vec<(String, u32)> = p.sockets.iter().map(|s| (s.interface.clone(), s.queue)).collect();
    let group = XskGroup::open(&xcfg, &sockets)?;
    let mut labels = Vec::new();
    let mut actions = Vec::new();
    for (i, s) in p.sockets.iter().enumerate() {
        let st = steering.get_mut(&s.interface).expect("steering attached for every port interface");
        st.register_socket(s.queue, group.fd(i))
            .with_context(|| format!("register {} queue {} with the steering program", s.interface, s.queue))?;
        tracing::info!(interface = %s.interface, queue = s.queue, mode = %group.mode(i), "AF_XDP socket bound");
        labels.push(QueueLabel {
            port: config.ports[s.port].name.clone(),
            interface: s.interface.clone(),
            queue: s.queue,
            mode: group.mode(i).to_string(),
            core: p.core,
        });
        actions.push(match s.action {
            SocketAction::Drop => Action::Drop,
            SocketAction::Reflect => Action::Reflect,
            SocketAction::Forward(peer) => Action::Forward(peer),
        });
    }
    let worker = Worker::new(group, actions, d.batch_size as usize)?;
    Ok((worker, labels))
}

/// Worker threads and their counters. Dropping it stops and joins every thread.
struct Running {
    threads: Vec<Option<JoinHandle<Result<FrameAccount>>>>,
    stats: Vec<Arc<QueueStats>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    fn spawn(workers: Vec<(usize, Worker)>, stop: Arc<AtomicBool>) -> Result<Running> {
        let mut running = Running { threads: Vec::new(), stats: Vec::new(), stop };
        for (wi, (core, mut worker)) in workers.into_iter().enumerate() {
            let stats: Vec<Arc<QueueStats>> = (0..worker.group().len()).map(|_| Arc::new(QueueStats::new())).collect();
            running.stats.extend(stats.iter().cloned());
            let stop = Arc::clone(&running.stop);
            let handle = std::thread::Builder::new()
                .name(format!("sluice-w{wi}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = wi, core, "could not pin worker to its core");
                    }
                    Ok(worker.run(&stop, &stats)?)
                })
                .context("spawn worker thread")?;
            running.threads.push(Some(handle));
        }
        Ok(running)
    }

    fn stats(&self) -> Vec<crate::stats::QueueSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    fn any_finished(&self) -> bool {
        self.threads.iter().flatten().any(|h| h.is_finished())
    }

    fn join(mut self) -> Result<Vec<FrameAccount>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut accounts = Vec::new();
        for (wi, t) in self.threads.iter_mut().enumerate() {
            let handle = t.take().expect("joined once");
            let account = handle.join().map_err(|_| anyhow!("worker {wi} panicked"))??;
            accounts.push(account);
        }
        Ok(accounts)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.iter_mut().filter_map(Option::take) {
            let _ = t.join();
        }
    }
}

/// AF_XDP UMEM registration is charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
/// Lifting the limit is best effort: the defaults fit the usual 8 MiB either way.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct and has no other effect on memory.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "RLIMIT_MEMLOCK stays as it is");
    }
}
