//! Helper functions a program may `call` by id.
//!
//! A helper table is part of a program's environment: validation refuses a `call imm` whose id
//! is not in the table (naming the id), and both back ends call through the same entries, so
//! the interpreter and the JIT cannot disagree about what a helper does.

use std::sync::Arc;

/// Helpers take r1..r5 and return r0, exactly like the kernel's calling convention.
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

/// An immutable id → helper table, cheap to clone into every compiled program.
#[derive(Clone, Default, Debug)]
pub struct Helpers {
    table: Arc<[Option<Helper>]>,
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
        Helpers { table: table.into() }
    }

    pub fn get(&self, id: u64) -> Option<&Helper> {
        usize::try_from(id).ok().and_then(|i| self.table.get(i)).and_then(|h| h.as_ref())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Helper> {
        self.table.iter().flatten()
    }
}
