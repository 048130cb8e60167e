#![no_main]
//! `Engine::decode_snapshot` on arbitrary bytes: refused with its typed
//! error, or an engine whose snapshot re-encodes to bytes that decode to
//! the same state root and encode the same again.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(mut engine) = sibyl_margin::Engine::decode_snapshot(data) else {
        return;
    };
    let bytes = engine.encode_snapshot().expect("a decoded engine encodes");
    let mut again =
        sibyl_margin::Engine::decode_snapshot(&bytes).expect("its own snapshot decodes");
    assert_eq!(again.state_root(), engine.state_root(), "root changed on a round trip");
    assert_eq!(again.encode_snapshot().expect("encodes"), bytes, "snapshot bytes drift");
});
