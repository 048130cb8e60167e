//! The account index: every account by id, the same `Arc`s as
//! `State::accounts` (derived, not state). A lookup is one hash probe
//! instead of a walk down a million-entry B-tree.
//!
//! A pass that computes healths on helper threads (`drain_pending`)
//! shares the map with them as it stood when the pass began
//! (`begin_pass`), so a helper reads an account with no copy and no
//! reference count taken. While it is shared, a change (liquidation,
//! deleveraging) waits in `pass`, which every lookup reads first, and
//! `end_pass` merges it once the helpers are gone. So a health a helper
//! computed is the current account's exactly when the pass has not
//! changed that account (`unchanged_in_pass`).

use crate::index::IntMap;
use crate::types::{Account, AccountId};
use std::sync::Arc;

pub(crate) type AccountMap = IntMap<AccountId, Arc<Account>>;

#[derive(Clone, Debug, Default)]
pub(super) struct AccountIndex {
    base: Arc<AccountMap>,
    /// Changes since `begin_pass`: the new account, or None when removed.
    pass: IntMap<AccountId, Option<Arc<Account>>>,
    in_pass: bool,
}

impl AccountIndex {
    pub(super) fn from_map(map: AccountMap) -> Self {
        AccountIndex {
            base: Arc::new(map),
            ..AccountIndex::default()
        }
    }

    pub(super) fn get(&self, id: &AccountId) -> Option<&Arc<Account>> {
        if !self.pass.is_empty()
            && let Some(changed) = self.pass.get(id)
        {
            return changed.as_ref();
        }
        self.base.get(id)
    }

    pub(super) fn insert(&mut self, id: AccountId, account: Arc<Account>) {
        if self.in_pass {
            self.pass.insert(id, Some(account));
        } else {
            // Copied only if another engine (a clone) shares it.
            Arc::make_mut(&mut self.base).insert(id, account);
        }
    }

    pub(super) fn remove(&mut self, id: &AccountId) {
        if self.in_pass {
            self.pass.insert(*id, None);
        } else {
            Arc::make_mut(&mut self.base).remove(id);
        }
    }

    pub(super) fn len(&self) -> usize {
        let mut n = self.base.len();
        for (id, now) in &self.pass {
            match (self.base.contains_key(id), now.is_some()) {
                (true, false) => n -= 1,
                (false, true) => n += 1,
                _ => {}
            }
        }
        n
    }

    /// The map as it stands, for helper threads to read until `end_pass`;
    /// changes until then wait in `pass`.
    pub(super) fn begin_pass(&mut self) -> Arc<AccountMap> {
        self.in_pass = true;
        Arc::clone(&self.base)
    }

    /// Whether the pass since `begin_pass` has left this account alone.
    pub(super) fn unchanged_in_pass(&self, id: AccountId) -> bool {
        self.pass.is_empty() || !self.pass.contains_key(&id)
    }

    /// Merges the pass's changes (the helpers' copies of the map are gone:
    /// no copy is made).
    pub(super) fn end_pass(&mut self) {
        self.in_pass = false;
        if self.pass.is_empty() {
            return;
        }
        let base = Arc::make_mut(&mut self.base);
        for (id, now) in self.pass.drain() {
            match now {
                Some(a) => base.insert(id, a),
                None => base.remove(&id),
            };
        }
    }
}
