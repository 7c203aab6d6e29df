//! Per-CPU maps of an eBPF object run by several workers at once: the maps hold one copy of
//! each value per worker slot, each worker's runs (inside `RunEnv::new(slot).run`) count into
//! their own copy with plain `*v += 1`, as C filters written for the kernel do, and the
//! controller reads every copy in the kernel's per-CPU layout. Run through the fused pipeline's
//! native code (the path workers take) and through the interpreter.
//! No root needed: nothing here touches an interface.

use std::sync::Barrier;
use std::sync::atomic::AtomicU64;

use sluice::bpf::Exec;
use sluice::bpf::helpers::RunEnv;
use sluice::bpf::interp::Interpreter;
use sluice::bpf::jit::PacketRef;
use sluice::bpf::jit::fuse::{self, Entries, FusedPipeline};
use sluice::bpf::maps::{Map, MapTable};
use sluice::bpf::object::Object;
use sluice::pipeline::compile::PipelineCode;
use sluice::pipeline::{
    ActionSpec, Decision, DefaultAction, FilterSpec, Outcome, Pipeline, PipelineSpec, PortEnv, StageAct, StageSpec,
};

mod clang;

/// Counts every packet in a per-CPU array (8-byte values) and a per-CPU hash (4-byte values,
/// whose copies the kernel's lookup lays out 8 bytes apart), without atomics.
const COUNTER: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} by_key SEC(".maps");

SEC("xdp")
int count(struct xdp_md *ctx)
{
	__u32 zero = 0, key = 7, one = 1;
	__u64 *n = bpf_map_lookup_elem(&seen, &zero);
	__u32 *k;

	if (n)
		*n += 1;
	k = bpf_map_lookup_elem(&by_key, &key);
	if (k)
		*k += 1;
	else if (bpf_map_update_elem(&by_key, &key, &one, BPF_NOEXIST) != 0) {
		/* Another worker inserted the key first: count into this worker's copy of it. */
		k = bpf_map_lookup_elem(&by_key, &key);
		if (k)
			*k += 1;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"#;

/// Workers (slots), and packets each one runs.
const WORKERS: usize = 2;
const PER_WORKER: usize = 64 * 300;

/// The counter object, built with clang-19 as a user builds an XDP program.
fn counter_object() -> Vec<u8> {
    clang::build_text("count", COUNTER)
}

fn map<'a>(maps: &'a MapTable, name: &str) -> &'a Map {
    maps.by_name(name).unwrap_or_else(|| panic!("no map {name}"))
}

/// Each slot's copy of the counters, as `(seen, by_key)` per slot.
fn per_slot(maps: &MapTable) -> Vec<(u64, u32)> {
    let seen = map(maps, "seen").get_per_slot(&0u32.to_le_bytes()).unwrap().expect("array index 0");
    let by_key = map(maps, "by_key").get_per_slot(&7u32.to_le_bytes()).unwrap().expect("key 7 inserted");
    seen.iter()
        .zip(&by_key)
        .map(|(s, k)| (u64::from_le_bytes(s[..].try_into().unwrap()), u32::from_le_bytes(k[..].try_into().unwrap())))
        .collect()
}

/// Runs `work(slot)` on `WORKERS` threads started together, each inside its slot's `RunEnv`.
fn on_workers(work: impl Fn(usize) + Sync) {
    let start = Barrier::new(WORKERS);
    std::thread::scope(|s| {
        for slot in 0..WORKERS {
            let (start, work) = (&start, &work);
            s.spawn(move || {
                start.wait();
                RunEnv::new(slot as u32).run(|| work(slot));
            });
        }
    });
}

fn assert_counted(maps: &MapTable, how: &str) {
    let counts = per_slot(maps);
    assert_eq!(counts, vec![(PER_WORKER as u64, PER_WORKER as u32); WORKERS], "{how}: one copy per worker, each exact");
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), (WORKERS * PER_WORKER) as u64, "{how}: total");
    // The kernel's layout: `round_up(value_size, 8)` bytes per slot.
    let raw = map(maps, "by_key").get(&7u32.to_le_bytes()).unwrap().unwrap();
    assert_eq!(raw.len(), 8 * WORKERS, "{how}");
    assert_eq!(&raw[8..12], &(PER_WORKER as u32).to_le_bytes(), "{how}: slot 1's copy at byte 8");
}

