//! The steering program's firewall maps (`fw_state`, `fw_rules`, `fw_v4`, `fw_v6`, `fw_ports`,
//! `fw_counters`; layouts in `programs/xdp/steer.h`): the byte layout of a kernel rule, filling
//! the maps of a [`Steering`] this process owns or of the steering program another process
//! (`sluice run`) attached to an interface, and reading the per-rule counters back.
//!
//! A load switches the stage off (`fw_state.nrules = 0`), replaces every table, zeroes the
//! counters and switches it on again last, so the program never runs on half-written rules;
//! while it is off, frames go to userspace, whose engine evaluates the same rules.

use std::error::Error as StdError;
use std::os::fd::AsFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::loaded_programs;
use aya::util::nr_cpus;

use super::{MissingMap, SteerError, Steering, chain};

/// `FW_MAX_RULES`: kernel rule slots per interface (a group of rules takes one).
pub const FW_MAX_RULES: usize = 256;
/// `FW_MAX_COUNTERS`: kernel rules per interface, counting every rule of a group. Kept small
/// because the per-CPU counter map costs its size on every CPU of every steered interface.
pub const FW_MAX_COUNTERS: usize = 1 << 13;
/// `FW_MAX_PORT_SETS`: port sets the kernel rules of one interface may use.
pub const FW_MAX_PORT_SETS: usize = 64;
const FW_PORT_WORDS: u32 = 1024;
/// `FW_ANY`: a set field that matches every packet.
pub const FW_ANY: u32 = u32::MAX;

pub const FW_F_PROTO: u8 = 0x01;
pub const FW_F_ICMP_TYPE: u8 = 0x02;
pub const FW_F_ICMP_CODE: u8 = 0x04;
pub const FW_F_VLAN: u8 = 0x08;
pub const FW_F_V4: u8 = 0x10;
pub const FW_F_V6: u8 = 0x20;
/// A group slot: the set in `src_set` (`dst_set`) maps each address to the counter and action
/// of the group's first rule holding it ([`group_value`]).
pub const FW_F_GROUP_SRC: u8 = 0x40;
pub const FW_F_GROUP_DST: u8 = 0x80;
const FW_GROUP_ACTION_SHIFT: u32 = 24;

/// The LPM value of a group set's prefix: the rule's counter slot and action.
pub fn group_value(counter: u32, action: u8) -> u32 {
    counter | u32::from(action) << FW_GROUP_ACTION_SHIFT
}

pub const FW_ACT_ACCEPT: u8 = 0;
pub const FW_ACT_DROP: u8 = 1;
pub const FW_ACT_COUNT: u8 = 2;

/// `struct fw_rule` (36 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwRule {
    pub src_set: u32,
    pub dst_set: u32,
    /// Slot in `fw_ports` (index into [`KernelFirewall::port_sets`]) or [`FW_ANY`].
    pub sport_set: u32,
    pub dport_set: u32,
    pub len_min: u16,
    pub len_max: u16,
    pub vlan: u16,
    pub proto: u8,
    pub flags: u8,
    pub tcp_mask: u8,
    pub tcp_value: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub action: u8,
    /// Slot in `fw_counters`: the rule's position among the interface's kernel rules
    /// ([`crate::firewall::Placement::kernel_rules`]).
    pub counter: u32,
}

impl FwRule {
    pub fn to_bytes(&self) -> [u8; 36] {
        let mut b = [0u8; 36];
        b[0..4].copy_from_slice(&self.src_set.to_ne_bytes());
        b[4..8].copy_from_slice(&self.dst_set.to_ne_bytes());
        b[8..12].copy_from_slice(&self.sport_set.to_ne_bytes());
        b[12..16].copy_from_slice(&self.dport_set.to_ne_bytes());
        b[16..18].copy_from_slice(&self.len_min.to_ne_bytes());
        b[18..20].copy_from_slice(&self.len_max.to_ne_bytes());
        b[20..22].copy_from_slice(&self.vlan.to_ne_bytes());
        b[22] = self.proto;
        b[23] = self.flags;
        b[24] = self.tcp_mask;
        b[25] = self.tcp_value;
        b[26] = self.icmp_type;
        b[27] = self.icmp_code;
        b[28] = self.action;
        b[32..36].copy_from_slice(&self.counter.to_ne_bytes());
        b
    }
}

