//! The load generator's only `unsafe` code: the three libc calls it makes directly — the
//! stamp clock, real-time scheduling of sender threads, and interface-name lookup. Each is
//! wrapped in a safe function here; the rest of `loadgen` is compiled with
//! `#![deny(unsafe_code)]` (see `mod.rs`). BPF_PROG_RUN, program loading and attachment go
//! through aya, AF_XDP through `crate::xsk`, so they need nothing here.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
pub(super) fn clock_monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call; clock_gettime
    // with CLOCK_MONOTONIC cannot fail on Linux (a vDSO call, no syscall), so its result is
    // always written.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Gives the calling thread SCHED_FIFO at `priority`.
pub(super) fn set_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 names the
    // calling thread, and the call changes nothing but its scheduling policy.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The index of interface `ifname` in the calling thread's network namespace; None when there
/// is no such interface (or the name holds a NUL byte, which no interface name does).
pub(super) fn if_index(ifname: &str) -> Option<u32> {
    let name = CString::new(ifname).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call; if_nametoindex
    // only reads it and returns 0 when the interface does not exist.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_advances() {
        let a = clock_monotonic_ns();
        let b = clock_monotonic_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn loopback_has_an_index_and_nonsense_has_none() {
        // Every network namespace has `lo`; it is created first, but its index is not always 1.
        assert!(if_index("lo").is_some_and(|i| i > 0));
        assert_eq!(if_index("no-such-if0"), None);
        assert_eq!(if_index("l\0o"), None);
    }
}
