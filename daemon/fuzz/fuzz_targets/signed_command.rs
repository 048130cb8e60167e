#![no_main]
//! `POST /v1/margin/signed`'s body on arbitrary bytes: the envelope parses
//! or not; a parsed one goes through the engine's checks against a book
//! with one owned account, which refuse it with nothing changed or (only
//! with the owner's real signature, which the fuzzer cannot forge) apply it.
//! Seeds (`seeds/signed_command`): envelopes for this book, valid and
//! near-valid, made and checked by sibyl-margin's
//! `tests/keys.rs::fuzz_seeds_for_the_signed_command_route`.

use sibyl_margin::signed::{CommitteeKey, SignedCommand};
use sibyl_margin::{Command, Engine};
use std::sync::OnceLock;

fn book() -> &'static Engine {
    static BOOK: OnceLock<Engine> = OnceLock::new();
    BOOK.get_or_init(|| {
        let mut e = Engine::default();
        e.set_committee(CommitteeKey::new(vec![7; 32]).expect("committee key"));
        let owner = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .verifying_key()
            .to_bytes();
        e.apply_command(
            1_700_000_000_000,
            &Command::CreateAccount {
                account: 1,
                owner: Some(owner),
            },
        )
        .expect("owned account");
        e
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(env) = serde_json::from_slice::<SignedCommand>(data) else {
        return;
    };
    let mut e = book().clone();
    let root = e.state_root();
    if e.apply_signed(1_700_000_000_001, &env).is_err() {
        assert_eq!(e.state_root(), root, "a refused envelope changed the book");
    }
});