/// Everything one interface's firewall stage holds.
#[derive(Debug, Clone, Default)]
pub struct KernelFirewall {
    /// In evaluation order; each counts in `fw_counters[counter]`.
    pub rules: Vec<FwRule>,
    /// `(set id, address, prefix length)`.
    pub v4: Vec<(u32, [u8; 4], u8)>,
    pub v6: Vec<(u32, [u8; 16], u8)>,
    /// Group sets: `(set id, address, prefix length, group_value)`.
    pub group_v4: Vec<(u32, [u8; 4], u8, u32)>,
    pub group_v6: Vec<(u32, [u8; 16], u8, u32)>,
    /// Port set bitmaps by slot.
    pub port_sets: Vec<Box<[u64; 1024]>>,
    /// Frames no kernel rule ended are dropped (every rule is in the kernel and the default
    /// policy drops) rather than handed to userspace.
    pub fallback_drop: bool,
}

impl KernelFirewall {
    /// Counter slots the rules use (the fallback's aside).
    fn counters_used(&self) -> usize {
        let plain = self.rules.iter().map(|r| r.counter as usize + 1);
        let mask = (1u32 << FW_GROUP_ACTION_SHIFT) - 1;
        let grouped = self.group_v4.iter().map(|g| g.3).chain(self.group_v6.iter().map(|g| g.3));
        plain.chain(grouped.map(|v| (v & mask) as usize + 1)).max().unwrap_or(0)
    }
}

/// Packets and bytes of one kernel rule, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FwCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// The firewall maps of one steering program instance.
pub struct FirewallMaps {
    ifname: String,
    state: Array<MapData, [u8; 8]>,
    rules: Array<MapData, [u8; 36]>,
    v4: LpmTrie<MapData, [u8; 8], u32>,
    v6: LpmTrie<MapData, [u8; 20], u32>,
    ports: Array<MapData, u64>,
    counters: PerCpuArray<MapData, [u64; 2]>,
}

impl std::fmt::Debug for FirewallMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirewallMaps").field("ifname", &self.ifname).finish_non_exhaustive()
    }
}

fn map_err(ifname: &str, op: &'static str, map: &'static str, e: &dyn StdError) -> SteerError {
    SteerError::Map { ifname: ifname.to_owned(), op, map, reason: chain(e) }
}

