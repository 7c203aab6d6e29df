//! The compiled (fused) pipeline against references that run each stage alone — with the
//! interpreter and with a per-stage JIT program — over the packet corpus and random pipelines,
//! through both fused entries (per packet, per batch); rejection of bad pipelines; stage
//! counters across swaps.
//! No root needed: nothing here touches an interface.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::AtomicU64;

use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::fuse::{Entries, Exit, FusedPipeline};
use sluice::bpf::jit::{JitProgram, PacketRef};
use sluice::bpf::source::Format;
use sluice::bpf::{Exec, Verdict};
use sluice::pipeline::compile::{load_filter, PipelineCode};
use sluice::pipeline::counters::offsets;
use sluice::pipeline::{
    ActionSpec, Decision, DefaultAction, FilterSpec, Ledger, Outcome, Pipeline, PipelineSpec, PortEnv, Published, WorkerView,
};
use sluice::testbed::corpus;

mod clang;

const ENV: PortEnv = PortEnv { port: "a", peer: Some("b"), workers: 1 };

fn tcpdump(id: &str, expr: &str, action: ActionSpec) -> sluice::pipeline::StageSpec {
    sluice::pipeline::StageSpec { id: id.into(), filter: FilterSpec::Text { text: expr.into(), format: Format::Tcpdump }, action }
}

fn asm(id: &str, text: &str, action: ActionSpec) -> sluice::pipeline::StageSpec {
    sluice::pipeline::StageSpec { id: id.into(), filter: FilterSpec::Text { text: text.into(), format: Format::Asm }, action }
}

/// The pipeline's meaning, written out directly over runs of each stage on its own (the
/// interpreter, or a JIT program per stage — the unfused path): stage by stage, first terminal
/// match wins. Returns the outcome and per stage (matched, aborted).
struct Reference {
    stages: Vec<(Box<dyn Exec>, ActionSpec)>,
    default: Decision,
    peer: bool,
}

impl Reference {
    fn new(spec: &PipelineSpec, peer: bool, jit: bool) -> Reference {
        let stages = spec
            .stages
            .iter()
            .map(|s| {
                let program = load_filter(&s.id, &s.filter).unwrap().program;
                let exec: Box<dyn Exec> =
                    if jit { Box::new(JitProgram::compile(&program).unwrap()) } else { Box::new(Interpreter::new(&program)) };
                (exec, s.action.clone())
            })
            .collect();
        let default = match spec.default {
            DefaultAction::Drop => Decision::Drop,
            DefaultAction::Reflect => Decision::Reflect,
            DefaultAction::Forward(_) => Decision::Peer,
        };
        Reference { stages, default, peer }
    }

    fn run(&self, pkt: &mut [u8], counts: &mut [(u64, u64)]) -> Outcome {
        let mut sample = None;
        for (i, (interp, action)) in self.stages.iter().enumerate() {
            let r0 = match interp.run_xdp(pkt, 0, 0) {
                Ok(v) => v,
                Err(_) => {
                    counts[i].1 += 1;
                    return Outcome { decision: Decision::Drop, sample, window: None };
                }
            };
            let terminal = match action {
                ActionSpec::Verdict => match Verdict::from_r0(r0) {
                    Verdict::Pass => continue,
                    Verdict::Drop => Decision::Drop,
                    Verdict::Tx => Decision::Bounce,
                    Verdict::Redirect if self.peer => Decision::Peer,
                    _ => {
                        counts[i].1 += 1;
                        return Outcome { decision: Decision::Drop, sample, window: None };
                    }
                },
                _ if r0 == 0 => continue,
                ActionSpec::Drop => Decision::Drop,
                ActionSpec::Reflect => Decision::Reflect,
                ActionSpec::Forward(_) => Decision::Peer,
                ActionSpec::Sample => {
                    counts[i].0 += 1;
                    sample.get_or_insert(i as u32);
                    continue;
                }
                ActionSpec::Count | ActionSpec::Continue => {
                    counts[i].0 += 1;
                    continue;
                }
            };
            counts[i].0 += 1;
            return Outcome { decision: terminal, sample, window: None };
        }
        counts[self.stages.len()].0 += 1;
        Outcome { decision: self.default, sample, window: None }
    }
}

const EXPRS: &[&str] = &[
    "udp",
    "tcp",
    "udp dst port 53",
    "ip6",
    "arp or icmp",
    "tcp[tcpflags] & tcp-syn != 0",
    "vlan",
    "greater 100",
    "host 10.0.0.1 or net 192.168.0.0/16",
    "not ip",
];

