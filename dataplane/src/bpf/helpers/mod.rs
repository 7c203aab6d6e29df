//! Helper functions a program may `call` by id, and the maps it may name.
//!
//! A [`Helpers`] value is a program's environment: an id → helper table plus the map table
//! its `lddw` map references index. Validation refuses a `call imm` whose id is not in the
//! table (naming the id), and both back ends call through the same entries, so the
//! interpreter and the JIT cannot disagree about what a helper does.
//!
//! [`Helpers::kernel`] is the table object files get: the kernel's helpers with the kernel's
//! ids and semantics (`kernel`), which reach the run they serve through `env`.

mod env;
mod kernel;

use std::sync::Arc;

use super::maps::MapTable;

pub use env::{Redirect, RunEnv, StackArea};
pub(crate) use env::{enter, packet_bounds};
pub use kernel::{ADJUST_HEAD, ADJUST_TAIL, kernel_helper_name};

/// Helpers take r1..r5 and return r0, exactly like the kernel's calling convention.
///
/// A helper may read or write guest memory it is handed a pointer to, but never produces an
/// address inside the BPF stack (returns one, or writes one to memory): which stack bytes a
/// run can reach is computed from the program alone (`check::stack_reach`), and only those are
/// zeroed between runs. None of the kernel's helpers does.
pub type HelperFn = unsafe extern "C" fn(u64, u64, u64, u64, u64) -> u64;

#[derive(Clone, Copy)]
pub struct Helper {
    pub id: u32,
    pub name: &'static str,
    pub func: HelperFn,
    /// When set, a return value of 0 stops the program at once with r0 = 0 (the conformance
    /// suite's `unwind` helper).
    pub unwind_on_zero: bool,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "helper#{} {}", self.id, self.name)
    }
}

/// An immutable id → helper table and map table, cheap to clone into every compiled program.
#[derive(Clone, Default, Debug)]
pub struct Helpers {
    table: Arc<[Option<Helper>]>,
    maps: MapTable,
    /// The kernel helpers need the per-run environment (`env::enter`).
    kernel: bool,
}

impl Helpers {
    /// No helpers: every `call` to a helper id is refused.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn from_list(list: &[Helper]) -> Self {
        let len = list.iter().map(|h| h.id as usize + 1).max().unwrap_or(0);
        let mut table = vec![None; len];
        for h in list {
            table[h.id as usize] = Some(*h);
        }
        Helpers { table: table.into(), maps: MapTable::default(), kernel: false }
    }

    /// The kernel helpers sluice implements, over the maps of one object.
    pub fn kernel(maps: MapTable) -> Self {
        Helpers { maps, kernel: true, ..Self::from_list(kernel::HELPERS) }
    }

    pub fn get(&self, id: u64) -> Option<&Helper> {
        usize::try_from(id).ok().and_then(|i| self.table.get(i)).and_then(|h| h.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Helper> {
        self.table.iter().flatten()
    }

    /// The maps `lddw` map references index.
    pub fn maps(&self) -> &MapTable {
        &self.maps
    }

    /// Whether runs must go through `enter` so helpers see the run (kernel helpers).
    pub fn needs_env(&self) -> bool {
        self.kernel
    }
}
