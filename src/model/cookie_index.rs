//! The table's cookie index: each slot holds only a place (4 bytes and a control byte), and
//! the cookie is read back from the socket there. A map of cookie → place pairs takes 17
//! bytes a slot (the pair pads to 16): 35 MB at 1M sockets, where this takes 10.
//!
//! Every call says how to read the cookie at a place (`cookie_at`): the table's sockets, the
//! last poll's, or a socket of the poll being claimed, as the place's meaning changes.

use hashbrown::hash_table::{Entry, HashTable};

/// The cookie's hash: a multiply spreads a counter's low bits to the top ones, where the
/// table's control bytes take theirs, and a rotate brings high bits down for the bucket.
fn hash(cookie: u64) -> u64 {
    cookie.wrapping_mul(0xf135_7aea_2e62_a9c5).rotate_left(26)
}

#[derive(Debug, Clone, Default)]
pub(super) struct CookieIndex {
    places: HashTable<u32>,
}

/// A cookie's slot, found or made ([`CookieIndex::entry`]).
pub(super) enum Slot<'a> {
    Found(&'a mut u32),
    Made,
}

impl CookieIndex {
    /// The place of `cookie`, if a place holds it.
    pub(super) fn get(&self, cookie: u64, cookie_at: impl Fn(u32) -> Option<u64>) -> Option<u32> {
        self.places
            .find(hash(cookie), |&p| cookie_at(p) == Some(cookie))
            .copied()
    }

    /// The place of `cookie` to change, or a new one holding `place` (then `cookie_at(place)`
    /// must be `cookie`: the table grows by it).
    pub(super) fn entry(
        &mut self,
        cookie: u64,
        place: u32,
        cookie_at: impl Fn(u32) -> Option<u64>,
    ) -> Slot<'_> {
        let rehash = |&p: &u32| cookie_at(p).map_or(0, hash);
        match self
            .places
            .entry(hash(cookie), |&p| cookie_at(p) == Some(cookie), rehash)
        {
            Entry::Occupied(o) => Slot::Found(o.into_mut()),
            Entry::Vacant(v) => {
                v.insert(place);
                Slot::Made
            }
        }
    }

    /// Every place, in no order.
    pub(super) fn places(&self) -> impl Iterator<Item = u32> + '_ {
        self.places.iter().copied()
    }

    /// Changes every place in place (the cookies stay where they were).
    pub(super) fn repoint(&mut self, mut f: impl FnMut(u32) -> u32) {
        for p in &mut self.places {
            *p = f(*p);
        }
    }

    /// Keeps the places `f` keeps, changed as it changes them.
    pub(super) fn retain(&mut self, mut f: impl FnMut(&mut u32) -> bool) {
        self.places.retain(|p| f(p));
    }

    /// After a spike: room for `len` places, when it holds far more.
    pub(super) fn shrink(&mut self, cookie_at: impl Fn(u32) -> Option<u64>) {
        let len = self.places.len().max(1024);
        if self.places.capacity() > 4 * len {
            self.places
                .shrink_to(2 * len, |&p| cookie_at(p).map_or(0, hash));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_cookie_by_reading_it_at_its_place() {
        // Cookies far apart and near: one place a cookie, 200k of them (the table grows).
        let cookies: Vec<u64> = (0..200_000u64)
            .map(|i| if i % 2 == 0 { i } else { i << 33 | 7 })
            .collect();
        let at = |p: u32| cookies.get(p as usize).copied();
        let mut index = CookieIndex::default();
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
