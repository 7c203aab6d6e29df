//! The eBPF instruction (RFC 9669) and its wire encoding.
//!
//! A program is a slice of 8-byte slots. `lddw` is the only wide instruction: it takes two
//! slots and the second carries the upper 32 bits of the immediate in its `imm`. Jump offsets
//! and local-call offsets count slots, exactly as on the wire, so a `Vec<Insn>` indexes like
//! the kernel's `insn[]` and error messages can name the same instruction index as llvm-objdump.
//!
//! ```text
//!  opcode byte:  ALU/JMP classes      | msb 4 bits: op | 1 bit: source (K/X) | 3 bits: class |
//!                LD/LDX/ST/STX        | 3 bits: mode   | 2 bits: size        | 3 bits: class |
//!  slot:         | opcode:8 | src:4 dst:4 | off:16 (le) | imm:32 (le) |
//! ```

use std::fmt;

// Instruction classes (low 3 bits).
pub const CLASS_LD: u8 = 0x00;
pub const CLASS_LDX: u8 = 0x01;
pub const CLASS_ST: u8 = 0x02;
pub const CLASS_STX: u8 = 0x03;
pub const CLASS_ALU: u8 = 0x04;
pub const CLASS_JMP: u8 = 0x05;
pub const CLASS_JMP32: u8 = 0x06;
pub const CLASS_ALU64: u8 = 0x07;

// Source bit for ALU/JMP (also the byte-order bit of END).
pub const SRC_K: u8 = 0x00;
pub const SRC_X: u8 = 0x08;

// ALU operations (high 4 bits).
pub const ALU_ADD: u8 = 0x00;
pub const ALU_SUB: u8 = 0x10;
pub const ALU_MUL: u8 = 0x20;
pub const ALU_DIV: u8 = 0x30;
pub const ALU_OR: u8 = 0x40;
pub const ALU_AND: u8 = 0x50;
pub const ALU_LSH: u8 = 0x60;
pub const ALU_RSH: u8 = 0x70;
pub const ALU_NEG: u8 = 0x80;
pub const ALU_MOD: u8 = 0x90;
pub const ALU_XOR: u8 = 0xa0;
pub const ALU_MOV: u8 = 0xb0;
pub const ALU_ARSH: u8 = 0xc0;
pub const ALU_END: u8 = 0xd0;

// Jump operations (high 4 bits).
pub const JMP_JA: u8 = 0x00;
pub const JMP_JEQ: u8 = 0x10;
pub const JMP_JGT: u8 = 0x20;
pub const JMP_JGE: u8 = 0x30;
pub const JMP_JSET: u8 = 0x40;
pub const JMP_JNE: u8 = 0x50;
pub const JMP_JSGT: u8 = 0x60;
pub const JMP_JSGE: u8 = 0x70;
pub const JMP_CALL: u8 = 0x80;
pub const JMP_EXIT: u8 = 0x90;
pub const JMP_JLT: u8 = 0xa0;
pub const JMP_JLE: u8 = 0xb0;
pub const JMP_JSLT: u8 = 0xc0;
pub const JMP_JSLE: u8 = 0xd0;

// Load/store sizes (bits 3-4).
pub const SIZE_W: u8 = 0x00;
pub const SIZE_H: u8 = 0x08;
pub const SIZE_B: u8 = 0x10;
pub const SIZE_DW: u8 = 0x18;

// Load/store modes (high 3 bits).
pub const MODE_IMM: u8 = 0x00;
/// Legacy packet access: `r0 = ntoh(*(size *)(packet + imm))`; out of bounds ends the program
/// with r0 = 0. Classic BPF translates to it because that is exactly classic BPF's semantics.
pub const MODE_ABS: u8 = 0x20;
/// Legacy packet access: `r0 = ntoh(*(size *)(packet + src + imm))` (src as u32).
pub const MODE_IND: u8 = 0x40;
pub const MODE_MEM: u8 = 0x60;
/// Sign-extending load (v4).
pub const MODE_MEMSX: u8 = 0x80;
pub const MODE_ATOMIC: u8 = 0xc0;
/// sluice-internal (LDX only): `dst = ctx field number off`, produced by the loader's rewrite of
/// `xdp_md` loads (see `ctx`). Never valid in user input: validation rejects it.
pub const MODE_CTX: u8 = 0xa0;

// Atomic operations (in `imm`).
pub const ATOMIC_FETCH: i32 = 0x01;
pub const ATOMIC_ADD: i32 = 0x00;
pub const ATOMIC_OR: i32 = 0x40;
pub const ATOMIC_AND: i32 = 0x50;
pub const ATOMIC_XOR: i32 = 0xa0;
pub const ATOMIC_XCHG: i32 = 0xe0 | ATOMIC_FETCH;
pub const ATOMIC_CMPXCHG: i32 = 0xf0 | ATOMIC_FETCH;

