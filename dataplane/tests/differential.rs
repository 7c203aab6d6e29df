//! Differential tests of the classic front end: for tcpdump expressions and raw classic programs
//! over the generated corpus, libpcap's own `bpf_filter` ≡ sluice's interpreter ≡ sluice's JIT
//! on every packet; plus malformed inputs, each refused with a precise error and no panic.
//!
//! libpcap is the reference twice over: `LibpcapFilter::matches` (the pcap crate's
//! `pcap_offline_filter`) for expressions, and `bpf_filter` called directly for hand-written
//! programs, because the pcap crate cannot build a program from instructions and because its
//! wrapper turns return values ≥ 2^31 into "no match".

use sluice::bpf::Exec;
use sluice::bpf::classic::{self, ClassicError, ClassicInsn, Reject};
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::{JitProgram, PacketRef};
use sluice::bpf::tcpdump::{self, LibpcapFilter, TcpdumpError};
use sluice::testbed::corpus::{self, Frame, Rng};
use std::ffi::{CStr, c_char, c_int, c_uint};

mod libpcap {
    use super::*;

    /// libpcap's `struct bpf_insn`.
    #[repr(C)]
    struct BpfInsn {
        code: u16,
        jt: u8,
        jf: u8,
        k: u32,
    }

    unsafe extern "C" {
        fn bpf_filter(pc: *const BpfInsn, p: *const u8, wirelen: c_uint, buflen: c_uint) -> c_uint;
        fn bpf_image(p: *const BpfInsn, n: c_int) -> *const c_char;
    }

