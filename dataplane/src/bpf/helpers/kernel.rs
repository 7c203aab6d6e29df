//! The kernel helpers sluice implements, with the kernel's ids (`enum bpf_func_id`) and
//! semantics, so C written for XDP runs unchanged.
//!
//! Every pointer a filter passes (a key, a value, data to copy) is checked against the run's
//! memory before it is read (`Frame::readable`): the packet, the BPF stack, the program's maps.
//! Map arguments are map addresses as `lddw` loads them and are resolved against the program's
//! own map table, never dereferenced. Errors are the kernel's negative errnos.

use std::cell::Cell;
use std::io::Write as _;

use super::Helper;
use super::env::{Frame, Redirect, with_frame};
use crate::bpf::Verdict;
use crate::bpf::maps::MapKind;

pub const MAP_LOOKUP_ELEM: u32 = 1;
pub const MAP_UPDATE_ELEM: u32 = 2;
pub const MAP_DELETE_ELEM: u32 = 3;
pub const KTIME_GET_NS: u32 = 5;
pub const TRACE_PRINTK: u32 = 6;
pub const GET_PRANDOM_U32: u32 = 7;
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
pub const REDIRECT: u32 = 23;
pub const CSUM_DIFF: u32 = 28;
/// `bpf_xdp_adjust_head`: moves `data`; back ends reload the context after calling it.
pub const ADJUST_HEAD: u32 = 44;
pub const REDIRECT_MAP: u32 = 51;
/// `bpf_xdp_adjust_tail`: moves `data_end`.
pub const ADJUST_TAIL: u32 = 65;
pub const RINGBUF_OUTPUT: u32 = 130;
pub const RINGBUF_RESERVE: u32 = 131;
pub const RINGBUF_SUBMIT: u32 = 132;
pub const RINGBUF_DISCARD: u32 = 133;

const fn h(id: u32, name: &'static str, func: super::HelperFn) -> Helper {
    Helper { id, name, func, unwind_on_zero: false }
}

pub(super) const HELPERS: &[Helper] = &[
    h(MAP_LOOKUP_ELEM, "map_lookup_elem", map_lookup_elem),
    h(MAP_UPDATE_ELEM, "map_update_elem", map_update_elem),
    h(MAP_DELETE_ELEM, "map_delete_elem", map_delete_elem),
    h(KTIME_GET_NS, "ktime_get_ns", ktime_get_ns),
    h(TRACE_PRINTK, "trace_printk", trace_printk),
    h(GET_PRANDOM_U32, "get_prandom_u32", get_prandom_u32),
    h(GET_SMP_PROCESSOR_ID, "get_smp_processor_id", get_smp_processor_id),
    h(REDIRECT, "redirect", redirect),
    h(CSUM_DIFF, "csum_diff", csum_diff),
    h(ADJUST_HEAD, "xdp_adjust_head", xdp_adjust_head),
    h(REDIRECT_MAP, "redirect_map", redirect_map),
    h(ADJUST_TAIL, "xdp_adjust_tail", xdp_adjust_tail),
    h(RINGBUF_OUTPUT, "ringbuf_output", ringbuf_output),
    h(RINGBUF_RESERVE, "ringbuf_reserve", ringbuf_reserve),
    h(RINGBUF_SUBMIT, "ringbuf_submit", ringbuf_submit),
    h(RINGBUF_DISCARD, "ringbuf_discard", ringbuf_discard),
];

/// The kernel's name for helper `id` (without the `bpf_` prefix), known or not to sluice.
pub fn kernel_helper_name(id: i64) -> Option<&'static str> {
    usize::try_from(id).ok().and_then(|i| KERNEL_NAMES.get(i)).copied()
}

fn errno(e: i32) -> u64 {
    -(e as i64) as u64
}

/// Keys are copied to the stack before use; larger keys than this are refused.
const KEY_MAX: usize = 512;
/// Values up to this size are copied through the stack; larger ones through the heap.
const VALUE_STACK: usize = 1024;

