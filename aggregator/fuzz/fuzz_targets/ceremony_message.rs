#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sibyl_aggregator::fuzz::fuzz_ceremony_message(data);
});
