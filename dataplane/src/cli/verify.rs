//! `sluice filter verify FILE [--log]`: runs the static verifier on a filter file and reports
//! what it proved, or why it refused the program (with the full log on request).
//!
//! eBPF files (assembler text, hex or raw bytecode) are validated with loops allowed and then
//! verified against the kernel helpers (no maps); clang-built ELF objects are loaded with their
//! maps and one program (`--section`) is verified; classic BPF text is translated first.

use std::path::PathBuf;

use anyhow::{Context, Result};
use sluice::bpf::maps::MapTable;
use sluice::bpf::object::{self, Object, ObjectError};
use sluice::bpf::source::{self, Format};
use sluice::bpf::verifier::{self, VerifyEnv};
use sluice::bpf::{Helpers, asm, insn};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A filter file: an eBPF object (clang -target bpf), eBPF assembler, eBPF bytecode (hex
    /// or raw) or classic BPF text.
    file: PathBuf,
    /// For an object with several programs: the one to verify (function or section name).
    #[arg(long)]
    section: Option<String>,
    /// Print the verifier's log: every instruction explored with the registers it leaves.
    #[arg(long)]
    log: bool,
    /// Refuse division and modulo by a register that may be 0.
    #[arg(long)]
    strict_div: bool,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let name = args.file.display();
    let bytes = std::fs::read(&args.file).with_context(|| format!("read {name}"))?;
    let env = VerifyEnv { log: args.log, strict_div: args.strict_div, ..VerifyEnv::default() };
    let helpers = Helpers::kernel(MapTable::new(Vec::new()));
    let text = std::str::from_utf8(&bytes).ok();
    let format = if object::is_elf(&bytes) { Format::Object } else { text.map_or(Format::Bytes, source::detect_text) };
    let result = match (format, text) {
        (Format::Object, _) => {
            // The loader verifies every program; a loop it cannot bound fails the load itself.
            let obj = match Object::load_with(&bytes, 1, &env) {
                Ok(obj) => obj,
                Err(e) => {
                    if let ObjectError::Loop { source, .. } = &e
                        && let Some(log) = source.log()
                    {
                        print_log(log);
                    }
                    return Err(anyhow::Error::new(e).context(format!("verify {name}")));
                }
            };
            let p = obj.select(args.section.as_deref())?;
            p.verified.clone().map(|v| (p.program.clone(), v)).map_err(Into::into)
        }
        (Format::Asm, Some(t)) => verifier::load(asm::assemble(t)?, &helpers, &env),
        (Format::Hex, Some(t)) => verifier::load(insn::decode(&insn::parse_hex(t)?)?, &helpers, &env),
        (Format::Classic, _) => {
            let compiled = source::compile_file(&bytes)?;
            verifier::verify(&compiled.program, &env).map(|v| (compiled.program, v)).map_err(Into::into)
        }
        _ => verifier::load(insn::decode(&bytes)?, &helpers, &env),
    };
    match result {
        Ok((prog, v)) => {
            if let Some(log) = v.log() {
                print_log(log);
            }
            println!(
                "{name}: verified ({format}): {} instructions, {} explored, {} states saved, {} memory accesses proven in bounds",
                prog.insns().len(),
                v.processed(),
                v.states(),
                v.proven_count()
            );
            Ok(())
        }
        Err(e) => {
            if let Some(log) = e.log() {
                print_log(log);
            }
            Err(anyhow::Error::new(e).context(format!("verify {name}")))
        }
    }
}

/// The log, ending its last line so that what follows starts on a line of its own.
fn print_log(log: &str) {
    print!("{log}");
    if !log.is_empty() && !log.ends_with('\n') {
        println!();
    }
}