// `src` values of `call`.
/// `call imm`: helper by static id.
pub const CALL_HELPER: u8 = 0;
/// `call imm`: bpf-to-bpf call, `imm` is the slot offset from the next instruction.
pub const CALL_LOCAL: u8 = 1;
/// `call imm`: helper by BTF id (kfunc). Not supported by sluice; decoded so it can be refused by name.
pub const CALL_KFUNC: u8 = 2;

// `src` values of `lddw` that ask the loader to patch in a map (issue: eBPF objects).
pub const PSEUDO_MAP_FD: u8 = 1;
pub const PSEUDO_MAP_VALUE: u8 = 2;

/// Frame pointer, read-only.
pub const REG_FP: u8 = 10;
/// Registers r0..r10.
pub const NUM_REGS: u8 = 11;
/// Bytes of stack per frame.
pub const STACK_SIZE: usize = 512;

/// One 8-byte instruction slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Insn {
    pub op: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const SIZE: usize = 8;

    pub const fn new(op: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Insn { op, dst, src, off, imm }
    }

    /// Decodes one slot. Registers are taken as encoded (0..15); range checks belong to validation.
    pub fn decode(b: [u8; 8]) -> Self {
        Insn {
            op: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.op,
            (self.dst & 0x0f) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    pub fn class(&self) -> u8 {
        self.op & 0x07
    }

    /// ALU/JMP operation (high 4 bits).
    pub fn code(&self) -> u8 {
        self.op & 0xf0
    }

    /// ALU/JMP source bit.
    pub fn source(&self) -> u8 {
        self.op & 0x08
    }

    /// Load/store size bits.
    pub fn size(&self) -> u8 {
        self.op & 0x18
    }

    /// Load/store mode bits.
    pub fn mode(&self) -> u8 {
        self.op & 0xe0
    }

    /// Width in bytes of a load/store.
    pub fn size_bytes(&self) -> usize {
        size_bytes(self.size())
    }

    pub fn is_lddw(&self) -> bool {
        self.op == CLASS_LD | MODE_IMM | SIZE_DW
    }

    pub fn is_exit(&self) -> bool {
        self.op == CLASS_JMP | JMP_EXIT
    }

    pub fn is_call(&self) -> bool {
        self.class() == CLASS_JMP && self.code() == JMP_CALL
    }

    /// Any instruction that transfers control by an offset (`ja`, conditional jumps; not call/exit).
    pub fn is_jump(&self) -> bool {
        matches!(self.class(), CLASS_JMP | CLASS_JMP32) && !matches!(self.code(), JMP_CALL | JMP_EXIT)
    }

    /// Branch displacement in slots, relative to the next slot. `ja32` (JMP32|JA) uses `imm`.
    pub fn jump_offset(&self) -> i64 {
        if self.class() == CLASS_JMP32 && self.code() == JMP_JA { self.imm as i64 } else { self.off as i64 }
    }
}

pub fn size_bytes(size: u8) -> usize {
    match size {
        SIZE_B => 1,
        SIZE_H => 2,
        SIZE_W => 4,
        _ => 8,
    }
}

impl fmt::Debug for Insn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Insn {{ op: {:#04x}, dst: r{}, src: r{}, off: {}, imm: {} }}",
            self.op, self.dst, self.src, self.off, self.imm
        )
    }
}

/// Why a byte buffer is not a sequence of instruction slots.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("program is empty")]
    Empty,
    #[error("program is {0} bytes, not a multiple of 8: truncated instruction at index {idx}", idx = .0 / 8)]
    Truncated(usize),
    #[error("invalid hex at character {pos}: {reason}")]
    Hex { pos: usize, reason: &'static str },
}

/// Decodes little-endian instruction slots.
pub fn decode(bytes: &[u8]) -> Result<Vec<Insn>, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if !bytes.len().is_multiple_of(Insn::SIZE) {
        return Err(DecodeError::Truncated(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(Insn::SIZE)
        .map(|c| Insn::decode(c.try_into().expect("chunk of 8")))
        .collect())
}

pub fn encode(insns: &[Insn]) -> Vec<u8> {
    insns.iter().flat_map(|i| i.encode()).collect()
}

/// Parses hex bytecode: whitespace, `0x` prefixes and commas between bytes are ignored.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut nibble: Option<(usize, u8)> = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '0' && nibble.is_none() && matches!(chars.get(i + 1), Some('x' | 'X')) {
            i += 2;
            continue;
        }
        if c.is_whitespace() || c == ',' {
            if let Some((pos, _)) = nibble {
                return Err(DecodeError::Hex { pos, reason: "odd number of hex digits in a byte" });
            }
            i += 1;
            continue;
        }
        let Some(v) = c.to_digit(16) else {
            return Err(DecodeError::Hex { pos: i, reason: "not a hex digit" });
        };
        match nibble.take() {
            None => nibble = Some((i, v as u8)),
            Some((_, hi)) => out.push(hi << 4 | v as u8),
        }
        i += 1;
    }
    if let Some((pos, _)) = nibble {
        return Err(DecodeError::Hex { pos, reason: "odd number of hex digits" });
    }
    Ok(out)
}

