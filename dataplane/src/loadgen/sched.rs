//! Scheduling of the generator's threads: pinning to a core and, when asked, a real-time
//! priority for senders. On a loaded machine a normal thread is routinely descheduled for
//! milliseconds, which shows up as gaps and bursts on the wire; SCHED_FIFO wakes it as soon as
//! its timer fires. Only threads that sleep between batches may have it: a spinning SCHED_FIFO
//! thread is throttled by the kernel (by default 50 ms of every second) and starves
//! `ksoftirqd` on its core.

/// The SCHED_FIFO priority used: low, above every normal thread, below kernel RT threads.
pub const RT_PRIORITY: i32 = 10;

/// Gives the calling thread SCHED_FIFO at [`RT_PRIORITY`].
pub fn set_realtime() -> std::io::Result<()> {
    super::sys::set_fifo(RT_PRIORITY)
}

/// Pins the calling thread to `core` (if given) and makes it real-time (if `realtime`); a
/// refusal is logged, not fatal: the run goes on with normal scheduling.
pub fn prepare_thread(core: Option<core_affinity::CoreId>, realtime: bool) {
    if let Some(c) = core
        && !core_affinity::set_for_current(c)
    {
        tracing::warn!(core = c.id, "could not pin thread");
    }
    if realtime && let Err(e) = set_realtime() {
        tracing::warn!("could not make thread real-time (SCHED_FIFO): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realtime_is_granted_to_root_or_refused_cleanly() {
        let result = std::thread::spawn(set_realtime).join().expect("thread");
        match result {
            Ok(()) => {}
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}"),
        }
    }
}