/// eBPF stages: verdicts, a packet write (faults on frames shorter than 21 bytes), a
/// length-dependent verdict.
const PROGRAMS: &[&str] = &[
    "r0 = 2\nexit\n",
    "r0 = 1\nexit\n",
    "r0 = 3\nexit\n",
    "r0 = 4\nexit\n",
    "r0 = 7\nexit\n",
    "r2 = *(u32 *)(r1 + 0)\n*(u8 *)(r2 + 20) = 0x5a\nr0 = 2\nexit\n",
    "r2 = *(u32 *)(r1 + 0)\nr3 = *(u32 *)(r1 + 4)\nr3 -= r2\nr0 = 2\nif r3 > 80 goto +1\nr0 = 1\nexit\n",
];

fn random_pipeline(rng: &mut StdRng) -> PipelineSpec {
    let n = rng.gen_range(0..=12);
    let stages = (0..n)
        .map(|i| {
            let id = format!("s{i}");
            if rng.gen_bool(0.25) {
                let p = PROGRAMS[rng.gen_range(0..PROGRAMS.len())];
                let action = if rng.gen_bool(0.7) { ActionSpec::Verdict } else { ActionSpec::Count };
                asm(&id, p, action)
            } else {
                let e = EXPRS[rng.gen_range(0..EXPRS.len())];
                let action = match rng.gen_range(0..7) {
                    0 => ActionSpec::Drop,
                    1 => ActionSpec::Reflect,
                    2 => ActionSpec::Forward("b".into()),
                    3 => ActionSpec::Count,
                    4 => ActionSpec::Sample,
                    5 => ActionSpec::Continue,
                    _ => ActionSpec::Count,
                };
                tcpdump(&id, e, action)
            }
        })
        .collect();
    let default = match rng.gen_range(0..3) {
        0 => DefaultAction::Drop,
        1 => DefaultAction::Reflect,
        _ => DefaultAction::Forward("b".into()),
    };
    PipelineSpec { stages, default }
}

#[test]
fn compiled_pipelines_agree_with_the_interpreter_reference() {
    let packets: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(4).take(200).chain([vec![0u8; 10], Vec::new()]).collect();
    let mut rng = StdRng::seed_from_u64(0x0051_17ce);
    for round in 0..40 {
        let spec = random_pipeline(&mut rng);
        let peer = round % 5 != 0;
        let env = PortEnv { peer: peer.then_some("b"), ..ENV };
        let spec = if peer {
            spec
        } else {
            // Without a peer, forward is refused: test that, then use the spec minus forwards.
            let has_forward = spec.stages.iter().any(|s| s.action.to().is_some()) || matches!(spec.default, DefaultAction::Forward(_));
            if has_forward {
                assert!(Pipeline::compile(&spec, &env).is_err(), "round {round}: forward without a peer accepted");
            }
            let stages = spec.stages.into_iter().filter(|s| s.action.to().is_none()).collect();
            PipelineSpec { stages, default: DefaultAction::Reflect }
        };
        let compiled = Pipeline::compile(&spec, &env).unwrap_or_else(|e| panic!("round {round}: {e}"));
        let reference = Reference::new(&spec, peer, false);
        let unfused = Reference::new(&spec, peer, true);
        let mut counts = vec![(0u64, 0u64); spec.stages.len() + 1];
        let mut unfused_counts = counts.clone();
        let mut wanted = Vec::with_capacity(packets.len());
        for (pi, p) in packets.iter().enumerate() {
            let (mut a, mut b, mut c) = (p.clone(), p.clone(), p.clone());
            let got = compiled.run(0, &mut a, 0, 0);
            let want = reference.run(&mut b, &mut counts);
            assert_eq!(got, want, "round {round}, packet {pi}, pipeline {spec:#?}");
            assert_eq!(unfused.run(&mut c, &mut unfused_counts), want, "round {round}, packet {pi}: unfused jit");
            assert_eq!(a, b, "round {round}, packet {pi}: packet contents differ");
            assert_eq!(c, b, "round {round}, packet {pi}: packet contents differ (unfused jit)");
            wanted.push((want, b));
        }
        assert_eq!(unfused_counts, counts, "round {round}: unfused jit counts");
        for (i, (id, t)) in compiled.totals().enumerate() {
            assert_eq!((t.packets, t.aborted), counts[i], "round {round}, stage {id:?}");
        }

        // The pipeline's batch entry, as workers call it: 64 packets per native call.
        let before: Vec<_> = compiled.totals().map(|(_, t)| (t.packets, t.aborted)).collect();
        let mut copies = packets.clone();
        let mut refs: Vec<PacketRef<'_>> = copies.iter_mut().map(|p| PacketRef::new(p)).collect();
        let mut outs = vec![Outcome { decision: Decision::Drop, sample: Some(u32::MAX), window: None }; refs.len()];
        compiled.run_batch(0, &mut refs, 0, 0, &mut outs);
        for (pi, ((out, (want, after)), copy)) in outs.iter().zip(&wanted).zip(&copies).enumerate() {
            assert_eq!(out, want, "round {round}, packet {pi}: run_batch");
            assert_eq!(copy, after, "round {round}, packet {pi}: run_batch packet contents");
        }
        for (i, ((_, t), b)) in compiled.totals().zip(&before).enumerate() {
            assert_eq!((t.packets - b.0, t.aborted - b.1), counts[i], "round {round}, slot {i}: run_batch counts");
        }

        // The single-packet entry of the same fused pipeline (built on request).
        let stages = compiled.fuse_stages();
        let single = FusedPipeline::compile(&PipelineCode::plan(&stages, compiled.default_decision(), Entries::Single)).unwrap();
        assert!(single.has_single() && !single.has_batch());
        let block: Vec<AtomicU64> = (0..single.counter_words()).map(|_| AtomicU64::new(0)).collect();
        for (pi, (p, (want, after))) in packets.iter().zip(&wanted).enumerate() {
            let mut copy = p.clone();
            let Exit { code, mark } = single.run(&mut copy, 0, 0, &block);
            let got = Outcome { decision: Decision::from_code(code as u64), sample: mark, window: None };
            assert_eq!(got, *want, "round {round}, packet {pi}: single entry");
            assert_eq!(&copy, after, "round {round}, packet {pi}: single entry packet contents");
        }
        for (i, c) in counts.iter().enumerate() {
            let word = |off: i32| block[(i * offsets::SLOT as usize + off as usize) / 8].load(Ordering::Relaxed);
            assert_eq!((word(offsets::PACKETS), word(offsets::ABORTED)), *c, "round {round}, slot {i}: single entry counts");
        }
    }
}

