//! The PyO3 layer: converts between Python and the engine's plain Rust types, nothing more.

mod tokens;

use crate::engine::{Acquired, Region};
use crate::region::{Attach, Dimensions, ErrorKind, RegionError as EngineError};
use crate::snapshot::{HeaderInfo, KeyInfo, Stats, WorkerInfo};
use crate::stamped::{Added, Expiry, Reserve};
use crate::table::{Algorithm, Decision, FullPolicy, Hit, MultiDecision, Table, TableFull};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

create_exception!(
    _native,
    RegionError,
    PyException,
    "The shared region cannot be created, attached or used."
);
create_exception!(
    _native,
    RegionFormatError,
    RegionError,
    "The file is not a region of this layout: foreign, corrupt, truncated or from another version."
);
create_exception!(
    _native,
    RegionSpaceError,
    RegionError,
    "No room for the region in its filesystem (/dev/shm too small)."
);
create_exception!(
    _native,
    RegionPermissionError,
    RegionError,
    "The region file is owned by another user, is a symlink, or cannot be opened."
);
create_exception!(
    _native,
    RegionConfigError,
    RegionError,
    "The requested dimensions are invalid or differ from the existing region."
);
create_exception!(
    _native,
    RegionFullError,
    RegionError,
    "No slot of the table could be found or made for a key (FAST_LITELLM_SHM_CAPACITY too small)."
);
create_exception!(
    _native,
    SlotNotHeldError,
    PyException,
    "release() of a key this process holds no slot of."
);

fn to_py_err(e: EngineError) -> PyErr {
    match e.kind {
        ErrorKind::Format => RegionFormatError::new_err(e.message),
        ErrorKind::NoSpace => RegionSpaceError::new_err(e.message),
        ErrorKind::Permission => RegionPermissionError::new_err(e.message),
        ErrorKind::Config => RegionConfigError::new_err(e.message),
        ErrorKind::Io | ErrorKind::Unsupported => RegionError::new_err(e.message),
    }
}

const NS: f64 = 1e9;

fn full(key: &str) -> PyErr {
    RegionFullError::new_err(format!(
        "region table full: no slot for {key:?}; raise FAST_LITELLM_SHM_CAPACITY"
    ))
}

/// window_reserve's answer: (allowed, first item that did not fit, [(window start, count)]).
type ReserveResult = (bool, Option<usize>, Vec<(u32, u64)>);

/// A caller's whole second (LiteLLM's `int(time)`), as the u32 stamps hold it.
fn seconds(value: i64, what: &str) -> PyResult<u32> {
    u32::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a whole second from 0 to 2**32-1, got {value}")))
}

/// A TTL in seconds; 0 means the entry never expires.
fn expiry(ttl_s: f64) -> PyResult<Expiry> {
    if ttl_s == 0.0 {
        return Ok(Expiry::Never);
    }
    if !(ttl_s.is_finite() && ttl_s > 0.0 && ttl_s <= 1e9) {
        return Err(PyValueError::new_err(format!(
            "ttl_s must be 0 (never expires) or a positive number of seconds, got {ttl_s}"
        )));
    }
    Ok(Expiry::In { ns: window_ns(ttl_s)? })
}

fn window_ns(window_s: f64) -> PyResult<u64> {
    if !(window_s.is_finite() && window_s > 0.0 && window_s <= 1e9) {
        return Err(PyValueError::new_err(format!(
            "window_s must be a positive number of seconds, got {window_s}"
        )));
    }
    Ok((window_s * NS).round().max(1.0) as u64)
}

fn algorithm(name: &str) -> PyResult<Algorithm> {
    match name {
        "fixed" => Ok(Algorithm::FixedWindow),
        "gcra" => Ok(Algorithm::Gcra),
        other => Err(PyValueError::new_err(format!(
            "algorithm must be 'fixed' or 'gcra', got {other:?}"
        ))),
    }
}

/// The answer to one limit check.
#[pyclass(module = "fast_litellm._native", name = "Decision", frozen, get_all)]
pub struct PyDecision {
    allowed: bool,
    current: u64,
    remaining: u64,
    reset_in_s: f64,
    retry_after_s: f64,
    table_full: bool,
}

