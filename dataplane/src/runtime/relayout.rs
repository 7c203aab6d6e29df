//! A reload that adds, removes or changes ports or queues, applied without stopping the
//! workers it does not concern.
//!
//! Workers are identified by what their sockets are ([`units::key`]: port name, interface,
//! queue, forwarding peer, counter slot). A worker whose key is in both the running and the new
//! plan keeps running: its sockets, rings, counters and firewall flows stay; it is re-pointed
//! at a batch boundary to the new pipeline table (ports are renumbered) and the new firewall
//! cell (workers are renumbered). A forwarding pair shares one worker per queue index, so a
//! change to either side of a pair replaces that pair's workers.
//!
//! Order, so that a failure leaves the daemon as it was:
//! 1. compile every changed pipeline and the firewall file;
//! 2. attach steering to new interfaces (their kernel firewall stage loaded first), open and
//!    prime the new workers' sockets and steer their queues to them — none of which touches a
//!    running worker; any error here undoes exactly this and returns;
//! 3. a new worker whose queue a departing worker still holds can bind only once that worker
//!    stopped: those departing workers stop first, and if the new ones then fail to open, the
//!    stopped ones are started again as they were (their counters restart) and the error
//!    returned;
//! 4. commit: start the new workers, re-point the kept ones, stop and join the removed ones
//!    (draining what is in their rings), detach interfaces no port uses any more, publish the
//!    new layout, retire the replaced pipelines into their ports' ledgers (stage counters carry
//!    by stage id, as in a swap).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::pipeline::swap::wait_retired;
use crate::pipeline::{Pipeline, Published};

use super::firewall::load_ruleset;
use super::handle::{ControlError, ControlState, Layout, PortControl, PortInfo, RuntimeHandle, lock, next_worker_name};
use super::plan::{WorkerPlan, plan};
use crate::xsk::XskError;

use super::units::{self, Cells, Opened, Unit};

