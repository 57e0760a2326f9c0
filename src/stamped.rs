//! Stamped counters: the state LiteLLM keeps in its in-memory caches (rate-limit windows,
//! per-minute router counters, cooldown records), kept in the table instead so every process
//! of the host shares it.
//!
//! A stamped entry's state lo word is `stamp << 32 | expires`: a caller-chosen u32 (a window
//! start in the caller's seconds, a timestamp) and the entry's end of life in the region's
//! clock, in whole seconds (0: never). The count is the state's usual 48-bit count.
//!
//! LiteLLM's fixed window is two entries: the window key, whose stamp is the window start,
//! and each counter key, whose stamp names the window it counts in. A counter stamped with an
//! older start counts 0 in the current window, which is how LiteLLM's "zero the siblings on a
//! new window" is kept without touching the siblings. The caller's clock decides windows
//! (LiteLLM's injectable `time_provider`); the region's clock only decides when an entry is
//! gone, as LiteLLM's cache TTLs do.

use crate::layout::{state, KIND_STAMPED};
use crate::sys::now_ns;
use crate::table::{join, split, Found, Table, TableFull};
use std::sync::atomic::Ordering::*;

const NS_PER_S: u64 = 1_000_000_000;
/// Retries of a window step after another process moved the window on under it; then the
/// counter is rewritten into the window seen (only a caller clock going backwards gets there).
const WINDOW_RETRIES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamped {
    pub stamp: u32,
    pub count: u64,
    /// End of life in the region's clock, whole seconds; 0: never.
    pub expires_s: u32,
}

/// When a new stamped entry (or a restarted one) ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// This long from now.
    In {
        ns: u64,
    },
    /// At this region-clock second (a counter ends with its window).
    At {
        s: u32,
    },
}

/// How an add meets an entry stamped later than the stamp it brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnNewer {
    Refuse,
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The count after the add.
    Done(Stamped),
    /// The entry holds a later stamp: nothing written.
    Newer(Stamped),
    /// `cap` would be passed: nothing written; the entry as it is (count 0 if of another stamp).
    Capped(Stamped),
}

/// One item of an all-or-nothing reservation (LiteLLM's atomic check-and-increment).
#[derive(Debug, Clone)]
pub struct Reserve<'a> {
    pub window_key: &'a [u8],
    pub counter_key: &'a [u8],
    pub limit: u64,
    pub increment: u64,
    pub window_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub allowed: bool,
    /// The first item over its limit.
    pub denied_index: Option<usize>,
    /// Per item: (window start, count): after the increment when allowed, as found otherwise.
    pub counts: Vec<(u32, u64)>,
}

#[inline]
fn unpack_lo(lo: u64) -> (u32, u32) {
    ((lo >> 32) as u32, lo as u32)
}

#[inline]
fn pack_lo(stamp: u32, expires_s: u32) -> u64 {
    (stamp as u64) << 32 | expires_s as u64
}

pub(crate) fn now_s() -> u32 {
    (now_ns() / NS_PER_S).min(u32::MAX as u64) as u32
}

/// Whether a stamped entry is past its end of life at region second `now_s`.
pub(crate) fn stamped_expired(lo: u64, now_s: u32) -> bool {
    let (_, expires) = unpack_lo(lo);
    expires != 0 && expires <= now_s
}

fn expires_at(e: Expiry, now: u32) -> u32 {
    match e {
        Expiry::Never => 0,
        // Rounded up, and never 0 (which means never).
        Expiry::In { ns } => (now as u64 + ns.div_ceil(NS_PER_S)).clamp(1, u32::MAX as u64) as u32,
        Expiry::At { s } => s,
    }
}

/// The lifetime an expiry gives an entry inserted now, recorded for the inspector's window
/// column (0: never expires).
fn lifetime_ns(e: Expiry) -> u64 {
    match e {
        Expiry::Never => 0,
        Expiry::In { ns } => ns,
        Expiry::At { s } => (s as u64).saturating_sub(now_s() as u64) * NS_PER_S,
    }
}

fn over(count: u64, delta: i64, cap: u64) -> bool {
    if delta == 0 {
        count >= cap
    } else {
        delta > 0 && count.saturating_add(delta as u64) > cap
    }
}