/// The 64-bit immediate of the `lddw` at `pc` (the caller has checked that `pc + 1` exists).
pub fn lddw_imm(insns: &[Insn], pc: usize) -> u64 {
    (insns[pc].imm as u32 as u64) | ((insns[pc + 1].imm as u32 as u64) << 32)
}

/// Builders for the instructions tests and front ends emit most; the rest are `Insn::new`.
pub mod build {
    use super::*;

    pub const fn alu64_imm(code: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_K | code, dst, 0, 0, imm)
    }
    pub const fn alu64_reg(code: u8, dst: u8, src: u8) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_X | code, dst, src, 0, 0)
    }
    pub const fn alu32_imm(code: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | SRC_K | code, dst, 0, 0, imm)
    }
    pub const fn alu32_reg(code: u8, dst: u8, src: u8) -> Insn {
        Insn::new(CLASS_ALU | SRC_X | code, dst, src, 0, 0)
    }
    pub const fn mov64_imm(dst: u8, imm: i32) -> Insn {
        alu64_imm(ALU_MOV, dst, imm)
    }
    pub const fn mov64_reg(dst: u8, src: u8) -> Insn {
        alu64_reg(ALU_MOV, dst, src)
    }
    pub const fn mov32_imm(dst: u8, imm: i32) -> Insn {
        alu32_imm(ALU_MOV, dst, imm)
    }
    pub const fn mov32_reg(dst: u8, src: u8) -> Insn {
        alu32_reg(ALU_MOV, dst, src)
    }
    pub const fn jmp_imm(code: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_K | code, dst, 0, off, imm)
    }
    pub const fn jmp_reg(code: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_X | code, dst, src, off, 0)
    }
    pub const fn jmp32_imm(code: u8, dst: u8, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP32 | SRC_K | code, dst, 0, off, imm)
    }
    pub const fn jmp32_reg(code: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_JMP32 | SRC_X | code, dst, src, off, 0)
    }
    pub const fn ja(off: i16) -> Insn {
        Insn::new(CLASS_JMP | JMP_JA, 0, 0, off, 0)
    }
    pub const fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | size, dst, src, off, 0)
    }
    pub const fn stx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_STX | MODE_MEM | size, dst, src, off, 0)
    }
    pub const fn st(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
        Insn::new(CLASS_ST | MODE_MEM | size, dst, 0, off, imm)
    }
    pub const fn ld_abs(size: u8, imm: i32) -> Insn {
        Insn::new(CLASS_LD | MODE_ABS | size, 0, 0, 0, imm)
    }
    pub const fn ld_ind(size: u8, src: u8, imm: i32) -> Insn {
        Insn::new(CLASS_LD | MODE_IND | size, 0, src, 0, imm)
    }
    /// The two slots of `lddw dst, imm64`.
    pub const fn lddw(dst: u8, imm: u64) -> [Insn; 2] {
        [
            Insn::new(CLASS_LD | MODE_IMM | SIZE_DW, dst, 0, 0, imm as u32 as i32),
            Insn::new(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }
    pub const fn call_helper(id: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_HELPER, 0, id)
    }
    pub const fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_round_trips() {
        // `ldxh r3, [r1+12]` as clang emits it.
        let bytes = [0x69, 0x13, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00];
        let i = Insn::decode(bytes);
        assert_eq!((i.op, i.dst, i.src, i.off, i.imm), (0x69, 3, 1, 12, 0));
        assert_eq!(i.class(), CLASS_LDX);
        assert_eq!(i.size_bytes(), 2);
        assert_eq!(i.encode(), bytes);
    }

    #[test]
    fn negative_fields_round_trip() {
        let i = Insn::new(0x55, 2, 0, -3, -1);
        assert_eq!(Insn::decode(i.encode()), i);
    }

    #[test]
    fn truncated_program_names_the_index() {
        let err = decode(&[0u8; 20]).unwrap_err();
        assert_eq!(err, DecodeError::Truncated(20));
        assert!(err.to_string().contains("index 2"));
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn hex_parsing_accepts_common_spellings() {
        assert_eq!(parse_hex("b7 00 00 00\n0x2a,0x00 0000").unwrap(), vec![0xb7, 0, 0, 0, 0x2a, 0, 0, 0]);
        assert!(matches!(parse_hex("b7 0"), Err(DecodeError::Hex { pos: 3, .. })));
        assert!(matches!(parse_hex("zz"), Err(DecodeError::Hex { pos: 0, .. })));
    }

    #[test]
    fn lddw_splits_across_two_slots() {
        let [a, b] = build::lddw(1, 0x1122_3344_5566_7788);
        assert!(a.is_lddw());
        assert_eq!(lddw_imm(&[a, b], 0), 0x1122_3344_5566_7788);
    }
}