impl FirewallMaps {
    /// The maps of the steering program attached to `ifname` (by any process; needs root).
    pub fn of_attached(ifname: &str) -> Result<FirewallMaps, SteerError> {
        let prog_id = super::attached_xdp_prog(ifname)?.ok_or_else(|| SteerError::Map {
            ifname: ifname.to_owned(),
            op: "find",
            map: "fw_state",
            reason: "no xdp program is attached (is `sluice run` running?)".into(),
        })?;
        let info = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog_id)
            .ok_or_else(|| map_err(ifname, "find", "fw_state", &MissingMap))?;
        let ids = info.map_ids().map_err(|e| map_err(ifname, "list", "fw_state", &e))?.unwrap_or_default();
        let mut found: Vec<(String, MapData)> = Vec::new();
        for id in ids {
            let data = MapData::from_id(id).map_err(|e| map_err(ifname, "open", "fw_state", &e))?;
            let name = data.info().ok().and_then(|i| i.name_as_str().map(str::to_owned)).unwrap_or_default();
            found.push((name, data));
        }
        let mut take = |name: &'static str| -> Result<MapData, SteerError> {
            let at = found.iter().position(|(n, _)| n == name).ok_or_else(|| SteerError::Map {
                ifname: ifname.to_owned(),
                op: "find",
                map: name,
                reason: format!("program {prog_id} has no such map (not a sluice steering program?)"),
            })?;
            Ok(found.swap_remove(at).1)
        };
        let (state, rules, v4, v6, ports, counters) =
            (take("fw_state")?, take("fw_rules")?, take("fw_v4")?, take("fw_v6")?, take("fw_ports")?, take("fw_counters")?);
        Self::open(ifname, [state, rules, v4, v6, ports, counters])
    }

    /// The maps of a steering instance this process loaded.
    pub(super) fn of(steering: &mut Steering) -> Result<FirewallMaps, SteerError> {
        let ifname = steering.ifname.clone();
        let take = |name: &'static str| -> Result<MapData, SteerError> {
            match steering.ebpf.map(name) {
                Some(Map::Array(d)) | Some(Map::LpmTrie(d)) | Some(Map::PerCpuArray(d)) => {
                    // A second handle on the same map, so the Ebpf object keeps its own.
                    let fd = d.fd().as_fd().try_clone_to_owned().map_err(|e| map_err(&ifname, "open", name, &e))?;
                    MapData::from_fd(fd).map_err(|e| map_err(&ifname, "open", name, &e))
                }
                _ => Err(map_err(&ifname, "find", name, &MissingMap)),
            }
        };
        let maps = [take("fw_state")?, take("fw_rules")?, take("fw_v4")?, take("fw_v6")?, take("fw_ports")?, take("fw_counters")?];
        Self::open(&ifname, maps)
    }

    fn open(ifname: &str, [state, rules, v4, v6, ports, counters]: [MapData; 6]) -> Result<FirewallMaps, SteerError> {
        let e = |map: &'static str| move |err: aya::maps::MapError| map_err(ifname, "open", map, &err);
        Ok(FirewallMaps {
            ifname: ifname.to_owned(),
            state: Array::try_from(Map::Array(state)).map_err(e("fw_state"))?,
            rules: Array::try_from(Map::Array(rules)).map_err(e("fw_rules"))?,
            v4: LpmTrie::try_from(Map::LpmTrie(v4)).map_err(e("fw_v4"))?,
            v6: LpmTrie::try_from(Map::LpmTrie(v6)).map_err(e("fw_v6"))?,
            ports: Array::try_from(Map::Array(ports)).map_err(e("fw_ports"))?,
            counters: PerCpuArray::try_from(Map::PerCpuArray(counters)).map_err(e("fw_counters"))?,
        })
    }

    fn err(&self, op: &'static str, map: &'static str, e: &dyn StdError) -> SteerError {
        map_err(&self.ifname, op, map, e)
    }

    fn set_state(&mut self, nrules: u32, fallback_drop: bool) -> Result<(), SteerError> {
        let mut v = [0u8; 8];
        v[..4].copy_from_slice(&nrules.to_ne_bytes());
        let fallback = u32::from(if fallback_drop { FW_ACT_DROP } else { FW_ACT_ACCEPT });
        v[4..].copy_from_slice(&fallback.to_ne_bytes());
        self.state.set(0, v, 0).map_err(|e| self.err("update", "fw_state", &e))
    }

    /// Replaces the firewall with `fw` (an empty one switches the stage off).
    pub fn load(&mut self, fw: &KernelFirewall) -> Result<(), SteerError> {
        let too_many = |what: &str, n: usize, max: usize| SteerError::Map {
            ifname: self.ifname.clone(),
            op: "fill",
            map: "fw_rules",
            reason: format!("{n} {what}, the kernel stage holds {max}"),
        };
        if fw.rules.len() > FW_MAX_RULES {
            return Err(too_many("rules", fw.rules.len(), FW_MAX_RULES));
        }
        if fw.port_sets.len() > FW_MAX_PORT_SETS {
            return Err(too_many("port sets", fw.port_sets.len(), FW_MAX_PORT_SETS));
        }
        let counters = fw.counters_used();
        if counters > FW_MAX_COUNTERS {
            return Err(too_many("rule counters", counters, FW_MAX_COUNTERS));
        }
        self.set_state(0, false)?;
        self.clear_tries()?;
        let plain4 = fw.v4.iter().map(|&(set, addr, len)| (set, addr, len, 0));
        for (set, addr, len, value) in plain4.chain(fw.group_v4.iter().copied()) {
            let mut k = [0u8; 8];
            k[..4].copy_from_slice(&set.to_ne_bytes());
            k[4..].copy_from_slice(&addr);
            self.v4.insert(&Key::new(32 + u32::from(len), k), value, 0).map_err(|e| self.err("update", "fw_v4", &e))?;
        }
        let plain6 = fw.v6.iter().map(|&(set, addr, len)| (set, addr, len, 0));
        for (set, addr, len, value) in plain6.chain(fw.group_v6.iter().copied()) {
            let mut k = [0u8; 20];
            k[..4].copy_from_slice(&set.to_ne_bytes());
            k[4..].copy_from_slice(&addr);
            self.v6.insert(&Key::new(32 + u32::from(len), k), value, 0).map_err(|e| self.err("update", "fw_v6", &e))?;
        }
        for (slot, words) in fw.port_sets.iter().enumerate() {
            for (w, &bits) in words.iter().enumerate() {
                let index = slot as u32 * FW_PORT_WORDS + w as u32;
                self.ports.set(index, bits, 0).map_err(|e| self.err("update", "fw_ports", &e))?;
            }
        }
        for (i, r) in fw.rules.iter().enumerate() {
            self.rules.set(i as u32, r.to_bytes(), 0).map_err(|e| self.err("update", "fw_rules", &e))?;
        }
        let cpus = nr_cpus().map_err(|(_, e)| self.err("count cpus for", "fw_counters", &e))?;
        // Only the slots this firewall reads: every load zeroes its own, so none is stale.
        for i in (0..counters as u32).chain([FW_MAX_COUNTERS as u32]) {
            let zero = PerCpuValues::try_from(vec![[0u64; 2]; cpus]).map_err(|e| self.err("zero", "fw_counters", &e))?;
            self.counters.set(i, zero, 0).map_err(|e| self.err("zero", "fw_counters", &e))?;
        }
        self.set_state(fw.rules.len() as u32, fw.fallback_drop)
    }

    fn clear_tries(&mut self) -> Result<(), SteerError> {
        let v4: Vec<_> = self.v4.keys().filter_map(Result::ok).collect();
        for k in v4 {
            self.v4.remove(&k).map_err(|e| self.err("delete from", "fw_v4", &e))?;
        }
        let v6: Vec<_> = self.v6.keys().filter_map(Result::ok).collect();
        for k in v6 {
            self.v6.remove(&k).map_err(|e| self.err("delete from", "fw_v6", &e))?;
        }
        Ok(())
    }

    /// Counters of kernel rules `0..n` (in `Placement::kernel_rules` order) and, last, of the
    /// fallback drop; summed over CPUs.
    pub fn counters(&self, n: usize) -> Result<Vec<FwCounter>, SteerError> {
        let mut out = Vec::with_capacity(n + 1);
        for slot in (0..n.min(FW_MAX_COUNTERS)).chain([FW_MAX_COUNTERS]) {
            let per_cpu = self.counters.get(&(slot as u32), 0).map_err(|e| self.err("read", "fw_counters", &e))?;
            out.push(per_cpu.iter().fold(FwCounter::default(), |acc, [p, b]| FwCounter {
                packets: acc.packets.wrapping_add(*p),
                bytes: acc.bytes.wrapping_add(*b),
            }));
        }
        Ok(out)
    }
}

