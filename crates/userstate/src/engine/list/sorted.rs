//! The two sorted structures the list indexes are made of: [`SortedIds`], entry indices kept in
//! order in chunks, and [`Merge`], a k-way merge of sorted streams of them. Both take the order
//! as a comparison function, so they know nothing of entries or users.

use std::cmp::Ordering;

/// A sorted list of entry indices in chunks of at most [`CHUNK`]: insert and remove cost a
/// binary search and a copy of one chunk, a rank costs a pass over the chunk lengths.
#[derive(Clone, Debug, Default)]
pub(super) struct SortedIds {
    pub(super) chunks: Vec<Vec<u32>>,
    len: usize,
}

/// The most indices a chunk holds before it is split in two.
pub(super) const CHUNK: usize = 512;

impl SortedIds {
    /// How many indices are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Inserts `id`, ordered by `cmp`; where it went (chunk, place in the chunk).
    pub(super) fn insert(&mut self, id: u32, cmp: impl Fn(u32, u32) -> Ordering) -> (usize, usize) {
        if self.chunks.is_empty() {
            self.chunks.push(vec![id]);
            self.len = 1;
            return (0, 0);
        }
        let c = self
            .chunks
            .partition_point(|ch| cmp(ch[ch.len() - 1], id) == Ordering::Less)
            .min(self.chunks.len() - 1);
        let last = c + 1 == self.chunks.len();
        let chunk = &mut self.chunks[c];
        let at = chunk.partition_point(|&x| cmp(x, id) == Ordering::Less);
        chunk.insert(at, id);
        self.len += 1;
        if chunk.len() > CHUNK {
            // Appending (as creation dates mostly do) leaves the chunk full; else halves it.
            let appended = last && at == CHUNK;
            let split = if appended { CHUNK } else { CHUNK / 2 };
            let tail = chunk.split_off(split);
            chunk.shrink_to(CHUNK);
            self.chunks.insert(c + 1, tail);
            if at >= split {
                return (c + 1, at - split);
            }
        }
        (c, at)
    }

    /// Removes `id`, found by `cmp` (which must order it where it was inserted). Whether it
    /// was there.
    pub(super) fn remove(&mut self, id: u32, cmp: impl Fn(u32, u32) -> Ordering) -> bool {
        let c = self
            .chunks
            .partition_point(|ch| cmp(ch[ch.len() - 1], id) == Ordering::Less);
        let Some(chunk) = self.chunks.get_mut(c) else {
            return false;
        };
        let at = chunk.partition_point(|&x| cmp(x, id) == Ordering::Less);
        if chunk.get(at) != Some(&id) {
            return false;
        }
        chunk.remove(at);
        if chunk.is_empty() {
            self.chunks.remove(c);
        }
        self.len -= 1;
        true
    }

    /// Keeps the indices for which `keep` holds.
    pub(super) fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let kept: Vec<u32> = self.range(0, self.len).filter(|&i| keep(i)).collect();
        self.len = kept.len();
        self.chunks = kept.chunks(CHUNK).map(<[u32]>::to_vec).collect();
    }

    /// How many indices come before the first for which `before` is false (`before` must be
    /// true for a prefix of the list and false after it).
    pub(super) fn rank(&self, before: impl Fn(u32) -> bool) -> usize {
        let c = self.chunks.partition_point(|ch| before(ch[ch.len() - 1]));
        let skipped: usize = self.chunks[..c].iter().map(Vec::len).sum();
        skipped
            + self
                .chunks
                .get(c)
                .map_or(0, |ch| ch.partition_point(|&x| before(x)))
    }

    /// The indices at ranks `from..to`, in order (reverse the iterator for descending).
    pub(super) fn range(
        &self,
        from: usize,
        to: usize,
    ) -> impl DoubleEndedIterator<Item = u32> + '_ {
        let to = to.min(self.len);
        let mut slices = Vec::new();
        let mut start = 0;
        for ch in &self.chunks {
            let end = start + ch.len();
            if end > from && start < to {
                let lo = from.saturating_sub(start);
                let hi = ch.len() - end.saturating_sub(to);
                slices.push(&ch[lo..hi]);
            }
            if end >= to {
                break;
            }
            start = end;
        }
        slices.into_iter().flatten().copied()
    }
}

/// Merges sorted streams of indices into one, by `cmp` (a k-way merge on a binary heap of the
/// streams' heads).
pub(super) struct Merge<I, F> {
    heap: Vec<(u32, I)>,
    cmp: F,
}

impl<I: Iterator<Item = u32>, F: Fn(u32, u32) -> Ordering> Merge<I, F> {
    /// The merge of `streams`, each sorted by `cmp`.
    pub(super) fn new(streams: impl IntoIterator<Item = I>, cmp: F) -> Self {
        let mut merge = Self {
            heap: Vec::new(),
            cmp,
        };
        for mut s in streams {
            if let Some(head) = s.next() {
                merge.heap.push((head, s));
                let last = merge.heap.len() - 1;
                merge.sift_up(last);
            }
        }
        merge
    }

    fn less(&self, a: usize, b: usize) -> bool {
        (self.cmp)(self.heap[a].0, self.heap[b].0) == Ordering::Less
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.less(i, parent) {
                break;
            }
            self.heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < self.heap.len() && self.less(l, least) {
                least = l;
            }
            if r < self.heap.len() && self.less(r, least) {
                least = r;
            }
            if least == i {
                return;
            }
            self.heap.swap(i, least);
            i = least;
        }
    }
}

impl<I: Iterator<Item = u32>, F: Fn(u32, u32) -> Ordering> Iterator for Merge<I, F> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let top = self.heap.first_mut()?;
        let out = top.0;
        match top.1.next() {
            Some(next) => top.0 = next,
            None => {
                self.heap.swap_remove(0);
            }
        }
        if !self.heap.is_empty() {
            self.sift_down(0);
        }
        Some(out)
    }
}