    fn raw(insns: &[ClassicInsn]) -> Vec<BpfInsn> {
        insns.iter().map(|i| BpfInsn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect()
    }

    /// libpcap's interpreter on a whole-buffer capture. The program must have passed
    /// `classic::validate`: `bpf_filter` trusts its jumps (it aborts on unknown opcodes).
    pub fn run(insns: &[ClassicInsn], packet: &[u8]) -> u32 {
        assert!(classic::validate(insns).is_ok(), "only validated programs go to bpf_filter");
        let prog = raw(insns);
        let len = packet.len() as c_uint;
        // SAFETY: `prog` is a live, validated instruction array (every jump lands inside it and
        // it ends in a return), and `packet` is valid for `len` bytes; bpf_filter reads nothing
        // else and keeps no pointer after returning.
        unsafe { bpf_filter(prog.as_ptr(), packet.as_ptr(), len, len) }
    }

    /// libpcap's disassembly of instruction `n` (what `tcpdump -d` prints).
    pub fn image(insn: &ClassicInsn, n: usize) -> String {
        let raw = raw(std::slice::from_ref(insn));
        // SAFETY: `raw` holds one instruction that bpf_image only reads; it returns a pointer to
        // a NUL-terminated static buffer, copied out at once. The buffer is shared, so only the
        // single test calling this may use it.
        unsafe { CStr::from_ptr(bpf_image(raw.as_ptr(), n as c_int)).to_string_lossy().into_owned() }
    }
}

/// Expressions covering what tcpdump users filter on: ports, hosts, nets, TCP flags, VLANs,
/// IPv6, ICMP, fragments, lengths, header arithmetic (incl. division, modulo and shifts by a
/// packet-dependent X), and nests of `and`/`or`/`not`.
const EXPRESSIONS: &[&str] = &[
    "udp dst port 53",
    "port 53",
    "udp and src port 53",
    "tcp port 80 or tcp port 443",
    "dst port 67 or dst port 68",
    "portrange 6000-6010",
    "tcp portrange 1-1023",
    "tcp dst portrange 8000-8080",
    "host 10.0.0.1",
    "src host 10.0.0.1 and dst host 10.0.0.2",
    "dst host 8.8.8.8",
    "net 192.168.1.0/24",
    "net 10.0.0.0 mask 255.0.0.0",
    "src net 10.0.0.0/8 and dst port 443",
    "not net 10.0.0.0/8",
    "ip multicast",
    "ip[12:4] == 0x0a000001",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[tcpflags] & tcp-rst != 0",
    "tcp[13] & 0x03 != 0",
    "tcp[tcpflags] == (tcp-fin|tcp-push|tcp-urg)",
    "ip host 10.0.0.1 and (tcp[tcpflags] & tcp-syn != 0)",
    "tcp[((tcp[12] & 0xf0) >> 2)] == 0x12",
    "vlan",
    "vlan and udp",
    "vlan 100",
    "vlan and vlan",
    "vlan and ip6 and udp port 53",
    "ether[12:2] == 0x88a8",
    "ip6",
    "ip6 and tcp",
    "ip6 host 2001:db8::1",
    "ip6 and ip6[6] == 44",
    "ip6[7] == 255",
    "icmp",
    "icmp[icmptype] == icmp-echo",
    "icmp[icmptype] != icmp-echo and icmp[icmptype] != icmp-echoreply",
    "icmp6",
    "icmp6 and ip6[40] == 135",
    "ip[6:2] & 0x1fff != 0",
    "ip[6] & 0x20 != 0",
    "ip[0] & 0xf > 5",
    "ip[8] == 1",
    "len > 100",
    "less 80",
    "greater 1000",
    "ip and len <= 60",
    "ip[2:2] - ((ip[0]&0xf)<<2) > 20",
    "ip[((ip[0] & 0xf) << 2) + 2 : 2] == 53",
    "udp and udp[4:2] > 100",
    "ip[2:2] / 4 > 100",
    "ip[2:2] % 7 == 3",
    "ip[2:2] * 3 > 200",
    "(ip[2:2] ^ 0xff) & 1 == 1",
    "ip[2:2] >> 1 > 100",
    "ip[2:2] / (ip[8] - 64) > 0",
    "ip[2:2] % (ip[8] & 3) == 0",
    "ip[2:2] << (ip[8] & 0x3f) != 0",
    "ip[2:2] >> (ip[8] & 0x3f) != 0",
    "ip[100:4] != 0",
    "not tcp",
    "not (tcp or udp)",
    "(tcp and port 22) or (udp and not port 53)",
    "ip and not (icmp or (udp and (port 67 or port 68)))",
    "ether host 02:00:00:00:00:01",
    "ether broadcast",
    "ether multicast",
    "ether src 02:00:00:00:00:01 and ether dst ff:ff:ff:ff:ff:ff",
    "ether proto 0x0806",
    "ip proto 47",
    "ip6 proto 47",
    "arp",
    "arp and arp[7] == 2",
    "udp[8:2] == 0x1234",
    // A 20-clause expression, the benchmark's largest class.
    "(udp port 53 or udp port 123 or udp port 67 or tcp port 80 or tcp port 443 or tcp port 22) \
     and not (host 8.8.8.8 or host 1.1.1.1 or net 172.16.0.0/12) \
     and (src net 10.0.0.0/8 or src net 192.168.0.0/16 or ip6) \
     and not (tcp[tcpflags] & tcp-rst != 0) and not ip[6:2] & 0x1fff != 0 \
     and greater 60 and less 1400 and not vlan and not ether broadcast",
];

fn corpus() -> Vec<Frame> {
    corpus::frames(corpus::DEFAULT_SEED)
}

#[test]
fn expressions_compile_to_programs_sluice_accepts() {
    assert!(EXPRESSIONS.len() >= 40, "{} expressions", EXPRESSIONS.len());
    for expr in EXPRESSIONS {
        let insns = tcpdump::compile_expr(expr).unwrap_or_else(|e| panic!("{e}"));
        classic::compile(&insns).unwrap_or_else(|e| panic!("{expr}: {e}"));
    }
}

/// sluice's back ends, each running one compiled classic program.
struct Sluice {
    backends: Vec<(&'static str, Box<dyn Exec>)>,
    /// The same JIT code's batch entry, checked on the whole corpus in one call.
    batch: JitProgram,
    buf: Vec<u8>,
}

impl Sluice {
    fn new(what: &str, insns: &[ClassicInsn]) -> Self {
        let program = classic::compile(insns).unwrap_or_else(|e| panic!("{what}: {e}"));
        let jit = JitProgram::compile(&program).unwrap_or_else(|e| panic!("{what}: jit: {e}"));
        let backends: Vec<(&'static str, Box<dyn Exec>)> =
            vec![("interpreter", Box::new(Interpreter::new(&program))), ("jit", Box::new(jit))];
        let batch = JitProgram::compile(&program).unwrap_or_else(|e| panic!("{what}: jit: {e}"));
        Sluice { backends, batch, buf: Vec::with_capacity(2048) }
    }

    /// Asserts that the JIT's batch entry, given every frame at once, returns `expected[i]`
    /// for frame i and leaves the frames unchanged.
    fn expect_batch(&self, what: &str, frames: &[Frame], expected: &[u32]) {
        let mut copies: Vec<Vec<u8>> = frames.iter().map(|f| f.data.clone()).collect();
        let mut refs: Vec<PacketRef<'_>> = copies.iter_mut().map(|c| PacketRef::new(c)).collect();
        let mut verdicts = vec![u64::MAX; frames.len()];
        let faults = self.batch.run_batch(&mut refs, 1, 0, &mut verdicts);
        assert_eq!(faults, 0, "{what}: batch faulted");
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(verdicts[i], u64::from(expected[i]), "{what} on {}: batch entry vs libpcap", f.name);
            assert_eq!(copies[i], f.data, "{what} on {}: batch entry changed the frame", f.name);
        }
    }