/// The map at `map` and its key, copied from the guest's `key` into `buf`; the errno the
/// helper returns when either is wrong.
fn map_and_key<'f, 'b>(
    f: &'f Frame<'_>,
    map: u64,
    key: u64,
    buf: &'b mut [u8; KEY_MAX],
) -> Result<(&'f crate::bpf::maps::Map, &'b [u8]), u64> {
    let m = f.map(map).ok_or(errno(libc::EINVAL))?;
    let k = buf.get_mut(..m.def().key_size as usize).ok_or(errno(libc::E2BIG))?;
    if !f.copy_in(key, k) {
        return Err(errno(libc::EFAULT));
    }
    Ok((m, k))
}

unsafe extern "C" fn map_lookup_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_frame(|f| {
        let mut buf = [0u8; KEY_MAX];
        let (m, k) = map_and_key(f, map, key, &mut buf).ok()?;
        m.lookup_addr(k, f.env.slot() as usize)
    })
    .flatten()
    .unwrap_or(0)
}

unsafe extern "C" fn map_update_elem(map: u64, key: u64, value: u64, flags: u64, _: u64) -> u64 {
    with_frame(|f| {
        let mut kbuf = [0u8; KEY_MAX];
        let (m, k) = match map_and_key(f, map, key, &mut kbuf) {
            Ok(found) => found,
            Err(e) => return e,
        };
        let vs = m.def().value_size as usize;
        let mut vbuf = [0u8; VALUE_STACK];
        let mut heap = Vec::new();
        let v = if vs <= VALUE_STACK {
            &mut vbuf[..vs]
        } else {
            heap.resize(vs, 0);
            &mut heap[..]
        };
        if !f.copy_in(value, v) {
            return errno(libc::EFAULT);
        }
        match m.update(k, v, flags, f.env.slot() as usize) {
            Ok(()) => 0,
            Err(e) => e.errno() as u64,
        }
    })
    .unwrap_or(errno(libc::EINVAL))
}

unsafe extern "C" fn map_delete_elem(map: u64, key: u64, _: u64, _: u64, _: u64) -> u64 {
    with_frame(|f| {
        let mut kbuf = [0u8; KEY_MAX];
        let (m, k) = match map_and_key(f, map, key, &mut kbuf) {
            Ok(found) => found,
            Err(e) => return e,
        };
        match m.delete(k) {
            Ok(()) => 0,
            Err(e) => e.errno() as u64,
        }
    })
    .unwrap_or(errno(libc::EINVAL))
}

/// `CLOCK_MONOTONIC` in nanoseconds, the kernel's `ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists (the call is
    // answered by the vDSO, without a syscall).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

unsafe extern "C" fn ktime_get_ns(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    monotonic_ns()
}

thread_local! {
    static PRANDOM: Cell<u64> = const { Cell::new(0) };
    /// trace_printk rate limit: (second, messages this second, suppressed).
    static PRINTK: Cell<(u64, u32, u64)> = const { Cell::new((0, 0, 0)) };
}

unsafe extern "C" fn get_prandom_u32(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    PRANDOM.with(|s| {
        let mut x = s.get();
        if x == 0 {
            // Seed per thread from the clock and the state's own address.
            x = (monotonic_ns() ^ (s as *const Cell<u64> as u64).rotate_left(32)) | 1;
        }
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 as u64
    })
}

unsafe extern "C" fn get_smp_processor_id(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    with_frame(|f| f.env.slot() as u64).unwrap_or(0)
}

fn set_redirect(f: &Frame<'_>, ifindex: u32) {
    f.env_redirect(Some(Redirect { ifindex }));
}

unsafe extern "C" fn redirect(ifindex: u64, flags: u64, _: u64, _: u64, _: u64) -> u64 {
    if flags != 0 {
        return Verdict::Aborted as u64;
    }
    with_frame(|f| set_redirect(f, ifindex as u32));
    Verdict::Redirect as u64
}

