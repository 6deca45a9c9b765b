//! Any text as a cluster file: an error or a cluster, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = control::config::parse_str(text, std::path::Path::new("fuzz.yaml"));
    }
});
