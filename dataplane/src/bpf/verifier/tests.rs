//! Unit tests of the verifier on small assembled programs.

use super::*;
use crate::bpf::{asm, check, Helpers};

fn prog(text: &str) -> Program {
    let insns = asm::assemble(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check::validate(insns, ProgKind::Xdp, &Helpers::none()).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn accepts_a_bounds_checked_packet_load() {
    let p = prog(
        "r2 = *(u32 *)(r1 + 0)
         r3 = *(u32 *)(r1 + 4)
         r4 = r2
         r4 += 14
         if r4 > r3 goto out
         r0 = *(u16 *)(r2 + 12)
         exit
         out: r0 = 2
         exit",
    );
    let v = verify(&p, &VerifyEnv::default()).unwrap();
    assert_eq!(v.access(5), Access::Proven(Region::Packet));
}
