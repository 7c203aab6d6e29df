//! The kernel live-frames transmit engine: a fast frame source for tests, benches and
//! `sluice gen --engine live`.
//!
//! `gen_tx` (programs/xdp/gen.bpf.c) returns XDP_TX; running it with BPF_PROG_RUN and
//! BPF_F_TEST_XDP_LIVE_FRAMES makes the kernel build `repeat` copies of a template frame
//! in a page pool and transmit each one out of the context's ingress interface — no socket,
//! no skb, no copy from userspace per frame. On veth the frame appears on the peer, which
//! must run a native XDP program (the dataplane's steering program, or an [`XdpSink`]).
//! `gen_stamp` does the same and also writes the measurement stamp (sequence number and
//! `bpf_ktime_get_ns` time) into each frame and varies one 16-bit flow field, fixing the
//! checksum, so live frames can be measured like the AF_XDP engine's.
//!
//! The syscall resolves the ingress interface in the *calling thread's* network namespace,
//! so a [`LiveSender`] remembers the namespace it was created in and refuses to send from
//! any other: traffic never leaves the namespace the caller meant.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use super::LoadgenError;
use super::traffic::Template;

/// The XDP programs of the engine, compiled by build.rs.
static GEN_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gen.bpf.o"));

/// Frames the kernel builds per page-pool batch (its maximum is 256; 64 is NAPI's weight
/// and measured as fast here).
const LIVE_BATCH: u32 = 64;
/// Every BPF_PROG_RUN call in live-frames mode costs about 25 ms of fixed set-up and
/// teardown on kernel 6.18 (measured: 1,000 frames per call give 0.04 Mpps, 16 M per call
/// 12 Mpps), so [`LiveSender::flood`] starts at this many frames per call...
pub const FLOOD_MIN_CHUNK: u32 = 1 << 20;
/// ...and doubles the count while a call takes less than this, so the fixed cost stays a few
/// percent while a stop request is still seen within about half a second.
const FLOOD_CALL_TARGET: Duration = Duration::from_millis(200);
const FLOOD_MAX_CHUNK: u32 = 1 << 26;
/// Time's worth of frames a paced live-frames call sends.
pub const PACED_CALL: Duration = Duration::from_millis(100);
/// Size of `struct xdp_md` (six u32 fields).
const XDP_MD_LEN: usize = 24;
/// `gen_stamp` reads the clock on the frames whose sequence number is a multiple of this
/// (`STAMP_TIME_EVERY` in gen.bpf.c) and stamps the frames in between with that reading. The
/// program cannot tell one BPF_PROG_RUN call from the next, so a call that ended between two
/// readings would leave the next call's first frames with the previous call's time — a whole
/// pacing interval (100 ms) of false latency. Every call but a sender's last therefore ends on
/// a multiple of it (see [`call_size`]).
pub const STAMP_TIME_EVERY: u64 = 64;

/// How `gen_stamp` varies flows: it sets the 16-bit field at `offset` (big-endian) to
/// `base + seq % count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveFlows {
    pub offset: usize,
    pub base: u16,
    pub count: u32,
}

/// Transmits copies of one frame out of an interface at kernel speed (live frames).
///
/// Create and use it on a thread inside the sender's network namespace (e.g. within
/// [`crate::testbed::netns::Netns::run_in`]).
#[derive(Debug)]
pub struct LiveSender {
    /// Owns the loaded program; the kernel unloads it when this drops.
    ebpf: Ebpf,
    program: &'static str,
    ifname: String,
    frame: Vec<u8>,
    ctx: [u8; XDP_MD_LEN],
    netns: PathBuf,
    /// Frames the program has run on (sent or previewed): its sequence counter.
    frames_run: AtomicU64,
}

/// Frames for a call of about `want` frames after `done` have been run, chosen so the call
/// ends on a multiple of [`STAMP_TIME_EVERY`]: the nearest such end at or below `done + want`,
/// or the next one above `done` when that is none (at least 1 frame, at most `want + 63`).
pub fn call_size(done: u64, want: u64) -> u64 {
    let end = done.saturating_add(want.max(1));
    let down = end - end % STAMP_TIME_EVERY;
    if down > done { down - done } else { STAMP_TIME_EVERY - done % STAMP_TIME_EVERY }
}

