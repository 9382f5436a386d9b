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

/// A key's hash: a multiply spreads a counter's low bits (cookies, inodes) to the top ones,
/// where the table's control bytes take theirs, and a rotate brings high bits down for the
/// bucket.
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26)
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

    /// The place of `key` to change, or a new one holding `place` (then `key_at(place)` must
    /// be `key`: the index may grow by it).
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

    /// Every place, in no order.
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

    /// After a spike: room for about as many places as it holds, when it has far more.
    pub(crate) fn shrink(&mut self, key_at: impl Fn(u32) -> Option<u64>) {
        let len = self.places.len().max(1024);
        if self.places.capacity() > 4 * len {
            self.places
                .shrink_to(2 * len, |&p| key_at(p).map_or(0, hash));
        }
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
}
