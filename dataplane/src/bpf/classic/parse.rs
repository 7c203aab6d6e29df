//! Reading and writing classic programs as text, in the formats tcpdump and iptables print:
//!
//! - `tcpdump -ddd`: a count line, then one `code jt jf k` line per instruction (decimal);
//! - `tcpdump -dd`: C initialisers, `{ 0x28, 0, 0, 0x0000000c },` one per line;
//! - iptables `xt_bpf` / `nfbpf_compile`: `count,code jt jf k,code jt jf k,...`.
//!
//! The format is detected from the first significant line. Numbers may be decimal or `0x` hex
//! in every format. Blank lines and whole-line comments (`#` or `//`) are skipped. Errors name
//! the 1-based line and column of the offending character.

use super::{ClassicError, ClassicInsn};
use std::fmt::Write;

/// Reads a classic program in any of the supported text formats.
pub fn parse(text: &str) -> Result<Vec<ClassicInsn>, ClassicError> {
    let mut cur = Cursor::new(text);
    cur.skip_blank_lines();
    if cur.at_end() {
        return Err(cur.error("empty input: expected a classic BPF program"));
    }
    let insns = match Format::detect(&cur) {
        Format::CArray => parse_c_array(&mut cur)?,
        Format::Decimal => parse_decimal(&mut cur)?,
        Format::Commas => parse_commas(&mut cur)?,
    };
    Ok(insns)
}

/// `tcpdump -ddd` text: the count, then `code jt jf k` per line.
pub fn to_ddd(insns: &[ClassicInsn]) -> String {
    let mut s = format!("{}\n", insns.len());
    for i in insns {
        let _ = writeln!(s, "{} {} {} {}", i.code, i.jt, i.jf, i.k);
    }
    s
}

/// `tcpdump -dd` text: one C initialiser per line.
pub fn to_dd(insns: &[ClassicInsn]) -> String {
    let mut s = String::new();
    for i in insns {
        let _ = writeln!(s, "{{ {:#04x}, {}, {}, {:#010x} }},", i.code, i.jt, i.jf, i.k);
    }
    s
}

enum Format {
    Decimal,
    CArray,
    Commas,
}

impl Format {
    fn detect(cur: &Cursor) -> Format {
        let line = cur.rest_of_line();
        let line = line.split('#').next().unwrap_or("").split("//").next().unwrap_or("");
        if line.trim_start().starts_with('{') {
            Format::CArray
        } else if line.contains(',') {
            Format::Commas
        } else {
            Format::Decimal
        }
    }
}

/// The four fields, in order, with their widths: used in messages and range checks.
const FIELDS: [(&str, u32); 4] = [("code", 16), ("jt", 8), ("jf", 8), ("k", 32)];

fn insn_from(v: [u64; 4]) -> ClassicInsn {
    // Ranges were checked by `Cursor::number` against FIELDS.
    ClassicInsn::new(v[0] as u16, v[1] as u8, v[2] as u8, v[3] as u32)
}

fn parse_decimal(cur: &mut Cursor) -> Result<Vec<ClassicInsn>, ClassicError> {
    let count_line = cur.line;
    let count = cur.number("instruction count", 32)?;
    cur.expect_line_end("after the instruction count")?;
    let mut insns = Vec::new();
    loop {
        cur.skip_blank_lines();
        if cur.at_end() {
            break;
        }
        if insns.len() as u64 == count {
            return Err(cur.error(format!("more instructions than the count of {count} on line {count_line}")));
        }
        let mut v = [0u64; 4];
        for (slot, (name, bits)) in v.iter_mut().zip(FIELDS) {
            cur.skip_spaces();
            *slot = cur.number(name, bits)?;
        }
        cur.expect_line_end("after `code jt jf k`")?;
        insns.push(insn_from(v));
    }
    if (insns.len() as u64) < count {
        return Err(cur.error(format!(
            "unexpected end of input: the count on line {count_line} is {count}, found {} instructions",
            insns.len()
        )));
    }
    Ok(insns)
}

fn parse_c_array(cur: &mut Cursor) -> Result<Vec<ClassicInsn>, ClassicError> {
    let mut insns = Vec::new();
    loop {
        cur.skip_blank_lines();
        if cur.at_end() {
            return Ok(insns);
        }
        // One or more `{ a, b, c, d },` on this line.
        loop {
            cur.expect_char('{')?;
            let mut v = [0u64; 4];
            for (i, (slot, (name, bits))) in v.iter_mut().zip(FIELDS).enumerate() {
                cur.skip_spaces();
                *slot = cur.number(name, bits)?;
                cur.skip_spaces();
                if i < 3 {
                    cur.expect_char(',')?;
                }
            }
            cur.expect_char('}')?;
            insns.push(insn_from(v));
            cur.skip_spaces();
            if cur.peek() == Some(',') {
                cur.bump();
                cur.skip_spaces();
            }
            if cur.at_line_end() {
                break;
            }
        }
        cur.expect_line_end("after `}`")?;
    }
}

