//! The controller thread — the control server (unix socket and Prometheus metrics on one mio
//! loop) serving the runtime handle — and the privilege drop that ends start-up.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};

use crate::config::{Config, ConfigError};
use crate::control::{Backend, ControlError, Server, ServerOptions};
use crate::privdrop::{self, Identity, PrivError};

use super::handle::RuntimeHandle;

/// The user and group the config asks for, resolved now so that a name that does not exist
/// fails before any interface is touched (as a config error: exit status 2).
pub(super) fn identity(config: &Config, file: &Path) -> Result<Option<Identity>> {
    let Some(user) = &config.daemon.user else {
        return Ok(None);
    };
    match privdrop::resolve(user, config.daemon.group.as_deref()) {
        Ok(id) => Ok(Some(id)),
        Err(e) if e.is_config() => {
            let key = if matches!(e, PrivError::NoGroup(_)) { "group" } else { "user" };
            Err(ConfigError::Invalid { file: file.to_owned(), key: key.into(), reason: e.to_string() }.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Becomes the configured user, keeping [`privdrop::KEEP_DEFAULT`]. Runs after every socket,
/// program and thread exists; worker threads lose their capabilities with the uid change.
pub(super) fn drop_privileges(identity: Option<&Identity>) -> Result<()> {
    if let Some(id) = identity {
        privdrop::drop_to(id, privdrop::KEEP_DEFAULT)?;
        tracing::info!(user = %id, caps = ?privdrop::KEEP_DEFAULT, "privileges dropped");
    }
    Ok(())
}

/// The running control server; dropping it stops the loop and joins the thread (the socket
/// file goes with the server).
pub(super) struct ControlThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), ControlError>>>,
}

impl ControlThread {
    /// Binds what the config asks for (`control.socket`, `metrics.listen`) and serves it on
    /// the `sluice-ctl` thread; `None` when neither is configured. SIGHUP stays with the
    /// runtime's main loop, which reloads with or without a control socket.
    pub(super) fn start(config: &Config, handle: RuntimeHandle, owner: Option<&Identity>) -> Result<Option<ControlThread>> {
        let d = &config.daemon;
        if d.control_socket.is_none() && d.metrics_listen.is_none() {
            return Ok(None);
        }
        let opts = ServerOptions {
            socket: d.control_socket.clone(),
            metrics: d.metrics_listen,
            owner: owner.map(|id| (id.uid, id.gid)),
            ..ServerOptions::new("")
        };
        let server = Server::bind(opts).context("start the control server")?;
        let stop = Arc::new(AtomicBool::new(false));
        let backend: Arc<dyn Backend> = Arc::new(handle);
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sluice-ctl".into())
            .spawn(move || server.run(backend, &flag))
            .context("spawn the control thread")?;
        Ok(Some(ControlThread { stop, thread: Some(thread) }))
    }

    /// Whether the server stopped on its own (an event-loop error).
    pub(super) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the server and reports how it ended.
    pub(super) fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow!("control thread panicked"))?.context("control server"),
            None => Ok(()),
        }
    }
}

impl Drop for ControlThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
