//! Support for the mux's per-host memories: a map bounded by the cost of what it holds
//! (each entry's cost is the caller's, in bytes), the least recently used entries dropped
//! first to make room. Pure (no I/O). Neighbours: `mux::recent` (chunks per source) and
//! `mux::similar` (chunks by resemblance), the two memories built on it.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    cost: usize,
    /// When it was last used (the key of `order`).
    tick: u64,
}

/// Entries of key `K`, at most `cap` in total cost.
#[derive(Debug)]
pub struct CostLru<K, V> {
    slots: HashMap<K, Slot<V>>,
    /// Keys by last use, oldest first.
    order: BTreeMap<u64, K>,
    tick: u64,
    cost: usize,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> CostLru<K, V> {
    /// An empty map of at most `cap` total cost.
    pub fn new(cap: usize) -> CostLru<K, V> {
        CostLru {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            cost: 0,
            cap,
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Keeps `value` under `key` at `cost`, replacing what `key` held, and drops the least
    /// recently used entries (each handed to `dropped`) until it fits. `false`, and
    /// nothing kept or dropped but `key`'s old entry, when `cost` alone is over the cap.
    pub fn insert(&mut self, key: K, value: V, cost: usize, mut dropped: impl FnMut(K, V)) -> bool {
        if let Some(old) = self.remove(&key) {
            dropped(key.clone(), old);
        }
        if cost > self.cap {
            return false;
        }
        while self.cost + cost > self.cap {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&old) {
                self.cost -= slot.cost;
                dropped(old, slot.value);
            }
        }
        let tick = self.next_tick();
        self.order.insert(tick, key.clone());
        self.cost += cost;
        self.slots.insert(key, Slot { value, cost, tick });
        true
    }

    /// `key`'s value, marked as used now.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let tick = self.next_tick();
        let slot = self.slots.get_mut(key)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, key.clone());
        Some(&slot.value)
    }

    /// When `key` was last used, as a number that grows with every use (larger is later).
    pub fn last_use(&self, key: &K) -> Option<u64> {
        self.slots.get(key).map(|s| s.tick)
    }

    /// Whether `key` is kept.
    pub fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// The key used last.
    pub fn newest(&self) -> Option<&K> {
        self.order.last_key_value().map(|(_, k)| k)
    }

    /// Drops `key`'s entry and hands back its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.slots.remove(key)?;
        self.order.remove(&slot.tick);
        self.cost -= slot.cost;
        Some(slot.value)
    }

    /// Total cost kept.
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(l: &mut CostLru<u32, &'static str>, k: u32, cost: usize) -> Vec<u32> {
        let mut gone = Vec::new();
        l.insert(k, "v", cost, |k, _| gone.push(k));
        gone
    }

    #[test]
    fn drops_the_least_recently_used_to_stay_within_its_cap() {
        let mut l = CostLru::new(10);
        assert!(keep(&mut l, 1, 4).is_empty());
        assert!(keep(&mut l, 2, 4).is_empty());
        assert_eq!(l.newest(), Some(&2));
        // Using 1 makes 2 the oldest.
        assert!(l.get(&1).is_some());
        assert_eq!(l.newest(), Some(&1));
        assert!(l.last_use(&1) > l.last_use(&2));
        assert_eq!(keep(&mut l, 3, 4), vec![2]);
        assert_eq!((l.len(), l.cost()), (2, 8));
        // Replacing an entry hands back the old one and counts only the new cost.
        assert_eq!(keep(&mut l, 1, 2), vec![1]);
        assert_eq!((l.len(), l.cost()), (2, 6));
        assert!(l.contains(&1) && l.contains(&3) && !l.contains(&2));
    }

    #[test]
    fn an_entry_over_the_whole_cap_is_not_kept_and_drops_nothing_else() {
        let mut l = CostLru::new(10);
        keep(&mut l, 1, 5);
        keep(&mut l, 2, 5);
        let mut gone = Vec::new();
        assert!(!l.insert(2, "big", 11, |k, _| gone.push(k)));
        assert_eq!(gone, vec![2], "only the key's own old entry");
        assert!(l.contains(&1) && !l.contains(&2));
        assert_eq!(l.remove(&1), Some("v"));
        assert!(l.is_empty() && l.cost() == 0 && l.newest().is_none());
        assert!(l.get(&1).is_none() && l.remove(&1).is_none());
    }
}
