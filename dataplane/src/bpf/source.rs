//! Which front end reads a filter: a tcpdump expression, classic BPF text (`tcpdump -ddd`/`-dd`),
//! eBPF bytecode (hex text or raw bytes), eBPF assembler text, or a clang-built eBPF ELF object
//! (one of its XDP programs, with its maps), detected or named.
//!
//! Whatever the front end, the result is a validated [`Program`] of `ProgKind::Xdp`, plus the
//! classic code when there was one (for `--dump`), so callers never care where it came from.

use std::fmt;

use crate::bpf::classic::{self, ClassicError, ClassicInsn};
use crate::bpf::object::{self, Object, ObjectError};
use crate::bpf::tcpdump::{self, TcpdumpError};
use crate::bpf::{Helpers, ProgKind, Program, asm, check, insn};

/// A front end, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A tcpdump / pcap-filter expression, compiled by libpcap.
    Tcpdump,
    /// Classic BPF in `tcpdump -ddd` (decimal) or `-dd` (C array) form.
    Classic,
    /// eBPF bytecode as hex digits (8 bytes per instruction, little-endian).
    Hex,
    /// eBPF assembler text, in the syntax `--dump` prints.
    Asm,
    /// Raw eBPF bytecode.
    Bytes,
    /// An ELF object from `clang -target bpf`: one XDP program and the object's maps.
    Object,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Tcpdump => "tcpdump expression",
            Format::Classic => "classic BPF",
            Format::Hex => "eBPF bytecode (hex)",
            Format::Asm => "eBPF assembler",
            Format::Bytes => "eBPF bytecode",
            Format::Object => "eBPF object",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("tcpdump expression: {0}")]
    Tcpdump(#[from] TcpdumpError),
    #[error("classic BPF: {0}")]
    Classic(#[from] ClassicError),
    #[error("eBPF bytecode: {0}")]
    Decode(#[from] insn::DecodeError),
    #[error("eBPF assembler: {0}")]
    Asm(#[from] asm::AsmError),
    #[error("eBPF program: {0}")]
    Check(#[from] check::CheckError),
    #[error("eBPF object: {0}")]
    Object(#[from] ObjectError),
}

/// A compiled filter and what it was made from.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub format: Format,
    /// The classic program, for tcpdump expressions and classic text.
    pub classic: Option<Vec<ClassicInsn>>,
    pub program: Program,
}

impl Compiled {
    /// Classic filters return "match / no match"; eBPF filters return an XDP verdict.
    pub fn is_classic(&self) -> bool {
        self.classic.is_some()
    }
}

/// Compiles `text` with the named front end.
pub fn compile_text(text: &str, format: Format) -> Result<Compiled, SourceError> {
    match format {
        Format::Tcpdump => {
            let insns = tcpdump::compile_expr(text)?;
            classic_program(Format::Tcpdump, insns)
        }
        Format::Classic => classic_program(Format::Classic, classic::parse(text)?),
        Format::Hex => ebpf_program(Format::Hex, insn::decode(&insn::parse_hex(text)?)?),
        Format::Asm => ebpf_program(Format::Asm, asm::assemble(text)?),
        Format::Bytes => compile_bytes(text.as_bytes()),
        Format::Object => compile_object(text.as_bytes(), None, 1),
    }
}

/// Compiles the contents of a filter file, recognising its format: raw bytecode when it is not
/// text, else classic text, hex bytecode or assembler, in that order of evidence.
pub fn compile_file(bytes: &[u8]) -> Result<Compiled, SourceError> {
    if object::is_elf(bytes) {
        return compile_object(bytes, None, 1);
    }
    let Ok(text) = std::str::from_utf8(bytes) else { return compile_bytes(bytes) };
    compile_text(text, detect_text(text))
}

/// Loads an eBPF object and picks its program named `section` (a function or section name;
/// `None`: the only one). The program's maps are created with `slots` worker slots and travel
/// with the program (`program.helpers().maps()`).
pub fn compile_object(bytes: &[u8], section: Option<&str>, slots: usize) -> Result<Compiled, SourceError> {
    let obj = Object::load(bytes, slots)?;
    let program = obj.select(section)?.program.clone();
    Ok(Compiled { format: Format::Object, classic: None, program })
}

fn compile_bytes(bytes: &[u8]) -> Result<Compiled, SourceError> {
    ebpf_program(Format::Bytes, insn::decode(bytes)?)
}

/// Classic text starts with an instruction count (`-ddd`) or a `{ 0x..` line (`-dd`); hex
/// bytecode is hex digits only; anything else is taken for assembler, whose errors then say
/// what is wrong on which line.
pub fn detect_text(text: &str) -> Format {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    match lines.next() {
        Some(first) if first.starts_with('{') => Format::Classic,
        Some(first) if first.parse::<u32>().is_ok() && lines.next().is_some_and(|l| l.split_whitespace().count() == 4) => {
            Format::Classic
        }
        Some(_) if text.split_whitespace().all(|w| w.trim_start_matches("0x").chars().all(|c| c.is_ascii_hexdigit() || c == ',')) => {
            Format::Hex
        }
        _ => Format::Asm,
    }
}

fn classic_program(format: Format, insns: Vec<ClassicInsn>) -> Result<Compiled, SourceError> {
    let program = classic::compile(&insns)?;
    Ok(Compiled { format, classic: Some(insns), program })
}

fn ebpf_program(format: Format, insns: Vec<insn::Insn>) -> Result<Compiled, SourceError> {
    let program = check::validate(insns, ProgKind::Xdp, &Helpers::none())?;
    Ok(Compiled { format, classic: None, program })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_text_format() {
        assert_eq!(detect_text("4\n40 0 0 12\n21 0 1 2048\n6 0 0 65535\n6 0 0 0\n"), Format::Classic);
        assert_eq!(detect_text("{ 0x28, 0, 0, 0x0000000c },\n{ 0x6, 0, 0, 0x00040000 },\n"), Format::Classic);
        assert_eq!(detect_text("b7 00 00 00 02 00 00 00\n95 00 00 00 00 00 00 00\n"), Format::Hex);
        assert_eq!(detect_text("r0 = 2\nexit\n"), Format::Asm);
    }

    #[test]
    fn every_front_end_produces_a_filter() {
        let t = compile_text("udp dst port 53", Format::Tcpdump).unwrap();
        assert!(t.is_classic() && !t.program.insns().is_empty());
        let c = compile_file(b"2\n6 0 0 1\n6 0 0 0\n").unwrap();
        assert_eq!((c.format, c.classic.as_ref().map(Vec::len)), (Format::Classic, Some(2)));
        let h = compile_file(b"b700000002000000\n9500000000000000\n").unwrap();
        assert_eq!((h.format, h.program.insns().len()), (Format::Hex, 2));
        let a = compile_file(b"r0 = 2\nexit\n").unwrap();
        assert_eq!(a.format, Format::Asm);
        let b = compile_file(&[0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0xff]).unwrap_err();
        assert!(matches!(b, SourceError::Check(_)), "{b}");
    }

    #[test]
    fn bad_input_says_which_front_end_refused_it() {
        let e = compile_text("udp dst port", Format::Tcpdump).unwrap_err().to_string();
        assert!(e.starts_with("tcpdump expression: "), "{e}");
        let e = compile_file(b"r0 = \nexit\n").unwrap_err().to_string();
        assert!(e.starts_with("eBPF assembler: "), "{e}");
        let e = compile_file(b"r0 = 2\n").unwrap_err().to_string();
        assert!(e.starts_with("eBPF program: ") && e.contains("instruction 0"), "{e}");
        let e = compile_file(b"\x7fELF\x02\x01\x01").unwrap_err().to_string();
        assert!(e.starts_with("eBPF object: not an eBPF ELF object"), "{e}");
        let e = compile_file(b"b7000000020000").unwrap_err().to_string();
        assert!(e.contains("not a multiple of 8"), "{e}");
    }
}
