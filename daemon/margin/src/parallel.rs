//! Work split over scoped threads, with results in order.

use std::sync::Mutex;

/// `f` of each item, the first on the calling thread and each other on a
/// scoped thread of its own, in item order. An item whose thread cannot
/// be started (a thread limit, a seccomp filter) runs on the calling
/// thread after the first: the same results, later. A panic in any
/// thread is raised again here.
pub(crate) fn map_in_order<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    // Each item in a cell, so one whose thread never started can still
    // be taken here.
    let cells: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let take = |c: &Mutex<Option<T>>| c.lock().unwrap_or_else(|p| p.into_inner()).take();
    std::thread::scope(|scope| {
        let (f, take) = (&f, &take);
        let started: Vec<_> = cells
            .iter()
            .skip(1)
            .map(|c| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || take(c).map(f))
                    .ok()
            })
            .collect();
        let first = cells.first().and_then(take).map(f);
        let rest = cells.iter().skip(1).zip(started).map(|(c, h)| {
            let done = match h.map(|h| h.join()) {
                Some(Ok(r)) => r,
                Some(Err(panic)) => std::panic::resume_unwind(panic),
                None => None,
            };
            done.or_else(|| take(c).map(f))
        });
        first.into_iter().chain(rest.flatten()).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..9).collect();
        let out = map_in_order(items, |i| {
            // Later items finish first.
            std::thread::sleep(std::time::Duration::from_millis(9 - i));
            i * 10
        });
        assert_eq!(out, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert!(map_in_order(Vec::<u8>::new(), |i| i).is_empty());
    }

    #[test]
    fn a_panic_in_a_thread_is_raised_here() {
        let r = std::panic::catch_unwind(|| {
            map_in_order(vec![1, 2, 3], |i| {
                assert!(i != 3, "item three");
                i
            })
        });
        assert!(r.is_err());
    }
}
