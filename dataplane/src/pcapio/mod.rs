//! Capture files: reading pcap and pcapng (format detected from the first bytes), writing
//! pcap the way tcpdump does (microsecond timestamps, the input's snap length and link type),
//! and offline filtering ([`filter`]). Built on the `pcap-file` crate; this module adds
//! pcapng timestamp resolutions (`if_tsresol`, which the crate leaves raw) and one packet
//! type for both formats.

pub mod filter;
pub mod raw;

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, TsResolution};

/// Link type of Ethernet captures (the only one tcpdump expressions are compiled for here).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// tcpdump's default snap length.
pub const DEFAULT_SNAPLEN: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum PcapIoError {
    #[error("open {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("{path}: not a pcap or pcapng file")]
    Format { path: String },
    #[error("read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: packet on interface {interface}, which the file does not describe")]
    Interface { path: String, interface: u32 },
    #[error("write {path}: {message}")]
    Write { path: String, message: String },
}

/// One captured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Time since the Unix epoch.
    pub ts: Duration,
    /// Length on the wire (`data` may be shorter when the capture was truncated).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// What a capture file says about its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureInfo {
    pub linktype: u32,
    pub snaplen: u32,
    pub pcapng: bool,
}

/// Counts the bytes read from the file, for progress.
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Relaxed);
        Ok(n)
    }
}

type Source = BufReader<Counting<File>>;

enum Inner {
    Pcap(PcapReader<Source>),
    /// With the link type and the nanoseconds per timestamp unit of each interface.
    PcapNg(PcapNgReader<Source>, Vec<(u32, TsScale)>),
}

/// How a pcapng interface's timestamp units convert to nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum TsScale {
    /// Units of 10^-n seconds (n ≤ 9): multiply by 10^(9-n).
    Mul(u64),
    /// Finer than a nanosecond: divide.
    Div(u64),
}

impl TsScale {
    /// From `if_tsresol`: high bit clear = 10^-n, set = 2^-n; absent = microseconds.
    fn from_tsresol(r: Option<u8>) -> TsScale {
        match r {
            None => TsScale::Mul(1000),
            Some(r) if r & 0x80 == 0 => {
                let n = u32::from(r);
                if n <= 9 { TsScale::Mul(10u64.pow(9 - n)) } else { TsScale::Div(10u64.saturating_pow(n - 9)) }
            }
            // Binary fractions: approximate with the nearest power-of-ten-free scaling.
            Some(r) => {
                let n = u32::from(r & 0x7f).min(63);
                TsScale::Div(((1u128 << n) / 1_000_000_000).max(1) as u64)
            }
        }
    }

