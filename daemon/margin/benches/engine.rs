//! Issue 7's figures for the margin engine, on the seeded demo book (1 to 5
//! positions per account, perpetuals, a future, options, cross/isolated,
//! ~8% of accounts opened near their initial requirement):
//!
//! - per-tick liquidation check after a typical move (every feed moves by a
//!   random walk step of ~0.2%, one report per simulated second): p50/p99/max;
//! - full revaluation of every account (`Engine::revalue_all`);
//! - memory per position (resident set growth while building the book);
//! - each at several book sizes, to show how cost grows with account count;
//! - issue 20: the state root after 1,000 changed accounts, proof size,
//!   snapshot size and restart time (decode + first root). The tick figures
//!   include the state root (every report ends by updating it).
//!
//! ```text
//! cargo bench -p sibyl-margin --bench engine
//! SIBYL_BENCH_ACCOUNTS=10000,100000,1000000 cargo bench -p sibyl-margin --bench engine
//! # more knobs: SIBYL_BENCH_TICKS (extra ticks), SIBYL_BENCH_TICK_MS
//! # (simulated ms between reports), SIBYL_BENCH_NEAR_PPM, SIBYL_BENCH_OPTIONS_PPM
//! ```

use criterion::{Criterion, criterion_group, criterion_main};
use sibyl_margin::demo::{DemoParams, SplitMix, demo_book_with};
use sibyl_margin::{Engine, Event, PriceInput, PriceReport};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// Nanoseconds this process has run on a CPU, every thread counted
/// (CLOCK_PROCESS_CPUTIME_ID): the work done. On a shared machine wall
/// time includes waiting for a core; this does not. The engine splits big
/// state-root updates over the cores, so on a quiet machine a report's
/// wall time (its latency) can be below its CPU time.
fn cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

