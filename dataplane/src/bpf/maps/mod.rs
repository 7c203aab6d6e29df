//! Userspace BPF maps: array, per-CPU array, device map, hash, per-CPU hash, LRU hash (plain
//! and per-CPU), LPM trie and ring buffer, with the kernel's type ids and error codes.
//!
//! Each map keeps its values in one [`Arena`] allocated when the map is created and never
//! reallocated, so a filter can hold a value's address, and "address inside one of the
//! program's arenas" is a complete run-time check for map memory. Arrays (plain, per-CPU,
//! device) look values up with arithmetic alone, never a lock; hash-based maps serialize their
//! index (not their values) with a mutex held only for the lookup itself.
//!
//! Two sides use a map at once:
//! - filters, through the kernel helpers (`bpf::helpers`), by address: [`Map::lookup_addr`],
//!   [`Map::update`] and [`Map::delete`] with the running worker's slot;
//! - the controller, by value: [`Map::get`], [`Map::set`], [`Map::delete`], [`Map::keys`],
//!   [`Map::read_record`], while filters run.
//!
//! "Per-CPU" means per worker slot: a per-CPU map holds `slots` copies of each value and a
//! filter sees the copy of the worker running it. Whoever creates the maps gives the number of
//! workers that will run the program (a pipeline: its port's workers), and each worker runs it
//! inside `helpers::RunEnv::new(slot).run`, so its helpers look up and update that worker's
//! copy only: no two workers write the same copy, and a plain `*v += 1` loses nothing. The
//! controller reads every copy at once, laid out as the kernel's per-CPU lookups lay them out
//! ([`Map::get`], or [`Map::get_per_slot`] split).

mod arena;
mod array;
mod hash;
mod lpm;
mod ringbuf;

use std::sync::Arc;

use super::insn::{Insn, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};

pub use arena::Arena;

/// Map types, numbered as the kernel's `enum bpf_map_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapKind {
    Hash,
    Array,
    PerCpuHash,
    PerCpuArray,
    LruHash,
    LruPerCpuHash,
    LpmTrie,
    /// Interface indexes for `bpf_redirect_map`.
    DevMap,
    RingBuf,
}

impl MapKind {
    pub fn from_kernel(ty: u32) -> Option<MapKind> {
        Some(match ty {
            1 => MapKind::Hash,
            2 => MapKind::Array,
            5 => MapKind::PerCpuHash,
            6 => MapKind::PerCpuArray,
            9 => MapKind::LruHash,
            10 => MapKind::LruPerCpuHash,
            11 => MapKind::LpmTrie,
            14 => MapKind::DevMap,
            27 => MapKind::RingBuf,
            _ => return None,
        })
    }

    pub fn kernel_id(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PerCpuHash => 5,
            MapKind::PerCpuArray => 6,
            MapKind::LruHash => 9,
            MapKind::LruPerCpuHash => 10,
            MapKind::LpmTrie => 11,
            MapKind::DevMap => 14,
            MapKind::RingBuf => 27,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MapKind::Hash => "hash",
            MapKind::Array => "array",
            MapKind::PerCpuHash => "percpu_hash",
            MapKind::PerCpuArray => "percpu_array",
            MapKind::LruHash => "lru_hash",
            MapKind::LruPerCpuHash => "lru_percpu_hash",
            MapKind::LpmTrie => "lpm_trie",
            MapKind::DevMap => "devmap",
            MapKind::RingBuf => "ringbuf",
        }
    }

    pub fn is_per_cpu(self) -> bool {
        matches!(self, MapKind::PerCpuArray | MapKind::PerCpuHash | MapKind::LruPerCpuHash)
    }

    /// Whether a filter may read and write the values a lookup returns.
    pub fn has_values(self) -> bool {
        !matches!(self, MapKind::RingBuf)
    }
}

impl std::fmt::Display for MapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `map_flags`: the program may only read the map (`.rodata`).
pub const F_RDONLY_PROG: u32 = 1 << 7;
/// `map_flags` of a hash map: no preallocation (accepted and ignored: sluice always
/// preallocates, which is the fixed-arena rule).
pub const F_NO_PREALLOC: u32 = 1;

/// Update flags (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`).
pub const ANY: u64 = 0;
pub const NOEXIST: u64 = 1;
pub const EXIST: u64 = 2;

