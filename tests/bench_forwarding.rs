//! The forwarding benchmark end to end, briefly: every device forwards, ping parses, the
//! report renders. No timing thresholds (numbers are reported, never asserted). Run as root.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bench::forwarding::{self, Device, Options, POD_A_IP, POD_B_IP};
use bench::testbed::{Cluster, NodeDef, PodDef, RingDef};

fn sluice_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn every_device_forwards_and_the_report_renders() {
    let opts = Options {
        seconds: 1,
        sizes: vec![64],
        quick: true,
        pktgen: true,
    };
    let report = forwarding::run(&sluice_bin(), &opts).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<Device> = report.devices.iter().map(|d| d.device).collect();
    assert_eq!(names, Device::ALL.to_vec());
    for d in &report.devices {
        let name = d.device.name();
        assert_eq!(d.throughput.len(), 1, "{name}");
        let t = &d.throughput[0];
        assert_eq!((t.frame_size, t.wire_bytes), (64, 60), "{name}");
        assert!(t.delivered_pps > 0.0, "{name}: nothing delivered: {t:?}");
        assert!(
            t.offered_pps >= t.sent_pps && t.sent_pps > 0.0,
            "{name}: {t:?}"
        );
        assert!((0.0..=1.0).contains(&t.loss), "{name}: {t:?}");
        let l = &d.latency;
        assert_eq!(l.transmitted, 50, "{name}");
        assert!(l.received > 0, "{name}: {l:?}");
        assert!(
            l.min_ms > 0.0 && l.min_ms <= l.avg_ms && l.avg_ms <= l.max_ms,
            "{name}: {l:?}"
        );
        // Engines have a CPU figure, the kernel has none.
        assert_eq!(
            d.idle_cpu_percent.is_some(),
            d.device != Device::Kernel,
            "{name}"
        );
        assert_eq!(
            t.engine_cpu_percent.is_some(),
            d.device != Device::Kernel,
            "{name}"
        );
        // sluice's own generator: a full-speed trial that delivered, a bounded search, and
        // one-way latency percentiles in order.
        let p = d
            .pktgen
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no pktgen result"));
        assert_eq!(p.searches.len(), 1, "{name}");
        let (size, s) = &p.searches[0];
        assert_eq!(*size, 64, "{name}");
        assert!(s.max.offered > 0 && s.max.delivered > 0, "{name}: {s:?}");
        assert!(
            s.max.rate_pps.is_none(),
            "{name}: the first trial is unpaced"
        );
        assert!(
            s.trials.len() <= 3,
            "{name}: quick search is 1 + 2 trials: {s:?}"
        );
        if let Some(b) = &s.best {
            assert!(b.loss < 0.001, "{name}: {b:?}");
        }
        let l = &p.latency;
        assert!(l.received > 0, "{name}: {l:?}");
        assert!(
            l.p50_us > 0.0 && l.p50_us <= l.p99_us && l.p99_us <= l.max_us,
            "{name}: {l:?}"
        );
        assert_eq!(
            d.engine_rss_kib.is_some(),
            d.device != Device::Kernel,
            "{name}"
        );
    }
    assert_eq!(report.profile, None, "quick mode records no profile");
    assert_eq!(report.crosscheck().len(), 4);

    let md = report.to_markdown();
    for d in Device::ALL {
        // A row may carry the "disturbed by other load" mark (†) after the device name.
        let row = md.lines().any(|l| {
            (l.starts_with(&format!("| {} | ", d.name()))
                || l.starts_with(&format!("| {} † | ", d.name())))
                && l.contains("| 64 B (60 B) |")
        });
        assert!(row, "{md}");
    }
    assert!(md.contains("softirq runs on the sender's core"), "{md}");
    assert!(md.contains("per hop"), "{md}");
    for heading in [
        "Highest rate with loss under 0.1%",
        "Cross-check: trafgen and sluice's generator",
        "One-way latency at 10 kpps",
        "Engine memory",
    ] {
        assert!(md.contains(heading), "{heading}: {md}");
    }
    let j = report.to_json();
    assert_eq!(j["devices"].as_array().map(Vec::len), Some(4));
    assert_eq!(j["devices"][3]["device"], "kernel");
    assert!(j["devices"][0]["throughput"][0]["delivered_pps"].as_f64() > Some(0.0));
    assert!(j["devices"][1]["latency_ms"]["avg"].as_f64() > Some(0.0));
    assert!(j["devices"][0]["pktgen"]["latency"]["p99_us"].as_f64() > Some(0.0));
    assert_eq!(j["crosscheck"].as_array().map(Vec::len), Some(4));
    let figures = report.figures();
    assert_eq!(figures.len(), 2);
    for f in &figures {
        assert_eq!(f.plot.series.len(), 4, "{}", f.file);
        let svg = f
            .plot
            .to_svg()
            .unwrap_or_else(|e| panic!("{}: {e}", f.file));
        assert!(
            svg.contains("sluice-afpacket-v2") && svg.contains("kernel"),
            "{}",
            f.file
        );
    }
}

