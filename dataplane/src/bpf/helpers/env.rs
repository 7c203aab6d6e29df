//! How a kernel helper reaches the run it serves: a per-thread pointer to the current run's
//! [`Frame`], set by the back end around each run.
//!
//! Why a thread-local and not the context pointer alone (the kernel's way): only
//! `xdp_adjust_head/tail` receive the context; `map_lookup_elem` gets a map and a key, yet must
//! know the worker's slot (per-CPU maps) and — because filters may run without a verifier —
//! which memory the key may be read from (the packet, the BPF stack, the program's maps).
//! A thread runs one filter at a time, so "the run on this thread" is exactly that state. The
//! cost per run is a few thread-local stores of pointers to stack values: no allocation, no
//! lock, no syscall. Nested runs (a helper running a filter) save and restore the pointer.
//!
//! The caller (a worker) describes itself with a [`RunEnv`] — its slot — and reads back what
//! the run decided beyond r0: the redirect target and the packet window after
//! `xdp_adjust_head/tail`. Runs outside [`RunEnv::run`] get slot 0 and report nothing, so
//! whoever runs one program from several workers (a pipeline's batch loop) runs each worker's
//! batch inside that worker's `RunEnv` — one thread-local store per batch, nothing per packet —
//! and creates the program's maps with one slot per worker (`maps`: "per-CPU means per worker
//! slot"); a slot the maps lack finds no per-CPU value.

use std::cell::Cell;
use std::ops::Range;

use super::Helpers;
use crate::bpf::maps::MapTable;

/// Where a back end keeps the BPF stack of this run, so helpers may read keys from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackArea {
    /// A memory block `[lo, hi)` (the interpreter's stack area).
    Area { lo: u64, hi: u64 },
    /// On the native stack, in the frames between the helper and the back end's entry (JIT).
    Native,
    /// The program has no stack.
    None,
}

/// Where `bpf_redirect`/`bpf_redirect_map` asked the packet to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    pub ifindex: u32,
}

/// A worker's side of its runs: who runs them (the slot per-CPU maps index) and what the last
/// run decided beyond its verdict.
#[derive(Debug, Default)]
pub struct RunEnv {
    slot: u32,
    redirect: Cell<Option<Redirect>>,
    window: Cell<Option<(usize, usize)>>,
}

thread_local! {
    static OUTER: Cell<*const RunEnv> = const { Cell::new(std::ptr::null()) };
    static FRAME: Cell<*const Frame<'static>> = const { Cell::new(std::ptr::null()) };
}

impl RunEnv {
    pub fn new(slot: u32) -> RunEnv {
        RunEnv { slot, ..RunEnv::default() }
    }

    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Runs `f` (which runs filters on this thread) with this environment.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let prev = OUTER.with(|o| o.replace(self));
        let _restore = Restore(|| OUTER.with(|o| o.set(prev)));
        f()
    }

    /// The redirect target the last run chose, if any.
    pub fn redirect(&self) -> Option<Redirect> {
        self.redirect.get()
    }

    /// The packet bytes after the last run's `xdp_adjust_head/tail`, as a range of the slice
    /// it was given; `None` when the run did not move either end.
    pub fn window(&self) -> Option<Range<usize>> {
        self.window.get().map(|(a, b)| a..b)
    }
}

/// Runs a closure when dropped (restores thread-local pointers even if the run panics).
struct Restore<F: FnMut()>(F);

impl<F: FnMut()> Drop for Restore<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// One run, as helpers see it.
pub(super) struct Frame<'a> {
    pub env: &'a RunEnv,
    pub maps: &'a MapTable,
    /// The packet slice the back end was given.
    lo: u64,
    hi: u64,
    /// The packet as the program sees it now (moved by adjust_head/tail).
    pub data: Cell<u64>,
    pub data_end: Cell<u64>,
    stack: StackArea,
    /// An address in the frame of `enter`, above every frame of the run.
    native_top: u64,
}

