//! The verifier corpus (`tests/verifier/*.s`, and `*.c` built here with clang-19 into eBPF
//! objects whose maps come along): each program states its expected verdict in a
//! header comment and the test asserts both the verdict and the message. Accepted programs
//! are then run in the interpreter and the JIT on crafted packets: they must never fault (a
//! faulting accepted program is a verifier bug), and both back ends must agree. A property
//! test does the same for random programs.
//!
//! Header lines (assembler comments, or `//` comments in C):
//! - `; expect: accept` or `; expect: reject "message substring"`
//! - `; maps: KIND KEY VALUE ENTRIES [ro], ...` (the program's map table, in order)
//! - `; strict_div`, `; max_insns: N`

use std::path::{Path, PathBuf};

use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::JitProgram;
use sluice::bpf::maps::MapKind;
use sluice::bpf::object::Object;
use sluice::bpf::verifier::{self, MapShape, VerifyEnv};
use sluice::bpf::{Exec, Fault, Helper, Helpers, Program, asm, insn};

mod clang;

#[derive(Debug)]
enum Expect {
    Accept,
    Reject(String),
}

struct Case {
    name: String,
    text: String,
    expect: Expect,
    env: VerifyEnv,
}

/// Stands in for every helper: validation only needs the ids to exist, and the corpus runs
/// only programs without helper calls.
unsafe extern "C" fn never_called(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

fn helpers() -> Helpers {
    let list: Vec<Helper> = verifier::protos::PROTOS
        .iter()
        .map(|p| Helper { id: p.id, name: p.name, func: never_called, unwind_on_zero: false })
        .collect();
    Helpers::from_list(&list)
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verifier")
}

fn parse_kind(s: &str) -> MapKind {
    match s {
        "hash" => MapKind::Hash,
        "array" => MapKind::Array,
        "percpu_hash" => MapKind::PerCpuHash,
        "percpu_array" => MapKind::PerCpuArray,
        "lru_hash" => MapKind::LruHash,
        "lpm_trie" => MapKind::LpmTrie,
        "devmap" => MapKind::DevMap,
        "ringbuf" => MapKind::RingBuf,
        other => panic!("unknown map kind {other:?}"),
    }
}

fn parse_case(path: &Path) -> Case {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let mut expect = None;
    let mut env = VerifyEnv::default();
    for line in text.lines() {
        let l = line.trim();
        let Some(h) = l.strip_prefix(';').or_else(|| l.strip_prefix("//")) else { continue };
        let h = h.trim();
        if let Some(e) = h.strip_prefix("expect:") {
            let e = e.trim();
            expect = Some(if e == "accept" {
                Expect::Accept
            } else {
                let msg = e.strip_prefix("reject").map(str::trim).unwrap_or_else(|| panic!("{name}: bad expect line"));
                Expect::Reject(msg.trim_matches('"').to_string())
            });
        } else if let Some(m) = h.strip_prefix("maps:") {
            for spec in m.split(',') {
                let w: Vec<&str> = spec.split_whitespace().collect();
                let num = |i: usize| w[i].parse::<u32>().unwrap_or_else(|_| panic!("{name}: bad map spec {spec:?}"));
                env.maps.push(MapShape {
                    kind: parse_kind(w[0]),
                    key_size: num(1),
                    value_size: num(2),
                    max_entries: num(3),
                    read_only: w.get(4) == Some(&"ro"),
                });
            }
        } else if let Some(n) = h.strip_prefix("max_insns:") {
            env.max_insns = n.trim().parse().unwrap_or_else(|_| panic!("{name}: bad max_insns"));
        } else if h == "strict_div" {
            env.strict_div = true;
        }
    }
    let expect = expect.unwrap_or_else(|| panic!("{name}: no `; expect:` header"));
    Case { name, text, expect, env }
}

fn corpus() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/verifier exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "s" || e == "c"))
        .collect();
    paths.sort();
    paths.iter().map(|p| parse_case(p)).collect()
}

