//! eBPF ELF objects built by clang (`clang -O2 -g -target bpf`): their XDP programs, maps and
//! global data, loaded with `aya-obj` into validated [`Program`]s over a fresh [`MapTable`].
//!
//! What is accepted: program sections `SEC("xdp")`, `SEC("sluice")` or any other name, several
//! programs per object and per section, bpf-to-bpf calls (linked by `aya-obj`), maps in `.maps`
//! (BTF) or legacy `maps`, and global data (`.rodata*`, `.data*`, `.bss*`, each a single-entry
//! array map). Map references follow the loader convention shared with the verifier: `lddw`
//! with `src = PSEUDO_MAP_FD` has `imm` = index into the object's map table; `src =
//! PSEUDO_MAP_VALUE` has `imm` = map index and the second slot's `imm` = offset in its value.
//! Refused with the reason: CO-RE relocations (there is no kernel BTF to relocate against),
//! map types sluice lacks, helpers sluice lacks (named), and non-XDP program types.
//!
//! Every program is verified at load and keeps the verdict ([`ObjProgram::verified`]). Loops
//! (backward jumps) are admitted only in programs the verifier accepts, since its proof is what
//! bounds them: a program with a loop it cannot bound is refused with its message. So every
//! [`Program`] leaving this module terminates, whichever back end runs it; a loop-free program
//! the verifier refuses still loads, and runs with every access checked at run time.
//!
//! Pure logic: nothing here touches the kernel.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use aya_obj::ProgramSection;

