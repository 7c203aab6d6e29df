//! The few raw syscalls on AF_XDP socket descriptors that xsk-rs does not expose the way the
//! dataplane needs them: a TX kick that reports `EAGAIN` (xsk-rs swallows it, but copy mode
//! sends at most a budget of frames per kick and signals the rest with `EAGAIN`), raising that
//! budget, a multi-socket `poll`, and the `XDP_OPTIONS` query that says whether a bound socket
//! runs in zero-copy mode; and lifting RLIMIT_MEMLOCK, which UMEM registration is charged to.

use std::io;
use std::os::fd::RawFd;

/// What one `sendto` kick achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The kernel processed the TX ring.
    Done,
    /// The kernel stopped early (copy-mode budget, completion ring full, device busy); frames
    /// may remain on the TX ring and another kick will move them.
    Again,
    /// The device is down or out of buffers; retrying now will not help.
    Busy,
}

/// Asks the kernel to transmit what is on the socket's TX ring.
pub(crate) fn kick_tx(fd: RawFd) -> io::Result<Kick> {
    loop {
        // SAFETY: a zero-length send with null buffer and address is how AF_XDP is told to
        // process its TX ring; the kernel reads no user memory for it. `fd` is a socket the
        // caller owns for the duration of the call.
        let rc = unsafe {
            libc::sendto(
                fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(Kick::Done);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(Kick::Again),
            Some(libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => return Ok(Kick::Busy),
            _ => return Err(err),
        }
    }
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes. Returns whether any was
/// readable; an interrupted sleep counts as "nothing yet".
pub(crate) fn poll_readable(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<bool> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `pollfd` of the length passed;
    // the kernel writes only the `revents` fields inside it.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINTR) {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0)
}

/// Whether the bound socket `fd` runs in zero-copy mode, as the kernel reports it.
pub(crate) fn is_zero_copy(fd: RawFd) -> io::Result<bool> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: `opts` and `len` are valid for writes and `len` holds the size of `opts`, so the
    // kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
}

/// `XDP_MAX_TX_SKB_BUDGET` (Linux 6.17+), not yet in the libc crate.
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Sets how many frames one copy-mode kick may transmit (the kernel accepts 32 up to the TX
/// ring size). Fails with `ENOPROTOOPT` on kernels without the option.
pub(crate) fn set_tx_budget(fd: RawFd, budget: u32) -> io::Result<()> {
    // SAFETY: `budget` is a valid u32 and the length passed is its size; the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            (&budget as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// UMEM registration is charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK; lifting
/// the limit is best effort, since the default UMEM size fits the usual 8 MiB either way.
pub(crate) fn raise_memlock_limit() -> io::Result<()> {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct and touches no other memory.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_on_a_closed_descriptor_is_an_error() {
        let err = kick_tx(-1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn options_on_a_non_xdp_socket_is_an_error() {
        assert!(is_zero_copy(-1).is_err());
    }

    #[test]
    fn poll_with_nothing_ready_times_out() {
        let mut fds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }];
        assert!(!poll_readable(&mut fds, 1).unwrap());
    }
}
