//! CPU priority of the node's threads.
//!
//! A round is a burst of work on every member at once, right after its slot;
//! on a small or shared machine whatever else runs then (the price sources,
//! the API, the margin engine applying the previous report, the store's
//! commits) delays the round's messages. `[node] background_nice` gives every
//! thread but the round driver's a higher nice value, so the scheduler hands
//! the CPU to the round first and the rest catches up a few milliseconds
//! later. On Linux the nice value is a per-thread attribute; raising it needs
//! no privilege. Elsewhere this does nothing.

use std::sync::atomic::{AtomicI32, Ordering};

static BACKGROUND_NICE: AtomicI32 = AtomicI32::new(0);

/// Sets the nice value [`enter_background`] gives a thread (0: none).
pub fn set_background_nice(nice: u8) {
    BACKGROUND_NICE.store(i32::from(nice.min(19)), Ordering::Relaxed);
}

/// Marks the calling thread as background work: it takes the configured
/// nice value. Called at the start of the worker, blocking-pool and store
/// threads; the round driver's thread never calls it.
pub fn enter_background() {
    let nice = BACKGROUND_NICE.load(Ordering::Relaxed);
    if nice > 0 {
        set_own_nice(nice);
    }
}

/// The calling thread's nice value, if the platform has one.
pub fn own_nice() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn set_own_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice) {
        tracing::warn!(nice, error = %e, "cannot lower this thread's CPU priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn a_background_thread_takes_the_nice_value_and_others_keep_theirs() {
        set_background_nice(7);
        let before = own_nice().expect("nice value");
        let niced = std::thread::spawn(|| {
            enter_background();
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(niced, Some(before.max(7)));
        assert_eq!(own_nice(), Some(before), "the calling thread is untouched");
        set_background_nice(0);
        let plain = std::thread::spawn(|| {
            enter_background();
            own_nice()
        })
        .join()
        .expect("thread");
        assert_eq!(plain, Some(before));
    }
}
