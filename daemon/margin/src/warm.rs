//! Reading ahead. At a million accounts most of a health, a leaf or a
//! tree path is waiting for memory: an account, its positions, their
//! market names, one cache miss after another. A loop that only reads
//! those bytes for a batch of accounts is short enough per account that
//! the processor has the batch's misses in flight together; the real work
//! on the batch then finds them in cache. Nothing here changes a value:
//! the reads are folded into a number that `black_box` keeps from being
//! optimised away.

use crate::state_root::Hash;
use crate::types::Account;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

static ON: AtomicBool = AtomicBool::new(true);

/// Tuning switch, for measuring what reading ahead saves (the benchmark
/// alternates it between reports): off, the functions here read nothing.
/// Process-wide; changes no result, only the time.
pub fn set_read_ahead(on: bool) {
    ON.store(on, Relaxed);
}

/// Whether reading ahead is on (`set_read_ahead`).
pub(crate) fn enabled() -> bool {
    ON.load(Relaxed)
}

/// Accounts (or keys) read ahead at a time: enough misses to overlap, few
/// enough that the batch is still in the first-level cache when used.
pub(crate) const BATCH: usize = 16;

/// Reads what a health and a leaf read of `a`: the account, its position
/// and collateral maps, and each name's bytes.
fn account(a: &Account) -> i128 {
    let mut x = a.cash;
    for (m, p) in &a.positions {
        x ^= p.size ^ i128::from(m.as_bytes().first().copied().unwrap_or(0));
    }
    for (asset, q) in &a.collateral {
        x ^= *q ^ i128::from(asset.as_bytes().first().copied().unwrap_or(0));
    }
    x
}

/// Reads ahead every account of a batch.
pub(crate) fn accounts<'a>(batch: impl IntoIterator<Item = &'a Account>) {
    if !enabled() {
        return;
    }
    let mut x = 0i128;
    for a in batch {
        x ^= account(a);
    }
    std::hint::black_box(x);
}

/// Reads ahead the first line of each account of a batch (where an
/// `Arc`'s counts and the cash live).
pub(crate) fn lines<'a>(batch: impl IntoIterator<Item = &'a std::sync::Arc<Account>>) {
    if !enabled() {
        return;
    }
    let mut x = 0i128;
    for a in batch {
        x ^= a.cash;
    }
    std::hint::black_box(x);
}

/// Reads ahead the children of each parent in `parents` (`arity` hashes
/// each, in `below`): a tree level's misses, before it is hashed.
pub(crate) fn children(below: &[Hash], parents: &[usize], arity: usize) {
    if !enabled() {
        return;
    }
    let mut x = 0u8;
    for p in parents {
        if let Some(c) = below.get(arity * p..arity * (p + 1)) {
            for h in c {
                x ^= h[0];
            }
        }
    }
    std::hint::black_box(x);
}