/// `bpf_redirect_map(map, key, flags)`: a device map entry names the interface; a missing
/// entry returns the action in the low two bits of `flags` (the kernel's fallback).
unsafe extern "C" fn redirect_map(map: u64, key: u64, flags: u64, _: u64, _: u64) -> u64 {
    let fallback = flags & 3;
    with_frame(|f| {
        let m = f.map(map).filter(|m| m.kind() == MapKind::DevMap)?;
        let addr = m.lookup_addr(&(key as u32).to_le_bytes(), 0)?;
        let mut v = [0u8; 4];
        m.arena().read((addr - m.arena().base()) as usize, &mut v);
        let ifindex = u32::from_le_bytes(v);
        (ifindex != 0).then(|| set_redirect(f, ifindex))
    })
    .flatten()
    .map_or(fallback, |()| Verdict::Redirect as u64)
}

/// `bpf_csum_diff(from, from_size, to, to_size, seed)`: the one's-complement sum of the `to`
/// words minus the `from` words plus `seed`, as a 32-bit partial checksum (x86's
/// `csum_partial`: 32-bit words added with end-around carry).
unsafe extern "C" fn csum_diff(from: u64, from_size: u64, to: u64, to_size: u64, seed: u64) -> u64 {
    if !(from_size | to_size).is_multiple_of(4) || from_size + to_size > 512 {
        return errno(libc::EINVAL);
    }
    with_frame(|f| {
        let mut buf = [0u8; 512];
        let (a, b) = buf.split_at_mut(from_size as usize);
        let b = &mut b[..to_size as usize];
        if (from_size > 0 && !f.copy_in(from, a)) || (to_size > 0 && !f.copy_in(to, b)) {
            return errno(libc::EFAULT);
        }
        let word = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64;
        let mut sum = seed as u32 as u64;
        sum += a.chunks_exact(4).map(|c| !word(c) & 0xffff_ffff).sum::<u64>();
        sum += b.chunks_exact(4).map(word).sum::<u64>();
        while sum >> 32 != 0 {
            sum = (sum & 0xffff_ffff) + (sum >> 32);
        }
        sum
    })
    .unwrap_or(errno(libc::EINVAL))
}

/// Ethernet header: the least a packet may shrink to.
const ETH_HLEN: i64 = 14;

unsafe extern "C" fn xdp_adjust_head(_ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_frame(|f| {
        let (lo, _) = f.packet_slice();
        let new = f.data.get() as i64 + delta as i32 as i64;
        // No headroom beyond the slice the back end was given; at least an Ethernet header.
        if new < lo as i64 || new + ETH_HLEN > f.data_end.get() as i64 {
            return errno(libc::EINVAL);
        }
        f.data.set(new as u64);
        0
    })
    .unwrap_or(errno(libc::EINVAL))
}

unsafe extern "C" fn xdp_adjust_tail(_ctx: u64, delta: u64, _: u64, _: u64, _: u64) -> u64 {
    with_frame(|f| {
        let (_, hi) = f.packet_slice();
        let new = f.data_end.get() as i64 + delta as i32 as i64;
        if new > hi as i64 || new < f.data.get() as i64 + ETH_HLEN {
            return errno(libc::EINVAL);
        }
        f.data_end.set(new as u64);
        0
    })
    .unwrap_or(errno(libc::EINVAL))
}

unsafe extern "C" fn ringbuf_output(ring: u64, data: u64, size: u64, flags: u64, _: u64) -> u64 {
    with_frame(|f| {
        let Some(m) = f.map(ring).filter(|m| m.kind() == MapKind::RingBuf) else { return errno(libc::EINVAL) };
        if flags & !3 != 0 {
            return errno(libc::EINVAL);
        }
        if !f.readable(data, size as usize) {
            return errno(libc::EFAULT);
        }
        let Some(dst) = m.ring_reserve(size) else { return errno(libc::EAGAIN) };
        // SAFETY: `data..data+size` is readable run memory (checked above) and `dst` is a
        // fresh record of `size` bytes inside the ring's arena; `copy` tolerates overlap.
        unsafe { std::ptr::copy(data as *const u8, dst as *mut u8, size as usize) };
        m.ring_commit(dst, false);
        0
    })
    .unwrap_or(errno(libc::EINVAL))
}

