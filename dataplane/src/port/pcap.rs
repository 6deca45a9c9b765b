//! Classic pcap files (the libpcap format, not pcapng) and a port that replays / records them.
//!
//! [`PcapReader`] accepts both byte orders and both timestamp resolutions (microsecond magic
//! `a1b2c3d4`, nanosecond magic `a1b23c4d`) and only Ethernet captures (`LINKTYPE_ETHERNET`).
//! Malformed input is an [`io::ErrorKind::InvalidData`] error that names what is wrong and the
//! byte offset where it is; it never panics and never allocates more than [`MAX_RECORD`] for a
//! record, whatever the file claims. [`PcapWriter`] writes little-endian microsecond files with
//! snaplen [`MAX_RECORD`] and link type Ethernet, readable by tcpdump, tshark and Wireshark.
//!
//! [`PcapPort`] is a [`Port`] that hands a reader's frames to the engine as received frames
//! and writes every frame the engine transmits (offloads completed in software, so the file
//! holds wire frames) to a writer. It has no file descriptor: an engine polls it on its timer.

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Mac, Port, TxResult};
use crate::packet::{Batch, PortId, BUF_CAP};

/// The largest record accepted or written (the snaplen tcpdump uses by default).
pub const MAX_RECORD: u32 = 262_144;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;

const GLOBAL_HDR_LEN: usize = 24;
const RECORD_HDR_LEN: usize = 16;
const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const MAGIC_NANOS: u32 = 0xa1b2_3c4d;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Read until `buf` is full or the input ends; returns the number of bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// One record of a capture, borrowing the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapRecord<'a> {
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// Length of the frame on the wire (may exceed `data.len()` if the capture truncated it).
    pub orig_len: u32,
    /// The captured bytes, starting with the Ethernet header.
    pub data: &'a [u8],
}

/// Reads Ethernet frames from a classic pcap stream.
pub struct PcapReader<R: Read> {
    r: R,
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    /// Byte offset of the next record header (for error messages).
    offset: u64,
    /// Reused record buffer (grows to the largest record seen, at most [`MAX_RECORD`]).
    buf: Vec<u8>,
}