impl Steering {
    /// The firewall maps of this instance, to load rules into and read counters from.
    pub fn firewall(&mut self) -> Result<FirewallMaps, SteerError> {
        FirewallMaps::of(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_layout_matches_the_c_struct() {
        let r = FwRule {
            src_set: 1,
            dst_set: FW_ANY,
            sport_set: 2,
            dport_set: 3,
            len_min: 60,
            len_max: 1500,
            vlan: 7,
            proto: 6,
            flags: FW_F_PROTO | FW_F_VLAN,
            tcp_mask: 0x12,
            tcp_value: 0x02,
            icmp_type: 8,
            icmp_code: 9,
            action: FW_ACT_DROP,
            counter: 0x0102_0304,
        };
        let b = r.to_bytes();
        assert_eq!(b[0..4], 1u32.to_ne_bytes());
        assert_eq!(b[4..8], [0xff; 4]);
        assert_eq!(b[16..18], 60u16.to_ne_bytes());
        assert_eq!(b[20..22], 7u16.to_ne_bytes());
        assert_eq!(b[22..29], [6, FW_F_PROTO | FW_F_VLAN, 0x12, 0x02, 8, 9, FW_ACT_DROP]);
        assert_eq!(b[29..32], [0; 3]);
        assert_eq!(b[32..], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(group_value(5, FW_ACT_DROP), 0x0100_0005);
    }
}