use super::check::{self, CheckError};
use super::helpers::{Helpers, kernel_helper_name};
use super::insn::{CLASS_JMP, CALL_HELPER, Insn, JMP_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE};
use super::maps::{Map, MapDef, MapError, MapKind, MapTable};
use super::verifier::{self, Verified, VerifyEnv, VerifyError};
use super::{ProgKind, Program};

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("not an eBPF ELF object: {0}")]
    NotBpfElf(&'static str),
    #[error("parse object: {0}")]
    Parse(String),
    #[error("object has CO-RE relocations, which need kernel BTF: sluice does not support them")]
    CoRe,
    #[error("map {map}: map type {ty} is not supported (supported: hash, array, percpu_hash, percpu_array, lru_hash, lru_percpu_hash, lpm_trie, devmap, ringbuf)")]
    MapType { map: String, ty: u32 },
    #[error("create maps: {0}")]
    Map(#[from] MapError),
    #[error("relocate: {0}")]
    Relocate(String),
    #[error("program {program} (section {section}): {kind} programs are not supported, only xdp")]
    NotXdp { program: String, section: String, kind: String },
    #[error("program {program}: instruction {index}: helper {id}{} is not supported by sluice", name.map(|n| format!(" (bpf_{n})")).unwrap_or_else(|| " (unknown helper id)".into()))]
    Helper { program: String, index: usize, id: i32, name: Option<&'static str> },
    #[error("program {program}: instruction {index}: map reference {map}+{offset} names no map value of this object")]
    MapReference { program: String, index: usize, map: i32, offset: u32 },
    #[error("program {program}: {source}")]
    Check {
        program: String,
        #[source]
        source: CheckError,
    },
    #[error("program {program}: it has a loop (back-edge from {from} to {to}), so the verifier must bound it: verify: {source}")]
    Loop {
        program: String,
        from: usize,
        to: usize,
        #[source]
        source: Box<VerifyError>,
    },
    #[error("object has no xdp program")]
    NoPrograms,
    #[error("no program or section named {wanted} (programs: {})", .available.join(", "))]
    NoSuchProgram { wanted: String, available: Vec<String> },
    #[error("object has {} programs ({}): name one with --section", .available.len(), .available.join(", "))]
    Ambiguous { available: Vec<String> },
}

/// One program of an object, validated and ready for either back end.
#[derive(Debug, Clone)]
pub struct ObjProgram {
    /// The function name (`int name(struct xdp_md *ctx)`).
    pub name: String,
    /// The ELF section it came from, as written in `SEC(...)`.
    pub section: String,
    pub program: Program,
    /// The verifier's verdict at load, under the object's maps: what it proved (for
    /// `JitProgram::compile_verified`) or why it refused. Always `Ok` for a program with a
    /// loop; a loop-free program it refuses runs with run-time checks.
    pub verified: Result<Verified, VerifyError>,
}

/// A loaded object: its maps (shared by all its programs) and programs.
#[derive(Debug, Clone)]
pub struct Object {
    maps: MapTable,
    programs: Vec<ObjProgram>,
}

impl Object {
    /// Parses `bytes`, creates the maps with `slots` worker slots (per-CPU maps hold one value
    /// per slot), relocates, validates and verifies every XDP program.
    pub fn load(bytes: &[u8], slots: usize) -> Result<Object, ObjectError> {
        Self::load_with(bytes, slots, &VerifyEnv::default())
    }

    /// [`load`](Self::load) verifying under `base` (its log, strict division and complexity
    /// limit; the maps are the object's own).
    pub fn load_with(bytes: &[u8], slots: usize, base: &VerifyEnv) -> Result<Object, ObjectError> {
        let (elf, sections) = rename_program_sections(bytes)?;
        let mut obj = aya_obj::Object::parse(&elf).map_err(|e| ObjectError::Parse(chain(&e)))?;
        if obj.has_btf_relocations() {
            return Err(ObjectError::CoRe);
        }
        // Stable indexes: maps sorted by name.
        let mut names: Vec<String> = obj.maps.keys().cloned().collect();
        names.sort();
        let mut maps = Vec::with_capacity(names.len());
        for name in &names {
            maps.push(Arc::new(Map::new(map_def(name, &obj.maps[name])?, slots)?));
        }
        let maps = MapTable::new(maps);
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let fds: Vec<(String, aya_obj::Map)> = names.iter().map(|n| (n.clone(), obj.maps[n].clone())).collect();
        obj.relocate_maps(fds.iter().enumerate().map(|(i, (n, m))| (n.as_str(), i as i32, m)), &text_sections)
            .map_err(|e| ObjectError::Relocate(chain(&e)))?;
        obj.relocate_calls(&text_sections).map_err(|e| ObjectError::Relocate(chain(&e)))?;

        let helpers = Helpers::kernel(maps.clone());
        let mut programs = Vec::new();
        let mut entries: Vec<(&String, &aya_obj::Program)> = obj.programs.iter().collect();
        entries.sort_by_key(|(name, p)| (p.section_index, p.address, (*name).clone()));
        for (name, p) in entries {
            let section = sections.get(&p.section_index).cloned().unwrap_or_default();
            if !matches!(p.section, ProgramSection::Xdp { .. }) {
                return Err(ObjectError::NotXdp {
                    program: name.clone(),
                    section,
                    kind: format!("{:?}", p.section).split([' ', '{']).next().unwrap_or("").to_lowercase(),
                });
            }
            let func = obj
                .functions
                .get(&p.function_key())
                .ok_or_else(|| ObjectError::Relocate(format!("program {name}: function not found")))?;
            let insns: Vec<Insn> =
                func.instructions.iter().map(|i| Insn::new(i.code, i.dst_reg(), i.src_reg(), i.off, i.imm)).collect();
            let (program, verified) = build_program(name, insns, &helpers, base)?;
            programs.push(ObjProgram { name: name.clone(), section, program, verified });
        }
        if programs.is_empty() {
            return Err(ObjectError::NoPrograms);
        }
        Ok(Object { maps, programs })
    }

    pub fn maps(&self) -> &MapTable {
        &self.maps
    }

    pub fn programs(&self) -> &[ObjProgram] {
        &self.programs
    }

    /// The program named `which` (function or section name), or the only program when `which`
    /// is `None`.
    pub fn select(&self, which: Option<&str>) -> Result<&ObjProgram, ObjectError> {
        let available = || self.programs.iter().map(|p| format!("{} [{}]", p.name, p.section)).collect();
        match which {
            None if self.programs.len() == 1 => Ok(&self.programs[0]),
            None => Err(ObjectError::Ambiguous { available: available() }),
            Some(w) => self
                .programs
                .iter()
                .find(|p| p.name == w)
                .or_else(|| self.programs.iter().find(|p| p.section == w))
                .ok_or_else(|| ObjectError::NoSuchProgram { wanted: w.to_string(), available: available() }),
        }
    }
}

/// A copy of `bytes` with program sections the kernel's loaders do not know by name (such as
/// `SEC("sluice")`) renamed `xdp`, so `aya` or libbpf load the same programs into the kernel.
pub fn kernel_compatible(bytes: &[u8]) -> Result<Vec<u8>, ObjectError> {
    rename_program_sections(bytes).map(|(elf, _)| elf)
}

/// Whether `bytes` looks like an ELF file (the cheap test front ends use).
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// An error and its sources, joined with colons.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn map_def(name: &str, m: &aya_obj::Map) -> Result<MapDef, ObjectError> {
    let kind = MapKind::from_kernel(m.map_type()).ok_or(ObjectError::MapType { map: name.into(), ty: m.map_type() })?;
    Ok(MapDef {
        name: name.to_string(),
        kind,
        key_size: m.key_size(),
        value_size: m.value_size(),
        max_entries: m.max_entries(),
        flags: m.map_flags(),
        initial: m.data().to_vec(),
    })
}

/// Checks helper ids and map references, validates (admitting loops), then verifies under
/// `base` with the maps of `helpers`. A program with a loop the verifier refuses is an error;
/// otherwise the verdict comes back beside the program.
pub(crate) fn build_program(
    name: &str,
    insns: Vec<Insn>,
    helpers: &Helpers,
    base: &VerifyEnv,
) -> Result<(Program, Result<Verified, VerifyError>), ObjectError> {
    let mut pc = 0;
    while pc < insns.len() {
        let i = insns[pc];
        if i.op == CLASS_JMP | JMP_CALL && i.src == CALL_HELPER {
            let known = u64::try_from(i.imm).ok().and_then(|id| helpers.get(id)).is_some();
            if !known {
                let name_of = kernel_helper_name(i.imm as i64);
                return Err(ObjectError::Helper { program: name.into(), index: pc, id: i.imm, name: name_of });
            }
        }
        if i.is_lddw() && matches!(i.src, PSEUDO_MAP_FD | PSEUDO_MAP_VALUE) {
            let offset = insns.get(pc + 1).map_or(0, |n| n.imm as u32);
            let map = usize::try_from(i.imm).ok().and_then(|m| helpers.maps().get(m));
            let ok = match (i.src, map) {
                (PSEUDO_MAP_FD, Some(_)) => true,
                // Direct value addresses exist for single-entry arrays (global data), as in
                // the kernel.
                (_, Some(m)) => {
                    let d = m.def();
                    d.kind == MapKind::Array && d.max_entries == 1 && offset < d.value_size
                }
                _ => false,
            };
            if !ok {
                return Err(ObjectError::MapReference { program: name.into(), index: pc, map: i.imm, offset });
            }
            pc += 1;
        }
        pc += 1;
    }
    let env = VerifyEnv { maps: VerifyEnv::for_table(helpers.maps()).maps, ..base.clone() };
    let sizes: Vec<u32> = env.maps.iter().map(|m| m.value_size).collect();
    let program = check::validate_full(insns, ProgKind::Xdp, helpers, &sizes, true)
        .map_err(|source| ObjectError::Check { program: name.into(), source })?;
    let verified = verifier::verify(&program, &env);
    if let (Some((from, to)), Err(e)) = (check::back_edge(program.insns()), &verified) {
        return Err(ObjectError::Loop { program: name.into(), from, to, source: Box::new(e.clone()) });
    }
    Ok((program, verified))
}

// ELF64 little-endian layout (the only kind clang's bpf target writes).
const EM_BPF: u16 = 247;
const SHT_PROGBITS: u32 = 1;
const SHF_EXECINSTR: u64 = 4;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// `aya-obj` knows only the kernel's section names (`xdp`, `socket`, …) and refuses an object
/// with any other executable section. sluice also accepts `SEC("sluice")` and any other name,
/// all as XDP programs: in a copy of the object, those sections are renamed `xdp` (through a
/// new section-name table appended to the file, so no other name changes). Returns the object
/// to parse and every program section's original name by section index.
fn rename_program_sections(bytes: &[u8]) -> Result<(Vec<u8>, HashMap<usize, String>), ObjectError> {
    let bad = ObjectError::NotBpfElf;
    if !is_elf(bytes) {
        return Err(bad("no ELF magic"));
    }
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Err(bad("not a 64-bit little-endian ELF file"));
    }
    if u16_at(bytes, 0x12) != Some(EM_BPF) {
        return Err(bad("machine is not BPF (build with clang -target bpf)"));
    }
    let truncated = || bad("truncated section headers");
    let shoff = u64_at(bytes, 0x28).ok_or_else(truncated)? as usize;
    let shentsize = u16_at(bytes, 0x3a).ok_or_else(truncated)? as usize;
    let shnum = u16_at(bytes, 0x3c).ok_or_else(truncated)? as usize;
    let shstrndx = u16_at(bytes, 0x3e).ok_or_else(truncated)? as usize;
    if shentsize < 64 || shstrndx >= shnum {
        return Err(bad("malformed section header table"));
    }
    let header = |i: usize| shoff + i * shentsize;
    let str_off = u64_at(bytes, header(shstrndx) + 24).ok_or_else(truncated)? as usize;
    let str_size = u64_at(bytes, header(shstrndx) + 32).ok_or_else(truncated)? as usize;
    let strtab = bytes.get(str_off..str_off.saturating_add(str_size)).ok_or_else(truncated)?;
    let mut names = HashMap::new();
    let mut rename = Vec::new();
    for i in 0..shnum {
        let h = header(i);
        let (Some(name_off), Some(ty), Some(flags), Some(size)) =
            (u32_at(bytes, h), u32_at(bytes, h + 4), u64_at(bytes, h + 8), u64_at(bytes, h + 32))
        else {
            return Err(truncated());
        };
        if ty != SHT_PROGBITS || flags & SHF_EXECINSTR == 0 || size == 0 {
            continue;
        }
        let raw = strtab.get(name_off as usize..).ok_or(bad("section name outside the name table"))?;
        let name = String::from_utf8_lossy(raw.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
        if name.starts_with(".text") {
            continue;
        }
        if ProgramSection::from_str(&name).is_err() {
            rename.push(h);
        }
        names.insert(i, name);
    }
    let mut out = bytes.to_vec();
    if !rename.is_empty() {
        // New table: the old one plus "xdp\0", at the end of the file.
        let new_off = out.len();
        out.extend_from_slice(strtab);
        let xdp_name = str_size as u32;
        out.extend_from_slice(b"xdp\0");
        let sh = header(shstrndx);
        out[sh + 24..sh + 32].copy_from_slice(&(new_off as u64).to_le_bytes());
        out[sh + 32..sh + 40].copy_from_slice(&(str_size as u64 + 4).to_le_bytes());
        for h in rename {
            out[h..h + 4].copy_from_slice(&xdp_name.to_le_bytes());
        }
    }
    Ok((out, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(name: &str, insns: Vec<Insn>, h: &Helpers) -> Result<(Program, Result<Verified, VerifyError>), ObjectError> {
        build_program(name, insns, h, &VerifyEnv::default())
    }

    #[test]
    fn non_elf_and_foreign_elf_are_refused_with_the_reason() {
        let e = Object::load(b"r0 = 2\nexit\n", 1).unwrap_err().to_string();
        assert!(e.contains("no ELF magic"), "{e}");
        let mut host = b"\x7fELF\x02\x01\x01".to_vec();
        host.resize(64, 0);
        host[0x12] = 62; // EM_X86_64
        let e = Object::load(&host, 1).unwrap_err().to_string();
        assert!(e.contains("machine is not BPF"), "{e}");
    }

    #[test]
    fn helper_and_map_reference_errors_name_the_instruction() {
        use crate::bpf::insn::build::*;
        let maps = MapTable::create(vec![MapDef::new("m", MapKind::Hash, 4, 8, 4)], 1).unwrap();
        let h = Helpers::kernel(maps);
        let e = build("p", vec![call_helper(12), exit()], &h).unwrap_err().to_string();
        assert_eq!(e, "program p: instruction 0: helper 12 (bpf_tail_call) is not supported by sluice");
        let e = build("p", vec![call_helper(9999), exit()], &h).unwrap_err().to_string();
        assert!(e.contains("helper 9999 (unknown helper id)"), "{e}");
        let [lo, hi] = lddw(1, 1);
        let e = build("p", vec![Insn { src: PSEUDO_MAP_FD, ..lo }, hi, exit()], &h).unwrap_err();
        assert!(matches!(e, ObjectError::MapReference { index: 0, map: 1, .. }), "{e}");
        // A hash map has no single value to point into.
        let [lo, hi] = lddw(1, 0);
        let e = build("p", vec![Insn { src: PSEUDO_MAP_VALUE, ..lo }, hi, exit()], &h).unwrap_err();
        assert!(matches!(e, ObjectError::MapReference { .. }), "{e}");
        let (p, verified) =
            build("p", vec![Insn { src: PSEUDO_MAP_FD, ..lo }, hi, mov64_imm(0, 2), exit()], &h).unwrap();
        assert_eq!(p.insns()[0].src, PSEUDO_MAP_FD);
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[test]
    fn loops_load_only_when_the_verifier_bounds_them() {
        use crate::bpf::insn::build::*;
        use crate::bpf::insn::{ALU_ADD, JMP_JLT, SIZE_B, SIZE_W};
        let h = Helpers::kernel(MapTable::new(Vec::new()));
        // r0 counts to 10 in a loop: bounded.
        let bounded = vec![mov64_imm(0, 0), alu64_imm(ALU_ADD, 0, 1), jmp_imm(JMP_JLT, 0, 10, -2), exit()];
        let (p, verified) = build("count", bounded, &h).unwrap();
        assert_eq!(check::back_edge(p.insns()), Some((2, 1)));
        assert!(verified.is_ok(), "{verified:?}");
        // r0 is never changed in the loop: the verifier cannot bound it, so it never loads.
        let endless = vec![mov64_imm(0, 0), mov64_imm(1, 1), jmp_imm(JMP_JLT, 0, 10, -2), exit()];
        let e = build("spin", endless, &h).unwrap_err();
        assert!(matches!(e, ObjectError::Loop { from: 2, to: 1, .. }), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("program spin: it has a loop (back-edge from 2 to 1)"), "{text}");
        assert!(text.contains("verify: instruction "), "{text}");
        // A loop-free program the verifier refuses still loads, with the refusal kept.
        let unchecked = vec![ldx(SIZE_W, 0, 1, 0), ldx(SIZE_B, 0, 0, 0), exit()];
        let (_, verified) = build("raw", unchecked, &h).unwrap();
        assert!(verified.is_err());
    }
}