/// The fused pipeline's native code (what workers run), as `Pipeline` fuses an object stage
/// whose program decides the verdict.
#[test]
fn fused_pipeline_workers_count_into_their_own_per_cpu_slots() {
    let obj = Object::load(&counter_object(), WORKERS).unwrap();
    let prog = &obj.programs()[0];
    let stages = [fuse::Stage {
        program: &prog.program,
        rule: StageAct::Verdict { redirect: None }.rule(),
        verified: Some(prog.verified.as_ref().expect("the verifier accepts the counter")),
    }];
    let fused = FusedPipeline::compile(&PipelineCode::plan(&stages, Decision::Drop, Entries::Batch)).unwrap();
    on_workers(|_| {
        let counters: Vec<AtomicU64> = (0..fused.counter_words()).map(|_| AtomicU64::new(0)).collect();
        let mut frames = vec![[0u8; 64]; 64];
        let mut exits = [0u64; 64];
        for _ in 0..PER_WORKER / 64 {
            let mut batch: Vec<PacketRef<'_>> = frames.iter_mut().map(|f| PacketRef::new(f)).collect();
            fused.run_batch(&mut batch, 1, 0, &counters, &mut exits);
        }
    });
    assert_counted(obj.maps(), "fused");
}

#[test]
fn interpreter_workers_count_into_their_own_per_cpu_slots() {
    let obj = Object::load(&counter_object(), WORKERS).unwrap();
    let prog = &obj.programs()[0];
    let interp = Interpreter::verified(&prog.program, prog.verified.as_ref().unwrap());
    on_workers(|_| {
        let mut frame = [0u8; 64];
        for _ in 0..PER_WORKER {
            assert_eq!(interp.run_xdp(&mut frame, 1, 0), Ok(2));
        }
    });
    assert_counted(obj.maps(), "interpreter");
}

/// A slot the maps were not created for finds no value (the lookup returns NULL), so a worker
/// the maps do not know about counts nothing rather than into another worker's copy.
#[test]
fn a_slot_beyond_the_maps_sees_no_per_cpu_value() {
    let obj = Object::load(&counter_object(), WORKERS).unwrap();
    let interp = Interpreter::new(&obj.programs()[0].program);
    let mut frame = [0u8; 64];
    RunEnv::new(WORKERS as u32).run(|| assert_eq!(interp.run_xdp(&mut frame, 1, 0), Ok(2)));
    assert_eq!(per_slot_seen(&obj), vec![0; WORKERS]);
    assert!(map(obj.maps(), "by_key").get(&7u32.to_le_bytes()).unwrap().is_none(), "the failed insert left no key");
}

fn per_slot_seen(obj: &Object) -> Vec<u64> {
    let seen = map(obj.maps(), "seen").get_per_slot(&0u32.to_le_bytes()).unwrap().unwrap();
    seen.iter().map(|s| u64::from_le_bytes(s[..].try_into().unwrap())).collect()
}

/// A compiled pipeline whose stage is the counter object, on a port of two workers: the
/// object's per-CPU maps get one copy per worker, and each worker's `run_batch` counts into
/// its own (the pipeline tells the helpers which worker runs).
#[test]
fn pipeline_object_stages_keep_one_per_cpu_copy_per_worker() {
    let dir = std::env::temp_dir().join(format!("sluice-percpu-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("count.o");
    std::fs::write(&path, counter_object()).unwrap();
    let spec = PipelineSpec {
        stages: vec![StageSpec { id: "count".into(), filter: FilterSpec::File { path, format: None }, action: ActionSpec::Verdict }],
        default: DefaultAction::Drop,
    };
    let compiled = Pipeline::compile(&spec, &PortEnv { port: "a", peer: None, workers: WORKERS });
    let _ = std::fs::remove_dir_all(&dir);
    let pipeline = compiled.unwrap();
    let start = Barrier::new(WORKERS);
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (start, pipeline) = (&start, &pipeline);
            s.spawn(move || {
                let mut frames = vec![[0u8; 64]; 64];
                let mut out = [Outcome { decision: Decision::Reflect, sample: None, window: None }; 64];
                start.wait();
                for _ in 0..PER_WORKER / 64 {
                    let mut batch: Vec<PacketRef<'_>> = frames.iter_mut().map(|f| PacketRef::new(f)).collect();
                    pipeline.run_batch(w, &mut batch, 1, w as u32, &mut out);
                }
                assert!(out.iter().all(|o| o.decision == Decision::Drop), "XDP_PASS goes on to the default action");
            });
        }
    });
    assert_counted(pipeline.stages()[0].source.program.helpers().maps(), "pipeline");
}