    fn apply(self, units: u128) -> Duration {
        let nanos = match self {
            TsScale::Mul(m) => units.saturating_mul(u128::from(m)),
            TsScale::Div(d) => units / u128::from(d),
        };
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A pcap or pcapng file, read packet by packet.
pub struct Reader {
    inner: Inner,
    path: String,
    info: CaptureInfo,
    read: Arc<AtomicU64>,
    size: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).field("info", &self.info).finish_non_exhaustive()
    }
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, PcapIoError> {
        let p = path.display().to_string();
        let open_err = |source| PcapIoError::Open { path: p.clone(), source };
        let mut magic = [0u8; 4];
        File::open(path).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                PcapIoError::Format { path: p.clone() }
            } else {
                open_err(e)
            }
        })?;
        let file = File::open(path).map_err(open_err)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read = Arc::new(AtomicU64::new(0));
        let src = BufReader::with_capacity(1 << 20, Counting { inner: file, read: Arc::clone(&read) });
        let read_err = |e: pcap_file::PcapError| PcapIoError::Read { path: p.clone(), message: e.to_string() };
        let (inner, info) = match magic {
            [0x0a, 0x0d, 0x0d, 0x0a] => {
                let r = PcapNgReader::new(src).map_err(read_err)?;
                let info = CaptureInfo { linktype: LINKTYPE_ETHERNET, snaplen: DEFAULT_SNAPLEN, pcapng: true };
                (Inner::PcapNg(r, Vec::new()), info)
            }
            [0xa1, 0xb2, 0xc3, 0xd4] | [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let r = PcapReader::new(src).map_err(read_err)?;
                let h = r.header();
                let info = CaptureInfo { linktype: u32::from(h.datalink), snaplen: h.snaplen, pcapng: false };
                (Inner::Pcap(r), info)
            }
            _ => return Err(PcapIoError::Format { path: p }),
        };
        let mut reader = Reader { inner, path: p, info, read, size };
        if reader.info.pcapng {
            reader.read_ng_preamble()?;
        }
        Ok(reader)
    }

    /// pcapng: the link type and snap length come from the first interface block, which
    /// precedes the packets; read blocks until it has been seen.
    fn read_ng_preamble(&mut self) -> Result<(), PcapIoError> {
        let Inner::PcapNg(r, ifaces) = &mut self.inner else { return Ok(()) };
        while ifaces.is_empty() {
            match r.next_block() {
                None => break,
                Some(Err(e)) => return Err(PcapIoError::Read { path: self.path.clone(), message: e.to_string() }),
                Some(Ok(Block::InterfaceDescription(idb))) => {
                    self.info.linktype = u32::from(idb.linktype);
                    self.info.snaplen = if idb.snaplen == 0 { DEFAULT_SNAPLEN } else { idb.snaplen };
                    ifaces.push(describe(&idb));
                }
                Some(Ok(_)) => {}
            }
        }
        Ok(())
    }

    pub fn info(&self) -> CaptureInfo {
        self.info
    }

    /// Bytes of the file read so far and its size, for progress.
    pub fn position(&self) -> (u64, u64) {
        (self.read.load(Relaxed), self.size)
    }

    /// The next packet, `None` at the end of the file.
    pub fn next_packet(&mut self) -> Option<Result<Packet, PcapIoError>> {
        let path = &self.path;
        let read_err = |e: pcap_file::PcapError| PcapIoError::Read { path: path.clone(), message: e.to_string() };
        match &mut self.inner {
            // Raw records: pcap-file refuses a wire length above the snap length, which is what
            // every truncated capture has.
            Inner::Pcap(r) => {
                let nanos = r.header().ts_resolution == TsResolution::NanoSecond;
                Some(r.next_raw_packet()?.map_err(read_err).map(|p| Packet {
                    ts: Duration::from_secs(u64::from(p.ts_sec))
                        + if nanos { Duration::from_nanos(u64::from(p.ts_frac)) } else { Duration::from_micros(u64::from(p.ts_frac)) },
                    orig_len: p.orig_len,
                    data: p.data.into_owned(),
                }))
            }
            Inner::PcapNg(r, ifaces) => loop {
                let block = match r.next_block()? {
                    Ok(b) => b,
                    Err(e) => return Some(Err(read_err(e))),
                };
                match block {
                    Block::InterfaceDescription(idb) => ifaces.push(describe(&idb)),
                    Block::EnhancedPacket(epb) => {
                        let Some(&(_, scale)) = ifaces.get(epb.interface_id as usize) else {
                            return Some(Err(PcapIoError::Interface { path: path.clone(), interface: epb.interface_id }));
                        };
                        // pcap-file hands the raw timestamp units over as nanoseconds.
                        return Some(Ok(Packet {
                            ts: scale.apply(epb.timestamp.as_nanos()),
                            orig_len: epb.original_len,
                            data: epb.data.into_owned(),
                        }));
                    }
                    Block::SimplePacket(spb) => {
                        return Some(Ok(Packet { ts: Duration::ZERO, orig_len: spb.original_len, data: spb.data.into_owned() }));
                    }
                    _ => {}
                }
            },
        }
    }

    /// Reads up to `max` packets into `out` (cleared first); returns false at the end of file.
    pub fn read_chunk(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<bool, PcapIoError> {
        out.clear();
        while out.len() < max {
            match self.next_packet() {
                Some(p) => out.push(p?),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Every remaining packet.
    pub fn read_all(&mut self) -> Result<Vec<Packet>, PcapIoError> {
        let mut out = Vec::new();
        while let Some(p) = self.next_packet() {
            out.push(p?);
        }
        Ok(out)
    }
}

fn describe(idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock) -> (u32, TsScale) {
    let resol = idb.options.iter().find_map(|o| match o {
        InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
        _ => None,
    });
    (u32::from(idb.linktype), TsScale::from_tsresol(resol))
}

/// A pcap file being written: microsecond timestamps, like `tcpdump -w`.
pub struct Writer {
    inner: PcapWriter<BufWriter<File>>,
    path: String,
    snaplen: u32,
    written: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("path", &self.path).field("written", &self.written).finish_non_exhaustive()
    }
}

impl Writer {
    /// Creates `path` with a pcap header for `linktype` and `snaplen`; packets longer than
    /// `snaplen` are truncated to it (their wire length kept).
    pub fn create(path: &Path, linktype: u32, snaplen: u32) -> Result<Writer, PcapIoError> {
        let p = path.display().to_string();
        let file = File::create(path).map_err(|source| PcapIoError::Open { path: p.clone(), source })?;
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen,
            datalink: DataLink::from(linktype),
            ts_resolution: TsResolution::MicroSecond,
            endianness: pcap_file::Endianness::native(),
        };
        let inner = PcapWriter::with_header(BufWriter::with_capacity(1 << 20, file), header)
            .map_err(|e| PcapIoError::Write { path: p.clone(), message: e.to_string() })?;
        Ok(Writer { inner, path: p, snaplen, written: 0 })
    }

    /// Appends a packet (timestamp truncated to microseconds, as libpcap does).
    #[inline]
    pub fn write(&mut self, ts: Duration, orig_len: u32, data: &[u8]) -> Result<(), PcapIoError> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let ts = Duration::from_micros(ts.as_micros() as u64);
        self.inner
            .write_packet(&PcapPacket::new(ts, orig_len, data))
            .map_err(|e| PcapIoError::Write { path: self.path.clone(), message: e.to_string() })?;
        self.written += 1;
        Ok(())
    }

    /// Appends a record given in pcap's own fields (microseconds), for copying records from
    /// another file without converting them.
    #[inline]
    pub fn write_raw(&mut self, ts_sec: u32, ts_usec: u32, orig_len: u32, data: &[u8]) -> Result<(), PcapIoError> {
        let data = &data[..data.len().min(self.snaplen as usize)];
        let raw = pcap_file::pcap::RawPcapPacket {
            ts_sec,
            ts_frac: ts_usec,
            incl_len: data.len() as u32,
            orig_len,
            data: std::borrow::Cow::Borrowed(data),
        };
        self.inner
            .write_raw_packet(&raw)
            .map_err(|e| PcapIoError::Write { path: self.path.clone(), message: e.to_string() })?;
        self.written += 1;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes the file; dropping a writer without calling this may lose buffered packets.
    pub fn finish(self) -> Result<u64, PcapIoError> {
        let path = self.path;
        self.inner
            .into_writer()
            .flush()
            .map_err(|e| PcapIoError::Write { path, message: e.to_string() })?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("sluice-pcapio-{}-{name}", std::process::id()))
    }

    #[test]
    fn pcap_round_trips() {
        let path = tmp("rt.pcap");
        let mut w = Writer::create(&path, LINKTYPE_ETHERNET, 100).unwrap();
        w.write(Duration::new(1_700_000_000, 123_456_789), 60, &[1u8; 60]).unwrap();
        w.write(Duration::new(1_700_000_001, 0), 200, &[2u8; 200]).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.info(), CaptureInfo { linktype: 1, snaplen: 100, pcapng: false });
        let all = r.read_all().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].ts, Duration::new(1_700_000_000, 123_456_000));
        assert_eq!(all[1].orig_len, 200);
        assert_eq!(all[1].data, vec![2u8; 100]);
    }

    #[test]
    fn pcapng_timestamps_follow_if_tsresol() {
        use pcap_file::pcapng::PcapNgWriter;
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
        let path = tmp("ng.pcapng");
        let mut w = PcapNgWriter::new(File::create(&path).unwrap()).unwrap();
        let mut idb = InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0);
        w.write_pcapng_block(idb.clone()).unwrap();
        idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
        w.write_pcapng_block(idb).unwrap();
        // The crate writes `timestamp` in raw units: 5 µs on interface 0, 7 ns on interface 1.
        for (iface, units) in [(0, 5u64), (1, 7)] {
            let epb = EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_nanos(units),
                original_len: 3,
                data: std::borrow::Cow::Owned(vec![9, 9, 9]),
                options: vec![],
            };
            w.write_pcapng_block(epb).unwrap();
        }
        drop(w);
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.info(), CaptureInfo { linktype: 1, snaplen: DEFAULT_SNAPLEN, pcapng: true });
        let all = r.read_all().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(all.iter().map(|p| p.ts).collect::<Vec<_>>(), vec![Duration::from_micros(5), Duration::from_nanos(7)]);
        assert_eq!(all[0].data, vec![9, 9, 9]);
    }

    #[test]
    fn other_files_are_refused() {
        let path = tmp("junk");
        std::fs::write(&path, b"hello world").unwrap();
        let err = Reader::open(&path).unwrap_err().to_string();
        std::fs::write(&path, b"he").unwrap();
        let short = Reader::open(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.ends_with("not a pcap or pcapng file"), "{err}");
        assert!(short.ends_with("not a pcap or pcapng file"), "{short}");
        assert!(Reader::open(Path::new("/nonexistent/x.pcap")).unwrap_err().to_string().starts_with("open /nonexistent/x.pcap: "));
        assert_eq!(TsScale::from_tsresol(Some(3)), TsScale::Mul(1_000_000));
        assert_eq!(TsScale::from_tsresol(Some(12)), TsScale::Div(1000));
    }
}
