//! Which columns fit a terminal's width, and in which form.

use super::Column;

/// `columns` less NETNS when only one namespace was read (it would say the same on every row),
/// and less CONTAINER when no socket belongs to a container.
pub fn for_table(columns: &[Column], namespaces: usize, containers: bool) -> Vec<Column> {
    columns
        .iter()
        .copied()
        .filter(|&c| c != Column::Netns || namespaces > 1)
        .filter(|&c| c != Column::Container || containers)
        .collect()
}

/// Which columns a table of `width` shows, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    /// Indices into the columns, in screen order.
    pub keep: Vec<usize>,
    /// Which columns show their [compact](Column::compact_cell) cells (by index, as the
    /// columns given).
    pub compact: Vec<bool>,
    /// Each column's width (by index, as the columns given): its full or compact cells', or
    /// less where even compact the essential columns would not fit (cells are elided to it).
    pub widths: Vec<usize>,
    /// Spaces between columns.
    pub gap: usize,
    /// Columns scrolled off to the left (← →).
    pub skipped: usize,
    /// Columns that did not fit (unscrolled: dropped as least useful; scrolled: further
    /// right).
    pub dropped: usize,
}

/// Fits `columns` into `width`. `full[i]` and `short[i]` are column i's widths with full and
/// compact cells.
///
/// Unscrolled (`skip` 0), the least useful columns are dropped until the rest fit, two spaces
/// apart; when that would drop an essential column, cells go compact and one space apart
/// first, and when even that is too wide the widest essential columns are narrowed (their
/// cells elided) rather than dropped. Paged (`skip` n > 0), the table shows the columns from
/// the n-th on (the first page starts at the first column), left to right, as many as fit in
/// full: ← → page through all of them.
pub fn fit(columns: &[Column], full: &[usize], short: &[usize], width: usize, skip: usize) -> Fit {
    let total = |keep: &[usize], widths: &[usize], gap: usize| -> usize {
        keep.iter().map(|&i| widths[i]).sum::<usize>() + gap * keep.len().saturating_sub(1)
    };
    if skip > 0 && !columns.is_empty() {
        let skipped = (skip - 1).min(columns.len() - 1);
        let mut keep = Vec::new();
        for i in skipped..columns.len() {
            keep.push(i);
            if keep.len() > 1 && total(&keep, full, 2) > width {
                keep.pop();
                break;
            }
        }
        return Fit {
            dropped: columns.len() - skipped - keep.len(),
            keep,
            compact: vec![false; columns.len()],
            widths: full.to_vec(),
            gap: 2,
            skipped,
        };
    }
    let attempt = |widths: &[usize], gap: usize| -> Vec<usize> {
        let mut keep: Vec<usize> = (0..columns.len()).collect();
        drop_until(columns, &mut keep, |k| total(k, widths, gap) <= width);
        keep
    };
    let essential = columns.iter().filter(|c| c.is_essential()).count();
    let kept_essential =
        |keep: &[usize]| keep.iter().filter(|&&i| columns[i].is_essential()).count();
    // Shorten the columns that gain most first, one at a time, until the essential ones fit;
    // then close the gaps.
    let mut widths = full.to_vec();
    let mut compact = vec![false; columns.len()];
    let mut order = COMPACT_FIRST
        .iter()
        .filter_map(|c| columns.iter().position(|x| x == c));
    let mut gap = 2;
    let keep = loop {
        let keep = attempt(&widths, gap);
        if kept_essential(&keep) == essential {
            break keep;
        }
        if let Some(i) = order.next() {
            widths[i] = short[i];
            compact[i] = true;
        } else if gap == 2 {
            gap = 1;
        } else {
            break squeeze(columns, &mut widths, width);
        }
    };
    Fit {
        dropped: columns.len() - keep.len(),
        keep,
        compact,
        widths,
        gap,
        skipped: 0,
    }
}

/// The essential columns alone, one space apart, the widest of those that elide well narrowed
/// a cell at a time (to [`SQUEEZE_FLOOR`]) until they fit; what still does not fit is dropped
/// by usefulness.
fn squeeze(columns: &[Column], widths: &mut [usize], width: usize) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..columns.len())
        .filter(|&i| columns[i].is_essential())
        .collect();
    let total = |keep: &[usize], widths: &[usize]| -> usize {
        keep.iter().map(|&i| widths[i]).sum::<usize>() + keep.len().saturating_sub(1)
    };
    while total(&keep, widths) > width {
        let widest = keep
            .iter()
            .copied()
            .filter(|&i| SQUEEZABLE.contains(&columns[i]) && widths[i] > SQUEEZE_FLOOR)
            .max_by_key(|&i| widths[i]);
        match widest {
            Some(i) => widths[i] -= 1,
            None => break,
        }
    }
    drop_until(columns, &mut keep, |k| total(k, widths) <= width);
    keep
}

/// Drops the least useful of `keep` (the rightmost of equal use first) until `fits`, or one is
/// left.
fn drop_until(columns: &[Column], keep: &mut Vec<usize>, fits: impl Fn(&[usize]) -> bool) {
    while keep.len() > 1 && !fits(keep) {
        let drop = keep
            .iter()
            .enumerate()
            .max_by_key(|(pos, &i)| (columns[i].priority(), *pos))
            .map(|(pos, _)| pos)
            .expect("non-empty");
        keep.remove(drop);
    }
}

/// Columns whose cells still say enough elided (an address keeps its port, a name its start).
const SQUEEZABLE: [Column; 4] = [
    Column::Remote,
    Column::Process,
    Column::Local,
    Column::Stale,
];

/// The narrowest a squeezed column gets: `…` and a port, or a name's first letters.
const SQUEEZE_FLOOR: usize = 8;

/// The order columns go compact in when the essential ones do not fit: the longest first,
/// what reads as well short (a local port, `ESTAB`) before what loses detail.
const COMPACT_FIRST: [Column; 7] = [
    Column::Local,
    Column::State,
    Column::Remote,
    Column::Stale,
    Column::Process,
    Column::Netns,
    Column::Service,
];
