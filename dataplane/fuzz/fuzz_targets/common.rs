//! What the fuzz targets assert about a program validation accepted.

use sluice::bpf::insn::{CLASS_LDX, CLASS_ST, CLASS_STX, MODE_MEM, MODE_MEMSX, REG_FP};
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::specialize::{self, Fact, Residual};
use sluice::bpf::{Exec, Fault, Program};

/// The JIT must compile every valid program, run it without crashing, and give the
/// interpreter's result and packet bytes when both run on the same packet buffer.
///
/// One exception until the verifier exists: a program may use the frame pointer as a value
/// (`r0 |= r10`, storing r10 into the packet), and the two back ends keep their stacks in
/// different places, so such a program's outcome legitimately differs. Packet addresses
/// cannot cause a difference: both back ends see the same buffer.
pub fn interpreter_and_jit_agree(program: &Program, packet: &[u8]) {
    let jit = JitProgram::compile(program).expect("a validated program must compile");
    let interp = Interpreter::new(program);
    let mut buf = packet.to_vec();
    let by_interp = run(&interp, &mut buf, packet);
    let by_jit = run(&jit, &mut buf, packet);
    if !uses_frame_pointer_as_value(program) {
        assert_eq!(by_interp, by_jit, "interpreter and JIT disagree");
    }
}

fn run(engine: &dyn Exec, buf: &mut [u8], packet: &[u8]) -> (Result<u64, Fault>, Vec<u8>) {
    buf.copy_from_slice(packet);
    let r = engine.run_xdp(buf, 1, 0).map_err(Fault::without_address);
    (r, buf.to_vec())
}

/// Whether r10 is read other than as the base of a load or store (where only the accessed
/// bytes matter, not the address). A `mov` copy counts as a use: the copy may leak later.
fn uses_frame_pointer_as_value(program: &Program) -> bool {
    program.insns().iter().any(|i| {
        let mem = matches!(i.mode(), MODE_MEM | MODE_MEMSX);
        let base_only = match i.class() {
            CLASS_LDX => mem && i.dst != REG_FP,
            CLASS_ST => true,
            CLASS_STX => mem && i.src != REG_FP,
            _ => false,
        };
        (i.src == REG_FP || i.dst == REG_FP) && !base_only
    })
}

/// A program specialized to what a pipeline's dispatch would know of `packet` (its ethertype,
/// IPv4 protocol and IPv6 next header, or that it is too short to hold them) gives the
/// original's result and bytes on that packet, in the interpreter.
pub fn specializing_keeps_the_result(program: &Program, packet: &[u8]) {
    let mut facts = Vec::new();
    for (off, size) in [(12u32, 2u8), (23, 1), (20, 1)] {
        let (start, end) = (off as usize, off as usize + size as usize);
        match packet.get(start..end) {
            Some(b) => facts.push(Fact::Is { off, size, value: b.iter().fold(0, |v, &x| v << 8 | x as u32) }),
            None => {
                facts.push(Fact::Shorter { len: end as u64 });
                break;
            }
        }
    }
    // A fact excluding values the packet does not have, as the dispatch's `other` arm knows.
    if let Some(&b) = packet.get(14) {
        facts.push(Fact::NotIn { off: 14, size: 1, values: vec![u32::from(b.wrapping_add(1)), u32::from(b.wrapping_add(7))] });
    }
    let mut buf = packet.to_vec();
    let (want, want_bytes) = run(&Interpreter::new(program), &mut buf, packet);
    let (got, got_bytes) = match specialize::specialize(program, &facts) {
        Residual::Original => return,
        Residual::Const(v) => (Ok(v), packet.to_vec()),
        Residual::Program(r) => run(&Interpreter::new(&r), &mut buf, packet),
    };
    // A residual has fewer instructions, so a fault names another index. (A pure program
    // has no calls or loops: memory faults are the only ones it can have.)
    let kind = |r: Result<u64, Fault>| {
        r.map_err(|f| match f {
            Fault::OutOfBounds { size, write, .. } => Fault::OutOfBounds { pc: 0, addr: 0, size, write },
            other => other,
        })
    };
    assert_eq!((kind(got), got_bytes), (kind(want), want_bytes), "residual under {facts:?} disagrees with the original");
}
