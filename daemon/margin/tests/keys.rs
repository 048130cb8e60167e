//! Account keys: commands signed by an account's owner, the authorization
//! of unsigned (operator) commands, and owner and nonce in the state root
//! and the snapshot (docs/MARGIN.md, "Account keys").

use sibyl_margin::fixed::{MONEY_SCALE as M, PRICE_SCALE as P, QTY_SCALE as Q};
use sibyl_margin::signed::public_key;
use sibyl_margin::state_root::{AccountState, verify_account_proof};
use sibyl_margin::*;

const T0: u64 = 1_700_000_000_000;
const OWNER: [u8; 32] = [7; 32];
const STRANGER: [u8; 32] = [9; 32];

/// The committee the test book belongs to (an Ed25519 group key's length).
fn committee() -> CommitteeKey {
    CommitteeKey::new(vec![0xC1; 32]).unwrap()
}

/// Another committee's (a secp256k1 group key's length).
fn other_committee() -> CommitteeKey {
    CommitteeKey::new(vec![0xC2; 33]).unwrap()
}

fn engine() -> Engine {
    let mut e = Engine::default();
    e.set_committee(committee());
    e.apply_command(
        T0,
        &Command::ConfigureFeed(FeedConfig {
            feed: "BTC-USD".into(),
            max_staleness_ms: 60_000,
            max_confidence_ppm: 20_000,
            max_jump_ppm: 200_000,
            average_window: 4,
            rate_ppm: 0,
            grid: ScenarioGrid::default(),
            vol_surface: None,
            vol_scaling: None,
        }),
    )
    .unwrap();
    e.apply_command(
        T0,
        &Command::ConfigureMarket(MarketConfig {
            market: "BTC-PERP".into(),
            feed: "BTC-USD".into(),
            kind: MarketKind::Perpetual,
            initial_ppm: 100_000,
            maintenance_ppm: 50_000,
            growth_ppm_per_million: 0,
            max_rate_ppm: 500_000,
            taker_fee_ppm: 0,
            liquidation_penalty_ppm: 10_000,
            liquidator_share_ppm: 500_000,
            concentration: None,
        }),
    )
    .unwrap();
    e.apply_prices(1, T0 + 1_000, &[("BTC-USD", 50_000 * P, 8, 0)])
        .unwrap();
    // Account 1: owned by OWNER, 10,000 USD. Account 2: operator-managed.
    for (account, owner) in [(1, Some(public_key(&OWNER))), (2, None)] {
        e.apply_command(T0 + 1_000, &Command::CreateAccount { account, owner })
            .unwrap();
        e.apply_command(T0 + 1_000, &deposit(account, 10_000 * M))
            .unwrap();
    }
    e
}

fn deposit(account: u64, amount: i128) -> Command {
    Command::Deposit {
        account,
        asset: "USD".into(),
        amount,
    }
}

fn withdraw(account: u64, amount: i128) -> Command {
    Command::Withdraw {
        account,
        asset: "USD".into(),
        amount,
    }
}

fn signed(secret: &[u8; 32], account: u64, nonce: u64, cmd: &Command) -> SignedCommand {
    SignedCommand::sign(
        secret,
        &committee(),
        account,
        nonce,
        serde_json::to_string(cmd).unwrap(),
    )
}

/// `f` is refused with an error `check` accepts, and the engine's state,
/// snapshot bytes and root are what they were.
fn refused_unchanged(
    e: &mut Engine,
    f: impl FnOnce(&mut Engine) -> Result<Vec<EventRecord>, EngineError>,
    check: impl FnOnce(&EngineError) -> bool,
) {
    let before = e.snapshot();
    let bytes = e.encode_snapshot().unwrap();
    let root = e.state_root();
    let err = f(e).expect_err("must be refused");
    assert!(check(&err), "unexpected error: {err}");
    assert_eq!(e.snapshot(), before);
    assert_eq!(e.encode_snapshot().unwrap(), bytes);
    assert_eq!(e.state_root(), root);
}

