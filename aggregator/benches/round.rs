//! Per-round CPU of the round state machine, for the leader and for one
//! member (a signer), measured as the time spent inside `Node::handle` for
//! one complete round: observation, proposal (leader) or proposal check and
//! share (member), aggregation (leader) and report verification (member).
//!
//! Groups:
//! - `round/<suite>/n<N>/{leader,member}`: n = 4, 7, 16, 31 (t = 2f + 1), 10 feeds;
//!   `<suite>` = `both` is a committee that signs each report with ed25519
//!   and secp256k1-evm (n = 4, 7): the second signature's cost.
//! - `round_1000_feeds/<suite>/n<N>/{leader,member}`: a 1,000-feed report.
//! - `round_2000_feeds/ed25519/n7/{leader,member}`: a 2,000-feed report.
//!
//! Every member starts from a previous signed leaf of each feed (a second
//! earlier), so each leaf's EMA and volatility are computed in full.
//!
//! Run: `cargo bench -p sibyl-aggregator --bench round -- --warm-up-time 1 --measurement-time 3`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sibyl_aggregator::aggregate::note_signed_leaf;
use sibyl_aggregator::round::committee::{Committee, FeedConfig, Member, Timeouts};
use sibyl_aggregator::round::{
    Action, Input, LocalObservation, Node, NodeKeySet, NodeKeys, Restore, SibylSuite,
};
use sibyl_aggregator::testkit::{DealerKeys, dealer_keys};
use sibyl_aggregator::{ConfigDigest, FeedId, MarginCheckpoint, MarginCommand, ReportLeaf};
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const T0: u64 = 1_760_000_000_000;

struct Setup<C: SibylSuite> {
    committee: Arc<Committee>,
    seeds: Vec<[u8; 32]>,
    dealer: DealerKeys<C>,
    /// A second suite's keys: the committee signs with both.
    evm: Option<DealerKeys<frost_secp256k1_evm::Secp256K1Keccak256>>,
    feeds: Vec<FeedId>,
    /// Each feed's previous signed leaf, a second before this round.
    restore: Restore,
    /// Every member offers 4 margin commands and attests 8 state roots.
    margin: bool,
}

fn setup<C: SibylSuite>(n: u16, feeds: usize, both: bool) -> Setup<C> {
    let f = (n - 1) / 3;
    let t = 2 * f + 1;
    let mut rng = ChaCha20Rng::seed_from_u64(u64::from(n));
    let seeds: Vec<[u8; 32]> = (0..n).map(|i| [i as u8 + 1; 32]).collect();
    let members = seeds
        .iter()
        .enumerate()
        .map(|(i, s)| Member {
            index: i as u16 + 1,
            identity: SigningKey::from_bytes(s).verifying_key().to_bytes(),
        })
        .collect();
    let ids: Vec<FeedId> = (0..feeds)
        .map(|i| FeedId::new(format!("FEED-{i:05}")).expect("valid feed id"))
        .collect();
    let configs = ids
        .iter()
        .map(|id| FeedConfig {
            id: id.clone(),
            decimals: 8,
            deviation_bps: 50,
            heartbeat_ms: 60_000,
            policy: Default::default(),
        })
        .collect();
    let committee = Arc::new(
        Committee::new(
            members,
            t,
            f,
            0,
            configs,
            ConfigDigest([1; 32]),
            Timeouts::default(),
        )
        .expect("valid committee"),
    );
    let dealer = dealer_keys::<C, _>(n, t, &mut rng).expect("dealer keys");
    let evm = both.then(|| dealer_keys(n, t, &mut rng).expect("dealer keys"));
    let mut restore = Restore::default();
    for (k, id) in ids.iter().enumerate() {
        let price = 6_000_000_000_000 + k as i128 * 1_000 - 20_000;
        let leaf = ReportLeaf {
            ema: price - 3_000,
            ema_confidence: 1_500,
            volatility: 450_000_000,
            ..ReportLeaf::basic(id.clone(), price, 1_000, 7, T0 - 1_000)
        };
        note_signed_leaf(&mut restore.last_values, &leaf, T0 - 999);
    }
    Setup {
        committee,
        seeds,
        dealer,
        evm,
        feeds: ids,
        restore,
        margin: false,
    }
}