/// Packets of every length up to 80 bytes and a few longer ones, with varied contents.
fn packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for len in (0..=80).chain([128, 1514]) {
        out.push((0..len).map(|i| (i * 7 + len) as u8).collect());
        out.push(vec![0xff; len]);
        out.push(vec![0; len]);
    }
    out
}

/// Runs `prog` in both back ends on every packet: no fault, same result.
fn run_everywhere(name: &str, prog: &Program, v: &verifier::Verified) -> Result<(), String> {
    let interp = Interpreter::new(prog);
    let jit = JitProgram::compile(prog).map_err(|e| format!("{name}: jit: {e}"))?;
    let jit_v = JitProgram::compile_verified(prog, v).map_err(|e| format!("{name}: jit (verified): {e}"))?;
    for pkt in packets() {
        let mut a = pkt.clone();
        let mut b = pkt.clone();
        let mut c = pkt.clone();
        let ra = interp.run_xdp(&mut a, 1, 0);
        let rb = jit.run_xdp(&mut b, 1, 0);
        let rc = jit_v.run_xdp(&mut c, 1, 0);
        if let Err(f) = ra {
            return Err(format!("{name}: accepted program faults in the interpreter on a {}-byte packet: {f}", pkt.len()));
        }
        if ra.map_err(Fault::without_address) != rb.map_err(Fault::without_address) || ra != rc || a != b || a != c {
            return Err(format!("{name}: back ends disagree on a {}-byte packet: {ra:?} {rb:?} {rc:?}", pkt.len()));
        }
    }
    Ok(())
}

fn uses_helpers_or_maps(prog: &Program) -> bool {
    prog.insns().iter().any(|i| i.is_call() && i.src != insn::CALL_LOCAL || (i.is_lddw() && i.src != 0))
}

