//! `sluice filter verify FILE [--log]`: runs the static verifier on a filter file and reports
//! what it proved, or why it refused the program (with the full log on request).
//!
//! eBPF files (assembler text, hex or raw bytecode) are validated with loops allowed and then
//! verified; classic BPF text is translated first (its programs never loop).

use std::path::PathBuf;

use anyhow::{Context, Result};
use sluice::bpf::source::{self, Format};
use sluice::bpf::verifier::{self, VerifyEnv};
use sluice::bpf::{Helpers, asm, insn};

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// A filter file: eBPF assembler, eBPF bytecode (hex or raw) or classic BPF text.
    file: PathBuf,
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
    let helpers = Helpers::none();
    let text = std::str::from_utf8(&bytes).ok();
    let format = text.map_or(Format::Bytes, source::detect_text);
    let result = match (format, text) {
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
                print!("{log}");
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
                print!("{log}");
            }
            Err(anyhow::Error::new(e).context(format!("verify {name}")))
        }
    }
}
