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
fn enabled() -> bool {
    ON.load(Relaxed)
}

/// Accounts (or keys) read ahead at a time: enough misses to overlap, few
/// enough that the batch is still in the first-level cache when used.
pub(crate) const BATCH: usize = 16;

/// Folds `reads` into a byte that `black_box` keeps, so every read
/// happens (and a batch's misses overlap); with reading ahead off the
/// iterator is never run. Each read only needs one byte of its line.
pub(crate) fn touch(reads: impl IntoIterator<Item = u8>) {
    if !enabled() {
        return;
    }
    std::hint::black_box(reads.into_iter().fold(0u8, |x, r| x ^ r));
}

/// The low byte of a number (what `touch` needs of its line).
fn low(x: i128) -> u8 {
    x.to_le_bytes()[0]
}

/// Reads what a health and a leaf read of `a`: the account, its position
/// and collateral maps, and each name's bytes.
fn account(a: &Account) -> u8 {
    let first = |name: &String| name.as_bytes().first().copied().unwrap_or(0);
    let positions = a.positions.iter().map(|(m, p)| low(p.size) ^ first(m));
    let collateral = a.collateral.iter().map(|(asset, q)| low(*q) ^ first(asset));
    positions.chain(collateral).fold(low(a.cash), |x, r| x ^ r)
}

/// Reads ahead every account of a batch.
pub(crate) fn accounts<'a>(batch: impl IntoIterator<Item = &'a Account>) {
    touch(batch.into_iter().map(account));
}

/// Reads ahead the first line of each account of a batch (where an
/// `Arc`'s counts and the cash live).
pub(crate) fn lines<'a>(batch: impl IntoIterator<Item = &'a std::sync::Arc<Account>>) {
    touch(batch.into_iter().map(|a| low(a.cash)));
}

/// Reads ahead the children of each parent in `parents` (`arity` hashes
/// each, in `below`): a tree level's misses, before it is hashed.
pub(crate) fn children(below: &[Hash], parents: &[usize], arity: usize) {
    touch(
        parents
            .iter()
            .filter_map(|p| below.get(arity * p..arity * (p + 1)))
            .flatten()
            .map(|h| h[0]),
    );
}