#[test]
fn a_rejected_pipeline_names_stage_and_position_and_changes_nothing() {
    let good = PipelineSpec { stages: vec![tcpdump("udp", "udp", ActionSpec::Count)], default: DefaultAction::Drop };
    let published = Published::new(vec![Arc::new(Pipeline::compile(&good, &ENV).unwrap())]);
    let generation = published.generation();
    let cases = [
        (asm("asm", "r0 = 1\nr0 +=\nexit\n", ActionSpec::Verdict), "stage `asm`: eBPF assembler: line 2"),
        (asm("jump", "r0 = 1\nif r0 > 1 goto +5\nexit\n", ActionSpec::Verdict), "stage `jump`: eBPF program: instruction 1"),
        (tcpdump("expr", "udp and and tcp", ActionSpec::Drop), "stage `expr`: tcpdump expression: compile filter `udp and and tcp`"),
        (tcpdump("v", "udp", ActionSpec::Verdict), "stage `v`: action: a tcpdump expression returns match/no match"),
    ];
    for (stage, want) in cases {
        let spec = PipelineSpec { stages: vec![good.stages[0].clone(), stage], default: DefaultAction::Drop };
        let e = Pipeline::compile(&spec, &ENV).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e}");
    }
    assert_eq!(published.generation(), generation);
    assert_eq!(published.current(0).spec(), &good);
}