/// Largest LPM trie key data (the kernel's `LPM_DATA_SIZE_MAX`).
pub const LPM_DATA_MAX: u32 = 256;

/// What a map is, as declared in an object or by the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// Initial contents of a single-entry array (global data: `.data`, `.rodata`).
    pub initial: Vec<u8>,
}

impl MapDef {
    pub fn new(name: &str, kind: MapKind, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef { name: name.to_string(), kind, key_size, value_size, max_entries, flags: 0, initial: Vec::new() }
    }

    /// Whether filters may write the map's values.
    pub fn prog_writable(&self) -> bool {
        self.flags & F_RDONLY_PROG == 0
    }

    /// Checks the definition the way the kernel's `map_alloc_check` does.
    fn check(&self) -> Result<(), MapError> {
        let bad = |reason: String| Err(MapError::BadDef { name: self.name.clone(), reason });
        if self.max_entries == 0 {
            return bad("max_entries must not be 0".into());
        }
        match self.kind {
            MapKind::Array | MapKind::PerCpuArray | MapKind::DevMap => {
                if self.key_size != 4 {
                    return bad(format!("{} keys are 4 bytes, not {}", self.kind, self.key_size));
                }
            }
            MapKind::LpmTrie => {
                if self.key_size <= 4 || self.key_size > 4 + LPM_DATA_MAX {
                    return bad(format!("lpm_trie keys are 4 + 1..={LPM_DATA_MAX} bytes, not {}", self.key_size));
                }
            }
            MapKind::RingBuf => {
                if self.key_size != 0 || self.value_size != 0 {
                    return bad("ringbuf has no keys or values (key and value size must be 0)".into());
                }
                if !self.max_entries.is_power_of_two() || self.max_entries < 64 {
                    return bad(format!("ringbuf size {} is not a power of two >= 64", self.max_entries));
                }
                return Ok(());
            }
            _ => {
                if self.key_size == 0 {
                    return bad("key size must not be 0".into());
                }
            }
        }
        if self.kind == MapKind::DevMap && !matches!(self.value_size, 4 | 8) {
            return bad(format!("devmap values are 4 or 8 bytes, not {}", self.value_size));
        }
        if self.value_size == 0 {
            return bad("value size must not be 0".into());
        }
        // Arenas are allocated whole: keep one map under 1 GiB.
        let bytes = (self.value_size as u64).next_multiple_of(8) * self.max_entries as u64;
        if bytes > 1 << 30 {
            return bad(format!("{bytes} bytes of values is more than the 1 GiB limit"));
        }
        Ok(())
    }
}

/// Why a map operation failed. [`MapError::errno`] gives what a helper returns to a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("map {name}: {reason}")]
    BadDef { name: String, reason: String },
    #[error("key is {got} bytes, the map's keys are {expected}")]
    KeySize { expected: u32, got: usize },
    #[error("value is {got} bytes, the map's values are {expected}")]
    ValueSize { expected: u32, got: usize },
    #[error("no such key")]
    NoEntry,
    #[error("key exists")]
    Exists,
    #[error("map is full")]
    Full,
    #[error("index {index} is out of range (max_entries {max})")]
    Index { index: u32, max: u32 },
    #[error("invalid flags {0:#x}")]
    Flags(u64),
    #[error("{op} is not supported on a {kind} map")]
    Unsupported { op: &'static str, kind: MapKind },
}

impl MapError {
    /// The negative errno the kernel's helper would return.
    pub fn errno(&self) -> i64 {
        -(match self {
            MapError::NoEntry => libc::ENOENT,
            MapError::Exists => libc::EEXIST,
            MapError::Full | MapError::Index { .. } => libc::E2BIG,
            MapError::Unsupported { .. } => libc::ENOTSUP,
            _ => libc::EINVAL,
        } as i64)
    }
}

enum Store {
    Array(array::Array),
    Hash(hash::Hash),
    Lpm(lpm::Lpm),
    Ring(ringbuf::RingBuf),
}

/// One map: definition plus storage. Shared by every program of its object and the controller.
pub struct Map {
    def: MapDef,
    slots: usize,
    store: Store,
}

impl std::fmt::Debug for Map {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Map({} {} key {} value {} max {})",
            self.def.name, self.def.kind, self.def.key_size, self.def.value_size, self.def.max_entries
        )
    }
}

