//! Trigger-price index: which units can have crossed a threshold on a tick.
//!
//! Each unit gets, per feed it depends on, a band `[lo, hi]` around the
//! feed's price inside which it provably stays on the same side of its next
//! threshold (initial margin when above it, maintenance below). The bound
//! splits the unit's headroom across its feeds by a common relative move, so
//! moves on several feeds, each inside its band, cannot add up to a crossing.
//! A tick to price p re-examines only units with `lo >= p` or `hi <= p`:
//! two ordered-set range scans, O(log n + crossed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

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

    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }

    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
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
    pub const MIN: Key = Key {
        account: 0,
        slot: 0,
    };
    pub const MAX: Key = Key {
        account: u64::MAX,
        slot: u32::MAX,
    };
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Band {
    pub feed: u16,
    pub lo: i128,
    pub hi: i128,
}

#[derive(Default, Debug, Clone)]
pub(crate) struct Index {
    feed_slots: BTreeMap<String, u16>,
    lower: Vec<BTreeSet<(i128, Key)>>,
    upper: Vec<BTreeSet<(i128, Key)>>,
    bands: IntMap<Key, Vec<Band>>,
    recheck: BTreeSet<(u64, Key)>,
    recheck_at: IntMap<Key, u64>,
    /// Accounts holding a position, per market (for settlement and ADL).
    pub holders: BTreeMap<String, BTreeSet<u64>>,
}

impl Index {
    pub fn feed_slot(&mut self, feed: &str) -> u16 {
        if let Some(s) = self.feed_slots.get(feed) {
            return *s;
        }
        let s = self.lower.len() as u16;
        self.feed_slots.insert(feed.to_string(), s);
        self.lower.push(BTreeSet::new());
        self.upper.push(BTreeSet::new());
        s
    }

    pub fn remove(&mut self, key: Key) {
        if let Some(old) = self.bands.remove(&key) {
            for b in old {
                self.lower[b.feed as usize].remove(&(b.lo, key));
                self.upper[b.feed as usize].remove(&(b.hi, key));
            }
        }
        if let Some(t) = self.recheck_at.remove(&key) {
            self.recheck.remove(&(t, key));
        }
    }

    pub fn insert(&mut self, key: Key, bands: Vec<Band>, recheck_at: Option<u64>) {
        self.remove(key);
        for b in &bands {
            self.lower[b.feed as usize].insert((b.lo, key));
            self.upper[b.feed as usize].insert((b.hi, key));
        }
        if !bands.is_empty() {
            self.bands.insert(key, bands);
        }
        if let Some(t) = recheck_at {
            self.recheck.insert((t, key));
            self.recheck_at.insert(key, t);
        }
    }

    /// Units whose band on `feed` does not contain `price`.
    pub fn crossed(&self, feed: &str, price: i128, out: &mut BTreeSet<Key>) {
        let Some(&s) = self.feed_slots.get(feed) else {
            return;
        };
        for (_, k) in self.lower[s as usize].range((price, Key::MIN)..) {
            out.insert(*k);
        }
        for (_, k) in self.upper[s as usize].range(..=(price, Key::MAX)) {
            out.insert(*k);
        }
    }

    /// Units whose time-based recheck is due.
    pub fn due(&self, now_ms: u64, out: &mut BTreeSet<Key>) {
        for (_, k) in self.recheck.range(..=(now_ms, Key::MAX)) {
            out.insert(*k);
        }
    }

    /// Every indexed unit with its bands and recheck time.
    pub fn entries(&self) -> Vec<(Key, Vec<Band>, Option<u64>)> {
        let mut keys: BTreeSet<Key> = self.bands.keys().copied().collect();
        keys.extend(self.recheck_at.keys().copied());
        keys.into_iter()
            .map(|k| {
                (
                    k,
                    self.bands.get(&k).cloned().unwrap_or_default(),
                    self.recheck_at.get(&k).copied(),
                )
            })
            .collect()
    }

    pub fn feed_name(&self, slot: u16) -> Option<&str> {
        self.feed_slots
            .iter()
            .find(|(_, s)| **s == slot)
            .map(|(f, _)| f.as_str())
    }

    /// Forgets every band and recheck, keeping feed slots and holders.
    pub fn clear_bands(&mut self) {
        for s in self.lower.iter_mut().chain(self.upper.iter_mut()) {
            s.clear();
        }
        self.bands.clear();
        self.recheck.clear();
        self.recheck_at.clear();
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
