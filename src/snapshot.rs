//! Read-only views of a region for stats() and fl-shm-inspect. Everything here only loads, so
//! it works on a read-only mapping and never changes the region.

use crate::layout::{state, KIND_GCRA, KIND_SLOTS, KIND_STAMPED, KIND_WINDOW, W_FREE, W_LIVE, W_REAPING};
use crate::sys;
use crate::table::{
    fingerprint, meta_kind, meta_window_ms, read_fingerprint, read_name, read_state_words, reclaimable, Table,
};
use crate::workers::{holding_parts, worker_pid, worker_status};
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub magic: u64,
    pub layout_version: u32,
    pub slot_size: u32,
    pub header_size: u32,
    pub worker_size: u32,
    pub capacity: u32,
    pub max_workers: u32,
    pub total_size: u64,
    pub boot_id: String,
    /// Whether the region's clock values are from this boot.
    pub this_boot: bool,
    pub created_unix_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub capacity: u64,
    /// Live entries still counting something.
    pub used: u64,
    /// Live entries whose window has ended, waiting to be reclaimed in place.
    pub expired: u64,
    /// Freed entries (reusable, still part of probe chains).
    pub dead: u64,
    pub full_events: u64,
    pub reclaimed: u64,
    pub inserts: u64,
    /// Registered processes that are running.
    pub workers: u64,
    /// Registered processes that are gone and not yet reaped.
    pub dead_workers: u64,
    pub reaped_workers: u64,
    pub max_probe: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub index: usize,
    pub pid: u32,
    /// "live", "dead" (gone, not yet reaped) or "reaping".
    pub status: &'static str,
    pub registered_ns_ago: u64,
    /// (slot index, count) records with count > 0.
    pub holdings: Vec<(usize, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub index: usize,
    /// "window", "gcra" or "slots".
    pub kind: &'static str,
    /// The key, or its head and tail joined by "…" when longer than NAME_BYTES.
    pub name: String,
    pub name_truncated: bool,
    /// The 128-bit fingerprint that identifies the entry, as 32 hex digits.
    pub fingerprint: String,
    /// Units in the current window, or slots held.
    pub count: u64,
    pub window_ms: u32,
    /// Until the window ends (GCRA: until the backlog is gone); 0 for slots.
    pub resets_in_ns: u64,
    pub expired: bool,
    /// (pid, slots) of the processes holding slots of this key.
    pub holders: Vec<(u32, u64)>,
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        KIND_WINDOW => "window",
        KIND_GCRA => "gcra",
        KIND_SLOTS => "slots",
        KIND_STAMPED => "counter",
        _ => "unknown",
    }
}

impl Table {
    pub fn header_info(&self) -> HeaderInfo {
        let h = self.map.header();
        HeaderInfo {
            magic: h.magic,
            layout_version: h.layout_version,
            slot_size: h.slot_size,
            header_size: h.header_size,
            worker_size: h.worker_size,
            capacity: h.capacity,
            max_workers: h.max_workers,
            total_size: h.total_size,
            boot_id: h.boot_id.iter().map(|b| format!("{b:02x}")).collect(),
            this_boot: h.boot_id == sys::boot_id(),
            created_unix_ns: h.created_unix_ns,
        }
    }

    pub fn workers(&self) -> Vec<WorkerInfo> {
        let now = sys::now_ns();
        let mut out = Vec::new();
        for w in 0..self.dims.max_workers as usize {
            let entry = self.worker(w);
            let st = entry.state.load(Acquire);
            let status = match worker_status(st) {
                W_FREE => continue,
                W_LIVE if sys::process_alive(worker_pid(st), entry.start_ticks.load(Acquire)) => "live",
                W_LIVE => "dead",
                W_REAPING => "reaping",
                _ => "unknown",
            };
            let holdings = entry
                .holdings
                .iter()
                .filter_map(|h| holding_parts(h.load(Acquire), self.dims.capacity))
                .filter(|&(_, c)| c > 0)
                .collect();
            out.push(WorkerInfo {
                index: w,
                pid: worker_pid(st),
                status,
                registered_ns_ago: now.saturating_sub(entry.registered_ns.load(Acquire)),
                holdings,
            });
        }
        out
    }

