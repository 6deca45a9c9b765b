//! A minimal classic-pcap reader and writer for the tests (LINKTYPE_ETHERNET, microsecond
//! timestamps, either byte order on read).
#![allow(dead_code)]

use std::path::Path;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const LINKTYPE_ETHERNET: u32 = 1;

/// Reads every record of a classic pcap file (Ethernet link type).
pub fn read(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&b).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a classic pcap file image.
pub fn parse(b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if b.len() < 24 {
        return Err("shorter than a pcap header".into());
    }
    let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let little = if le == MAGIC_US || le == MAGIC_NS {
        true
    } else if be == MAGIC_US || be == MAGIC_NS {
        false
    } else {
        return Err(format!("bad pcap magic {le:#x}"));
    };
    let u32_at = |at: usize| -> u32 {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    if u32_at(20) != LINKTYPE_ETHERNET {
        return Err(format!("link type {} is not Ethernet", u32_at(20)));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < b.len() {
        if at + 16 > b.len() {
            return Err(format!("record header cut at {at}"));
        }
        let incl = u32_at(at + 8) as usize;
        let orig = u32_at(at + 12) as usize;
        if incl != orig {
            return Err(format!("record at {at} was truncated by the capture"));
        }
        let start = at + 16;
        let end = start + incl;
        if end > b.len() {
            return Err(format!("record at {at} cut short"));
        }
        out.push(b[start..end].to_vec());
        at = end;
    }
    Ok(out)
}

/// Writes frames as a little-endian microsecond pcap file (timestamps 1 ms apart).
pub fn write(path: &Path, frames: &[&[u8]]) {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC_US.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        let len = f.len() as u32;
        b.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        b.extend_from_slice(&(i as u32 * 1000).to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
