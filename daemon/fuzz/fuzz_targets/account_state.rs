#![no_main]
//! `AccountState::decode` (the proof route's leaf preimage, what `sibyl
//! verify` reads) on arbitrary bytes: refused, or exactly the bytes it
//! re-encodes to (one preimage per account state).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(state) = sibyl_margin::state_root::AccountState::decode(data) {
        assert_eq!(state.encode(), data, "non-canonical leaf preimage accepted: {state:?}");
    }
});