    pub fn stats(&self) -> Stats {
        let h = self.map.header();
        let now = sys::now_ns();
        let mut s = Stats {
            capacity: self.dims.capacity as u64,
            full_events: h.full_events.load(Relaxed),
            reclaimed: h.reclaimed.load(Relaxed),
            inserts: h.inserts.load(Relaxed),
            reaped_workers: h.reaped_workers.load(Relaxed),
            max_probe: h.max_probe.load(Relaxed) as u64,
            size_bytes: self.map.size_bytes() as u64,
            ..Stats::default()
        };
        for i in 0..self.dims.capacity as usize {
            let slot = self.slot(i);
            let (lo, hi) = read_state_words(slot);
            match state::status(hi) {
                state::LIVE if reclaimable(meta_kind(slot.meta.load(Relaxed)), lo, hi, now) => s.expired += 1,
                state::LIVE => s.used += 1,
                state::DEAD => s.dead += 1,
                _ => {}
            }
        }
        for w in self.workers() {
            match w.status {
                "live" => s.workers += 1,
                "dead" => s.dead_workers += 1,
                _ => {}
            }
        }
        s
    }

    /// Slot index -> (pid, slots) of the live processes holding slots of it.
    fn holders(&self) -> HashMap<usize, Vec<(u32, u64)>> {
        let mut holders: HashMap<usize, Vec<(u32, u64)>> = HashMap::new();
        for w in self.workers().iter().filter(|w| w.status != "reaping") {
            for &(idx, count) in &w.holdings {
                holders.entry(idx).or_default().push((w.pid, count));
            }
        }
        holders
    }

    /// What slot `i` holds, if it is a live entry.
    fn key_info(&self, i: usize, now: u64, holders: &mut HashMap<usize, Vec<(u32, u64)>>) -> Option<KeyInfo> {
        let slot = self.slot(i);
        let (lo, hi) = read_state_words(slot);
        if state::status(hi) != state::LIVE {
            return None;
        }
        let meta = slot.meta.load(Relaxed);
        let kind = meta_kind(meta);
        let expired = reclaimable(kind, lo, hi, now);
        let (count, resets_in_ns) = match kind {
            KIND_SLOTS => (state::count(hi), 0),
            KIND_WINDOW if !expired => (state::count(hi), lo - now),
            KIND_GCRA if !expired => (0, lo - now),
            KIND_STAMPED if !expired => {
                // lo's low half: the region-clock second it ends (0: never).
                let ends_ns = (lo as u32 as u64) * 1_000_000_000;
                (state::count(hi), ends_ns.saturating_sub(now))
            }
            _ => (0, 0),
        };
        let (name, name_truncated) = read_name(slot);
        Some(KeyInfo {
            index: i,
            kind: kind_name(kind),
            name,
            name_truncated,
            fingerprint: read_fingerprint(slot),
            count,
            window_ms: meta_window_ms(meta),
            resets_in_ns,
            expired,
            holders: holders.remove(&i).unwrap_or_default(),
        })
    }

    /// The `top` live keys with the highest counts (GCRA keys by backlog), with their holders.
    pub fn top_keys(&self, top: usize) -> Vec<KeyInfo> {
        let now = sys::now_ns();
        let mut holders = self.holders();
        let mut keys: Vec<KeyInfo> = (0..self.dims.capacity as usize)
            .filter_map(|i| self.key_info(i, now, &mut holders))
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse((k.count, k.resets_in_ns)));
        keys.truncate(top);
        keys
    }

    /// The live entries of one key text, one per kind it is used as (window, GCRA, slots,
    /// counter): the fingerprint of the whole text finds them, however long it is.
    /// Loads only (two 64-bit loads per state, as everywhere here), so it works read-only.
    pub fn lookup(&self, key: &[u8]) -> Vec<KeyInfo> {
        let now = sys::now_ns();
        let mut holders = self.holders();
        let reach = self.map.header().max_probe.load(Acquire) as usize;
        let mut found = Vec::new();
        for kind in [KIND_WINDOW, KIND_GCRA, KIND_SLOTS, KIND_STAMPED] {
            let fp = fingerprint(kind, key);
            for d in 0..=reach.min(self.dims.capacity as usize - 1) {
                let i = (fp.0 as usize + d) & (self.dims.capacity as usize - 1);
                let slot = self.slot(i);
                let (_, hi) = read_state_words(slot);
                if state::status(hi) == state::EMPTY {
                    break;
                }
                let same = slot.key_lo.load(Relaxed) == fp.0 && slot.key_hi.load(Relaxed) == fp.1;
                if same && meta_kind(slot.meta.load(Relaxed)) == kind {
                    found.extend(self.key_info(i, now, &mut holders));
                    break;
                }
            }
        }
        found
    }
}
