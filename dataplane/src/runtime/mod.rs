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
mod relayout;
mod report;
mod units;

pub use capture::{CaptureError, CaptureReport, CaptureRequest, Captures};
pub use firewall::{FirewallError, FwRuleTotals, kernel_tables, load_ruleset};
pub use handle::{ControlError, FirewallSummary, PortInfo, RuntimeHandle, SwapOutcome};
pub use plan::{SocketPlan, WorkerPlan, plan};
pub use report::QueueLabel;

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
use crate::stats::QueueSnapshot;
use crate::steer::{self, SteerCounters, Steering};
use crate::worker::capture::CaptureFilterCell;
use crate::xsk::FrameAccount;
use handle::SharedParts;
use report::Reporter;
use units::Cells;

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

    let (labels, _): (Vec<_>, Vec<_>) = handle.labelled_stats().into_iter().unzip();
    let mut reporter = Reporter::new(opts.json, opts.verbose, labels);
    handle.with_steering(|s| {
        if let Some(s) = s {
            reporter.started(&config, s, &dataplane.plans());
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
            let (labels, now): (Vec<_>, Vec<_>) = handle.labelled_stats().into_iter().unzip();
            reporter.relabel(&labels);
            reporter.tick(started.elapsed(), &now);
            next += opts.stats_interval;
        }
    }
    // The control plane goes first, so no command races the shutdown.
    controller.stop()?;
    drop(handle);
    let done = dataplane.shutdown()?;
    reporter.relabel(&done.labels);
    reporter.totals(started.elapsed(), &done.stats, &done.steering, &done.config, &done.accounts, &done.firewall);
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
/// (Self::shutdown) does the same in order and reports. The workers and the layout live in
/// the handle, because a reload through it may add and remove workers.
pub struct Dataplane {
    handle: RuntimeHandle,
    stopped: bool,
}

/// What a stopped dataplane leaves behind.
#[derive(Debug)]
pub struct Shutdown {
    pub stats: Vec<QueueSnapshot>,
    /// The queue each of `stats` belongs to.
    pub labels: Vec<QueueLabel>,
    pub steering: Vec<(String, SteerCounters)>,
    pub accounts: Vec<FrameAccount>,
    /// Every firewall rule's final counters, kernel and userspace merged (empty without a
    /// firewall).
    pub firewall: Vec<FwRuleTotals>,
    /// The config in force at the end (reloads included).
    pub config: Config,
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
        let mut steering = attach_steering(&config, &config.ports.iter().map(|p| p.interface.clone()).collect())?;
        let plans = plan(&config);
        // The kernel stage is loaded before any socket is registered, so no frame reaches a
        // worker unfiltered by it.
        let fw = firewall::FirewallControl::start(&mut steering, plans.len(), config.dataplane.firewall.clone(), rules)?;
        let capture_filter = Arc::new(CaptureFilterCell::default());
        let mut opened = Vec::new();
        for (wi, p) in plans.iter().enumerate() {
            let cells = Cells { published: &published, firewall: (fw.cell(), wi), capture_filter: &capture_filter };
            opened.push(units::open(&config, p, cells, &steering).with_context(|| format!("start worker {wi}"))?);
        }
        for o in &opened {
            o.register(&mut steering)?;
        }
        let mut running = Vec::new();
        let mut hists = Vec::new();
        let mut sinks = Vec::new();
        for o in opened {
            let (unit, hist, sink) = o.spawn(handle::next_worker_name())?;
            hists.push(hist);
            sinks.push((unit.name.clone(), sink));
            running.push(unit);
        }
        let handle = RuntimeHandle::new(SharedParts {
            config,
            config_path,
            published,
            units: running,
            hist: hists,
            captures: Captures::new(sinks, Arc::clone(&capture_filter)),
            capture_filter,
            steering,
            firewall: fw,
        });
        Ok(Dataplane { handle, stopped: false })
    }

    pub fn handle(&self) -> RuntimeHandle {
        self.handle.clone()
    }

    /// The running workers' plans, in order.
    pub fn plans(&self) -> Vec<WorkerPlan> {
        self.handle.plans()
    }

    /// Whether a worker stopped on its own (an error).
    pub fn any_finished(&self) -> bool {
        self.handle.any_worker_finished()
    }

    /// Every socket's counters, in plan order.
    pub fn stats(&self) -> Vec<QueueSnapshot> {
        self.handle.labelled_stats().into_iter().map(|(_, s)| s).collect()
    }

    /// Stops accepting (steering detached, so nothing new reaches the rings), lets the
    /// workers finish what is in them and wait for their transmissions, joins them.
    pub fn shutdown(mut self) -> Result<Shutdown> {
        if self.stopped {
            return Err(anyhow!("dataplane already stopped"));
        }
        self.stopped = true;
        let _ = self.handle.captures().stop();
        let steering = self.handle.take_steering().unwrap_or_default();
        let steer_totals = steering
            .iter()
            .map(|(ifname, s)| s.counters().map(|c| (ifname.clone(), c)).with_context(|| format!("read steering counters of {ifname}")))
            .collect::<Result<Vec<_>>>()?;
        drop(steering);
        let units = self.handle.take_units();
        for u in &units {
            u.signal_stop();
        }
        let queues: Vec<_> = units.iter().flat_map(|u| u.labels.iter().cloned().zip(u.stats.iter().cloned())).collect();
        let mut accounts = Vec::new();
        for (wi, u) in units.into_iter().enumerate() {
            accounts.push(u.join().with_context(|| format!("worker {wi}"))?);
        }
        // Read after the joins: a stopping worker publishes what it drained.
        let (labels, stats) = queues.into_iter().map(|(l, s)| (l, s.snapshot())).unzip();
        // After the join every engine has published its last counts; the kernel maps
        // outlive their detached programs, held by the firewall control.
        let (_, firewall) = self.handle.firewall_totals();
        Ok(Shutdown { stats, labels, steering: steer_totals, accounts, firewall, config: self.handle.config() })
    }
}

impl Drop for Dataplane {
    /// Handles may outlive the dataplane (a control server's): the steering programs and the
    /// workers go now, not with the last handle.
    fn drop(&mut self) {
        drop(self.handle.take_steering());
        drop(self.handle.take_units());
    }
}

/// One steering program per interface of `interfaces`, attached before any socket exists so
/// that traffic reaching a queue without a socket goes to the kernel rather than nowhere.
fn attach_steering(config: &Config, interfaces: &std::collections::BTreeSet<String>) -> Result<BTreeMap<String, Steering>> {
    let pref = match config.dataplane.attach {
        config::AttachPref::Auto => steer::AttachPref::Auto,
        config::AttachPref::Native => steer::AttachPref::Native,
        config::AttachPref::Generic => steer::AttachPref::Generic,
    };
    let pass: Vec<steer::PassRule> =
        config.dataplane.passthrough.iter().map(|r| steer::PassRule { proto: r.proto, port: r.port }).collect();
    let mut steering = BTreeMap::new();
    for ifname in interfaces {
        let port = config.ports.iter().find(|p| &p.interface == ifname).map_or("?", |p| p.name.as_str());
        let s = Steering::attach(ifname, pref, &pass, config.dataplane.pass_local).with_context(|| format!("port {port}"))?;
        steering.insert(ifname.clone(), s);
    }
    Ok(steering)
}

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
