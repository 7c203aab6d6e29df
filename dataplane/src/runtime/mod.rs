//! Brings a validated config to life and takes it down again: config → steering programs →
//! AF_XDP sockets → pinned workers; signals, the periodic report and an orderly shutdown.
//!
//! This is the only module that spawns threads. Everything it starts is owned by a value whose
//! `Drop` undoes it (steering links, sockets, threads joined on every exit path), so an error
//! half-way through start-up leaves no XDP program attached and no socket open.

mod backend;
mod capture;
mod firewall;
mod handle;
mod plan;
mod report;

pub use capture::{CaptureError, CaptureReport, CaptureRequest, Captures};
pub use firewall::{FirewallError, FwRuleTotals, kernel_tables, load_ruleset};
pub use handle::{ControlError, FirewallSummary, PortInfo, RuntimeHandle, SwapOutcome};
pub use plan::{SocketPlan, WorkerPlan, plan};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::config::{self, Config, ConfigError};
use crate::control::Backend;
use crate::control::server::{DEFAULT_MAX_CLIENTS, DEFAULT_MAX_OUTPUT, Server, ServerOptions};
use crate::privdrop;
use crate::pipeline::Published;
use crate::pipeline::capture::{CaptureSink, capture_link};
use crate::stats::{HistCollector, QueueSnapshot, QueueStats, hist_link};
use crate::steer::{self, SteerCounters, Steering};
use crate::worker::capture::{CaptureFilterCell, CaptureView};
use crate::worker::firewall::{FirewallCell, Gate};
use crate::worker::{PortSetup, Worker, WorkerSetup};
use crate::xsk::{FrameAccount, XskConfig, XskGroup, ZeroCopy};
use handle::{QueueRef, SharedParts};
use report::{QueueLabel, Reporter};

pub struct RunOptions {
    pub config: PathBuf,
    pub json: bool,
    pub verbose: bool,
    pub stats_interval: Duration,
}

/// Runs the dataplane until SIGINT/SIGTERM; SIGHUP reloads the config file. With a control
/// socket or a metrics listener configured, a controller thread serves them; with `user`
/// set, privileges are dropped once everything privileged is set up.
pub fn run(opts: &RunOptions) -> Result<()> {
    let config = Config::load(&opts.config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("install signal handler")?;
    }
    // Resolve the identity before touching anything, so a typo fails fast — as a config
    // error (exit status 2), the way `sluice check` reports it.
    let identity = match &config.daemon.user {
        Some(user) => match privdrop::resolve(user, config.daemon.group.as_deref()) {
            Ok(id) => Some(id),
            Err(e) if e.is_config() => {
                let key = if matches!(e, privdrop::PrivError::NoGroup(_)) { "group" } else { "user" };
                return Err(ConfigError::Invalid { file: opts.config.clone(), key: key.into(), reason: e.to_string() }.into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("user")),
        },
        None => None,
    };

    let dataplane = Dataplane::start(config.clone(), Some(opts.config.clone()))?;
    let handle = dataplane.handle();
    // The controller serves the control socket, the metrics listener, or both.
    let server = if config.daemon.control_socket.is_some() || config.daemon.metrics_listen.is_some() {
        Some(Server::bind(ServerOptions {
            socket: config.daemon.control_socket.clone(),
            metrics: config.daemon.metrics_listen,
            owner: identity.as_ref().map(|id| (id.uid, id.gid)),
            max_clients: DEFAULT_MAX_CLIENTS,
            max_output: DEFAULT_MAX_OUTPUT,
            reload_on_sighup: true,
        })?)
    } else {
        None
    };
    // Without a control server, SIGHUP is handled here.
    let hup = Arc::new(AtomicBool::new(false));
    if server.is_none() {
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)).context("install SIGHUP handler")?;
    }
    if let Some(id) = &identity {
        privdrop::drop_to(id, privdrop::KEEP_DEFAULT)?;
        tracing::info!(user = %id, "dropped privileges");
    }
    let controller = Controller::spawn(server, &handle)?;

    let mut reporter = Reporter::new(opts.json, opts.verbose, dataplane.labels.clone());
    handle.with_steering(|s| {
        if let Some(s) = s {
            reporter.started(&config, s, &dataplane.plans);
        }
    });
    let started = Instant::now();
    let mut next = started + opts.stats_interval;
    while !stop.load(Ordering::Relaxed) && !dataplane.any_finished() && !controller.finished() {
        std::thread::sleep(Duration::from_millis(20).min(opts.stats_interval));
        if hup.swap(false, Ordering::Relaxed) {
            match handle.reload() {
                Ok(changes) => tracing::info!(?changes, "config reloaded"),
                Err(e) => tracing::error!(error = %e, "config reload refused; nothing changed"),
            }
        }
        if Instant::now() >= next {
            reporter.tick(started.elapsed(), &dataplane.stats());
            next += opts.stats_interval;
        }
    }
    // The control plane goes first, so no command races the shutdown.
    controller.stop()?;
    drop(handle);
    let done = dataplane.shutdown()?;
    reporter.totals(started.elapsed(), &done.stats, &done.steering, &config, &done.accounts, &done.firewall);
    for (wi, a) in done.accounts.iter().enumerate() {
        a.check().with_context(|| format!("worker {wi}"))?;
    }
    Ok(())
}

