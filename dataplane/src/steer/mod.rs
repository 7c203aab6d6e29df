//! The steering loader: loads `programs/xdp/steer.bpf.c` (one instance per interface), fills
//! its maps, attaches it through a bpf_link, registers AF_XDP sockets and reads its counters.
//! The only module that touches aya.
//!
//! Map layouts (see `programs/xdp/steer.h`):
//! - `xsks`: XSKMAP, u32 rx queue → AF_XDP socket fd, [`MAX_QUEUES`] entries;
//! - `passthrough`: HASH, `{u8 proto; u8 pad; __be16 port}` → u8 1 ([`PassRule::key`]);
//! - `local_addrs`: HASH, `{u8 addr[16]; u8 family; u8 pad[3]}` → u8 1 ([`rules::addr_key`]);
//! - `counters`: PERCPU_ARRAY, one entry of four u64 ([`SteerCounters`]);
//! - `fw_state`, `fw_rules`, `fw_v4`, `fw_v6`, `fw_ports`, `fw_counters`: the firewall stage
//!   ([`firewall`]), off until rules are loaded.
//!
//! Which of `passthrough`/`local_addrs` can match is also written into the program's read-only
//! globals before verification, so an interface without rules pays for no hash lookup.
//!
//! A daemon that runs its own firewall marks its instances with [`FIREWALL_OWNER_KEY`] in
//! `passthrough`, so `sluice fw load/unload` can tell that the kernel stage is not theirs to
//! rewrite ([`firewall_owned`]). The mark lives and dies with the program instance (no pid or
//! socket file to go stale after a crash), and its nonzero pad byte can never equal a key the
//! program builds from a packet, so it matches no frame.

pub mod firewall;
pub mod rules;
mod sys;

use std::error::Error as StdError;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::{AsFd, RawFd};

use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, loaded_programs};
use aya::{Ebpf, EbpfLoader, TestRun, TestRunOptions};

pub use rules::{MAX_QUEUES, PassRule, PassRuleError, SteerCounters};
pub use sys::XdpAttachment;

/// The compiled steering program (`build.rs` puts it in OUT_DIR).
static STEER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/steer.bpf.o"));
const PROGRAM: &str = "sluice_steer";

/// The `passthrough` key marking an instance whose firewall stage a daemon manages: pad byte
/// `0xf1`, which no packet's key has (the program zeroes it).
pub const FIREWALL_OWNER_KEY: [u8; 4] = [0, 0xf1, 0, 0];

/// Where the caller wants the program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachPref {
    /// Native (driver) mode, falling back to generic mode if the driver refuses.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Where the program actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver, before an skb exists.
    Native,
    /// In the kernel stack on the skb (works on every device, slower).
    Generic,
}

