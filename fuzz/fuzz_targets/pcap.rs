//! Any bytes as a pcap file.
#![no_main]
use dataplane::port::pcap::PcapReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = PcapReader::new(data) {
        while let Ok(Some(_)) = r.next_frame() {}
    }
});