/// The controller thread serving the control socket and metrics listener, if either is configured.
struct Controller {
    thread: Option<JoinHandle<Result<(), crate::control::server::ControlError>>>,
    stop: Arc<AtomicBool>,
}

impl Controller {
    fn spawn(server: Option<Server>, handle: &RuntimeHandle) -> Result<Controller> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match server {
            None => None,
            Some(server) => {
                let backend: Arc<dyn Backend> = Arc::new(handle.clone());
                let flag = Arc::clone(&stop);
                Some(
                    std::thread::Builder::new()
                        .name("sluice-ctl".into())
                        .spawn(move || server.run(backend, &flag))
                        .context("spawn the controller thread")?,
                )
            }
        };
        Ok(Controller { thread, stop })
    }

    fn finished(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => Ok(t.join().map_err(|_| anyhow!("the controller thread panicked"))??),
            None => Ok(()),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A started dataplane: steering attached, sockets bound, workers running their pipelines.
/// Dropping it stops everything (threads joined, programs detached); [`shutdown`]
/// (Self::shutdown) does the same in order and reports.
pub struct Dataplane {
    handle: RuntimeHandle,
    /// Taken by `shutdown`.
    running: Option<Running>,
    plans: Vec<WorkerPlan>,
    labels: Vec<QueueLabel>,
}

/// What a stopped dataplane leaves behind.
#[derive(Debug)]
pub struct Shutdown {
    pub stats: Vec<QueueSnapshot>,
    pub steering: Vec<(String, SteerCounters)>,
    pub accounts: Vec<FrameAccount>,
    /// Every firewall rule's final counters, kernel and userspace merged (empty without a
    /// firewall).
    pub firewall: Vec<FwRuleTotals>,
}

impl Dataplane {
    /// Compiles every port's pipeline, attaches steering, opens the sockets and starts one
    /// pinned worker per plan entry. `config_path` is what [`RuntimeHandle::reload`] re-reads.
    pub fn start(config: Config, config_path: Option<PathBuf>) -> Result<Dataplane> {
        if let Err(e) = crate::xsk::raise_memlock_limit() {
            tracing::debug!(error = %e, "RLIMIT_MEMLOCK stays as it is");
        }
        // Filters first: a bad one fails before any interface is touched.
        let published = Arc::new(Published::new(handle::compile_all(&config)?));
        let rules = match &config.dataplane.firewall {
            None => None,
            Some(path) => Some(load_ruleset(path).map_err(|e| firewall_config_error(config_path.as_deref(), e))?),
        };
        let mut steering = attach_steering(&config)?;
        let plans = plan(&config);
        // The kernel stage is loaded before any socket is registered, so no frame reaches a
        // worker unfiltered by it.
        let fw = firewall::FirewallControl::start(&mut steering, plans.len(), config.dataplane.firewall.clone(), rules)?;
        let mut labels = Vec::new();
        let mut workers = Vec::new();
        let mut queues = Vec::new();
        let mut hists = Vec::new();
        let mut sinks = Vec::new();
        let capture_filter = Arc::new(CaptureFilterCell::default());
        for (wi, p) in plans.iter().enumerate() {
            let cells = Cells { published: &published, firewall: (fw.cell(), wi), capture_filter: &capture_filter };
            let (worker, worker_labels, hist, sink) = open_worker(&config, p, cells, &mut steering)
                .with_context(|| format!("start worker {wi}"))?;
            labels.extend(worker_labels);
            hists.push(hist);
            sinks.push(sink);
            workers.push((p.core, worker));
        }
        let running = Running::spawn(workers)?;
        for (p, stats) in plans.iter().flat_map(|p| &p.sockets).zip(&running.stats) {
            queues.push(QueueRef { port: p.port, queue: p.queue, stats: Arc::clone(stats) });
        }
        let handle = RuntimeHandle::new(SharedParts {
            config,
            config_path,
            published,
            queues,
            workers: plans.len(),
            hist: hists,
            captures: Captures::new(sinks, capture_filter),
            steering,
            firewall: fw,
        });
        Ok(Dataplane { handle, running: Some(running), plans, labels })
    }

    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    pub fn plans(&self) -> &[WorkerPlan] {
        &self.plans
    }

    /// Whether a worker stopped on its own (an error).
    pub fn any_finished(&self) -> bool {
        self.running.as_ref().is_none_or(Running::any_finished)
    }

    /// Every socket's counters, in plan order.
    pub fn stats(&self) -> Vec<QueueSnapshot> {
        self.running.as_ref().map(Running::stats).unwrap_or_default()
    }

    /// Stops accepting (steering detached, so nothing new reaches the rings), lets the
    /// workers finish what is in them and wait for their transmissions, joins them.
    pub fn shutdown(mut self) -> Result<Shutdown> {
        let running = self.running.take().ok_or_else(|| anyhow!("dataplane already stopped"))?;
        let _ = self.handle.captures().stop();
        let steering = self.handle.take_steering().unwrap_or_default();
        let steer_totals = steering
            .iter()
            .map(|(ifname, s)| s.counters().map(|c| (ifname.clone(), c)).with_context(|| format!("read steering counters of {ifname}")))
            .collect::<Result<Vec<_>>>()?;
        drop(steering);
        running.stop.store(true, Ordering::Relaxed);
        let stats = running.stats();
        let accounts = running.join()?;
        // After the join every engine has published its last counts; the kernel maps
        // outlive their detached programs, held by the firewall control.
        let (_, firewall) = self.handle.firewall_totals();
        Ok(Shutdown { stats, steering: steer_totals, accounts, firewall })
    }
}

impl Drop for Dataplane {
    /// Handles may outlive the dataplane (a control server's): the steering programs go now,
    /// not with the last handle.
    fn drop(&mut self) {
        drop(self.handle.take_steering());
        drop(self.running.take());
    }
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

type OpenedWorker = (Worker, Vec<QueueLabel>, HistCollector, CaptureSink);

/// A firewall file that fails to read or compile is bad input, like the config naming it.
fn firewall_config_error(config_path: Option<&std::path::Path>, e: FirewallError) -> anyhow::Error {
    match e {
        FirewallError::Config(_) | FirewallError::Compile { .. } => ConfigError::Invalid {
            file: config_path.map_or_else(|| PathBuf::from("config"), PathBuf::from),
            key: "dataplane.firewall".into(),
            reason: e.to_string(),
        }
        .into(),
        FirewallError::Kernel(_) => e.into(),
    }
}

/// What the controller publishes to a worker: pipelines, the firewall (with the worker's
/// index there), the capture filter.
struct Cells<'a> {
    published: &'a Arc<Published>,
    firewall: (&'a Arc<FirewallCell>, usize),
    capture_filter: &'a Arc<CaptureFilterCell>,
}

fn open_worker(config: &Config, p: &WorkerPlan, cells: Cells<'_>, steering: &mut BTreeMap<String, Steering>) -> Result<OpenedWorker> {
    let Cells { published, firewall: (firewall, index), capture_filter } = cells;
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
    let (hist, collector) = hist_link();
    let (tap, sink) = capture_link(capture::RING_BUFFERS, d.frame_size as usize);
    let setup = WorkerSetup {
        published: Arc::clone(published),
        ports: p
            .sockets
            .iter()
            .map(|s| PortSetup {
                port: s.port,
                peer: s.peer,
                queue: s.queue,
                // Steering is attached to every port interface before any worker opens.
                ifindex: steering.get(&s.interface).map_or(0, Steering::ifindex),
                slot: s.slot,
            })
            .collect(),
        batch_size: d.batch_size as usize,
        hist: Some(hist),
        capture: Some(tap),
        firewall: Some(Gate::new(Arc::clone(firewall), index, p.sockets.iter().map(|s| s.interface.clone()).collect())),
        capture_filter: Some(CaptureView::new(Arc::clone(capture_filter))),
    };
    // Building the worker primes every fill ring; only then may the steering program send
    // packets to the sockets, or the first ones would find no frame to land in.
    let worker = Worker::with_pipelines(group, setup)?;
    let mut labels = Vec::new();
    for (i, s) in p.sockets.iter().enumerate() {
        let group = worker.group();
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
    }
    Ok((worker, labels, collector, sink))
}

/// Worker threads and their counters. Dropping it stops and joins every thread.
struct Running {
    threads: Vec<Option<JoinHandle<Result<FrameAccount>>>>,
    stats: Vec<Arc<QueueStats>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    fn spawn(workers: Vec<(usize, Worker)>) -> Result<Running> {
        let mut running = Running { threads: Vec::new(), stats: Vec::new(), stop: Arc::new(AtomicBool::new(false)) };
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