#[test]
fn the_owner_signs_a_withdrawal_and_it_applies() {
    let mut e = engine();
    let ev = e
        .apply_signed(T0 + 2_000, &signed(&OWNER, 1, 5, &withdraw(1, 1_000 * M)))
        .unwrap();
    assert!(matches!(ev[0].event, Event::Withdrawn { account: 1, .. }));
    let a = &e.state().accounts[&1];
    assert_eq!((a.cash, a.nonce), (9_000 * M, 5));
    // Nonces need only grow: 6 after 5, then 100.
    for (nonce, cmd) in [
        (
            6,
            Command::Open {
                account: 1,
                market: "BTC-PERP".into(),
                side: Side::Long,
                size: Q / 10,
                margin: MarginMode::Cross,
                price: None,
            },
        ),
        (
            100,
            Command::Close {
                account: 1,
                market: "BTC-PERP".into(),
                size: None,
                price: None,
            },
        ),
    ] {
        e.apply_signed(T0 + 3_000, &signed(&OWNER, 1, nonce, &cmd))
            .unwrap();
        assert_eq!(e.state().accounts[&1].nonce, nonce);
    }
    assert!(e.state().accounts[&1].positions.is_empty());
    assert_eq!(e.state_root(), e.state_root_from_scratch());
}

#[test]
fn forged_replayed_and_misdirected_signed_commands_are_refused_with_nothing_changed() {
    let mut e = engine();
    e.apply_signed(T0 + 2_000, &signed(&OWNER, 1, 5, &withdraw(1, M)))
        .unwrap();
    // A forged signature: one bit flipped.
    let mut forged = signed(&OWNER, 1, 6, &withdraw(1, M));
    forged.signature[3] ^= 1;
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &forged),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    // The command text changed after signing (a larger amount).
    let mut edited = signed(&OWNER, 1, 6, &withdraw(1, M));
    edited.command = serde_json::to_string(&withdraw(1, 5_000 * M)).unwrap();
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &edited),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    // Signed by another key.
    let stranger = signed(&STRANGER, 1, 6, &withdraw(1, M));
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &stranger),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    // Replayed (the same envelope again) and an older nonce.
    let replay = signed(&OWNER, 1, 5, &withdraw(1, M));
    let older = signed(&OWNER, 1, 4, &withdraw(1, M));
    for env in [replay, older] {
        refused_unchanged(
            &mut e,
            |e| e.apply_signed(T0 + 3_000, &env),
            |err| {
                matches!(
                    err,
                    EngineError::StaleNonce {
                        account: 1,
                        current: 5,
                        ..
                    }
                )
            },
        );
    }
    // A signed deposit (money from outside: an operator command).
    let env = signed(&OWNER, 1, 6, &deposit(1, M));
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| matches!(err, EngineError::NotSignable { kind: "deposit" }),
    );
    let env = signed(&OWNER, 1, 6, &Command::FundInsurance { amount: M });
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| matches!(err, EngineError::NotSignable { .. }),
    );
    // The envelope names account 1, the command account 2.
    let env = signed(&OWNER, 1, 6, &withdraw(2, M));
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| {
            matches!(
                err,
                EngineError::AccountMismatch {
                    envelope: 1,
                    command: Some(2)
                }
            )
        },
    );
    // Account 2 has no owner: no signature moves it.
    let env = signed(&OWNER, 2, 1, &withdraw(2, M));
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| matches!(err, EngineError::NoOwner { account: 2 }),
    );
    // Not a command.
    let mut env = signed(&OWNER, 1, 6, &withdraw(1, M));
    env.command = "{\"withdraw\":{}}".into();
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| matches!(err, EngineError::BadSignedCommand { .. }),
    );
    // A valid envelope the command refuses (more than the cash) changes
    // nothing either, the nonce included.
    let env = signed(&OWNER, 1, 6, &withdraw(1, 1_000_000 * M));
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 3_000, &env),
        |err| matches!(err, EngineError::InsufficientBalance { .. }),
    );
    assert_eq!(e.state().accounts[&1].nonce, 5);
}

