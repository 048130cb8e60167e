//! The state root, maintained incrementally: every change to an account
//! (balances, positions, margin-call and deferral flags) marks it dirty, and
//! `flush_root` rehashes only the dirty leaves and their paths. Everything
//! that is not an account (clock, sequence, insurance fund, fees, venue,
//! feeds, markets, config) is hashed whole into `globals_hash`: it is small
//! (a few feeds and markets) next to the accounts.

use super::Engine;
use crate::error::EngineError;
use crate::index::IntMap;
use crate::state_root::{
    AccountProof, AccountState, AccountTree, Enc, Hash, account_leaf, keccak, state_root,
};
use crate::types::*;

/// Derived from the state, never part of it: rebuilt from
/// `Snapshot::account_order` on restore.
#[derive(Clone, Debug, Default)]
pub(super) struct RootCache {
    tree: AccountTree,
    slot_of: IntMap<AccountId, u32>,
    /// Changed accounts with their slots (repeats allowed).
    dirty: Vec<(u32, AccountId)>,
    /// Digest of the configuration (risk, feed, asset and market configs);
    /// dropped by every configure command.
    configs: Option<Hash>,
    globals: Hash,
    root: Hash,
    /// The tree matches the accounts except for `dirty`.
    built: bool,
}

impl RootCache {
    /// A cache for `order` (slot order) that builds its tree on first use.
    pub(super) fn for_order(order: &[AccountId]) -> Result<Self, EngineError> {
        let mut slot_of = IntMap::with_capacity_and_hasher(order.len(), Default::default());
        for (i, id) in order.iter().enumerate() {
            let slot = u32::try_from(i).map_err(|_| crate::fixed::overflow("account slot"))?;
            if slot_of.insert(*id, slot).is_some() {
                return Err(EngineError::InvalidConfig {
                    detail: format!("snapshot lists account {id} twice in account_order"),
                });
            }
        }
        Ok(RootCache {
            slot_of,
            ..RootCache::default()
        })
    }

    pub(super) fn drop_configs(&mut self) {
        self.configs = None;
    }
}

impl Engine {
    /// Records that an account changed (and gives a new account its slot).
    pub(super) fn touch(&mut self, id: AccountId) {
        let slot = match self.root.slot_of.get(&id) {
            Some(slot) => *slot,
            None => {
                // u32 slots: 4 billion accounts; beyond that the tree keeps
                // the last slot (never reached: memory runs out long before).
                let slot = u32::try_from(self.s.account_order.len()).unwrap_or(u32::MAX);
                self.root.slot_of.insert(id, slot);
                self.s.account_order.push(id);
                slot
            }
        };
        if self.root.built {
            self.root.dirty.push((slot, id));
            // A bulk load: stop tracking, the next flush builds afresh.
            if self.root.dirty.len() as u64 > self.root.tree.count() / 4 + 1_024 {
                self.root.built = false;
                self.root.dirty = Vec::new();
            }
        }
    }

    /// Reads ahead the tree slots of `ids` (what `touch` looks up).
    pub(super) fn warm_slots(&self, ids: impl Iterator<Item = AccountId>) {
        crate::warm::touch(ids.map(|id| {
            self.root
                .slot_of
                .get(&id)
                .map_or(0, |slot| slot.to_le_bytes()[0])
        }));
    }

    /// The state as the root commits to it for one account.
    pub fn account_state(&self, id: AccountId) -> Option<AccountState> {
        let acct = self.acct(id)?;
        Some(AccountState {
            account: id,
            state: Account::clone(acct),
            margin_calls: self.s.margin_calls.units_of(id).to_vec(),
            deferred: self.s.deferred.units_of(id).to_vec(),
        })
    }

    /// The leaves of `order`, split over the machine's cores when there
    /// are many (a restart's first root, a bulk load): the same hashes in
    /// the same order either way.
    fn leaves(&self, order: &[AccountId], threads: usize) -> Vec<Hash> {
        if threads < 2 {
            return self.leaves_here(order);
        }
        let size = order.len().div_ceil(threads * crate::parallel::SHARES);
        let chunks: Vec<&[AccountId]> = order.chunks(size.max(crate::warm::BATCH)).collect();
        crate::parallel::map_in_order(chunks, threads, |chunk| self.leaves_here(chunk)).concat()
    }

    /// The leaves of `order` on this thread, each batch of accounts read
    /// ahead first (`warm`).
    fn leaves_here(&self, order: &[AccountId]) -> Vec<Hash> {
        let mut buf = Enc::default();
        let mut out = Vec::with_capacity(order.len());
        for batch in order.chunks(crate::warm::BATCH) {
            crate::warm::accounts(batch.iter().filter_map(|id| self.acct(*id)).map(|a| &**a));
            out.extend(batch.iter().map(|id| self.leaf_of(&mut buf, *id)));
        }
        out
    }

    fn leaf_of(&self, buf: &mut Enc, id: AccountId) -> Hash {
        self.leaf_from(buf, id, self.acct(id).map(|a| &**a))
    }

    /// The leaf of account `id` whose state is `acct` (none: an empty one).
    fn leaf_from(&self, buf: &mut Enc, id: AccountId, acct: Option<&Account>) -> Hash {
        let mc = self.s.margin_calls.units_of(id);
        let df = self.s.deferred.units_of(id);
        match acct {
            Some(acct) => account_leaf(buf, id, acct, mc, df),
            None => account_leaf(buf, id, &Account::default(), mc, df),
        }
    }