#[pymethods]
impl PyDecision {
    fn __repr__(&self) -> String {
        format!(
            "Decision(allowed={}, current={}, remaining={}, reset_in_s={:.3}, retry_after_s={:.3}, table_full={})",
            py_bool(self.allowed),
            self.current,
            self.remaining,
            self.reset_in_s,
            self.retry_after_s,
            py_bool(self.table_full)
        )
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

impl From<Decision> for PyDecision {
    fn from(d: Decision) -> Self {
        PyDecision {
            allowed: d.allowed,
            current: d.current,
            remaining: d.remaining,
            reset_in_s: d.reset_in_ns as f64 / NS,
            retry_after_s: d.retry_after_ns as f64 / NS,
            table_full: d.table_full,
        }
    }
}

/// The answer to several limits checked at once: admitted only if all admit.
#[pyclass(module = "fast_litellm._native", name = "MultiDecision", frozen, get_all)]
pub struct PyMultiDecision {
    allowed: bool,
    decisions: Vec<Py<PyDecision>>,
    denied_index: Option<usize>,
    table_full: bool,
}

#[pymethods]
impl PyMultiDecision {
    fn __repr__(&self) -> String {
        format!(
            "MultiDecision(allowed={}, denied_index={:?}, table_full={}, decisions={})",
            py_bool(self.allowed),
            self.denied_index,
            py_bool(self.table_full),
            self.decisions.len()
        )
    }

    fn __bool__(&self) -> bool {
        self.allowed
    }
}

fn multi_to_py(py: Python<'_>, m: MultiDecision) -> PyResult<PyMultiDecision> {
    let decisions = m
        .decisions
        .into_iter()
        .map(|d| Py::new(py, PyDecision::from(d)))
        .collect::<PyResult<_>>()?;
    Ok(PyMultiDecision {
        allowed: m.allowed,
        decisions,
        denied_index: m.denied_index,
        table_full: m.table_full,
    })
}

fn stats_dict<'py>(py: Python<'py>, s: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("capacity", s.capacity)?;
    d.set_item("used", s.used)?;
    d.set_item("expired", s.expired)?;
    d.set_item("dead", s.dead)?;
    d.set_item("load_factor", (s.used + s.expired) as f64 / s.capacity as f64)?;
    d.set_item("full_events", s.full_events)?;
    d.set_item("reclaimed", s.reclaimed)?;
    d.set_item("inserts", s.inserts)?;
    d.set_item("workers", s.workers)?;
    d.set_item("dead_workers", s.dead_workers)?;
    d.set_item("reaped_workers", s.reaped_workers)?;
    d.set_item("max_probe", s.max_probe)?;
    d.set_item("size_bytes", s.size_bytes)?;
    Ok(d)
}

fn header_dict<'py>(py: Python<'py>, h: &HeaderInfo) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("magic", format!("{:#018x}", h.magic))?;
    d.set_item("layout_version", h.layout_version)?;
    d.set_item("slot_size", h.slot_size)?;
    d.set_item("header_size", h.header_size)?;
    d.set_item("worker_size", h.worker_size)?;
    d.set_item("capacity", h.capacity)?;
    d.set_item("max_workers", h.max_workers)?;
    d.set_item("total_size", h.total_size)?;
    d.set_item("boot_id", &h.boot_id)?;
    d.set_item("this_boot", h.this_boot)?;
    d.set_item("created_unix_s", h.created_unix_ns as f64 / NS)?;
    Ok(d)
}

fn workers_list<'py>(py: Python<'py>, ws: &[WorkerInfo]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    ws.iter()
        .map(|w| {
            let d = PyDict::new(py);
            d.set_item("index", w.index)?;
            d.set_item("pid", w.pid)?;
            d.set_item("status", w.status)?;
            d.set_item("registered_s_ago", w.registered_ns_ago as f64 / NS)?;
            d.set_item("slots_held", w.holdings.iter().map(|h| h.1).sum::<u64>())?;
            d.set_item("keys_held", w.holdings.len())?;
            Ok(d)
        })
        .collect()
}

fn keys_list<'py>(py: Python<'py>, ks: &[KeyInfo]) -> PyResult<Vec<Bound<'py, PyDict>>> {
    ks.iter()
        .map(|k| {
            let d = PyDict::new(py);
            d.set_item("kind", k.kind)?;
            d.set_item("key", &k.name)?;
            d.set_item("key_truncated", k.name_truncated)?;
            d.set_item("fingerprint", &k.fingerprint)?;
            d.set_item("count", k.count)?;
            d.set_item("window_s", k.window_ms as f64 / 1000.0)?;
            d.set_item("resets_in_s", k.resets_in_ns as f64 / NS)?;
            d.set_item("expired", k.expired)?;
            d.set_item(
                "holders",
                k.holders.iter().map(|&(pid, n)| (pid, n)).collect::<Vec<_>>(),
            )?;
            d.set_item("slot", k.index)?;
            Ok(d)
        })
        .collect()
}