fn sizes() -> Vec<usize> {
    std::env::var("SIBYL_BENCH_ACCOUNTS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

/// Feeds one report per call: a small random-walk move on every feed.
struct Ticker {
    rng: SplitMix,
    prices: Vec<(String, i128)>,
    round: u64,
    t: u64,
    /// Simulated time between reports (SIBYL_BENCH_TICK_MS, default 1000).
    step_ms: u64,
    base: std::collections::BTreeMap<String, i128>,
    /// Each feed's EMA (about an hour, as the leaf's), carried in every
    /// report: collateral counts at the lower of price and EMA.
    emas: std::collections::BTreeMap<String, i128>,
    /// On-CPU time of each report's band work after it.
    settle_cpu: Vec<Duration>,
    /// Each report's phases (`Engine::last_report_timing`).
    timings: Vec<sibyl_margin::engine::ReportTiming>,
    /// Margin calls made and cleared by the last report (each changes an
    /// account's state-root leaf).
    last_calls: usize,
    /// SIBYL_BENCH_AB=read_ahead: each report draws reading ahead on or
    /// off (`sibyl_margin::set_read_ahead`), so both arms share the
    /// machine's drift; `ab` holds (on, wall, CPU, phases) per report.
    ab_rng: Option<SplitMix>,
    ab: Vec<Arm>,
}

/// One report under SIBYL_BENCH_AB: (reading ahead on, wall, CPU, phases).
type Arm = (bool, Duration, Duration, sibyl_margin::engine::ReportTiming);

impl Ticker {
    /// One report: (wall time, on-CPU time, liquidations, units examined)
    /// up to its events and state root, then the examined units' bands
    /// (`Engine::settle`, as the node runs it after publishing the root),
    /// whose on-CPU time goes to `self.settle_cpu`.
    fn tick(&mut self, e: &mut Engine) -> (Duration, Duration, usize, u64) {
        self.round += 1;
        self.t += self.step_ms;
        let step_ms = i128::from(self.step_ms);
        let prices: Vec<PriceInput> = self
            .prices
            .iter_mut()
            .map(|(f, p)| {
                // +-0.3% at most, pulled 2% of the way back to the start
                // each tick so the book stays realistic over many ticks.
                let step = (self.rng.next_u64() % 6_001) as i128 - 3_000;
                let base = self.base.get(f.as_str()).copied().unwrap_or(*p);
                *p = *p * (1_000_000 + step) / 1_000_000 + (base - *p) / 50;
                let ema = self.emas.entry(f.clone()).or_insert(*p);
                *ema += (*p - *ema) * step_ms / 3_600_000;
                PriceInput {
                    feed: f.clone(),
                    price: *p,
                    decimals: 8,
                    confidence: (*p / 5_000) as u128,
                    ema: *ema,
                    ..PriceInput::default()
                }
            })
            .collect();
        let report = PriceReport {
            round: self.round,
            timestamp_ms: self.t,
            prices,
        };
        let examined = e.examined_units();
        let arm = self.ab_rng.as_mut().map(|r| r.next_u64() & 1 == 1);
        if let Some(on) = arm {
            sibyl_margin::set_read_ahead(on);
        }
        let cpu0 = cpu_ns();
        let start = Instant::now();
        let ev = e.apply_report(&report).expect("bench report is valid");
        let took = start.elapsed();
        let cpu = Duration::from_nanos(cpu_ns().saturating_sub(cpu0));
        let liq = ev
            .iter()
            .filter(|r| matches!(r.event, Event::Liquidated { .. }))
            .count();
        self.last_calls = ev
            .iter()
            .filter(|r| {
                matches!(
                    r.event,
                    Event::MarginCall { .. } | Event::MarginCallCleared { .. }
                )
            })
            .count();
        black_box(ev);
        self.timings.push(e.last_report_timing());
        if let Some(on) = arm {
            self.ab.push((on, took, cpu, e.last_report_timing()));
        }
        let cpu1 = cpu_ns();
        e.settle();
        self.settle_cpu
            .push(Duration::from_nanos(cpu_ns().saturating_sub(cpu1)));
        (took, cpu, liq, e.examined_units() - examined)
    }
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn bench(c: &mut Criterion) {
    for n in sizes() {
        let near = std::env::var("SIBYL_BENCH_NEAR_PPM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let params = DemoParams {
            keep_inputs: false,
            near_liquidation_ppm: near,
            options_ppm: std::env::var("SIBYL_BENCH_OPTIONS_PPM")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100_000),
            ..DemoParams::default()
        };
        let rss0 = rss_bytes();
        let start = Instant::now();
        let book = demo_book_with(42, n, &params);
        let mut e = book.engine;
        // Every account's first bands (the node settles after each input).
        e.settle();
        let build = start.elapsed();
        let rss1 = rss_bytes();
        // SIBYL_BENCH_PROMPT_CALLS=0: bands hold maintenance only (margin
        // calls when a unit is examined), to compare the cost.
        if std::env::var("SIBYL_BENCH_PROMPT_CALLS").as_deref() == Ok("0") {
            let risk = sibyl_margin::RiskParams {
                prompt_margin_calls: false,
                ..e.state().risk.clone()
            };
            e.apply_command(e.now_ms(), &sibyl_margin::Command::ConfigureRisk(risk))
                .expect("risk config");
        }
        let positions: usize = e.state().accounts.values().map(|a| a.positions.len()).sum();
        let mem = rss1.saturating_sub(rss0);
        println!(
            "book n={n}: {positions} positions, {} indexed units, built in {:.1?} ({} inputs refused); \
             resident +{} MiB = {} bytes/position (account, positions, index)",
            e.indexed_units(),
            build,
            book.refused,
            mem / (1 << 20),
            mem / positions.max(1) as u64
        );
        let base = params
            .prices
            .iter()
            .map(|(f, p)| (f.clone(), *p * 97 / 100))
            .collect();
        let mut ticker = Ticker {
            rng: SplitMix::new(7),
            prices: params.prices.clone(),
            round: params.round,
            t: e.now_ms(),
            step_ms: std::env::var("SIBYL_BENCH_TICK_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000),
            base,
            emas: std::collections::BTreeMap::new(),
            settle_cpu: Vec::new(),
            timings: Vec::new(),
            last_calls: 0,
            ab_rng: (std::env::var("SIBYL_BENCH_AB").as_deref() == Ok("read_ahead")).then(|| {
                SplitMix::new(
                    std::env::var("SIBYL_BENCH_AB_SEED")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(11),
                )
            }),
            ab: Vec::new(),
        };
        // Let the near-liquidation accounts go first: a -3% move, then calm
        // ticks around the new level.
        for (_, p) in ticker.prices.iter_mut() {
            *p = *p * 97 / 100;
        }
        let (first, first_cpu, liq, ex) = ticker.tick(&mut e);
        let first_bands = ticker.settle_cpu.pop().unwrap_or_default();
        println!(
            "book n={n}: first tick after a -3% move: {first:.2?} wall, {first_cpu:.2?} on CPU to events and root, {ex} units examined, {liq} liquidations; then bands {first_bands:.2?} on CPU"
        );

        let mut samples: Vec<(Duration, u64)> = Vec::new();
        let mut cpu_samples: Vec<Duration> = Vec::new();
        let mut heavy: Vec<(Duration, u64, usize, usize)> = Vec::new();
        let mut liquidations = 0usize;
        let mut g = c.benchmark_group(format!("margin/{n}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(3));
        g.bench_function("tick", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (d, cpu, l, ex) = ticker.tick(&mut e);
                    samples.push((d, ex));
                    cpu_samples.push(cpu);
                    heavy.push((cpu, ex, l, ticker.last_calls));
                    liquidations += l;
                    total += d;
                }
                total
            })
        });
        g.bench_function("revalue_all", |b| b.iter(|| black_box(e.revalue_all())));
        g.finish();
        // Criterion picks few iterations on big books: add a fixed run of
        // ticks so the percentiles rest on enough samples.
        let extra = std::env::var("SIBYL_BENCH_TICKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300usize);
        for _ in 0..extra {
            let (d, cpu, l, ex) = ticker.tick(&mut e);
            samples.push((d, ex));
            cpu_samples.push(cpu);
            heavy.push((cpu, ex, l, ticker.last_calls));
            liquidations += l;
        }
        // Whole report on CPU: to events and root, then the bands.
        let mut whole: Vec<Duration> = cpu_samples
            .iter()
            .zip(&ticker.settle_cpu)
            .map(|(a, b)| *a + *b)
            .collect();
        whole.sort();
        let mut settle = ticker.settle_cpu.clone();
        settle.sort();
        samples.sort();
        cpu_samples.sort();
        heavy.sort();
        let top: Vec<String> = heavy
            .iter()
            .rev()
            .take((heavy.len() / 100).clamp(1, 12))
            .map(|(c, ex, l, calls)| format!("{c:.1?}/{ex}/{l}/{calls}"))
            .collect();
        let mut calm: Vec<Duration> = heavy
            .iter()
            .filter(|(_, _, l, _)| *l == 0)
            .map(|(c, _, _, _)| *c)
            .collect();
        calm.sort();
        println!(
            "book n={n}: {} of {} ticks liquidated nothing: on CPU p50 {:.3?} p99 {:.3?} max {:.3?}",
            calm.len(),
            heavy.len(),
            pct(&calm, 0.5),
            pct(&calm, 0.99),
            calm.last().copied().unwrap_or_default()
        );
        println!(
            "book n={n}: the costliest ticks (up to 1%, at most 12; CPU / units examined / liquidations / margin calls made or cleared): {}",
            top.join(" ")
        );
        let mut calls: Vec<usize> = heavy.iter().map(|h| h.3).collect();
        calls.sort_unstable();
        println!(
            "book n={n}: margin calls made or cleared per report (each rehashes an account's state-root path): p50 {} p99 {} max {}",
            calls.get(calls.len() / 2).copied().unwrap_or(0),
            calls
                .get(calls.len().saturating_sub(1) * 99 / 100)
                .copied()
                .unwrap_or(0),
            calls.last().copied().unwrap_or(0)
        );
        let times: Vec<Duration> = samples.iter().map(|s| s.0).collect();
        let mut ex: Vec<u64> = samples.iter().map(|s| s.1).collect();
        ex.sort();
        println!(
            "book n={n}: per-tick liquidation check (report to events and state root) over {} ticks: wall p50 {:.3?} p99 {:.3?} max {:.3?}; \
             on CPU p50 {:.3?} p99 {:.3?} max {:.3?}; units examined per tick p50 {} p99 {} max {}; {} liquidations",
            times.len(),
            pct(&times, 0.5),
            pct(&times, 0.99),
            times.last().copied().unwrap_or_default(),
            pct(&cpu_samples, 0.5),
            pct(&cpu_samples, 0.99),
            cpu_samples.last().copied().unwrap_or_default(),
            ex.get(ex.len() / 2).copied().unwrap_or(0),
            ex.get((ex.len().saturating_sub(1)) * 99 / 100)
                .copied()
                .unwrap_or(0),
            ex.last().copied().unwrap_or(0),
            liquidations,
        );
        // The phases of the same reports (not the first, big move), all of
        // them and the heavy ones (at least 800 units examined), wall clock.
        let timed = ticker.timings.get(1..).unwrap_or_default();
        for (what, heavy_only) in [
            ("every report", false),
            ("reports examining >= 800 units", true),
        ] {
            let picked: Vec<_> = timed
                .iter()
                .filter(|t| !heavy_only || t.units >= 800)
                .collect();
            let phase = |f: fn(&sibyl_margin::engine::ReportTiming) -> Duration| {
                let mut v: Vec<Duration> = picked.iter().map(|t| f(t)).collect();
                v.sort();
                format!("p50 {:.3?} p99 {:.3?}", pct(&v, 0.5), pct(&v, 0.99))
            };
            println!(
                "book n={n}: phases, {what} ({}): prepare {}; examinations {}; state root {}",
                picked.len(),
                phase(|t| t.prepare),
                phase(|t| t.examinations),
                phase(|t| t.root),
            );
        }
        ab_summary(n, ticker.ab.get(1..).unwrap_or_default());
        sibyl_margin::set_read_ahead(true);
        println!(
            "book n={n}: bands after each report (settle, off the critical path): on CPU p50 {:.3?} p99 {:.3?} max {:.3?}; \
             whole report (to the root, then bands) on CPU p50 {:.3?} p99 {:.3?} max {:.3?}, mean {:.3?}",
            pct(&settle, 0.5),
            pct(&settle, 0.99),
            settle.last().copied().unwrap_or_default(),
            pct(&whole, 0.5),
            pct(&whole, 0.99),
            whole.last().copied().unwrap_or_default(),
            whole.iter().sum::<Duration>() / u32::try_from(whole.len().max(1)).unwrap_or(u32::MAX),
        );
        println!(
            "book n={n}: {} units examined in all, {} bands from the whole-band bound",
            e.examined_units(),
            e.fallback_bands()
        );
        let start = Instant::now();
        let r = e.revalue_all();
        println!(
            "book n={n}: full revaluation of {} units / {} positions in {:.1?}",
            r.units,
            r.positions,
            start.elapsed()
        );
        state_root_and_snapshot(n, e);
    }
}

/// SIBYL_BENCH_AB: the reports of each arm (reading ahead on / off), all
/// and those examining at least 800 units.
fn ab_summary(n: usize, ab: &[(bool, Duration, Duration, sibyl_margin::engine::ReportTiming)]) {
    for on in [true, false] {
        for min_units in [0, 800] {
            let arm: Vec<_> = ab
                .iter()
                .filter(|(o, _, _, t)| *o == on && t.units >= min_units)
                .collect();
            let sorted = |f: &dyn Fn(&Arm) -> Duration| {
                let mut v: Vec<Duration> = arm.iter().map(|x| f(x)).collect();
                v.sort();
                v
            };
            let (wall, cpu) = (sorted(&|x| x.1), sorted(&|x| x.2));
            let (ex, root) = (sorted(&|x| x.3.examinations), sorted(&|x| x.3.root));
            println!(
                "book n={n}: read ahead {}, reports examining >= {min_units} units ({}): wall p50 {:.3?} p90 {:.3?} p99 {:.3?}; CPU p50 {:.3?} p99 {:.3?}; examinations p50 {:.3?}; state root p50 {:.3?}",
                if on { "on" } else { "off" },
                arm.len(),
                pct(&wall, 0.5),
                pct(&wall, 0.9),
                pct(&wall, 0.99),
                pct(&cpu, 0.5),
                pct(&cpu, 0.99),
                pct(&ex, 0.5),
                pct(&root, 0.5),
            );
        }
    }
}

/// Issue 20's figures: the state root's cost per 1,000 changed accounts,
/// proof size, snapshot size, and restart (decode + first root).
fn state_root_and_snapshot(n: usize, mut e: Engine) {
    use sibyl_margin::Command;
    let ids: Vec<u64> = e.state().accounts.keys().copied().collect();
    let _ = e.state_root();
    let mut costs: Vec<Duration> = Vec::new();
    let mut walls: Vec<Duration> = Vec::new();
    for round in 0..20usize {
        let at = e.now_ms();
        for k in 0..1_000usize {
            let id = ids[(round * 7_919 + k * 104_729) % ids.len()];
            let dep = Command::Deposit {
                account: id,
                asset: "USD".into(),
                amount: 1,
            };
            e.apply_command(at, &dep).expect("bench deposit is valid");
        }
        // Their bands first (a node settles after each command).
        e.settle();
        let (cpu0, start) = (cpu_ns(), Instant::now());
        black_box(e.state_root());
        walls.push(start.elapsed());
        costs.push(Duration::from_nanos(cpu_ns().saturating_sub(cpu0)));
    }
    costs.sort();
    walls.sort();
    println!(
        "book n={n}: state root after 1,000 changed accounts (20 rounds): on CPU p50 {:.3?} max {:.3?}; wall p50 {:.3?} max {:.3?}",
        pct(&costs, 0.5),
        costs.last().copied().unwrap_or_default(),
        pct(&walls, 0.5),
        walls.last().copied().unwrap_or_default()
    );
    let (state, proof, _) = e.account_proof(ids[ids.len() / 2]).expect("account");
    println!(
        "book n={n}: account proof {} bytes ({} siblings) + account state {} bytes",
        proof.size_bytes(),
        proof.siblings.len(),
        state.encode().len()
    );
    let root = e.state_root();
    let cpu = || Duration::from_nanos(cpu_ns());
    // The at-risk ranking against the full scan it replaced.
    let c0 = cpu();
    let ranked = e.closest_to_liquidation(1_000);
    let ranked_cpu = cpu() - c0;
    let c0 = cpu();
    let scanned = e.closest_to_liquidation_scan(1_000);
    let scan_cpu = cpu() - c0;
    println!(
        "book n={n}: at-risk top 1,000 from the ranking {ranked_cpu:.2?} CPU ({} ranked units) vs full scan {scan_cpu:.2?} CPU; same first row: {}",
        e.ranked_units(),
        ranked.first().map(|r| (r.account, &r.unit))
            == scanned.first().map(|r| (r.account, &r.unit))
    );
    // Under the engine lock only `snapshot_source` runs; `encode` runs
    // without it.
    let (start, c0) = (Instant::now(), cpu());
    let source = e.snapshot_source().expect("snapshot source");
    let (take, take_cpu) = (start.elapsed(), cpu() - c0);
    let bytes = source.encode().expect("snapshot encodes");
    let (encode, encode_cpu) = (start.elapsed() - take, cpu() - c0 - take_cpu);
    println!(
        "book n={n}: snapshot taken under the lock in {take:.2?} wall / {take_cpu:.2?} CPU, encoded off it in {encode:.2?} wall / {encode_cpu:.2?} CPU"
    );
    drop(e);
    let (start, c0) = (Instant::now(), cpu());
    let mut back = Engine::decode_snapshot(&bytes).expect("snapshot decodes");
    let (decode, decode_cpu) = (start.elapsed(), cpu() - c0);
    let (start, c0) = (Instant::now(), cpu());
    let back_root = back.state_root();
    let (first_root, first_root_cpu) = (start.elapsed(), cpu() - c0);
    assert_eq!(back_root, root, "restored root differs");
    println!(
        "book n={n}: snapshot {} MiB ({} bytes/account), encoded in {encode:.2?} wall / {encode_cpu:.2?} CPU; \
         restart: decode {decode:.2?} wall / {decode_cpu:.2?} CPU + first state root {first_root:.2?} wall / {first_root_cpu:.2?} CPU \
         = {:.2?} wall / {:.2?} CPU (same root)",
        bytes.len() >> 20,
        bytes.len() / n.max(1),
        decode + first_root,
        decode_cpu + first_root_cpu
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
