#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sibyl_chain::abi::fuzz_pull_payload(data);
});
