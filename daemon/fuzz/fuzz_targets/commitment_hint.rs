#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sibyl_node::fuzz::fuzz_commitment_hint(data);
});
