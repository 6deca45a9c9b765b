//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, section 3.4).
//!
//! Owns one lookup table of prime size `M` (default [`DEFAULT_TABLE_SIZE`] = 65537) whose entries
//! name backends. Each backend has a preference list, the permutation `(offset + j * skip) % M`
//! of the table's slots, where `offset` and `skip` come from two fixed hashes of the backend's
//! key; the table is filled by letting backends take turns claiming their next preferred free
//! slot. A flow goes to `table[hash(flow) % M]`.
//!
//! What it promises:
//! - balance: every backend owns `floor(M/N)` or `ceil(M/N)` entries (the turns are fair);
//! - little disruption: removing one of `N` backends moves its own flows and only a small share
//!   of the others' (about `1/N` of all flows move);
//! - agreement: the table depends only on the *set* of keys and `M`, not on the order they are
//!   given in, the process, or the node (the hashes are fixed, unseeded), so every node that
//!   knows the same endpoints sends a flow to the same one;
//! - cost: building is about `M ln M` slot probes and allocates (the table once per size, small
//!   per-backend arrays per build); [`Maglev::lookup`] is one modulo and one load,
//!   and never allocates or fails.

use super::hash_bytes;

/// The table size the paper and most deployments (Katran, Cilium) use.
pub const DEFAULT_TABLE_SIZE: usize = 65537;
/// The largest table accepted (a prime near 2^24; 64 MiB of entries at most per service).
pub const MAX_TABLE_SIZE: usize = 16_777_259;

const EMPTY: u32 = u32::MAX;
const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66; // "maglevof"
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b; // "maglevsk"

/// A Maglev lookup table. Entries are positions in the key slice given to [`Maglev::build`].
#[derive(Debug, Clone)]
pub struct Maglev {
    size: usize,
    table: Vec<u32>,
    backends: usize,
}

/// True when `n` is prime (trial division; `n` is at most [`MAX_TABLE_SIZE`] here).
pub fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    // Remainders are named rather than compared inline: `is_multiple_of` is newer than the
    // workspace's rust-version (1.85).
    let even = n % 2;
    if even == 0 {
        return n == 2;
    }
    let mut d = 3usize;
    while d.saturating_mul(d) <= n {
        let r = n % d;
        if r == 0 {
            return false;
        }
        d += 2;
    }
    true
}

impl Maglev {
    /// An empty table of `size` entries; `size` must be a prime no larger than [`MAX_TABLE_SIZE`].
    /// Nothing is allocated until the first [`Maglev::build`] with at least one backend.
    pub fn new(size: usize) -> Result<Self, String> {
        if size > MAX_TABLE_SIZE {
            return Err(format!(
                "maglev table size {size}: larger than the maximum {MAX_TABLE_SIZE}"
            ));
        }
        if !is_prime(size) {
            return Err(format!(
                "maglev table size {size}: not a prime (the permutations need a prime size, e.g. {DEFAULT_TABLE_SIZE})"
            ));
        }
        Ok(Maglev {
            size,
            table: Vec::new(),
            backends: 0,
        })
    }

    /// The table size `M`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How many backends the table was last built with.
    pub fn backends(&self) -> usize {
        self.backends
    }

