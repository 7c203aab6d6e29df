//! A small assembler for the text [`super::disasm`] prints, so programs can be written, dumped
//! and read back: `assemble(&disasm::program(p)) == p` for every program.
//!
//! Beyond the disassembler's syntax it accepts a leading `N:` index (ignored), labels
//! (`name:` lines; `goto name`, `if r1 == 0 goto name`, `gotol name`, `call name` for a local
//! call) and comments starting with `#`, `//` or `;`. Registers are `rN` (64-bit) or `wN`
//! (32-bit); numbers are decimal or `0x` hex. It checks syntax only: whether the program is
//! valid is [`super::check::validate`]'s business. Errors name the line and column.
//!
//! Map references are `rD = map[N] ll` (pointer to map N of the program's map table) and
//! `rD = map_value[N] + OFF ll` (pointer OFF bytes into the value of single-entry map N; the
//! `+ OFF` is optional), the `lddw` sources [`PSEUDO_MAP_FD`] and [`PSEUDO_MAP_VALUE`].
//!
//! One thing does not round-trip: `rD = ctx->field` (the internal rewritten load) assembles
//! with src = 0, because the disassembler does not print the register it was loaded through.

use std::collections::HashMap;

use super::ctx::CtxField;
use super::insn::*;

/// Why a text is not a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {col}: {msg}")]
pub struct AsmError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(u64),
    Punct(&'static str),
}

/// Operators, longest first so `<<=` wins over `<` and `<=`.
const PUNCTS: &[&str] = &[
    "<<=", ">>=", "->", "+=", "-=", "*=", "/=", "|=", "&=", "%=", "^=", "==", "!=", ">=", "<=", "=", ">", "<", "&",
    "(", ")", "*", "+", "-", "[", "]", ",", ":",
];

/// Assembles `text` into instruction slots.
pub fn assemble(text: &str) -> Result<Vec<Insn>, AsmError> {
    let mut asm = Assembler::default();
    for (n, raw) in text.lines().enumerate() {
        let mut line = Line::lex(raw, n + 1)?;
        asm.line(&mut line)?;
    }
    asm.finish()
}

/// The tokens of one line and a cursor over them.
struct Line {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    line: usize,
    /// Column just past the last character, for "expected ..." at the end.
    end: usize,
}

fn code_part(raw: &str) -> &str {
    let cut = ["#", "//", ";"].iter().filter_map(|c| raw.find(c)).min().unwrap_or(raw.len());
    &raw[..cut]
}