    fn configs_digest(&self) -> Hash {
        // Configs are integers, strings and enums: serde_json writes them
        // the same way everywhere (fields in declaration order, maps sorted).
        let s = &self.s;
        let feeds: Vec<&FeedConfig> = s.feeds.values().map(|f| &f.config).collect();
        let markets: Vec<&MarketConfig> = s.markets.values().map(|m| &m.config).collect();
        let json = serde_json::to_vec(&(&s.risk, feeds, &s.assets, markets)).unwrap_or_default();
        keccak(&[&json])
    }

    fn globals_hash(&self, configs: &Hash) -> Hash {
        let s = &self.s;
        let mut e = Enc::default();
        e.u64(s.now_ms);
        e.u64(s.next_seq);
        e.i128(s.insurance_fund);
        e.i128(s.fees);
        e.balances(s.venue.cash, &s.venue.collateral);
        e.positions(&s.venue.positions);
        e.0.extend_from_slice(configs);
        e.count(s.feeds.len());
        for (name, f) in &s.feeds {
            e.str(name);
            match &f.last {
                None => e.u8(0),
                Some(p) => {
                    e.u8(1);
                    e.i128(p.price);
                    e.i128(p.confidence);
                    e.u64(p.timestamp_ms);
                    e.u64(p.round);
                    e.u8(p.status);
                    e.u16(p.flags);
                    e.i128(p.ema);
                    e.u64(p.volatility);
                }
            }
            e.count(f.recent.len());
            for p in &f.recent {
                e.i128(*p);
            }
            e.guard(f.jump.as_ref());
            e.guard(f.guard.as_ref());
            e.u32(f.vol_multiplier_ppm);
        }
        e.count(s.markets.len());
        for (name, m) in &s.markets {
            e.str(name);
            e.u32(m.slot);
            match &m.mark {
                None => e.u8(0),
                Some(k) => {
                    e.u8(1);
                    e.i128(k.price);
                    e.i128(k.underlying);
                    e.u64(k.at_ms);
                    e.greeks(&k.greeks);
                    e.count(k.scenarios.len());
                    for x in &k.scenarios {
                        e.i128(*x);
                    }
                }
            }
            e.opt_i128(m.settled);
            e.u8(u8::from(m.settlement_deferred));
        }
        keccak(&[&e.0])
    }

    /// Brings the root up to date: rehashes dirty accounts and their paths,
    /// then the globals.
    pub(super) fn flush_root(&mut self) {
        // Past a quarter of the tree (a bulk load), one full build is
        // cheaper than sorting and walking that many paths.
        if self.root.built && self.root.dirty.len() as u64 > self.root.tree.count() / 4 + 1_024 {
            self.root.built = false;
        }
        if self.root.built {
            let mut slots = std::mem::take(&mut self.root.dirty);
            slots.sort_unstable();
            slots.dedup();
            let known = self.root.tree.count();
            let mut changed = Vec::with_capacity(slots.len());
            let mut added = Vec::new();
            // Hundreds of changed accounts (a report with many margin
            // calls): their leaves over the cores too.
            let ids: Vec<AccountId> = slots.iter().map(|(_, id)| *id).collect();
            let hashes = self.leaves(&ids, crate::state_root::update_threads(ids.len()));
            for ((slot, _), h) in slots.into_iter().zip(hashes) {
                if u64::from(slot) < known {
                    changed.push((slot as usize, h));
                } else {
                    added.push(h);
                }
            }
            self.root.tree.update(&changed);
            if self.root.tree.has_room(added.len()) {
                self.root.tree.append(&added);
            } else {
                self.root.built = false;
            }
        }
        if !self.root.built {
            self.root.dirty.clear();
            let leaves = self.leaves(
                &self.s.account_order,
                crate::state_root::threads_for(self.s.account_order.len()),
            );
            self.root.tree = AccountTree::build(leaves);
            self.root.built = true;
        }
        let configs = match self.root.configs {
            Some(c) => c,
            None => {
                let c = self.configs_digest();
                self.root.configs = Some(c);
                c
            }
        };
        self.root.globals = self.globals_hash(&configs);
        self.root.root = state_root(&self.root.tree.accounts_root(), &self.root.globals);
    }

    /// The state root after the inputs applied so far (docs/MARGIN.md,
    /// "State root"). Price reports bring the tree up to date as part of
    /// the report; here the accounts changed since (commands) are rehashed
    /// and the globals, which every input changes, always.
    pub fn state_root(&mut self) -> Hash {
        self.flush_root();
        self.root.root
    }

    /// The state root computed from nothing but the state: no cache, no
    /// maintained tree, no account index (the accounts come from the
    /// ordered map). Tests compare it with `state_root`.
    pub fn state_root_from_scratch(&self) -> Hash {
        let mut buf = Enc::default();
        let leaves: Vec<Hash> = self
            .s
            .account_order
            .iter()
            .map(|id| self.leaf_from(&mut buf, *id, self.s.accounts.get(id).map(|a| &**a)))
            .collect();
        let tree = AccountTree::build_serial(leaves);
        state_root(
            &tree.accounts_root(),
            &self.globals_hash(&self.configs_digest()),
        )
    }

    /// An account's state, its Merkle proof and the state root it proves
    /// against (`state_root::verify_account_proof` checks them).
    pub fn account_proof(
        &mut self,
        id: AccountId,
    ) -> Result<(AccountState, AccountProof, Hash), EngineError> {
        let state = self
            .account_state(id)
            .ok_or(EngineError::UnknownAccount { account: id })?;
        let root = self.state_root();
        let slot = self
            .root
            .slot_of
            .get(&id)
            .copied()
            .ok_or(EngineError::UnknownAccount { account: id })?;
        let proof = AccountProof {
            slot: u64::from(slot),
            count: self.root.tree.count(),
            siblings: self.root.tree.path(slot as usize),
            globals_hash: self.root.globals,
        };
        Ok((state, proof, root))
    }
}
