//! Work split over scoped threads, with results in order.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};

/// `f` of each item, in item order, on up to `threads` threads: this one
/// and scoped helpers, each taking the next item nobody has taken. No
/// thread holds a share fixed in advance, so a helper that starts late
/// (waking an idle core takes ~150 µs on a virtual machine) takes fewer
/// items instead of making the others wait for its share; split the work
/// into a few items per thread for that. A helper that cannot be started
/// (a thread limit, a seccomp filter) leaves its items to the others: the
/// same results, later. A panic in any thread is raised again here.
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
    std::thread::scope(|scope| {
        let work = &work;
        let helpers: Vec<_> = (1..threads.min(n))
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
            .collect();
        work();
        for h in helpers {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    // Every index was drawn and its thread joined: every slot is filled.
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
