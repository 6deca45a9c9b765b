//! Any bytes as `virtio_net_hdr` + frame: parse, complete the checksum, segment.
#![no_main]
use encap::offload::{complete_checksum, parse_vnet_hdr, segment, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < VNET_HDR_LEN {
        return;
    }
    let (hdr, frame) = data.split_at(VNET_HDR_LEN);
    let Ok(o) = parse_vnet_hdr(hdr) else { return };
    let mut scratch = vec![0u8; 70_000];
    let _ = segment(frame, &o, &mut scratch, |_| {});
    let mut copy = frame.to_vec();
    let _ = complete_checksum(&mut copy, &o);
});