impl Line {
    fn lex(raw: &str, line: usize) -> Result<Self, AsmError> {
        let code = code_part(raw);
        let chars: Vec<char> = code.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let col = i + 1;
            if c.is_whitespace() {
                i += 1;
            } else if c.is_ascii_alphabetic() || c == '_' || c == '.' {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.') {
                    i += 1;
                }
                toks.push((Tok::Ident(chars[start..i].iter().collect()), col));
            } else if c.is_ascii_digit() {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let parsed = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => word.parse::<u64>(),
                };
                let v = parsed.map_err(|_| AsmError { line, col, msg: format!("invalid number {word:?}") })?;
                toks.push((Tok::Num(v), col));
            } else {
                let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
                let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
                    return Err(AsmError { line, col, msg: format!("unexpected character {c:?}") });
                };
                toks.push((Tok::Punct(p), col));
                i += p.len();
            }
        }
        Ok(Line { toks, pos: 0, line, end: chars.len() + 1 })
    }

    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |t| t.1)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, AsmError> {
        Err(AsmError { line: self.line, col: self.col(), msg: msg.into() })
    }

    fn err_at<T>(&self, col: usize, msg: impl Into<String>) -> Result<T, AsmError> {
        Err(AsmError { line: self.line, col, msg: msg.into() })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.0)
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(i)) if i == s)
    }

    fn eat_punct(&mut self, p: &str) -> bool {
        let hit = self.is_punct(p);
        if hit {
            self.bump();
        }
        hit
    }

    fn punct(&mut self, p: &str) -> Result<(), AsmError> {
        if self.eat_punct(p) { Ok(()) } else { self.err(format!("expected `{p}`")) }
    }

    fn ident(&mut self) -> Result<String, AsmError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => self.err("expected a name"),
        }
    }

    fn keyword(&mut self, k: &str) -> Result<(), AsmError> {
        if self.is_ident(k) {
            self.bump();
            Ok(())
        } else {
            self.err(format!("expected `{k}`"))
        }
    }

    fn done(&self) -> Result<(), AsmError> {
        if self.at_end() { Ok(()) } else { self.err("unexpected text after the instruction") }
    }

    fn peek_reg(&self) -> Option<Reg> {
        match self.peek() {
            Some(Tok::Ident(s)) => parse_reg(s),
            _ => None,
        }
    }

    fn reg(&mut self) -> Result<Reg, AsmError> {
        match self.peek_reg() {
            Some(r) => {
                self.bump();
                Ok(r)
            }
            None => self.err("expected a register (r0..r10 or w0..w10)"),
        }
    }

    /// A 64-bit register (addresses, `callx`, stores).
    fn reg64(&mut self) -> Result<u8, AsmError> {
        let col = self.col();
        let r = self.reg()?;
        if !r.wide {
            return self.err_at(col, format!("expected r{}, not w{}", r.n, r.n));
        }
        Ok(r.n)
    }

    /// A register of the given width.
    fn reg_w(&mut self, wide: bool) -> Result<u8, AsmError> {
        let col = self.col();
        let r = self.reg()?;
        if r.wide != wide {
            return self.err_at(col, "registers of one instruction must all be rN or all wN");
        }
        Ok(r.n)
    }

    /// An optionally signed number.
    fn signed(&mut self) -> Result<i128, AsmError> {
        let neg = if self.eat_punct("-") {
            true
        } else {
            self.eat_punct("+");
            false
        };
        match self.peek() {
            Some(Tok::Num(v)) => {
                let v = *v as i128;
                self.bump();
                Ok(if neg { -v } else { v })
            }
            _ => self.err("expected a number"),
        }
    }

    /// A number that must fit `lo..=hi`.
    fn ranged(&mut self, lo: i128, hi: i128, what: &str) -> Result<i128, AsmError> {
        let col = self.col();
        let v = self.signed()?;
        if v < lo || v > hi {
            return self.err_at(col, format!("{what} {v} is out of range ({lo}..={hi})"));
        }
        Ok(v)
    }

    /// A 32-bit immediate. For 32-bit operations `0x80000000..=0xffffffff` are accepted as
    /// their two's-complement bit patterns.
    fn imm(&mut self, wide: bool) -> Result<i32, AsmError> {
        let hi = if wide { i32::MAX as i128 } else { u32::MAX as i128 };
        Ok(self.ranged(i32::MIN as i128, hi, "immediate")? as u32 as i32)
    }

    /// `(reg + off)` or `(reg - off)`, the parentheses included when `parens`.
    fn address(&mut self, parens: bool) -> Result<(u8, i16), AsmError> {
        if parens {
            self.punct("(")?;
        }
        let base = self.reg64()?;
        let off = if self.is_punct("+") || self.is_punct("-") {
            self.ranged(i16::MIN as i128, i16::MAX as i128, "offset")? as i16
        } else {
            0
        };
        if parens {
            self.punct(")")?;
        }
        Ok((base, off))
    }

    /// `(u16 *)` / `(s8 *)`: returns (size bits, signed).
    fn size_cast(&mut self) -> Result<(u8, bool), AsmError> {
        self.punct("(")?;
        let col = self.col();
        let name = self.ident()?;
        let (signed, bits) = match name.split_at_checked(1) {
            Some(("u", b)) => (false, b),
            Some(("s", b)) => (true, b),
            _ => return self.err_at(col, format!("expected u8/u16/u32/u64, not {name:?}")),
        };
        let size = match bits {
            "8" => SIZE_B,
            "16" => SIZE_H,
            "32" => SIZE_W,
            "64" => SIZE_DW,
            _ => return self.err_at(col, format!("expected u8/u16/u32/u64, not {name:?}")),
        };
        self.punct("*")?;
        self.punct(")")?;
        Ok((size, signed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Reg {
    n: u8,
    wide: bool,
}

fn parse_reg(s: &str) -> Option<Reg> {
    let (wide, digits) = match s.split_at_checked(1)? {
        ("r", d) => (true, d),
        ("w", d) => (false, d),
        _ => return None,
    };
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u8 = digits.parse().ok()?;
    (n < 16).then_some(Reg { n, wide })
}

/// Where a label reference goes once the label's slot is known.
#[derive(Debug, Clone, Copy)]
enum Fix {
    /// Jump offset in `off`.
    Off,
    /// `ja32` offset or local-call offset in `imm`.
    Imm,
}

#[derive(Default)]
struct Assembler {
    out: Vec<Insn>,
    labels: HashMap<String, usize>,
    fixups: Vec<(usize, Fix, String, usize, usize)>,
}

/// A jump offset: a number (`+3`, `-2`, `3`) or a label, resolved later.
enum Target {
    Rel(i128),
    Label(String, usize),
}

impl Assembler {
    fn line(&mut self, l: &mut Line) -> Result<(), AsmError> {
        // Leading `N:` indices and `name:` labels.
        while matches!(l.peek_at(1), Some(Tok::Punct(":"))) {
            let col = l.col();
            match l.peek().cloned() {
                Some(Tok::Num(_)) => {}
                Some(Tok::Ident(name)) => {
                    if parse_reg(&name).is_some() || name.starts_with('.') {
                        return l.err_at(col, format!("{name:?} cannot be a label"));
                    }
                    if self.labels.insert(name.clone(), self.out.len()).is_some() {
                        return l.err_at(col, format!("label {name:?} is defined twice"));
                    }
                }
                _ => return l.err("expected a label or an index before `:`"),
            }
            l.bump();
            l.bump();
        }
        if l.at_end() {
            return Ok(());
        }
        self.statement(l)?;
        l.done()
    }

    fn push(&mut self, i: Insn) {
        self.out.push(i);
    }

    fn target(&mut self, l: &mut Line) -> Result<Target, AsmError> {
        let col = l.col();
        match l.peek() {
            Some(Tok::Ident(name)) if parse_reg(name).is_none() => {
                let name = name.clone();
                l.bump();
                Ok(Target::Label(name, col))
            }
            _ => Ok(Target::Rel(l.signed()?)),
        }
    }

    /// Pushes `insn` with its offset (`fix`) from `t`.
    fn push_target(&mut self, l: &Line, mut insn: Insn, fix: Fix, t: Target, col: usize) -> Result<(), AsmError> {
        match t {
            Target::Rel(v) => match fix {
                Fix::Off => match i16::try_from(v) {
                    Ok(off) => insn.off = off,
                    Err(_) => return l.err_at(col, format!("jump offset {v} is out of range for 16 bits")),
                },
                Fix::Imm => match i32::try_from(v) {
                    Ok(imm) => insn.imm = imm,
                    Err(_) => return l.err_at(col, format!("offset {v} is out of range for 32 bits")),
                },
            },
            Target::Label(name, col) => self.fixups.push((self.out.len(), fix, name, l.line, col)),
        }
        self.push(insn);
        Ok(())
    }

    fn statement(&mut self, l: &mut Line) -> Result<(), AsmError> {
        let col = l.col();
        let word = match l.peek() {
            Some(Tok::Ident(w)) if parse_reg(w).is_none() => w.clone(),
            Some(Tok::Ident(_)) => return self.reg_statement(l),
            Some(Tok::Punct("*")) => return self.store(l),
            _ => return l.err("expected an instruction"),
        };
        l.bump();
        match word.as_str() {
            "exit" => self.push(Insn::new(CLASS_JMP | JMP_EXIT, 0, 0, 0, 0)),
            "call" => {
                if l.is_ident("pc") {
                    l.bump();
                    let col = l.col();
                    if !(l.is_punct("+") || l.is_punct("-")) {
                        return l.err("expected `pc+N` or `pc-N`");
                    }
                    let v = l.signed()?;
                    let call = Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 0);
                    return self.push_target(l, call, Fix::Imm, Target::Rel(v), col);
                }
                if l.is_ident("kfunc") {
                    l.bump();
                    let id = l.imm(true)?;
                    self.push(Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_KFUNC, 0, id));
                    return Ok(());
                }
                match self.target(l)? {
                    Target::Rel(v) => {
                        let Ok(id) = i32::try_from(v) else {
                            return l.err_at(col, format!("helper id {v} is out of range"));
                        };
                        self.push(Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_HELPER, 0, id));
                    }
                    t @ Target::Label(..) => {
                        let call = Insn::new(CLASS_JMP | JMP_CALL, 0, CALL_LOCAL, 0, 0);
                        self.push_target(l, call, Fix::Imm, t, col)?;
                    }
                }
            }
            "callx" => {
                let r = l.reg64()?;
                self.push(Insn::new(CLASS_JMP | JMP_CALL | SRC_X, r, 0, 0, 0));
            }
            "goto" | "gotol" => {
                let col = l.col();
                let t = self.target(l)?;
                let (insn, fix) = if word == "goto" {
                    (Insn::new(CLASS_JMP | JMP_JA, 0, 0, 0, 0), Fix::Off)
                } else {
                    (Insn::new(CLASS_JMP32 | JMP_JA, 0, 0, 0, 0), Fix::Imm)
                };
                self.push_target(l, insn, fix, t, col)?;
            }
            "if" => self.cond_jump(l)?,
            "lock" => self.lock(l)?,
            ".insn" => {
                let Some(Tok::Num(v)) = l.peek().cloned() else {
                    return l.err("expected the slot as 0x + 16 hex digits");
                };
                l.bump();
                self.push(Insn::decode(v.to_be_bytes()));
            }
            _ => return l.err_at(col, format!("unknown instruction {word:?}")),
        }
        Ok(())
    }

    fn cond_jump(&mut self, l: &mut Line) -> Result<(), AsmError> {
        let a = l.reg()?;
        let col = l.col();
        let signed = l.is_ident("s");
        if signed {
            l.bump();
        }
        let op = match (signed, l.peek()) {
            (false, Some(Tok::Punct("=="))) => JMP_JEQ,
            (false, Some(Tok::Punct("!="))) => JMP_JNE,
            (false, Some(Tok::Punct("&"))) => JMP_JSET,
            (s, Some(Tok::Punct(">"))) => {
                if s {
                    JMP_JSGT
                } else {
                    JMP_JGT
                }
            }
            (s, Some(Tok::Punct(">="))) => {
                if s {
                    JMP_JSGE
                } else {
                    JMP_JGE
                }
            }
            (s, Some(Tok::Punct("<"))) => {
                if s {
                    JMP_JSLT
                } else {
                    JMP_JLT
                }
            }
            (s, Some(Tok::Punct("<="))) => {
                if s {
                    JMP_JSLE
                } else {
                    JMP_JLE
                }
            }
            _ => return l.err_at(col, "expected a comparison (==, !=, &, >, >=, <, <=, s>, s>=, s<, s<=)"),
        };
        l.bump();
        let class = if a.wide { CLASS_JMP } else { CLASS_JMP32 };
        let insn = if l.peek_reg().is_some() {
            let b = l.reg_w(a.wide)?;
            Insn::new(class | SRC_X | op, a.n, b, 0, 0)
        } else {
            Insn::new(class | SRC_K | op, a.n, 0, 0, l.imm(a.wide)?)
        };
        l.keyword("goto")?;
        let col = l.col();
        let t = self.target(l)?;
        self.push_target(l, insn, Fix::Off, t, col)
    }

    /// `*(uN *)(rD + off) = rS | imm`
    fn store(&mut self, l: &mut Line) -> Result<(), AsmError> {
        l.punct("*")?;
        let col = l.col();
        let (size, signed) = l.size_cast()?;
        if signed {
            return l.err_at(col, "stores take u8/u16/u32/u64");
        }
        let (dst, off) = l.address(true)?;
        l.punct("=")?;
        let insn = if l.peek_reg().is_some() {
            Insn::new(CLASS_STX | MODE_MEM | size, dst, l.reg64()?, off, 0)
        } else {
            Insn::new(CLASS_ST | MODE_MEM | size, dst, 0, off, l.imm(true)?)
        };
        self.push(insn);
        Ok(())
    }

    /// `lock *(uN *)(rD + off) op= rS`
    fn lock(&mut self, l: &mut Line) -> Result<(), AsmError> {
        l.punct("*")?;
        let col = l.col();
        let (size, signed) = l.size_cast()?;
        let wide = match (size, signed) {
            (SIZE_W, false) => false,
            (SIZE_DW, false) => true,
            _ => return l.err_at(col, "atomic operations take u32 or u64"),
        };
        let (dst, off) = l.address(true)?;
        let col = l.col();
        let op = match l.peek() {
            Some(Tok::Punct("+=")) => ATOMIC_ADD,
            Some(Tok::Punct("|=")) => ATOMIC_OR,
            Some(Tok::Punct("&=")) => ATOMIC_AND,
            Some(Tok::Punct("^=")) => ATOMIC_XOR,
            _ => return l.err_at(col, "expected +=, |=, &= or ^="),
        };
        l.bump();
        let src = l.reg_w(wide)?;
        self.push(Insn::new(CLASS_STX | MODE_ATOMIC | atomic_size(wide), dst, src, off, op));
        Ok(())
    }

    /// Everything that starts with a register.
    fn reg_statement(&mut self, l: &mut Line) -> Result<(), AsmError> {
        let d = l.reg()?;
        let class = if d.wide { CLASS_ALU64 } else { CLASS_ALU };
        let col = l.col();
        let signed = l.is_ident("s");
        if signed {
            l.bump();
        }
        let (code, off) = match (signed, l.peek()) {
            (false, Some(Tok::Punct("="))) => {
                l.bump();
                return self.assign(l, d);
            }
            (false, Some(Tok::Punct("+="))) => (ALU_ADD, 0),
            (false, Some(Tok::Punct("-="))) => (ALU_SUB, 0),
            (false, Some(Tok::Punct("*="))) => (ALU_MUL, 0),
            (s, Some(Tok::Punct("/="))) => (ALU_DIV, s as i16),
            (false, Some(Tok::Punct("|="))) => (ALU_OR, 0),
            (false, Some(Tok::Punct("&="))) => (ALU_AND, 0),
            (false, Some(Tok::Punct("<<="))) => (ALU_LSH, 0),
            (false, Some(Tok::Punct(">>="))) => (ALU_RSH, 0),
            (true, Some(Tok::Punct(">>="))) => (ALU_ARSH, 0),
            (s, Some(Tok::Punct("%="))) => (ALU_MOD, s as i16),
            (false, Some(Tok::Punct("^="))) => (ALU_XOR, 0),
            _ => return l.err_at(col, "expected `=` or an operator such as `+=`"),
        };
        l.bump();
        let insn = if l.peek_reg().is_some() {
            Insn::new(class | SRC_X | code, d.n, l.reg_w(d.wide)?, off, 0)
        } else {
            Insn::new(class | SRC_K | code, d.n, 0, off, l.imm(d.wide)?)
        };
        self.push(insn);
        Ok(())
    }

    /// After `rD =`.
    fn assign(&mut self, l: &mut Line, d: Reg) -> Result<(), AsmError> {
        let class = if d.wide { CLASS_ALU64 } else { CLASS_ALU };
        let col = l.col();
        // `rD = -rD`
        if l.is_punct("-") && matches!(l.peek_at(1), Some(Tok::Ident(s)) if parse_reg(s).is_some()) {
            l.bump();
            let col = l.col();
            if l.reg_w(d.wide)? != d.n {
                return l.err_at(col, "negation works in place: rN = -rN");
            }
            self.push(Insn::new(class | ALU_NEG, d.n, 0, 0, 0));
            return Ok(());
        }
        match l.peek().cloned() {
            Some(Tok::Num(_) | Tok::Punct("-" | "+")) => {
                let v = l.signed()?;
                if l.is_ident("ll") {
                    l.bump();
                    if !d.wide {
                        return l.err_at(col, "lddw loads a 64-bit register");
                    }
                    if v < i64::MIN as i128 || v > u64::MAX as i128 {
                        return l.err_at(col, format!("immediate {v} does not fit 64 bits"));
                    }
                    for i in build::lddw(d.n, v as u64) {
                        self.push(i);
                    }
                    return Ok(());
                }
                let hi = if d.wide { i32::MAX as i128 } else { u32::MAX as i128 };
                if v < i32::MIN as i128 || v > hi {
                    return l.err_at(col, format!("immediate {v} is out of range (add `ll` for a 64-bit load)"));
                }
                self.push(Insn::new(class | SRC_K | ALU_MOV, d.n, 0, 0, v as u32 as i32));
            }
            Some(Tok::Ident(s)) if parse_reg(&s).is_some() => {
                let src = l.reg_w(d.wide)?;
                self.push(Insn::new(class | SRC_X | ALU_MOV, d.n, src, 0, 0));
            }
            Some(Tok::Punct("(")) => {
                // `rD = (s8)rS`
                l.bump();
                let col = l.col();
                let bits = match l.ident()?.as_str() {
                    "s8" => 8,
                    "s16" => 16,
                    "s32" if d.wide => 32,
                    _ => return l.err_at(col, "expected (s8), (s16) or, for rN, (s32)"),
                };
                l.punct(")")?;
                let src = l.reg_w(d.wide)?;
                self.push(Insn::new(class | SRC_X | ALU_MOV, d.n, src, bits, 0));
            }
            Some(Tok::Punct("*")) => self.load(l, d)?,
            Some(Tok::Ident(word)) => {
                l.bump();
                self.named(l, d, &word, col)?;
            }
            _ => return l.err("expected a value"),
        }
        Ok(())
    }

    /// `rD = *(uN *)(rS + off)` and `r0 = *(uN *)skb[...]`.
    fn load(&mut self, l: &mut Line, d: Reg) -> Result<(), AsmError> {
        let col = l.col();
        if !d.wide {
            return l.err_at(col, "loads write a 64-bit register (rN)");
        }
        l.punct("*")?;
        let (size, signed) = l.size_cast()?;
        if l.is_ident("skb") {
            l.bump();
            if signed || size == SIZE_DW {
                return l.err_at(col, "packet loads take u8, u16 or u32");
            }
            if d.n != 0 {
                return l.err_at(col, "packet loads write r0");
            }
            l.punct("[")?;
            let insn = if l.peek_reg().is_some() {
                let src = l.reg64()?;
                let k = if l.is_punct("+") || l.is_punct("-") { l.imm(true)? } else { 0 };
                Insn::new(CLASS_LD | MODE_IND | size, 0, src, 0, k)
            } else {
                Insn::new(CLASS_LD | MODE_ABS | size, 0, 0, 0, l.imm(true)?)
            };
            l.punct("]")?;
            self.push(insn);
            return Ok(());
        }
        if signed && size == SIZE_DW {
            return l.err_at(col, "sign-extending loads take s8, s16 or s32");
        }
        let (src, off) = l.address(true)?;
        let mode = if signed { MODE_MEMSX } else { MODE_MEM };
        self.push(Insn::new(CLASS_LDX | mode | size, d.n, src, off, 0));
        Ok(())
    }

    /// `rD = be16 rD`, `rD = ctx->field`, and the atomic functions.
    fn named(&mut self, l: &mut Line, d: Reg, word: &str, col: usize) -> Result<(), AsmError> {
        let end = [("le", CLASS_ALU | SRC_K), ("be", CLASS_ALU | SRC_X), ("bswap", CLASS_ALU64 | SRC_K)]
            .into_iter()
            .find_map(|(p, op)| word.strip_prefix(p).filter(|b| matches!(*b, "16" | "32" | "64")).map(|b| (op, b)));
        if let Some((op, bits)) = end {
            let c = l.col();
            if !d.wide || l.reg64()? != d.n {
                return l.err_at(c, "byte swaps work in place on a 64-bit register: rN = be16 rN");
            }
            let bits: i32 = bits.parse().unwrap_or(64);
            self.push(Insn::new(op | ALU_END, d.n, 0, 0, bits));
            return Ok(());
        }
        if word == "map" || word == "map_value" {
            return self.map_ref(l, d, word == "map_value", col);
        }
        if word == "ctx" {
            l.punct("->")?;
            let c = l.col();
            let name = l.ident()?;
            let field = (0..6).filter_map(CtxField::from_index).find(|f| f.name() == name);
            let Some(field) = field else { return l.err_at(c, format!("unknown ctx field {name:?}")) };
            if !d.wide {
                return l.err_at(col, "ctx loads write a 64-bit register (rN)");
            }
            self.push(Insn::new(CLASS_LDX | MODE_CTX | SIZE_DW, d.n, 0, field as i16, 0));
            return Ok(());
        }
        let fetch = [("add", ATOMIC_ADD), ("or", ATOMIC_OR), ("and", ATOMIC_AND), ("xor", ATOMIC_XOR)]
            .into_iter()
            .find(|(n, _)| word.strip_prefix("atomic_fetch_") == Some(n));
        if let Some((_, op)) = fetch {
            // `rS = atomic_fetch_add((u64 *)(rD + off), rS)`
            l.punct("(")?;
            let c = l.col();
            let (size, signed) = l.size_cast()?;
            if signed || (size != SIZE_W && size != SIZE_DW) || (size == SIZE_DW) != d.wide {
                return l.err_at(c, "atomic operations take (u32 *) with wN or (u64 *) with rN");
            }
            let (dst, off) = l.address(true)?;
            l.punct(",")?;
            self.same_reg(l, d)?;
            l.punct(")")?;
            self.push(Insn::new(CLASS_STX | MODE_ATOMIC | size, dst, d.n, off, op | ATOMIC_FETCH));
            return Ok(());
        }
        let wide = match word {
            "xchg_64" | "cmpxchg_64" => true,
            "xchg32_32" | "cmpxchg32_32" => false,
            _ => return l.err_at(col, format!("unknown operand {word:?}")),
        };
        if wide != d.wide {
            return l.err_at(col, format!("{word} writes a {} register", if wide { "rN" } else { "wN" }));
        }
        l.punct("(")?;
        let (dst, off) = l.address(false)?;
        l.punct(",")?;
        let insn = if word.starts_with("xchg") {
            // `rS = xchg_64(rD + off, rS)`
            self.same_reg(l, d)?;
            Insn::new(CLASS_STX | MODE_ATOMIC | atomic_size(wide), dst, d.n, off, ATOMIC_XCHG)
        } else {
            // `r0 = cmpxchg_64(rD + off, r0, rS)`
            if d.n != 0 {
                return l.err_at(col, "cmpxchg compares with and loads into r0");
            }
            self.same_reg(l, d)?;
            l.punct(",")?;
            let src = l.reg_w(wide)?;
            Insn::new(CLASS_STX | MODE_ATOMIC | atomic_size(wide), dst, src, off, ATOMIC_CMPXCHG)
        };
        l.punct(")")?;
        self.push(insn);
        Ok(())
    }

    /// After `rD = map` / `rD = map_value`: `[N] ll` or `[N] + OFF ll`.
    fn map_ref(&mut self, l: &mut Line, d: Reg, value: bool, col: usize) -> Result<(), AsmError> {
        if !d.wide {
            return l.err_at(col, "map references load a 64-bit register (rN)");
        }
        l.punct("[")?;
        let index = l.ranged(0, u32::MAX as i128, "map index")? as u32;
        l.punct("]")?;
        let mut offset = 0;
        if value && l.eat_punct("+") {
            offset = l.ranged(0, u32::MAX as i128, "map value offset")? as u32;
        }
        l.keyword("ll")?;
        let src = if value { PSEUDO_MAP_VALUE } else { PSEUDO_MAP_FD };
        self.push(Insn::new(CLASS_LD | MODE_IMM | SIZE_DW, d.n, src, 0, index as i32));
        self.push(Insn::new(0, 0, 0, 0, offset as i32));
        Ok(())
    }

    /// The operand that must repeat the destination register.
    fn same_reg(&mut self, l: &mut Line, d: Reg) -> Result<(), AsmError> {
        let col = l.col();
        if l.reg()? != d {
            return l.err_at(col, format!("expected {}{} again here", if d.wide { 'r' } else { 'w' }, d.n));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        for (at, fix, name, line, col) in std::mem::take(&mut self.fixups) {
            let err = |msg: String| AsmError { line, col, msg };
            let Some(&target) = self.labels.get(&name) else {
                return Err(err(format!("undefined label {name:?}")));
            };
            let rel = target as i64 - (at as i64 + 1);
            let insn = &mut self.out[at];
            match fix {
                Fix::Off => {
                    insn.off = i16::try_from(rel)
                        .map_err(|_| err(format!("label {name:?} is {rel} slots away, too far for 16 bits")))?;
                }
                Fix::Imm => {
                    insn.imm = i32::try_from(rel)
                        .map_err(|_| err(format!("label {name:?} is {rel} slots away, too far for 32 bits")))?;
                }
            }
        }
        Ok(self.out)
    }
}

fn atomic_size(wide: bool) -> u8 {
    if wide { SIZE_DW } else { SIZE_W }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::check::{Form, form};
    use crate::bpf::disasm;

    /// Every opcode sluice knows, in the disassembler's syntax (and a few spellings around it).
    const EVERY_OPCODE: &str = "
        start:
        r1 = 1                      # mov64 K
        w2 = 0xffffffff             ; mov32 K, u32 spelling
        r3 = r1                     // mov64 X
        w4 = w2
        r5 = (s8)r1
        r5 = (s16)r1
        r5 = (s32)r1
        w5 = (s8)w1
        w5 = (s16)w1
        r1 += 2
        r1 += r2
        r1 -= -3
        r1 -= r2
        r1 *= 3
        r1 *= r2
        r1 /= 7
        r1 /= r2
        r1 s/= -1
        r1 s/= r2
        r1 |= 1
        r1 |= r2
        r1 &= 15
        r1 &= r2
        r1 <<= 3
        r1 <<= r2
        r1 >>= 2
        r1 >>= r2
        r1 s>>= 1
        r1 s>>= r2
        r1 %= 5
        r1 %= r2
        r1 s%= 3
        r1 s%= r2
        r1 ^= -1
        r1 ^= r2
        r1 = -r1
        w1 += 2
        w1 += w2
        w1 -= -3
        w1 -= w2
        w1 *= 3
        w1 *= w2
        w1 /= 7
        w1 /= w2
        w1 s/= -1
        w1 s/= w2
        w1 |= 1
        w1 |= w2
        w1 &= 15
        w1 &= w2
        w1 <<= 3
        w1 <<= w2
        w1 >>= 2
        w1 >>= w2
        w1 s>>= 1
        w1 s>>= w2
        w1 %= 5
        w1 %= w2
        w1 s%= 3
        w1 s%= w2
        w1 ^= -1
        w1 ^= w2
        w1 = -w1
        r0 = le16 r0
        r0 = le32 r0
        r0 = le64 r0
        r0 = be16 r0
        r0 = be32 r0
        r0 = be64 r0
        r0 = bswap16 r0
        r0 = bswap32 r0
        r0 = bswap64 r0
        r9 = 0x1122334455667788 ll
        r9 = -1 ll
        r1 = map[0] ll
        r2 = map_value[3] + 16 ll
        r3 = map_value[1] ll
        r0 = *(u8 *)skb[23]
        r0 = *(u16 *)skb[12]
        r0 = *(u32 *)skb[26]
        r0 = *(u8 *)skb[r7 + 14]
        r0 = *(u16 *)skb[r7 - 2]
        r0 = *(u32 *)skb[r7]
        r2 = ctx->data
        r3 = ctx->egress_ifindex
        r1 = *(u8 *)(r10 - 1)
        r1 = *(u16 *)(r10 - 2)
        r1 = *(u32 *)(r10 - 4)
        r1 = *(u64 *)(r10 - 8)
        r1 = *(s8 *)(r2 + 0)
        r1 = *(s16 *)(r2 + 2)
        r1 = *(s32 *)(r2)
        *(u8 *)(r10 - 1) = 1
        *(u16 *)(r10 - 2) = -2
        *(u32 *)(r10 - 4) = 0x7fffffff
        *(u64 *)(r10 - 8) = 4
        *(u8 *)(r10 - 1) = r1
        *(u16 *)(r10 - 2) = r1
        *(u32 *)(r10 - 4) = r1
        *(u64 *)(r10 - 8) = r1
        lock *(u32 *)(r10 - 8) += w1
        lock *(u32 *)(r10 - 8) |= w1
        lock *(u32 *)(r10 - 8) &= w1
        lock *(u32 *)(r10 - 8) ^= w1
        lock *(u64 *)(r10 - 8) += r1
        lock *(u64 *)(r10 - 8) |= r1
        lock *(u64 *)(r10 - 8) &= r1
        lock *(u64 *)(r10 - 8) ^= r1
        w1 = atomic_fetch_add((u32 *)(r10 - 8), w1)
        w1 = atomic_fetch_or((u32 *)(r10 - 8), w1)
        w1 = atomic_fetch_and((u32 *)(r10 - 8), w1)
        w1 = atomic_fetch_xor((u32 *)(r10 - 8), w1)
        r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
        r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)
        r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)
        r1 = atomic_fetch_xor((u64 *)(r10 - 8), r1)
        w1 = xchg32_32(r10 - 8, w1)
        r1 = xchg_64(r10 - 8, r1)
        w0 = cmpxchg32_32(r10 - 8, w0, w1)
        r0 = cmpxchg_64(r10 - 8, r0, r1)
        if r1 == 0x1 goto +1
        if r1 == r2 goto next
        if r1 == 0x7 goto next
        if r1 != r2 goto next
        if r1 != 0x7 goto next
        if r1 > r2 goto next
        if r1 > 0x7 goto next
        if r1 >= r2 goto next
        if r1 >= 0x7 goto next
        if r1 < r2 goto next
        if r1 < 0x7 goto next
        if r1 <= r2 goto next
        if r1 <= 0x7 goto next
        if r1 & r2 goto next
        if r1 & 0x7 goto next
        if r1 s> r2 goto next
        if r1 s> -0x1 goto next
        if r1 s>= r2 goto next
        if r1 s>= -0x1 goto next
        if r1 s< r2 goto next
        if r1 s< -0x1 goto next
        if r1 s<= r2 goto next
        if r1 s<= -0x1 goto next
        if w1 == w2 goto next
        if w1 == 0x7 goto next
        if w1 != w2 goto next
        if w1 != 0x7 goto next
        if w1 > w2 goto next
        if w1 > 0x7 goto next
        if w1 >= w2 goto next
        if w1 >= 0x7 goto next
        if w1 < w2 goto next
        if w1 < 0x7 goto next
        if w1 <= w2 goto next
        if w1 <= 0x7 goto next
        if w1 & w2 goto next
        if w1 & 0x7 goto next
        if w1 s> w2 goto next
        if w1 s> -0x1 goto next
        if w1 s>= w2 goto next
        if w1 s>= -0x1 goto next
        if w1 s< w2 goto next
        if w1 s< -0x1 goto next
        if w1 s<= w2 goto next
        if w1 s<= -0x1 goto next
        if w1 > 0xffffffff goto next
        next: goto +0
        gotol +0
        call 1
        call -1
        call kfunc 12
        callx r3
        call func
        call pc+1
        exit
        func:
        goto start
    ";

    fn round_trip(insns: &[Insn]) {
        let text = disasm::program(insns);
        let back = assemble(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(back, insns, "\n{text}");
    }

    #[test]
    fn every_opcode_assembles_and_round_trips() {
        let p = assemble(EVERY_OPCODE).unwrap();
        round_trip(&p);
        // Every known form appears (the lddw second slots aside).
        let forms: Vec<Form> = p.iter().filter_map(|i| form(i).ok()).collect();
        for want in [Form::Lddw, Form::Ja32, Form::Callx, Form::CallLocal, Form::CallKfunc, Form::Exit] {
            assert!(forms.contains(&want), "{want:?}");
        }
        // ...and so does every opcode (with every atomic operation) that `form` accepts.
        let key = |i: &Insn| (i.op, if i.class() == CLASS_STX { i.imm } else { 0 });
        let seen: std::collections::HashSet<(u8, i32)> = p.iter().filter(|i| form(i).is_ok()).map(key).collect();
        let atomics = [0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xa0, 0xa1, 0xe1, 0xf1];
        for op in 0..=255u8 {
            for imm in [0, 16].into_iter().chain(atomics) {
                let i = Insn::new(op, 0, 0, 0, imm);
                if form(&i).is_ok() && !matches!(form(&i), Ok(Form::LdCtx(_))) {
                    assert!(seen.contains(&key(&i)), "opcode {op:#04x} (imm {imm:#x}) is not covered");
                }
            }
        }
    }

    #[test]
    fn encodes_what_it_reads() {
        let cases: &[(&str, Insn)] = &[
            ("r0 = *(u16 *)(r1 + 12)", Insn::new(0x69, 0, 1, 12, 0)),
            ("w1 += 2", Insn::new(0x04, 1, 0, 0, 2)),
            ("if r3 != 0x81 goto +4", Insn::new(0x55, 3, 0, 4, 0x81)),
            ("w2 = 0xffffffff", Insn::new(0xb4, 2, 0, 0, -1)),
            ("call 5", Insn::new(0x85, 0, 0, 0, 5)),
            ("call pc+3", Insn::new(0x85, 0, 1, 0, 3)),
            ("call pc-3", Insn::new(0x85, 0, 1, 0, -3)),
            ("callx r2", Insn::new(0x8d, 2, 0, 0, 0)),
            ("r0 = be16 r0", Insn::new(0xdc, 0, 0, 0, 16)),
            ("lock *(u64 *)(r10 - 8) += r1", Insn::new(0xdb, 10, 1, -8, 0)),
            ("r0 = atomic_fetch_add((u64 *)(r1 + 0), r0)", Insn::new(0xdb, 1, 0, 0, 1)),
            ("r0 = *(u16 *)skb[12]", Insn::new(0x28, 0, 0, 0, 12)),
            ("r0 = ctx->data_end", Insn::new(0xb9, 0, 0, 1, 0)),
            ("  12: exit", Insn::new(0x95, 0, 0, 0, 0)),
            (".insn 0xff21030004000000", Insn::new(0xff, 1, 2, 3, 4)),
        ];
        for (text, want) in cases {
            assert_eq!(assemble(text), Ok(vec![*want]), "{text}");
        }
        assert_eq!(assemble("r1 = 0x1122334455667788 ll"), Ok(build::lddw(1, 0x1122_3344_5566_7788).to_vec()));
    }

    #[test]
    fn labels_resolve_both_ways() {
        let p = assemble(
            "top:\n  if r1 == 0 goto out   # forward\n  r1 -= 1\n  goto top\nout:\n  call sub\n  exit\nsub: r0 = 2\n  gotol done\ndone: exit\n",
        )
        .unwrap();
        assert_eq!(p[0].off, 2);
        assert_eq!(p[2].off, -3);
        assert_eq!((p[3].src, p[3].imm), (CALL_LOCAL, 1));
        assert_eq!(p[6].imm, 0);
    }

    fn err(text: &str) -> (usize, usize, String) {
        let e = assemble(text).unwrap_err();
        (e.line, e.col, e.msg)
    }

    #[test]
    fn errors_name_line_and_column() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("exit\n  r1 += ", 2, 9, "expected a number"),
            ("r1 = 1\nfrob r1", 2, 1, "unknown instruction"),
            ("w1 += r2", 1, 7, "rN or all wN"),
            ("r1 = 0x100000000", 1, 6, "out of range"),
            ("goto nowhere", 1, 6, "undefined label \"nowhere\""),
            ("a:\na:\nexit", 2, 1, "defined twice"),
            ("r1 = 1 2", 1, 8, "unexpected text"),
            ("r1 = $", 1, 6, "unexpected character"),
            ("r0 = *(u64 *)skb[1]", 1, 6, "u8, u16 or u32"),
            ("r1 = -r2", 1, 7, "in place"),
            ("w0 = atomic_fetch_add((u64 *)(r1 + 0), w0)", 1, 23, "(u32 *) with wN"),
            ("r1 = cmpxchg_64(r2 + 0, r1, r3)", 1, 6, "r0"),
            ("if r1 ~ 2 goto +1", 1, 7, "unexpected character"),
            ("if r1 == 2 goto +40000", 1, 17, "16 bits"),
            ("r1 = *(u16 *)(r2 + 40000)", 1, 18, "offset 40000"),
            ("r1 = ctx->nothing", 1, 11, "unknown ctx field"),
            ("r12x = 1", 1, 1, "unknown instruction"),
            ("(r1) = 1", 1, 1, "expected an instruction"),
            ("r1: exit", 1, 1, "cannot be a label"),
            ("12x: exit", 1, 1, "invalid number"),
        ];
        for (text, line, col, needle) in cases {
            let (l, c, msg) = err(text);
            assert!(msg.contains(needle), "{text:?}: {msg:?} lacks {needle:?}");
            assert_eq!((l, c), (*line, *col), "{text:?}: {msg}");
        }
        assert_eq!(assemble("exit\n goto x").unwrap_err().to_string(), "line 2, column 7: undefined label \"x\"");
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        let p = assemble("# header\n\n   // note\nr0 = 0 ; trailing\nexit # done\n").unwrap();
        assert_eq!(p.len(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// Any slots at all survive disassembly and reassembly (the only exception, a ctx
        /// load's source register, is normalised).
        #[test]
        fn arbitrary_slots_round_trip(slots in proptest::collection::vec(proptest::prelude::any::<[u8; 8]>(), 1..24)) {
            let mut insns: Vec<Insn> = slots.into_iter().map(Insn::decode).collect();
            for i in insns.iter_mut() {
                if matches!(form(i), Ok(Form::LdCtx(_))) {
                    i.src = 0;
                }
            }
            round_trip(&insns);
        }

        /// Valid-looking slots (known opcodes, small fields) reach the printers of every form.
        #[test]
        fn plausible_slots_round_trip(
            slots in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), 0u8..11, 0u8..11, -3i16..40, -3i32..70), 1..24)
        ) {
            let insns: Vec<Insn> = slots
                .into_iter()
                .map(|(op, dst, src, off, imm)| Insn::new(op, dst, src, off, imm))
                .map(|i| if matches!(form(&i), Ok(Form::LdCtx(_))) { Insn { src: 0, ..i } } else { i })
                .collect();
            round_trip(&insns);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "[ -~\\n]{0,120}") {
            let _ = assemble(&text);
        }
    }
}
