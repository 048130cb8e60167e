//! The margin state root: a Keccak-256 commitment to the engine's state, and
//! account proofs against it. Byte layout in docs/MARGIN.md ("State root").
//!
//! ```text
//!  state_root = keccak(b"sibyl/margin/state/v2" ‖ accounts_root ‖ globals_hash)
//!  accounts_root = keccak(0x02 ‖ count:u64 ‖ top)      top: 4-ary tree over account slots
//!  node = keccak(0x01 ‖ c0 ‖ c1 ‖ c2 ‖ c3)    leaf = keccak(0x00 ‖ account_bytes)   padding = 32 zero bytes
//! ```
//!
//! Accounts sit at their slot (order of creation), so a new account appends
//! a leaf and a change rehashes one path. A node has four children: its
//! 129-byte preimage fits one Keccak block (136 bytes), so it costs one
//! permutation like a binary node, and a path is half as long (10 nodes at
//! a million accounts, not 20). The tree here is the maintained form;
//! `verify_account_proof` needs none of it.

use crate::types::{Account, AccountId, Greeks, GuardReason, Position, Unit};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use std::collections::BTreeMap;

/// A 32-byte Keccak-256 digest.
pub type Hash = [u8; 32];

/// Domain tag of the state root.
pub const STATE_ROOT_DOMAIN: &[u8] = b"sibyl/margin/state/v2";
/// Children per node of the account tree.
pub const ARITY: usize = 4;
/// Sibling hashes a proof carries per level (`ARITY - 1`).
const LEVEL_SIBLINGS: u32 = 3;
const LEAF: u8 = 0x00;
const NODE: u8 = 0x01;
const ACCOUNTS: u8 = 0x02;

/// Keccak-256 of the concatenated parts.
pub fn keccak(parts: &[&[u8]]) -> Hash {
    keccak_of(parts.iter().copied())
}

/// Keccak-256 of the concatenated parts, from an iterator (no list built).
fn keccak_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Hash {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Appends the canonical bytes of engine values (big-endian integers,
/// strings as u16 length + UTF-8, maps in key order as u32 count + entries).
#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub fn i128(&mut self, v: i128) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    /// Lengths beyond u16/u32 saturate: no engine name or list comes near
    /// them, and saturating keeps the encoding total (never a panic).
    pub fn str(&mut self, s: &str) {
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    pub fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    pub fn opt_i128(&mut self, v: Option<i128>) {
        match v {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.i128(x);
            }
        }
    }
    pub fn balances(&mut self, cash: i128, collateral: &BTreeMap<String, i128>) {
        self.i128(cash);
        self.count(collateral.len());
        for (asset, qty) in collateral {
            self.str(asset);
            self.i128(*qty);
        }
    }
    pub fn positions(&mut self, positions: &BTreeMap<String, Position>) {
        self.count(positions.len());
        for (market, p) in positions {
            self.str(market);
            self.i128(p.size);
            self.i128(p.quote);
            self.opt_i128(p.isolated);
        }
    }
    /// An account's owner key and nonce: nothing for an account without an
    /// owner (whose nonce is always 0), so its bytes are those from before
    /// account keys; else `0x01 ‖ owner:32 ‖ nonce:u64`.
    pub fn keys(&mut self, acct: &Account) {
        if let Some(owner) = &acct.owner {
            self.u8(1);
            self.0.extend_from_slice(owner);
            self.u64(acct.nonce);
        }
    }
    pub fn unit(&mut self, u: &Unit) {
        match u {
            Unit::Cross => self.u8(0),
            Unit::Isolated { market } => {
                self.u8(1);
                self.str(market);
            }
        }
    }
    pub fn greeks(&mut self, g: &Greeks) {
        for x in [g.delta, g.gamma, g.vega, g.theta, g.rho] {
            self.i128(x);
        }
    }
    pub fn guard(&mut self, g: Option<&GuardReason>) {
        match g {
            None => self.u8(0),
            Some(GuardReason::NoPrice) => self.u8(1),
            Some(GuardReason::Stale {
                last_ms,
                now_ms,
                max_ms,
            }) => {
                self.u8(2);
                self.u64(*last_ms);
                self.u64(*now_ms);
                self.u64(*max_ms);
            }
            Some(GuardReason::ConfidenceTooWide { ratio_ppm, max_ppm }) => {
                self.u8(3);
                self.i128(*ratio_ppm);
                self.u32(*max_ppm);
            }
            Some(GuardReason::Status { status, flags }) => {
                self.u8(5);
                self.u8(*status);
                self.u16(*flags);
            }
            Some(GuardReason::Jump {
                price,
                average,
                deviation_ppm,
                max_ppm,
            }) => {
                self.u8(4);
                self.i128(*price);
                self.i128(*average);
                self.i128(*deviation_ppm);
                self.u32(*max_ppm);
            }
        }
    }
}

/// One account as the state root commits to it: balances, positions,
/// which of its margin units are in margin call or have a deferred
/// liquidation, and its owner key and signed-command nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    /// Account id.
    pub account: AccountId,
    /// Cash, collateral and positions.
    pub state: Account,
    /// Units in margin call, in order.
    pub margin_calls: Vec<Unit>,
    /// Units whose liquidation a guard deferred, in order.
    pub deferred: Vec<Unit>,
}

