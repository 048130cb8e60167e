//! Restart cost alone, without the tick benchmark: builds the seeded demo
//! book, takes a snapshot, then decodes it and computes the first state
//! root, as a member does on restart (issue 20: <= 5 s at 1 M accounts).
//!
//! ```text
//! cargo run --release -p sibyl-margin --example restart [accounts] [repeats]
//! ```

use sibyl_margin::Engine;
use sibyl_margin::demo::{DemoParams, demo_book_with};
use std::time::{Duration, Instant};

/// CPU time of the whole process (all threads), so that a restart split
/// over threads is counted in full and waiting for a core is not.
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let repeats: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(3);
    let params = DemoParams {
        keep_inputs: false,
        options_ppm: 100_000,
        ..DemoParams::default()
    };
    // `SIBYL_RESTART_CACHE=<file>` keeps the snapshot and its root between
    // runs (building a 1 M book takes about a minute).
    let cache = std::env::var_os("SIBYL_RESTART_CACHE").map(std::path::PathBuf::from);
    let cached = cache.as_ref().and_then(|p| {
        let bytes = std::fs::read(p).ok()?;
        let root: [u8; 32] = std::fs::read(p.with_extension("root"))
            .ok()?
            .try_into()
            .ok()?;
        Some((bytes, root))
    });
    let (bytes, root) = match cached {
        Some(c) => c,
        None => {
            let start = Instant::now();
            let mut e = demo_book_with(42, n, &params).engine;
            let root = e.state_root();
            println!("book of {n} accounts built in {:.1?}", start.elapsed());
            let bytes = e
                .snapshot_source()
                .and_then(|s| s.encode())
                .expect("snapshot encodes");
            std::mem::forget(e);
            if let Some(p) = &cache {
                std::fs::write(p, &bytes).expect("write the cache");
                std::fs::write(p.with_extension("root"), root).expect("write the cache");
            }
            (bytes, root)
        }
    };
    println!("snapshot {} MiB", bytes.len() >> 20);
    for _ in 0..repeats {
        let (start, c0) = (Instant::now(), cpu());
        let mut back = Engine::decode_snapshot(&bytes).expect("snapshot decodes");
        let (decode, decode_cpu) = (start.elapsed(), cpu() - c0);
        let back_root = back.state_root();
        let (total, total_cpu) = (start.elapsed(), cpu() - c0);
        assert_eq!(back_root, root, "restored root differs");
        println!(
            "restart: decode {decode:.2?} + first state root {:.2?} = {total:.2?} wall; \
             CPU {decode_cpu:.2?} + {:.2?} = {total_cpu:.2?}",
            total - decode,
            total_cpu - decode_cpu
        );
        // Dropping 1 M accounts is not part of a restart.
        std::mem::forget(back);
    }
}
