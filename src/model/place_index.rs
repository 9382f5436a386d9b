//! An index of the places in a vector whose items carry their own keys (sockets by cookie,
//! owners by inode): each slot holds only a place (4 bytes and a control byte), and the key is
//! read back from the item there. A map of key → place pairs takes 17 bytes a slot (the pair
//! pads to 16): at 1M sockets 35 MB, where this takes 10.
//!
//! Every call says how to read the key at a place (`key_at`), so a place may mean an item of
//! one vector or another as its owner's work goes (the table's cookie index points into the
//! last poll and the one being claimed at once). `key_at` must read every place the index
//! holds: a slot whose key it cannot read is lost when the index grows.

use hashbrown::hash_table::{Entry, HashTable};

/// An item that carries its own key.
pub(crate) trait Keyed {
    fn key(&self) -> u64;
}

/// A key's hash: a multiply spreads a counter's low bits (cookies, inodes) to the top ones,
/// where the table's control bytes take theirs, and a rotate brings high bits down for the
/// bucket.
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26)
}

/// The room to keep after a spike (twice what is held, at least 1024), when it has over four
/// times that; `None` when the room is about right.
fn room_after_spike(capacity: usize, len: usize) -> Option<usize> {
    let len = len.max(1024);
    (capacity > 4 * len).then_some(2 * len)
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PlaceIndex {
    places: HashTable<u32>,
}

/// A key's slot, found or made ([`PlaceIndex::entry`]).
pub(crate) enum Slot<'a> {
    Found(&'a mut u32),
    Made,
}

impl PlaceIndex {
    /// The place of `key`, if a place holds it.
    pub(crate) fn get(&self, key: u64, key_at: impl Fn(u32) -> Option<u64>) -> Option<u32> {
        self.places
            .find(hash(key), |&p| key_at(p) == Some(key))
            .copied()
    }

    /// The place of `key` to change, or a new one holding `place`. The index makes room
    /// before it looks, so `key_at` need not read `place` yet (it must read every other).
    pub(crate) fn entry(
        &mut self,
        key: u64,
        place: u32,
        key_at: impl Fn(u32) -> Option<u64>,
    ) -> Slot<'_> {
        let rehash = |&p: &u32| key_at(p).map_or(0, hash);
        match self
            .places
            .entry(hash(key), |&p| key_at(p) == Some(key), rehash)
        {
            Entry::Occupied(o) => Slot::Found(o.into_mut()),
            Entry::Vacant(v) => {
                v.insert(place);
                Slot::Made
            }
        }
    }

    /// The place of `key` to change, if a place holds it.
    pub(crate) fn get_mut(
        &mut self,
        key: u64,
        key_at: impl Fn(u32) -> Option<u64>,
    ) -> Option<&mut u32> {
        self.places.find_mut(hash(key), |&p| key_at(p) == Some(key))
    }

    /// Forgets `key`'s place.
    pub(crate) fn remove(&mut self, key: u64, key_at: impl Fn(u32) -> Option<u64>) {
        if let Ok(slot) = self
            .places
            .find_entry(hash(key), |&p| key_at(p) == Some(key))
        {
            slot.remove();
        }
    }

    /// Every place, in no order.
    #[cfg(test)]
    pub(crate) fn places(&self) -> impl Iterator<Item = u32> + '_ {
        self.places.iter().copied()
    }

    /// Changes every place (each key stays where it was: no slot moves).
    pub(crate) fn repoint(&mut self, mut f: impl FnMut(u32) -> u32) {
        for p in &mut self.places {
            *p = f(*p);
        }
    }

    /// Keeps the places `f` keeps, changed as it changes them.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(&mut u32) -> bool) {
        self.places.retain(|p| f(p));
    }

    /// Forgets every place, keeping the room.
    pub(crate) fn clear(&mut self) {
        self.places.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    /// Room for `more` places beyond those held, made at once: growing by doubling leaves
    /// each smaller table behind in the allocator's heap.
    pub(crate) fn reserve(&mut self, more: usize, key_at: impl Fn(u32) -> Option<u64>) {
        self.places.reserve(more, |&p| key_at(p).map_or(0, hash));
    }

    /// After a spike: room for about as many places as it holds, when it has far more.
    pub(crate) fn shrink(&mut self, key_at: impl Fn(u32) -> Option<u64>) {
        if let Some(room) = room_after_spike(self.places.capacity(), self.places.len()) {
            self.places.shrink_to(room, |&p| key_at(p).map_or(0, hash));
        }
    }
}

/// Items by key, in one vector with a [`PlaceIndex`] beside it: an item's own size and 5 bytes
/// a slot, where a map of key → item pads each slot to the pair's alignment.
#[derive(Debug, Clone)]
pub(crate) struct KeyedVec<T> {
    items: Vec<T>,
    index: PlaceIndex,
}

impl<T> Default for KeyedVec<T> {
    fn default() -> Self {
        KeyedVec {
            items: Vec::new(),
            index: PlaceIndex::default(),
        }
    }
}

