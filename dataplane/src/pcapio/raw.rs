//! The fast path for large pcap (not pcapng) files: the file is read in multi-megabyte
//! chunks and the records are located in place — one buffer per chunk, no allocation per
//! packet — for the offline filter, whose time is otherwise spent in per-packet bookkeeping.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::PcapIoError;

/// Bytes read per chunk (whole records only; a record cut at the end waits for the next).
const CHUNK_BYTES: usize = 8 << 20;
/// A record longer than this is taken as file corruption rather than a packet.
const MAX_RECORD: u32 = 256 << 20;

/// One record located in a [`Chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    /// Microseconds, or nanoseconds in a nanosecond file.
    pub ts_frac: u32,
    pub orig_len: u32,
    /// Where the captured bytes are in the chunk's buffer.
    pub start: usize,
    pub len: usize,
}

/// Whole records read from the file, and where each one is.
#[derive(Debug, Default)]
pub struct Chunk {
    pub buf: Vec<u8>,
    pub records: Vec<Record>,
}

impl Chunk {
    pub fn data(&self, r: &Record) -> &[u8] {
        &self.buf[r.start..r.start + r.len]
    }
}

/// A pcap file read chunk by chunk.
#[derive(Debug)]
pub struct RawReader {
    file: File,
    path: String,
    swapped: bool,
    pub nanos: bool,
    pub snaplen: u32,
    pub linktype: u32,
    /// Bytes of a record cut at the end of the last chunk.
    pending: Vec<u8>,
    eof: bool,
    read: u64,
    size: u64,
}

impl RawReader {
    /// Opens `path` if it is a pcap file; `Ok(None)` for other formats.
    pub fn open(path: &Path) -> Result<Option<RawReader>, PcapIoError> {
        let p = path.display().to_string();
        let mut file = File::open(path).map_err(|source| PcapIoError::Open { path: p.clone(), source })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut h = [0u8; 24];
        if file.read_exact(&mut h).is_err() {
            return Ok(None);
        }
        let (swapped, nanos) = match [h[0], h[1], h[2], h[3]] {
            [0xd4, 0xc3, 0xb2, 0xa1] => (cfg!(target_endian = "big"), false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (cfg!(target_endian = "little"), false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (cfg!(target_endian = "big"), true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (cfg!(target_endian = "little"), true),
            _ => return Ok(None),
        };
        let word = |i: usize| u32_at(&h, i, swapped);
        Ok(Some(RawReader {
            file,
            path: p,
            swapped,
            nanos,
            snaplen: word(16),
            linktype: word(20) & 0x0fff_ffff,
            pending: Vec::new(),
            eof: false,
            read: 24,
            size,
        }))
    }

    /// Bytes of the file read so far and its size.
    pub fn position(&self) -> (u64, u64) {
        (self.read, self.size)
    }

    /// Fills `chunk` with the next whole records; false when the file had none left.
    pub fn next_chunk(&mut self, chunk: &mut Chunk) -> Result<bool, PcapIoError> {
        chunk.buf.clear();
        chunk.records.clear();
        chunk.buf.append(&mut self.pending);
        while chunk.buf.len() < CHUNK_BYTES && !self.eof {
            let have = chunk.buf.len();
            chunk.buf.resize(CHUNK_BYTES.max(have + 65536), 0);
            let n = self
                .file
                .read(&mut chunk.buf[have..])
                .map_err(|e| PcapIoError::Read { path: self.path.clone(), message: e.to_string() })?;
            chunk.buf.truncate(have + n);
            self.read += n as u64;
            self.eof = n == 0;
        }
        let mut at = 0;
        while chunk.buf.len() - at >= 16 {
            let incl = u32_at(&chunk.buf, at + 8, self.swapped);
            if incl > MAX_RECORD {
                return Err(PcapIoError::Read {
                    path: self.path.clone(),
                    message: format!("record at chunk offset {at} claims {incl} bytes"),
                });
            }
            let end = at + 16 + incl as usize;
            if end > chunk.buf.len() {
                break;
            }
            chunk.records.push(Record {
                ts_sec: u32_at(&chunk.buf, at, self.swapped),
                ts_frac: u32_at(&chunk.buf, at + 4, self.swapped),
                orig_len: u32_at(&chunk.buf, at + 12, self.swapped),
                start: at + 16,
                len: incl as usize,
            });
            at = end;
        }
        self.pending.extend_from_slice(&chunk.buf[at..]);
        chunk.buf.truncate(at);
        if self.eof && !self.pending.is_empty() && chunk.records.is_empty() {
            return Err(PcapIoError::Read {
                path: self.path.clone(),
                message: format!("file ends inside a record ({} bytes left over)", self.pending.len()),
            });
        }
        Ok(!chunk.records.is_empty())
    }
}

fn u32_at(b: &[u8], i: usize, swapped: bool) -> u32 {
    let v = u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if swapped { v.swap_bytes() } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn chunks_hold_every_record_in_order() {
        let path = std::env::temp_dir().join(format!("sluice-raw-{}.pcap", std::process::id()));
        let mut w = super::super::Writer::create(&path, 1, 65535).unwrap();
        // Enough bytes for several chunks, with records straddling chunk ends.
        let n = 30_000u32;
        for i in 0..n {
            let len = 100 + (i as usize * 37) % 1400;
            w.write(Duration::new(u64::from(i), i * 3), len as u32 + 4, &vec![(i % 251) as u8; len]).unwrap();
        }
        w.finish().unwrap();
        let mut r = RawReader::open(&path).unwrap().expect("a pcap file");
        assert_eq!((r.linktype, r.snaplen, r.nanos), (1, 65535, false));
        let mut chunk = Chunk::default();
        let mut seen = 0u32;
        let mut chunks = 0;
        while r.next_chunk(&mut chunk).unwrap() {
            chunks += 1;
            for rec in &chunk.records {
                let len = 100 + (seen as usize * 37) % 1400;
                assert_eq!((rec.ts_sec, rec.ts_frac, rec.orig_len, rec.len), (seen, seen * 3 / 1000, len as u32 + 4, len));
                assert!(chunk.data(rec).iter().all(|&b| b == (seen % 251) as u8));
                seen += 1;
            }
        }
        assert_eq!(r.position().0, r.position().1);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(seen, n);
        assert!(chunks >= 2);
    }
}