#[test]
fn the_operator_cannot_move_an_owned_account_but_deposits_into_it() {
    let mut e = engine();
    let moves = [
        withdraw(1, M),
        Command::Open {
            account: 1,
            market: "BTC-PERP".into(),
            side: Side::Long,
            size: Q / 10,
            margin: MarginMode::Cross,
            price: None,
        },
        Command::Close {
            account: 1,
            market: "BTC-PERP".into(),
            size: None,
            price: None,
        },
        Command::AdjustIsolatedMargin {
            account: 1,
            market: "BTC-PERP".into(),
            delta: M,
        },
    ];
    for cmd in &moves {
        refused_unchanged(
            &mut e,
            |e| e.apply_command(T0 + 2_000, cmd),
            |err| matches!(err, EngineError::Unauthorized { account: 1, .. }),
        );
    }
    // Money arriving from outside is still the operator's to credit.
    e.apply_command(T0 + 2_000, &deposit(1, M)).unwrap();
    // The operator-managed account behaves as before: its withdrawal and
    // trade apply unsigned.
    e.apply_command(T0 + 2_000, &withdraw(2, M)).unwrap();
    e.apply_command(
        T0 + 2_000,
        &Command::Open {
            account: 2,
            market: "BTC-PERP".into(),
            side: Side::Short,
            size: Q / 10,
            margin: MarginMode::Cross,
            price: None,
        },
    )
    .unwrap();
    let s = e.state();
    assert_eq!(s.accounts[&1].cash, 10_001 * M);
    assert_eq!(s.accounts[&2].cash, 9_999 * M);
    assert_eq!(s.accounts[&2].nonce, 0);
}

#[test]
fn an_owner_registers_its_own_account() {
    let mut e = engine();
    let key = public_key(&STRANGER);
    let create = Command::CreateAccount {
        account: 3,
        owner: Some(key),
    };
    // Signed by another key than the one it registers: refused.
    let env = signed(&OWNER, 3, 1, &create);
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 2_000, &env),
        |err| matches!(err, EngineError::BadSignature { account: 3 }),
    );
    // Without an owner it is not an owner's command.
    let env = signed(
        &STRANGER,
        3,
        1,
        &Command::CreateAccount {
            account: 3,
            owner: None,
        },
    );
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 2_000, &env),
        |err| matches!(err, EngineError::NotSignable { .. }),
    );
    let ev = e
        .apply_signed(T0 + 2_000, &signed(&STRANGER, 3, 1, &create))
        .unwrap();
    assert!(matches!(
        ev[0].event,
        Event::AccountCreated { account: 3, owner: Some(k) } if k == key
    ));
    let a = &e.state().accounts[&3];
    assert_eq!((a.owner, a.nonce), (Some(key), 1));
    // Once only: the id is taken.
    let again = signed(&STRANGER, 3, 2, &create);
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 2_000, &again),
        |err| matches!(err, EngineError::AccountExists { account: 3 }),
    );
    // A key that is not a curve point (or of small order) is refused, by the
    // operator's route too.
    let weak = Command::CreateAccount {
        account: 4,
        owner: Some([0; 32]),
    };
    refused_unchanged(
        &mut e,
        |e| e.apply_command(T0 + 2_000, &weak),
        |err| matches!(err, EngineError::InvalidOwnerKey { .. }),
    );
}

