//! A set of units `(account, unit)`: the units in margin call, the units
//! whose liquidation is deferred.
//!
//! It reads like the `BTreeSet<(AccountId, Unit)>` it replaces (iteration
//! in `(account, unit)` order, equality, the same serde form), but a
//! membership test, an insert or a removal is one hash probe by account
//! and a look at that account's few units. A heavy report examines
//! ~1,400 units and tests or changes the margin-call set for each; as a
//! B-tree those searches were a quarter of the examining thread's time.
//! Nothing iterates a hash map here: `iter` sorts the accounts first, so
//! every reader sees the same order on every member.

use crate::index::IntMap;
use crate::types::{AccountId, Unit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set of `(account, unit)` with ordered reads and hashed lookups.
#[derive(Clone, Default)]
pub struct UnitSet {
    /// Each account's units in order; no empty lists.
    by_account: IntMap<AccountId, Vec<Unit>>,
    len: usize,
}

impl UnitSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Units in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, (account, unit): &(AccountId, Unit)) -> bool {
        self.units_of(*account).binary_search(unit).is_ok()
    }

    /// Adds a unit; false when it was in the set already.
    pub fn insert(&mut self, (account, unit): (AccountId, Unit)) -> bool {
        let units = self.by_account.entry(account).or_default();
        match units.binary_search(&unit) {
            Ok(_) => false,
            Err(at) => {
                units.insert(at, unit);
                self.len += 1;
                true
            }
        }
    }

    /// Removes a unit; false when it was not in the set.
    pub fn remove(&mut self, (account, unit): &(AccountId, Unit)) -> bool {
        let Some(units) = self.by_account.get_mut(account) else {
            return false;
        };
        let Ok(at) = units.binary_search(unit) else {
            return false;
        };
        units.remove(at);
        if units.is_empty() {
            self.by_account.remove(account);
        }
        self.len -= 1;
        true
    }

    /// An account's units in the set, in order.
    pub fn units_of(&self, account: AccountId) -> &[Unit] {
        if self.len == 0 {
            return &[];
        }
        self.by_account.get(&account).map_or(&[], Vec::as_slice)
    }

    /// Every unit in `(account, unit)` order.
    pub fn iter(&self) -> impl Iterator<Item = (AccountId, &Unit)> {
        let mut accounts: Vec<AccountId> = self.by_account.keys().copied().collect();
        accounts.sort_unstable();
        accounts
            .into_iter()
            .flat_map(move |a| self.units_of(a).iter().map(move |u| (a, u)))
    }
}

impl PartialEq for UnitSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.by_account == other.by_account
    }
}

impl Eq for UnitSet {}

impl std::fmt::Debug for UnitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<(AccountId, Unit)> for UnitSet {
    fn from_iter<I: IntoIterator<Item = (AccountId, Unit)>>(iter: I) -> Self {
        let mut set = UnitSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<(AccountId, Unit)> for UnitSet {
    fn extend<I: IntoIterator<Item = (AccountId, Unit)>>(&mut self, iter: I) {
        for u in iter {
            self.insert(u);
        }
    }
}

/// A sequence of `[account, unit]` in order, as the B-tree set wrote it.
impl Serialize for UnitSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for UnitSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<(AccountId, Unit)>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn unit(m: u8) -> Unit {
        match m {
            0 => Unit::Cross,
            m => Unit::Isolated {
                market: format!("M{m}"),
            },
        }
    }

    proptest! {
        /// Any sequence of inserts and removals leaves the set, its
        /// answers, its order and its serde form what a B-tree set gives.
        #[test]
        fn reads_like_the_btree_set(ops in proptest::collection::vec((any::<bool>(), 0u64..40, 0u8..4), 0..400)) {
            let mut set = UnitSet::new();
            let mut model = BTreeSet::new();
            for (add, a, m) in ops {
                let key = (a, unit(m));
                if add {
                    prop_assert_eq!(set.insert(key.clone()), model.insert(key));
                } else {
                    prop_assert_eq!(set.remove(&key), model.remove(&key));
                }
                prop_assert_eq!(set.len(), model.len());
            }
            for a in 0..40 {
                let want: Vec<&Unit> = model.range((a, Unit::Cross)..).take_while(|(x, _)| *x == a).map(|(_, u)| u).collect();
                prop_assert_eq!(set.units_of(a).iter().collect::<Vec<_>>(), want);
                for m in 0..4 {
                    let key = (a, unit(m));
                    prop_assert_eq!(set.contains(&key), model.contains(&key));
                }
            }
            let got: Vec<(AccountId, Unit)> = set.iter().map(|(a, u)| (a, u.clone())).collect();
            let want: Vec<(AccountId, Unit)> = model.iter().cloned().collect();
            prop_assert_eq!(&got, &want);
            let json = serde_json::to_string(&set).unwrap();
            prop_assert_eq!(&json, &serde_json::to_string(&model).unwrap());
            let back: UnitSet = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &set);
            prop_assert_eq!(set.is_empty(), model.is_empty());
        }
    }

    #[test]
    fn equal_sets_are_equal_whatever_the_order_of_inserts() {
        let a: UnitSet = [(2, unit(1)), (1, unit(0)), (2, unit(0))]
            .into_iter()
            .collect();
        let b: UnitSet = [(2, unit(0)), (2, unit(1)), (1, unit(0))]
            .into_iter()
            .collect();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let mut c = b.clone();
        assert!(c.remove(&(2, unit(1))));
        assert_ne!(a, c);
        assert!(!c.remove(&(2, unit(1))));
        assert!(c.units_of(2) == [unit(0)]);
    }
}