    /// Asserts that every back end returns `expected` (libpcap's value) on `frame`. A fault is
    /// a failure too: a classic program has no way to fault.
    fn expect(&mut self, what: &str, frame: &Frame, expected: u32) {
        for (name, backend) in &self.backends {
            self.buf.clear();
            self.buf.extend_from_slice(&frame.data);
            let got = backend.run_xdp(&mut self.buf, 1, 0);
            assert_eq!(
                got,
                Ok(u64::from(expected)),
                "{what} on {} ({} bytes): {name} vs libpcap",
                frame.name,
                frame.data.len()
            );
        }
    }
}

#[test]
fn expressions_agree_with_libpcap_on_every_frame() {
    let frames = corpus();
    let mut pairs = 0usize;
    let mut backends = 0;
    for expr in EXPRESSIONS {
        let filter = LibpcapFilter::compile(expr).unwrap_or_else(|e| panic!("{e}"));
        let mut sluice = Sluice::new(expr, filter.insns());
        backends = sluice.backends.len();
        let mut matched = 0;
        let mut values = Vec::with_capacity(frames.len());
        for f in &frames {
            let verdict = tcpdump::libpcap_matches(&filter, &f.data);
            // The instructions sluice read out of libpcap give libpcap's own verdict: nothing
            // was lost in the extraction.
            let value = libpcap::run(filter.insns(), &f.data);
            assert_eq!(verdict, value != 0, "`{expr}` on {}: extracted program differs", f.name);
            sluice.expect(&format!("`{expr}`"), f, value);
            values.push(value);
            matched += verdict as usize;
            pairs += 1;
        }
        sluice.expect_batch(&format!("`{expr}`"), &frames, &values);
        // Every expression splits the corpus, so each comparison can fail both ways.
        assert!(matched > 0 && matched < frames.len(), "`{expr}` matches {matched} of {} frames", frames.len());
    }
    println!(
        "tcpdump expressions: {} expressions x {} frames = {pairs} (expression, packet) pairs, \
         libpcap == extracted program == {backends} sluice back end(s) == the JIT's batch entry",
        EXPRESSIONS.len(),
        frames.len()
    );
}

#[test]
fn raw_programs_agree_with_libpcap_on_every_frame() {
    let frames = corpus();
    let programs = raw_programs();
    for (name, insns) in &programs {
        let mut sluice = Sluice::new(name, insns);
        let mut values = Vec::with_capacity(frames.len());
        for f in &frames {
            let value = libpcap::run(insns, &f.data);
            sluice.expect(name, f, value);
            values.push(value);
        }
        sluice.expect_batch(name, &frames, &values);
    }
    println!(
        "raw classic programs: {} programs x {} frames = {} pairs",
        programs.len(),
        frames.len(),
        programs.len() * frames.len()
    );
}

#[test]
fn random_programs_agree_with_libpcap() {
    let frames: Vec<Frame> = corpus().into_iter().step_by(3).collect();
    let mut rng = Rng::new(0xd1ff);
    let count = 500;
    for n in 0..count {
        let prog = random_program(&mut rng);
        let what = format!("random program {n}:\n{}", classic::disasm(&prog));
        let mut sluice = Sluice::new(&what, &prog);
        for f in &frames {
            sluice.expect(&what, f, libpcap::run(&prog, &f.data));
        }
    }
    println!("random classic programs: {count} programs x {} frames = {} pairs", frames.len(), count * frames.len());
}

/// A random program whose loads and equality tests lean towards the fields a pipeline
/// dispatches on (ethertype, IPv4 protocol, IPv6 next header) and the values filters test.
fn field_program(rng: &mut Rng) -> Vec<ClassicInsn> {
    let values = [0x0800, 0x86dd, 0x0806, 6, 17, 1, 0x11_0800];
    let mut prog = random_program(rng);
    let last = prog.len() - 1;
    for i in 0..last {
        match prog[i].code {
            0x20 | 0x28 | 0x30 if rng.below(3) != 0 => {
                (prog[i].code, prog[i].k) = rng.pick(&[(0x28, 12), (0x30, 23), (0x30, 20), (0x30, 12), (0x28, 22), (0x20, 26)]);
                // Test the loaded field at once, as compiled filters do (not over a store).
                if i + 1 < last && rng.below(2) == 0 && !matches!(prog[i + 1].code, 0x02 | 0x03) {
                    let left = (last - i - 2) as u64;
                    let (jt, jf) = (rng.below(left + 1) as u8, rng.below(left + 1) as u8);
                    prog[i + 1] = ClassicInsn::new(0x15, jt, jf, rng.pick(&values));
                }
            }
            0x15 if rng.below(3) != 0 => prog[i].k = rng.pick(&values),
            _ => {}
        }
    }
    prog
}

/// A random tcpdump expression: one to three primitives joined by `and` / `or`, some negated.
fn random_expression(rng: &mut Rng) -> String {
    const PRIMITIVES: &[&str] = &[
        "ip", "ip6", "arp", "rarp", "tcp", "udp", "icmp", "icmp6", "sctp", "vlan", "port 53", "tcp port 80",
        "udp port 123", "host 10.0.0.1", "net 192.168.0.0/16", "ip proto 17", "ip6 proto 6", "ether proto 0x88cc",
        "greater 60", "less 100", "ip[9] = 6", "ether[12:2] = 0x800", "ether[12] = 8", "tcp[tcpflags] & tcp-syn != 0",
        "ether broadcast", "ip multicast", "ip6 net fe80::/10",
    ];
    let mut expr = String::new();
    for i in 0..1 + rng.below(3) {
        if i > 0 {
            expr.push_str(if rng.below(2) == 0 { " and " } else { " or " });
        }
        if rng.below(4) == 0 {
            expr.push_str("not ");
        }
        expr.push_str(rng.pick(PRIMITIVES));
    }
    expr
}

/// Pipelines mixing random tcpdump expressions with random classic programs that load the
/// dispatched fields, fused with a dispatch: every stage counts exactly the frames libpcap
/// matches, whichever arm a frame takes.
#[test]
fn dispatched_pipelines_agree_with_libpcap() {
    use sluice::bpf::jit::fuse::{CounterLayout, Entries, FusedPipeline, Plan, Rule, Stage};
    use sluice::bpf::specialize;
    use std::sync::atomic::{AtomicU64, Ordering};
    let layout = CounterLayout { slot: 24, packets: 0, bytes: 8, aborted: 16 };
    let frames = corpus::field_variants(7);
    let mut rng = Rng::new(0xd15b);
    let rounds = 80;
    let mut dispatched = 0;
    for round in 0..rounds {
        let mut classic: Vec<(String, Vec<ClassicInsn>)> = Vec::new();
        for _ in 0..3 + rng.below(6) {
            classic.push(if rng.below(3) == 0 {
                ("random program".into(), field_program(&mut rng))
            } else {
                // libpcap refuses expressions that match nothing (`arp and tcp`): draw again.
                loop {
                    let expr = random_expression(&mut rng);
                    if let Ok(insns) = tcpdump::compile_expr(&expr) {
                        break (format!("`{expr}`"), insns);
                    }
                }
            });
        }
        let what = |i: usize| format!("round {round}, stage {i}: {}\n{}", classic[i].0, classic::disasm(&classic[i].1));
        let programs: Vec<_> =
            classic.iter().enumerate().map(|(i, c)| classic::compile(&c.1).unwrap_or_else(|e| panic!("{}: {e}", what(i)))).collect();
        let stages: Vec<Stage<'_>> =
            programs.iter().map(|p| Stage { program: p, rule: Rule::Match { end: None, mark: false }, verified: None }).collect();
        let refs: Vec<_> = programs.iter().collect();
        dispatched += usize::from(matches!(specialize::tree(&refs, 8), specialize::Tree::Split { .. }));
        let plan = Plan { stages: &stages, default: 0, abort: 1, counters: layout, entries: Entries::Batch, dispatch: 8 };
        let fused = FusedPipeline::compile(&plan).unwrap_or_else(|e| panic!("round {round}: fuse: {e}"));
        let counters: Vec<AtomicU64> = (0..fused.counter_words()).map(|_| AtomicU64::new(0)).collect();
        for f in &frames {
            let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            let mut copy = f.clone();
            fused.run(&mut copy, 1, 0, &counters);
            for (i, c) in classic.iter().enumerate() {
                let want = u64::from(libpcap::run(&c.1, f) != 0);
                let got = counters[i * 3].load(Ordering::Relaxed) - before[i * 3];
                assert_eq!(got, want, "{} on a {}-byte frame {:02x?}", what(i), f.len(), &f[..f.len().min(34)]);
            }
        }
    }
    // Most pipelines hold two stages testing one field, so the dispatch was exercised.
    assert!(dispatched * 2 > rounds, "only {dispatched} of {rounds} pipelines dispatched");
    println!("dispatched pipelines: {rounds} pipelines of 3-8 stages x {} frames; {dispatched} dispatched", frames.len());
}

#[test]
fn disassembly_matches_libpcaps_bpf_image() {
    let mut programs: Vec<Vec<ClassicInsn>> =
        EXPRESSIONS.iter().map(|e| tcpdump::compile_expr(e).unwrap_or_else(|err| panic!("{err}"))).collect();
    programs.push(all_opcodes());
    let mut lines = 0;
    for prog in &programs {
        let ours = classic::disasm(prog);
        for (n, (line, insn)) in ours.lines().zip(prog).enumerate() {
            // libpcap cannot name `ldx #pktlen` (it prints `unimp 0x81`); sluice does.
            if insn.code == 0x81 {
                continue;
            }
            assert_eq!(line, libpcap::image(insn, n), "instruction {n} of\n{ours}");
            lines += 1;
        }
    }
    println!("disassembly: {lines} lines identical to bpf_image");
}

/// Every opcode the kernel allows, once (after a store that makes `M[1]` readable), then `ret a`.
fn all_opcodes() -> Vec<ClassicInsn> {
    let store = ClassicInsn::new(0x02, 0, 0, 1);
    let ret_a = ClassicInsn::new(0x16, 0, 0, 0);
    let mut prog = vec![store];
    for code in 0..=0xffffu16 {
        let k = match code & 0x07 {
            0x04 => 3, // ALU: a valid divisor and shift
            0x05 => 0, // JMP: to the next instruction
            0x06 => continue,
            _ if code & 0xe0 == 0x60 || matches!(code, 0x02 | 0x03) => 1,
            _ => 14,
        };
        let insn = ClassicInsn::new(code, 0, 0, k);
        if classic::validate(&[store, insn, ret_a]).is_ok() {
            prog.push(insn);
        }
    }
    prog.push(ret_a);
    prog.push(ClassicInsn::new(0x06, 0, 0, 7));
    prog
}

/// Hand-written programs aimed at the corners of classic semantics, as `tcpdump -ddd` text.
const RAW_PROGRAMS: &[(&str, &str)] = &[
    // X = ttl - 64: zero for TTL 64, so A / X must end the filter with 0.
    ("div-by-x", "6\n48 0 0 22\n20 0 0 64\n7 0 0 0\n0 0 0 1000\n60 0 0 0\n22 0 0 0\n"),
    ("mod-by-x", "6\n48 0 0 22\n20 0 0 64\n7 0 0 0\n0 0 0 1000\n156 0 0 0\n22 0 0 0\n"),
    // Shift counts from packet bytes, 32 or more for some frames: libpcap gives 0.
    ("lsh-by-x", "6\n48 0 0 22\n84 0 0 63\n7 0 0 0\n0 0 0 2147483649\n108 0 0 0\n22 0 0 0\n"),
    ("rsh-by-x", "6\n48 0 0 47\n84 0 0 63\n7 0 0 0\n0 0 0 4294967295\n124 0 0 0\n22 0 0 0\n"),
    // X + k is not reduced modulo 2^32: these index far past the packet.
    ("ind-no-wrap-b", "3\n1 0 0 4294967295\n80 0 0 1\n6 0 0 1\n"),
    ("ind-no-wrap-w", "3\n1 0 0 4294967280\n64 0 0 16\n6 0 0 1\n"),
    ("ind-k-max", "3\n1 0 0 14\n72 0 0 2147483647\n6 0 0 1\n"),
    ("ind-k-huge", "3\n1 0 0 0\n80 0 0 4294967295\n6 0 0 1\n"),
    ("abs-far", "3\n32 0 0 2147483648\n40 0 0 2147483647\n6 0 0 1\n"),
    ("msh-far", "2\n177 0 0 4294967295\n6 0 0 1\n"),
    // Loads right at the end of the packet.
    ("abs-edge", "6\n32 0 0 56\n2 0 0 0\n40 0 0 58\n2 0 0 1\n48 0 0 59\n22 0 0 0\n"),
    // A survives the MSH's byte load; the MSH itself may be out of range.
    ("msh-keeps-a", "4\n0 0 0 7\n177 0 0 14\n12 0 0 0\n22 0 0 0\n"),
    ("msh-out-of-range", "4\n0 0 0 7\n177 0 0 100\n12 0 0 0\n22 0 0 0\n"),
    ("msh-then-ind", "4\n177 0 0 14\n72 0 0 16\n12 0 0 0\n22 0 0 0\n"),
    // Full 32-bit return values.
    ("ret-max", "1\n6 0 0 4294967295\n"),
    ("ret-src-ip", "2\n32 0 0 26\n22 0 0 0\n"),
    ("ret-top-bit", "2\n0 0 0 2147483648\n22 0 0 0\n"),
    ("ret-initial-a", "1\n22 0 0 0\n"),
    ("ret-initial-x", "2\n135 0 0 0\n22 0 0 0\n"),
    // Packet length in A and X, and wrapping arithmetic on it.
    ("len", "4\n128 0 0 0\n129 0 0 0\n44 0 0 0\n22 0 0 0\n"),
    ("len-minus-60", "3\n128 0 0 0\n20 0 0 60\n22 0 0 0\n"),
    // Scratch memory written on two paths and read after they join.
    (
        "scratch",
        "12\n32 0 0 26\n2 0 0 5\n40 0 0 12\n21 0 2 2048\n1 0 0 1\n5 0 0 1\n1 0 0 2\n3 0 0 6\n\
         96 0 0 5\n97 0 0 6\n12 0 0 0\n22 0 0 0\n",
    ),
    // Unsigned 32-bit comparisons against constants with the top bit set.
    (
        "unsigned-k",
        "8\n32 0 0 26\n37 0 1 2147483647\n6 0 0 2\n53 0 1 167772161\n6 0 0 3\n69 0 1 16777216\n\
         6 0 0 4\n6 0 0 5\n",
    ),
    // Comparisons against X (the destination address) in every form.
    (
        "compare-x",
        "13\n32 0 0 30\n7 0 0 0\n32 0 0 26\n29 0 1 0\n6 0 0 1\n45 0 1 0\n6 0 0 2\n61 2 0 0\n\
         77 0 2 0\n6 0 0 3\n6 0 0 4\n135 0 0 0\n22 0 0 0\n",
    ),
    // Every ALU operation with a constant and with X, on a packet word.
    (
        "alu",
        "25\n32 0 0 26\n1 0 0 3\n4 0 0 7\n12 0 0 0\n20 0 0 2\n28 0 0 0\n36 0 0 5\n44 0 0 0\n\
         52 0 0 3\n60 0 0 0\n148 0 0 1000\n156 0 0 0\n68 0 0 256\n76 0 0 0\n84 0 0 65535\n\
         92 0 0 0\n164 0 0 255\n172 0 0 0\n100 0 0 4\n108 0 0 0\n116 0 0 1\n124 0 0 0\n\
         132 0 0 0\n7 0 0 0\n22 0 0 0\n",
    ),
];

fn raw_programs() -> Vec<(String, Vec<ClassicInsn>)> {
    let mut out: Vec<(String, Vec<ClassicInsn>)> = RAW_PROGRAMS
        .iter()
        .map(|(name, text)| (name.to_string(), classic::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"))))
        .collect();
    out.push(("all-opcodes".into(), all_opcodes()));
    // tcpdump's programs written out in both text formats and read back.
    for expr in EXPRESSIONS.iter().take(12) {
        let insns = tcpdump::compile_expr(expr).unwrap_or_else(|e| panic!("{e}"));
        let ddd = classic::parse(&classic::to_ddd(&insns)).unwrap_or_else(|e| panic!("{e}"));
        let dd = classic::parse(&classic::to_dd(&insns)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((&ddd, &dd), (&insns, &insns));
        out.push((format!("ddd `{expr}`"), ddd));
    }
    out
}

/// A random program that validates: a few scratch words written first, then any instruction
/// with operands in range and forward jumps anywhere up to the final `ret a`.
fn random_program(rng: &mut Rng) -> Vec<ClassicInsn> {
    let len = 3 + rng.below(40) as usize;
    let written: Vec<u32> = (0..1 + rng.below(3)).map(|_| rng.below(16) as u32).collect();
    let mut prog: Vec<ClassicInsn> =
        written.iter().map(|&m| ClassicInsn::new(0x02 | rng.below(2) as u16, 0, 0, m)).collect();
    let body = len.saturating_sub(prog.len() + 1);
    for i in 0..body {
        let left = (body - i) as u64; // instructions after this one, counting the final return
        let near = |rng: &mut Rng| rng.below(left.min(256)) as u8;
        let offset = |rng: &mut Rng| match rng.below(10) {
            0 => rng.below(1 << 31) as u32,
            1..=6 => rng.below(64) as u32,
            _ => rng.below(24) as u32,
        };
        let alu_ops = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x90, 0xa0];
        let insn = match rng.below(16) {
            0 | 1 => ClassicInsn::new([0x20, 0x28, 0x30][rng.below(3) as usize], 0, 0, offset(rng)),
            2 => ClassicInsn::new([0x40, 0x48, 0x50][rng.below(3) as usize], 0, 0, offset(rng)),
            3 => ClassicInsn::new(0xb1, 0, 0, offset(rng)),
            4 => ClassicInsn::new(rng.below(2) as u16, 0, 0, rng.next_u64() as u32),
            5 => ClassicInsn::new(0x60 | rng.below(2) as u16, 0, 0, written[rng.below(written.len() as u64) as usize]),
            6 => ClassicInsn::new(0x80 | rng.below(2) as u16, 0, 0, 0),
            7 => ClassicInsn::new([0x07, 0x87, 0x84][rng.below(3) as usize], 0, 0, 0),
            8 | 9 => {
                let op = alu_ops[rng.below(10) as usize];
                let k = match op {
                    0x60 | 0x70 => rng.below(32) as u32,
                    0x30 | 0x90 => 1 + rng.below(1000) as u32,
                    _ => rng.next_u64() as u32,
                };
                ClassicInsn::new(0x04 | op, 0, 0, k)
            }
            10 => ClassicInsn::new(0x0c | alu_ops[rng.below(10) as usize], 0, 0, 0),
            11..=13 => {
                let op = [0x10, 0x20, 0x30, 0x40][rng.below(4) as usize] | if rng.below(3) == 0 { 0x08 } else { 0 };
                let k = if rng.below(2) == 0 { rng.below(2048) as u32 } else { rng.next_u64() as u32 };
                ClassicInsn::new(0x05 | op, near(rng), near(rng), k)
            }
            14 => ClassicInsn::new(0x05, 0, 0, near(rng) as u32),
            _ => ClassicInsn::new(0x06 | (rng.below(2) as u16) << 4, 0, 0, rng.below(3) as u32 * 0x7fff_ffff),
        };
        prog.push(insn);
    }
    prog.push(ClassicInsn::new(0x16, 0, 0, 0));
    prog
}

// ---------------------------------------------------------------------------------------------
// Malformed input: each refused with a precise error, never a panic.
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_expressions_keep_libpcaps_message() {
    for (expr, message) in [
        ("udp port banana", "unknown port 'banana'"),
        ("host 999.1.1.1", "invalid IPv4 address '999.1.1.1'"),
        ("vlan 5000", "VLAN tag 5000 greater than maximum 4095"),
        ("ether host zz", "unknown ether host 'zz'"),
        ("net 10.0.0.1/8", "non-network bits set in \"10.0.0.1/8\""),
        ("ip[1:3] == 0", "data size must be 1, 2, or 4"),
        ("tcp and (", "syntax error"),
        ("portrange 5-", "syntax error"),
        ("port 53 53", "syntax error"),
        ("ip\0", "NUL"),
    ] {
        match tcpdump::compile_expr(expr) {
            Err(TcpdumpError::Compile { expr: e, message: m }) => {
                assert_eq!(e, expr);
                assert!(m.contains(message), "`{expr}`: {m}");
            }
            other => panic!("`{expr}`: expected a compile error, got {other:?}"),
        }
    }
}

#[test]
fn libpcap_programs_sluice_cannot_run_are_refused_by_name() {
    // `inbound` reads the packet type from socket metadata; `protochain` loops backwards.
    let inbound = tcpdump::compile_expr("inbound").unwrap_or_else(|e| panic!("{e}"));
    let err = classic::compile(&inbound).unwrap_err();
    assert!(
        matches!(err, ClassicError::Invalid { index: 0, reason: Reject::Extension { name: "type", .. }, .. }),
        "{err}"
    );
    let chain = tcpdump::compile_expr("ip6 protochain 17").unwrap_or_else(|e| panic!("{e}"));
    let err = classic::compile(&chain).unwrap_err();
    let ClassicError::Invalid { index, text, reason: Reject::JumpBackward { target, .. } } = &err else {
        panic!("{err}")
    };
    assert!(text.starts_with("ja ") && *target < *index as i64, "{err}");
}

#[test]
fn bad_classic_text_names_line_and_column() {
    for (text, line, col) in [
        ("", 1, 1),
        ("2\n6 0 0 0\n", 3, 1),
        ("1\n6 0 0\n", 2, 6),
        ("1\n6 0 0 0 0\n", 2, 9),
        ("1\n6 0 -1 0\n", 2, 5),
        ("1\n6 0 0 4294967296\n", 2, 7),
        ("1\n65536 0 0 0\n", 2, 1),
        ("{ 0x28, 0, 0, 0x0c },\n{ 0x06 0, 0, 0 },\n", 2, 8),
        ("{ 0x28, 0, 0, 0x0c }\n{ 0x06, 0, 0, 0x1g },\n", 2, 15),
        ("2,6 0 0 0", 1, 1),
        ("1,6 0 0 0,,", 1, 11),
    ] {
        match classic::parse(text) {
            Err(ClassicError::Parse { line: l, col: c, reason }) => {
                assert_eq!((l, c), (line, col), "{text:?}: {reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("{text:?}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn bad_classic_programs_name_index_disassembly_and_reason() {
    let cases: [(&str, usize, &str, &str); 10] = [
        ("2\n5 0 0 4294967295\n6 0 0 0\n", 0, "ja 0", "wraps around to instruction 0"),
        ("2\n5 0 0 1\n6 0 0 0\n", 0, "ja 2", "jump target 2 is past the last instruction (1)"),
        ("2\n21 0 9 1\n6 0 0 0\n", 0, "jeq #0x1 jt 1 jf 10", "jump target 10 is past"),
        ("2\n14 0 0 0\n6 0 0 0\n", 0, "unimp 0xe", "unknown opcode 0xe"),
        ("2\n96 0 0 16\n6 0 0 0\n", 0, "ld M[16]", "scratch memory index 16 is out of range"),
        ("3\n2 0 0 1\n97 0 0 2\n6 0 0 0\n", 1, "ldx M[2]", "reads M[2] before it is written"),
        ("2\n52 0 0 0\n6 0 0 0\n", 0, "div #0", "division by constant zero"),
        ("2\n100 0 0 32\n6 0 0 0\n", 0, "lsh #32", "shift by 32"),
        ("2\n32 0 0 4294963208\n6 0 0 0\n", 0, "ld [ifidx]", "linux extension `ifidx`"),
        ("2\n6 0 0 0\n0 0 0 0\n", 1, "ld #0x0", "the last instruction must be a return"),
    ];
    for (text, index, disasm, reason) in cases {
        let prog = classic::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let err = classic::compile(&prog).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("instruction {index} ({disasm}): ")), "{msg}");
        assert!(msg.contains(reason), "{msg}");
    }
    assert_eq!(classic::compile(&[]).unwrap_err(), ClassicError::Length(0));
    let long = vec![ClassicInsn::new(0x06, 0, 0, 0); 4097];
    assert_eq!(
        classic::compile(&long).unwrap_err().to_string(),
        "program has 4097 instructions: classic BPF allows 1 to 4096"
    );
}
