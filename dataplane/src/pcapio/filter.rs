//! Offline filtering, `tcpdump -r in -w out EXPR` with the sluice JIT: packets are read in
//! chunks, each chunk is filtered in parallel with rayon while the next one is read, and the
//! matches are written in their original order.
//!
//! A classic filter (tcpdump expression, classic BPF) matches when it returns non-zero, as
//! in libpcap; an eBPF filter matches when it returns XDP_PASS. Each run gets a private copy
//! of the packet (an eBPF filter may write to it), so the output is the input's bytes. The
//! classic `len` is the captured length: a capture truncated by its snap length may match
//! `len`/`greater`/`less` differently from libpcap, which uses the wire length.

use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::bpf::jit::{JitError, JitProgram};
use crate::bpf::source::Compiled;
use crate::bpf::{Exec, Verdict};

use super::raw::{Chunk, RawReader};
use super::{LINKTYPE_ETHERNET, Packet, PcapIoError, Reader, Writer};

/// Packets filtered per parallel step.
const CHUNK: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(transparent)]
    Io(#[from] PcapIoError),
    #[error("jit: {0}")]
    Jit(#[from] JitError),
    #[error("{path}: link type {linktype} is not Ethernet; filters are compiled for Ethernet frames")]
    LinkType { path: String, linktype: u32 },
}

/// A compiled filter ready to run on many threads.
#[derive(Debug)]
pub struct Matcher {
    jit: JitProgram,
    classic: bool,
}

impl Matcher {
    pub fn new(compiled: &Compiled) -> Result<Matcher, JitError> {
        Ok(Matcher { jit: JitProgram::compile(&compiled.program)?, classic: compiled.is_classic() })
    }

    /// Whether the filter accepts `packet`, run on `scratch` (a copy). A faulting run does not
    /// match (the kernel would abort the packet).
    #[inline]
    pub fn matches(&self, packet: &[u8], scratch: &mut Vec<u8>) -> bool {
        scratch.clear();
        scratch.extend_from_slice(packet);
        match self.jit.run_xdp(scratch, 0, 0) {
            Ok(r0) if self.classic => r0 != 0,
            Ok(r0) => Verdict::from_r0(r0) == Verdict::Pass,
            Err(_) => false,
        }
    }
}

/// What a filter run did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FilterStats {
    pub read: u64,
    pub matched: u64,
    #[serde(serialize_with = "secs")]
    pub elapsed: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl FilterStats {
    pub fn packets_per_sec(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Filters `input` into `output` (pcap, tcpdump's header choices). `progress(done, total)`
/// is called with file bytes after each chunk. pcap files take the chunked fast path
/// ([`super::raw`]); pcapng files are read packet by packet.
pub fn filter_file(
    input: &Path,
    output: &Path,
    matcher: &Matcher,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FilterStats, FilterError> {
    match RawReader::open(input)? {
        Some(raw) => filter_raw(raw, input, output, matcher, progress),
        None => filter_packets(input, output, matcher, progress),
    }
}

fn filter_raw(
    mut reader: RawReader,
    input: &Path,
    output: &Path,
    matcher: &Matcher,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FilterStats, FilterError> {
    let start = Instant::now();
    if reader.linktype != LINKTYPE_ETHERNET {
        return Err(FilterError::LinkType { path: input.display().to_string(), linktype: reader.linktype });
    }
    let mut writer = Writer::create(output, reader.linktype, reader.snaplen)?;
    let mut stats = FilterStats { read: 0, matched: 0, elapsed: Duration::ZERO };
    let (mut current, mut next) = (Chunk::default(), Chunk::default());
    let mut more = reader.next_chunk(&mut current)?;
    let mut verdicts = Vec::new();
    while more {
        let (read_next, ()) = rayon::join(
            || reader.next_chunk(&mut next),
            || {
                current
                    .records
                    .par_iter()
                    .with_min_len(256)
                    .map_init(|| Vec::with_capacity(2048), |scratch, r| matcher.matches(current.data(r), scratch))
                    .collect_into_vec(&mut verdicts)
            },
        );
        for (r, &keep) in current.records.iter().zip(&verdicts) {
            if keep {
                // libpcap reads nanosecond files as microseconds, truncating.
                let usec = if reader.nanos { r.ts_frac / 1000 } else { r.ts_frac };
                writer.write_raw(r.ts_sec, usec, r.orig_len, current.data(r))?;
                stats.matched += 1;
            }
        }
        stats.read += current.records.len() as u64;
        let (done, total) = reader.position();
        progress(done, total);
        more = read_next?;
        std::mem::swap(&mut current, &mut next);
    }
    writer.finish()?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

fn filter_packets(
    input: &Path,
    output: &Path,
    matcher: &Matcher,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<FilterStats, FilterError> {
    let start = Instant::now();
    let mut reader = Reader::open(input)?;
    let info = reader.info();
    if info.linktype != LINKTYPE_ETHERNET {
        return Err(FilterError::LinkType { path: input.display().to_string(), linktype: info.linktype });
    }
    let mut writer = Writer::create(output, info.linktype, info.snaplen)?;
    let mut stats = FilterStats { read: 0, matched: 0, elapsed: Duration::ZERO };
    let mut current = Vec::with_capacity(CHUNK);
    let mut next = Vec::with_capacity(CHUNK);
    let mut more = reader.read_chunk(&mut current, CHUNK)?;
    let mut verdicts = Vec::with_capacity(CHUNK);
    loop {
        // Filter this chunk on the pool while this thread reads the next one.
        let (read_next, ()) = rayon::join(
            || if more { reader.read_chunk(&mut next, CHUNK) } else { next.clear(); Ok(false) },
            || filter_chunk(matcher, &current, &mut verdicts),
        );
        for (p, &keep) in current.iter().zip(&verdicts) {
            if keep {
                writer.write(p.ts, p.orig_len, &p.data)?;
            }
        }
        stats.read += current.len() as u64;
        stats.matched += verdicts.iter().filter(|&&k| k).count() as u64;
        let (done, total) = reader.position();
        progress(done, total);
        if current.is_empty() {
            break;
        }
        more = read_next?;
        std::mem::swap(&mut current, &mut next);
    }
    writer.finish()?;
    stats.elapsed = start.elapsed();
    Ok(stats)
}

fn filter_chunk(matcher: &Matcher, packets: &[Packet], verdicts: &mut Vec<bool>) {
    packets
        .par_iter()
        .with_min_len(256)
        .map_init(|| Vec::with_capacity(2048), |scratch, p| matcher.matches(&p.data, scratch))
        .collect_into_vec(verdicts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::source::{Format, compile_text};

    #[test]
    fn classic_and_ebpf_filters_decide_like_their_kind() {
        let udp = compile_text("udp", Format::Tcpdump).unwrap();
        let m = Matcher::new(&udp).unwrap();
        let mut frame = vec![0u8; 60];
        frame[12] = 0x08;
        frame[14] = 0x45;
        frame[23] = 17;
        let mut scratch = Vec::new();
        assert!(m.matches(&frame, &mut scratch));
        frame[23] = 6;
        assert!(!m.matches(&frame, &mut scratch));
        assert!(!m.matches(&frame[..10], &mut scratch));
        let pass = compile_text("r0 = 2\nexit", Format::Asm).unwrap();
        assert!(Matcher::new(&pass).unwrap().matches(&frame, &mut scratch));
        let drop = compile_text("r0 = 1\nexit", Format::Asm).unwrap();
        assert!(!Matcher::new(&drop).unwrap().matches(&frame, &mut scratch));
    }
}