impl AccountState {
    /// The leaf's preimage after its 0x00 tag: id, cash, collateral,
    /// positions, margin-call units, deferred units, and for an account
    /// with an owner key `0x01 ‖ owner ‖ nonce`.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        encode_account(
            &mut e,
            self.account,
            &self.state,
            &self.margin_calls,
            &self.deferred,
        );
        e.0
    }

    /// Inverse of [`AccountState::encode`]: refuses truncated, trailing or
    /// non-canonical bytes (`EngineError::SnapshotCorrupt` with the reason).
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::error::EngineError> {
        crate::engine::snapshot::decode_account_state(bytes)
    }

    /// `keccak(0x00 ‖ encode())`.
    pub fn leaf(&self) -> Hash {
        keccak(&[&[LEAF], &self.encode()])
    }
}

/// `AccountState::encode` from borrowed parts, into `e`.
pub(crate) fn encode_account(
    e: &mut Enc,
    id: AccountId,
    acct: &Account,
    margin_calls: &[Unit],
    deferred: &[Unit],
) {
    e.u64(id);
    e.balances(acct.cash, &acct.collateral);
    e.positions(&acct.positions);
    for units in [margin_calls, deferred] {
        e.count(units.len());
        for u in units {
            e.unit(u);
        }
    }
    e.keys(acct);
}

/// The leaf of an account from borrowed parts, reusing `buf`.
pub(crate) fn account_leaf(
    buf: &mut Enc,
    id: AccountId,
    acct: &Account,
    margin_calls: &[Unit],
    deferred: &[Unit],
) -> Hash {
    buf.0.clear();
    buf.0.push(LEAF);
    encode_account(buf, id, acct, margin_calls, deferred);
    keccak(&[&buf.0])
}

/// Below this many hashes to compute, one thread does it (handing work to
/// the helpers costs more than it saves).
const PARALLEL_MIN: usize = 1 << 15;

/// How many threads to hash `n` items with: the machine's cores (at most
/// 8) for big batches, else 1.
pub(crate) fn threads_for(n: usize) -> usize {
    if n < PARALLEL_MIN {
        return 1;
    }
    cores()
}

/// The machine's cores, at most 8, read once (`available_parallelism`
/// reads cgroup files: tens of microseconds a call).
pub(crate) fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |c| c.get().min(8)))
}

/// The level above `prev` (a multiple of four nodes): each group of four
/// hashed, split into `threads` runs of groups.
fn parent_level(prev: &[Hash], threads: usize) -> Vec<Hash> {
    let groups = |s: &[Hash]| -> Vec<Hash> { s.chunks(ARITY).map(node).collect() };
    if threads < 2 {
        return groups(prev);
    }
    // Runs of whole groups, so no group is split; a few per thread, so a
    // thread that starts late takes fewer (`map_in_order`).
    let run = prev
        .len()
        .div_ceil(threads * crate::parallel::SHARES)
        .next_multiple_of(ARITY);
    let parts = crate::parallel::map_in_order(prev.chunks(run).collect(), threads, groups);
    parts.concat()
}

/// Threads for an incremental update of `n` leaves: below
/// [`UPDATE_PARALLEL_MIN`] one (waking a parked helper takes ~15 µs).
pub(crate) fn update_threads(n: usize) -> usize {
    if n < UPDATE_PARALLEL_MIN {
        return 1;
    }
    cores()
}

/// Changed leaves from which an update is split over threads: each path
/// is ~10 hashes (~3 µs at a million accounts).
const UPDATE_PARALLEL_MIN: usize = 128;

