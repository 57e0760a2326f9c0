//! A process's handle on a region: the table plus who this process is in it. A process
//! forked after the handle was made notices that it is new (a pthread_atfork counter) and
//! registers itself on its next call; no thread or lock is held across fork.

use crate::region::{self, Attach, Dimensions, OpenOptions, RegionError};
use crate::table::{Decision, FullPolicy, Hit, MultiDecision, Table, TableFull};
use crate::workers::{NotHeld, SlotError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::Once;

/// A refused acquire triggers a dead-worker scan at most this often, which bounds how long a
/// slot held by a killed process can cause a refusal.
pub const REAP_INTERVAL_NS: u64 = 1_000_000_000;

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Async-signal-safe: atomic stores only.
    FORK_GENERATION.fetch_add(1, Relaxed);
    crate::workers::reset_after_fork();
}

fn install_fork_hook() {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only touches a static atomic; the other two
        // handlers are absent.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// The outcome of an acquire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Yes,
    /// All `max_slots` are taken.
    No,
    /// The slot could not be recorded (full table, or this process holds the most distinct
    /// keys it can); the full-table policy admitted it. Nothing is held, nothing to release.
    Untracked,
}

/// Thread contract (the Rust API): `release` must pair with an earlier `acquire` of the same
/// key, and `close` must not run while another thread of the process acquires or releases.
/// A release racing a second, unpaired release, or a close, can lower a host-wide count
/// below what is held. Python callers are serialised by the GIL, which every one of these
/// calls holds throughout.
pub struct Region {
    table: Table,
    path: Option<PathBuf>,
    attach: Attach,
    policy: FullPolicy,
    /// FORK_GENERATION (low 32 bits) << 32 | (this process's worker entry + 1); 0 before
    /// registration. One word, so no thread can pair a new generation with an old entry.
    registration: AtomicU64,
}

fn registration(generation: u64, worker: usize) -> u64 {
    (generation & 0xffff_ffff) << 32 | (worker as u64 + 1)
}

impl Region {
    /// Creates or attaches the region at `path`, or an anonymous one shared with forked children.
    /// `dims` set explicitly must match an existing region.
    pub fn open(path: Option<&Path>, dims: Option<Dimensions>, policy: FullPolicy) -> Result<Region, RegionError> {
        Self::open_with(path, dims.map(|d| d.capacity), dims.map(|d| d.max_workers), policy)
    }

    /// As `open`, with each dimension set or not: one left unset takes the default for a new
    /// region and is not checked against an existing one.
    pub fn open_with(
        path: Option<&Path>,
        capacity: Option<u32>,
        max_workers: Option<u32>,
        policy: FullPolicy,
    ) -> Result<Region, RegionError> {
        install_fork_hook();
        let defaults = Dimensions::default();
        let opts = OpenOptions {
            dims: Dimensions {
                capacity: capacity.unwrap_or(defaults.capacity),
                max_workers: max_workers.unwrap_or(defaults.max_workers),
            },
            check_capacity: capacity.is_some(),
            check_workers: max_workers.is_some(),
        };
        let (map, attach) = match path {
            Some(p) => region::open_path(p, opts)?,
            None => (region::open_anonymous(opts.dims)?, Attach::Created),
        };
        let dims = Dimensions {
            capacity: map.header().capacity,
            max_workers: map.header().max_workers,
        };
        let region = Region {
            table: Table::new(map, dims),
            path: path.map(Path::to_path_buf),
            attach,
            policy,
            registration: AtomicU64::new(0),
        };
        region.worker_index()?;
        Ok(region)
    }

    /// Maps an existing region read-only (for inspection).
    pub fn inspect(path: &Path) -> Result<Table, RegionError> {
        let (map, dims) = region::open_read_only(path)?;
        Ok(Table::new(map, dims))
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// An error once the region's file was shrunk under this process (see `fault`): from
    /// then on every answer would come from zeros, so each call must fail instead.
    pub fn intact(&self) -> Result<(), RegionError> {
        region::intact(self.table.mapping(), &region::display_path(self.path.as_ref()))
    }

    pub fn attach(&self) -> Attach {
        self.attach
    }

    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// This process's worker entry, registering it first if this process is new (a fork).
    pub fn worker_index(&self) -> Result<usize, RegionError> {
        let generation = FORK_GENERATION.load(Relaxed);
        let current = self.registration.load(Acquire);
        if current != 0 && current >> 32 == generation & 0xffff_ffff {
            return Ok((current & 0xffff_ffff) as usize - 1);
        }
        let Some(idx) = self.table.register() else {
            return Err(RegionError {
                kind: region::ErrorKind::Config,
                message: format!(
                    "all {} worker entries of the region {} are taken by running processes; \
                     create it with more (FAST_LITELLM_SHM_WORKERS)",
                    self.table.dims().max_workers,
                    region::display_path(self.path.as_ref())
                ),
            });
        };
        self.registration.store(registration(generation, idx), Release);
        Ok(idx)
    }

    fn full(&self) -> Decision {
        Decision {
            allowed: self.policy == FullPolicy::Open,
            table_full: true,
            ..Decision::default()
        }
    }

    pub fn hit(&self, h: &Hit) -> Decision {
        match self.table.hit(h) {
            Ok(d) => d,
            Err(TableFull) => self.full(),
        }
    }

    pub fn hit_many(&self, hits: &[Hit]) -> MultiDecision {
        self.table.hit_many(hits, self.policy)
    }

    pub fn acquire(&self, key: &[u8], max_slots: u64) -> Result<Acquired, RegionError> {
        let w = self.worker_index()?;
        let mut reaped = false;
        loop {
            match self.table.acquire(w, key, max_slots) {
                Ok(true) => return Ok(Acquired::Yes),
                // A refusal may be caused by a killed holder: look for dead workers, then retry once.
                Ok(false) if !reaped && self.table.reap_if_due(REAP_INTERVAL_NS) > 0 => reaped = true,
                Ok(false) => return Ok(Acquired::No),
                Err(e) => {
                    if e == SlotError::HoldingsFull {
                        self.table.mapping().header().full_events.fetch_add(1, Relaxed);
                    }
                    return Ok(if self.policy == FullPolicy::Open {
                        Acquired::Untracked
                    } else {
                        Acquired::No
                    });
                }
            }
        }
    }

    pub fn release(&self, key: &[u8]) -> Result<(), NotHeld> {
        let w = self.worker_index().map_err(|_| NotHeld)?;
        self.table.release(w, key)
    }

    /// Gives back what this process holds and frees its worker entry.
    pub fn close(&self) {
        let current = self.registration.swap(0, AcqRel);
        if current != 0 && current >> 32 == FORK_GENERATION.load(Relaxed) & 0xffff_ffff {
            self.table.deregister((current & 0xffff_ffff) as usize - 1);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.close();
    }
}