/// A process's handle on a shared region (created or attached).
#[pyclass(module = "fast_litellm._native", name = "Region", frozen, subclass)]
pub struct PyRegion {
    inner: Region,
    /// Fail-open acquires that could not be recorded, per key: release() consumes these
    /// first. Only touched under the GIL, on the full-table path.
    untracked: Mutex<HashMap<String, u64>>,
}

impl PyRegion {
    /// Runs `f` on the region, failing instead when its file was shrunk under this process
    /// before or during the call (then `f`'s answer came from zeros and is dropped).
    fn guarded<T>(&self, f: impl FnOnce(&Region) -> PyResult<T>) -> PyResult<T> {
        self.inner.intact().map_err(to_py_err)?;
        let answer = f(&self.inner);
        self.inner.intact().map_err(to_py_err)?;
        answer
    }
}

#[pymethods]
impl PyRegion {
    #[new]
    #[pyo3(signature = (path=None, *, capacity=None, max_workers=None, fail_open=false))]
    fn new(
        py: Python<'_>,
        path: Option<PathBuf>,
        capacity: Option<u32>,
        max_workers: Option<u32>,
        fail_open: bool,
    ) -> PyResult<Self> {
        let policy = if fail_open {
            FullPolicy::Open
        } else {
            FullPolicy::Closed
        };
        // Attaching may wait on another process's flock: let other Python threads run.
        let inner = py
            .detach(|| Region::open_with(path.as_deref(), capacity, max_workers, policy))
            .map_err(to_py_err)?;
        Ok(PyRegion {
            inner,
            untracked: Mutex::new(HashMap::new()),
        })
    }

    #[pyo3(signature = (key, limit, window_s=60.0, cost=1, algorithm="fixed"))]
    fn hit(&self, key: &str, limit: u64, window_s: f64, cost: u64, algorithm: &str) -> PyResult<PyDecision> {
        let h = Hit {
            key: key.as_bytes(),
            limit,
            window_ns: window_ns(window_s)?,
            cost,
            algorithm: self::algorithm(algorithm)?,
        };
        self.guarded(|r| Ok(r.hit(&h).into()))
    }

    #[pyo3(signature = (key, limit, window_s=60.0, algorithm="fixed"))]
    fn peek(&self, key: &str, limit: u64, window_s: f64, algorithm: &str) -> PyResult<PyDecision> {
        let h = Hit {
            key: key.as_bytes(),
            limit,
            window_ns: window_ns(window_s)?,
            cost: 0,
            algorithm: self::algorithm(algorithm)?,
        };
        self.guarded(|r| Ok(r.table().peek(&h).into()))
    }