unsafe extern "C" fn ringbuf_reserve(ring: u64, size: u64, flags: u64, _: u64, _: u64) -> u64 {
    if flags != 0 {
        return 0;
    }
    with_frame(|f| f.map(ring).filter(|m| m.kind() == MapKind::RingBuf)?.ring_reserve(size)).flatten().unwrap_or(0)
}

fn ring_commit(data: u64, discard: bool) -> u64 {
    with_frame(|f| {
        if let Some(m) = f.maps.arena_of(data, 0).filter(|m| m.kind() == MapKind::RingBuf) {
            m.ring_commit(data, discard);
        }
    });
    0
}

unsafe extern "C" fn ringbuf_submit(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ring_commit(data, false)
}

unsafe extern "C" fn ringbuf_discard(data: u64, _flags: u64, _: u64, _: u64, _: u64) -> u64 {
    ring_commit(data, true)
}

/// Messages per second per thread before trace_printk starts dropping.
const PRINTK_PER_SEC: u32 = 20;

unsafe extern "C" fn trace_printk(fmt: u64, fmt_size: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let now = monotonic_ns() / 1_000_000_000;
    let allowed = PRINTK.with(|c| {
        let (sec, n, dropped) = c.get();
        if sec != now {
            if dropped > 0 {
                tracing::warn!(target: "sluice::bpf::trace_printk", "{dropped} messages suppressed");
            }
            c.set((now, 1, 0));
            true
        } else if n < PRINTK_PER_SEC {
            c.set((sec, n + 1, dropped));
            true
        } else {
            c.set((sec, n, dropped + 1));
            false
        }
    });
    if !allowed {
        return 0;
    }
    with_frame(|f| {
        let mut fbuf = [0u8; 256];
        let Some(fmt_bytes) = fbuf.get_mut(..fmt_size as usize) else { return errno(libc::EINVAL) };
        if !f.copy_in(fmt, fmt_bytes) {
            return errno(libc::EFAULT);
        }
        let mut out = [0u8; 512];
        let n = format_printk(f, fmt_bytes, [a1, a2, a3], &mut out);
        let text = String::from_utf8_lossy(&out[..n]);
        tracing::info!(target: "sluice::bpf::trace_printk", "{}", text.trim_end());
        n as u64
    })
    .unwrap_or(errno(libc::EINVAL))
}

/// Formats a `bpf_trace_printk` format (`%d %i %u %x %X %p %c %s %%`, with `l`/`ll`) into
/// `out`; returns the bytes written (output is cut at `out`'s end).
fn format_printk(f: &Frame<'_>, fmt: &[u8], args: [u64; 3], out: &mut [u8]) -> usize {
    let mut w = std::io::Cursor::new(out);
    let mut args = args.into_iter();
    let mut i = 0;
    let end = fmt.iter().position(|&b| b == 0).unwrap_or(fmt.len());
    let fmt = &fmt[..end];
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            let _ = w.write_all(&[c]);
            continue;
        }
        let mut long = 0;
        while fmt.get(i) == Some(&b'l') {
            long += 1;
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else { break };
        i += 1;
        if conv == b'%' {
            let _ = w.write_all(b"%");
            continue;
        }
        let v = args.next().unwrap_or(0);
        let _ = match (conv, long) {
            (b'd' | b'i', 0) => write!(w, "{}", v as i32),
            (b'd' | b'i', _) => write!(w, "{}", v as i64),
            (b'u', 0) => write!(w, "{}", v as u32),
            (b'u', _) => write!(w, "{v}"),
            (b'x', 0) => write!(w, "{:x}", v as u32),
            (b'x', _) => write!(w, "{v:x}"),
            (b'X', 0) => write!(w, "{:X}", v as u32),
            (b'X', _) => write!(w, "{v:X}"),
            (b'p', _) => write!(w, "{v:#x}"),
            (b'c', _) => w.write_all(&[v as u8]),
            (b's', _) => {
                let mut s = [0u8; 64];
                let mut n = 0;
                while n < s.len() && f.copy_in(v + n as u64, &mut s[n..n + 1]) && s[n] != 0 {
                    n += 1;
                }
                w.write_all(&s[..n])
            }
            _ => write!(w, "%{}", conv as char),
        };
    }
    w.position() as usize
}

