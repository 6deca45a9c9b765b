//! The kube-proxy baseline scenario: the generated rules load into a real kernel and do what
//! they say (iptables-save / nft list show them), and a one-endpoint change applies. No timing
//! thresholds (numbers are reported, never asserted). Run as root.
//!
//! The sweep at 1k and 10k services is `#[ignore]`d (it takes a while); run it with
//! `cargo test --test bench_kube_proxy -- --ignored --nocapture programming_sweep`.

use std::net::Ipv4Addr;

use std::time::Duration;

use bench::kube_proxy::{
    apply, changed, conntrack_cost, iptables_version, programming_times, services, throughput,
    throughput_table, Kind, Traffic,
};
use bench::pktgen::FlowPattern;
use bench::testbed::Netns;

const SINK: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

/// `KP_SERVICES=1,1000,...`, or `default`.
fn env_sizes(default: &[usize]) -> Vec<usize> {
    std::env::var("KP_SERVICES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

/// `KP_KINDS=iptables,iptables-legacy,nftables`, or all kinds.
fn env_kinds() -> Vec<Kind> {
    match std::env::var("KP_KINDS") {
        Ok(v) => Kind::ALL
            .into_iter()
            .filter(|k| v.split(',').any(|x| x.trim() == k.name()))
            .collect(),
        Err(_) => Kind::ALL.to_vec(),
    }
}

fn exec(ns: &Netns, argv: &[&str]) -> String {
    ns.exec_ok(argv).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn iptables_rules_load_and_an_endpoint_change_applies() {
    let svcs = services(10, 2, SINK);
    let ns = Netns::new("kp-ipt").unwrap_or_else(|e| panic!("{e}"));
    let full = Kind::Iptables.rules(&svcs);
    apply(&ns, Kind::Iptables, &full).unwrap_or_else(|e| panic!("{e}"));
    let saved = exec(&ns, &["iptables-save", "-t", "nat"]);
    assert_eq!(
        saved.matches("-j DNAT --to-destination").count(),
        20,
        "{saved}"
    );
    assert_eq!(saved.matches("-A KUBE-SERVICES ").count(), 11, "{saved}");
    assert!(
        saved.contains(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ),
        "{saved}"
    );
    assert!(saved.contains("--probability 0.50000000000"), "{saved}");

    let new = changed(&svcs[4]);
    let change = Kind::Iptables
        .change(&svcs, 4, &new)
        .unwrap_or_else(|| panic!("no service 4"));
    apply(&ns, Kind::Iptables, &change).unwrap_or_else(|e| panic!("{e}"));
    let saved = exec(&ns, &["iptables-save", "-t", "nat"]);
    assert_eq!(
        saved.matches("-j DNAT --to-destination").count(),
        20,
        "{saved}"
    );
    assert_eq!(
        saved.matches("--to-destination 10.244.2.10:10001").count(),
        1,
        "{saved}"
    );
    assert_eq!(
        saved.matches("--to-destination 10.244.2.10:9001").count(),
        9,
        "{saved}"
    );
    assert_eq!(saved.matches("-A KUBE-SERVICES ").count(), 11, "{saved}");
    // Declared chains: 4 top-level + 10 services + 20 endpoints (the stale one deleted).
    let chains = saved.lines().filter(|l| l.starts_with(":KUBE-")).count();
    assert_eq!(chains, 34, "{saved}");

    // A broken input is refused with iptables-restore's message.
    let err = apply(
        &ns,
        Kind::Iptables,
        "*nat\n-A NO-SUCH-CHAIN -j ACCEPT\nCOMMIT\n",
    )
    .err()
    .unwrap_or_default();
    assert!(err.contains("iptables-restore"), "{err}");
}

#[test]
fn nft_rules_load_and_an_endpoint_change_applies() {
    let svcs = services(10, 2, SINK);
    let ns = Netns::new("kp-nft").unwrap_or_else(|e| panic!("{e}"));
    apply(&ns, Kind::Nftables, &Kind::Nftables.rules(&svcs)).unwrap_or_else(|e| panic!("{e}"));
    let map = exec(
        &ns,
        &["nft", "list", "map", "ip", "kube-proxy", "service-ips"],
    );
    for s in &svcs {
        assert!(
            map.contains(&format!("{} . udp . 80 : goto service-", s.vip)),
            "{map}"
        );
    }
    let table = exec(&ns, &["nft", "list", "table", "ip", "kube-proxy"]);
    assert_eq!(table.matches("dnat to 10.244.2.10:").count(), 20, "{table}");
    assert_eq!(
        table.matches("numgen random mod 2 vmap").count(),
        10,
        "{table}"
    );

    let new = changed(&svcs[4]);
    let change = Kind::Nftables
        .change(&svcs, 4, &new)
        .unwrap_or_else(|| panic!("no service 4"));
    apply(&ns, Kind::Nftables, &change).unwrap_or_else(|e| panic!("{e}"));
    let table = exec(&ns, &["nft", "list", "table", "ip", "kube-proxy"]);
    assert_eq!(
        table.matches("dnat to 10.244.2.10:10001").count(),
        1,
        "{table}"
    );
    assert_eq!(
        table.matches("dnat to 10.244.2.10:9001").count(),
        9,
        "{table}"
    );
    assert_eq!(
        table.matches("numgen random mod 2 vmap").count(),
        10,
        "{table}"
    );
    assert!(
        !table.contains("svc-10-96-0-5/udp/p80__10.244.2.10/9001"),
        "{table}"
    );

    let err = apply(&ns, Kind::Nftables, "add rule ip nope nope accept\n")
        .err()
        .unwrap_or_default();
    assert!(err.contains("nft -f -"), "{err}");
}

#[test]
fn programming_times_measure_both_kinds() {
    for kind in Kind::ALL {
        let t = programming_times(kind, 10, 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((t.services, t.endpoints_per_service), (10, 1));
        assert!(t.full_bytes > t.change_bytes && t.change_bytes > 0, "{t:?}");
        assert!(!t.full.is_zero() && !t.change.is_zero(), "{t:?}");
    }
}

/// `KP_SERVICES` (default 1000,10000) and `KP_KINDS` (default: all) as for the throughput
/// sweep.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn programming_sweep() {
    println!("{}", iptables_version().unwrap_or_else(|e| e));
    println!("| kind | services | endpoints/svc | full load | one-endpoint change | full input | change input |");
    println!("|---|---|---|---|---|---|---|");
    for n in env_sizes(&[1_000, 10_000]) {
        for kind in env_kinds() {
            let t = programming_times(kind, n, 1).unwrap_or_else(|e| panic!("{e}"));
            println!(
                "| {} | {} | {} | {:.3} s | {:.3} s | {} KiB | {} KiB |",
                kind.name(),
                t.services,
                t.endpoints_per_service,
                t.full.as_secs_f64(),
                t.change.as_secs_f64(),
                t.full_bytes / 1024,
                t.change_bytes / 1024
            );
        }
    }
}

#[test]
fn every_kind_delivers_through_service_nat() {
    let patterns = [FlowPattern::One, FlowPattern::NewPerPacket];
    for kind in Kind::ALL {
        let rows = throughput(
            kind,
            10,
            Traffic::default(),
            &patterns,
            Duration::from_millis(300),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(r.sent > 1000, "{r:?}");
            // Only DNATed frames reach the sink (the VIP is routed nowhere else), so frames
            // arriving prove the NAT; most must arrive at a low count.
            assert!(r.received > r.sent / 10, "{}: {r:?}", kind.name());
        }
        let ct_one = rows[0].conntrack_count.unwrap_or(0);
        let ct_new = rows[1].conntrack_count.unwrap_or(0);
        assert!(ct_one >= 1 && ct_new > ct_one + 1000, "{rows:?}");
        assert_eq!(rows[1].conntrack.new_entries, ct_new - ct_one, "{rows:?}");
        let table = throughput_table(&rows);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(
            table.contains(&format!(
                "| {} | 10 | 1 | 60 | new per packet |",
                kind.name()
            )),
            "{table}"
        );
    }
}

/// `KP_SERVICES=1,1000,10000` (the default), `KP_KINDS=iptables,iptables-legacy,nftables`
/// (default: all), `KP_FRAME=60` and `KP_ENDPOINTS=1` (the defaults) choose what is measured.
/// The new-flow pattern runs first, so its conntrack growth is not reduced by expiring entries.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn throughput_sweep() {
    let sizes = env_sizes(&[1, 1_000, 10_000]);
    let env = |key: &str, default: usize| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default)
    };
    let traffic =
        Traffic::new(env("KP_FRAME", 60), env("KP_ENDPOINTS", 1)).unwrap_or_else(|e| panic!("{e}"));
    println!("{}", iptables_version().unwrap_or_else(|e| e));
    let mut rows = Vec::new();
    for n in sizes {
        for kind in env_kinds() {
            let r = throughput(
                kind,
                n,
                traffic,
                &[FlowPattern::NewPerPacket, FlowPattern::One],
                Duration::from_secs(2),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            print!(
                "{}",
                throughput_table(&r)
                    .lines()
                    .skip(2)
                    .map(|l| format!("{l}\n"))
                    .collect::<String>()
            );
            rows.extend(r);
        }
    }
    println!("{}", throughput_table(&rows));
}

#[test]
fn frame_size_and_endpoints_reach_the_kernel() {
    // 1000-byte frames to services of 3 endpoints each: DNATed through the 3-way endpoint
    // choice (any endpoint is on the sink), they arrive.
    for kind in [Kind::Nftables, Kind::IptablesLegacy] {
        let traffic = Traffic::new(1000, 3).unwrap_or_else(|e| panic!("{e}"));
        let rows = throughput(
            kind,
            5,
            traffic,
            &[FlowPattern::NewPerPacket],
            Duration::from_millis(300),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
        let r = &rows[0];
        assert_eq!((r.frame_size, r.endpoints_per_service), (1000, 3), "{r:?}");
        assert!(r.sent > 1000 && r.received > r.sent / 10, "{r:?}");
    }
    let err = throughput(
        Kind::Nftables,
        1,
        Traffic::default().endpoints(0),
        &[FlowPattern::One],
        Duration::from_millis(100),
    )
    .err()
    .unwrap_or_default();
    assert!(err.contains("endpoints per service"), "{err}");
}

#[test]
fn conntrack_cost_counts_new_flows_and_their_bytes() {
    let r = conntrack_cost(
        Kind::Nftables,
        10,
        Traffic::default(),
        Duration::from_millis(500),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ct = &r.conntrack;
    println!("{}", throughput_table(std::slice::from_ref(&r)));
    // Every delivered frame was DNATed, so it made (at least) one entry; entries live 30 s.
    assert!(
        ct.new_entries >= r.received.min(ct.max.unwrap_or(u64::MAX)) / 2,
        "{ct:?}"
    );
    assert!(ct.new_entries > 1000 && ct.flows_per_sec > 0.0, "{ct:?}");
    assert!(ct.max.is_some_and(|m| m > 0), "{ct:?}");
    assert_eq!(ct.at_max, ct.count_after >= ct.max, "{ct:?}");
    // struct nf_conn is a few hundred bytes on any 64-bit kernel.
    let size = ct.entry_size.unwrap_or(0);
    assert!((128..=1024).contains(&size), "{ct:?}");
    let slab = ct.slab_bytes_per_flow.unwrap_or(0.0);
    assert!(
        slab > 0.5 * size as f64 && slab < 2.0 * size as f64,
        "{ct:?}"
    );
}