/// Sets `changed` (slot, hash; sorted, slots inside `levels[0]`) and
/// rehashes their paths in `levels` (leaves first, each level a quarter
/// of the one below), once per shared node.
fn update_paths(levels: &mut [&mut [Hash]], changed: &[(usize, Hash)]) {
    let mut dirty: Vec<usize> = Vec::with_capacity(changed.len());
    if let Some(leaves) = levels.first_mut() {
        for (slot, h) in changed {
            if let Some(l) = leaves.get_mut(*slot) {
                *l = *h;
                dirty.push(*slot);
            }
        }
    }
    for d in 1..levels.len() {
        let mut parents: Vec<usize> = Vec::with_capacity(dirty.len());
        for i in &dirty {
            let p = i / ARITY;
            if parents.last() != Some(&p) {
                parents.push(p);
            }
        }
        let (lower, upper) = levels.split_at_mut(d);
        let (Some(below), Some(here)) = (lower.last(), upper.first_mut()) else {
            return;
        };
        crate::warm::children(below, &parents, ARITY);
        for p in &parents {
            if let (Some(children), Some(slot)) =
                (below.get(ARITY * p..ARITY * (p + 1)), here.get_mut(*p))
            {
                *slot = node(children);
            }
        }
        dirty = parents;
    }
}

/// `keccak(0x01 ‖ c0 ‖ c1 ‖ c2 ‖ c3)`: 129 bytes, one Keccak block.
/// `children` holds [`ARITY`] hashes (fewer only from a malformed
/// caller, hashed as given).
fn node(children: &[Hash]) -> Hash {
    keccak_of(std::iter::once(&[NODE][..]).chain(children.iter().map(|c| &c[..])))
}

/// Levels of nodes above the leaves in a tree over `count` leaves:
/// ceil(log4(max(count, 1))). The leaves are padded to `4^depth`.
pub fn depth(count: u64) -> u32 {
    count
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .div_ceil(2)
}

/// Leaves in a full tree over `count` (at least one): `4^depth(count)`.
fn width_for(count: usize) -> usize {
    1usize << (2 * depth(count as u64))
}

/// `keccak(0x02 ‖ count ‖ top)`.
pub fn accounts_root(count: u64, top: &Hash) -> Hash {
    keccak(&[&[ACCOUNTS], &count.to_be_bytes(), top])
}

/// `keccak(domain ‖ accounts_root ‖ globals_hash)`.
pub fn state_root(accounts_root: &Hash, globals_hash: &Hash) -> Hash {
    keccak(&[STATE_ROOT_DOMAIN, accounts_root, globals_hash])
}

/// An account's Merkle path to the state root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProof {
    /// The account's slot (order of creation, from 0).
    pub slot: u64,
    /// Accounts in the tree.
    pub count: u64,
    /// Sibling hashes from the leaf up: at each of the `depth(count)`
    /// levels the node's three other children, in child order.
    pub siblings: Vec<Hash>,
    /// Hash of everything that is not an account (see `Engine`'s globals).
    pub globals_hash: Hash,
}

impl AccountProof {
    /// Bytes a consumer needs besides the account state: slot, count,
    /// siblings and the globals hash.
    pub fn size_bytes(&self) -> usize {
        8 + 8 + 32 * self.siblings.len() + 32
    }
}

/// Why an account proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The slot lies outside the tree.
    #[error("proof slot {slot} is outside a tree of {count} accounts: the proof is malformed")]
    SlotOutOfRange {
        /// Slot.
        slot: u64,
        /// Accounts.
        count: u64,
    },
    /// The path has the wrong length for the tree.
    #[error("proof has {got} sibling hashes, a tree of {count} accounts needs {want}")]
    PathLength {
        /// Siblings given.
        got: usize,
        /// Siblings needed.
        want: u32,
        /// Accounts.
        count: u64,
    },
    /// The recomputed root differs.
    #[error(
        "account {account}: the proof leads to root {got}, not {want}: the state or the proof is not from that root"
    )]
    RootMismatch {
        /// Account.
        account: AccountId,
        /// Root recomputed from state and proof (hex).
        got: String,
        /// Root expected (hex).
        want: String,
    },
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// The state root an account state and its proof lead to.
pub fn root_from_proof(state: &AccountState, proof: &AccountProof) -> Result<Hash, ProofError> {
    if proof.slot >= proof.count {
        return Err(ProofError::SlotOutOfRange {
            slot: proof.slot,
            count: proof.count,
        });
    }
    let want = depth(proof.count) * LEVEL_SIBLINGS;
    if proof.siblings.len() != want as usize {
        return Err(ProofError::PathLength {
            got: proof.siblings.len(),
            want,
            count: proof.count,
        });
    }
    let mut cur = state.leaf();
    let mut index = proof.slot;
    for others in proof.siblings.chunks(ARITY - 1) {
        // This node's place among its parent's children; the others fill
        // the remaining places in order.
        let at = usize::try_from(index % ARITY as u64).unwrap_or_default();
        let mut children = [[0u8; 32]; ARITY];
        let mut rest = others.iter();
        for (place, child) in children.iter_mut().enumerate() {
            *child = if place == at {
                cur
            } else {
                rest.next().copied().unwrap_or_default()
            };
        }
        cur = node(&children);
        index /= ARITY as u64;
    }
    Ok(state_root(
        &accounts_root(proof.count, &cur),
        &proof.globals_hash,
    ))
}

