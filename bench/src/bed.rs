//! The veth test bed the privileged benches share: a client —veth— dut —veth— server
//! topology, the frame the client floods the dut's port a with, the cores the sender and the
//! loop under test are pinned to, and the length of a measurement window. Each bench adds
//! its own measurements to [`Bed`] in its module.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use sluice::loadgen::LiveSender;
use sluice::testbed::netns::Topology;

/// The topology and the fixed parameters every measurement on it shares.
pub struct Bed<'a> {
    pub topo: &'a Topology,
    pub frame: &'a [u8],
    pub sender_core: Option<core_affinity::CoreId>,
    pub dut_core: Option<core_affinity::CoreId>,
    pub window: Duration,
}

impl Bed<'_> {
    /// Floods the dut's port a from the client with the bed's frame (live frames, sender
    /// pinned to its core) while `during` runs; stops the sender after.
    pub fn flood_while<T>(&self, during: impl FnOnce() -> Result<T>) -> Result<T> {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let flood = scope.spawn(|| {
                self.topo.client.run_in(|| {
                    pin(self.sender_core);
                    LiveSender::new(&self.topo.client_if.name, self.frame)?.flood(&stop)
                })
            });
            let result = during();
            stop.store(true, Ordering::Relaxed);
            match flood.join() {
                Ok(sent) => {
                    sent.context("enter sender namespace")?.context("live-frames sender")?;
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
            result
        })
    }
}

/// Pins the calling thread to `core`, if there is one.
pub fn pin(core: Option<core_affinity::CoreId>) {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
}