/// An envelope names the committee it was signed for: the same owner key
/// holding the same account id with a lower nonce on another committee's
/// book cannot have it replayed there.
#[test]
fn an_envelope_signed_for_one_committee_is_refused_by_another() {
    let env = signed(&OWNER, 1, 5, &withdraw(1, M));
    // Committee B: the same book, owner and nonce, another group key.
    let mut b = engine();
    b.set_committee(other_committee());
    refused_unchanged(
        &mut b,
        |e| e.apply_signed(T0 + 2_000, &env),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    // Committee A, whose key it was signed for, takes it.
    let mut a = engine();
    a.apply_signed(T0 + 2_000, &env).unwrap();
    assert_eq!(a.state().accounts[&1].nonce, 5);
    // Signed for B, it applies on B and not on A.
    let for_b = SignedCommand::sign(
        &OWNER,
        &other_committee(),
        1,
        6,
        serde_json::to_string(&withdraw(1, M)).unwrap(),
    );
    refused_unchanged(
        &mut a,
        |e| e.apply_signed(T0 + 3_000, &for_b),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    b.apply_signed(T0 + 3_000, &for_b).unwrap();
    // A key that is a prefix of another is another key: the length is signed.
    let mut short = engine();
    short.set_committee(CommitteeKey::new(vec![0xC1; 31]).unwrap());
    refused_unchanged(
        &mut short,
        |e| e.apply_signed(T0 + 2_000, &env),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
}

/// The v1 layout (no committee) never verifies: a signature made before
/// committee keys is refused, not taken on any committee.
#[test]
fn a_v1_signature_is_refused() {
    let text = serde_json::to_string(&withdraw(1, M)).unwrap();
    let mut v1 = b"Sibyl margin command v1".to_vec();
    v1.extend_from_slice(&1u64.to_be_bytes());
    v1.extend_from_slice(&5u64.to_be_bytes());
    v1.extend_from_slice(text.as_bytes());
    let key = ed25519_dalek::SigningKey::from_bytes(&OWNER);
    let env = SignedCommand {
        account: 1,
        nonce: 5,
        command: text,
        signature: ed25519_dalek::Signer::sign(&key, &v1).to_bytes(),
    };
    let mut e = engine();
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0 + 2_000, &env),
        |err| matches!(err, EngineError::BadSignature { account: 1 }),
    );
    assert!(
        SignedCommand::signed_bytes(&committee(), 1, 5, "").starts_with(b"Sibyl margin command v2")
    );
}

/// An engine that was given no committee key refuses every signed command
/// (it never verifies against an empty key) and still takes the operator's.
#[test]
fn an_engine_without_a_committee_key_refuses_signed_commands() {
    let mut e = Engine::default();
    let create = Command::CreateAccount {
        account: 3,
        owner: Some(public_key(&OWNER)),
    };
    let env = signed(&OWNER, 3, 1, &create);
    refused_unchanged(
        &mut e,
        |e| e.apply_signed(T0, &env),
        |err| matches!(err, EngineError::NoCommitteeKey),
    );
    assert!(matches!(
        e.check_signed(&env),
        Err(EngineError::NoCommitteeKey)
    ));
    e.apply_command(T0, &create).unwrap();
    e.set_committee(committee());
    assert_eq!(e.committee(), Some(&committee()));
    assert!(
        e.check_signed(&signed(&OWNER, 3, 1, &withdraw(3, 1)))
            .is_ok()
    );
    // Malformed keys are refused before they reach an engine.
    for (bytes, says) in [(vec![], "0 bytes"), (vec![1; 65], "65 bytes")] {
        let err = CommitteeKey::new(bytes).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    for (hex, says) in [("abc", "even number"), ("zz", "not hex")] {
        let err = CommitteeKey::from_hex(hex).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    assert_eq!(
        CommitteeKey::from_hex(&format!("0x{}", committee().to_hex())).unwrap(),
        committee()
    );
}

/// Owner and nonce are in the account's leaf: each moves the root, a proof
/// carries them, and an account without an owner hashes as before keys.
#[test]
fn owner_and_nonce_are_under_the_state_root() {
    let mut e = engine();
    let root = e.state_root();
    e.apply_signed(T0 + 2_000, &signed(&OWNER, 1, 5, &withdraw(1, M)))
        .unwrap();
    e.apply_command(T0 + 2_000, &deposit(1, M)).unwrap();
    let (state, proof, root2) = e.account_proof(1).unwrap();
    assert_ne!(root2, root);
    assert_eq!(
        (state.state.owner, state.state.nonce),
        (Some(public_key(&OWNER)), 5)
    );
    assert_eq!(verify_account_proof(&root2, &state, &proof), Ok(()));
    // The leaf bytes read back with owner and nonce.
    assert_eq!(AccountState::decode(&state.encode()).unwrap(), state);
    // A different nonce or owner is a different leaf: the proof fails.
    for change in [
        |s: &mut AccountState| s.state.nonce = 4,
        |s: &mut AccountState| s.state.owner = Some(public_key(&STRANGER)),
        |s: &mut AccountState| {
            s.state.owner = None;
            s.state.nonce = 0;
        },
    ] {
        let mut other = state.clone();
        change(&mut other);
        assert!(verify_account_proof(&root2, &other, &proof).is_err());
    }
    // Account 2 has no owner: its leaf ends after the deferred units, as
    // before account keys (so books without owners keep their roots).
    let (s2, _, _) = e.account_proof(2).unwrap();
    let bytes = s2.encode();
    assert_eq!(bytes.len(), 8 + 16 + 4 + 4 + 4 + 4);
    // Non-canonical extensions are refused: a 0 tag, a truncated key,
    // trailing bytes.
    let mut zero = bytes.clone();
    zero.push(0);
    assert!(AccountState::decode(&zero).is_err());
    let full = state.encode();
    assert!(AccountState::decode(&full[..full.len() - 1]).is_err());
    let mut trailing = full.clone();
    trailing.push(0);
    assert!(AccountState::decode(&trailing).is_err());
    assert_eq!(e.state_root(), e.state_root_from_scratch());
}

#[test]
fn a_snapshot_keeps_owner_and_nonce() {
    let mut e = engine();
    e.apply_signed(T0 + 2_000, &signed(&OWNER, 1, 42, &withdraw(1, M)))
        .unwrap();
    let root = e.state_root();
    let bytes = e.encode_snapshot().unwrap();
    assert_eq!(&bytes[..8], b"SIBYLMS3");
    let mut back = Engine::decode_snapshot(&bytes).unwrap();
    assert_eq!(back.snapshot(), e.snapshot());
    assert_eq!(back.state_root(), root);
    assert_eq!(back.encode_snapshot().unwrap(), bytes);
    // The committee is context, not state: the restored engine is given it.
    assert_eq!(back.committee(), None);
    back.set_committee(committee());
    // The restored engine still refuses the replay and takes the next nonce.
    let replay = signed(&OWNER, 1, 42, &withdraw(1, M));
    assert!(matches!(
        back.apply_signed(T0 + 3_000, &replay),
        Err(EngineError::StaleNonce { current: 42, .. })
    ));
    back.apply_signed(T0 + 3_000, &signed(&OWNER, 1, 43, &withdraw(1, M)))
        .unwrap();
    // The serde snapshot (JSON) too.
    let json = serde_json::to_string(&e.snapshot()).unwrap();
    let s: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(s.accounts[&1].nonce, 42);
    assert_eq!(s.accounts[&1].owner, Some(public_key(&OWNER)));
}

/// A snapshot written before account keys (`SIBYLMS2`, by the previous
/// engine: `demo_book(7, 40)`) decodes with no owners, nonce 0 and the
/// state root of the same book built today. (Its root when written,
/// c8f384e4…, was a `sibyl/margin/state/v1` binary-tree root; the root
/// below is the v2 4-ary one, docs/MARGIN.md "State root".)
#[test]
fn a_snapshot_from_before_account_keys_still_restores() {
    let bytes = include_bytes!("vectors/snapshot_v2_demo_7x40.bin");
    assert_eq!(&bytes[..8], b"SIBYLMS2");
    let mut e = Engine::decode_snapshot(bytes).unwrap();
    assert_eq!(e.state().accounts.len(), 40);
    assert!(
        e.state()
            .accounts
            .values()
            .all(|a| a.owner.is_none() && a.nonce == 0)
    );
    let root: String = e.state_root().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        root,
        "211f68be43044950d707af3c37cd80c4d2442177c80ac02aed59c718fa180c44"
    );
    // It is the book the engine builds today, re-encoded in the new layout.
    let mut today = demo_book(7, 40).engine;
    assert_eq!(today.snapshot(), e.snapshot());
    assert_eq!(today.state_root(), e.state_root());
}

/// Stored inputs round-trip: `Input::Signed` and a `CreateAccount` with
/// an owner, and a `CreateAccount` without one reads as it was stored
/// before owners existed.
#[test]
fn signed_inputs_store_and_replay() {
    let old = r#"{"command":{"at_ms":1,"command":{"create_account":{"account":5}}}}"#;
    let input: Input = serde_json::from_str(old).unwrap();
    assert_eq!(serde_json::to_string(&input).unwrap(), old);
    let mut e = engine();
    let mut replayed = engine();
    let env = signed(&OWNER, 1, 5, &withdraw(1, M));
    let input = Input::Signed {
        at_ms: T0 + 2_000,
        signed: env.clone(),
    };
    let json = serde_json::to_string(&input).unwrap();
    assert!(json.starts_with(r#"{"signed":{"at_ms":"#), "{json}");
    let back: Input = serde_json::from_str(&json).unwrap();
    assert_eq!(back, input);
    let ev = e.apply(&input).unwrap();
    assert_eq!(replayed.apply(&back).unwrap(), ev);
    assert_eq!(replayed.state_root(), e.state_root());
}

/// What verifying a signed command costs (the figure in docs/MARGIN.md):
/// `apply_signed` of withdrawals against `apply_command` of the same
/// withdrawals on an operator-managed account. Prints; asserts nothing
/// about time. `cargo test --release -p sibyl-margin --test keys cost -- --nocapture`
#[test]
fn cost_of_a_signed_command() {
    let mut e = engine();
    let n = 2_000u64;
    let envs: Vec<SignedCommand> = (1..=n)
        .map(|i| signed(&OWNER, 1, i, &withdraw(1, 1)))
        .collect();
    let t = std::time::Instant::now();
    for env in &envs {
        e.apply_signed(T0 + 2_000, env).unwrap();
    }
    let signed_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = std::time::Instant::now();
    for _ in 0..n {
        e.apply_command(T0 + 2_000, &withdraw(2, 1)).unwrap();
    }
    let plain_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!("apply_signed {signed_us:.1} µs per command, apply_command {plain_us:.1} µs");
    assert_eq!(e.state().accounts[&1].nonce, n);
}

/// The seed corpus of the `signed_command` fuzz target (daemon/fuzz), made
/// against the target's own book (committee key `[7; 32]`, account 1 owned
/// by the key of secret `[9; 32]`, nothing deposited) so the seeds are real:
/// a self-registration that applies, a withdrawal that passes every check
/// of the envelope and is refused for the balance, a stale nonce, a bad
/// signature, another committee's envelope, a mismatched account, a
/// command nobody may sign, an unknown field and cut JSON. Each is checked
/// here as the target checks it: refused with nothing changed, or applied.
/// With `SIBYL_FUZZ_SEEDS=DIR` set, they are written to
/// `DIR/signed_command/seed-NN` (how `daemon/fuzz/seeds/signed_command` was
/// made: `SIBYL_FUZZ_SEEDS=$PWD/daemon/fuzz/seeds cargo test -p
/// sibyl-margin --test keys fuzz_seeds`).
#[test]
fn fuzz_seeds_for_the_signed_command_route() {
    const SECRET: [u8; 32] = [9; 32];
    let committee = CommitteeKey::new(vec![7; 32]).unwrap();
    let at = 1_700_000_000_001;
    let mut book = Engine::default();
    book.set_committee(committee.clone());
    book.apply_command(
        at - 1,
        &Command::CreateAccount {
            account: 1,
            owner: Some(public_key(&SECRET)),
        },
    )
    .unwrap();
    let sign = |account, nonce, cmd: &Command| {
        SignedCommand::sign(
            &SECRET,
            &committee,
            account,
            nonce,
            serde_json::to_string(cmd).unwrap(),
        )
    };
    let json = |env: &SignedCommand| serde_json::to_vec(env).unwrap();
    let register = Command::CreateAccount {
        account: 2,
        owner: Some(public_key(&SECRET)),
    };
    let open = Command::Open {
        account: 1,
        market: "BTC-PERP".into(),
        side: Side::Long,
        size: Q,
        margin: MarginMode::Cross,
        price: None,
    };
    let mut bad_sig = sign(1, 1, &withdraw(1, M));
    bad_sig.signature[0] ^= 1;
    let other = SignedCommand::sign(
        &SECRET,
        &other_committee(),
        1,
        1,
        serde_json::to_string(&withdraw(1, M)).unwrap(),
    );
    let mut unknown = serde_json::to_value(sign(1, 1, &withdraw(1, M))).unwrap();
    unknown["extra"] = 1.into();
    let whole = json(&sign(1, 1, &withdraw(1, M)));
    // (seed, applies, the engine's refusal where it does not)
    type Check = fn(&EngineError) -> bool;
    let seeds: Vec<(Vec<u8>, Option<Check>)> = vec![
        (json(&sign(2, 1, &register)), None),
        (
            json(&sign(1, 1, &withdraw(1, M))),
            Some(|e| matches!(e, EngineError::InsufficientBalance { .. })),
        ),
        (
            json(&sign(1, 7, &open)),
            Some(|e| matches!(e, EngineError::UnknownMarket { .. })),
        ),
        (
            json(&sign(1, 0, &withdraw(1, M))),
            Some(|e| matches!(e, EngineError::StaleNonce { .. })),
        ),
        (
            json(&bad_sig),
            Some(|e| matches!(e, EngineError::BadSignature { .. })),
        ),
        (
            json(&other),
            Some(|e| matches!(e, EngineError::BadSignature { .. })),
        ),
        (
            json(&sign(1, 1, &withdraw(2, M))),
            Some(|e| matches!(e, EngineError::AccountMismatch { .. })),
        ),
        (
            json(&sign(1, 1, &deposit(1, M))),
            Some(|e| matches!(e, EngineError::NotSignable { .. })),
        ),
        (serde_json::to_vec(&unknown).unwrap(), None),
        (whole[..whole.len() / 2].to_vec(), None),
    ];
    for (i, (bytes, refusal)) in seeds.iter().enumerate() {
        let parsed = serde_json::from_slice::<SignedCommand>(bytes);
        // The last two are malformed: the route refuses them before the engine.
        if i >= seeds.len() - 2 {
            assert!(parsed.is_err(), "seed {i} parses");
            continue;
        }
        let env = parsed.unwrap();
        let mut e = book.clone();
        match refusal {
            None => {
                e.apply_signed(at, &env).unwrap();
            }
            Some(check) => refused_unchanged(&mut e, |e| e.apply_signed(at, &env), check),
        }
    }
    if let Ok(dir) = std::env::var("SIBYL_FUZZ_SEEDS") {
        let dir = std::path::Path::new(&dir).join("signed_command");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (bytes, _)) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), bytes).unwrap();
        }
    }
}
