//! Time and bytes per member of the DKG, of a proactive refresh and of a
//! repair, in one process: `n` machines ([`Dkg::new`], then [`Dkg::refresh`]
//! of its result), then member `n` repaired by members `1..=t`
//! ([`Repair`]), exchanging messages through an in-memory queue, no latency.
//! A repair's figures are per participant (the t helpers and the repaired
//! member). Last, members `1..=t` sign one message in a signing session
//! ([`ThresholdSign`], the hand-over's `sibyl rotation-sign`): per signer.
//! Time is the wall time of the whole ceremony divided by `n` (one thread
//! runs every member, so it is each member's CPU on average); bytes are what
//! each member sent, re-sends excluded (none happen without loss).
//!
//! ```sh
//! cargo run --release -p sibyl-aggregator --example bench_dkg [N...]   # default 4 7 16
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sibyl_aggregator::dkg::repair::{Repair, RepairConfig, RepairOutput, RepairRole};
use sibyl_aggregator::dkg::sign::{SignConfig, SignOutput, ThresholdSign};
use sibyl_aggregator::dkg::{Dkg, DkgConfig, DkgResult, Input, Output, RefreshKeys};
use sibyl_aggregator::{ConfigDigest, Suite};

fn run(machines: &mut BTreeMap<u16, Dkg>, rng: &mut ChaCha20Rng) -> BTreeMap<u16, DkgResult> {
    let mut queue: VecDeque<(u16, u16, Vec<u8>)> = VecDeque::new();
    let mut results = BTreeMap::new();
    let all: Vec<u16> = machines.keys().copied().collect();
    for &i in &all {
        let connected = all.iter().copied().filter(|j| *j != i).collect();
        let out = machines
            .get_mut(&i)
            .map(|m| m.handle(0, Input::Start { connected }, rng))
            .unwrap_or_default();
        collect(i, out, &mut queue, &mut results);
    }
    while let Some((from, to, bytes)) = queue.pop_front() {
        let out = machines
            .get_mut(&to)
            .map(|m| m.handle(0, Input::Message { from, bytes }, rng))
            .unwrap_or_default();
        collect(to, out, &mut queue, &mut results);
    }
    results
}

fn collect(
    i: u16,
    out: Vec<Output>,
    queue: &mut VecDeque<(u16, u16, Vec<u8>)>,
    results: &mut BTreeMap<u16, DkgResult>,
) {
    for o in out {
        match o {
            Output::Send { to, bytes } => queue.push_back((i, to, bytes)),
            Output::Done(r) => {
                results.insert(i, *r);
            }
            Output::Failed(e) => panic!("member {i} failed: {e}"),
            Output::Progress(_) => {}
        }
    }
}

fn sent_bytes(machines: &BTreeMap<u16, Dkg>) -> f64 {
    let total: usize = machines
        .values()
        .flat_map(|m| m.sent().values())
        .flat_map(|per| per.values())
        .flat_map(|msgs| msgs.iter().map(Vec::len))
        .sum();
    total as f64 / machines.len() as f64
}

