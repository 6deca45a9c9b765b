//! tshark as an independent judge of the frames `vxlan::encapsulate` and
//! `udp_encap::encapsulate_ip` build: it must decode the VXLAN header (VNI) and call every
//! outer IPv4 and UDP checksum, and the inner ones, "Good" (or "not present" for a UDP
//! checksum sent as 0). Skipped with a printed note when tshark is not installed.

mod pcap;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use encap::checksum;
use encap::ethernet::{self, ethertype};
use encap::ipv4::{self, protocol};
use encap::udp;
use encap::udp_encap::{self, UdpEncap};
use encap::vxlan::{self, Encap};

/// Wireshark's checksum status values (`proto_checksum_enum_e`).
const BAD: &str = "0";
const GOOD: &str = "1";
const NOT_PRESENT: &str = "3";

fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tshark_fields(frames: &[Vec<u8>], decode_as: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let tmp = TempFile(std::env::temp_dir().join(format!(
        "sl-t-{}-{}.pcap",
        std::process::id(),
        decode_as.replace(['=', '.', ','], "_")
    )));
    let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    pcap::write(&tmp.0, &refs);
    let mut args = vec![
        "-r".to_string(),
        tmp.0.to_string_lossy().into_owned(),
        "-o".into(),
        "udp.check_checksum:TRUE".into(),
        "-o".into(),
        "ip.check_checksum:TRUE".into(),
        "-o".into(),
        "tcp.check_checksum:TRUE".into(),
        "-d".into(),
        decode_as.into(),
        "-T".into(),
        "fields".into(),
        "-E".into(),
        "separator=/t".into(),
    ];
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let out = Command::new("tshark").args(&args).output().expect("tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// An inner IPv4 packet: ICMP echo request, UDP or TCP, with correct checksums.
fn inner_ip(kind: u8, len: usize, seed: u8) -> Vec<u8> {
    let src = Ipv4Addr::new(10, 244, 1, seed);
    let dst = Ipv4Addr::new(10, 244, 2, 7);
    let (proto, l4_hdr) = match kind {
        0 => (protocol::ICMP, 8),
        1 => (protocol::UDP, 8),
        _ => (protocol::TCP, 20),
    };
    let l4_len = l4_hdr + len;
    let mut p = vec![0u8; 20 + l4_len];
    ipv4::Repr {
        src,
        dst,
        protocol: proto,
        ttl: 63,
        ident: u16::from(seed) * 7,
        dont_frag: true,
        payload_len: l4_len as u16,
    }
    .emit(&mut p);
    for (i, b) in p[20 + l4_hdr..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    let l4 = &mut p[20..];
    match kind {
        0 => {
            l4[0] = 8;
            l4[4..8].copy_from_slice(&[0x12, 0x34, 0, seed]);
            let c = checksum::data(l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
        1 => {
            udp::emit_header(l4, 40000 + u16::from(seed), 9999, len as u16);
            udp::Packet::new_checked(&mut l4[..])
                .unwrap()
                .fill_checksum(src, dst);
        }
        _ => {
            l4[0..4].copy_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
            l4[4..8].copy_from_slice(&1000u32.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = 0x18; // PSH ACK
            l4[14..16].copy_from_slice(&[0xff, 0xff]);
            let s =
                checksum::pseudo_v4(src, dst, protocol::TCP, l4.len() as u16) + checksum::sum(l4);
            let c = checksum::fold(s);
            l4[16..18].copy_from_slice(&c.to_be_bytes());
        }
    }
    p
}

fn inner_frame(kind: u8, len: usize, seed: u8) -> Vec<u8> {
    let ip = inner_ip(kind, len, seed);
    let mut f = vec![0u8; 14 + ip.len()];
    ethernet::emit_header(
        &mut f,
        [2, 0, 0, 0, 3, 2],
        [2, 0, 0, 0, 3, 1],
        ethertype::IPV4,
    );
    f[14..].copy_from_slice(&ip);
    f
}

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 1, 2];

#[test]
fn tshark_judges_vxlan_frames() {
    if !have_tshark() {
        eprintln!("SKIP tshark_judges_vxlan_frames: tshark not installed");
        return;
    }
    let mut frames = Vec::new();
    let mut expect = Vec::new();
    let cases = [
        (0u8, 24usize, 1u32, true),
        (0, 24, 1, false),
        (1, 0, 42, true),
        (1, 1, 0x00ab_cdef, true),
        (1, 999, 7, false),
        (2, 0, 1, true),
        (2, 1400, 0x00ff_ffff, true),
        (2, 1401, 2, false),
    ];
    for (i, &(kind, len, vni, udp_checksum)) in cases.iter().enumerate() {
        let inner = inner_frame(kind, len, i as u8 + 1);
        let e = Encap {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            src_ip: Ipv4Addr::new(192, 168, 77, 1),
            dst_ip: Ipv4Addr::new(192, 168, 77, 2),
            dst_port: vxlan::DEFAULT_PORT,
            vni,
            ttl: 64,
            udp_checksum,
        };
        let mut buf = vec![0u8; vxlan::OVERHEAD + inner.len()];
        buf[vxlan::OVERHEAD..].copy_from_slice(&inner);
        let n = vxlan::encapsulate(&mut buf, inner.len(), &e, vxlan::source_port(&inner)).unwrap();
        assert_eq!(n, buf.len());
        frames.push(buf);
        expect.push((vni, udp_checksum, kind));
    }
    // A negative control: the same first frame with one outer UDP checksum bit flipped must be
    // judged bad, or this test could not fail.
    let mut bad = frames[0].clone();
    bad[41] ^= 1;
    frames.push(bad);
    let rows = tshark_fields(
        &frames,
        "udp.port==8472,vxlan",
        &[
            "vxlan.vni",
            "vxlan.flags",
            "ip.checksum.status",
            "udp.checksum.status",
            "icmp.checksum_bad",
            "tcp.checksum.status",
            "_ws.expert.severity",
        ],
    );
    assert_eq!(rows.len(), frames.len(), "{rows:?}");
    let control = &rows[frames.len() - 1];
    assert_eq!(control[3], BAD, "negative control: {control:?}");
    for (row, (vni, udp_checksum, kind)) in rows.iter().zip(expect) {
        let ctx = format!("{row:?} for vni {vni} csum {udp_checksum} kind {kind}");
        assert_eq!(row[0], vni.to_string(), "{ctx}");
        assert_eq!(row[1], "0x0800", "{ctx}"); // the 16 flag bits: I only
                                               // Outer and inner IPv4 header checksums.
        assert_eq!(row[2], format!("{GOOD},{GOOD}"), "{ctx}");
        let outer_udp = if udp_checksum { GOOD } else { NOT_PRESENT };
        match kind {
            1 => assert_eq!(row[3], format!("{outer_udp},{GOOD}"), "{ctx}"),
            _ => assert_eq!(row[3], outer_udp, "{ctx}"),
        }
        if kind == 2 {
            assert_eq!(row[5], GOOD, "{ctx}");
        }
        if kind == 0 {
            assert_eq!(row[4], "", "{ctx}: tshark flags the ICMP checksum");
        }
        // No expert info of any severity (malformed, bad checksum, ...).
        assert_eq!(row.get(6).map(String::as_str).unwrap_or(""), "", "{ctx}");
    }
}

#[test]
fn tshark_judges_udp_mode_frames() {
    if !have_tshark() {
        eprintln!("SKIP tshark_judges_udp_mode_frames: tshark not installed");
        return;
    }
    let mut frames = Vec::new();
    let mut expect = Vec::new();
    for (i, &(kind, len, udp_checksum)) in [(0u8, 56usize, true), (1, 3, false), (2, 1000, true)]
        .iter()
        .enumerate()
    {
        let inner = inner_ip(kind, len, i as u8 + 1);
        let e = UdpEncap {
            src_mac: SRC_MAC,
            dst_mac: DST_MAC,
            src_ip: Ipv4Addr::new(192, 168, 77, 1),
            dst_ip: Ipv4Addr::new(192, 168, 77, 2),
            dst_port: udp_encap::DEFAULT_PORT,
            ttl: 64,
            udp_checksum,
        };
        let mut buf = vec![0u8; udp_encap::OVERHEAD + inner.len()];
        buf[udp_encap::OVERHEAD..].copy_from_slice(&inner);
        let n =
            udp_encap::encapsulate_ip(&mut buf, inner.len(), &e, udp_encap::DEFAULT_PORT).unwrap();
        assert_eq!(n, buf.len());
        frames.push(buf);
        expect.push((udp_checksum, kind));
    }
    // Wireshark has no flannel dissector; "Decode As" IP on the tunnel port decodes the
    // payload as the IPv4 packet it is.
    let rows = tshark_fields(
        &frames,
        "udp.port==8285,ip",
        &[
            "ip.checksum.status",
            "udp.checksum.status",
            "ip.dst",
            "tcp.checksum.status",
            "icmp.checksum_bad",
            "_ws.expert.severity",
        ],
    );
    assert_eq!(rows.len(), frames.len(), "{rows:?}");
    for (row, (udp_checksum, kind)) in rows.iter().zip(expect) {
        let ctx = format!("{row:?} for csum {udp_checksum} kind {kind}");
        assert_eq!(row[0], format!("{GOOD},{GOOD}"), "{ctx}");
        assert_eq!(row[2], "192.168.77.2,10.244.2.7", "{ctx}");
        let outer_udp = if udp_checksum { GOOD } else { NOT_PRESENT };
        match kind {
            1 => assert_eq!(row[1], format!("{outer_udp},{GOOD}"), "{ctx}"),
            _ => assert_eq!(row[1], outer_udp, "{ctx}"),
        }
        if kind == 2 {
            assert_eq!(row[3], GOOD, "{ctx}");
        }
        assert_eq!(row.get(5).map(String::as_str).unwrap_or(""), "", "{ctx}");
    }
}