impl LiveSender {
    /// Loads `gen_tx` and prepares `frame` (a whole Ethernet frame, FCS excluded) for
    /// transmission out of `ifname`.
    pub fn new(ifname: &str, frame: &[u8]) -> Result<Self, LoadgenError> {
        if frame.len() < 14 {
            return Err(LoadgenError::Frame {
                len: frame.len(),
                reason: "shorter than an ethernet header",
            });
        }
        let ebpf = Ebpf::load(GEN_OBJ)?;
        Self::with_program(ebpf, "gen_tx", ifname, frame)
    }

    /// Loads `gen_stamp` for `template` (a frame set's template: zero stamp at its end) sending
    /// as stream `stream`, varying `flows` if given. Sequence numbers start at 0.
    pub fn stamped(
        ifname: &str,
        template: &Template,
        stream: u8,
        flows: Option<LiveFlows>,
    ) -> Result<Self, LoadgenError> {
        let frame = &template.bytes;
        let bad = |reason| LoadgenError::Frame { len: frame.len(), reason };
        let stamp_off = frame
            .len()
            .checked_sub(super::stamp::STAMP_LEN)
            .ok_or(bad("shorter than the stamp"))?;
        let u32_of = |v: usize| u32::try_from(v).map_err(|_| bad("too long"));
        let stamp_off = u32_of(stamp_off)?;
        let (csum_off, csum_odd, csum_udp) = match template.fix {
            Some(f) => (u32_of(f.field)?, u8::from(f.odd), u8::from(f.udp)),
            None => (0, 0, 0),
        };
        let (flow_off, flow_count, flow_base) = match flows {
            Some(f) if f.count > 1 => {
                if f.offset + 2 > frame.len() {
                    return Err(bad("flow field beyond the frame"));
                }
                (u32_of(f.offset)?, f.count, f.base)
            }
            _ => (0, 1, 0),
        };
        let ebpf = EbpfLoader::new()
            .override_global("stamp_off", &stamp_off, true)
            .override_global("csum_off", &csum_off, true)
            .override_global("csum_odd", &csum_odd, true)
            .override_global("csum_udp", &csum_udp, true)
            .override_global("flow_off", &flow_off, true)
            .override_global("flows", &flow_count, true)
            .override_global("flow_base", &flow_base, true)
            .override_global("stream", &stream, true)
            .load(GEN_OBJ)?;
        Self::with_program(ebpf, "gen_stamp", ifname, frame)
    }

    fn with_program(
        mut ebpf: Ebpf,
        program: &'static str,
        ifname: &str,
        frame: &[u8],
    ) -> Result<Self, LoadgenError> {
        let ifindex = ifindex(ifname)?;
        load_xdp(&mut ebpf, program)?;
        let data_end = u32::try_from(frame.len()).map_err(|_| LoadgenError::Frame {
            len: frame.len(),
            reason: "too long",
        })?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }: the kernel wants data = 0 and data_end = the frame length.
        let mut ctx = [0u8; XDP_MD_LEN];
        ctx[4..8].copy_from_slice(&data_end.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        Ok(LiveSender {
            ebpf,
            program,
            ifname: ifname.to_string(),
            frame: frame.to_vec(),
            ctx,
            netns: current_netns()?,
            frames_run: AtomicU64::new(0),
        })
    }

    /// The interface frames leave through.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Transmits `count` copies of the frame and returns how many were handed to the
    /// interface. Delivery is not confirmed: a full veth ring on the receiving side drops.
    ///
    /// Each call has a fixed cost of about 25 ms (see [`FLOOD_MIN_CHUNK`]) whatever `count`
    /// is: fine for bursts of many thousand frames, useless for pacing with small ones.
    pub fn send(&self, count: u64) -> Result<u64, LoadgenError> {
        self.check_netns()?;
        let mut left = count;
        while left > 0 {
            let chunk = self.next_call(left.min(u64::from(FLOOD_MAX_CHUNK))).min(left);
            self.run(chunk)?;
            left -= chunk;
        }
        Ok(count)
    }