#[test]
fn bad_options_are_refused_before_anything_is_built() {
    let opts = Options {
        seconds: 1,
        sizes: vec![40],
        quick: true,
        pktgen: false,
    };
    let e = forwarding::run(Path::new("/nonexistent/sluice"), &opts).unwrap_err();
    assert!(e.contains("frame size 40"), "{e}");
    let e = forwarding::run(Path::new("/nonexistent/sluice"), &Options::quick()).unwrap_err();
    assert!(e.contains("/nonexistent/sluice not found"), "{e}");
}

/// The frames trafgen makes from our configuration: right length, addresses, and checksums
/// (trafgen writes them to a pcap file; no network involved).
#[test]
fn trafgen_frames_carry_correct_checksums() {
    let dir = std::env::temp_dir().join(format!("sluice-fwd-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (dst_mac, src_mac) = ([0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]);
    for len in [60usize, 1496, 1514] {
        let conf = dir.join(format!("{len}.trafgen"));
        let pcap = dir.join(format!("{len}.pcap"));
        std::fs::write(
            &conf,
            forwarding::trafgen_config(dst_mac, src_mac, POD_A_IP, POD_B_IP, len),
        )
        .expect("write conf");
        let out = Command::new("trafgen")
            .args([
                "--cpus",
                "1",
                "--no-sock-mem",
                "--notouch-irq",
                "-n",
                "1",
                "--conf",
            ])
            .arg(&conf)
            .arg("--out")
            .arg(&pcap)
            .output()
            .expect("trafgen runs");
        assert!(
            out.status.success(),
            "trafgen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&pcap).expect("pcap written");
        // Classic little-endian pcap: 24-byte file header, 16-byte record header.
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let incl = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
        assert_eq!(incl, len);
        let f = &bytes[40..40 + incl];
        assert_eq!(&f[..6], &dst_mac);
        assert_eq!(&f[6..12], &src_mac);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = &f[14..34];
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, len - 14);
        assert_eq!(ip[9], 17);
        assert_eq!(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]), POD_A_IP);
        assert_eq!(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]), POD_B_IP);
        assert_eq!(
            ones_complement_sum(ip, 0),
            0xffff,
            "IPv4 header checksum ({len})"
        );
        let udp = &f[34..];
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, len - 34);
        assert_ne!(&udp[6..8], &[0, 0], "UDP checksum present");
        // Pseudo-header: addresses, protocol, UDP length.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp[4..6]);
        let partial = ones_complement_sum(&pseudo, 0);
        assert_eq!(
            ones_complement_sum(udp, partial),
            0xffff,
            "UDP checksum ({len})"
        );
    }
    std::fs::remove_dir_all(&dir).expect("remove temp dir");
}

fn ones_complement_sum(data: &[u8], start: u16) -> u16 {
    let mut sum = u32::from(start);
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// `ring: v3` reaches the cluster file for afpacket pods, and only there.
#[test]
fn pod_ring_is_written_to_the_cluster_file() {
    let cluster = Cluster::build_network_only(vec![NodeDef::new(
        "node-1",
        "10.244.1.0/24",
        vec![
            PodDef::afpacket("v3pod", Ipv4Addr::new(10, 244, 1, 10)).with_ring(RingDef::V3),
            PodDef::afpacket("v2pod", Ipv4Addr::new(10, 244, 1, 11)),
            PodDef::tap("tappod", Ipv4Addr::new(10, 244, 1, 12)).with_ring(RingDef::V3),
        ],
    )])
    .expect("network");
    assert_eq!(cluster.pod("v3pod").ring(), RingDef::V3);
    assert_eq!(cluster.pod("v2pod").ring(), RingDef::V2);
    assert_eq!(cluster.pod("tappod").ring(), RingDef::V2);
    let yaml = std::fs::read_to_string(cluster.config_path()).expect("cluster file");
    assert_eq!(yaml.matches("ring: v3").count(), 1, "{yaml}");
    let parsed =
        control::config::load(cluster.config_path()).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let rings: Vec<(String, RingDef)> = parsed.nodes[0]
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.port.ring))
        .collect();
    assert_eq!(
        rings,
        vec![
            ("v3pod".to_string(), RingDef::V3),
            ("v2pod".to_string(), RingDef::V2),
            ("tappod".to_string(), RingDef::V2)
        ]
    );
}
