//! tcpdump / pcap-filter expressions, compiled by libpcap itself (`pcap_compile` on an Ethernet
//! handle, optimiser on), so an expression means exactly what it means to tcpdump. Also libpcap's
//! own `bpf_filter`, the reference the differential tests and benches compare sluice with.
//!
//! The handle is a dead one (`pcap_open_dead`, as the `pcap` crate opens it: snaplen 65535), so
//! libpcap uses no Linux socket extensions (`vlan` tests the frame's tag, not skb metadata) and
//! a match returns 65535 where tcpdump on a live interface would print `ret #262144`.

use super::classic::{self, ClassicInsn};
use std::sync::Mutex;

/// libpcap's parser and optimiser keep state in globals in older releases; compiling is rare,
/// so all compiles take turns.
static COMPILE: Mutex<()> = Mutex::new(());

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcpdumpError {
    /// libpcap refused the expression; `message` is libpcap's own text.
    #[error("compile filter `{expr}`: {message}")]
    Compile { expr: String, message: String },
    #[error("compile filter `{expr}`: open an Ethernet pcap handle: {message}")]
    Handle { expr: String, message: String },
    /// libpcap produced an instruction sluice could not read back (a bug, reported with the line).
    #[error("compile filter `{expr}`: read libpcap's instruction `{line}`: {source}")]
    Decode { expr: String, line: String, source: classic::ClassicError },
}

/// An expression compiled by libpcap: its classic instructions, and libpcap's program for
/// running them with libpcap's own interpreter.
pub struct LibpcapFilter {
    program: pcap::BpfProgram,
    insns: Vec<ClassicInsn>,
}

impl std::fmt::Debug for LibpcapFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibpcapFilter").field("insns", &self.insns.len()).finish()
    }
}

impl LibpcapFilter {
    pub fn compile(expr: &str) -> Result<Self, TcpdumpError> {
        let program = {
            // A poisoned lock only means another compile panicked; libpcap's state is per call.
            let _turn = COMPILE.lock().unwrap_or_else(|p| p.into_inner());
            let handle = pcap::Capture::dead(pcap::Linktype::ETHERNET)
                .map_err(|e| TcpdumpError::Handle { expr: expr.into(), message: e.to_string() })?;
            handle
                .compile(expr, true)
                .map_err(|e| TcpdumpError::Compile { expr: expr.into(), message: pcap_message(e) })?
        };
        // The pcap crate shows an instruction's fields only through `Display` ("code jt jf k"),
        // which is one `tcpdump -ddd` line; reading that back needs no unsafe code.
        let mut text = format!("{}\n", program.get_instructions().len());
        for insn in program.get_instructions() {
            text.push_str(&insn.to_string());
            text.push('\n');
        }
        let insns = classic::parse(&text).map_err(|source| {
            let line = match &source {
                classic::ClassicError::Parse { line, .. } => text.lines().nth(line - 1).unwrap_or("").to_string(),
                _ => String::new(),
            };
            TcpdumpError::Decode { expr: expr.into(), line, source }
        })?;
        Ok(LibpcapFilter { program, insns })
    }

    pub fn insns(&self) -> &[ClassicInsn] {
        &self.insns
    }

    /// Runs libpcap's `bpf_filter` (through `pcap_offline_filter`) with the whole buffer as
    /// both the captured and the wire length.
    pub fn matches(&self, packet: &[u8]) -> bool {
        self.program.filter(packet)
    }
}

/// libpcap's message without the crate's wrapping.
fn pcap_message(e: pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(msg) => msg,
        pcap::Error::InvalidInputString => "expression contains a NUL byte".into(),
        other => other.to_string(),
    }
}

/// The classic program libpcap compiles `expr` to, exactly as `tcpdump -ddd` prints it (except
/// for the accept value, see the module notes).
pub fn compile_expr(expr: &str) -> Result<Vec<ClassicInsn>, TcpdumpError> {
    Ok(LibpcapFilter::compile(expr)?.insns)
}

/// Whether libpcap's own `bpf_filter` accepts `packet`: the reference oracle.
pub fn libpcap_matches(prog: &LibpcapFilter, packet: &[u8]) -> bool {
    prog.matches(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::classic::{disasm, validate};

    #[test]
    fn compiles_like_tcpdump() {
        let insns = compile_expr("ip and udp dst port 53").unwrap();
        assert_eq!(
            disasm(&insns),
            "(000) ldh      [12]\n\
             (001) jeq      #0x800           jt 2\tjf 10\n\
             (002) ldb      [23]\n\
             (003) jeq      #0x11            jt 4\tjf 10\n\
             (004) ldh      [20]\n\
             (005) jset     #0x1fff          jt 10\tjf 6\n\
             (006) ldxb     4*([14]&0xf)\n\
             (007) ldh      [x + 16]\n\
             (008) jeq      #0x35            jt 9\tjf 10\n\
             (009) ret      #65535\n\
             (010) ret      #0\n"
        );
        assert_eq!(validate(&insns), Ok(()));
    }

    #[test]
    fn libpcap_runs_the_program() {
        let f = LibpcapFilter::compile("ether proto 0x0806").unwrap();
        let mut arp = vec![0u8; 60];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(libpcap_matches(&f, &arp));
        arp[13] = 0x00;
        assert!(!libpcap_matches(&f, &arp));
        assert!(!f.matches(&arp[..13]));
    }

    #[test]
    fn keeps_libpcaps_error_message() {
        let err = compile_expr("udp port banana").unwrap_err();
        let TcpdumpError::Compile { expr, message } = &err else { panic!("{err:?}") };
        assert_eq!(expr, "udp port banana");
        assert!(message.contains("banana"), "{message}");
        let err = compile_expr("tcp and (").unwrap_err();
        assert!(err.to_string().starts_with("compile filter `tcp and (`: "), "{err}");
        assert!(err.to_string().contains("syntax error"), "{err}");
        assert!(matches!(compile_expr("ip\0"), Err(TcpdumpError::Compile { .. })));
    }

    #[test]
    fn empty_expression_accepts_everything() {
        let insns = compile_expr("").unwrap();
        assert_eq!(insns, vec![ClassicInsn::new(0x06, 0, 0, 65535)]);
    }
}