    /// Transmits as fast as the kernel can until `stop` is set; returns the frames sent.
    pub fn flood(&self, stop: &AtomicBool) -> Result<u64, LoadgenError> {
        self.check_netns()?;
        let mut sent = 0u64;
        let mut chunk = u64::from(FLOOD_MIN_CHUNK);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let n = self.next_call(chunk);
            self.run(n)?;
            sent += n;
            if started.elapsed() < FLOOD_CALL_TARGET {
                chunk = (chunk * 2).min(u64::from(FLOOD_MAX_CHUNK));
            }
        }
        Ok(sent)
    }

    /// Transmits `count` frames (or until `limit`/`stop`) following the schedule of `rate`
    /// packets per second (None: as fast as the kernel goes), publishing the running count in
    /// `progress` after every call.
    ///
    /// Each call has a fixed cost of about 25 ms, so pacing is by calls: a paced sender sends
    /// [`PACED_CALL`] worth of frames per call (rounded to a multiple of [`STAMP_TIME_EVERY`],
    /// so at least 64) at the moment the schedule has them due; within a call the kernel sends
    /// back to back. A full-speed sender grows its calls like
    /// [`flood`](Self::flood).
    pub fn send_paced(
        &self,
        rate: Option<(f64, Duration)>,
        limit: super::xsk_tx::Limit,
        stop: &AtomicBool,
        progress: &AtomicU64,
    ) -> Result<super::xsk_tx::SenderReport, LoadgenError> {
        self.check_netns()?;
        let count = limit.count.unwrap_or(u64::MAX);
        let pacer = rate.map(|(pps, ramp)| {
            let chunk = (pps * PACED_CALL.as_secs_f64()).clamp(1.0, f64::from(FLOOD_MAX_CHUNK)) as u64;
            super::pace::Pacer::with_batch(pps, ramp, chunk)
        });
        let start = Instant::now();
        let mut sent = 0u64;
        let mut chunk = u64::from(FLOOD_MIN_CHUNK);
        while sent < count && !stop.load(Ordering::Relaxed) {
            let elapsed = start.elapsed();
            if limit.duration.is_some_and(|d| elapsed >= d) {
                break;
            }
            let n = match &pacer {
                Some(p) => {
                    let n = self.next_call(p.batch()).min(count - sent);
                    let due = p.time_of(sent + n);
                    if due > elapsed {
                        // Wait in short steps so a stop or the duration limit is seen.
                        let until = due.min(elapsed + Duration::from_millis(20));
                        super::pace::wait_until(start, until);
                        continue;
                    }
                    n
                }
                None => self.next_call(chunk).min(count - sent),
            };
            let call = Instant::now();
            self.run(n)?;
            sent += n;
            progress.store(sent, Ordering::Relaxed);
            if pacer.is_none() && call.elapsed() < FLOOD_CALL_TARGET {
                chunk = (chunk * 2).min(u64::from(FLOOD_MAX_CHUNK));
            }
        }
        Ok(super::xsk_tx::SenderReport {
            sent,
            elapsed: start.elapsed(),
            behind: 0,
            mode: None,
            ring_full: 0,
            queue: None,
            cpu: None,
        })
    }

    /// Runs the program once on the template without transmitting (plain BPF_PROG_RUN) and
    /// returns the frame it produced: what the next live frame looks like. Advances the
    /// program's sequence number like a sent frame.
    pub fn preview(&self) -> Result<Vec<u8>, LoadgenError> {
        let send_err = |source| LoadgenError::Send { ifname: self.ifname.clone(), source };
        let prog: &Xdp = self
            .ebpf
            .program(self.program)
            .ok_or(LoadgenError::MissingProgram { name: self.program })?
            .try_into()
            .map_err(send_err)?;
        let mut out = vec![0u8; self.frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(&self.frame),
            data_out: Some(&mut out),
            ctx_in: Some(&self.ctx),
            repeat: 1,
            ..TestRunOptions::new()
        };
        let result = prog.test_run(opts).map_err(send_err)?;
        self.frames_run.fetch_add(1, Ordering::Relaxed);
        out.truncate(result.data_size_out as usize);
        Ok(out)
    }

    /// The size of the next call for about `want` frames (see [`call_size`]).
    fn next_call(&self, want: u64) -> u64 {
        call_size(self.frames_run.load(Ordering::Relaxed), want)
    }

    /// One BPF_PROG_RUN call transmitting `repeat` frames (at most [`FLOOD_MAX_CHUNK`] plus
    /// one clock period, well within u32).
    fn run(&self, repeat: u64) -> Result<(), LoadgenError> {
        let repeat = u32::try_from(repeat).map_err(|_| LoadgenError::Frame { len: self.frame.len(), reason: "call repeat beyond u32" })?;
        let send_err = |source| LoadgenError::Send {
            ifname: self.ifname.clone(),
            source,
        };
        let prog: &Xdp = self
            .ebpf
            .program(self.program)
            .ok_or(LoadgenError::MissingProgram { name: self.program })?
            .try_into()
            .map_err(send_err)?;
        let opts = TestRunOptions {
            data_in: Some(&self.frame),
            ctx_in: Some(&self.ctx),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
            ..TestRunOptions::new()
        };
        prog.test_run(opts).map_err(send_err)?;
        self.frames_run.fetch_add(u64::from(repeat), Ordering::Relaxed);
        Ok(())
    }

    fn check_netns(&self) -> Result<(), LoadgenError> {
        let now = current_netns()?;
        if now != self.netns {
            return Err(LoadgenError::WrongNamespace {
                ifname: self.ifname.clone(),
                created: self.netns.clone(),
                now,
            });
        }
        Ok(())
    }
}

