//! Helper prototypes by kernel helper id: what each argument register must hold and what r0
//! holds afterwards. The verifier refuses calls to ids not listed here.

use crate::bpf::maps::MapKind;

/// What an argument register must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// Not passed (must not be read by the helper).
    None,
    /// Any value, even unset (`trace_printk`'s optional format arguments, which C callers
    /// leave unset when the format has fewer conversions).
    Anything,
    /// A scalar.
    Scalar,
    /// The context pointer, unmodified.
    Ctx,
    /// A map whose kind `Maps` accepts.
    Map(Maps),
    /// Pointer to `key_size` initialised bytes (stack, map value) of the map in r1.
    MapKey,
    /// Pointer to `value_size` initialised bytes of the map in r1.
    MapValue,
    /// Pointer to initialised readable memory whose size is the next argument.
    Mem,
    /// [`Arg::Mem`] or the constant 0 (with a size of 0).
    MemOrNull,
    /// The size of the previous [`Arg::Mem`] argument: a bounded scalar.
    Size,
    /// A size that may also be 0.
    SizeOrZero,
    /// A known constant allocation size (ring-buffer reservations).
    AllocSize,
    /// An unmodified pointer returned by `ringbuf_reserve`; releases it.
    RingMem,
}

/// Which map kinds a [`Arg::Map`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maps {
    /// Maps with keys and values (not ring buffers).
    Values,
    RingBuf,
    /// Anything `redirect_map` can look an interface up in.
    Redirect,
}

impl Maps {
    pub fn accepts(self, k: MapKind) -> bool {
        match self {
            Maps::Values => k.has_values(),
            Maps::RingBuf => k == MapKind::RingBuf,
            Maps::Redirect => matches!(k, MapKind::DevMap | MapKind::Array | MapKind::Hash),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Maps::Values => "a map with values",
            Maps::RingBuf => "a ringbuf map",
            Maps::Redirect => "a devmap (or an array/hash of interface indexes)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Scalar,
    /// A pointer to a value of the map in r1, or 0.
    MapValueOrNull,
    /// A ring-buffer reservation of the size in r2, or 0.
    RingMemOrNull,
    /// Nothing: r0 is left uninitialised.
    Void,
}

#[derive(Debug, Clone, Copy)]
pub struct Proto {
    pub id: u32,
    pub name: &'static str,
    pub args: [Arg; 5],
    pub ret: Ret,
    /// Moves the packet: every packet pointer is invalid afterwards.
    pub changes_packet: bool,
}

const fn p(id: u32, name: &'static str, args: [Arg; 5], ret: Ret) -> Proto {
    Proto { id, name, args, ret, changes_packet: false }
}

use Arg::{Anything, AllocSize, Ctx, Map, MapKey, MapValue, Mem, MemOrNull, None as N, Scalar as S, Size, SizeOrZero};

/// The helpers sluice implements, with the kernel's ids.
pub const PROTOS: &[Proto] = &[
    p(1, "map_lookup_elem", [Map(Maps::Values), MapKey, N, N, N], Ret::MapValueOrNull),
    p(2, "map_update_elem", [Map(Maps::Values), MapKey, MapValue, S, N], Ret::Scalar),
    p(3, "map_delete_elem", [Map(Maps::Values), MapKey, N, N, N], Ret::Scalar),
    p(5, "ktime_get_ns", [N, N, N, N, N], Ret::Scalar),
    p(6, "trace_printk", [Mem, Size, Anything, Anything, Anything], Ret::Scalar),
    p(7, "get_prandom_u32", [N, N, N, N, N], Ret::Scalar),
    p(8, "get_smp_processor_id", [N, N, N, N, N], Ret::Scalar),
    p(23, "redirect", [S, S, N, N, N], Ret::Scalar),
    p(28, "csum_diff", [MemOrNull, SizeOrZero, MemOrNull, SizeOrZero, S], Ret::Scalar),
    Proto { changes_packet: true, ..p(44, "xdp_adjust_head", [Ctx, S, N, N, N], Ret::Scalar) },
    p(51, "redirect_map", [Map(Maps::Redirect), S, S, N, N], Ret::Scalar),
    Proto { changes_packet: true, ..p(65, "xdp_adjust_tail", [Ctx, S, N, N, N], Ret::Scalar) },
    p(130, "ringbuf_output", [Map(Maps::RingBuf), Mem, Size, S, N], Ret::Scalar),
    p(131, "ringbuf_reserve", [Map(Maps::RingBuf), AllocSize, S, N, N], Ret::RingMemOrNull),
    p(132, "ringbuf_submit", [Arg::RingMem, S, N, N, N], Ret::Void),
    p(133, "ringbuf_discard", [Arg::RingMem, S, N, N, N], Ret::Void),
];

pub fn proto(id: i64) -> Option<&'static Proto> {
    PROTOS.iter().find(|p| p.id as i64 == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_sizes_follow_memory() {
        for (i, a) in PROTOS.iter().enumerate() {
            assert!(PROTOS[i + 1..].iter().all(|b| b.id != a.id), "{}", a.name);
            for (k, arg) in a.args.iter().enumerate() {
                if matches!(arg, Size | SizeOrZero) {
                    assert!(k > 0 && matches!(a.args[k - 1], Mem | MemOrNull), "{}", a.name);
                }
            }
        }
        assert_eq!(proto(1).map(|p| p.name), Some("map_lookup_elem"));
        assert!(proto(999).is_none());
    }
}