/// Repairs member `lost` from helpers `1..=t`; (ms per participant, bytes
/// sent per participant).
fn repair(
    results: &BTreeMap<u16, DkgResult>,
    suite: Suite,
    t: u16,
    lost: u16,
    rng: &mut ChaCha20Rng,
) -> (f64, f64) {
    let helpers: std::collections::BTreeSet<u16> = (1..=t).collect();
    let cfg = |me| RepairConfig {
        digest: ConfigDigest([5; 32]),
        me,
        lost,
        helpers: helpers.clone(),
        suites: vec![suite],
        resend_interval_ms: 1_000,
        timeout_ms: 60_000,
    };
    let keys_of = |r: &DkgResult| RefreshKeys {
        ed25519: r
            .ed25519
            .as_ref()
            .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
        secp256k1_evm: r
            .secp256k1_evm
            .as_ref()
            .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
    };
    let mut machines: BTreeMap<u16, Repair> = helpers
        .iter()
        .map(|&h| {
            let role = RepairRole::Helper(Box::new(keys_of(&results[&h])));
            (h, Repair::new(cfg(h), role).expect("repair config"))
        })
        .collect();
    machines.insert(
        lost,
        Repair::new(cfg(lost), RepairRole::Lost(Box::default())).expect("repair config"),
    );
    let start = Instant::now();
    let mut queue: VecDeque<(u16, u16, Vec<u8>)> = VecDeque::new();
    let mut sent = 0usize;
    let mut repaired = None;
    let mut push = |i: u16, out: Vec<RepairOutput>, queue: &mut VecDeque<(u16, u16, Vec<u8>)>| {
        for o in out {
            match o {
                RepairOutput::Send { to, bytes } => {
                    sent += bytes.len();
                    queue.push_back((i, to, bytes));
                }
                RepairOutput::Repaired(k) => repaired = Some(k),
                RepairOutput::Failed(e) => panic!("member {i} failed its repair: {e}"),
                RepairOutput::Helped | RepairOutput::Progress(_) => {}
            }
        }
    };
    let all: Vec<u16> = machines.keys().copied().collect();
    for &i in &all {
        let out = machines.get_mut(&i).map(|m| {
            m.handle(
                0,
                Input::Start {
                    connected: Default::default(),
                },
                rng,
            )
        });
        push(i, out.unwrap_or_default(), &mut queue);
    }
    while let Some((from, to, bytes)) = queue.pop_front() {
        let out = machines
            .get_mut(&to)
            .map(|m| m.handle(0, Input::Message { from, bytes }, rng));
        push(to, out.unwrap_or_default(), &mut queue);
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(t + 1);
    let got = repaired.expect("repaired");
    let share = |k: &RefreshKeys| {
        k.ed25519
            .as_ref()
            .map(|(k, _)| k.signing_share().serialize())
            .or_else(|| {
                k.secp256k1_evm
                    .as_ref()
                    .map(|(k, _)| k.signing_share().serialize())
            })
    };
    assert_eq!(
        share(&got),
        share(&keys_of(&results[&lost])),
        "the lost share, back"
    );
    (ms, sent as f64 / f64::from(t + 1))
}

/// Members `1..=t` sign one message in a signing session; (ms per signer,
/// bytes sent per signer).
fn sign_session<C: frost_core::Ciphersuite>(
    keys: &BTreeMap<
        u16,
        (
            frost_core::keys::KeyPackage<C>,
            frost_core::keys::PublicKeyPackage<C>,
        ),
    >,
    t: u16,
    rng: &mut ChaCha20Rng,
) -> (f64, f64) {
    let signers: std::collections::BTreeSet<u16> = (1..=t).collect();
    let mut machines: BTreeMap<u16, ThresholdSign<C>> = signers
        .iter()
        .map(|&m| {
            let cfg = SignConfig {
                digest: ConfigDigest([5; 32]),
                me: m,
                signers: signers.clone(),
                message: [7; 32],
                resend_interval_ms: 1_000,
                timeout_ms: 60_000,
            };
            let (k, p) = keys[&m].clone();
            (m, ThresholdSign::new(cfg, k, p).expect("sign config"))
        })
        .collect();
    let start = Instant::now();
    let mut queue: VecDeque<(u16, u16, Vec<u8>)> = VecDeque::new();
    let (mut sent, mut signed) = (0usize, 0usize);
    let mut push = |i: u16, out: Vec<SignOutput<C>>, queue: &mut VecDeque<(u16, u16, Vec<u8>)>| {
        for o in out {
            match o {
                SignOutput::Send { to, bytes } => {
                    sent += bytes.len();
                    queue.push_back((i, to, bytes));
                }
                SignOutput::Signed(_) => signed += 1,
                SignOutput::Failed(e) => panic!("signer {i} failed: {e}"),
                SignOutput::Progress(_) => {}
            }
        }
    };
    for (&i, m) in machines.iter_mut() {
        let out = m.handle(
            0,
            Input::Start {
                connected: Default::default(),
            },
            rng,
        );
        push(i, out, &mut queue);
    }
    while let Some((from, to, bytes)) = queue.pop_front() {
        let out = machines
            .get_mut(&to)
            .map(|m| m.handle(0, Input::Message { from, bytes }, rng))
            .unwrap_or_default();
        push(to, out, &mut queue);
    }
    assert_eq!(signed, usize::from(t), "every signer holds the signature");
    let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(t);
    (ms, sent as f64 / f64::from(t))
}

fn main() {
    let ns: Vec<u16> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ns = if ns.is_empty() { vec![4, 7, 16] } else { ns };
    println!(
        "{:<14} {:>3} {:>3} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16} {:>16}",
        "suite",
        "n",
        "t",
        "dkg ms/member",
        "dkg B/member",
        "refresh ms/mem",
        "refresh B/mem",
        "repair ms/part",
        "repair B/part",
        "sign ms/signer",
        "sign B/signer"
    );
    for suite in [Suite::Ed25519, Suite::Secp256k1Evm] {
        for &n in &ns {
            let f = (n - 1) / 3;
            let t = 2 * f + 1;
            let keys: BTreeMap<u16, ed25519_dalek::SigningKey> = (1..=n)
                .map(|i| (i, ed25519_dalek::SigningKey::from_bytes(&[i as u8; 32])))
                .collect();
            let members: BTreeMap<u16, ed25519_dalek::VerifyingKey> =
                keys.iter().map(|(i, k)| (*i, k.verifying_key())).collect();
            let config = |me| DkgConfig {
                digest: ConfigDigest([5; 32]),
                threshold: t,
                me,
                members: members.clone(),
                suites: vec![suite],
                timeout_ms: 60_000,
                total_timeout_ms: None,
                resend_interval_ms: 1_000,
            };
            let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
            let mut dkg: BTreeMap<u16, Dkg> = keys
                .iter()
                .map(|(&i, k)| (i, Dkg::new(config(i), Box::new(k.clone())).expect("config")))
                .collect();
            let start = Instant::now();
            let done = run(&mut dkg, &mut rng);
            let dkg_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(n);
            assert_eq!(done.len(), usize::from(n));
            let mut refresh: BTreeMap<u16, Dkg> = keys
                .iter()
                .map(|(&i, k)| {
                    let r = &done[&i];
                    let held = RefreshKeys {
                        ed25519: r
                            .ed25519
                            .as_ref()
                            .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
                        secp256k1_evm: r
                            .secp256k1_evm
                            .as_ref()
                            .map(|o| (o.key_package.clone(), o.public_key_package.clone())),
                    };
                    (
                        i,
                        Dkg::refresh(config(i), Box::new(k.clone()), held).expect("config"),
                    )
                })
                .collect();
            let start = Instant::now();
            let renewed = run(&mut refresh, &mut rng);
            let refresh_ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(n);
            assert_eq!(renewed.len(), usize::from(n));
            assert_eq!(renewed[&1].group_keys(), done[&1].group_keys());
            let (repair_ms, repair_bytes) = repair(&done, suite, t, n, &mut rng);
            let (sign_ms, sign_bytes) = match suite {
                Suite::Ed25519 => {
                    let keys = done
                        .iter()
                        .filter_map(|(i, r)| {
                            let o = r.ed25519.as_ref()?;
                            Some((*i, (o.key_package.clone(), o.public_key_package.clone())))
                        })
                        .collect();
                    sign_session(&keys, t, &mut rng)
                }
                Suite::Secp256k1Evm => {
                    let keys = done
                        .iter()
                        .filter_map(|(i, r)| {
                            let o = r.secp256k1_evm.as_ref()?;
                            Some((*i, (o.key_package.clone(), o.public_key_package.clone())))
                        })
                        .collect();
                    sign_session(&keys, t, &mut rng)
                }
            };
            println!(
                "{:<14} {:>3} {:>3} {:>16.2} {:>16.0} {:>16.2} {:>16.0} {:>16.2} {:>16.0} {:>16.2} {:>16.0}",
                format!("{suite:?}"),
                n,
                t,
                dkg_ms,
                sent_bytes(&dkg),
                refresh_ms,
                sent_bytes(&refresh),
                repair_ms,
                repair_bytes,
                sign_ms,
                sign_bytes
            );
        }
    }
}