impl AttachMode {
    fn xdp_flags(self) -> u32 {
        match self {
            AttachMode::Native => sys::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => sys::XDP_FLAGS_SKB_MODE,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// A verdict of the XDP program (`enum xdp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpVerdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
}

impl XdpVerdict {
    fn from_raw(raw: u32) -> Option<XdpVerdict> {
        Some(match raw {
            0 => XdpVerdict::Aborted,
            1 => XdpVerdict::Drop,
            2 => XdpVerdict::Pass,
            3 => XdpVerdict::Tx,
            4 => XdpVerdict::Redirect,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("find interface {ifname}: {source}")]
    Interface { ifname: String, source: std::io::Error },
    #[error("read addresses of {ifname}: {source}")]
    LocalAddrs { ifname: String, source: std::io::Error },
    #[error("check pass rules for {ifname}: {source}")]
    PassRule { ifname: String, source: PassRuleError },
    #[error("load steering program for {ifname}: {reason}")]
    Load { ifname: String, reason: String },
    #[error("attach xdp to {ifname} ({mode}): {reason}")]
    Attach { ifname: String, mode: AttachMode, reason: String },
    #[error("{op} map {map} of {ifname}: {reason}")]
    Map { ifname: String, op: &'static str, map: &'static str, reason: String },
    #[error("register socket of {ifname} queue {queue}: queue out of range (xsks has {max} entries)")]
    QueueOutOfRange { ifname: String, queue: u32, max: u32 },
    #[error("test-run steering program of {ifname}: {reason}")]
    TestRun { ifname: String, reason: String },
    #[error("query xdp programs of {ifname}: {source}")]
    Query { ifname: String, source: std::io::Error },
}

/// aya's errors keep the OS error in `source()`; flatten the chain so the message shows it.
fn chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

/// The steering program attached to one interface, with its own maps.
///
/// Dropping it detaches the program: the kernel holds the attachment only through the
/// bpf_link whose descriptor this owns, so a killed process leaves nothing attached either.
pub struct Steering {
    // Held only to be dropped, which detaches. Fields drop in declaration order, so the
    // program is detached before its maps and program are released.
    _link: sys::XdpLink,
    xsks: XskMap<MapData>,
    counters: PerCpuArray<MapData, [u64; 4]>,
    ebpf: Ebpf,
    ifname: String,
    ifindex: u32,
    mode: AttachMode,
    prog_id: u32,
}

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Steering")
            .field("ifname", &self.ifname)
            .field("mode", &self.mode)
            .field("prog_id", &self.prog_id)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Loads a fresh program instance for `ifname`, fills `passthrough` with `pass` and (when
    /// `pass_local`) `local_addrs` with the interface's current addresses, then attaches.
    /// Addresses added to the interface later are not tracked.
    pub fn attach(ifname: &str, pref: AttachPref, pass: &[PassRule], pass_local: bool) -> Result<Steering, SteerError> {
        let ifindex =
            sys::if_index(ifname).map_err(|source| SteerError::Interface { ifname: ifname.to_owned(), source })?;
        for rule in pass {
            rule.validate().map_err(|source| SteerError::PassRule { ifname: ifname.to_owned(), source })?;
        }
        let mut local = Vec::new();
        if pass_local {
            local = sys::interface_addrs(ifname)
                .map_err(|source| SteerError::LocalAddrs { ifname: ifname.to_owned(), source })?;
            local.sort();
            local.dedup();
        }
        let mut ebpf = load(ifname, pass, &local)?;
        fill_rules(&mut ebpf, ifname, pass, &local)?;

        let load_err = |reason: String| SteerError::Load { ifname: ifname.to_owned(), reason };
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| load_err(format!("object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| load_err(chain(&e)))?;
        program.load().map_err(|e| load_err(chain(&e)))?;
        let prog_id = program.info().map_err(|e| load_err(chain(&e)))?.id();

        let (link, mode) = match pref {
            AttachPref::Native => (attach_link(program, ifname, ifindex, AttachMode::Native)?, AttachMode::Native),
            AttachPref::Generic => (attach_link(program, ifname, ifindex, AttachMode::Generic)?, AttachMode::Generic),
            AttachPref::Auto => match attach_link(program, ifname, ifindex, AttachMode::Native) {
                Ok(link) => (link, AttachMode::Native),
                Err(native) => {
                    tracing::warn!(ifname, reason = %native, "native xdp attach failed, falling back to generic");
                    let link =
                        attach_link(program, ifname, ifindex, AttachMode::Generic).map_err(
                            |generic| match generic {
                                SteerError::Attach { ifname, mode, reason } => SteerError::Attach {
                                    ifname,
                                    mode,
                                    reason: format!("{reason} (after native failed: {native})"),
                                },
                                other => other,
                            },
                        )?;
                    (link, AttachMode::Generic)
                }
            },
        };
        tracing::info!(ifname, %mode, prog_id, rules = pass.len(), local_addrs = local.len(), "steering attached");

        let xsks = take_map(&mut ebpf, ifname, "xsks", XskMap::try_from)?;
        let counters = take_map(&mut ebpf, ifname, "counters", PerCpuArray::try_from)?;
        Ok(Steering { _link: link, xsks, counters, ebpf, ifname: ifname.to_owned(), ifindex, mode, prog_id })
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's index, as resolved at attach time (what filters see as ingress_ifindex).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The kernel's id of this instance's program (what [`attached_xdp_prog`] reports).
    pub fn prog_id(&self) -> u32 {
        self.prog_id
    }

    /// Steers the frames of rx `queue` to the AF_XDP socket `xsk_fd` (bound to that queue).
    pub fn register_socket(&mut self, queue: u32, xsk_fd: RawFd) -> Result<(), SteerError> {
        self.check_queue(queue)?;
        self.xsks.set(queue, xsk_fd, 0).map_err(|e| self.map_err("update", "xsks", &e))
    }

    /// Hands the frames of rx `queue` back to the kernel.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), SteerError> {
        self.check_queue(queue)?;
        self.xsks.unset(queue).map_err(|e| self.map_err("delete from", "xsks", &e))
    }

    /// Marks (or unmarks) this instance's firewall stage as managed by this process's own
    /// firewall; see [`firewall_owned`].
    pub fn set_firewall_owned(&mut self, owned: bool) -> Result<(), SteerError> {
        let ifname = self.ifname.clone();
        let map_err = |op, e: &dyn StdError| SteerError::Map { ifname: ifname.clone(), op, map: "passthrough", reason: chain(e) };
        let mut map: HashMap<&mut MapData, [u8; 4], u8> = self
            .ebpf
            .map_mut("passthrough")
            .ok_or_else(|| map_err("find", &MissingMap))?
            .try_into()
            .map_err(|e| map_err("open", &e))?;
        if owned {
            map.insert(FIREWALL_OWNER_KEY, 1, 0).map_err(|e| map_err("update", &e))
        } else if map.get(&FIREWALL_OWNER_KEY, 0).is_ok() {
            map.remove(&FIREWALL_OWNER_KEY).map_err(|e| map_err("delete from", &e))
        } else {
            Ok(())
        }
    }

    /// The program's counters summed over CPUs.
    pub fn counters(&self) -> Result<SteerCounters, SteerError> {
        let per_cpu = self.counters.get(&0, 0).map_err(|e| self.map_err("read", "counters", &e))?;
        Ok(SteerCounters::sum(per_cpu.iter()))
    }

    /// Runs this instance's program once on `frame` (BPF_PROG_TEST_RUN, rx queue 0) and
    /// returns its verdict. The frame goes nowhere, but the counters do count it.
    pub fn test_run(&self, frame: &[u8]) -> Result<XdpVerdict, SteerError> {
        let err = |reason: String| SteerError::TestRun { ifname: self.ifname.clone(), reason };
        let program: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(|| err(format!("object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| err(chain(&e)))?;
        let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::default() };
        let result = program.test_run(opts).map_err(|e| err(chain(&e)))?;
        XdpVerdict::from_raw(result.return_value)
            .ok_or_else(|| err(format!("unknown xdp verdict {}", result.return_value)))
    }

    fn check_queue(&self, queue: u32) -> Result<(), SteerError> {
        let max = self.xsks.len();
        if queue >= max {
            return Err(SteerError::QueueOutOfRange { ifname: self.ifname.clone(), queue, max });
        }
        Ok(())
    }

    fn map_err(&self, op: &'static str, map: &'static str, err: &dyn StdError) -> SteerError {
        SteerError::Map { ifname: self.ifname.clone(), op, map, reason: chain(err) }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        // The link detaches (BPF_LINK_DETACH) as the fields drop right after this.
        tracing::debug!(ifname = %self.ifname, mode = %self.mode, prog_id = self.prog_id, "detaching steering");
    }
}

fn load(ifname: &str, pass: &[PassRule], local: &[IpAddr]) -> Result<Ebpf, SteerError> {
    let port_rules = u8::from(pass.iter().any(|r| r.port != 0));
    let proto_rules = u8::from(pass.iter().any(|r| r.port == 0));
    let local_addrs = u8::from(!local.is_empty());
    // Sized to the rules so there is no fixed cap, plus room for the firewall owner mark.
    let pass_entries = u32::try_from(pass.len()).unwrap_or(u32::MAX).saturating_add(1);
    let local_entries = u32::try_from(local.len()).unwrap_or(u32::MAX).max(1);
    EbpfLoader::new()
        .override_global("steer_have_port_rules", &port_rules, true)
        .override_global("steer_have_proto_rules", &proto_rules, true)
        .override_global("steer_have_local_addrs", &local_addrs, true)
        .map_max_entries("passthrough", pass_entries)
        .map_max_entries("local_addrs", local_entries)
        .load(STEER_OBJ)
        .map_err(|e| SteerError::Load { ifname: ifname.to_owned(), reason: chain(&e) })
}

/// Fills the rule maps before the program is attached, so no frame sees them half-written.
fn fill_rules(ebpf: &mut Ebpf, ifname: &str, pass: &[PassRule], local: &[IpAddr]) -> Result<(), SteerError> {
    let map_err = |op, map, e: &dyn StdError| SteerError::Map { ifname: ifname.to_owned(), op, map, reason: chain(e) };
    let mut passthrough: HashMap<&mut MapData, [u8; 4], u8> = ebpf
        .map_mut("passthrough")
        .ok_or_else(|| map_err("find", "passthrough", &MissingMap))?
        .try_into()
        .map_err(|e| map_err("open", "passthrough", &e))?;
    for rule in pass {
        passthrough.insert(rule.key(), 1, 0).map_err(|e| map_err("update", "passthrough", &e))?;
    }
    let mut local_addrs: HashMap<&mut MapData, [u8; 20], u8> = ebpf
        .map_mut("local_addrs")
        .ok_or_else(|| map_err("find", "local_addrs", &MissingMap))?
        .try_into()
        .map_err(|e| map_err("open", "local_addrs", &e))?;
    for &addr in local {
        local_addrs.insert(rules::addr_key(addr), 1, 0).map_err(|e| map_err("update", "local_addrs", &e))?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("object has no such map")]
struct MissingMap;

fn take_map<M, E: StdError>(
    ebpf: &mut Ebpf,
    ifname: &str,
    name: &'static str,
    open: impl FnOnce(aya::maps::Map) -> Result<M, E>,
) -> Result<M, SteerError> {
    let map_err = |op, reason| SteerError::Map { ifname: ifname.to_owned(), op, map: name, reason };
    let map = ebpf.take_map(name).ok_or_else(|| map_err("find", chain(&MissingMap)))?;
    open(map).map_err(|e| map_err("open", chain(&e)))
}

/// Attaches through a bpf_link of our own rather than aya's `Xdp::attach`: aya falls back to a
/// netlink attachment when link creation fails with EINVAL, and that one would outlive a crash.
fn attach_link(program: &Xdp, ifname: &str, ifindex: u32, mode: AttachMode) -> Result<sys::XdpLink, SteerError> {
    let err = |reason: String| SteerError::Attach { ifname: ifname.to_owned(), mode, reason };
    let prog_fd = program.fd().map_err(|e| err(chain(&e)))?;
    sys::XdpLink::create(prog_fd.as_fd(), ifindex, mode.xdp_flags())
        .map_err(|e| err(format!("bpf link create: {e}{}", attach_hint(&e))))
}

/// bpf_link_create has no extended ack, so the kernel's reason is only an errno: name the
/// usual cause of the ones XDP attachment returns.
fn attach_hint(err: &std::io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::EBUSY) => " (another xdp program is already attached)",
        Some(libc::ERANGE) => " (mtu too large for native xdp on this device or its peer)",
        Some(libc::EOPNOTSUPP) => " (driver has no native xdp support)",
        _ => "",
    }
}

/// The XDP programs `ifname` runs, per mode.
pub fn xdp_attachment(ifname: &str) -> Result<XdpAttachment, SteerError> {
    let query_err = |source| SteerError::Query { ifname: ifname.to_owned(), source };
    let ifindex = sys::if_index(ifname).map_err(query_err)?;
    sys::xdp_attachment(ifindex).map_err(query_err)
}

/// Whether the steering program attached to `ifname` belongs to a process running its own
/// firewall (a `sluice run` with `[dataplane] firewall`), whose kernel stage only that process
/// may rewrite. False when no program, or another program, is attached.
pub fn firewall_owned(ifname: &str) -> Result<bool, SteerError> {
    let Some(prog_id) = attached_xdp_prog(ifname)? else { return Ok(false) };
    let map_err = |op, reason: String| SteerError::Map { ifname: ifname.to_owned(), op, map: "passthrough", reason };
    let Some(info) = loaded_programs().filter_map(Result::ok).find(|p| p.id() == prog_id) else { return Ok(false) };
    let ids = info.map_ids().map_err(|e| map_err("list", chain(&e)))?.unwrap_or_default();
    for id in ids {
        let data = MapData::from_id(id).map_err(|e| map_err("open", chain(&e)))?;
        if data.info().ok().and_then(|i| i.name_as_str().map(str::to_owned)).as_deref() != Some("passthrough") {
            continue;
        }
        let map: HashMap<MapData, [u8; 4], u8> =
            HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(|e| map_err("open", chain(&e)))?;
        return match map.get(&FIREWALL_OWNER_KEY, 0) {
            Ok(_) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err("read", chain(&e))),
        };
    }
    Ok(false)
}

/// The id of the XDP program attached to `ifname` in any mode, if one is.
pub fn attached_xdp_prog(ifname: &str) -> Result<Option<u32>, SteerError> {
    let attached = xdp_attachment(ifname)?;
    Ok(attached.native.or(attached.generic).or(attached.offloaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_display_as_documented() {
        assert_eq!(AttachMode::Native.to_string(), "native");
        assert_eq!(AttachMode::Generic.to_string(), "generic");
    }

    #[test]
    fn verdicts_decode() {
        assert_eq!(XdpVerdict::from_raw(2), Some(XdpVerdict::Pass));
        assert_eq!(XdpVerdict::from_raw(4), Some(XdpVerdict::Redirect));
        assert_eq!(XdpVerdict::from_raw(5), None);
    }

    #[test]
    fn error_chain_is_flattened() {
        let io = std::io::Error::from_raw_os_error(libc::EINVAL);
        let sys = aya::sys::SyscallError { call: "bpf_prog_load", io_error: io };
        let text = chain(&sys);
        assert!(text.starts_with("`bpf_prog_load` failed: "), "{text}");
        assert!(text.contains("Invalid argument"), "{text}");
    }

    #[test]
    fn unknown_interface_is_named() {
        let err = Steering::attach("sluice-nope0", AttachPref::Auto, &[], false).unwrap_err();
        assert!(err.to_string().starts_with("find interface sluice-nope0: "), "{err}");
    }

    #[test]
    fn embedded_object_has_the_program_and_maps() {
        let obj = strings(STEER_OBJ);
        for name in [PROGRAM, "xsks", "passthrough", "local_addrs", "counters", "steer_have_port_rules"] {
            assert!(obj.iter().any(|n| n == name), "{name} missing from steer.bpf.o");
        }
    }

    /// The NUL-separated strings of the ELF object (its string tables hold the symbol names).
    fn strings(obj: &[u8]) -> Vec<String> {
        obj.split(|&b| b == 0).filter_map(|s| std::str::from_utf8(s).ok()).map(str::to_owned).collect()
    }
}