/// Kernel helper names by id (`enum bpf_func_id`, Linux 6.x), for load-time errors.
#[rustfmt::skip]
const KERNEL_NAMES: [&str; 210] = [
    "unspec", "map_lookup_elem", "map_update_elem", "map_delete_elem", "probe_read", "ktime_get_ns", "trace_printk",
    "get_prandom_u32", "get_smp_processor_id", "skb_store_bytes", "l3_csum_replace", "l4_csum_replace", "tail_call",
    "clone_redirect", "get_current_pid_tgid", "get_current_uid_gid", "get_current_comm", "get_cgroup_classid",
    "skb_vlan_push", "skb_vlan_pop", "skb_get_tunnel_key", "skb_set_tunnel_key", "perf_event_read", "redirect",
    "get_route_realm", "perf_event_output", "skb_load_bytes", "get_stackid", "csum_diff", "skb_get_tunnel_opt",
    "skb_set_tunnel_opt", "skb_change_proto", "skb_change_type", "skb_under_cgroup", "get_hash_recalc",
    "get_current_task", "probe_write_user", "current_task_under_cgroup", "skb_change_tail", "skb_pull_data",
    "csum_update", "set_hash_invalid", "get_numa_node_id", "skb_change_head", "xdp_adjust_head", "probe_read_str",
    "get_socket_cookie", "get_socket_uid", "set_hash", "setsockopt", "skb_adjust_room", "redirect_map",
    "sk_redirect_map", "sock_map_update", "xdp_adjust_meta", "perf_event_read_value", "perf_prog_read_value",
    "getsockopt", "override_return", "sock_ops_cb_flags_set", "msg_redirect_map", "msg_apply_bytes",
    "msg_cork_bytes", "msg_pull_data", "bind", "xdp_adjust_tail", "skb_get_xfrm_state", "get_stack",
    "skb_load_bytes_relative", "fib_lookup", "sock_hash_update", "msg_redirect_hash", "sk_redirect_hash",
    "lwt_push_encap", "lwt_seg6_store_bytes", "lwt_seg6_adjust_srh", "lwt_seg6_action", "rc_repeat", "rc_keydown",
    "skb_cgroup_id", "get_current_cgroup_id", "get_local_storage", "sk_select_reuseport", "skb_ancestor_cgroup_id",
    "sk_lookup_tcp", "sk_lookup_udp", "sk_release", "map_push_elem", "map_pop_elem", "map_peek_elem",
    "msg_push_data", "msg_pop_data", "rc_pointer_rel", "spin_lock", "spin_unlock", "sk_fullsock", "tcp_sock",
    "skb_ecn_set_ce", "get_listener_sock", "skc_lookup_tcp", "tcp_check_syncookie", "sysctl_get_name",
    "sysctl_get_current_value", "sysctl_get_new_value", "sysctl_set_new_value", "strtol", "strtoul",
    "sk_storage_get", "sk_storage_delete", "send_signal", "tcp_gen_syncookie", "skb_output", "probe_read_user",
    "probe_read_kernel", "probe_read_user_str", "probe_read_kernel_str", "tcp_send_ack", "send_signal_thread",
    "jiffies64", "read_branch_records", "get_ns_current_pid_tgid", "xdp_output", "get_netns_cookie",
    "get_current_ancestor_cgroup_id", "sk_assign", "ktime_get_boot_ns", "seq_printf", "seq_write", "sk_cgroup_id",
    "sk_ancestor_cgroup_id", "ringbuf_output", "ringbuf_reserve", "ringbuf_submit", "ringbuf_discard",
    "ringbuf_query", "csum_level", "skc_to_tcp6_sock", "skc_to_tcp_sock", "skc_to_tcp_timewait_sock",
    "skc_to_tcp_request_sock", "skc_to_udp6_sock", "get_task_stack", "load_hdr_opt", "store_hdr_opt",
    "reserve_hdr_opt", "inode_storage_get", "inode_storage_delete", "d_path", "copy_from_user", "snprintf_btf",
    "seq_printf_btf", "skb_cgroup_classid", "redirect_neigh", "per_cpu_ptr", "this_cpu_ptr", "redirect_peer",
    "task_storage_get", "task_storage_delete", "get_current_task_btf", "bprm_opts_set", "ktime_get_coarse_ns",
    "ima_inode_hash", "sock_from_file", "check_mtu", "for_each_map_elem", "snprintf", "sys_bpf",
    "btf_find_by_name_kind", "sys_close", "timer_init", "timer_set_callback", "timer_start", "timer_cancel",
    "get_func_ip", "get_attach_cookie", "task_pt_regs", "get_branch_snapshot", "trace_vprintk", "skc_to_unix_sock",
    "kallsyms_lookup_name", "find_vma", "loop", "strncmp", "get_func_arg", "get_func_ret", "get_func_arg_cnt",
    "get_retval", "set_retval", "xdp_get_buff_len", "xdp_load_bytes", "xdp_store_bytes", "copy_from_user_task",
    "skb_set_tstamp", "ima_file_hash", "kptr_xchg", "map_lookup_percpu_elem", "skc_to_mptcp_sock", "dynptr_from_mem",
    "ringbuf_reserve_dynptr", "ringbuf_submit_dynptr", "ringbuf_discard_dynptr", "dynptr_read", "dynptr_write",
    "dynptr_data", "tcp_raw_gen_syncookie_ipv4", "tcp_raw_gen_syncookie_ipv6", "tcp_raw_check_syncookie_ipv4",
    "tcp_raw_check_syncookie_ipv6", "ktime_get_tai_ns", "user_ringbuf_drain",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::helpers::{Helpers, RunEnv, StackArea, enter};
    use crate::bpf::insn::build::*;
    use crate::bpf::insn::*;
    use crate::bpf::interp::Interpreter;
    use crate::bpf::jit::JitProgram;
    use crate::bpf::maps::{ANY, MapDef, MapTable};
    use crate::bpf::{Exec, Program};

    fn program(insns: Vec<Insn>, maps: MapTable) -> Program {
        let env = crate::bpf::verifier::VerifyEnv::default();
        crate::bpf::object::build_program("test", insns, &Helpers::kernel(maps), &env).unwrap().0
    }

    /// Runs on both back ends with a fresh environment; returns r0 and the environments.
    fn both(p: &Program, packet: &[u8]) -> Vec<(u64, RunEnv)> {
        let backends: [Box<dyn Exec>; 2] = [Box::new(Interpreter::new(p)), Box::new(JitProgram::compile(p).unwrap())];
        backends
            .iter()
            .map(|b| {
                let env = RunEnv::new(1);
                let mut pkt = packet.to_vec();
                let r0 = env.run(|| b.run_xdp(&mut pkt, 5, 0)).unwrap();
                (r0, env)
            })
            .collect()
    }

    fn map_ref(dst: u8, index: i32) -> [Insn; 2] {
        let [lo, hi] = lddw(dst, index as u64);
        [Insn { src: PSEUDO_MAP_FD, ..lo }, hi]
    }

    #[test]
    fn redirect_records_the_interface() {
        let p = program(vec![mov64_imm(1, 7), mov64_imm(2, 0), call_helper(REDIRECT as i32), exit()], MapTable::default());
        for (r0, env) in both(&p, &[0; 20]) {
            assert_eq!((r0, env.redirect()), (4, Some(Redirect { ifindex: 7 })));
        }
        let p = program(vec![mov64_imm(1, 7), mov64_imm(2, 1), call_helper(REDIRECT as i32), exit()], MapTable::default());
        assert_eq!(both(&p, &[0; 20])[0].0, 0, "flags make it XDP_ABORTED");
    }

    #[test]
    fn redirect_map_uses_the_device_map_or_falls_back() {
        let maps = MapTable::create(vec![MapDef::new("ports", MapKind::DevMap, 4, 4, 4)], 1).unwrap();
        maps.get(0).unwrap().set(&1u32.to_le_bytes(), &9u32.to_le_bytes(), ANY).unwrap();
        let prog = |key| {
            let mut v = map_ref(1, 0).to_vec();
            v.extend([mov64_imm(2, key), mov64_imm(3, 2), call_helper(REDIRECT_MAP as i32), exit()]);
            program(v, maps.clone())
        };
        for (r0, env) in both(&prog(1), &[0; 20]) {
            assert_eq!((r0, env.redirect()), (4, Some(Redirect { ifindex: 9 })));
        }
        for (r0, env) in both(&prog(3), &[0; 20]) {
            assert_eq!((r0, env.redirect()), (2, None), "empty entry: the fallback action in flags");
        }
    }

    #[test]
    fn csum_diff_sums_words_with_end_around_carry() {
        let p = program(
            vec![
                st(SIZE_W, 10, -8, 0x1234_5678),
                st(SIZE_W, 10, -4, 0x9abc_def0u32 as i32),
                mov64_imm(1, 0),
                mov64_imm(2, 0),
                mov64_reg(3, 10),
                alu64_imm(ALU_ADD, 3, -8),
                mov64_imm(4, 8),
                mov64_imm(5, 0),
                call_helper(CSUM_DIFF as i32),
                exit(),
            ],
            MapTable::default(),
        );
        for (r0, _) in both(&p, &[0; 20]) {
            assert_eq!(r0, 0xacf1_3568);
        }
        // Removing what was added leaves the all-ones zero of one's complement.
        let p = program(
            vec![
                st(SIZE_W, 10, -4, 0x0102_0304),
                mov64_reg(1, 10),
                alu64_imm(ALU_ADD, 1, -4),
                mov64_imm(2, 4),
                mov64_reg(3, 1),
                mov64_imm(4, 4),
                mov64_imm(5, 0),
                call_helper(CSUM_DIFF as i32),
                exit(),
            ],
            MapTable::default(),
        );
        assert_eq!(both(&p, &[0; 20])[1].0, 0xffff_ffff);
    }

    #[test]
    fn adjust_head_and_tail_move_the_packet_in_the_interpreter() {
        // r6 = ctx; adjust_head(ctx, r7); adjust_tail(ctx, -4); r0 = data_end - data, or the error.
        let prog = |delta: i32| {
            program(
                vec![
                    mov64_reg(6, 1),
                    mov64_imm(2, delta),
                    call_helper(ADJUST_HEAD as i32),
                    jmp_imm(JMP_JNE, 0, 0, 6),
                    mov64_reg(1, 6),
                    mov64_imm(2, -4),
                    call_helper(ADJUST_TAIL as i32),
                    ldx(SIZE_W, 2, 6, 0),
                    ldx(SIZE_W, 0, 6, 4),
                    alu64_reg(ALU_SUB, 0, 2),
                    exit(),
                ],
                MapTable::default(),
            )
        };
        let interp = Interpreter::new(&prog(14));
        let env = RunEnv::new(0);
        let mut pkt = [0u8; 60];
        assert_eq!(env.run(|| interp.run_xdp(&mut pkt, 1, 0)), Ok(42));
        assert_eq!(env.window(), Some(14..56));
        // No headroom beyond the slice; never below an Ethernet header.
        for delta in [-1, 47] {
            let interp = Interpreter::new(&prog(delta));
            assert_eq!(env.run(|| interp.run_xdp(&mut pkt, 1, 0)), Ok(-22i64 as u64), "delta {delta}");
            assert_eq!(env.window(), None);
        }
        // The JIT moves the window the same way.
        let jit = JitProgram::compile(&prog(14)).unwrap();
        assert_eq!(env.run(|| jit.run_xdp(&mut [0u8; 60], 1, 0)), Ok(42));
        assert_eq!(env.window(), Some(14..56));
    }

    #[test]
    fn wild_pointers_reach_no_memory() {
        let maps = MapTable::create(vec![MapDef::new("h", MapKind::Hash, 4, 8, 4)], 1).unwrap();
        let mut lookup = map_ref(1, 0).to_vec();
        lookup.extend(lddw(2, 0x1000));
        lookup.extend([call_helper(MAP_LOOKUP_ELEM as i32), exit()]);
        let mut update = map_ref(1, 0).to_vec();
        update.extend([st(SIZE_W, 10, -4, 1), mov64_reg(2, 10), alu64_imm(ALU_ADD, 2, -4)]);
        update.extend(lddw(3, 0xdead_0000));
        update.extend([mov64_imm(4, 0), call_helper(MAP_UPDATE_ELEM as i32), exit()]);
        for (r0, _) in both(&program(lookup, maps.clone()), &[0; 20]) {
            assert_eq!(r0, 0);
        }
        for (r0, _) in both(&program(update, maps.clone()), &[0; 20]) {
            assert_eq!(r0, -14i64 as u64, "EFAULT");
        }
        assert!(maps.get(0).unwrap().keys().is_empty());
    }

    #[test]
    fn map_memory_is_bounded_and_rodata_is_read_only() {
        use crate::bpf::maps::F_RDONLY_PROG;
        let rodata = MapDef { flags: F_RDONLY_PROG, initial: vec![7, 0, 0, 0], ..MapDef::new(".rodata", MapKind::Array, 4, 4, 1) };
        let data = MapDef::new(".data", MapKind::Array, 4, 8, 1);
        let maps = MapTable::create(vec![rodata, data], 1).unwrap();
        let value = |index: i32, off: i32| {
            let [lo, hi] = lddw(1, index as u64);
            [Insn { src: PSEUDO_MAP_VALUE, ..lo }, Insn { imm: off, ..hi }]
        };
        // r0 = rodata[0]; data[4..8] = r0 + 1; r0 = data[4..8]
        let mut ok = value(0, 0).to_vec();
        ok.extend([ldx(SIZE_W, 0, 1, 0), alu64_imm(ALU_ADD, 0, 1)]);
        ok.extend(value(1, 4));
        ok.extend([stx(SIZE_W, 1, 0, 0), ldx(SIZE_W, 0, 1, 0), exit()]);
        let p = program(ok, maps.clone());
        for (r0, _) in both(&p, &[0; 20]) {
            assert_eq!(r0, 8);
        }
        let backends = |p: &Program| -> [Box<dyn Exec>; 2] {
            [Box::new(Interpreter::new(p)), Box::new(JitProgram::compile(p).unwrap())]
        };
        // A store into .rodata, and a load past the end of .data's arena, fault.
        let mut write_ro = value(0, 0).to_vec();
        write_ro.extend([st(SIZE_W, 1, 0, 1), mov64_imm(0, 2), exit()]);
        let mut past_end = value(1, 4).to_vec();
        past_end.extend([ldx(SIZE_DW, 0, 1, 0), exit()]);
        for (insns, write) in [(write_ro, true), (past_end, false)] {
            let p = program(insns, maps.clone());
            for b in backends(&p) {
                let env = RunEnv::new(0);
                let r = env.run(|| b.run_xdp(&mut [0; 20], 1, 0));
                assert!(matches!(r, Err(crate::bpf::Fault::OutOfBounds { pc: 2, write: w, .. }) if w == write), "{r:?}");
            }
        }
    }

    #[test]
    fn printk_formats_like_the_kernel() {
        let helpers = Helpers::kernel(MapTable::default());
        let mut out = [0u8; 128];
        let n = enter(&helpers, 0, 0, StackArea::None, || {
            with_frame(|f| format_printk(f, b"a=%d b=%u c=%llx d=%x %% %q\0junk", [-5i64 as u64, 7, 0xabc], &mut out))
        })
        .unwrap();
        assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), "a=-5 b=7 c=abc d=0 % %q", "a fourth value reads 0");
    }

    #[test]
    fn every_kernel_helper_has_its_kernel_name() {
        for h in HELPERS {
            assert_eq!(kernel_helper_name(h.id as i64), Some(h.name), "helper {}", h.id);
        }
        assert_eq!(kernel_helper_name(12), Some("tail_call"));
        assert_eq!(kernel_helper_name(-1), None);
    }
}