#[test]
fn stage_counters_follow_their_id_across_swaps_under_load() {
    let v1 = PipelineSpec {
        stages: vec![tcpdump("a", "udp", ActionSpec::Count), tcpdump("b", "tcp", ActionSpec::Count)],
        default: DefaultAction::Drop,
    };
    let v2 = PipelineSpec {
        stages: vec![tcpdump("b", "tcp", ActionSpec::Count), tcpdump("c", "udp", ActionSpec::Count)],
        default: DefaultAction::Reflect,
    };
    let compile = |s: &PipelineSpec| Arc::new(Pipeline::compile(s, &ENV).unwrap());
    let published = Arc::new(Published::new(vec![compile(&v1)]));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (published, stop) = (Arc::clone(&published), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut view = WorkerView::new(published, vec![0], vec![0]);
            let mut udp = corpus::udp_64(53);
            let mut tcp = corpus::corpus().into_iter().find(|p| p.len() > 47 && p[12..14] == [8, 0] && p[23] == 6).unwrap();
            let (mut n_tcp, mut n) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                view.refresh();
                let (p, w) = view.get(0);
                for _ in 0..8 {
                    p.run(w, &mut udp, 0, 0);
                    p.run(w, &mut tcp, 0, 0);
                    n_tcp += 1;
                    n += 2;
                }
            }
            view.park();
            (n_tcp, n)
        })
    };
    let mut ledger = Ledger::new();
    let swaps = 101;
    for i in 0..swaps {
        let spec = if i % 2 == 0 { &v2 } else { &v1 };
        let retired = published.replace(0, compile(spec), Duration::from_secs(10));
        ledger.retire(retired, spec);
    }
    stop.store(true, Ordering::Relaxed);
    let (n_tcp, n) = worker.join().unwrap();
    let current = published.current(0);
    let totals = ledger.totals(&current);
    let get = |id: Option<&str>| totals.iter().find(|(i, _)| i.as_deref() == id).map(|(_, t)| t.packets);
    assert_eq!(ledger.lingering(), 0);
    // `b` is in every version: it counted every TCP packet through all the swaps.
    assert_eq!(get(Some("b")), Some(n_tcp));
    // The default counts the UDP packets of every version (every UDP packet matched a
    // count stage and went on): all packets minus none; its slot is carried by `None`.
    assert_eq!(get(None), Some(n));
    assert!(n_tcp > swaps as u64, "the worker ran during the swaps ({n_tcp} tcp packets)");
    // The last swap went to v2: `a` left and was forgotten; `c` counts only since then.
    assert_eq!(get(Some("a")), None);
    assert!(get(Some("c")).unwrap() < n - n_tcp);
}


fn object_stage(id: &str, path: &std::path::Path, action: ActionSpec) -> sluice::pipeline::StageSpec {
    sluice::pipeline::StageSpec { id: id.into(), filter: FilterSpec::File { path: path.to_owned(), format: None }, action }
}

const PRELUDE: &str = "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nchar LICENSE[] SEC(\"license\") = \"GPL\";\n";

#[test]
fn object_stages_are_verified_and_agree_with_the_interpreter() {
    // Drops packets whose length is in an array map: the map lookup needs the stage's own
    // helper frame, so a wrong frame shows as a wrong verdict.
    let by_len = format!(
        "{PRELUDE}struct {{ __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, __u32); __type(value, __u32); }} drop_len SEC(\".maps\");
SEC(\"xdp\") int by_len(struct xdp_md *ctx) {{
    __u32 k = 0;
    __u32 *v = bpf_map_lookup_elem(&drop_len, &k);
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (!v) return XDP_ABORTED;
    if (data + 14 > end) return XDP_PASS;
    return (__u32)(end - data) == *v ? XDP_DROP : XDP_PASS;
}}"
    );
    let good = clang::object_file("by_len", &by_len);
    let bad = clang::object_file("unchecked", &format!("{PRELUDE}SEC(\"xdp\") int unchecked(struct xdp_md *ctx) {{ unsigned char *d = (void *)(long)ctx->data; return d[23] == 6 ? XDP_DROP : XDP_PASS; }}"));

    let spec = PipelineSpec {
        stages: vec![tcpdump("udp", "udp", ActionSpec::Count), object_stage("len", &good, ActionSpec::Verdict), tcpdump("tcp", "tcp", ActionSpec::Count)],
        default: DefaultAction::Reflect,
    };
    let p = Pipeline::compile(&spec, &ENV).unwrap();
    let program = &p.stages()[1].source.program;
    assert!(p.stages()[1].verified.is_some(), "object stages are verified");
    let map = program.helpers().maps().by_name("drop_len").expect("map drop_len");
    map.update(&0u32.to_ne_bytes(), &64u32.to_ne_bytes(), 0, 0).unwrap();
    let interp = Interpreter::new(program);
    let packets: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(5).chain([corpus::udp_64(53), vec![0u8; 10]]).collect();
    let mut dropped = 0;
    for (pi, pkt) in packets.iter().enumerate() {
        let (mut a, mut b) = (pkt.clone(), pkt.clone());
        let got = p.run(0, &mut a, 0, 0);
        let want = match interp.run_xdp(&mut b, 0, 0) {
            Ok(1) => Decision::Drop,
            Ok(2) => Decision::Reflect,
            Ok(3) => Decision::Bounce,
            Ok(4) => Decision::Peer,
            _ => Decision::Drop,
        };
        assert_eq!(got.decision, want, "packet {pi}");
        assert_eq!((a, got.window), (b, None), "packet {pi}");
        dropped += (pkt.len() == 64) as usize;
    }
    assert!(dropped > 0);
    let len_stage = p.totals().nth(1).unwrap().1;
    assert_eq!(len_stage.packets as usize, dropped, "drops counted on the object stage");

    let spec = PipelineSpec { stages: vec![spec.stages[0].clone(), object_stage("bad", &bad, ActionSpec::Verdict)], default: DefaultAction::Drop };
    let e = Pipeline::compile(&spec, &ENV).unwrap_err();
    assert!(e.to_string().starts_with("stage `bad`: verify: instruction"), "{e}");
    assert_eq!(e.stage_id(), Some("bad"));
    let _ = std::fs::remove_dir_all(good.parent().unwrap());
    let _ = std::fs::remove_dir_all(bad.parent().unwrap());
}