/// Checks that `state` with `proof` leads to `root`.
pub fn verify_account_proof(
    root: &Hash,
    state: &AccountState,
    proof: &AccountProof,
) -> Result<(), ProofError> {
    let got = root_from_proof(state, proof)?;
    if &got != root {
        return Err(ProofError::RootMismatch {
            account: state.account,
            got: hex(&got),
            want: hex(root),
        });
    }
    Ok(())
}

/// The maintained 4-ary tree over account leaves: `levels[0]` holds the
/// leaves padded with zero hashes to a power of four, `levels[d]` the
/// nodes of height `d`; the last level is the top.
#[derive(Clone, Debug, Default)]
pub(crate) struct AccountTree {
    count: usize,
    levels: Vec<Vec<Hash>>,
}

impl AccountTree {
    /// Builds the tree over `leaves` (slot order), the wide levels split
    /// over the machine's cores.
    pub fn build(leaves: Vec<Hash>) -> Self {
        Self::build_with(leaves, true)
    }

    /// `build` on one thread (the reference the tests compare with).
    pub fn build_serial(leaves: Vec<Hash>) -> Self {
        Self::build_with(leaves, false)
    }

    fn build_with(leaves: Vec<Hash>, parallel: bool) -> Self {
        let count = leaves.len();
        let cap = width_for(leaves.len());
        let mut level = leaves;
        level.resize(cap, [0; 32]);
        let mut levels = vec![level];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let prev = levels.last().map(Vec::as_slice).unwrap_or_default();
            let threads = if parallel { threads_for(prev.len()) } else { 1 };
            levels.push(parent_level(prev, threads));
        }
        AccountTree { count, levels }
    }

    pub fn count(&self) -> u64 {
        self.count as u64
    }

    /// Sets leaves (slot, hash), sorted by slot with no repeats, slots below
    /// `count`, and rehashes their paths once per shared node. Many
    /// changes (a report that moves hundreds of accounts) are split over
    /// the machine's cores by subtree: the same nodes either way.
    pub fn update(&mut self, changed: &[(usize, Hash)]) {
        let threads = update_threads(changed.len());
        self.update_with(changed, threads);
    }

    fn update_with(&mut self, changed: &[(usize, Hash)], threads: usize) {
        let width = self.levels.first().map_or(0, Vec::len);
        // Subtrees: a power of two, each at least two leaves wide (a level
        // `parts` divides is cut into whole groups of four below it); a
        // few per thread, so a thread that starts late takes fewer.
        let parts = if threads < 2 {
            1
        } else {
            ((threads * crate::parallel::SHARES).next_power_of_two())
                .min(width / 2)
                .max(1)
        };
        if parts < 2 {
            let mut levels: Vec<&mut [Hash]> =
                self.levels.iter_mut().map(Vec::as_mut_slice).collect();
            update_paths(&mut levels, changed);
            return;
        }
        // Levels at least `parts` wide split into `parts` subtrees; the
        // levels above them (narrower) are rehashed after, on this thread.
        let split = self.levels.iter().take_while(|l| l.len() >= parts).count();
        let mut per: Vec<Vec<&mut [Hash]>> = (0..parts).map(|_| Vec::new()).collect();
        for level in self.levels.iter_mut().take(split) {
            let n = level.len() / parts;
            for (j, chunk) in level.chunks_mut(n).enumerate() {
                per[j].push(chunk);
            }
        }
        let span = width / parts;
        let mut runs: Vec<Vec<(usize, Hash)>> = vec![Vec::new(); parts];
        for (slot, h) in changed {
            if let Some(run) = runs.get_mut(slot / span) {
                run.push((slot % span, *h));
            }
        }
        let touched: Vec<usize> = (0..parts).filter(|j| !runs[*j].is_empty()).collect();
        let jobs: Vec<_> = per
            .iter_mut()
            .zip(&runs)
            .filter(|(_, run)| !run.is_empty())
            .collect();
        crate::parallel::map_in_order(jobs, threads, |(levels, run)| update_paths(levels, run));
        // Above the subtrees: their top nodes (one or more per subtree on
        // the narrowest split level) changed where a run did.
        let mut levels: Vec<&mut [Hash]> = self
            .levels
            .iter_mut()
            .skip(split - 1)
            .map(Vec::as_mut_slice)
            .collect();
        let Some(top) = levels.first() else {
            return;
        };
        let per_top = top.len() / parts;
        let tops: Vec<(usize, Hash)> = touched
            .iter()
            .flat_map(|j| j * per_top..(j + 1) * per_top)
            .filter_map(|i| Some((i, *top.get(i)?)))
            .collect();
        update_paths(&mut levels, &tops);
    }

    /// Whether `n` more leaves fit without growing the padded width.
    pub fn has_room(&self, n: usize) -> bool {
        let cap = self.levels.first().map_or(0, Vec::len);
        self.count.saturating_add(n) <= cap
    }

    /// Appends leaves that fit (`has_room`) and rehashes their paths.
    pub fn append(&mut self, leaves: &[Hash]) {
        let start = self.count;
        self.count += leaves.len();
        let changed: Vec<(usize, Hash)> = leaves
            .iter()
            .enumerate()
            .map(|(i, h)| (start + i, *h))
            .collect();
        self.update(&changed);
    }

    pub fn accounts_root(&self) -> Hash {
        let top = self
            .levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32]);
        accounts_root(self.count(), &top)
    }

    /// Sibling hashes of `slot` from the leaf up: per level the three
    /// other children of the node's parent, in child order.
    pub fn path(&self, slot: usize) -> Vec<Hash> {
        let mut out = Vec::with_capacity(self.levels.len() * (ARITY - 1));
        let mut i = slot;
        for level in self.levels.iter().take(self.levels.len().saturating_sub(1)) {
            let first = i - i % ARITY;
            for j in (first..first + ARITY).filter(|j| *j != i) {
                out.push(level.get(j).copied().unwrap_or([0; 32]));
            }
            i /= ARITY;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        AccountState {
            account: i,
            ..AccountState::default()
        }
        .leaf()
    }

    /// The tree built over several threads is the one built on one, level
    /// by level, for sizes around the threshold and uneven splits.
    #[test]
    fn parallel_build_matches_the_serial_one() {
        for n in [PARALLEL_MIN - 1, PARALLEL_MIN, 3 * PARALLEL_MIN + 5] {
            let leaves: Vec<Hash> = (0..n as u64).map(|i| keccak(&[&i.to_be_bytes()])).collect();
            let serial = AccountTree::build_serial(leaves.clone());
            for threads in [2, 3, 7] {
                let mut level = serial.levels[0].clone();
                for (d, want) in serial.levels.iter().enumerate().skip(1) {
                    level = parent_level(&level, threads);
                    assert_eq!(&level, want, "n = {n}, {threads} threads, level {d}");
                }
            }
            let parallel = AccountTree::build(leaves);
            assert_eq!(parallel.levels, serial.levels, "n = {n}");
        }
    }

    /// An update split over subtrees gives the nodes of one on a single
    /// thread: changes in one subtree only, in all, at the edges, and
    /// trees narrower than the thread count.
    #[test]
    fn parallel_update_matches_the_serial_one() {
        for n in [1usize, 2, 3, 4, 5, 64, 1_000, 4_097, 16_385] {
            let leaves: Vec<Hash> = (0..n as u64).map(|i| keccak(&[&i.to_be_bytes()])).collect();
            let base = AccountTree::build_serial(leaves);
            let sets: Vec<Vec<usize>> = vec![
                (0..n).step_by(7).collect(),
                (0..n / 3).collect(),
                (n - n / 4..n).collect(),
                vec![0, n - 1],
                (0..n).collect(),
            ];
            for set in sets {
                let changed: Vec<(usize, Hash)> = set
                    .iter()
                    .map(|s| (*s, keccak(&[b"x", &s.to_be_bytes()])))
                    .collect();
                let mut serial = base.clone();
                serial.update_with(&changed, 1);
                let mut fresh_leaves = base.levels[0][..n].to_vec();
                for (s, h) in &changed {
                    fresh_leaves[*s] = *h;
                }
                assert_eq!(
                    serial.levels,
                    AccountTree::build_serial(fresh_leaves).levels,
                    "n = {n}"
                );
                for threads in [2, 3, 4, 8] {
                    let mut par = base.clone();
                    par.update_with(&changed, threads);
                    assert_eq!(par.levels, serial.levels, "n = {n}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn incremental_tree_matches_a_fresh_build() {
        for n in [0usize, 1, 2, 3, 4, 5, 8, 13, 16, 17, 70] {
            let leaves: Vec<Hash> = (0..n as u64).map(leaf).collect();
            let mut t = AccountTree::build(leaves[..n / 2].to_vec());
            for l in &leaves[n / 2..] {
                if !t.has_room(1) {
                    let mut all: Vec<Hash> = t.levels[0][..t.count].to_vec();
                    all.push(*l);
                    t = AccountTree::build(all);
                } else {
                    t.append(&[*l]);
                }
            }
            let fresh = AccountTree::build(leaves.clone());
            assert_eq!(t.accounts_root(), fresh.accounts_root(), "n = {n}");
            // Every path verifies, and only for its own slot.
            let g = [7u8; 32];
            let root = state_root(&fresh.accounts_root(), &g);
            for s in 0..n {
                let st = AccountState {
                    account: s as u64,
                    ..AccountState::default()
                };
                let mut proof = AccountProof {
                    slot: s as u64,
                    count: n as u64,
                    siblings: fresh.path(s),
                    globals_hash: g,
                };
                assert_eq!(verify_account_proof(&root, &st, &proof), Ok(()));
                if n > 1 {
                    proof.slot = ((s + 1) % n) as u64;
                    assert!(verify_account_proof(&root, &st, &proof).is_err());
                }
            }
        }
    }

    /// The layout docs/MARGIN.md gives, computed by hand for five
    /// accounts: two levels of four-child nodes over leaves padded with
    /// zero hashes to 16, and each proof three siblings a level.
    #[test]
    fn five_accounts_hash_as_the_docs_say() {
        let l: Vec<Hash> = (0..5).map(leaf).collect();
        let z = [0u8; 32];
        let n = |c: [&Hash; 4]| keccak(&[&[0x01], c[0], c[1], c[2], c[3]]);
        let a = n([&l[0], &l[1], &l[2], &l[3]]);
        let b = n([&l[4], &z, &z, &z]);
        let zz = n([&z, &z, &z, &z]);
        let top = n([&a, &b, &zz, &zz]);
        let tree = AccountTree::build(l.clone());
        assert_eq!(
            tree.accounts_root(),
            keccak(&[&[0x02], &5u64.to_be_bytes(), &top])
        );
        assert_eq!(tree.path(4), vec![z, z, z, a, zz, zz]);
        assert_eq!(tree.path(2), vec![l[0], l[1], l[3], b, zz, zz]);
        let g = [9u8; 32];
        let proof = AccountProof {
            slot: 4,
            count: 5,
            siblings: tree.path(4),
            globals_hash: g,
        };
        let st = AccountState {
            account: 4,
            ..AccountState::default()
        };
        let root = state_root(&tree.accounts_root(), &g);
        assert_eq!(
            root,
            keccak(&[b"sibyl/margin/state/v2", &tree.accounts_root(), &g])
        );
        assert_eq!(verify_account_proof(&root, &st, &proof), Ok(()));
        assert_eq!(proof.size_bytes(), 8 + 8 + 6 * 32 + 32);
    }

    #[test]
    fn depth_counts_levels_of_four() {
        let got: Vec<u32> = [0u64, 1, 2, 4, 5, 16, 17, 64, 65, 1 << 20, (1 << 20) + 1]
            .iter()
            .map(|c| depth(*c))
            .collect();
        assert_eq!(got, vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 10, 11]);
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let st = AccountState::default();
        let p = AccountProof {
            slot: 3,
            count: 3,
            siblings: vec![],
            globals_hash: [0; 32],
        };
        assert!(matches!(
            root_from_proof(&st, &p),
            Err(ProofError::SlotOutOfRange { .. })
        ));
        let p = AccountProof { slot: 0, ..p };
        assert!(matches!(
            root_from_proof(&st, &p),
            Err(ProofError::PathLength { want: 3, .. })
        ));
    }
}