    #[pyo3(signature = (limits, algorithm="fixed"))]
    fn hit_many(&self, py: Python<'_>, limits: &Bound<'_, PyAny>, algorithm: &str) -> PyResult<PyMultiDecision> {
        let limits: Vec<(String, u64, f64, u64)> = limits.extract().map_err(|error| {
            let given = limits.repr().map(|r| r.to_string()).unwrap_or_default();
            let given: String = given.chars().take(120).collect();
            PyTypeError::new_err(format!(
                "hit_many takes a list of (key, limit, window_s, cost) tuples, got {given} ({error})"
            ))
        })?;
        let alg = self::algorithm(algorithm)?;
        let hits = limits
            .iter()
            .map(|(key, limit, window_s, cost)| {
                Ok(Hit {
                    key: key.as_bytes(),
                    limit: *limit,
                    window_ns: window_ns(*window_s)?,
                    cost: *cost,
                    algorithm: alg,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.guarded(|r| multi_to_py(py, r.hit_many(&hits)))
    }

    /// Takes one of `max_slots` slots of `key`; False when all are taken. On a full table the
    /// policy answers: fail-closed refuses, fail-open admits untracked (release() still pairs).
    fn acquire(&self, py: Python<'_>, key: &str, max_slots: u64) -> PyResult<bool> {
        let acquired = self.guarded(|r| r.acquire(key.as_bytes(), max_slots).map_err(to_py_err))?;
        Ok(
            match acquired {
                Acquired::Yes => true,
                Acquired::No => false,
                Acquired::Untracked => {
                    *self
                        .untracked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(key.to_owned())
                        .or_default() += 1;
                    let log = py.import("logging")?.call_method1("getLogger", ("fast_litellm",))?;
                    let message =
                        format!("fast_litellm: region table full; slot of {key:?} admitted untracked (fail-open)");
                    log.call_method1("warning", (message,))?;
                    true
                }
            },
        )
    }

    fn release(&self, key: &str) -> PyResult<()> {
        {
            let mut untracked = self.untracked.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = untracked.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    untracked.remove(key);
                }
                return Ok(());
            }
        }
        self.guarded(|r| {
            r.release(key.as_bytes())
                .map_err(|_| SlotNotHeldError::new_err(format!("this process holds no slot of {key:?}")))
        })
    }

    /// Adds a signed `delta` to a plain counter (never below 0) and returns the new count. A
    /// counter that is absent or expired starts at 0 and lives `ttl_s` from then (0: forever),
    /// as LiteLLM's `increment_cache(key, delta, ttl)` does.
    #[pyo3(signature = (key, delta=1, ttl_s=0.0))]
    fn counter_add(&self, key: &str, delta: i64, ttl_s: f64) -> PyResult<u64> {
        let expiry = expiry(ttl_s)?;
        self.guarded(|r| match r.table().stamped_add(key.as_bytes(), 0, delta, expiry, None) {
            Ok(Added::Done(c)) | Ok(Added::Newer(c)) | Ok(Added::Capped(c)) => Ok(c.count),
            Err(TableFull) => Err(full(key)),
        })
    }

    /// A counter's count; None when it is absent or expired.
    fn counter_get(&self, key: &str) -> PyResult<Option<u64>> {
        self.guarded(|r| Ok(r.table().stamped_get(key.as_bytes()).map(|c| c.count)))
    }

    /// Stores (stamp, value) under `key` for `ttl_s` seconds (0: forever), replacing what was there.
    #[pyo3(signature = (key, stamp, value, ttl_s=0.0))]
    fn value_set(&self, key: &str, stamp: i64, value: u64, ttl_s: f64) -> PyResult<()> {
        let stamp = seconds(stamp, "stamp")?;
        if value > crate::layout::state::COUNT_MAX {
            return Err(PyValueError::new_err(format!("value must be below 2**48, got {value}")));
        }
        let expiry = expiry(ttl_s)?;
        self.guarded(|r| {
            r.table()
                .stamped_set(key.as_bytes(), stamp, value, expiry)
                .map_err(|TableFull| full(key))
        })
    }

    /// (stamp, value) stored under `key`; None when absent or expired.
    fn value_get(&self, key: &str) -> PyResult<Option<(u32, u64)>> {
        self.guarded(|r| Ok(r.table().stamped_get(key.as_bytes()).map(|c| (c.stamp, c.count))))
    }

    /// LiteLLM's fixed window step for one (window key, counter key) pair at the caller's
    /// second `now_s`: opens a window if there is none or `now_s - start >= window_s`, then
    /// adds `delta` to the counter in it. Returns (window start, new count, whether it opened).
    #[pyo3(signature = (window_key, counter_key, now_s, window_s, delta=1))]
    fn window_add(
        &self,
        window_key: &str,
        counter_key: &str,
        now_s: i64,
        window_s: i64,
        delta: i64,
    ) -> PyResult<(u32, u64, bool)> {
        let (now, window) = (seconds(now_s, "now_s")?, seconds(window_s, "window_s")?);
        self.guarded(|r| {
            r.table()
                .window_add(window_key.as_bytes(), counter_key.as_bytes(), now, window.max(1), delta)
                .map_err(|TableFull| full(counter_key))
        })
    }

    /// (window start, count) as LiteLLM's cache would show them: with a live window, the
    /// counter's count in it (0 if it counted an older one); without, what is left of the counter.
    fn window_get(&self, window_key: &str, counter_key: &str) -> PyResult<(Option<u32>, Option<u64>)> {
        self.guarded(|r| Ok(r.table().window_get(window_key.as_bytes(), counter_key.as_bytes())))
    }

    /// Adds a signed `delta` to the counter in the live window (only the one that started at
    /// `expected_start`, when given); the new count, or None with nothing written.
    #[pyo3(signature = (window_key, counter_key, delta, expected_start=None))]
    fn window_adjust(
        &self,
        window_key: &str,
        counter_key: &str,
        delta: i64,
        expected_start: Option<i64>,
    ) -> PyResult<Option<u64>> {
        let expected = expected_start.map(|s| seconds(s, "expected_start")).transpose()?;
        self.guarded(|r| {
            r.table()
                .window_adjust(window_key.as_bytes(), counter_key.as_bytes(), delta, expected)
                .map_err(|TableFull| full(counter_key))
        })
    }

    /// All-or-nothing: each (window key, counter key, limit, increment, window_s) must fit
    /// (count + increment <= limit; a 0 increment: count < limit) at `now_s`, then all are
    /// added. Returns (allowed, index of the first that did not fit, [(window start, count)])
    /// with counts after the increments when allowed, as found otherwise.
    fn window_reserve(&self, items: Vec<(String, String, u64, u64, i64)>, now_s: i64) -> PyResult<ReserveResult> {
        let now = seconds(now_s, "now_s")?;
        let reserves = items
            .iter()
            .map(|(window_key, counter_key, limit, increment, window_s)| {
                Ok(Reserve {
                    window_key: window_key.as_bytes(),
                    counter_key: counter_key.as_bytes(),
                    limit: *limit,
                    increment: *increment,
                    window_s: seconds(*window_s, "window_s")?.max(1),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        self.guarded(|r| {
            let r = r
                .table()
                .window_reserve(&reserves, now)
                .map_err(|TableFull| full(items.first().map_or("", |i| i.1.as_str())))?;
            Ok((r.allowed, r.denied_index, r.counts))
        })
    }

    /// Adds `units` the shared store granted to this host in its window `stamp`, spendable
    /// until region-clock second `end_s` (see `clock_ns`). False when the lease here is of a
    /// newer window (nothing added).
    fn lease_grant(&self, key: &str, stamp: i64, units: u64, end_s: i64) -> PyResult<bool> {
        let (stamp, end) = (seconds(stamp, "stamp")?, seconds(end_s, "end_s")?);
        self.guarded(|r| r.table().lease_grant(key.as_bytes(), stamp, units, end).map_err(|TableFull| full(key)))
    }

    /// Takes `cost` units of the live lease of `key`: (taken, window stamp, units left).
    fn lease_take(&self, key: &str, cost: u64) -> PyResult<(bool, u32, u64)> {
        self.guarded(|r| {
            let t = r.table().lease_take(key.as_bytes(), cost).map_err(|TableFull| full(key))?;
            Ok((t.taken, t.stamp, t.left))
        })
    }

    /// Gives back `cost` units taken from the lease of window `stamp`.
    fn lease_untake(&self, key: &str, stamp: i64, cost: u64) -> PyResult<()> {
        let stamp = seconds(stamp, "stamp")?;
        self.guarded(|r| r.table().lease_untake(key.as_bytes(), stamp, cost).map_err(|TableFull| full(key)))
    }

    /// (window stamp, units left) of the live lease of `key`; (0, 0) without one.
    fn lease_left(&self, key: &str) -> PyResult<(u32, u64)> {
        self.guarded(|r| Ok(r.table().lease_left(key.as_bytes())))
    }

    fn slots_in_use(&self, key: &str) -> PyResult<u64> {
        self.guarded(|r| Ok(r.table().slots_in_use(key.as_bytes())))
    }

    fn reap(&self) -> PyResult<usize> {
        self.guarded(|r| Ok(r.table().reap_dead()))
    }

    /// Registers this process now (a forked child does it on its first call otherwise).
    fn register(&self) -> PyResult<usize> {
        self.guarded(|r| r.worker_index().map_err(to_py_err))
    }

    fn close(&self) {
        self.inner.close()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.guarded(|r| Ok(py.detach(|| r.table().stats())))?;
        stats_dict(py, &s)
    }

    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let h = self.guarded(|r| Ok(r.table().header_info()))?;
        header_dict(py, &h)
    }

    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let ws = self.guarded(|r| Ok(r.table().workers()))?;
        workers_list(py, &ws)
    }

    #[pyo3(signature = (n=20))]
    fn top_keys<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let keys = self.guarded(|r| Ok(py.detach(|| r.table().top_keys(n))))?;
        keys_list(py, &keys)
    }

    /// The live entries of `key` (its full text), one per kind it is used as.
    fn lookup<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let keys = self.guarded(|r| Ok(r.table().lookup(key.as_bytes())))?;
        keys_list(py, &keys)
    }

    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.inner.path().map(PathBuf::from)
    }

    #[getter]
    fn size_bytes(&self) -> usize {
        self.inner.table().mapping().size_bytes()
    }

    #[getter]
    fn capacity(&self) -> u32 {
        self.inner.table().dims().capacity
    }

    #[getter]
    fn max_workers(&self) -> u32 {
        self.inner.table().dims().max_workers
    }

    #[getter]
    fn fail_open(&self) -> bool {
        self.inner.policy() == FullPolicy::Open
    }

    /// "created", "reused" or "reset_after_reboot".
    #[getter]
    fn attach(&self) -> &'static str {
        match self.inner.attach() {
            Attach::Created => "created",
            Attach::Reused => "reused",
            Attach::ResetAfterReboot => "reset_after_reboot",
        }
    }
}