#[test]
fn a_stage_that_moves_the_head_moves_it_for_later_stages_and_the_caller() {
    // Strips the Ethernet header of frames long enough; later stages see the IP header first.
    let strip = clang::object_file(
        "strip",
        &format!(
            "{PRELUDE}SEC(\"xdp\") int strip(struct xdp_md *ctx) {{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + 48 > end) return XDP_PASS;
    if (bpf_xdp_adjust_head(ctx, 14)) return XDP_ABORTED;
    if (bpf_xdp_adjust_tail(ctx, -2)) return XDP_ABORTED;
    return XDP_PASS;
}}"
        ),
    );
    let spec = PipelineSpec {
        stages: vec![
            object_stage("strip", &strip, ActionSpec::Verdict),
            tcpdump("v4", "ether[0] & 0xf0 = 0x40", ActionSpec::Sample),
            tcpdump("big", "greater 60", ActionSpec::Count),
        ],
        default: DefaultAction::Reflect,
    };
    let p = Pipeline::compile(&spec, &ENV).unwrap();
    let stages: Vec<Interpreter> = p.stages().iter().map(|s| Interpreter::new(&s.source.program)).collect();
    let packets: Vec<Vec<u8>> = corpus::corpus().into_iter().step_by(3).collect();
    let mut copies = packets.clone();
    let mut refs: Vec<PacketRef<'_>> = copies.iter_mut().map(|c| PacketRef::new(c)).collect();
    let mut outs = vec![Outcome { decision: Decision::Drop, sample: None, window: None }; refs.len()];
    p.run_batch(0, &mut refs, 0, 0, &mut outs);
    let env = sluice::bpf::helpers::RunEnv::new(0);
    let (mut moved, mut matched) = (0, [0u64; 3]);
    for (pi, pkt) in packets.iter().enumerate() {
        // The reference: each stage on the window the stages before it left.
        let mut b = pkt.clone();
        let r = env.run(|| stages[0].run_xdp(&mut b, 0, 0));
        let (start, end) = env.window().map_or((0, b.len()), |w| (w.start, w.end));
        let decision = match r {
            Ok(2) => None,
            Ok(1) | Ok(0) | Err(_) => Some(Decision::Drop),
            Ok(v) => panic!("unexpected verdict {v}"),
        };
        let mut sample = None;
        if decision.is_none() {
            for s in 1..3 {
                if stages[s].run_xdp(&mut b[start..end], 0, 0) != Ok(0) {
                    matched[s] += 1;
                    if s == 1 {
                        sample = Some(1);
                    }
                }
            }
        }
        let window = ((start, end) != (0, pkt.len())).then_some((start as u32, end as u32));
        let want = Outcome { decision: decision.unwrap_or(Decision::Reflect), sample, window };
        assert_eq!(outs[pi], want, "packet {pi} ({} bytes)", pkt.len());
        assert_eq!(refs[pi].raw().1, end - start, "packet {pi}: descriptor length");
        moved += window.is_some() as usize;
    }
    assert!(moved > 10 && matched[1] > 0 && matched[2] > 0, "moved {moved}, matched {matched:?}");
    let totals: Vec<u64> = p.totals().map(|(_, t)| t.packets).collect();
    assert_eq!(&totals[1..3], &matched[1..3]);
    // `run` reports the same.
    let mut one = packets.iter().find(|p| p.len() >= 48).unwrap().clone();
    let len = one.len() as u32;
    assert_eq!(p.run(0, &mut one, 0, 0).window, Some((14, len - 2)));
    let _ = std::fs::remove_dir_all(strip.parent().unwrap());
}