impl Table {
    fn stamped_state(&self, found: Found) -> Option<(u64, u64, u128)> {
        let st = self.slot(found.idx).state.load(Acquire);
        let (lo, hi) = split(st);
        (state::status(hi) == state::LIVE && state::generation(hi) == found.generation).then_some((lo, hi, st))
    }

    /// A key's live entry; None when there is none or it has expired.
    pub fn stamped_get(&self, key: &[u8]) -> Option<Stamped> {
        let found = self.find(KIND_STAMPED, key)?;
        let (lo, hi, _) = self.stamped_state(found)?;
        if stamped_expired(lo, now_s()) {
            return None;
        }
        let (stamp, expires_s) = unpack_lo(lo);
        Some(Stamped {
            stamp,
            count: state::count(hi),
            expires_s,
        })
    }

    /// Adds `delta` (the count stays within 0..=COUNT_MAX) to the count of `stamp`. An entry
    /// that is absent, expired or of an older stamp starts over at `stamp` with `expiry`; an
    /// entry of the same stamp keeps its expiry. With `cap`, an add that would take the count
    /// past it (a zero add: one already at it) writes nothing.
    pub fn stamped_add(
        &self,
        key: &[u8],
        stamp: u32,
        delta: i64,
        expiry: Expiry,
        cap: Option<u64>,
    ) -> Result<Added, TableFull> {
        self.stamped_update(key, stamp, delta, expiry, cap, OnNewer::Refuse)
    }

    fn stamped_update(
        &self,
        key: &[u8],
        stamp: u32,
        delta: i64,
        expiry: Expiry,
        cap: Option<u64>,
        on_newer: OnNewer,
    ) -> Result<Added, TableFull> {
        loop {
            let found = self.find_or_insert(KIND_STAMPED, key, lifetime_ns(expiry))?;
            let s = self.slot(found.idx);
            let now = now_s();
            let Some((mut lo, mut hi, mut st)) = self.stamped_state(found) else {
                continue; // Reclaimed since it was found: look again.
            };
            loop {
                let (old_stamp, old_expires) = unpack_lo(lo);
                // An entry just inserted (lo 0, count 0) has never been written: it is not a
                // live never-expiring entry of stamp 0, and takes this add's expiry.
                let fresh = lo == 0 && state::count(hi) == 0;
                let live = !fresh && !stamped_expired(lo, now);
                let (base, expires) = if live && old_stamp == stamp {
                    (state::count(hi), old_expires)
                } else if live && old_stamp > stamp && on_newer == OnNewer::Refuse {
                    let seen = Stamped {
                        stamp: old_stamp,
                        count: state::count(hi),
                        expires_s: old_expires,
                    };
                    return Ok(Added::Newer(seen));
                } else {
                    (0, expires_at(expiry, now))
                };
                if let Some(cap) = cap {
                    if over(base, delta, cap) {
                        return Ok(Added::Capped(Stamped {
                            stamp,
                            count: base,
                            expires_s: expires,
                        }));
                    }
                }
                let count = if delta >= 0 {
                    base.saturating_add(delta as u64).min(state::COUNT_MAX)
                } else {
                    base.saturating_sub(delta.unsigned_abs())
                };
                let new = join(
                    pack_lo(stamp, expires),
                    state::pack(state::LIVE, found.generation, count),
                );
                // AcqRel: each add is ordered after every add it builds on, in any process.
                match s.state.compare_exchange_weak(st, new, AcqRel, Acquire) {
                    Ok(_) => {
                        return Ok(Added::Done(Stamped {
                            stamp,
                            count,
                            expires_s: expires,
                        }))
                    }
                    Err(actual) => {
                        st = actual;
                        (lo, hi) = split(st);
                        if state::status(hi) != state::LIVE || state::generation(hi) != found.generation {
                            break; // Reclaimed: find it again.
                        }
                    }
                }
            }
        }
    }