/// A read-only view of an existing region, for inspection: it never writes to the region.
#[pyclass(module = "fast_litellm._native", name = "RegionView", frozen)]
pub struct PyRegionView {
    table: Table,
    path: String,
}

impl PyRegionView {
    /// As PyRegion::guarded, for the read-only view.
    fn guarded<T>(&self, f: impl FnOnce(&Table) -> T) -> PyResult<T> {
        let intact = || crate::region::intact(self.table.mapping(), &self.path).map_err(to_py_err);
        intact()?;
        let answer = f(&self.table);
        intact()?;
        Ok(answer)
    }
}

#[pymethods]
impl PyRegionView {
    #[new]
    fn new(path: PathBuf) -> PyResult<Self> {
        Ok(PyRegionView {
            table: Region::inspect(&path).map_err(to_py_err)?,
            path: path.display().to_string(),
        })
    }

    fn header<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        header_dict(py, &self.guarded(|t| t.header_info())?)
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.guarded(|t| py.detach(|| t.stats()))?;
        stats_dict(py, &s)
    }

    fn workers<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        workers_list(py, &self.guarded(|t| t.workers())?)
    }

    #[pyo3(signature = (n=20))]
    fn top_keys<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let keys = self.guarded(|t| py.detach(|| t.top_keys(n)))?;
        keys_list(py, &keys)
    }

    /// The live entries of `key` (its full text), one per kind it is used as.
    fn lookup<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        keys_list(py, &self.guarded(|t| t.lookup(key.as_bytes()))?)
    }
}