/// Runs round 0 with instant delivery; returns the time spent in `handle` by
/// member 1 (the leader of round 0) and member 2 (a signer).
fn one_round<C: SibylSuite>(s: &Setup<C>, rng: &mut ChaCha20Rng) -> (Duration, Duration) {
    let n = s.committee.n() as u16;
    let mut nodes: Vec<Node> = (1..=n)
        .map(|i| {
            let id = frost_core::Identifier::<C>::try_from(i).expect("identifier");
            let keys = NodeKeys {
                identity_seed: s.seeds[usize::from(i) - 1],
                key_package: s.dealer.key_packages[&id].clone(),
                public_key_package: s.dealer.public_key_package.clone(),
            };
            let mut keys = NodeKeySet::from(keys);
            if let Some(evm) = &s.evm {
                let id = frost_core::Identifier::try_from(i).expect("identifier");
                keys = keys.with(
                    evm.key_packages[&id].clone(),
                    evm.public_key_package.clone(),
                );
            }
            Node::new(s.committee.clone(), i, keys, s.restore.clone()).expect("node")
        })
        .collect();
    let mut spent = vec![Duration::ZERO; usize::from(n) + 1];
    let mut queue: VecDeque<(u16, Input)> = VecDeque::new();
    for i in (1..=n).filter(|_| s.margin) {
        let roots = (0..8)
            .map(|r| MarginCheckpoint {
                round: 100 + r,
                root: [r as u8; 32],
            })
            .collect();
        queue.push_back((i, Input::AttestMarginRoots(roots)));
        let commands = (0..4)
            .map(|k| MarginCommand {
                origin: i,
                nonce: 1_000 + k,
                body: format!(
                    r#"{{"open":{{"account":{k},"market":"BTC-PERP","side":"long","size":50000000,"margin":"cross","price":null}}}}"#
                ),
            })
            .collect();
        queue.push_back((i, Input::OfferCommands(commands)));
    }
    for i in 1..=n {
        let obs = s
            .feeds
            .iter()
            .enumerate()
            .map(|(k, feed)| {
                let price = 6_000_000_000_000 + k as i128 * 1_000 + i128::from(i);
                // Every quality field filled, as a member on live venues sends them.
                LocalObservation {
                    bid: Some(price - 500),
                    ask: Some(price + 500),
                    venues: 5,
                    min_venues: 3,
                    ..LocalObservation::basic(feed.clone(), price, 1_000, T0)
                }
            })
            .collect();
        queue.push_back((i, Input::Observations(obs)));
    }
    let mut signed = false;
    while let Some((to, input)) = queue.pop_front() {
        let node = &mut nodes[usize::from(to) - 1];
        let started = Instant::now();
        let actions = node.handle(T0 + 1, input, rng);
        spent[usize::from(to)] += started.elapsed();
        for a in actions {
            match a {
                Action::Send { to: dst, bytes } => {
                    queue.push_back((dst, Input::Message { from: to, bytes }))
                }
                Action::Broadcast { bytes } => {
                    for dst in (1..=n).filter(|d| *d != to) {
                        queue.push_back((
                            dst,
                            Input::Message {
                                from: to,
                                bytes: bytes.clone(),
                            },
                        ));
                    }
                }
                Action::RecordSigning { round, digest } => {
                    queue.push_front((to, Input::SigningRecorded { round, digest }))
                }
                Action::SignedReport(r) => {
                    signed = true;
                    if s.margin {
                        assert!(
                            r.margin_state.is_some()
                                && r.commands.len() >= 4 * usize::from(s.committee.quorum() as u16)
                        );
                    }
                    black_box(r);
                }
                _ => {}
            }
        }
    }
    assert!(signed, "the round must sign a report");
    (spent[1], spent[2])
}

fn bench_suite<C: SibylSuite>(
    c: &mut Criterion,
    name: &str,
    group: &str,
    sizes: &[u16],
    feeds: usize,
    both: bool,
) {
    let mut g = c.benchmark_group(format!("{group}/{name}"));
    g.sample_size(10);
    for &n in sizes {
        let mut s = setup::<C>(n, feeds, both);
        s.margin = group == "round_with_margin";
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for (role, pick) in [("leader", 0usize), ("member", 1usize)] {
            g.bench_with_input(BenchmarkId::new(role, format!("n{n}")), &n, |b, _| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (leader, member) = one_round(&s, &mut rng);
                        total += if pick == 0 { leader } else { member };
                    }
                    total
                })
            });
        }
    }
    g.finish();
}

fn rounds(c: &mut Criterion) {
    let sizes = [4, 7, 16, 31];
    type Ed = frost_ed25519::Ed25519Sha512;
    type Evm = frost_secp256k1_evm::Secp256K1Keccak256;
    bench_suite::<Ed>(c, "ed25519", "round", &sizes, 10, false);
    bench_suite::<Evm>(c, "secp256k1-evm", "round", &sizes, 10, false);
    bench_suite::<Ed>(c, "both", "round", &[4, 7], 10, true);
    bench_suite::<Ed>(c, "ed25519", "round_with_margin", &[4, 7], 10, false);
    bench_suite::<Ed>(c, "ed25519", "round_1000_feeds", &[7], 1000, false);
    bench_suite::<Ed>(c, "ed25519", "round_2000_feeds", &[7], 2000, false);
    bench_suite::<Evm>(c, "secp256k1-evm", "round_1000_feeds", &[7], 1000, false);
    bench_suite::<Ed>(c, "both", "round_1000_feeds", &[7], 1000, true);
}

criterion_group!(benches, rounds);
criterion_main!(benches);
