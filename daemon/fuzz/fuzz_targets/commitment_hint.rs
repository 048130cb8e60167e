#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sibyl::fuzz::fuzz_commitment_hint(data);
});