    /// Sets `value` at `stamp` whatever the entry held, ending after `expiry`.
    pub fn stamped_set(&self, key: &[u8], stamp: u32, value: u64, expiry: Expiry) -> Result<(), TableFull> {
        loop {
            let found = self.find_or_insert(KIND_STAMPED, key, lifetime_ns(expiry))?;
            let Some((_, _, st)) = self.stamped_state(found) else {
                continue;
            };
            let expires = expires_at(expiry, now_s());
            let new = join(
                pack_lo(stamp, expires),
                state::pack(state::LIVE, found.generation, value),
            );
            if self
                .slot(found.idx)
                .state
                .compare_exchange(st, new, AcqRel, Acquire)
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// The live window of `window_key` at the caller's second `now`: the one there unless
    /// `now - start >= window_s`, else a new one starting at `now` (ending window_s from now
    /// in the region's clock). Returns (start, region-clock end, whether it started here).
    pub fn window_open(&self, window_key: &[u8], now: u32, window_s: u32) -> Result<(u32, u32, bool), TableFull> {
        loop {
            let found = self.find_or_insert(KIND_STAMPED, window_key, window_s as u64 * NS_PER_S)?;
            let s = self.slot(found.idx);
            let Some((lo, _, st)) = self.stamped_state(found) else {
                continue;
            };
            let (start, expires) = unpack_lo(lo);
            if !stamped_expired(lo, now_s()) && expires != 0 && (now as i64 - start as i64) < window_s as i64 {
                return Ok((start, expires, false));
            }
            let expires = expires_at(
                Expiry::In {
                    ns: window_s as u64 * NS_PER_S,
                },
                now_s(),
            );
            let new = join(pack_lo(now, expires), state::pack(state::LIVE, found.generation, 0));
            if s.state.compare_exchange(st, new, AcqRel, Acquire).is_ok() {
                return Ok((now, expires, true));
            }
        }
    }

    /// LiteLLM's in-memory window step for one (window, counter) pair: opens the window and
    /// adds `delta` to the counter in it, whatever its limit. Returns (start, count, started).
    pub fn window_add(
        &self,
        window_key: &[u8],
        counter_key: &[u8],
        now: u32,
        window_s: u32,
        delta: i64,
    ) -> Result<(u32, u64, bool), TableFull> {
        for attempt in 0.. {
            let (start, expires, started) = self.window_open(window_key, now, window_s)?;
            let on_newer = if attempt < WINDOW_RETRIES {
                OnNewer::Refuse
            } else {
                OnNewer::Replace
            };
            match self.stamped_update(counter_key, start, delta, Expiry::At { s: expires }, None, on_newer)? {
                Added::Done(c) => return Ok((start, c.count, started)),
                // Another process opened a newer window since: count in that one.
                Added::Newer(_) | Added::Capped(_) => continue,
            }
        }
        unreachable!("the last attempt replaces")
    }

    /// The window and counter as LiteLLM's cache would show them: a live window gives its
    /// start and the counter's count in it (0 if the counter is of an older window); without
    /// one, the counter is whatever is left of it, as a cache entry outliving its window is.
    pub fn window_get(&self, window_key: &[u8], counter_key: &[u8]) -> (Option<u32>, Option<u64>) {
        let counter = self.stamped_get(counter_key);
        match self.stamped_get(window_key) {
            Some(w) => (
                Some(w.stamp),
                Some(counter.filter(|c| c.stamp == w.stamp).map_or(0, |c| c.count)),
            ),
            None => (None, counter.map(|c| c.count)),
        }
    }

    /// Adds a signed `delta` to the counter in the live window (only if that window started
    /// at `expected_start`, when given). None, with nothing written, when there is no such
    /// window: a correction for a window that has ended has nothing left to correct.
    pub fn window_adjust(
        &self,
        window_key: &[u8],
        counter_key: &[u8],
        delta: i64,
        expected_start: Option<u32>,
    ) -> Result<Option<u64>, TableFull> {
        let Some(w) = self.stamped_get(window_key) else {
            return Ok(None);
        };
        if expected_start.is_some_and(|e| e != w.stamp) {
            return Ok(None);
        }
        match self.stamped_add(counter_key, w.stamp, delta, Expiry::At { s: w.expires_s }, None)? {
            Added::Done(c) => Ok(Some(c.count)),
            Added::Newer(_) | Added::Capped(_) => Ok(None),
        }
    }

    /// Checks every item against its limit with the counts as they are at the caller's second
    /// `now`, and only if all fit, adds each increment: all or nothing. An add that another
    /// process's makes no longer fit gives back the ones before it and refuses.
    pub fn window_reserve(&self, items: &[Reserve], now: u32) -> Result<Reserved, TableFull> {
        let mut counts = Vec::with_capacity(items.len());
        // Pass 1: read, as LiteLLM does under its lock; an ended window counts 0.
        for (n, it) in items.iter().enumerate() {
            let (start, count) = match self.stamped_get(it.window_key) {
                Some(w) if (now as i64 - w.stamp as i64) < it.window_s as i64 => {
                    let c = self.stamped_get(it.counter_key).filter(|c| c.stamp == w.stamp);
                    (w.stamp, c.map_or(0, |c| c.count))
                }
                _ => (now, 0),
            };
            counts.push((start, count));
            if over(count, it.increment as i64, it.limit) {
                return Ok(Reserved {
                    allowed: false,
                    denied_index: Some(n),
                    counts,
                });
            }
        }
        // Pass 2: add under each cap; rolled back if another process got there first.
        counts.clear();
        let mut ends = Vec::with_capacity(items.len());
        for (n, it) in items.iter().enumerate() {
            let (start, expires, _) = self.window_open(it.window_key, now, it.window_s)?;
            let capped = self.stamped_add(
                it.counter_key,
                start,
                it.increment as i64,
                Expiry::At { s: expires },
                Some(it.limit),
            );
            let seen = match capped {
                Ok(Added::Done(c)) => {
                    counts.push((start, c.count));
                    ends.push(expires);
                    continue;
                }
                Ok(Added::Capped(c)) | Ok(Added::Newer(c)) => Ok(c),
                Err(full) => Err(full),
            };
            for ((done, &(start, _)), &s) in items.iter().zip(&counts).zip(&ends) {
                let _ = self.stamped_add(
                    done.counter_key,
                    start,
                    -(done.increment as i64),
                    Expiry::At { s },
                    None,
                );
            }
            let seen = seen?;
            counts.push((start, if seen.stamp == start { seen.count } else { 0 }));
            return Ok(Reserved {
                allowed: false,
                denied_index: Some(n),
                counts,
            });
        }
        Ok(Reserved {
            allowed: true,
            denied_index: None,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::table;

    #[test]
    fn a_counter_of_an_older_window_counts_zero_in_the_new_one() {
        let t = table();
        assert_eq!(t.window_add(b"w", b"w:req", 1000, 60, 1).unwrap(), (1000, 1, true));
        assert_eq!(t.window_add(b"w", b"w:tok", 1010, 60, 5).unwrap(), (1000, 5, false));
        assert_eq!(t.window_add(b"w", b"w:req", 1059, 60, 1).unwrap(), (1000, 2, false));
        assert_eq!(t.window_get(b"w", b"w:tok"), (Some(1000), Some(5)));
        // now - start >= window: a new window at 1060; the sibling is zero in it.
        assert_eq!(t.window_add(b"w", b"w:req", 1060, 60, 1).unwrap(), (1060, 1, true));
        assert_eq!(t.window_get(b"w", b"w:tok"), (Some(1060), Some(0)));
        assert_eq!(t.window_get(b"nope", b"nope:req"), (None, None));
    }

    #[test]
    fn adjust_applies_only_to_the_window_it_names() {
        let t = table();
        t.window_add(b"w", b"w:tok", 100, 60, 50).unwrap();
        assert_eq!(t.window_adjust(b"w", b"w:tok", -20, Some(100)).unwrap(), Some(30));
        assert_eq!(
            t.window_adjust(b"w", b"w:tok", -100, None).unwrap(),
            Some(0),
            "floored at 0"
        );
        assert_eq!(t.window_adjust(b"w", b"w:tok", 7, Some(99)).unwrap(), None);
        assert_eq!(t.window_adjust(b"gone", b"gone:tok", 7, None).unwrap(), None);
        assert_eq!(t.window_get(b"gone", b"gone:tok"), (None, None), "nothing written");
    }

    #[test]
    fn reserve_is_all_or_nothing() {
        let t = table();
        let items = |inc| {
            vec![
                Reserve {
                    window_key: b"a",
                    counter_key: b"a:tok",
                    limit: 100,
                    increment: inc,
                    window_s: 60,
                },
                Reserve {
                    window_key: b"b",
                    counter_key: b"b:tok",
                    limit: 50,
                    increment: inc,
                    window_s: 60,
                },
            ]
        };
        let r = t.window_reserve(&items(40), 500).unwrap();
        assert_eq!((r.allowed, r.counts.clone()), (true, vec![(500, 40), (500, 40)]));
        let r = t.window_reserve(&items(20), 501).unwrap();
        assert_eq!((r.allowed, r.denied_index), (false, Some(1)));
        assert_eq!(r.counts, vec![(500, 40), (500, 40)], "as found, nothing written");
        assert_eq!(t.window_get(b"a", b"a:tok"), (Some(500), Some(40)));
        // Zero increment: refused once at the limit.
        let at_limit = [Reserve {
            window_key: b"c",
            counter_key: b"c:tok",
            limit: 0,
            increment: 0,
            window_s: 60,
        }];
        assert!(!t.window_reserve(&at_limit, 500).unwrap().allowed);
    }

    #[test]
    fn a_counter_expires_after_its_ttl() {
        let t = table();
        t.stamped_add(b"short", 0, 1, Expiry::In { ns: NS_PER_S }, None)
            .unwrap();
        assert_eq!(t.stamped_get(b"short").map(|c| c.count), Some(1));
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(t.stamped_get(b"short").map(|c| c.count), None, "expired after 1 s");
        match t
            .stamped_add(b"short", 0, 1, Expiry::In { ns: NS_PER_S }, None)
            .unwrap()
        {
            Added::Done(c) => assert_eq!(c.count, 1, "an expired counter starts over"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lost_race_in_reserve_gives_back_the_earlier_items() {
        let t = table();
        // b's counter is at its cap in the window pass 2 will open, though pass 1 saw none.
        let (start, expires, _) = t.window_open(b"b", 700, 60).unwrap();
        t.stamped_set(b"b:tok", start, 10, Expiry::At { s: expires }).unwrap();
        t.stamped_set(b"b", 0, 0, Expiry::In { ns: 60 * NS_PER_S }).unwrap();
        let items = [
            Reserve {
                window_key: b"a",
                counter_key: b"a:tok",
                limit: 100,
                increment: 5,
                window_s: 60,
            },
            Reserve {
                window_key: b"b",
                counter_key: b"b:tok",
                limit: 10,
                increment: 5,
                window_s: 60,
            },
        ];
        // The window of b (stamp 0) has ended for now = 700 in pass 1, so b counts 0 there;
        // pass 2 opens a new window at 700, in which the counter is 10 again.
        let r = t.window_reserve(&items, 700).unwrap();
        assert_eq!((r.allowed, r.denied_index), (false, Some(1)));
        assert_eq!(t.window_get(b"a", b"a:tok"), (Some(700), Some(0)), "a given back");
    }

    #[test]
    fn plain_counters_and_values() {
        let t = table();
        let add = |d| {
            t.stamped_add(b"c", 0, d, Expiry::In { ns: 60 * NS_PER_S }, None)
                .unwrap()
        };
        assert!(matches!(add(3), Added::Done(Stamped { count: 3, .. })));
        assert!(matches!(add(-1), Added::Done(Stamped { count: 2, .. })));
        assert_eq!(t.stamped_get(b"c").unwrap().count, 2);
        t.stamped_set(b"v", 1234, 99, Expiry::Never).unwrap();
        assert_eq!(
            t.stamped_get(b"v"),
            Some(Stamped {
                stamp: 1234,
                count: 99,
                expires_s: 0
            })
        );
        // An expired entry reads as absent and starts over.
        t.stamped_set(b"e", 5, 9, Expiry::At { s: 1 }).unwrap();
        assert_eq!(t.stamped_get(b"e"), None);
        assert!(matches!(
            t.stamped_add(b"e", 5, 1, Expiry::Never, None).unwrap(),
            Added::Done(Stamped { count: 1, .. })
        ));
    }

    #[test]
    fn a_window_shared_by_threads_counts_every_add_once() {
        let t = std::sync::Arc::new(table());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| t.window_add(b"w", b"w:req", 42, 60, 1).unwrap().1 <= 10)
                        .count()
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(admitted, 10, "exactly the limit saw a count within it");
        assert_eq!(t.window_get(b"w", b"w:req"), (Some(42), Some(4000)));
    }
}
