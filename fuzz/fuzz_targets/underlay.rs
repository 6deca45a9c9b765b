//! Any bytes, arriving on the underlay uplink of a node with a VXLAN or UDP overlay (or on its
//! pod port, with a peer route), through the whole pipeline: decapsulation and its refusals,
//! encapsulation, fragmentation and ICMP errors.
#![no_main]
use std::time::Instant;

use dataplane::config::{OverlayConfig, OverlayMode, Peer, PortConfig, PortKind};
use dataplane::packet::{Batch, Meta};
use dataplane::pipeline::Pipeline;
use dataplane::port::afpacket::RingKind;
use dataplane::route::Route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let mode = if sel & 2 == 0 {
        OverlayMode::Vxlan { vni: 1, port: 8472, udp_checksum: sel & 4 == 0 }
    } else {
        OverlayMode::Udp { port: 8285 }
    };
    let mut p = Pipeline::new(
        [10, 244, 1, 1].into(),
        vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
        &[Route { prefix: [10, 244, 1, 10].into(), len: 32, port: 0, via: None }],
    );
    p.set_overlay(
        &OverlayConfig {
            mode,
            uplink: PortConfig {
                name: "ul0".into(),
                kind: PortKind::AfPacket { ring: RingKind::V2 },
                mac: None,
            },
            local_ip: [192, 168, 100, 1].into(),
            prefix_len: 24,
            underlay_gateway: None,
            vtep_mac: [2, 0x76, 0, 0, 0, 1],
            mtu: 1500,
            ttl: 64,
            peers: vec![Peer {
                node: "node-2".into(),
                underlay_ip: [192, 168, 100, 2].into(),
                pod_cidr: [10, 244, 2, 0].into(),
                pod_prefix_len: 24,
                vtep_mac: [2, 0x76, 0, 0, 0, 2],
            }],
        },
        1,
    );
    let mut batch = Batch::new(1);
    let mut local = Batch::new(8);
    batch.push_copy(frame, Meta { in_port: u16::from(sel & 1), ..Meta::default() });
    p.process(&mut batch, &mut local, Instant::now());
});