/// The region's clock (CLOCK_BOOTTIME) in nanoseconds: what lease deadlines are measured in.
#[pyfunction]
fn clock_ns() -> u64 {
    crate::sys::now_ns()
}

/// Bytes of a region with these dimensions.
#[pyfunction]
#[pyo3(signature = (capacity=crate::region::DEFAULT_CAPACITY, max_workers=crate::region::DEFAULT_MAX_WORKERS))]
fn region_size(capacity: u32, max_workers: u32) -> PyResult<usize> {
    let dims = Dimensions { capacity, max_workers };
    dims.check().map_err(to_py_err)?;
    Ok(dims.total_size())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(region_size, m)?)?;
    m.add_function(wrap_pyfunction!(clock_ns, m)?)?;
    m.add_class::<PyRegion>()?;
    m.add_class::<PyRegionView>()?;
    m.add_class::<PyDecision>()?;
    m.add_class::<PyMultiDecision>()?;
    m.add("RegionError", py.get_type::<RegionError>())?;
    m.add("RegionFormatError", py.get_type::<RegionFormatError>())?;
    m.add("RegionSpaceError", py.get_type::<RegionSpaceError>())?;
    m.add("RegionPermissionError", py.get_type::<RegionPermissionError>())?;
    m.add("RegionConfigError", py.get_type::<RegionConfigError>())?;
    m.add("RegionFullError", py.get_type::<RegionFullError>())?;
    m.add("SlotNotHeldError", py.get_type::<SlotNotHeldError>())?;
    m.add("LAYOUT_VERSION", crate::layout::LAYOUT_VERSION)?;
    m.add("DEFAULT_CAPACITY", crate::region::DEFAULT_CAPACITY)?;
    m.add("DEFAULT_MAX_WORKERS", crate::region::DEFAULT_MAX_WORKERS)?;
    m.add("SLOT_SIZE", crate::layout::SLOT_SIZE)?;
    m.add("MIN_CAPACITY", crate::layout::MIN_CAPACITY)?;
    m.add("MAX_CAPACITY", crate::layout::MAX_CAPACITY)?;
    m.add("MIN_WORKERS", crate::layout::MIN_WORKERS)?;
    m.add("MAX_WORKERS", crate::layout::MAX_WORKERS)?;
    tokens::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
