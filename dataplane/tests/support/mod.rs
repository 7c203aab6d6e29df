//! Shared integration-test helpers: the bpf_conformance corpus, the six helpers its execution
//! contract defines, and a suite runner any back end plugs into with one line.
//!
//! The corpus is read from the shared checkout, never copied into the repository:
//! `$SLUICE_CONFORMANCE` (the `.jsonl` file or its directory) if set, else
//! `<repo>/../shared/bpf-conformance/`, else `/work/shared/bpf-conformance/`.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use sluice::bpf::insn::{self, Insn};
use sluice::bpf::{Exec, Helper, Helpers, ProgKind, Program, check};

const FILE: &str = "bpf_conformance.jsonl";

/// One conformance vector.
#[derive(Debug, Clone)]
pub struct Vector {
    pub name: String,
    pub program: Vec<Insn>,
    pub memory: Vec<u8>,
    pub result: u64,
}

#[derive(serde::Deserialize)]
struct Line {
    name: String,
    program: String,
    memory: String,
    result: String,
}

/// Where the corpus file is, if anywhere.
pub fn conformance_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_CONFORMANCE") {
        let p = PathBuf::from(p);
        let p = if p.is_dir() { p.join(FILE) } else { p };
        return p.is_file().then_some(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [repo.join("../shared/bpf-conformance").join(FILE), PathBuf::from("/work/shared/bpf-conformance").join(FILE)]
        .into_iter()
        .find(|p| p.is_file())
}

fn parse_result(s: &str) -> Result<u64, String> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse::<u64>(),
    }
    .map_err(|e| format!("result {s:?}: {e}"))?;
    Ok(if neg { v.wrapping_neg() } else { v })
}

/// Parses the corpus text (one JSON object a line).
pub fn parse_vectors(text: &str) -> Result<Vec<Vector>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let ctx = |e: String| format!("line {}: {e}", n + 1);
        let l: Line = serde_json::from_str(line).map_err(|e| ctx(e.to_string()))?;
        let bytes = insn::parse_hex(&l.program).map_err(|e| ctx(format!("{}: program: {e}", l.name)))?;
        let program = insn::decode(&bytes).map_err(|e| ctx(format!("{}: program: {e}", l.name)))?;
        let memory = insn::parse_hex(&l.memory).map_err(|e| ctx(format!("{}: memory: {e}", l.name)))?;
        let result = parse_result(&l.result).map_err(ctx)?;
        out.push(Vector { name: l.name, program, memory, result });
    }
    Ok(out)
}

/// Loads the corpus. `None` (after printing why) when it is absent outside CI; under
/// `CI=true` a missing corpus fails the test.
pub fn load_vectors() -> Option<Vec<Vector>> {
    let Some(path) = conformance_path() else {
        let msg = match std::env::var("SLUICE_CONFORMANCE") {
            Ok(p) => format!("conformance corpus not found at SLUICE_CONFORMANCE={p}"),
            Err(_) => format!("conformance corpus {FILE} not found (set SLUICE_CONFORMANCE)"),
        };
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
        return None;
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Some(parse_vectors(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display())))
}

unsafe extern "C" fn gather_bytes(a: u64, b: u64, c: u64, d: u64, e: u64) -> u64 {
    (a & 0xff) << 32 | (b & 0xff) << 24 | (c & 0xff) << 16 | (d & 0xff) << 8 | (e & 0xff)
}

/// Xors `len` bytes at `ptr` with 42.
unsafe extern "C" fn memfrob(ptr: u64, len: u64, _: u64, _: u64, _: u64) -> u64 {
    if ptr != 0 {
        // SAFETY: the contract of this test helper: the program passes a pointer to `len`
        // writable bytes of its memory or stack (the conformance programs do).
        let bytes = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len as usize) };
        bytes.iter_mut().for_each(|b| *b ^= 42);
    }
    0
}

unsafe extern "C" fn no_op(_: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    0
}

unsafe extern "C" fn sqrti(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    a.isqrt()
}

/// C `strcmp` of two NUL-terminated strings, sign-extended like an `int` return.
unsafe extern "C" fn strcmp_ext(a: u64, b: u64, _: u64, _: u64, _: u64) -> u64 {
    if a == 0 || b == 0 {
        return 0;
    }
    let (mut p, mut q) = (a as *const u8, b as *const u8);
    loop {
        // SAFETY: the contract of this test helper: both arguments point to NUL-terminated
        // strings in the program's memory or stack.
        let (x, y) = unsafe { (*p, *q) };
        if x != y || x == 0 {
            return (x as i64 - y as i64) as u64;
        }
        // SAFETY: not past the terminator, which is still ahead.
        unsafe {
            p = p.add(1);
            q = q.add(1);
        }
    }
}

unsafe extern "C" fn unwind(a: u64, _: u64, _: u64, _: u64, _: u64) -> u64 {
    a
}

/// The helper table of the conformance contract.
pub fn conformance_helpers() -> Helpers {
    let h = |id, name, func, unwind_on_zero| Helper { id, name, func, unwind_on_zero };
    Helpers::from_list(&[
        h(0, "gather_bytes", gather_bytes, false),
        h(1, "memfrob", memfrob, false),
        h(2, "no_op", no_op, false),
        h(3, "sqrti", sqrti, false),
        h(4, "strcmp_ext", strcmp_ext, false),
        h(5, "unwind", unwind, true),
    ])
}

/// Runs one vector: validate as `Raw`, run on a writable copy of its memory.
pub fn run_vector(v: &Vector, make: &dyn Fn(&Program) -> Box<dyn Exec>) -> Result<u64, String> {
    let prog = check::validate(v.program.clone(), ProgKind::Raw, &conformance_helpers())
        .map_err(|e| format!("validate: {e}"))?;
    let mut mem = v.memory.clone();
    make(&prog).run_raw(&mut mem).map_err(|f| format!("fault: {f}"))
}

/// Runs the whole corpus on a back end, prints `conformance: NAME N/313 passed` and fails
/// listing every miss. Returns silently when the corpus is absent outside CI.
pub fn run_suite(name: &str, make: impl Fn(&Program) -> Box<dyn Exec>) {
    let Some(vectors) = load_vectors() else { return };
    let mut misses = Vec::new();
    for v in &vectors {
        match run_vector(v, &make) {
            Ok(r0) if r0 == v.result => {}
            Ok(r0) => misses.push(format!("{}: r0 = {r0:#x}, expected {:#x}", v.name, v.result)),
            Err(e) => misses.push(format!("{}: {e}", v.name)),
        }
    }
    println!("conformance: {name} {}/{} passed", vectors.len() - misses.len(), vectors.len());
    assert!(misses.is_empty(), "{name} missed {} vectors:\n{}", misses.len(), misses.join("\n"));
}
