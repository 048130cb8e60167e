//! Report encode + Merkle + verify for 1, 100, 1,000 and 10,000 feeds.
//!
//! `cargo bench -p sibyl-aggregator --bench report`
//!
//! - `encode`: ABI-encode every leaf and the header, and the canonical wire
//!   encoding of the whole signed report.
//! - `merkle_root`: leaf hashes + tree (what leader and members compute).
//! - `digest+sign-check`: `verify_report` with both suites (root recompute,
//!   digest, one Ed25519 and one secp256k1-evm FROST verification).
//! - `decode+verify`: what a consumer does with report bytes off the wire.
//! - `verify_leaf`: one feed with its proof (pull consumer).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sibyl_aggregator::codec::{Decode, Encode};
use sibyl_aggregator::verify::{SignedLeaf, verify_report};
use sibyl_aggregator::{SignedReport, encoding, merkle, testkit};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("report");
    for n in [1usize, 100, 1_000, 10_000] {
        let f = testkit::fixture(n, &mut ChaCha20Rng::seed_from_u64(n as u64));
        let wire = f.report.to_bytes();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("encode", n), &f.report, |b, r| {
            b.iter(|| {
                let mut acc = 0u8;
                for l in &r.leaves {
                    acc ^= encoding::encode_leaf(l)[31];
                }
                acc ^= encoding::encode_header(&r.header)[31];
                (acc, black_box(r.to_bytes()).len())
            })
        });
        g.bench_with_input(BenchmarkId::new("merkle_root", n), &f.report, |b, r| {
            b.iter(|| merkle::root(black_box(&r.leaves)))
        });
        g.bench_with_input(BenchmarkId::new("verify_report", n), &f, |b, f| {
            b.iter(|| verify_report(black_box(&f.report), &f.keys).expect("valid"))
        });
        g.bench_with_input(BenchmarkId::new("decode+verify", n), &wire, |b, wire| {
            b.iter(|| {
                let r = SignedReport::decode_expecting(black_box(wire), &f.keys.config_digest)
                    .expect("valid");
                verify_report(&r, &f.keys).expect("valid").digest
            })
        });
        let leaf = SignedLeaf::from_report(&f.report, n / 2).expect("index in range");
        let leaf_wire = leaf.to_bytes();
        g.bench_with_input(BenchmarkId::new("verify_leaf", n), &leaf_wire, |b, w| {
            b.iter(|| {
                SignedLeaf::from_bytes(black_box(w))
                    .expect("valid")
                    .verify(&f.keys)
                    .expect("valid")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
