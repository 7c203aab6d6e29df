//! What both fuzz targets assert about a program validation accepted.

use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::{Exec, Fault, Program};

type Outcome = (Result<u64, Fault>, Vec<u8>);

fn run(engine: &dyn Exec, buf: &mut [u8], packet: &[u8]) -> Outcome {
    buf.copy_from_slice(packet);
    let r = engine.run_xdp(buf, 1, 0).map_err(Fault::without_address);
    (r, buf.to_vec())
}

/// The JIT must compile every valid program, and give the interpreter's result and packet
/// bytes on the same packet buffer. Until the verifier exists, a program may leak a packet or
/// stack address into r0 or the packet, and the two back ends keep their stacks in different
/// places: such a program is recognised by the interpreter itself giving a different outcome
/// with the packet elsewhere and on another thread (another scratch stack), and is only
/// required to run without crashing.
pub fn interpreter_and_jit_agree(program: &Program, packet: &[u8]) {
    let jit = JitProgram::compile(program).expect("a validated program must compile");
    let interp = Interpreter::new(program);
    let mut buf = packet.to_vec();
    let by_interp = run(&interp, &mut buf, packet);
    let by_jit = run(&jit, &mut buf, packet);
    if by_interp == by_jit {
        return;
    }
    let elsewhere = std::thread::scope(|s| {
        s.spawn(|| {
            let mut other = vec![0u8; packet.len() + 64];
            let len = packet.len();
            run(&interp, &mut other[64..64 + len], packet)
        })
        .join()
        .expect("interpreter thread")
    });
    assert_ne!(
        elsewhere, by_interp,
        "interpreter and JIT disagree on an address-independent program:\n interpreter {by_interp:?}\n jit         {by_jit:?}"
    );
}
