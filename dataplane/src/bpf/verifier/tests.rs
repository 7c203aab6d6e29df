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

fn load(text: &str, env: &VerifyEnv) -> Result<Verified, LoadError> {
    let insns = asm::assemble(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    super::load(insns, &Helpers::none(), env).map(|(_, v)| v)
}

/// `n` diamonds, each adding 1 or 2 to r0 depending on a packet byte.
fn diamonds(n: usize) -> String {
    let mut t = String::from("r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 64\nif r4 > r3 goto out\nr0 = 0\n");
    for i in 0..n {
        t.push_str(&format!("r5 = *(u8 *)(r2 + {})\nif r5 > 10 goto +2\nr0 += 1\ngoto +1\nr0 += 2\n", i % 64));
    }
    t.push_str("r0 &= 3\nexit\nout:\nr0 = 2\nexit\n");
    t
}

#[test]
fn imprecise_scalars_do_not_block_pruning() {
    // r0 differs on every path but only reaches the exit: 2^30 paths collapse to one.
    let v = load(&diamonds(30), &VerifyEnv::default()).unwrap();
    assert!(v.processed() < 1000, "explored {} instructions", v.processed());
}

#[test]
fn a_value_that_reaches_an_address_stays_precise() {
    // The same shape, but r0 ends up as a stack offset: pruning must not merge r0 = 1 and 2
    // when only one of them stays in bounds.
    let text = "*(u64 *)(r10 - 8) = 0
        call 7
        r0 &= 1
        if r0 == 0 goto a
        r6 = 1
        goto b
        a: r6 = 8
        b: r7 = r10
        r7 += -8
        r7 += r6
        r0 = *(u8 *)(r7 + 0)
        exit";
    let e = load(text, &VerifyEnv::default()).unwrap_err().to_string();
    assert!(e.contains("unknown helper id 7"), "{e}");
    let insns = asm::assemble(text).unwrap();
    let helpers = crate::bpf::Helpers::from_list(&[crate::bpf::Helper { id: 7, name: "prandom", func: nop, unwind_on_zero: false }]);
    let e = super::load(insns, &helpers, &VerifyEnv::default()).unwrap_err();
    assert!(matches!(e.reason_is(), Some(Reason::StackRange { .. })), "{e}");
}

unsafe extern "C" fn nop(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

impl LoadError {
    fn reason_is(&self) -> Option<&Reason> {
        match self {
            LoadError::Verify(v) => v.reason(),
            LoadError::Check(_) => None,
        }
    }
}

#[test]
fn loops_are_run_until_their_bound_and_unbounded_ones_stop() {
    let v = load("r1 = 0\nloop: r1 += 1\nif r1 < 100 goto loop\nr0 = 2\nexit", &VerifyEnv::default()).unwrap();
    assert!(v.processed() >= 200 && v.processed() < 400, "{}", v.processed());
    let env = VerifyEnv { max_insns: 5000, ..VerifyEnv::default() };
    let e = load("r1 = 0\nloop: r1 += 1\nif r1 < 100000 goto loop\nr0 = 2\nexit", &env).unwrap_err();
    assert!(matches!(e, LoadError::Verify(VerifyError::TooComplex { limit: 5000, .. })), "{e}");
    let e = load("r0 = 0\nloop: goto loop", &VerifyEnv::default()).unwrap_err();
    assert_eq!(e.reason_is(), Some(&Reason::InfiniteLoop(1)));
}

#[test]
fn only_xdp_programs_are_verified() {
    let p = check::validate(asm::assemble("r0 = 0\nexit").unwrap(), ProgKind::Raw, &Helpers::none()).unwrap();
    assert_eq!(verify(&p, &VerifyEnv::default()).unwrap_err(), VerifyError::Kind(ProgKind::Raw));
}

#[test]
fn facts_name_the_region_of_each_access() {
    let v = load(
        "r2 = *(u32 *)(r1 + 0)
         r3 = *(u32 *)(r1 + 4)
         r4 = r2
         r4 += 8
         if r4 > r3 goto out
         *(u64 *)(r10 - 8) = r2
         r5 = *(u64 *)(r10 - 8)
         r0 = *(u8 *)(r5 + 7)
         r0 = *(u8 *)skb[3]
         r0 = *(u8 *)skb[30]
         out: r0 = 2
         exit",
        &VerifyEnv::default(),
    )
    .unwrap();
    assert_eq!(v.access(5), Access::Proven(Region::Stack));
    assert_eq!(v.access(7), Access::Proven(Region::Packet));
    // Legacy loads: proven when the checked length covers them, else still checked.
    assert_eq!(v.access(8), Access::Proven(Region::Packet));
    assert_eq!(v.access(9), Access::Checked);
    assert_eq!(v.access(4), Access::None);
}

#[test]
fn the_stack_needs_no_zeroing_unless_a_helper_may_read_past_what_was_written() {
    let helpers = Helpers::kernel(crate::bpf::maps::MapTable::new(Vec::new()));
    let run = |arg: &str| {
        let text = format!(
            "*(u32 *)(r10 - 4) = 0x7325
             *(u32 *)(r10 - 8) = 0x41
             r1 = r10
             r1 += -4
             r2 = 4
             {arg}
             call 6
             r0 = 2
             exit"
        );
        let insns = asm::assemble(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        super::load(insns, &helpers, &VerifyEnv::default()).unwrap()
    };
    // `trace_printk("%s", 1)`: the format is checked, the scalar is harmless.
    let (p, v) = run("r3 = 1");
    assert!(v.stack_initialised());
    assert_eq!(v.stack_reach(p.insns()), StackReach::Frame { lo: 0, hi: 0 });
    // `%s` of a stack pointer reads up to a NUL, past the bytes the program wrote.
    let (p, v) = run("r3 = r10\nr3 += -8");
    assert!(!v.stack_initialised());
    assert_eq!(v.stack_reach(p.insns()), check::stack_reach(p.insns()));
    assert_eq!(v.stack_reach(p.insns()), StackReach::Frame { lo: -8, hi: 0 });
    // No stack at all stays so.
    let (p, v) = super::load(asm::assemble("r0 = 2\nexit").unwrap(), &helpers, &VerifyEnv::default()).unwrap();
    assert_eq!(v.stack_reach(p.insns()), StackReach::None);
}

#[test]
fn concrete_alu_results_are_the_interpreters() {
    use crate::bpf::Exec;
    use crate::bpf::check::AluOp;
    use crate::bpf::insn::build::*;
    use crate::bpf::insn::*;
    use crate::bpf::interp::Interpreter;
    let ops = [
        (ALU_ADD, AluOp::Add, 0),
        (ALU_SUB, AluOp::Sub, 0),
        (ALU_MUL, AluOp::Mul, 0),
        (ALU_DIV, AluOp::Div, 0),
        (ALU_DIV, AluOp::SDiv, 1),
        (ALU_MOD, AluOp::Mod, 0),
        (ALU_MOD, AluOp::SMod, 1),
        (ALU_OR, AluOp::Or, 0),
        (ALU_AND, AluOp::And, 0),
        (ALU_XOR, AluOp::Xor, 0),
        (ALU_LSH, AluOp::Lsh, 0),
        (ALU_RSH, AluOp::Rsh, 0),
        (ALU_ARSH, AluOp::Arsh, 0),
        (ALU_MOV, AluOp::Mov, 0),
        (ALU_MOV, AluOp::MovSx(8), 8),
        (ALU_MOV, AluOp::MovSx(16), 16),
        (ALU_MOV, AluOp::MovSx(32), 32),
    ];
    let values = [0u64, 1, 7, 63, 0x80, 0xffff_8000, 0x8000_0000, u64::MAX, i64::MIN as u64, 0x1234_5678_9abc_def0];
    for (code, op, off) in ops {
        for wide in [true, false] {
            if !wide && op == AluOp::MovSx(32) {
                continue;
            }
            for a in values {
                for b in values {
                    let class = if wide { CLASS_ALU64 } else { CLASS_ALU };
                    let mut p = lddw(0, a).to_vec();
                    p.extend(lddw(1, b));
                    p.extend([Insn::new(class | code | SRC_X, 0, 1, off, 0), exit()]);
                    let prog = check::validate(p, ProgKind::Raw, &Helpers::none()).unwrap();
                    let got = Interpreter::new(&prog).run_raw(&mut []).unwrap();
                    let want = if wide { scalar::eval64(op, a, b) } else { scalar::eval32(op, a, b) };
                    assert_eq!(want, got, "{op:?} wide={wide} {a:#x} {b:#x}");
                }
            }
        }
    }
}