/// How long opening a new worker keeps trying a queue the kernel still reports busy: a socket
/// closed a moment ago (a worker this reload or the previous one stopped) releases its queue
/// from a kernel workqueue, which a loaded machine may run late.
const BUSY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a kept worker may take to move to the new tables (a sleeping one wakes within
/// one idle poll), and a replaced pipeline to be let go.
const REBIND_TIMEOUT: Duration = Duration::from_secs(2);

fn failed(what: impl std::fmt::Display, e: &anyhow::Error) -> ControlError {
    ControlError::Layout(format!("{what}: {e:#}"))
}

/// Whether any socket of `a` sits on a queue a socket of `b` uses.
fn share_queue(a: &WorkerPlan, b: &WorkerPlan) -> bool {
    a.sockets.iter().any(|s| b.sockets.iter().any(|t| s.interface == t.interface && s.queue == t.queue))
}

/// Applies `new`, whose ports or queues differ from the running ones; see the module doc.
pub(super) fn apply(handle: &RuntimeHandle, control: &mut ControlState, new: Config) -> Result<Vec<String>, ControlError> {
    let shared = &handle.shared;
    if shared.captures.running() {
        return Err(ControlError::Layout("ports or queues changed while a capture runs: stop the capture first".into()));
    }
    let old_layout = handle.layout();
    let new_ports = PortInfo::of(&new);
    let mut lines = Vec::new();

    // 1. Pipelines: a port that keeps its name, setup and pipeline keeps its compiled code.
    let mut pipelines = Vec::with_capacity(new.ports.len());
    for (p, info) in new.ports.iter().zip(&new_ports) {
        let old = old_layout.ports.iter().position(|o| o.name == p.name);
        let spec = p.pipeline();
        let same_setup = old.filter(|&i| old_layout.ports[i] == *info);
        let current = same_setup.map(|i| old_layout.published.current(i)).filter(|c| *c.spec() == spec);
        let pipeline = match (current, same_setup) {
            (Some(c), _) => c,
            (None, Some(i)) => Arc::new(
                Pipeline::compile_cached(&spec, &info.env(), &mut control.ports[i].cache)
                    .map_err(|source| ControlError::Rejected { port: p.name.clone(), source })?,
            ),
            (None, None) => Arc::new(
                Pipeline::compile(&spec, &info.env()).map_err(|source| ControlError::Rejected { port: p.name.clone(), source })?,
            ),
        };
        pipelines.push(pipeline);
    }
    let rules = new.dataplane.firewall.as_deref().map(load_ruleset).transpose()?;

    // Which running workers stay (new index → old index) and which go.
    let plans = plan(&new);
    let mut units_guard = lock(&shared.units);
    let mut old: Vec<Option<Unit>> = std::mem::take(&mut *units_guard).into_iter().map(Some).collect();
    let kept: Vec<Option<usize>> =
        plans.iter().map(|p| units::key(&new, p)).map(|k| old.iter().position(|u| u.as_ref().is_some_and(|u| u.key == k))).collect();
    let removed: Vec<usize> = (0..old.len()).filter(|i| !kept.contains(&Some(*i))).collect();

    let mut steering_guard = lock(&shared.steering);
    let Some(steering) = steering_guard.as_mut() else {
        *units_guard = old.into_iter().flatten().collect();
        return Err(ControlError::Layout("the dataplane is stopping".into()));
    };
    let wanted: BTreeSet<String> = new.ports.iter().map(|p| p.interface.clone()).collect();
    let fresh_ifs: BTreeSet<String> = wanted.iter().filter(|i| !steering.contains_key(*i)).cloned().collect();
    let published = Arc::new(Published::new(pipelines));
    let cell = control.firewall.new_cell(plans.len());

    // 2. Everything that may fail without touching a running worker.
    let mut fw_maps = Vec::new();
    let mut opened: Vec<(usize, Opened)> = Vec::new();
    let mut deferred = Vec::new();
    let prepared = (|| -> Result<(), ControlError> {
        let fresh = super::attach_steering(&new, &fresh_ifs).map_err(|e| failed("attach steering", &e))?;
        steering.extend(fresh);
        for ifname in &fresh_ifs {
            let s = steering.get_mut(ifname).ok_or_else(|| ControlError::Layout(format!("steering of {ifname} vanished")))?;
            fw_maps.push((ifname.clone(), control.firewall.prepare_interface(ifname, s)?));
        }
        for (j, p) in plans.iter().enumerate() {
            if kept[j].is_some() {
                continue;
            }
            if removed.iter().any(|&i| old[i].as_ref().is_some_and(|u| share_queue(&u.plan, p))) {
                deferred.push(j);
                continue;
            }
            let cells = Cells { published: &published, firewall: (&cell, j), capture_filter: &shared.capture_filter };
            let o = open_unit(&new, p, cells, steering).map_err(|e| failed(format_args!("start worker for {}", describe(&new, p)), &e))?;
            opened.push((j, o));
        }
        for (j, o) in &opened {
            o.register(steering).map_err(|e| failed(format_args!("steer to worker for {}", describe(&new, &plans[*j])), &e))?;
        }
        Ok(())
    })();
    if let Err(e) = prepared {
        for (_, o) in &opened {
            o.unregister(steering);
        }
        drop(opened);
        for ifname in &fresh_ifs {
            steering.remove(ifname);
        }
        *units_guard = old.into_iter().flatten().collect();
        return Err(e);
    }

    // 3. Departing workers that hold a queue a new worker needs stop first.
    if !deferred.is_empty() {
        let blocking: Vec<usize> =
            removed.iter().copied().filter(|&i| old[i].as_ref().is_some_and(|u| deferred.iter().any(|&j| share_queue(&u.plan, &plans[j])))).collect();
        let mut stopped = Vec::new();
        for &i in &blocking {
            if let Some(u) = old[i].take() {
                lines.push(stopped_line(&u));
                u.unregister(steering);
                retire_unit(handle, u);
                stopped.push(i);
            }
        }
        let mut more = Vec::new();
        let reopened = (|| -> Result<(), ControlError> {
            for &j in &deferred {
                let cells = Cells { published: &published, firewall: (&cell, j), capture_filter: &shared.capture_filter };
                let o = open_unit(&new, &plans[j], cells, steering)
                    .map_err(|e| failed(format_args!("start worker for {}", describe(&new, &plans[j])), &e))?;
                o.register(steering).map_err(|e| failed(format_args!("steer to worker for {}", describe(&new, &plans[j])), &e))?;
                more.push((j, o));
            }
            Ok(())
        })();
        if let Err(e) = reopened {
            for (_, o) in opened.iter().chain(&more) {
                o.unregister(steering);
            }
            drop(opened);
            drop(more);
            // Start the stopped workers again as they ran (old tables, old indices).
            for &i in &stopped {
                let Some(u) = restart(handle, control, &old_layout.published, i, &plan(&control.config)[i], steering) else { continue };
                old[i] = Some(u);
            }
            for ifname in &fresh_ifs {
                steering.remove(ifname);
            }
            *units_guard = old.into_iter().flatten().collect();
            return Err(e);
        }
        opened.extend(more);
    }

    // 4. Commit.
    for (ifname, m) in fw_maps {
        control.firewall.add_interface(ifname, m);
    }
    let mut next: Vec<Option<Unit>> = (0..plans.len()).map(|_| None).collect();
    for (j, o) in opened {
        let label = describe(&new, &plans[j]);
        match o.spawn(next_worker_name()) {
            Ok((u, hist, sink)) => {
                adopt_unit(handle, &u, hist, sink);
                lines.push(format!("worker started for {label}"));
                next[j] = Some(u);
            }
            Err(e) => tracing::error!(worker = %label, error = %format!("{e:#}"), "start worker"),
        }
    }
    let mut tickets = Vec::new();
    for (j, i) in kept.iter().enumerate() {
        let Some(mut u) = i.and_then(|i| old[i].take()) else { continue };
        // Same sockets, renumbered ports; the thread stays on its core.
        u.plan = WorkerPlan { core: u.plan.core, sockets: plans[j].sockets.clone() };
        let ports = plans[j].sockets.iter().map(|s| s.port).collect();
        let ticket = u.mailbox.post(crate::worker::Rebind { published: Arc::clone(&published), ports, firewall: Some((Arc::clone(&cell), j)) });
        tickets.push((Arc::clone(&u.mailbox), ticket));
        next[j] = Some(u);
    }
    for (mailbox, ticket) in tickets {
        if !mailbox.wait(ticket, REBIND_TIMEOUT) {
            tracing::warn!("a kept worker had not moved to the new tables after {REBIND_TIMEOUT:?}");
        }
    }
    for &i in &removed {
        if let Some(u) = old[i].take() {
            lines.push(stopped_line(&u));
            u.unregister(steering);
            retire_unit(handle, u);
        }
    }
    control.firewall.install_cell(cell, &removed);
    for ifname in old_layout.ports.iter().map(|p| &p.interface).filter(|i| !wanted.contains(*i)).collect::<BTreeSet<_>>() {
        control.firewall.remove_interface(ifname);
        steering.remove(ifname);
        lines.push(format!("interface {ifname}: steering detached"));
    }
    for ifname in &fresh_ifs {
        lines.push(format!("interface {ifname}: steering attached"));
    }
    drop(steering_guard);
    let units: Vec<Unit> = next.into_iter().flatten().collect();
    shared.layout.store(Arc::new(Layout::new(&new, Arc::clone(&published), &units)));
    *units_guard = units;
    drop(units_guard);

    // The old table goes; each replaced pipeline's counts move to its port's ledger.
    let old_ports = Arc::clone(&old_layout.ports);
    let old_published = Arc::clone(&old_layout.published);
    drop(old_layout);
    let mut old_control: Vec<Option<PortControl>> = std::mem::take(&mut control.ports).into_iter().map(Some).collect();
    let mut old_pipes: Vec<Option<Arc<Pipeline>>> = (0..old_ports.len()).map(|i| Some(old_published.current(i))).collect();
    drop(old_published);
    for (j, p) in new.ports.iter().enumerate() {
        let i = old_ports.iter().position(|o| o.name == p.name);
        let mut pc = i.and_then(|i| old_control[i].take()).unwrap_or_else(PortControl::new);
        let current = published.current(j);
        match i.and_then(|i| old_pipes[i].take()) {
            None => lines.push(format!("port {}: added", p.name)),
            Some(prev) if Arc::ptr_eq(&prev, &current) => {}
            Some(prev) => {
                pc.ledger.retire(wait_retired(prev, REBIND_TIMEOUT), current.spec());
                pc.generation += 1;
                shared.swaps.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                lines.push(format!("port {}: pipeline replaced ({} stages)", p.name, current.stages().len()));
            }
        }
        control.ports.push(pc);
    }
    for (o, pipe) in old_ports.iter().zip(old_pipes) {
        if pipe.is_some() {
            lines.push(format!("port {}: removed", o.name));
        }
    }
    control.config = new.clone();
    if let Some(line) = handle.replace_firewall(control, new.dataplane.firewall.clone(), rules)? {
        lines.push(line);
    }
    Ok(lines)
}

/// [`units::open`], retried while the queue is busy (see [`BUSY_TIMEOUT`]).
fn open_unit(
    config: &Config,
    p: &WorkerPlan,
    cells: Cells<'_>,
    steering: &std::collections::BTreeMap<String, crate::steer::Steering>,
) -> anyhow::Result<Opened> {
    let until = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let Cells { published, firewall, capture_filter } = &cells;
        let attempt = Cells { published, firewall: *firewall, capture_filter };
        match units::open(config, p, attempt, steering) {
            Err(e) if std::time::Instant::now() < until && e.chain().any(|c| c.downcast_ref::<XskError>().is_some_and(XskError::is_busy)) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `port q0 + peer q0` for messages.
fn describe(config: &Config, p: &WorkerPlan) -> String {
    p.sockets.iter().map(|s| format!("{} ({} q{})", config.ports[s.port].name, s.interface, s.queue)).collect::<Vec<_>>().join(" + ")
}

fn stopped_line(u: &Unit) -> String {
    format!("worker stopped for {}", u.labels.iter().map(|l| format!("{} q{}", l.port, l.queue)).collect::<Vec<_>>().join(" + "))
}

/// Adds a started worker's histogram collector and capture ring.
fn adopt_unit(handle: &RuntimeHandle, u: &Unit, hist: crate::stats::HistCollector, sink: crate::pipeline::capture::CaptureSink) {
    let mut h = lock(&handle.shared.hist);
    h.names.push(u.name.clone());
    h.collectors.push(hist);
    handle.shared.captures.add_sink(u.name.clone(), sink);
}

/// Stops and joins a worker (already unsteered), dropping its collector and ring.
fn retire_unit(handle: &RuntimeHandle, u: Unit) {
    let name = u.name.clone();
    match u.join() {
        Ok(account) => {
            if let Err(e) = account.check() {
                tracing::error!(worker = %name, error = %e, "frame accounting of a stopped worker");
            }
        }
        Err(e) => tracing::error!(worker = %name, error = %format!("{e:#}"), "stop worker"),
    }
    let mut h = lock(&handle.shared.hist);
    if let Some(at) = h.names.iter().position(|n| *n == name) {
        h.names.remove(at);
        h.collectors.remove(at);
    }
    handle.shared.captures.remove_sink(&name);
}

/// Starts again, as it ran, worker `index` of the running plan (the rollback of step 3).
fn restart(
    handle: &RuntimeHandle,
    control: &ControlState,
    published: &Arc<Published>,
    index: usize,
    p: &WorkerPlan,
    steering: &mut std::collections::BTreeMap<String, crate::steer::Steering>,
) -> Option<Unit> {
    let cells = Cells { published, firewall: (control.firewall.cell(), index), capture_filter: &handle.shared.capture_filter };
    let result = open_unit(&control.config, p, cells, steering).and_then(|o| {
        o.register(steering)?;
        o.spawn(next_worker_name())
    });
    match result {
        Ok((u, hist, sink)) => {
            adopt_unit(handle, &u, hist, sink);
            Some(u)
        }
        Err(e) => {
            tracing::error!(worker = %describe(&control.config, p), error = %format!("{e:#}"), "restart a stopped worker after a failed reload");
            None
        }
    }
}
