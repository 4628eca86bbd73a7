//! What an instance keeps in memory between invocations: short-lived copies (`ShortCache`) and
//! the usage path's state (`UsageCache`): an account's terms, an allowance's shards as last read
//! or written here, allowances found used up, the blocks this instance leased, and the
//! allowances it already marked as reached. Each is this instance's only: nothing is shared
//! between instances except through the table.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::adapters::store::Allowance;
use crate::domain::usage::{HeldLease, UsageTerms};

/// A value kept in memory for a while, by key.
/// A small per-instance cache with its own time to live: packages and projects (a minute), the
/// usage path's terms and allowance snapshots (`USAGE_CACHE_MS`). A zero time to live caches
/// nothing.
pub struct ShortCache<V, K = String> {
    ttl: Duration,
    entries: Mutex<HashMap<K, Kept<V>>>,
}

/// A value and when it was kept.
struct Kept<V> {
    at: Instant,
    value: V,
}

/// Entries a short cache holds before it starts over (one busy instance serves few accounts).
const SHORT_CACHE_ENTRIES: usize = 10_000;

impl<V: Clone, K: std::hash::Hash + Eq> ShortCache<V, K> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|kept| kept.at.elapsed() < self.ttl)
            .map(|kept| kept.value.clone())
    }

    pub fn put(&self, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= SHORT_CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(
                key,
                Kept {
                    at: Instant::now(),
                    value,
                },
            );
        }
    }

    /// Changes a fresh entry in place (keeping its age).
    pub fn update<Q>(&self, key: &Q, change: impl FnOnce(&mut V))
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(kept) = entries.get_mut(key) {
                change(&mut kept.value);
            }
        }
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }
}

/// An allowance found used up (with no overage) by a fresh read here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub limit: i64,
    /// Units left then.
    pub left: i64,
    /// Other instances held some of it in leases (they come back within seconds).
    pub held_elsewhere: bool,
}

/// Allowances an instance marks as reached before it starts over (one busy instance serves
/// few accounts).
const MARKED_ENTRIES: usize = 10_000;

/// The usage path's per-instance state. Keys name an allowance (`scope prefix|account|metric|
/// period`) or an account's terms (`scope prefix|account`).
pub struct UsageCache {
    /// An account's plan and period.
    pub terms: ShortCache<UsageTerms>,
    /// An allowance's shards as last read or written here.
    pub allowances: ShortCache<Allowance>,
    /// For a quarter of the cache's life (250 ms by default), refusals of a used-up allowance
    /// need no read but the key's record.
    pub exhausted: ShortCache<Exhausted>,
    /// The blocks of allowances this instance leased, by allowance.
    leases: Mutex<HashMap<String, HeldLease>>,
    /// One lease taken at a time here: concurrent requests wait for it instead of each
    /// leasing a block.
    pub lease_gate: tokio::sync::Mutex<()>,
    /// Allowances already marked as reached (the mark is written once per period; this spares
    /// a hot account's refusals a write each).
    marked: Mutex<HashSet<String>>,
}

/// What taking from this instance's block found.
pub enum HeldTake {
    /// Taken: the block after it.
    Taken(HeldLease),
    /// The block ended or is too small: it is no longer held here (its unused units go back).
    Ended(HeldLease),
    /// No block is held here.
    None,
}

impl UsageCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            terms: ShortCache::new(ttl),
            allowances: ShortCache::new(ttl),
            exhausted: ShortCache::new(ttl / 4),
            leases: Mutex::new(HashMap::new()),
            lease_gate: tokio::sync::Mutex::new(()),
            marked: Mutex::new(HashSet::new()),
        }
    }

    /// Takes `quantity` from the block held for `allowance` if it has that much and has not
    /// ended at `now_ms`.
    pub fn take_held(&self, allowance: &str, quantity: i64, now_ms: i64) -> HeldTake {
        let Ok(mut leases) = self.leases.lock() else {
            return HeldTake::None;
        };
        match leases.get_mut(allowance) {
            Some(lease) if now_ms < lease.until_ms && lease.left >= quantity => {
                lease.left -= quantity;
                HeldTake::Taken(lease.clone())
            }
            Some(_) => leases
                .remove(allowance)
                .map_or(HeldTake::None, HeldTake::Ended),
            None => HeldTake::None,
        }
    }

    /// Holds a block for `allowance` (one leased at the same moment by another request is
    /// replaced; its units go back when it is settled).
    pub fn hold(&self, allowance: &str, lease: HeldLease) {
        if let Ok(mut leases) = self.leases.lock() {
            leases.insert(allowance.to_owned(), lease);
        }
    }

    /// Puts `quantity` back into the block `lease_id` (a take that was not used).
    pub fn untake(&self, allowance: &str, lease_id: &str, quantity: i64) {
        if let Ok(mut leases) = self.leases.lock() {
            if let Some(current) = leases.get_mut(allowance).filter(|l| l.id == lease_id) {
                current.left += quantity;
            }
        }
    }

    /// Stops holding the block of `allowance`, and says what it was.
    pub fn release(&self, allowance: &str) -> Option<HeldLease> {
        self.leases.lock().ok()?.remove(allowance)
    }

    /// Whether this instance already marked the allowance as reached.
    pub fn is_marked(&self, name: &str) -> bool {
        self.marked.lock().is_ok_and(|marked| marked.contains(name))
    }

    pub fn mark(&self, name: String) {
        if let Ok(mut marked) = self.marked.lock() {
            if marked.len() >= MARKED_ENTRIES {
                marked.clear();
            }
            marked.insert(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(left: i64, until_ms: i64) -> HeldLease {
        HeldLease {
            id: "l1".into(),
            shard: 3,
            left,
            until_ms,
        }
    }

    #[test]
    fn a_held_block_gives_what_it_has_until_it_ends() {
        let cache = UsageCache::new(Duration::from_secs(1));
        assert!(matches!(cache.take_held("a", 1, 0), HeldTake::None));
        cache.hold("a", lease(10, 1_000));
        assert!(matches!(cache.take_held("a", 4, 10), HeldTake::Taken(l) if l.left == 6));
        cache.untake("a", "l1", 4);
        cache.untake("a", "other", 100);
        assert!(matches!(cache.take_held("a", 10, 20), HeldTake::Taken(l) if l.left == 0));
        // Too small: no longer held, and what it had is said.
        assert!(matches!(cache.take_held("a", 1, 30), HeldTake::Ended(l) if l.left == 0));
        assert!(matches!(cache.take_held("a", 1, 30), HeldTake::None));
        // Ended in time.
        cache.hold("b", lease(50, 100));
        assert!(matches!(cache.take_held("b", 1, 100), HeldTake::Ended(l) if l.left == 50));
        cache.hold("c", lease(5, 100));
        assert!(cache.release("c").is_some_and(|l| l.left == 5));
        assert!(cache.release("c").is_none());
    }

    #[test]
    fn an_allowance_is_marked_once_per_instance() {
        let cache = UsageCache::new(Duration::from_secs(1));
        assert!(!cache.is_marked("x"));
        cache.mark("x".into());
        assert!(cache.is_marked("x"));
        let other = UsageCache::new(Duration::from_secs(1));
        assert!(
            !other.is_marked("x"),
            "no state is shared between instances"
        );
    }
}