impl Map {
    /// Creates a map with `slots` worker slots (copies of each per-CPU value; at least 1).
    pub fn new(def: MapDef, slots: usize) -> Result<Map, MapError> {
        def.check()?;
        let slots = slots.max(1);
        let per = if def.kind.is_per_cpu() { slots } else { 1 };
        let store = match def.kind {
            MapKind::Array | MapKind::PerCpuArray | MapKind::DevMap => {
                let a = array::Array::new(def.max_entries, def.value_size, per);
                if !def.initial.is_empty() {
                    a.values().write(0, &def.initial[..def.initial.len().min(def.value_size as usize)]);
                }
                Store::Array(a)
            }
            MapKind::Hash | MapKind::PerCpuHash | MapKind::LruHash | MapKind::LruPerCpuHash => {
                let lru = matches!(def.kind, MapKind::LruHash | MapKind::LruPerCpuHash);
                Store::Hash(hash::Hash::new(def.key_size, def.value_size, def.max_entries, per, lru))
            }
            MapKind::LpmTrie => Store::Lpm(lpm::Lpm::new(def.key_size, def.value_size, def.max_entries)),
            MapKind::RingBuf => Store::Ring(ringbuf::RingBuf::new(def.max_entries)),
        };
        Ok(Map { def, slots, store })
    }

    pub fn def(&self) -> &MapDef {
        &self.def
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    pub fn kind(&self) -> MapKind {
        self.def.kind
    }

    /// Worker slots a per-CPU map holds values for.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The arena filters may address, if any (values, or ring-buffer records).
    pub fn arena(&self) -> &Arena {
        match &self.store {
            Store::Array(a) => a.values(),
            Store::Hash(h) => h.values(),
            Store::Lpm(l) => l.values(),
            Store::Ring(r) => r.data(),
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() != self.def.key_size as usize {
            return Err(MapError::KeySize { expected: self.def.key_size, got: key.len() });
        }
        Ok(())
    }

    /// Address of the value for `key` as worker `slot` sees it (a filter's `map_lookup_elem`).
    #[inline]
    pub fn lookup_addr(&self, key: &[u8], slot: usize) -> Option<u64> {
        match &self.store {
            Store::Array(a) => a.addr(array::index(key)?, slot),
            Store::Hash(h) => h.lookup_addr(key, slot),
            Store::Lpm(l) => l.lookup_addr(key),
            Store::Ring(_) => None,
        }
    }

    /// Inserts or replaces `key` (`flags`: [`ANY`], [`NOEXIST`], [`EXIST`]). For a per-CPU
    /// map, `slot` names the one copy to write, as a filter's update does; a new key's other
    /// copies start zeroed.
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64, slot: usize) -> Result<(), MapError> {
        self.check_key(key)?;
        if value.len() != self.def.value_size as usize {
            return Err(MapError::ValueSize { expected: self.def.value_size, got: value.len() });
        }
        if flags > EXIST {
            return Err(MapError::Flags(flags));
        }
        match &self.store {
            Store::Array(a) => a.update(key, value, flags, Some(slot)),
            Store::Hash(h) => h.update(key, value, flags, Some(slot)),
            Store::Lpm(l) => l.update(key, value, flags),
            Store::Ring(_) => Err(MapError::Unsupported { op: "update", kind: self.def.kind }),
        }
    }

    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        match &self.store {
            Store::Hash(h) => h.delete(key),
            Store::Lpm(l) => l.delete(key),
            Store::Array(_) | Store::Ring(_) => Err(MapError::Unsupported { op: "delete", kind: self.def.kind }),
        }
    }

    /// Copies of each value the controller reads and writes: the worker slots of a per-CPU
    /// map, else 1.
    fn copies(&self) -> usize {
        if self.def.kind.is_per_cpu() { self.slots } else { 1 }
    }

    /// Bytes from one slot's copy to the next in what [`get`](Self::get) returns and
    /// [`set`](Self::set) takes for a per-CPU map: the value size rounded up to 8, as the
    /// kernel's per-CPU lookup syscall lays them out (`round_up(value_size, 8)` per CPU).
    pub fn slot_stride(&self) -> usize {
        (self.def.value_size as usize).next_multiple_of(8)
    }