/// Runs `f` — one run of a program with `helpers` over the packet of `len` bytes at `data` —
/// with the helpers seeing it. Back ends call this around runs of programs whose
/// [`Helpers::needs_env`] is set.
#[inline]
pub(crate) fn enter<R>(helpers: &Helpers, data: u64, len: usize, stack: StackArea, f: impl FnOnce() -> R) -> R {
    let marker = 0u8;
    let fallback;
    let outer = OUTER.with(Cell::get);
    let env = if outer.is_null() {
        fallback = RunEnv::default();
        &fallback
    } else {
        // SAFETY: `OUTER` is non-null only inside `RunEnv::run`, which borrows the `RunEnv`
        // for as long as the pointer is set (it restores the previous value when it ends).
        unsafe { &*outer }
    };
    env.redirect.set(None);
    env.window.set(None);
    let (lo, hi) = (data, data + len as u64);
    let frame = Frame {
        env,
        maps: helpers.maps(),
        lo,
        hi,
        data: Cell::new(lo),
        data_end: Cell::new(hi),
        stack,
        native_top: std::ptr::addr_of!(marker) as u64,
    };
    let prev = FRAME.with(|c| c.replace((&frame as *const Frame<'_>).cast()));
    let result = {
        let _restore = Restore(|| FRAME.with(|c| c.set(prev)));
        f()
    };
    let (data, end) = (frame.data.get(), frame.data_end.get());
    if (data, end) != (lo, hi) {
        env.window.set(Some(((data - lo) as usize, (end - lo) as usize)));
    }
    result
}

/// Calls `f` with the current run, if a run is in progress on this thread.
#[inline]
pub(super) fn with_frame<R>(f: impl FnOnce(&Frame<'_>) -> R) -> Option<R> {
    let p = FRAME.with(Cell::get);
    // SAFETY: `FRAME` is non-null only while `enter` runs, and then points to its `frame`
    // local, which outlives the call `f` is made from.
    (!p.is_null()).then(|| f(unsafe { &*p }))
}

/// The current run's packet `(data, data_end)` after any adjust helper (interpreter: reload
/// the context after such a call).
pub(crate) fn packet_bounds() -> Option<(u64, u64)> {
    with_frame(|f| (f.data.get(), f.data_end.get()))
}

impl Frame<'_> {
    /// Whether a helper may read `[addr, addr + len)`: inside the packet slice, the run's BPF
    /// stack, or one of the program's maps.
    #[inline(never)]
    pub fn readable(&self, addr: u64, len: usize) -> bool {
        let Some(end) = addr.checked_add(len as u64) else { return false };
        if addr >= self.lo && end <= self.hi {
            return true;
        }
        let in_stack = match self.stack {
            StackArea::Area { lo, hi } => addr >= lo && end <= hi,
            StackArea::Native => {
                // Everything between this helper's frame and `enter`'s is live stack of the
                // run: the JIT's BPF stack area is in one of those frames.
                let here = 0u8;
                let sp = std::ptr::addr_of!(here) as u64;
                addr >= sp && end <= self.native_top
            }
            StackArea::None => false,
        };
        in_stack || self.maps.arena_of(addr, len).is_some()
    }

    /// Copies guest bytes at `addr` into `out`, if readable.
    #[inline]
    pub fn copy_in(&self, addr: u64, out: &mut [u8]) -> bool {
        if !self.readable(addr, out.len()) {
            return false;
        }
        // SAFETY: `readable` proved the range lies in memory live for the whole run (the
        // packet slice, the BPF stack, a map arena); the bytes are plain data.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), out.len()) };
        true
    }

    /// The map a filter's map address names, if it is one of the program's.
    #[inline]
    pub fn map(&self, addr: u64) -> Option<&crate::bpf::maps::Map> {
        self.maps.by_addr(addr)
    }

    pub fn env_redirect(&self, r: Option<Redirect>) {
        self.env.redirect.set(r);
    }

    pub fn packet_slice(&self) -> (u64, u64) {
        (self.lo, self.hi)
    }
}
