//! Which label sets each metric keeps within `--max-groups`, remembered from one render to the
//! next: ranked by that metric's own value (a `CLOSE_WAIT` leak is never folded for having no
//! ESTABLISHED connections), and once shown a label set keeps its labels for as long as it
//! has a series, so an alert's `for:` never starts over because its labels flipped to
//! `process="other"` and back.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

/// The label sets each metric showed at its last render, by a text of their labels.
#[derive(Debug, Default)]
pub struct Shown(HashMap<String, HashSet<String>>);

impl Shown {
    /// Of `series` (label set, the value it ranks by), those that keep their labels: the ones
    /// shown last time that are still there, then the largest values (ties by labels), at
    /// most `max`. The rest are to be folded.
    pub fn keep<K: Debug + Clone + Hash + Eq>(
        &mut self,
        metric: &str,
        series: &[(K, f64)],
        max: usize,
    ) -> HashSet<K> {
        let before = self.0.remove(metric).unwrap_or_default();
        let mut ranked: Vec<(bool, f64, String, &K)> = series
            .iter()
            .map(|(k, v)| {
                let text = format!("{k:?}");
                (before.contains(&text), *v, text, k)
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        ranked.truncate(max);
        self.0.insert(
            metric.to_string(),
            ranked.iter().map(|r| r.2.clone()).collect(),
        );
        ranked.into_iter().map(|r| r.3.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_are_kept_and_once_shown_stay_shown() {
        let mut shown = Shown::default();
        let kept = shown.keep("m", &[("a", 1.0), ("b", 5.0), ("c", 3.0)], 2);
        assert_eq!(kept, HashSet::from(["b", "c"]));
        // d grows past c: c keeps its labels while it lasts.
        let kept = shown.keep("m", &[("a", 1.0), ("b", 5.0), ("c", 3.0), ("d", 9.0)], 2);
        assert_eq!(kept, HashSet::from(["b", "c"]));
        // c is gone: its slot goes to the largest of the rest.
        let kept = shown.keep("m", &[("a", 1.0), ("b", 5.0), ("d", 9.0)], 2);
        assert_eq!(kept, HashSet::from(["b", "d"]));
        // Another metric ranks by its own values.
        let kept = shown.keep("n", &[("a", 7.0), ("b", 0.0)], 1);
        assert_eq!(kept, HashSet::from(["a"]));
    }
}