    /// The value of `key`, copied out (controller side). A per-CPU map gives every slot's
    /// copy in slot order, each at a multiple of [`slot_stride`](Self::slot_stride) bytes
    /// (`slot_stride * slots` bytes, padding zeroed), exactly like the kernel's lookup syscall
    /// on a per-CPU map with one CPU per worker slot: sum the copies for the map's total.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, MapError> {
        self.check_key(key)?;
        let vs = self.def.value_size as usize;
        let copies = self.copies();
        let stride = if copies > 1 { self.slot_stride() } else { vs };
        let arena = self.arena();
        let mut out = vec![0u8; stride * copies];
        for (slot, chunk) in out.chunks_mut(stride).enumerate() {
            let addr = match &self.store {
                Store::Lpm(l) => l.exact_addr(key),
                _ => self.lookup_addr_quiet(key, slot),
            };
            let Some(addr) = addr else { return Ok(None) };
            arena.read((addr - arena.base()) as usize, &mut chunk[..vs]);
        }
        Ok(Some(out))
    }

    /// [`get`](Self::get), one value (`value_size` bytes) per worker slot: `slots` values for
    /// a per-CPU map, one for any other.
    pub fn get_per_slot(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, MapError> {
        let vs = self.def.value_size as usize;
        let stride = if self.copies() > 1 { self.slot_stride() } else { vs };
        Ok(self.get(key)?.map(|all| all.chunks(stride).map(|c| c[..vs].to_vec()).collect()))
    }

    /// Like `lookup_addr`, without touching LRU order (the controller's reads do not count
    /// as use).
    fn lookup_addr_quiet(&self, key: &[u8], slot: usize) -> Option<u64> {
        match &self.store {
            Store::Hash(h) => h.peek_addr(key, slot),
            _ => self.lookup_addr(key, slot),
        }
    }

    /// Sets `key` from the controller: `value` is one value (written to every slot of a
    /// per-CPU map) or, for per-CPU maps, one copy per slot laid out as [`get`](Self::get)
    /// returns them (`slot_stride * slots` bytes; the padding is ignored).
    pub fn set(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.check_key(key)?;
        let vs = self.def.value_size as usize;
        if flags > EXIST {
            return Err(MapError::Flags(flags));
        }
        let per_cpu = self.def.kind.is_per_cpu();
        if value.len() != vs && !(per_cpu && value.len() == self.slot_stride() * self.slots) {
            return Err(MapError::ValueSize { expected: self.def.value_size, got: value.len() });
        }
        match &self.store {
            Store::Array(a) => a.update(key, value, flags, None),
            Store::Hash(h) => h.update(key, value, flags, None),
            Store::Lpm(l) => l.update(key, value, flags),
            Store::Ring(_) => Err(MapError::Unsupported { op: "update", kind: self.def.kind }),
        }
    }

    /// Every key, in no particular order (controller side).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match &self.store {
            Store::Array(a) => (0..a.len()).map(|i| i.to_le_bytes().to_vec()).collect(),
            Store::Hash(h) => h.keys(),
            Store::Lpm(l) => l.keys(),
            Store::Ring(_) => Vec::new(),
        }
    }

    /// The oldest committed ring-buffer record, removed from the ring (controller side).
    pub fn read_record(&self) -> Option<Vec<u8>> {
        match &self.store {
            Store::Ring(r) => r.read(),
            _ => None,
        }
    }

    /// Ring buffer: reserves a record of `size` bytes for a filter; returns its address.
    pub fn ring_reserve(&self, size: u64) -> Option<u64> {
        match &self.store {
            Store::Ring(r) => r.reserve(size),
            _ => None,
        }
    }

    /// Ring buffer: commits (or discards) the record whose data starts at `addr`.
    pub fn ring_commit(&self, addr: u64, discard: bool) -> bool {
        match &self.store {
            Store::Ring(r) => r.commit(addr, discard),
            _ => false,
        }
    }

    /// Ring buffer: copies `data` into a new committed record.
    pub fn ring_output(&self, data: &[u8]) -> Result<(), MapError> {
        match &self.store {
            Store::Ring(r) => r.output(data).ok_or(MapError::Full),
            _ => Err(MapError::Unsupported { op: "ringbuf_output", kind: self.def.kind }),
        }
    }
}