fn parse_commas(cur: &mut Cursor) -> Result<Vec<ClassicInsn>, ClassicError> {
    let (count_line, count_col) = (cur.line, cur.col);
    let count = cur.number("instruction count", 32)?;
    let mut insns = Vec::new();
    loop {
        cur.skip_whitespace();
        match cur.peek() {
            None => break,
            Some(',') => cur.bump(),
            Some(c) => return Err(cur.error(format!("expected `,` between instructions, found `{c}`"))),
        }
        cur.skip_whitespace();
        // A trailing comma ends the list, as `nfbpf_compile` output sometimes does.
        if cur.at_end() {
            break;
        }
        let mut v = [0u64; 4];
        for (slot, (name, bits)) in v.iter_mut().zip(FIELDS) {
            cur.skip_spaces();
            *slot = cur.number(name, bits)?;
        }
        insns.push(insn_from(v));
    }
    if insns.len() as u64 != count {
        return Err(ClassicError::Parse {
            line: count_line,
            col: count_col,
            reason: format!("the count is {count} but {} instructions follow", insns.len()),
        });
    }
    Ok(insns)
}

/// A position in the text with line/column bookkeeping.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    col: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, pos: 0, line: 1, col: 1 }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn rest_of_line(&self) -> &'a str {
        let rest = &self.text[self.pos..];
        rest.split('\n').next().unwrap_or("")
    }

    fn error(&self, reason: impl Into<String>) -> ClassicError {
        ClassicError::Parse { line: self.line, col: self.col, reason: reason.into() }
    }

    /// Spaces, tabs and carriage returns within the line.
    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\r')) {
            self.bump();
        }
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn at_comment(&self) -> bool {
        let rest = &self.text[self.pos..];
        rest.starts_with('#') || rest.starts_with("//")
    }

    fn skip_to_next_line(&mut self) {
        while let Some(c) = self.peek() {
            self.bump();
            if c == '\n' {
                break;
            }
        }
    }

    /// Skips whitespace-only and comment lines, leaving the cursor on the first significant
    /// character of the next significant line (or at the end).
    fn skip_blank_lines(&mut self) {
        loop {
            self.skip_spaces();
            if self.peek() == Some('\n') {
                self.bump();
            } else if self.at_comment() {
                self.skip_to_next_line();
            } else {
                return;
            }
        }
    }

    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some('\n')) || self.at_comment()
    }

    /// Accepts trailing blanks and a comment, then moves to the next line.
    fn expect_line_end(&mut self, context: &str) -> Result<(), ClassicError> {
        self.skip_spaces();
        if !self.at_line_end() {
            let c = self.peek().unwrap_or(' ');
            return Err(self.error(format!("unexpected `{c}` {context}")));
        }
        self.skip_to_next_line();
        Ok(())
    }

    fn expect_char(&mut self, want: char) -> Result<(), ClassicError> {
        self.skip_spaces();
        match self.peek() {
            Some(c) if c == want => {
                self.bump();
                Ok(())
            }
            Some('\n') | None => Err(self.error(format!("expected `{want}`, found end of line"))),
            Some(c) => Err(self.error(format!("expected `{want}`, found `{c}`"))),
        }
    }

    /// An unsigned decimal or `0x` hex number that fits in `bits` bits.
    fn number(&mut self, field: &str, bits: u32) -> Result<u64, ClassicError> {
        let (line, col) = (self.line, self.col);
        let at = |reason: String| ClassicError::Parse { line, col, reason };
        let rest = &self.text[self.pos..];
        let (radix, prefix) = if rest.starts_with("0x") || rest.starts_with("0X") { (16, 2) } else { (10, 0) };
        let digits: &str = {
            let body = &rest[prefix..];
            let end = body.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(body.len());
            &body[..end]
        };
        if prefix > 0 && digits.is_empty() {
            return Err(at(format!("{field} `{}` has no hex digits", &rest[..prefix])));
        }
        if prefix == 0 && !rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(match rest.chars().next() {
                Some('-') => at(format!("{field} must not be negative")),
                Some('\n' | '\r') | None => at(format!("expected {field}, found end of line")),
                Some(c) => at(format!("expected {field}, found `{c}`")),
            });
        }
        let value = u64::from_str_radix(digits, radix).map_err(|e| {
            if *e.kind() == std::num::IntErrorKind::PosOverflow {
                return at(format!("{field} `{}{digits}` does not fit in {bits} bits", &rest[..prefix]));
            }
            let kind = if radix == 16 { "hex" } else { "decimal" };
            at(format!("{field} `{}{digits}` is not a {kind} number", &rest[..prefix]))
        })?;
        if value >> bits != 0 {
            return Err(at(format!("{field} {value} does not fit in {bits} bits")));
        }
        for _ in 0..prefix + digits.len() {
            self.bump();
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ClassicError::Parse { line, col, reason }) => (line, col, reason),
            other => panic!("expected a parse error for {text:?}, got {other:?}"),
        }
    }

    const DDD: &str = "4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n";
    const DD: &str = "{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 1, 0x00000800 },\n\
                      { 0x6, 0, 0, 0x00040000 },\n{ 0x6, 0, 0, 0x00000000 },\n";

    fn expected() -> Vec<ClassicInsn> {
        vec![
            ClassicInsn::new(0x28, 0, 0, 12),
            ClassicInsn::new(0x15, 0, 1, 0x800),
            ClassicInsn::new(6, 0, 0, 262144),
            ClassicInsn::new(6, 0, 0, 0),
        ]
    }

    #[test]
    fn reads_all_three_formats() {
        assert_eq!(parse(DDD).unwrap(), expected());
        assert_eq!(parse(DD).unwrap(), expected());
        assert_eq!(parse("4,40 0 0 12,21 0 1 2048,6 0 0 262144,6 0 0 0").unwrap(), expected());
        assert_eq!(parse("4,40 0 0 12,21 0 1 2048,6 0 0 262144,6 0 0 0,\n").unwrap(), expected());
    }

    #[test]
    fn tolerates_comments_blank_lines_crlf_and_hex() {
        let text = "# udp\r\n\r\n4\r\n0x28 0 0 0xc\r\n// ip\r\n21 0 1 2048 # ethertype\r\n6 0 0 262144\r\n6 0 0 0";
        assert_eq!(parse(text).unwrap(), expected());
        let dd = "  {0x28,0,0,0xc}, { 0x15, 0, 1, 0x800 }\n{ 0x6, 0, 0, 0x40000 },{ 6, 0, 0, 0 }";
        assert_eq!(parse(dd).unwrap(), expected());
    }

    #[test]
    fn writers_round_trip() {
        assert_eq!(to_ddd(&expected()), DDD);
        assert_eq!(parse(&to_ddd(&expected())).unwrap(), expected());
        assert_eq!(parse(&to_dd(&expected())).unwrap(), expected());
        assert_eq!(to_dd(&expected()[..1]), "{ 0x28, 0, 0, 0x0000000c },\n");
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(err(""), (1, 1, "empty input: expected a classic BPF program".into()));
        assert_eq!(err("2\n40 0 0 12\n6 0 x 0\n"), (3, 5, "expected jf, found `x`".into()));
        assert_eq!(err("1\n6 0 0\n"), (2, 6, "expected k, found end of line".into()));
        assert_eq!(err("1\n6 -1 0 0\n"), (2, 3, "jt must not be negative".into()));
        assert_eq!(err("1\n6 256 0 0\n"), (2, 3, "jt 256 does not fit in 8 bits".into()));
        assert_eq!(err("1\n70000 0 0 0\n"), (2, 1, "code 70000 does not fit in 16 bits".into()));
        assert_eq!(err("1\n6 0 0 4294967296\n"), (2, 7, "k 4294967296 does not fit in 32 bits".into()));
        assert_eq!(err("1\n6 0 0 12ab\n"), (2, 7, "k `12ab` is not a decimal number".into()));
        assert_eq!(err("1\n6 0 0 0 7\n"), (2, 9, "unexpected `7` after `code jt jf k`".into()));
        assert_eq!(err("1\n6 0 0 99999999999999999999999\n").2, "k `99999999999999999999999` does not fit in 32 bits");
        assert_eq!(err("1\n6 0 0 0x\n"), (2, 7, "k `0x` has no hex digits".into()));
        assert_eq!(err("x\n"), (1, 1, "expected instruction count, found `x`".into()));
    }

    #[test]
    fn count_must_match() {
        let (line, col, reason) = err("3\n6 0 0 0\n6 0 0 0\n");
        assert_eq!((line, col), (4, 1));
        assert!(reason.contains("count on line 1 is 3, found 2"), "{reason}");
        let (line, _, reason) = err("1\n6 0 0 0\n6 0 0 0\n");
        assert_eq!(line, 3);
        assert!(reason.contains("more instructions than the count of 1"), "{reason}");
        let (line, col, reason) = err("3,6 0 0 0");
        assert_eq!((line, col), (1, 1));
        assert_eq!(reason, "the count is 3 but 1 instructions follow");
    }

    #[test]
    fn c_array_errors_point_at_the_token() {
        assert_eq!(err("{ 0x28, 0, 0 0xc },\n"), (1, 14, "expected `,`, found `0`".into()));
        assert_eq!(err("{ 0x28, 0, 0, 0xc },\n( 0x6, 0, 0, 0 }\n"), (2, 1, "expected `{`, found `(`".into()));
        assert_eq!(err("{ 0x28, 0, 0, 0xc\n"), (1, 18, "expected `}`, found end of line".into()));
        assert_eq!(err("{ 0xzz, 0, 0, 0 },"), (1, 3, "code `0xzz` is not a hex number".into()));
        assert_eq!(err("{ 0x28, 0, 0, 0xc } x"), (1, 21, "expected `{`, found `x`".into()));
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        let (line, col, _) = err("1\n6 0 0 é\n");
        assert_eq!((line, col), (2, 7));
        assert!(parse("{ 0x28, 0, 0, 0xcé },").is_err());
        assert!(parse("1,6 0 0 ０").is_err());
    }
}