#[test]
fn corpus_verdicts_and_messages() {
    let cases = corpus();
    let accepted = cases.iter().filter(|c| matches!(c.expect, Expect::Accept)).count();
    let rejected = cases.len() - accepted;
    assert!(accepted >= 60 && rejected >= 60, "corpus has {accepted} accepted and {rejected} rejected programs");
    let helpers = helpers();
    let mut failures = Vec::new();
    let mut ran = 0;
    for c in &cases {
        if c.name.ends_with(".c") {
            let got = verify_c(c);
            match (&c.expect, got) {
                (Expect::Accept, Ok(())) => {}
                (Expect::Accept, Err(e)) => failures.push(format!("{}: expected accept, got: {e}", c.name)),
                (Expect::Reject(m), Ok(())) => failures.push(format!("{}: expected reject {m:?}, was accepted", c.name)),
                (Expect::Reject(m), Err(e)) if !e.contains(m.as_str()) => {
                    failures.push(format!("{}: expected {m:?} in: {e}", c.name));
                }
                _ => {}
            }
            continue;
        }
        let insns = match asm::assemble(&c.text) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: does not assemble: {e}", c.name));
                continue;
            }
        };
        let got = verifier::load(insns, &helpers, &c.env);
        match (&c.expect, got) {
            (Expect::Accept, Ok((prog, v))) => {
                if !uses_helpers_or_maps(&prog) {
                    ran += 1;
                    if let Err(e) = run_everywhere(&c.name, &prog, &v) {
                        failures.push(e);
                    }
                }
            }
            (Expect::Accept, Err(e)) => failures.push(format!("{}: expected accept, got: {e}", c.name)),
            (Expect::Reject(m), Ok(_)) => failures.push(format!("{}: expected reject {m:?}, was accepted", c.name)),
            (Expect::Reject(m), Err(e)) => {
                if !e.to_string().contains(m.as_str()) {
                    failures.push(format!("{}: expected {m:?} in: {e}", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} corpus programs failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(ran >= 30, "only {ran} accepted programs ran in the back ends");
}

/// Builds a C corpus program with clang-19 and verifies its one program with the object's maps.
fn verify_c(c: &Case) -> Result<(), String> {
    let src = corpus_dir().join(&c.name);
    let bytes = clang::build(&c.name, &src);
    let obj = Object::load(&bytes, 1).map_err(|e| e.to_string())?;
    let prog = &obj.select(None).map_err(|e| e.to_string())?.program;
    let env = VerifyEnv { maps: obj.maps().iter().map(|m| MapShape::from(m.def())).collect(), ..VerifyEnv::default() };
    verifier::verify(prog, &env).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn errors_name_index_instruction_and_registers() {
    let text = "r2 = *(u32 *)(r1 + 0)\nr0 = *(u8 *)(r2 + 14)\nexit\n";
    let insns = asm::assemble(text).unwrap();
    let e = verifier::load(insns, &helpers(), &VerifyEnv::default()).unwrap_err().to_string();
    assert!(e.starts_with("verify: instruction 1 (r0 = *(u8 *)(r2 + 14)): invalid access to packet, off=14 size=1"), "{e}");
    assert!(e.contains("R2=pkt(off=0)"), "{e}");
}

#[test]
fn the_log_shows_every_step_when_asked() {
    let text = "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr4 = r2\nr4 += 4\nif r4 > r3 goto +2\nr0 = *(u32 *)(r2 + 0)\nexit\nr0 = 1\nexit\n";
    let insns = asm::assemble(text).unwrap();
    let env = VerifyEnv { log: true, ..VerifyEnv::default() };
    let (_, v) = verifier::load(insns, &helpers(), &env).unwrap();
    let log = v.log().unwrap();
    assert!(log.contains("5: r0 = *(u32 *)(r2 + 0) ; R0=scalar(umax=4294967295)"), "{log}");
    assert!(v.proven(5));
    let quiet = verifier::load(asm::assemble(text).unwrap(), &helpers(), &VerifyEnv::default()).unwrap().1;
    assert!(quiet.log().is_none());
}

mod random {
    //! Random programs built from a packet-filter vocabulary, so a fair share is accepted.
    use super::*;
    use proptest::prelude::*;

    /// `rN + off` / `rN - off`.
    fn at(r: u8, off: i16) -> String {
        if off < 0 { format!("r{r} - {}", -off) } else { format!("r{r} + {off}") }
    }

    /// One chunk of assembler text, parameterised by small numbers. r2/r3 hold data and
    /// data_end, r0 and r4-r8 are scratch, r9 is the bounds-check temporary.
    fn chunk() -> impl Strategy<Value = String> {
        let r = || proptest::sample::select(vec![0u8, 4, 5, 6, 7, 8]);
        let size = || proptest::sample::select(vec!["u8", "u16", "u32", "u64"]);
        prop_oneof![
            (r(), -20i32..80).prop_map(|(d, k)| format!("r{d} = {k}")),
            (r(), r()).prop_map(|(d, s)| format!("r{d} = r{s}")),
            (r(), 0usize..9, -8i32..70).prop_map(|(d, op, k)| {
                let ops = ["+=", "-=", "&=", "|=", ">>=", "<<=", "*=", "/=", "%="];
                format!("r{d} {} {}", ops[op], if op == 4 || op == 5 { k.rem_euclid(8) } else { k })
            }),
            (r(), r(), 0usize..5).prop_map(|(d, s, op)| format!("r{d} {} r{s}", ["+=", "-=", "&=", "|=", "^="][op])),
            (r(), -2i16..40, size()).prop_map(|(d, o, sz)| format!("r{d} = *({sz} *)({})", at(2, o))),
            (r(), 1i16..9).prop_map(|(d, j)| format!("r{d} = *(u64 *)({})", at(10, -8 * j))),
            (r(), -66i16..2, size()).prop_map(|(s, o, sz)| format!("*({sz} *)({}) = r{s}", at(10, o))),
            (r(), -2i16..40).prop_map(|(s, o)| format!("*(u8 *)({}) = r{s}", at(2, o))),
            (r(), r(), 0usize..6, 1u8..4).prop_map(|(d, s, c, skip)| {
                format!("if r{d} {} r{s} goto +{skip}", [">", ">=", "<", "<=", "==", "!="][c])
            }),
            (r(), 0i32..100, 0usize..4, 1u8..4).prop_map(|(d, k, c, skip)| {
                format!("if r{d} {} {k} goto +{skip}", [">", "<", "==", "!="][c])
            }),
            (0i32..48, 1u8..4).prop_map(|(k, skip)| format!("r9 = r2\nr9 += {k}\nif r9 > r3 goto +{skip}")),
            (0i32..48, 1u8..4).prop_map(|(k, skip)| format!("r9 = r2\nr9 += {k}\nif r3 >= r9 goto +1\ngoto +{skip}")),
            (r(), 1i32..32, 0i16..6).prop_map(|(s, m, o)| {
                format!("r{s} &= {m}\nr8 = r2\nr8 += r{s}\nr9 = r8\nr9 += 8\nif r9 > r3 goto +1\nr{s} = *(u16 *)({})", at(8, o))
            }),
        ]
    }

    fn program() -> impl Strategy<Value = String> {
        proptest::collection::vec(chunk(), 1..24).prop_map(|chunks| {
            let mut t = String::from("r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\n");
            for r in [0, 4, 5, 6, 7, 8] {
                t.push_str(&format!("r{r} = 0\n"));
            }
            for j in 1..=8 {
                t.push_str(&format!("*(u64 *)(r10 - {}) = 0\n", 8 * j));
            }
            for c in chunks {
                t.push_str(&c);
                t.push('\n');
            }
            // Padding so forward jumps land inside the program.
            t.push_str("r0 = 2\nr0 = 2\nr0 = 2\nr0 = 2\nexit\n");
            t
        })
    }

    /// The generator is only useful if the verifier accepts a fair share of what it makes.
    #[test]
    fn a_fair_share_of_random_programs_is_accepted() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut accepted, total) = (0, 1000);
        for _ in 0..total {
            let text = program().new_tree(&mut runner).unwrap().current();
            let insns = asm::assemble(&text).unwrap();
            accepted += verifier::load(insns, &helpers(), &VerifyEnv::default()).is_ok() as usize;
        }
        eprintln!("{accepted} of {total} random programs accepted");
        assert!(accepted * 100 >= 15 * total, "only {accepted} of {total} random programs accepted");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]
        #[test]
        fn accepted_random_programs_never_fault(text in program()) {
            let insns = asm::assemble(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            if let Ok((prog, v)) = verifier::load(insns, &helpers(), &VerifyEnv::default())
                && let Err(e) = run_everywhere("random", &prog, &v)
            {
                return Err(TestCaseError::fail(format!("{e}\n{text}")));
            }
        }
    }
}

#[test]
fn cli_verifies_files_and_prints_the_log() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let dir = corpus_dir();
    let ok = dir.join("acc_pkt_ipv4_ihl.s");
    let (success, out, _) = run(&["filter", "verify", ok.to_str().unwrap()]);
    assert!(success && out.contains("verified (eBPF assembler)") && out.contains("2 memory accesses proven"), "{out}");
    let bad = dir.join("rej_pkt_check_too_short.s");
    let (success, _, err) = run(&["filter", "verify", bad.to_str().unwrap()]);
    assert!(!success && err.contains("instruction 5 (r0 = *(u32 *)(r2 + 12)): invalid access to packet"), "{err}");
    let (success, out, _) = run(&["filter", "verify", "--log", bad.to_str().unwrap()]);
    assert!(!success && out.contains("4: if r4 > r3 goto +2 ;"), "{out}");
}
