//! Work split over the engine's helper threads, with results in order.
//!
//! The helpers are kept for the life of the process, parked between jobs
//! (a `rayon` pool of one thread fewer than the cores). Waking a parked
//! helper puts the job on another core in ~15 µs here; a thread spawned
//! per job (what this module did before) was placed on the spawning
//! thread's core and, on this 2-core VM, started only when that thread
//! stopped or the scheduler moved it: 0.2–3 ms later, while the calling
//! thread did the whole job alone.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};

/// Pieces of work per thread when work is split over threads: enough that
/// a thread that starts late (`map_in_order`) costs the others little
/// waiting, few enough that each piece is still much work.
pub(crate) const SHARES: usize = 8;

/// The helper threads, started on first use; None when no thread could
/// be started (a thread limit, a seccomp filter): then the calling thread
/// does all the work.
fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(crate::state_root::cores().saturating_sub(1).max(1))
            .thread_name(|i| format!("margin-helper-{i}"))
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `main` on this thread while up to `helpers` helper threads each
/// run `help`; returns `main`'s result once all have returned, and raises
/// here a panic from any of them. A helper may start after `main` has
/// begun or even finished (it then finds nothing left), or not at all
/// (no pool), so the work must be claimed by whoever comes first, with
/// `main` ready to do all of it.
pub(crate) fn with_helpers<R>(
    helpers: usize,
    help: impl Fn() + Sync,
    main: impl FnOnce() -> R,
) -> R {
    match pool() {
        Some(pool) if helpers > 0 => pool.in_place_scope(|scope| {
            let help = &help;
            for _ in 0..helpers {
                scope.spawn(move |_| help());
            }
            main()
        }),
        _ => main(),
    }
}

/// `f` of each item, in item order, on up to `threads` threads: this one
/// and helpers, each taking the next item nobody has taken. No thread
/// holds a share fixed in advance, so a helper that starts late takes
/// fewer items instead of making the others wait for its share; split
/// the work into a few items per thread for that.
pub(crate) fn map_in_order<T: Send, R: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let n = items.len();
    // Each item and each result in a cell that exactly one thread (the
    // one that drew its index) takes or fills.
    let cells: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let out: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Relaxed);
            let (Some(cell), Some(slot)) = (cells.get(i), out.get(i)) else {
                return;
            };
            if let Some(item) = cell.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let r = f(item);
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            }
        }
    };
    with_helpers(threads.min(n).saturating_sub(1), work, work);
    // Every index was drawn and every thread has returned: every slot is
    // filled.
    let done: Vec<R> = out
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect();
    debug_assert_eq!(done.len(), n);
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..9).collect();
        for threads in [1, 2, 3, 9, 20] {
            let out = map_in_order(items.clone(), threads, |i| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_millis(9 - i));
                i * 10
            });
            assert_eq!(out, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        }
        assert!(map_in_order(Vec::<u8>::new(), 4, |i| i).is_empty());
    }

    #[test]
    fn items_are_shared_among_the_threads_as_they_come_free() {
        let here = std::thread::current().id();
        let on = |items: usize, threads: usize| -> Vec<std::thread::ThreadId> {
            map_in_order((0..items).collect(), threads, |_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                std::thread::current().id()
            })
        };
        // One thread: everything here.
        assert!(on(6, 1).iter().all(|t| *t == here));
        // Two threads and many items: this thread takes some and a helper
        // others (this one starts at once, the helper when it is up).
        let ids = on(100, 2);
        let mine = ids.iter().filter(|t| **t == here).count();
        assert!(mine > 0 && mine < 100, "{mine} of 100 items here");
    }

    #[test]
    fn a_panic_in_a_thread_is_raised_here() {
        let r = std::panic::catch_unwind(|| {
            map_in_order(vec![1, 2, 3], 3, |i| {
                assert!(i != 3, "item three");
                i
            })
        });
        assert!(r.is_err());
    }
}