    /// Refills the table for these backend keys (distinct keys expected; a repeated key shares the
    /// entries with its twin). Refuses more backends than entries, leaving the table as it was.
    pub fn build<K: AsRef<[u8]>>(&mut self, keys: &[K]) -> Result<(), String> {
        let n = keys.len();
        if n > self.size {
            return Err(format!(
                "maglev: {n} backends do not fit a table of {} entries",
                self.size
            ));
        }
        self.backends = n;
        if n == 0 {
            return Ok(());
        }
        let m = self.size as u64;
        // Backends take turns in the order of their keys, so the table does not depend on the
        // order the caller lists them in.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| keys[a].as_ref().cmp(keys[b].as_ref()));
        let mut offset = Vec::with_capacity(n);
        let mut skip = Vec::with_capacity(n);
        for &i in &order {
            let k = keys[i].as_ref();
            offset.push(hash_bytes(OFFSET_SEED, k) % m);
            skip.push(hash_bytes(SKIP_SEED, k) % (m - 1).max(1) + 1);
        }
        // `cur[t]` is the slot backend `order[t]` looks at next: offset + next * skip, kept
        // reduced mod M so no multiplication is needed per probe.
        let mut cur = offset.clone();
        self.table.clear();
        self.table.resize(self.size, EMPTY);
        let mut filled = 0usize;
        'fill: loop {
            for t in 0..n {
                let mut c = cur[t];
                // Every backend's permutation visits all M slots (skip and M are coprime since
                // M is prime and 1 <= skip < M), so a free slot is found while any remains.
                while self.table[c as usize] != EMPTY {
                    c = (c + skip[t]) % m;
                }
                // Positions fit in u32: n <= M <= MAX_TABLE_SIZE < 2^32.
                self.table[c as usize] = order[t] as u32;
                cur[t] = (c + skip[t]) % m;
                filled += 1;
                if filled == self.size {
                    break 'fill;
                }
            }
        }
        Ok(())
    }

    /// The backend (position in the keys last built with) for a flow hash, `None` when the table
    /// has no backends.
    pub fn lookup(&self, flow_hash: u64) -> Option<usize> {
        if self.backends == 0 {
            return None;
        }
        let slot = (flow_hash % self.size as u64) as usize;
        self.table
            .get(slot)
            .filter(|&&e| e != EMPTY)
            .map(|&e| e as usize)
    }

    /// Entries owned by each backend (position -> count); for tests and introspection.
    pub fn entries_per_backend(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.backends];
        if self.backends > 0 {
            for &e in &self.table {
                if let Some(c) = counts.get_mut(e as usize) {
                    *c += 1;
                }
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200 + 2))
            .collect()
    }

    fn flow_hashes(count: usize) -> Vec<u64> {
        (0..count as u64)
            .map(|i| hash_bytes(0x1234, &i.to_le_bytes()))
            .collect()
    }

    #[test]
    fn maglev_refuses_sizes_that_are_not_prime() {
        for bad in [0, 1, 4, 9, 65536, 65535, 100_000] {
            let e = Maglev::new(bad).unwrap_err();
            assert!(e.contains("not a prime"), "{bad}: {e}");
        }
        assert!(Maglev::new(MAX_TABLE_SIZE + 2)
            .unwrap_err()
            .contains("maximum"));
        for good in [2, 3, 13, 251, DEFAULT_TABLE_SIZE, 655_373] {
            assert_eq!(Maglev::new(good).unwrap().size(), good);
        }
        assert!(is_prime(MAX_TABLE_SIZE));
    }

    #[test]
    fn maglev_entries_per_backend_within_one_percent() {
        for n in [1, 3, 10, 64] {
            let mut m = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
            m.build(&keys(n)).unwrap();
            let counts = m.entries_per_backend();
            assert_eq!(counts.iter().sum::<usize>(), DEFAULT_TABLE_SIZE);
            let fair = DEFAULT_TABLE_SIZE as f64 / n as f64;
            for (i, &c) in counts.iter().enumerate() {
                assert!(
                    (c as f64 - fair).abs() <= fair * 0.01,
                    "n={n} backend {i}: {c} entries, fair share {fair:.1}"
                );
                // The turns are fair: floor or ceil of M/N.
                assert!(c == fair.floor() as usize || c == fair.ceil() as usize);
            }
        }
    }

    #[test]
    fn maglev_removing_one_of_ten_moves_about_a_tenth() {
        let n = 10;
        let all = keys(n);
        let mut before = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        before.build(&all).unwrap();
        let removed = 4;
        let rest: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != removed)
            .map(|(_, k)| k.clone())
            .collect();
        let mut after = Maglev::new(DEFAULT_TABLE_SIZE).unwrap();
        after.build(&rest).unwrap();

        let flows = flow_hashes(100_000);
        let (mut moved, mut on_removed, mut others, mut others_stayed) = (0, 0, 0, 0);
        for &h in &flows {
            let a = &all[before.lookup(h).unwrap()];
            let b = &rest[after.lookup(h).unwrap()];
            assert_ne!(b, &all[removed], "a flow went to the removed backend");
            if a != b {
                moved += 1;
            }
            if a == &all[removed] {
                on_removed += 1;
                assert_ne!(a, b, "a flow of the removed backend stayed");
            } else {
                others += 1;
                if a == b {
                    others_stayed += 1;
                }
            }
        }
        let frac = moved as f64 / flows.len() as f64;
        let inv = 1.0 / n as f64;
        assert!(
            frac >= 0.5 * inv && frac <= 2.0 * inv,
            "moved {frac:.4} of flows, expected about {inv}"
        );
        assert!(on_removed > 0);
        let stayed = others_stayed as f64 / others as f64;
        assert!(
            stayed >= 0.95,
            "only {stayed:.4} of the other backends' flows stayed"
        );
    }

    #[test]
    fn maglev_table_does_not_depend_on_key_order() {
        let k = keys(7);
        let mut rev = k.clone();
        rev.reverse();
        let mut a = Maglev::new(251).unwrap();
        let mut b = Maglev::new(251).unwrap();
        a.build(&k).unwrap();
        b.build(&rev).unwrap();
        for h in flow_hashes(2000) {
            assert_eq!(k[a.lookup(h).unwrap()], rev[b.lookup(h).unwrap()]);
        }
    }

    #[test]
    fn maglev_empty_and_oversized_sets() {
        let mut m = Maglev::new(13).unwrap();
        assert_eq!(m.lookup(42), None);
        m.build(&keys(3)).unwrap();
        assert!(m.lookup(42).is_some());
        assert!(m.build(&keys(14)).unwrap_err().contains("do not fit"));
        // Refused: the previous table still answers.
        assert_eq!(m.backends(), 3);
        assert!(m.lookup(42).unwrap() < 3);
        m.build::<String>(&[]).unwrap();
        assert_eq!(m.lookup(42), None);
        assert!(m.entries_per_backend().is_empty());
        // As many backends as entries: each gets exactly one.
        m.build(&keys(13)).unwrap();
        assert_eq!(m.entries_per_backend(), vec![1; 13]);
    }
}