/// Copy `c` of a value the controller passed to [`Map::set`]: the whole of `value` when it is
/// one value (`value_size` bytes), else its `c`th `stride`-byte part, as [`Map::get`] lays
/// copies out. Empty if `value` is too short (`Map::set` checked the length).
fn copy_of(value: &[u8], c: usize, value_size: usize, stride: usize) -> &[u8] {
    if value.len() == value_size {
        return value;
    }
    value.get(c * stride..c * stride + value_size).unwrap_or(&[])
}

/// The maps of one object, in the order its programs index them (`lddw` with
/// `src = PSEUDO_MAP_FD` carries an index into this table). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MapTable {
    maps: Arc<[Arc<Map>]>,
}

impl MapTable {
    pub fn new(maps: Vec<Arc<Map>>) -> MapTable {
        MapTable { maps: maps.into() }
    }

    /// Creates each map of `defs` with `slots` worker slots.
    pub fn create(defs: Vec<MapDef>, slots: usize) -> Result<MapTable, MapError> {
        let maps = defs.into_iter().map(|d| Map::new(d, slots).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        Ok(MapTable::new(maps))
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Arc<Map>> {
        self.maps.get(index)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Map>> {
        self.maps.iter().find(|m| m.name() == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Map>> {
        self.maps.iter()
    }

    /// The address a filter holds for map `index` (what `lddw rX, map` loads).
    pub fn map_addr(&self, index: usize) -> Option<u64> {
        self.maps.get(index).map(|m| Arc::as_ptr(m) as u64)
    }

    /// The map a filter's map address names, if it is one of this table's.
    #[inline]
    pub fn by_addr(&self, addr: u64) -> Option<&Map> {
        self.maps.iter().find(|m| Arc::as_ptr(m) as u64 == addr).map(|m| &**m)
    }

    /// The value an `lddw` with a map reference at `pc` loads: the map's address
    /// (`PSEUDO_MAP_FD`, imm = map index) or the address of a byte of its single value
    /// (`PSEUDO_MAP_VALUE`, imm = map index, second slot's imm = offset). `None` for a plain
    /// `lddw`; 0 for an index or offset this table lacks (the object loader refuses those).
    /// Both back ends resolve references through this, once, before running.
    pub fn lddw_value(&self, insns: &[Insn], pc: usize) -> Option<u64> {
        let i = insns.get(pc).filter(|i| i.is_lddw())?;
        let map = usize::try_from(i.imm).ok().and_then(|m| self.maps.get(m));
        match i.src {
            PSEUDO_MAP_FD => Some(map.map_or(0, |m| Arc::as_ptr(m) as u64)),
            PSEUDO_MAP_VALUE => {
                let off = insns.get(pc + 1).map_or(0, |n| n.imm as u32 as u64);
                Some(map.filter(|m| off < m.arena().len() as u64).map_or(0, |m| m.arena().base() + off))
            }
            _ => None,
        }
    }

    /// The map whose arena holds `[addr, addr + size)`, if any.
    #[inline]
    pub fn arena_of(&self, addr: u64, size: usize) -> Option<&Map> {
        self.maps.iter().find(|m| m.arena().contains(addr, size)).map(|m| &**m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_checked_like_the_kernel() {
        let bad = |d: MapDef| Map::new(d, 1).unwrap_err().to_string();
        assert!(bad(MapDef::new("a", MapKind::Array, 8, 4, 1)).contains("keys are 4 bytes"));
        assert!(bad(MapDef::new("h", MapKind::Hash, 4, 4, 0)).contains("max_entries must not be 0"));
        assert!(bad(MapDef::new("r", MapKind::RingBuf, 0, 0, 1000)).contains("power of two"));
        assert!(bad(MapDef::new("l", MapKind::LpmTrie, 4, 4, 4)).contains("lpm_trie keys"));
        assert!(bad(MapDef::new("d", MapKind::DevMap, 4, 2, 4)).contains("devmap values"));
        Map::new(MapDef::new("ok", MapKind::LruHash, 4, 8, 16), 2).unwrap();
    }

    #[test]
    fn per_cpu_values_are_per_slot_and_read_together() {
        let m = Map::new(MapDef::new("pc", MapKind::PerCpuArray, 4, 8, 4), 3).unwrap();
        let key = 2u32.to_le_bytes();
        m.update(&key, &5u64.to_le_bytes(), ANY, 1).unwrap();
        let all = m.get(&key).unwrap().unwrap();
        assert_eq!(all.len(), 24);
        assert_eq!(&all[8..16], &5u64.to_le_bytes());
        assert_eq!(&all[..8], &[0; 8]);
        m.set(&key, &9u64.to_le_bytes(), ANY).unwrap();
        assert_eq!(m.get(&key).unwrap().unwrap(), [9u64.to_le_bytes(); 3].concat());
        assert!(m.lookup_addr(&key, 3).is_none());
        let a0 = m.lookup_addr(&key, 0).unwrap();
        let a2 = m.lookup_addr(&key, 2).unwrap();
        assert!(m.arena().contains(a0, 8) && m.arena().contains(a2, 8) && a0 != a2);
    }

    #[test]
    fn per_cpu_copies_are_laid_out_like_the_kernels_lookup() {
        // 4-byte values: each slot's copy starts 8 bytes after the previous one, as the
        // kernel's per-CPU lookup returns `round_up(value_size, 8)` bytes per CPU.
        for kind in [MapKind::PerCpuArray, MapKind::PerCpuHash, MapKind::LruPerCpuHash] {
            let m = Map::new(MapDef::new("pc", kind, 4, 4, 4), 3).unwrap();
            let key = 1u32.to_le_bytes();
            m.set(&key, &7u32.to_le_bytes(), ANY).unwrap();
            for slot in 0..3 {
                m.update(&key, &(10 + slot as u32).to_le_bytes(), EXIST, slot).unwrap();
            }
            assert_eq!(m.slot_stride(), 8);
            let all = m.get(&key).unwrap().unwrap();
            assert_eq!(all, [10, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0], "{kind}");
            let split = m.get_per_slot(&key).unwrap().unwrap();
            assert_eq!(split, vec![10u32.to_le_bytes().to_vec(), 11u32.to_le_bytes().to_vec(), 12u32.to_le_bytes().to_vec()]);
            // What `get` returns, `set` takes back (padding ignored).
            let mut back = all.clone();
            back[0] = 20;
            back[4] = 0xff;
            m.set(&key, &back, ANY).unwrap();
            assert_eq!(m.get_per_slot(&key).unwrap().unwrap()[0], 20u32.to_le_bytes());
            assert_eq!(m.get(&key).unwrap().unwrap()[4], 0, "{kind}: padding reads as zero");
            // Neither the packed size nor a slot the map lacks is accepted.
            assert!(matches!(m.set(&key, &[0; 12], ANY), Err(MapError::ValueSize { .. })));
            assert!(m.update(&key, &[0; 4], ANY, 3).is_err(), "{kind}: slot 3 of 3");
        }
        // A new hash key written from a slot the map lacks is not inserted.
        let h = Map::new(MapDef::new("h", MapKind::PerCpuHash, 4, 8, 4), 2).unwrap();
        assert_eq!(h.update(&[1; 4], &[0; 8], ANY, 2), Err(MapError::Index { index: 2, max: 2 }));
        assert!(h.keys().is_empty());
        // Other maps keep one value, whatever the slots.
        let a = Map::new(MapDef::new("a", MapKind::Array, 4, 4, 1), 3).unwrap();
        assert_eq!(a.get(&0u32.to_le_bytes()).unwrap().unwrap().len(), 4);
        assert_eq!(a.get_per_slot(&0u32.to_le_bytes()).unwrap().unwrap().len(), 1);
    }

    #[test]
    fn errors_map_to_kernel_errnos() {
        assert_eq!(MapError::NoEntry.errno(), -2);
        assert_eq!(MapError::Exists.errno(), -17);
        assert_eq!(MapError::Full.errno(), -7);
        assert_eq!(MapError::Flags(9).errno(), -22);
    }

    #[test]
    fn table_finds_maps_by_address_and_arena() {
        let t = MapTable::create(
            vec![MapDef::new("a", MapKind::Array, 4, 4, 2), MapDef::new("h", MapKind::Hash, 2, 4, 2)],
            1,
        )
        .unwrap();
        let addr = t.map_addr(1).unwrap();
        assert_eq!(t.by_addr(addr).map(Map::name), Some("h"));
        assert!(t.by_addr(addr + 1).is_none());
        let v = t.get(0).unwrap().lookup_addr(&1u32.to_le_bytes(), 0).unwrap();
        assert_eq!(t.arena_of(v, 4).map(Map::name), Some("a"));
        assert!(t.arena_of(v, 9).is_none(), "past the last value");
    }
}