impl<R: Read> PcapReader<R> {
    /// Read and check the global header.
    pub fn new(mut r: R) -> io::Result<Self> {
        let mut h = [0u8; GLOBAL_HDR_LEN];
        let got = read_full(&mut r, &mut h)?;
        if got < GLOBAL_HDR_LEN {
            return Err(invalid(format!(
                "pcap: file too short for a global header ({got} of {GLOBAL_HDR_LEN} bytes)"
            )));
        }
        let le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let be = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match (le, be) {
            (MAGIC_MICROS, _) => (false, false),
            (MAGIC_NANOS, _) => (false, true),
            (_, MAGIC_MICROS) => (true, false),
            (_, MAGIC_NANOS) => (true, true),
            _ => {
                return Err(invalid(format!(
                    "pcap: bad magic number {be:08x} at byte offset 0 (not a classic pcap file; pcapng is not supported)"
                )))
            }
        };
        let rd = |o: usize| {
            let b = [h[o], h[o + 1], h[o + 2], h[o + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let snaplen = rd(16);
        let network = rd(20);
        // Bits 0..16 are the link type; bit 28 says frames carry a frame check sequence.
        let linktype = network & 0xffff;
        if linktype != LINKTYPE_ETHERNET {
            return Err(invalid(format!(
                "pcap: link type {linktype} is not supported (only {LINKTYPE_ETHERNET}, Ethernet)"
            )));
        }
        if network & (1 << 28) != 0 {
            return Err(invalid(
                "pcap: frames carry a frame check sequence, which is not supported".into(),
            ));
        }
        Ok(PcapReader {
            r,
            big_endian,
            nanos,
            snaplen,
            offset: GLOBAL_HDR_LEN as u64,
            buf: Vec::new(),
        })
    }

    /// The snaplen the file's header declares.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// True if the file's timestamps have nanosecond resolution.
    pub fn is_nanosecond(&self) -> bool {
        self.nanos
    }

    fn u32_at(&self, b: &[u8; RECORD_HDR_LEN], o: usize) -> u32 {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        if self.big_endian {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    /// The next record, borrowing the reader's buffer; `Ok(None)` at the clean end of the file.
    pub fn next_record(&mut self) -> io::Result<Option<PcapRecord<'_>>> {
        let at = self.offset;
        let mut h = [0u8; RECORD_HDR_LEN];
        let got = read_full(&mut self.r, &mut h)?;
        if got == 0 {
            return Ok(None);
        }
        if got < RECORD_HDR_LEN {
            return Err(invalid(format!(
                "pcap: truncated record header at byte offset {at} ({got} of {RECORD_HDR_LEN} bytes)"
            )));
        }
        let sec = self.u32_at(&h, 0);
        let frac = self.u32_at(&h, 4);
        let incl = self.u32_at(&h, 8);
        let orig_len = self.u32_at(&h, 12);
        if incl > MAX_RECORD {
            return Err(invalid(format!(
                "pcap: record at byte offset {at} claims {incl} captured bytes (more than {MAX_RECORD})"
            )));
        }
        let incl = incl as usize;
        self.buf.resize(incl, 0);
        let got = read_full(&mut self.r, &mut self.buf)?;
        if got < incl {
            return Err(invalid(format!(
                "pcap: truncated record at byte offset {at}: {got} of {incl} captured bytes present"
            )));
        }
        self.offset = at + (RECORD_HDR_LEN + incl) as u64;
        let nanos = if self.nanos {
            u64::from(frac)
        } else {
            u64::from(frac) * 1000
        };
        let timestamp = Duration::from_secs(u64::from(sec)) + Duration::from_nanos(nanos);
        Ok(Some(PcapRecord {
            timestamp,
            orig_len,
            data: &self.buf,
        }))
    }

    /// The next frame as an owned vector; `Ok(None)` at the clean end of the file.
    pub fn next_frame(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.next_record()?.map(|r| r.data.to_vec()))
    }
}

/// Writes Ethernet frames as a classic little-endian microsecond pcap stream.
pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Write the global header (version 2.4, snaplen [`MAX_RECORD`], Ethernet).
    pub fn new(mut w: W) -> io::Result<Self> {
        let mut h = [0u8; GLOBAL_HDR_LEN];
        h[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay 0.
        h[16..20].copy_from_slice(&MAX_RECORD.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        w.write_all(&h)?;
        Ok(PcapWriter { w })
    }

    /// Append `frame` stamped with the current time.
    pub fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.write_frame_at(frame, now)
    }

    /// Append `frame` stamped with `timestamp` (since the Unix epoch; seconds saturate at
    /// `u32::MAX`). A frame longer than [`MAX_RECORD`] is truncated to it, with its full length
    /// kept as the original length.
    pub fn write_frame_at(&mut self, frame: &[u8], timestamp: Duration) -> io::Result<()> {
        let sec = u32::try_from(timestamp.as_secs()).unwrap_or(u32::MAX);
        let usec = timestamp.subsec_micros();
        let incl = frame.len().min(MAX_RECORD as usize);
        let orig = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut h = [0u8; RECORD_HDR_LEN];
        h[0..4].copy_from_slice(&sec.to_le_bytes());
        h[4..8].copy_from_slice(&usec.to_le_bytes());
        h[8..12].copy_from_slice(&(incl as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig.to_le_bytes());
        self.w.write_all(&h)?;
        self.w.write_all(&frame[..incl])
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    pub fn get_ref(&self) -> &W {
        &self.w
    }

    /// Flush and return the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A port that replays a capture as received frames and records transmitted frames.
pub struct PcapPort {
    name: String,
    mac: Mac,
    input: Option<PcapReader<Box<dyn Read + Send>>>,
    output: Option<PcapWriter<Box<dyn Write + Send>>>,
    /// The input ended (cleanly or with an error) or there is none.
    exhausted: bool,
    /// A read error met after frames were already appended, reported by the next `rx_burst`.
    pending_err: Option<io::Error>,
    /// Records too large for a packet buffer (skipped), and frames that failed to be written.
    drops: u64,
    scratch: Box<[u8]>,
}

impl PcapPort {
    /// A port named `name` whose own MAC is `mac`. Without `input` it receives nothing; without
    /// `output` it accepts and discards what it transmits (counted as sent, like an unplugged
    /// cable). Transmitted frames are written with offloads completed, one record per wire
    /// frame, and the writer is flushed after every burst.
    pub fn new(
        name: &str,
        mac: Mac,
        input: Option<PcapReader<Box<dyn Read + Send>>>,
        output: Option<PcapWriter<Box<dyn Write + Send>>>,
    ) -> PcapPort {
        PcapPort {
            name: name.to_string(),
            mac,
            exhausted: input.is_none(),
            input,
            output,
            pending_err: None,
            drops: 0,
            scratch: vec![0u8; BUF_CAP].into_boxed_slice(),
        }
    }

    /// True once every frame of the input has been received (or there is no input, or it was
    /// malformed: the error was returned by `rx_burst`).
    pub fn is_exhausted(&self) -> bool {
        self.exhausted && self.pending_err.is_none()
    }

    /// Flush the output writer, if any.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.output {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn rx_burst(&mut self, id: PortId, batch: &mut Batch) -> io::Result<usize> {
        if let Some(e) = self.pending_err.take() {
            return Err(e);
        }
        let mut n = 0;
        while !self.exhausted && !batch.is_full() {
            let Some(input) = self.input.as_mut() else {
                self.exhausted = true;
                break;
            };
            let rec = match input.next_record() {
                Ok(Some(rec)) => rec,
                Ok(None) => {
                    self.exhausted = true;
                    break;
                }
                Err(e) => {
                    self.exhausted = true;
                    if n == 0 {
                        return Err(e);
                    }
                    self.pending_err = Some(e);
                    break;
                }
            };
            let Some(buf) = batch.next_free() else { break };
            if !buf.fill(rec.data) {
                self.drops += 1;
                continue;
            }
            buf.meta.in_port = id;
            batch.commit();
            n += 1;
        }
        Ok(n)
    }

    fn tx_burst(&mut self, batch: &Batch, idx: &[u16]) -> TxResult {
        let mut res = TxResult::default();
        let Some(out) = self.output.as_mut() else {
            // Nowhere to write: the frames are consumed, as by a device without a cable.
            res.sent = idx.len();
            return res;
        };
        for &i in idx {
            let i = usize::from(i);
            if i >= batch.len() {
                res.dropped += 1;
                continue;
            }
            let pkt = batch.get(i);
            let ok = super::send_completed(pkt, &mut self.scratch, |f| out.write_frame(f).is_ok());
            if ok {
                res.sent += 1;
            } else {
                res.dropped += 1;
            }
        }
        if out.flush().is_err() {
            self.drops += 1;
        }
        res
    }

    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn take_device_drops(&mut self) -> u64 {
        std::mem::take(&mut self.drops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Meta;
    use std::io::Cursor;
    use std::sync::{Arc, Mutex};

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| tag.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    /// Build a capture by hand in either byte order / resolution.
    fn capture(
        big_endian: bool,
        nanos: bool,
        linktype: u32,
        records: &[(u32, u32, &[u8])],
    ) -> Vec<u8> {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend_from_slice(&w32(if nanos { MAGIC_NANOS } else { MAGIC_MICROS }));
        out.extend_from_slice(&w16(2));
        out.extend_from_slice(&w16(4));
        out.extend_from_slice(&w32(0));
        out.extend_from_slice(&w32(0));
        out.extend_from_slice(&w32(65535));
        out.extend_from_slice(&w32(linktype));
        for (sec, frac, data) in records {
            out.extend_from_slice(&w32(*sec));
            out.extend_from_slice(&w32(*frac));
            out.extend_from_slice(&w32(data.len() as u32));
            out.extend_from_slice(&w32(data.len() as u32 + 4));
            out.extend_from_slice(data);
        }
        out
    }

    fn err_text<T>(r: io::Result<T>) -> String {
        let Err(e) = r else {
            panic!("expected an error")
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.to_string()
    }

    #[test]
    fn writer_reader_round_trip() {
        let frames: Vec<Vec<u8>> = (0..5u8)
            .map(|t| frame(t, 60 + 100 * usize::from(t)))
            .collect();
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write_frame_at(f, Duration::new(1_700_000_000 + i as u64, 123_456_789))
                .unwrap();
        }
        let bytes = w.into_inner().unwrap();
        // Global header: little-endian microsecond magic, v2.4, snaplen 262144, Ethernet.
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&bytes[4..8], &[2, 0, 4, 0]);
        assert_eq!(&bytes[16..20], &262_144u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &1u32.to_le_bytes());
        let total: usize = frames.iter().map(|f| 16 + f.len()).sum();
        assert_eq!(bytes.len(), 24 + total);

        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        assert!(!r.is_nanosecond());
        assert_eq!(r.snaplen(), MAX_RECORD);
        for (i, f) in frames.iter().enumerate() {
            let rec = r.next_record().unwrap().unwrap();
            assert_eq!(rec.data, &f[..]);
            assert_eq!(rec.orig_len as usize, f.len());
            assert_eq!(
                rec.timestamp,
                Duration::new(1_700_000_000 + i as u64, 123_456_000)
            );
        }
        assert!(r.next_record().unwrap().is_none());
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn write_frame_stamps_current_time() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_frame(&frame(1, 64)).unwrap();
        let mut r = PcapReader::new(Cursor::new(w.into_inner().unwrap())).unwrap();
        let rec = r.next_record().unwrap().unwrap();
        assert!(rec.timestamp.as_secs() >= before.as_secs());
        assert!(rec.timestamp.as_secs() <= before.as_secs() + 60);
        assert_eq!(rec.data, &frame(1, 64)[..]);
    }

    #[test]
    fn reads_all_byte_orders_and_resolutions() {
        let a = frame(1, 64);
        let b = frame(2, 1514);
        for big in [false, true] {
            for nanos in [false, true] {
                let bytes = capture(big, nanos, 1, &[(10, 999, &a), (11, 5, &b)]);
                let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
                assert_eq!(r.is_nanosecond(), nanos);
                assert_eq!(r.snaplen(), 65535);
                let rec = r.next_record().unwrap().unwrap();
                assert_eq!(rec.data, &a[..]);
                assert_eq!(rec.orig_len, 68);
                let want = if nanos {
                    Duration::new(10, 999)
                } else {
                    Duration::new(10, 999_000)
                };
                assert_eq!(rec.timestamp, want, "big={big} nanos={nanos}");
                assert_eq!(r.next_frame().unwrap().unwrap(), b);
                assert!(r.next_frame().unwrap().is_none());
            }
        }
    }

    #[test]
    fn malformed_global_headers_are_errors() {
        assert!(err_text(PcapReader::new(Cursor::new(Vec::new()))).contains("too short"));
        assert!(err_text(PcapReader::new(Cursor::new(vec![0xd4, 0xc3, 0xb2]))).contains("3 of 24"));
        let mut bad = capture(false, false, 1, &[]);
        bad[0] = 0x0a;
        assert!(err_text(PcapReader::new(Cursor::new(bad))).contains("bad magic"));
        // pcapng section header block.
        let mut ng = vec![0x0a, 0x0d, 0x0d, 0x0a];
        ng.resize(28, 0);
        assert!(err_text(PcapReader::new(Cursor::new(ng))).contains("pcapng"));
        let raw_ip = capture(true, false, 101, &[]);
        let msg = err_text(PcapReader::new(Cursor::new(raw_ip)));
        assert!(msg.contains("link type 101"), "{msg}");
        let fcs = capture(false, false, 1 | (1 << 28) | (2 << 26), &[]);
        assert!(err_text(PcapReader::new(Cursor::new(fcs))).contains("frame check sequence"));
    }

    #[test]
    fn malformed_records_are_errors_naming_the_offset() {
        let a = frame(1, 64);
        // Truncated record data: the second record starts at 24 + 16 + 64 = 104.
        let mut bytes = capture(false, false, 1, &[(1, 0, &a), (2, 0, &a)]);
        bytes.truncate(bytes.len() - 10);
        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap(), a);
        let msg = err_text(r.next_frame());
        assert!(
            msg.contains("byte offset 104") && msg.contains("54 of 64"),
            "{msg}"
        );

        // Truncated record header.
        let mut bytes = capture(true, false, 1, &[(1, 0, &a)]);
        bytes.extend_from_slice(&[0, 0, 0]);
        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        assert!(r.next_frame().unwrap().is_some());
        let msg = err_text(r.next_frame());
        assert!(
            msg.contains("truncated record header at byte offset 104"),
            "{msg}"
        );

        // A record claiming more than 256 KiB is refused without reading (or allocating) it.
        let mut bytes = capture(false, false, 1, &[]);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&(MAX_RECORD + 1).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        let msg = err_text(r.next_frame());
        assert!(
            msg.contains("byte offset 24") && msg.contains("262145"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        // A tiny deterministic generator: every prefix and many byte flips of a valid file.
        let a = frame(3, 100);
        let good = capture(false, true, 1, &[(1, 2, &a), (3, 4, &a)]);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for cut in 0..good.len() {
            let _ = PcapReader::new(Cursor::new(good[..cut].to_vec()))
                .map(|mut r| while let Ok(Some(_)) = r.next_frame() {});
        }
        for _ in 0..2000 {
            let mut b = good.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % b.len();
                b[pos] = (seed >> 32) as u8;
            }
            if let Ok(mut r) = PcapReader::new(Cursor::new(b)) {
                while let Ok(Some(_)) = r.next_frame() {}
            }
        }
    }

    /// A `Write` that appends to a shared vector, so the test can look at what a port wrote.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn port_replays_input_in_bursts_and_records_output() {
        let frames: Vec<Vec<u8>> = (0..7u8).map(|t| frame(t, 60 + usize::from(t))).collect();
        let recs: Vec<(u32, u32, &[u8])> = frames.iter().map(|f| (1, 0, &f[..])).collect();
        let input = PcapReader::new(
            Box::new(Cursor::new(capture(false, false, 1, &recs))) as Box<dyn Read + Send>
        )
        .unwrap();
        let sink = Shared::default();
        let output = PcapWriter::new(Box::new(sink.clone()) as Box<dyn Write + Send>).unwrap();
        let mut port = PcapPort::new("cap0", [2, 0, 0, 0, 0, 9], Some(input), Some(output));
        assert_eq!(port.name(), "cap0");
        assert_eq!(port.mac(), [2, 0, 0, 0, 0, 9]);
        assert_eq!(port.raw_fd(), None);
        assert!(!port.is_exhausted());

        let mut got = Vec::new();
        let mut batch = Batch::new(3);
        let mut bursts = Vec::new();
        loop {
            batch.clear();
            let n = port.rx_burst(4, &mut batch).unwrap();
            if n == 0 {
                break;
            }
            bursts.push(n);
            for b in batch.iter() {
                assert_eq!(b.meta.in_port, 4);
                got.push(b.data().to_vec());
            }
        }
        assert_eq!(bursts, vec![3, 3, 1]);
        assert_eq!(got, frames);
        assert!(port.is_exhausted());

        // Transmit frames 1 and 0 of a batch, plus a bad index.
        let mut batch = Batch::new(2);
        batch.push_copy(&frames[5], Meta::default());
        batch.push_copy(&frames[6], Meta::default());
        assert_eq!(
            port.tx_burst(&batch, &[1, 0, 7]),
            TxResult {
                sent: 2,
                dropped: 1
            }
        );
        let written = sink.0.lock().unwrap().clone();
        let mut r = PcapReader::new(Cursor::new(written)).unwrap();
        assert_eq!(r.next_frame().unwrap().unwrap(), frames[6]);
        assert_eq!(r.next_frame().unwrap().unwrap(), frames[5]);
        assert!(r.next_frame().unwrap().is_none());
    }

    #[test]
    fn port_reports_malformed_input_once_after_good_frames() {
        let a = frame(1, 64);
        let mut bytes = capture(false, false, 1, &[(1, 0, &a), (1, 0, &a)]);
        bytes.truncate(bytes.len() - 1);
        let input = PcapReader::new(Box::new(Cursor::new(bytes)) as Box<dyn Read + Send>).unwrap();
        let mut port = PcapPort::new("cap0", [2, 0, 0, 0, 0, 9], Some(input), None);
        let mut batch = Batch::new(8);
        assert_eq!(port.rx_burst(0, &mut batch).unwrap(), 1);
        assert!(!port.is_exhausted());
        let e = port.rx_burst(0, &mut batch).unwrap_err();
        assert!(
            e.to_string()
                .contains("truncated record at byte offset 104"),
            "{e}"
        );
        assert!(port.is_exhausted());
        assert_eq!(port.rx_burst(0, &mut batch).unwrap(), 0);
    }

    #[test]
    fn port_without_input_is_exhausted() {
        let mut port = PcapPort::new("cap0", [2, 0, 0, 0, 0, 9], None, None);
        assert!(port.is_exhausted());
        let mut batch = Batch::new(2);
        assert_eq!(port.rx_burst(0, &mut batch).unwrap(), 0);
        batch.push_copy(&frame(1, 60), Meta::default());
        assert_eq!(
            port.tx_burst(&batch, &[0]),
            TxResult {
                sent: 1,
                dropped: 0
            }
        );
    }
}
