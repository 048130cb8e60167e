//! Trigger-price index: which units can have crossed a threshold on a tick.
//!
//! Each unit gets, per feed it depends on, a band `[lo, hi]` around the
//! feed's price inside which it provably stays on the same side of its next
//! threshold (maintenance). The bands split the unit's headroom across its
//! feeds, so moves on several feeds, each inside its band, cannot add up to
//! a crossing (see `engine/bands.rs`).
//! A tick to price p re-examines only units with `lo >= p` or `hi <= p`:
//! two range scans over price buckets, O(buckets visited + crossed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// A small multiplicative hasher for integer keys (account ids, slots,
/// prices). The index's hash maps are lookups only: nothing iterates them
/// in hash order, so the hasher never reaches an event, and the default
/// SipHash cost more than the lookups themselves.
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl Hasher for IntHasher {
    fn finish(&self) -> u64 {
        let z = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z ^ (z >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "hashes the low and the high 64 bits: truncation is the point"
    )]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    fn write_i128(&mut self, i: i128) {
        self.write_u128(i.cast_unsigned());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// Hash map with `IntHasher`.
pub(crate) type IntMap<K, V> = HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// Compact unit key: account and market slot (0 = cross, i+1 = isolated in
/// the market with index i).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub account: u64,
    pub slot: u32,
}

impl Key {
    pub const MAX: Key = Key {
        account: u64::MAX,
        slot: u32::MAX,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Band {
    pub feed: u16,
    pub lo: i128,
    pub hi: i128,
}

/// Band edges of one side on one feed, bucketed by price: a small ordered
/// map of buckets (those near the price are the only ones a tick visits)
/// holding hash maps of units. Inserting or removing a unit touches one
/// bucket, not a path through an ordered set of a million entries.
#[derive(Default, Debug, Clone)]
struct Edges {
    /// Bucket width, fixed at the first edge (a power of ten about 1/10000
    /// of the price then). Any width gives the same answers.
    width: i128,
    buckets: BTreeMap<i128, IntMap<Key, i128>>,
}

impl Edges {
    fn insert(&mut self, key: Key, edge: i128) {
        if self.width == 0 {
            self.width = 10i128.pow(edge.unsigned_abs().max(1).ilog10().saturating_sub(4));
        }
        self.buckets
            .entry(edge.div_euclid(self.width))
            .or_default()
            .insert(key, edge);
    }

    /// Inserts many edges at once into an empty side (a restore): sorted by
    /// bucket, each bucket's map is made at its final size in one pass.
    fn load(&mut self, items: Vec<(i128, Key)>) {
        let Some(&(first, _)) = items.first() else {
            return;
        };
        if self.width == 0 {
            self.width = 10i128.pow(first.unsigned_abs().max(1).ilog10().saturating_sub(4));
        }
        let w = self.width;
        // Each edge's bucket once (an i128 division is dear), then sorted.
        let mut items: Vec<(i128, Key, i128)> = items
            .into_iter()
            .map(|(edge, key)| (edge.div_euclid(w), key, edge))
            .collect();
        items.sort_unstable_by_key(|(bucket, key, _)| (*bucket, *key));
        for run in items.chunk_by(|a, b| a.0 == b.0) {
            let bucket = self.buckets.entry(run[0].0).or_default();
            bucket.reserve(run.len());
            for (_, key, edge) in run {
                bucket.insert(*key, *edge);
            }
        }
    }

    fn remove(&mut self, key: Key, edge: i128) {
        if self.width == 0 {
            return;
        }
        let b = edge.div_euclid(self.width);
        if let Some(m) = self.buckets.get_mut(&b) {
            m.remove(&key);
            if m.is_empty() {
                self.buckets.remove(&b);
            }
        }
    }

    /// Units whose edge is >= price.
    fn at_or_above(&self, price: i128, out: &mut BTreeSet<Key>) {
        if self.width == 0 {
            return;
        }
        for m in self
            .buckets
            .range(price.div_euclid(self.width)..)
            .map(|x| x.1)
        {
            out.extend(m.iter().filter(|(_, e)| **e >= price).map(|(k, _)| *k));
        }
    }

    /// Units whose edge is <= price.
    fn at_or_below(&self, price: i128, out: &mut BTreeSet<Key>) {
        if self.width == 0 {
            return;
        }
        for m in self
            .buckets
            .range(..=price.div_euclid(self.width))
            .map(|x| x.1)
        {
            out.extend(m.iter().filter(|(_, e)| **e <= price).map(|(k, _)| *k));
        }
    }
}

/// The index entries as of one moment (`Index::frozen`).
#[derive(Clone, Debug)]
pub(crate) struct FrozenIndex {
    bands: IntMap<Key, Arc<[Band]>>,
    recheck_at: IntMap<Key, u64>,
    rank_of: IntMap<Key, Rank>,
    /// Feed names by slot.
    pub feed_names: Vec<String>,
}

impl FrozenIndex {
    /// Every indexed unit with its bands, recheck time and rank, by key.
    pub fn entries(&self) -> Vec<Entry> {
        let mut keys: BTreeSet<Key> = self.bands.keys().copied().collect();
        keys.extend(self.recheck_at.keys().copied());
        keys.extend(self.rank_of.keys().copied());
        keys.into_iter()
            .map(|k| {
                (
                    k,
                    self.bands.get(&k).map(|b| b.to_vec()).unwrap_or_default(),
                    self.recheck_at.get(&k).copied(),
                    self.rank_of.get(&k).copied(),
                )
            })
            .collect()
    }
}

/// One unit's index entry: bands, recheck time and rank.
pub(crate) type Entry = (Key, Vec<Band>, Option<u64>, Option<Rank>);

#[derive(Default, Debug, Clone)]
pub(crate) struct Index {
    feed_slots: BTreeMap<String, u16>,
    lower: Vec<Edges>,
    upper: Vec<Edges>,
    /// Shared slices, so a snapshot copies the map, not the bands.
    bands: IntMap<Key, Arc<[Band]>>,
    recheck: BTreeSet<(u64, Key)>,
    recheck_at: IntMap<Key, u64>,
    /// Accounts holding a position, per market (for settlement and ADL).
    pub holders: BTreeMap<String, BTreeSet<u64>>,
    /// The at-risk ranking: units with positions by `Rank`, kept as units
    /// are examined (no scan).
    ranking: BTreeSet<(Rank, Key)>,
    rank_of: IntMap<Key, Rank>,
}

/// A unit's place in the at-risk ranking, from its health at its last
/// examination: below maintenance (class 0) before margin call (1) before
/// the rest (2); within a class, lower equity / maintenance (ppm) first.
/// Class changes always come with an examination (the bands hold both
/// requirements), so the classes are exact; the ratio inside a class is
/// as of the unit's last examination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// 0 below maintenance, 1 in margin call, 2 at or above initial.
    pub class: u8,
    /// Equity / maintenance (ppm), clamped to `i64`.
    pub ratio_ppm: i64,
}

impl Index {
    /// The feed's slot, assigned on first sight; `None` once all
    /// `MAX_FEEDS` slots are taken (the engine refuses more feeds first).
    pub fn feed_slot(&mut self, feed: &str) -> Option<u16> {
        if let Some(s) = self.feed_slots.get(feed) {
            return Some(*s);
        }
        let s = u16::try_from(self.lower.len()).ok()?;
        self.feed_slots.insert(feed.to_string(), s);
        self.lower.push(Edges::default());
        self.upper.push(Edges::default());
        Some(s)
    }

    pub fn remove(&mut self, key: Key) {
        if let Some(old) = self.bands.remove(&key) {
            for b in old.iter() {
                self.lower[b.feed as usize].remove(key, b.lo);
                self.upper[b.feed as usize].remove(key, b.hi);
            }
        }
        if let Some(t) = self.recheck_at.remove(&key) {
            self.recheck.remove(&(t, key));
        }
    }

    /// Drops a unit entirely: bands, recheck and rank.
    pub fn forget(&mut self, key: Key) {
        self.remove(key);
        self.set_rank(key, None);
    }

    pub fn insert(&mut self, key: Key, bands: Vec<Band>, recheck_at: Option<u64>) {
        self.remove(key);
        for b in &bands {
            self.lower[b.feed as usize].insert(key, b.lo);
            self.upper[b.feed as usize].insert(key, b.hi);
        }
        if !bands.is_empty() {
            self.bands.insert(key, bands.into());
        }
        if let Some(t) = recheck_at {
            self.recheck.insert((t, key));
            self.recheck_at.insert(key, t);
        }
    }

    /// Fills an index that holds no unit yet with `entries` (a restore):
    /// what `insert` and `set_rank` per entry would give, with the ordered
    /// sets built in one sorted pass. `Err(key)` names a unit listed twice.
    pub fn load(&mut self, entries: Vec<Entry>) -> Result<(), Key> {
        debug_assert!(self.bands.is_empty() && self.rank_of.is_empty());
        let n = entries.len();
        self.bands.reserve(n);
        self.rank_of.reserve(n);
        let mut ranking = Vec::with_capacity(n);
        let mut recheck = Vec::new();
        let mut lower: Vec<Vec<(i128, Key)>> = vec![Vec::new(); self.lower.len()];
        let mut upper: Vec<Vec<(i128, Key)>> = vec![Vec::new(); self.upper.len()];
        for (key, bands, recheck_at, rank) in entries {
            // A unit listed twice: its second entry finds its first in one of
            // the maps (an entry with none of them says nothing either way).
            if self.bands.contains_key(&key)
                || self.recheck_at.contains_key(&key)
                || self.rank_of.contains_key(&key)
            {
                return Err(key);
            }
            for b in &bands {
                lower[b.feed as usize].push((b.lo, key));
                upper[b.feed as usize].push((b.hi, key));
            }
            if !bands.is_empty() {
                self.bands.insert(key, bands.into());
            }
            if let Some(t) = recheck_at {
                recheck.push((t, key));
                self.recheck_at.insert(key, t);
            }
            if let Some(r) = rank {
                ranking.push((r, key));
                self.rank_of.insert(key, r);
            }
        }
        // Each side of each slot is its own structure: filled on its own
        // thread when there is much to fill.
        let total: usize = lower.iter().map(Vec::len).sum::<usize>() * 2;
        let jobs = self
            .lower
            .iter_mut()
            .zip(lower)
            .chain(self.upper.iter_mut().zip(upper))
            .filter(|(_, items)| !items.is_empty());
        let threads = crate::state_root::threads_for(total);
        if threads < 2 {
            for (edges, items) in jobs {
                edges.load(items);
            }
        } else {
            crate::parallel::map_in_order(jobs.collect(), threads, |(edges, items)| {
                edges.load(items)
            });
        }
        // `collect` sorts and builds the tree in bulk.
        if self.ranking.is_empty() {
            self.ranking = ranking.into_iter().collect();
        } else {
            self.ranking.extend(ranking);
        }
        if self.recheck.is_empty() {
            self.recheck = recheck.into_iter().collect();
        } else {
            self.recheck.extend(recheck);
        }
        Ok(())
    }

    /// Sets every market's holders at once (a restore): `holders` lists
    /// each market's accounts in ascending order.
    pub fn load_holders(&mut self, holders: BTreeMap<String, Vec<u64>>) {
        for (market, ids) in holders {
            match self.holders.get_mut(&market) {
                Some(set) => set.extend(ids),
                None => {
                    self.holders.insert(market, ids.into_iter().collect());
                }
            }
        }
    }

    /// Units whose band on `feed` does not contain `price`.
    pub fn crossed(&self, feed: &str, price: i128, out: &mut BTreeSet<Key>) {
        let Some(&s) = self.feed_slots.get(feed) else {
            return;
        };
        self.lower[s as usize].at_or_above(price, out);
        self.upper[s as usize].at_or_below(price, out);
    }

    /// Units whose time-based recheck is due.
    pub fn due(&self, now_ms: u64, out: &mut BTreeSet<Key>) {
        for (_, k) in self.recheck.range(..=(now_ms, Key::MAX)) {
            out.insert(*k);
        }
    }

    /// A copy of what `entries` reads (maps of shared or plain values: no
    /// band is copied), to list the entries later without the index.
    pub fn frozen(&self) -> FrozenIndex {
        let mut feed_names = vec![String::new(); self.lower.len()];
        for (name, slot) in &self.feed_slots {
            if let Some(n) = feed_names.get_mut(usize::from(*slot)) {
                n.clone_from(name);
            }
        }
        FrozenIndex {
            bands: self.bands.clone(),
            recheck_at: self.recheck_at.clone(),
            rank_of: self.rank_of.clone(),
            feed_names,
        }
    }

    /// Sets (or with `None` drops) a unit's rank.
    pub fn set_rank(&mut self, key: Key, rank: Option<Rank>) {
        match rank {
            Some(r) => {
                if let Some(old) = self.rank_of.insert(key, r) {
                    if old == r {
                        return;
                    }
                    self.ranking.remove(&(old, key));
                }
                self.ranking.insert((r, key));
            }
            None => {
                if let Some(old) = self.rank_of.remove(&key) {
                    self.ranking.remove(&(old, key));
                }
            }
        }
    }

    /// Ranked units, most at risk first.
    pub fn ranked(&self) -> impl Iterator<Item = (Rank, Key)> + '_ {
        self.ranking.iter().copied()
    }

    /// Units in the ranking.
    pub fn ranked_units(&self) -> usize {
        self.rank_of.len()
    }

    /// Forgets every band and recheck, keeping feed slots and holders.
    pub fn clear_bands(&mut self) {
        for s in self.lower.iter_mut().chain(self.upper.iter_mut()) {
            s.buckets.clear();
        }
        self.bands.clear();
        self.recheck.clear();
        self.recheck_at.clear();
        self.ranking.clear();
        self.rank_of.clear();
    }

    pub fn indexed_units(&self) -> usize {
        self.bands.len()
    }

    pub fn add_holder(&mut self, market: &str, account: u64) {
        if let Some(s) = self.holders.get_mut(market) {
            s.insert(account);
        } else {
            self.holders
                .insert(market.to_string(), BTreeSet::from([account]));
        }
    }

    pub fn remove_holder(&mut self, market: &str, account: u64) {
        if let Some(s) = self.holders.get_mut(market) {
            s.remove(&account);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One unit of price (8 decimals).
    const P: i128 = 100_000_000;

    /// Entries over three feeds, enough edges for the threaded load.
    fn entries(n: u64) -> Vec<Entry> {
        let mut z = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            z
        };
        (0..n)
            .map(|account| {
                let key = Key {
                    account,
                    slot: (account % 3) as u32,
                };
                let bands = (0..(next() % 3) as u16)
                    .map(|feed| {
                        let mid = 50_000 * P + i128::from(next() % 1_000_000) * 100_000;
                        let half = i128::from(next() % 10_000_000_000);
                        Band {
                            feed,
                            lo: mid - half,
                            hi: mid + half,
                        }
                    })
                    .collect();
                let recheck = (next() % 4 == 0).then(|| next() % 1_000_000);
                let rank = (next() % 2 == 0).then(|| Rank {
                    class: (next() % 3) as u8,
                    ratio_ppm: (next() % 5_000_000) as i64,
                });
                (key, bands, recheck, rank)
            })
            .collect()
    }

    fn with_slots() -> Index {
        let mut idx = Index::default();
        for f in ["a", "b", "c"] {
            idx.feed_slot(f);
        }
        idx
    }

    /// `load` (sorted, per-bucket, threaded) gives the index that one
    /// `insert` and `set_rank` per entry gives: same entries, same
    /// crossings at every probed price, same ranking and rechecks.
    #[test]
    fn bulk_load_matches_inserting_one_by_one() {
        let all = entries(30_000);
        let mut one = with_slots();
        for (key, bands, recheck, rank) in all.clone() {
            one.insert(key, bands, recheck);
            one.set_rank(key, rank);
        }
        let mut bulk = with_slots();
        bulk.load(all.clone()).unwrap();
        let sorted = |i: &Index| {
            let mut e = i.frozen().entries();
            e.sort_by_key(|x| x.0);
            e
        };
        assert_eq!(sorted(&one), sorted(&bulk));
        assert_eq!(
            one.ranked().collect::<Vec<_>>(),
            bulk.ranked().collect::<Vec<_>>()
        );
        for t in [0u64, 1_000, 500_000, 999_999] {
            let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
            one.due(t, &mut a);
            bulk.due(t, &mut b);
            assert_eq!(a, b, "due at {t}");
        }
        for feed in ["a", "b", "c"] {
            for p in [1i128, 40_000 * P, 50_000 * P, 99_000 * P, 200_000 * P] {
                let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
                one.crossed(feed, p, &mut a);
                bulk.crossed(feed, p, &mut b);
                assert_eq!(a, b, "{feed} at {p}");
            }
        }
        // A unit listed twice is refused, naming it.
        let mut twice = with_slots();
        let mut dup = all[..10].to_vec();
        let first = dup.iter().find(|e| !e.1.is_empty()).cloned().unwrap();
        dup.push(first.clone());
        assert_eq!(twice.load(dup), Err(first.0));
    }
}