impl<T: Keyed> KeyedVec<T> {
    fn key_at(items: &[T]) -> impl Fn(u32) -> Option<u64> + '_ {
        |p| items.get(p as usize).map(Keyed::key)
    }

    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        let p = self.index.get(key, Self::key_at(&self.items))?;
        self.items.get(p as usize)
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let p = self.index.get(key, Self::key_at(&self.items))?;
        self.items.get_mut(p as usize)
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// The item with `item`'s key, to change; else `item` is added and `None` returned.
    pub(crate) fn get_or_add(&mut self, item: T) -> Option<&mut T> {
        let place = u32::try_from(self.items.len()).unwrap_or(u32::MAX);
        // The index grows before it takes the new place, so it never reads the item there:
        // the item is pushed only once its key is known new.
        match self
            .index
            .entry(item.key(), place, Self::key_at(&self.items))
        {
            Slot::Made => {
                self.items.push(item);
                None
            }
            Slot::Found(&mut p) => self.items.get_mut(p as usize),
        }
    }

    /// Sets the item of `item`'s key, adding it or replacing the one there.
    pub(crate) fn insert(&mut self, item: T) {
        match self.get_mut(item.key()) {
            Some(there) => *there = item,
            None => {
                let _ = self.get_or_add(item);
            }
        }
    }

    /// Keeps the items `keep` keeps (which may change them); the last item fills each gap, so
    /// the cost is in what goes, not in what stays.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        let mut p = 0;
        while p < self.items.len() {
            if keep(&mut self.items[p]) {
                p += 1;
                continue;
            }
            let gone = self.items[p].key();
            self.index.remove(gone, Self::key_at(&self.items));
            let last = self.items.len() - 1;
            if p != last {
                let moved = self.items[last].key();
                if let Some(slot) = self.index.get_mut(moved, Self::key_at(&self.items)) {
                    *slot = p as u32;
                }
            }
            self.items.swap_remove(p);
        }
    }

    /// Forgets every item, keeping the room.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.index.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.items.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Room for `more` items beyond those held, made at once.
    pub(crate) fn reserve(&mut self, more: usize) {
        // Exact: on a full vector `reserve` would double it for a few more.
        self.items.reserve_exact(more);
        self.index.reserve(more, Self::key_at(&self.items));
    }

    /// Gives back room after a spike.
    pub(crate) fn shrink(&mut self) {
        if let Some(room) = room_after_spike(self.items.capacity(), self.items.len()) {
            self.items.shrink_to(room);
        }
        self.index.shrink(Self::key_at(&self.items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_key_by_reading_it_at_its_place() {
        // Cookies far apart and near: one place a cookie, 200k of them (the table grows).
        let cookies: Vec<u64> = (0..200_000u64)
            .map(|i| if i % 2 == 0 { i } else { i << 33 | 7 })
            .collect();
        let at = |p: u32| cookies.get(p as usize).copied();
        let mut index = PlaceIndex::default();
        for (p, &c) in cookies.iter().enumerate() {
            assert!(matches!(index.entry(c, p as u32, at), Slot::Made));
        }
        assert_eq!(index.places().count(), cookies.len());
        for (p, &c) in cookies.iter().enumerate() {
            assert_eq!(index.get(c, at), Some(p as u32));
        }
        assert_eq!(index.get(3, at), None);
        assert_eq!(
            index.get(1 << 33 | 7, at),
            Some(1),
            "cookie 8589934599 is at 1"
        );
        // A cookie found again is not added twice.
        assert!(matches!(
            index.entry(cookies[5], 99, at),
            Slot::Found(&mut 5)
        ));
        index.retain(|p| *p % 2 == 0);
        assert_eq!(index.get(cookies[1], at), None);
        assert_eq!(index.get(cookies[2], at), Some(2));
        index.shrink(at);
        assert_eq!(index.get(cookies[199_998], at), Some(199_998));
        // Where a place no longer reads back its cookie, the cookie is not found there.
        assert_eq!(index.get(cookies[2], |_| None), None);
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Item(u64, u32);

    impl Keyed for Item {
        fn key(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn keyed_items_are_found_replaced_and_dropped_by_key() {
        let mut items = KeyedVec::default();
        for k in 0..10_000u64 {
            assert!(items.get_or_add(Item(k * 7, 0)).is_none());
        }
        // Found, not added twice; changed where it is.
        items.get_or_add(Item(70, 5)).unwrap().1 = 1;
        assert_eq!(items.get(70), Some(&Item(70, 1)));
        items.insert(Item(70, 2));
        items.insert(Item(3, 3));
        assert_eq!(
            (items.get(70), items.get(3)),
            (Some(&Item(70, 2)), Some(&Item(3, 3)))
        );
        assert_eq!(items.len(), 10_001);
        // Every odd key goes, the first and the last included; each one left is found.
        let mut asked = 0;
        items.retain(|i| {
            asked += 1;
            i.0 % 2 == 0
        });
        assert_eq!(asked, 10_001, "each item is asked once");
        assert_eq!(items.len(), 5_000);
        for k in 0..10_000u64 {
            let key = k * 7;
            assert_eq!(items.contains(key), key % 2 == 0, "{key}");
        }
        assert!(!items.contains(3));
        assert_eq!(items.get_mut(70).map(|i| i.1), Some(2));
        items.shrink();
        assert_eq!(items.iter().filter(|i| i.0 == 69_986).count(), 1);
        items.clear();
        assert!(!items.contains(0));
    }
}