/// What an [`XdpSink`] does with the frames it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkAction {
    Drop,
    Pass,
}

/// A trivial native XDP program on the receiving end of a veth: it enables the veth's XDP
/// receive path so live frames arrive, and drops them (to measure the sender) or passes
/// them to the kernel stack. Attached through a bpf_link; detached when dropped.
#[derive(Debug)]
pub struct XdpSink {
    _ebpf: Ebpf,
}

impl XdpSink {
    /// Attaches the sink in native mode to `ifname` in the calling thread's namespace.
    pub fn attach(ifname: &str, action: SinkAction) -> Result<Self, LoadgenError> {
        let name = match action {
            SinkAction::Drop => "sink_drop",
            SinkAction::Pass => "sink_pass",
        };
        let mut ebpf = Ebpf::load(GEN_OBJ)?;
        let prog = load_xdp(&mut ebpf, name)?;
        prog.attach(ifname, XdpMode::Driver)
            .map_err(|source| LoadgenError::Attach {
                program: name,
                ifname: ifname.to_string(),
                source,
            })?;
        Ok(XdpSink { _ebpf: ebpf })
    }
}

fn load_xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoadgenError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadgenError::MissingProgram { name })?
        .try_into()
        .map_err(|source| LoadgenError::Program { name, source })?;
    prog.load()
        .map_err(|source| LoadgenError::Program { name, source })?;
    Ok(prog)
}

/// The interface index of `ifname` in the calling thread's network namespace.
fn ifindex(ifname: &str) -> Result<u32, LoadgenError> {
    super::sys::if_index(ifname).ok_or_else(|| LoadgenError::NoInterface { ifname: ifname.to_string() })
}

/// Identifies the calling thread's network namespace (`net:[inode]`).
fn current_netns() -> Result<PathBuf, LoadgenError> {
    std::fs::read_link("/proc/thread-self/ns/net").map_err(LoadgenError::Namespace)
}

/// A UDP/IPv4 frame with correct checksums, for test and bench traffic.
#[derive(Debug, Clone)]
pub struct UdpFrame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl UdpFrame {
    /// The whole Ethernet frame carrying `payload`.
    pub fn build(&self, payload: &[u8]) -> Result<Vec<u8>, LoadgenError> {
        let builder = etherparse::PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(self.src.ip().octets(), self.dst.ip().octets(), 64)
            .udp(self.src.port(), self.dst.port());
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder
            .write(&mut frame, payload)
            .map_err(|e| LoadgenError::Build(e.to_string()))?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbed::netns::{Netns, privileged};
    use std::net::Ipv4Addr;

    fn frame() -> Vec<u8> {
        UdpFrame {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1000),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2000),
        }
        .build(&[0xab; 18])
        .expect("build frame")
    }

    #[test]
    fn calls_end_on_a_clock_reading_boundary() {
        assert_eq!(call_size(0, 200), 192);
        assert_eq!(call_size(192, 200), 192);
        assert_eq!(call_size(0, 64), 64);
        // Too few to reach a boundary below: up to the next one.
        assert_eq!(call_size(0, 10), 64);
        assert_eq!(call_size(0, 0), 64);
        // Realigns after a preview (one frame run) or any odd call.
        assert_eq!(call_size(1, 200), 191);
        assert_eq!(call_size(63, 1), 1);
        assert_eq!(call_size(100, 1 << 20), (1 << 20) - 36);
        for done in [0u64, 1, 63, 64, 65, 1000, 12_345] {
            for want in [1u64, 63, 64, 65, 200, 4096] {
                let n = call_size(done, want);
                assert_eq!((done + n) % STAMP_TIME_EVERY, 0, "{done} {want}");
                assert!(n >= 1 && n < want + STAMP_TIME_EVERY, "{done} {want} {n}");
            }
        }
    }

    #[test]
    fn udp_frame_is_valid() {
        let f = frame();
        assert_eq!(f.len(), 14 + 20 + 8 + 18);
        let parsed = etherparse::SlicedPacket::from_ethernet(&f).expect("parse");
        let Some(etherparse::NetSlice::Ipv4(ip)) = parsed.net else {
            panic!("not ipv4")
        };
        assert_eq!(ip.header().source_addr(), Ipv4Addr::new(10, 0, 0, 1));
        let hdr = ip.header().to_header();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        let Some(etherparse::TransportSlice::Udp(udp)) = parsed.transport else {
            panic!("not udp")
        };
        assert_eq!(udp.destination_port(), 2000);
        assert_eq!(udp.payload(), &[0xab; 18]);
    }

    /// Two namespaces joined by a veth `tx0` — `rx0`, with `action` on rx0.
    struct Pair {
        tx: Netns,
        rx: Netns,
    }

    fn pair(tag: &str) -> Pair {
        let tx = Netns::new(&format!("{tag}t")).expect("sender namespace");
        let rx = Netns::new(&format!("{tag}r")).expect("receiver namespace");
        // No IPv6: its autoconfiguration traffic would add stray frames to the counts.
        for ns in [&tx, &rx] {
            for key in ["all", "default"] {
                ns.sysctl(&format!("net.ipv6.conf.{key}.disable_ipv6"), "1")
                    .expect("disable ipv6");
            }
        }
        let out = std::process::Command::new("ip")
            .args(["link", "add", "tx0", "netns", tx.name(), "numrxqueues", "1"])
            .args(["numtxqueues", "1", "type", "veth", "peer", "name", "rx0"])
            .args(["netns", rx.name(), "numrxqueues", "1", "numtxqueues", "1"])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tx.ip(&["link", "set", "tx0", "up"]).expect("tx0 up");
        rx.ip(&["link", "set", "rx0", "up"]).expect("rx0 up");
        Pair { tx, rx }
    }

    fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
        let out = ns
            .ip(&["-j", "-s", "link", "show", "dev", ifname])
            .expect("ip -s link");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("rx packets")
    }

    #[test]
    fn live_sender_delivers_exact_count() {
        if !privileged("live_sender_delivers_exact_count") {
            return;
        }
        let p = pair("lg");
        let _sink =
            p.rx.run_in(|| XdpSink::attach("rx0", SinkAction::Drop))
                .expect("enter receiver")
                .expect("attach sink");
        let before = rx_packets(&p.rx, "rx0");
        let sent =
            p.tx.run_in(|| LiveSender::new("tx0", &frame())?.send(100_000))
                .expect("enter sender")
                .expect("send");
        assert_eq!(sent, 100_000);
        // The veth counts frames as its NAPI loop takes them; give it a moment.
        let mut got = 0;
        for _ in 0..50 {
            got = rx_packets(&p.rx, "rx0") - before;
            if got >= sent {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(got, sent);
    }

    #[test]
    fn live_sender_rejects_other_namespace_and_bad_input() {
        if !privileged("live_sender_rejects_other_namespace_and_bad_input") {
            return;
        }
        let p = pair("lgn");
        let sender =
            p.tx.run_in(|| LiveSender::new("tx0", &frame()))
                .expect("enter sender")
                .expect("create sender");
        // This test thread is in another namespace: the sender must refuse.
        assert!(matches!(
            sender.send(1),
            Err(LoadgenError::WrongNamespace { .. })
        ));
        let missing =
            p.tx.run_in(|| LiveSender::new("nope0", &frame()))
                .expect("enter");
        assert!(matches!(missing, Err(LoadgenError::NoInterface { .. })));
        let short =
            p.tx.run_in(|| LiveSender::new("tx0", &[0u8; 10]))
                .expect("enter");
        assert!(matches!(short, Err(LoadgenError::Frame { len: 10, .. })));
    }
}
