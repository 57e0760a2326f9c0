//! Creating, attaching, validating and mapping the shared region.
//!
//! A named region is a file (normally on /dev/shm) created mode 0600, opened with O_NOFOLLOW,
//! and initialised or validated while holding an exclusive flock on it, so processes that
//! start at the same moment all end up on one region. The lock is held only during attach,
//! never across fork or during counter operations. An anonymous region is a memfd mapped
//! MAP_SHARED, so the processes forked after it share it.

use crate::fault;
use crate::layout::*;
use crate::sys;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Default number of counter slots: 2^18 slots of 64 bytes, 16 MiB, about 190,000 live
/// counters at the 0.75 load this table is sized for.
pub const DEFAULT_CAPACITY: u32 = 1 << 18;
pub const DEFAULT_MAX_WORKERS: u32 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Not a region, a region of another layout, or a damaged one.
    Format,
    /// No room in the filesystem that holds the region.
    NoSpace,
    /// Owned by another user, a symlink, or not readable/writable.
    Permission,
    /// The requested dimensions are out of range or differ from the existing region.
    Config,
    /// Any other failure of the OS.
    Io,
    /// This CPU or platform cannot do what the table needs (lock-free 128-bit atomics).
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct RegionError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RegionError {
    fn new(kind: ErrorKind, message: String) -> Self {
        RegionError { kind, message }
    }
    fn os(kind: ErrorKind, what: String) -> Self {
        let err = std::io::Error::last_os_error();
        RegionError::new(kind, format!("{what}: {err}"))
    }
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RegionError {}

/// The dimensions a region is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    pub capacity: u32,
    pub max_workers: u32,
}

impl Dimensions {
    pub fn total_size(&self) -> usize {
        region_size(self.capacity as usize, self.max_workers as usize)
    }

    pub fn check(&self) -> Result<(), RegionError> {
        if !self.capacity.is_power_of_two() || self.capacity < MIN_CAPACITY || self.capacity > MAX_CAPACITY {
            return Err(RegionError::new(
                ErrorKind::Config,
                format!(
                    "capacity {} is not a power of two between {MIN_CAPACITY} and {MAX_CAPACITY}",
                    self.capacity
                ),
            ));
        }
        if self.max_workers < MIN_WORKERS || self.max_workers > MAX_WORKERS {
            return Err(RegionError::new(
                ErrorKind::Config,
                format!(
                    "max_workers {} is not between {MIN_WORKERS} and {MAX_WORKERS}",
                    self.max_workers
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Dimensions {
    fn default() -> Self {
        Dimensions {
            capacity: DEFAULT_CAPACITY,
            max_workers: DEFAULT_MAX_WORKERS,
        }
    }
}

/// What attaching asked for: `dims` (defaults filled in) for a new region; an existing
/// region's capacity and worker count are checked only where the caller set them.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    pub dims: Dimensions,
    pub check_capacity: bool,
    pub check_workers: bool,
}

/// How an attach went, for the log line a process writes at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    Created,
    Reused,
    /// The region was written during another boot: its clock values meant nothing, so the
    /// table and worker list were cleared.
    ResetAfterReboot,
}

/// Reads the fixed header fields out of the first HEADER_SIZE bytes of a file and checks
/// every one of them against the file before anything is mapped.
pub fn validate_header(bytes: &[u8], file_size: u64, path: &str) -> Result<Dimensions, RegionError> {
    let bad = |what: String| {
        RegionError::new(
            ErrorKind::Format,
            format!("{path} is not a usable fast_litellm region: {what}. Remove it (no process may be using it) or point FAST_LITELLM_SHM elsewhere."),
        )
    };
    if bytes.len() < HEADER_SIZE || file_size < HEADER_SIZE as u64 {
        return Err(bad(format!(
            "truncated: {file_size} bytes, smaller than the {HEADER_SIZE}-byte header"
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let magic = u64_at(0);
    if magic != MAGIC {
        return Err(bad(format!(
            "magic is {magic:#018x}, expected {MAGIC:#018x} (a foreign or corrupt file)"
        )));
    }
    let version = u32_at(8);
    if version != LAYOUT_VERSION {
        return Err(bad(format!(
            "layout version {version}, this build uses {LAYOUT_VERSION} (a region from another fast_litellm version)"
        )));
    }
    let fixed = [
        ("slot size", u32_at(12) as usize, SLOT_SIZE),
        ("header size", u32_at(16) as usize, HEADER_SIZE),
        ("worker entry size", u32_at(20) as usize, WORKER_SIZE),
    ];
    for (name, found, expected) in fixed {
        if found != expected {
            return Err(bad(format!("{name} is {found}, expected {expected}")));
        }
    }
    let dims = Dimensions {
        capacity: u32_at(24),
        max_workers: u32_at(28),
    };
    dims.check().map_err(|e| bad(e.message))?;
    let total = u64_at(32);
    if total != dims.total_size() as u64 {
        return Err(bad(format!(
            "header says {total} bytes but capacity {} and {} workers make {}",
            dims.capacity,
            dims.max_workers,
            dims.total_size()
        )));
    }
    if file_size != total {
        return Err(bad(format!(
            "truncated or extended: the file has {file_size} bytes, the header says {total}"
        )));
    }
    Ok(dims)
}

/// A MAP_SHARED mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    writable: bool,
    /// Turns a SIGBUS inside the mapping (its file shrunk while in use) into `lost()`.
    guard: fault::Guard,
}

// SAFETY: the mapping is plain memory; every field that is written concurrently is an atomic
// (see layout.rs), so sharing the pointer between threads is as safe as sharing the atomics.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(fd: libc::c_int, len: usize, writable: bool, what: &str) -> Result<Mapping, RegionError> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr null) of a file we hold open and
        // whose size was checked to be `len`; nothing else in this process aliases it.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(RegionError::os(ErrorKind::Io, format!("cannot map {what}")));
        }
        Ok(Mapping {
            ptr: ptr as *mut u8,
            len,
            writable,
            guard: fault::Guard::new(ptr as *mut u8, len),
        })
    }

    /// Whether the file under the mapping was shrunk while this process used it (a SIGBUS
    /// was caught): everything read from the mapping since is zeros, not the region.
    pub fn lost(&self) -> bool {
        self.guard.lost()
    }

    pub fn size_bytes(&self) -> usize {
        self.len
    }

    /// The header, slots and workers as typed references.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least HEADER_SIZE bytes (validated before mapping), page
        // aligned, and Header is repr(C) with the layout checked in layout.rs.
        unsafe { &*(self.ptr as *const Header) }
    }

    pub fn worker(&self, i: usize) -> &Worker {
        debug_assert!(worker_offset(i + 1) <= self.len);
        // SAFETY: callers pass i < max_workers, whose entries lie inside the validated size;
        // worker offsets are multiples of 4096 from a page-aligned base.
        unsafe { &*(self.ptr.add(worker_offset(i)) as *const Worker) }
    }

    pub fn slot(&self, max_workers: usize, i: usize) -> &Slot {
        debug_assert!(slot_offset(max_workers, i + 1) <= self.len);
        // SAFETY: callers pass i < capacity; the slot lies inside the validated size and is
        // 64-byte aligned because header and worker sizes are multiples of 64.
        unsafe { &*(self.ptr.add(slot_offset(max_workers, i)) as *const Slot) }
    }

    /// Zeroes everything after the fixed header fields: counters, workers and slots.
    fn clear_after_header(&self) {
        debug_assert!(self.writable);
        let start = std::mem::offset_of!(Header, max_probe);
        // SAFETY: called only by the process holding the exclusive flock during attach, before
        // any counter is used in this boot; the range is inside the mapping.
        unsafe { std::ptr::write_bytes(self.ptr.add(start), 0, self.len - start) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // Stop guarding the range before it is unmapped, so no later mapping there is taken
        // for this one.
        drop(std::mem::replace(&mut self.guard, fault::Guard::none()));
        // SAFETY: ptr/len came from a successful mmap and nothing uses them after drop.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// Unlocks and closes a file descriptor when it goes out of scope. The explicit unlock
/// matters: a mapping keeps the open file description alive, and with it any flock.
struct Fd(libc::c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: self.0 is an fd this struct owns; unlocking an unlocked fd is a no-op.
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
            libc::close(self.0);
        }
    }
}

fn check_cpu() -> Result<(), RegionError> {
    if !portable_atomic::AtomicU128::is_lock_free() {
        return Err(RegionError::new(
            ErrorKind::Unsupported,
            "this CPU has no lock-free 128-bit compare-and-swap (cmpxchg16b); the shared table needs it".into(),
        ));
    }
    Ok(())
}

fn c_path(path: &Path) -> Result<CString, RegionError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RegionError::new(ErrorKind::Config, format!("{} contains a NUL byte", path.display())))
}

fn fstat(fd: libc::c_int, what: &str) -> Result<libc::stat, RegionError> {
    // SAFETY: an all-zero stat is a valid value to be overwritten by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open and st is writable.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(RegionError::os(ErrorKind::Io, format!("cannot stat {what}")));
    }
    Ok(st)
}

fn flock(fd: libc::c_int, op: libc::c_int, what: &str) -> Result<(), RegionError> {
    loop {
        // SAFETY: fd is open; flock only takes an advisory lock on it.
        if unsafe { libc::flock(fd, op) } == 0 {
            return Ok(());
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(RegionError::os(ErrorKind::Io, format!("cannot lock {what}")));
        }
    }
}

fn read_header(fd: libc::c_int, what: &str) -> Result<Vec<u8>, RegionError> {
    let mut buf = vec![0u8; HEADER_SIZE];
    let mut done = 0;
    while done < HEADER_SIZE {
        // SAFETY: buf has HEADER_SIZE bytes and done < HEADER_SIZE.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().add(done) as *mut libc::c_void,
                HEADER_SIZE - done,
                done as libc::off_t,
            )
        };
        if n < 0 {
            return Err(RegionError::os(ErrorKind::Io, format!("cannot read {what}")));
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    buf.truncate(done);
    Ok(buf)
}

/// The byte range whose OFD read lock every process attached read-write holds for as long as
/// it maps the region (section 6 of shm_layout.md). It lives on the mapping's open file
/// description, so forked children share it and it goes away with the last of them. It is
/// separate from the flock that serialises attaches (Linux keeps OFD and flock locks apart).
fn in_use_lock(l_type: libc::c_int) -> libc::flock {
    // SAFETY: an all-zero flock is a valid value; the fields that matter are set below.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = l_type as libc::c_short;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l.l_start = 0;
    l.l_len = 1;
    l
}

/// Whether a process other than through this descriptor maps the region read-write.
fn in_use(fd: libc::c_int, what: &str) -> Result<bool, RegionError> {
    let mut l = in_use_lock(libc::F_WRLCK);
    // SAFETY: fd is open and l is a valid flock; F_OFD_GETLK only reports.
    if unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut l) } != 0 {
        return Err(RegionError::os(ErrorKind::Io, format!("cannot query the locks of {what}")));
    }
    Ok(l.l_type != libc::F_UNLCK as libc::c_short)
}

/// Takes this attach's share of the in-use lock; the mapping keeps it after the fd is closed.
fn hold_in_use(fd: libc::c_int, what: &str) -> Result<(), RegionError> {
    let l = in_use_lock(libc::F_RDLCK);
    // SAFETY: fd is open and l is a valid flock; a read lock never waits on another read lock,
    // and no process takes the write lock (in_use only asks).
    if unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &l) } != 0 {
        return Err(RegionError::os(ErrorKind::Io, format!("cannot lock {what}")));
    }
    Ok(())
}

/// Reserves the region's bytes in the filesystem, so a too-small /dev/shm fails here and not
/// with SIGBUS on a later write.
fn reserve(fd: libc::c_int, len: usize, what: &str) -> Result<(), RegionError> {
    // SAFETY: fd is open for writing; posix_fallocate returns an errno value, never -1.
    let rc = unsafe { libc::posix_fallocate(fd, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    // Leave no half-sized file behind for the next attacher to reject.
    // SAFETY: fd is open for writing.
    unsafe { libc::ftruncate(fd, 0) };
    let mib = len as f64 / (1024.0 * 1024.0);
    if rc == libc::ENOSPC || rc == libc::EFBIG {
        return Err(RegionError::new(
            ErrorKind::NoSpace,
            format!(
                "cannot reserve {mib:.1} MiB for the fast_litellm region {what}: no space left on its filesystem. \
                 /dev/shm is too small: in Docker start the container with --shm-size (at least {:.0}m, see the README's \
                 sizing table), in Kubernetes raise the sizeLimit of the memory emptyDir at /dev/shm, or lower \
                 FAST_LITELLM_SHM_CAPACITY.",
                mib.ceil() + 8.0
            ),
        ));
    }
    Err(RegionError::new(
        ErrorKind::Io,
        format!(
            "cannot reserve {mib:.1} MiB for {what}: {}",
            std::io::Error::from_raw_os_error(rc)
        ),
    ))
}

fn write_new_header(map: &Mapping, dims: Dimensions) {
    debug_assert!(map.writable);
    let h = map.ptr as *mut Header;
    // SAFETY: the caller created the file and holds the exclusive flock (or owns the memfd), so
    // no other process reads the header yet; the mapping is writable and HEADER_SIZE long.
    // Writes go through raw pointers because the fields are plain integers.
    unsafe {
        (*h).layout_version = LAYOUT_VERSION;
        (*h).slot_size = SLOT_SIZE as u32;
        (*h).header_size = HEADER_SIZE as u32;
        (*h).worker_size = WORKER_SIZE as u32;
        (*h).capacity = dims.capacity;
        (*h).max_workers = dims.max_workers;
        (*h).total_size = dims.total_size() as u64;
        (*h).boot_id = sys::boot_id();
        (*h).created_unix_ns = sys::unix_ns();
        // Magic last: an attach that finds magic 0 knows the creator died mid-way.
        std::ptr::write_volatile(&mut (*h).magic, MAGIC);
    }
}

/// Creates or attaches the region file at `path` for reading and writing.
pub fn open_path(path: &Path, opts: OpenOptions) -> Result<(Mapping, Attach), RegionError> {
    check_cpu()?;
    opts.dims.check()?;
    let what = path.display().to_string();
    let cpath = c_path(path)?;
    // SAFETY: cpath is a valid NUL-terminated string. O_NOFOLLOW refuses a symlink at the last
    // component; O_CLOEXEC keeps the fd out of exec'd children.
    let fd = unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let kind = match err.raw_os_error() {
            Some(libc::ELOOP) => {
                return Err(RegionError::new(
                    ErrorKind::Permission,
                    format!("{what} is a symbolic link; fast_litellm does not follow links for its region"),
                ))
            }
            Some(libc::EISDIR) => {
                return Err(RegionError::new(
                    ErrorKind::Format,
                    format!("{what} is a directory, not a regular file; FAST_LITELLM_SHM names the region file itself"),
                ))
            }
            Some(libc::EACCES) | Some(libc::EPERM) => ErrorKind::Permission,
            Some(libc::ENOSPC) => ErrorKind::NoSpace,
            _ => ErrorKind::Io,
        };
        return Err(RegionError::new(
            kind,
            format!("cannot open the fast_litellm region {what}: {err}"),
        ));
    }
    let fd = Fd(fd);
    flock(fd.0, libc::LOCK_EX, &what)?;
    let st = fstat(fd.0, &what)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RegionError::new(
            ErrorKind::Format,
            format!("{what} is not a regular file; FAST_LITELLM_SHM names the region file itself"),
        ));
    }
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if st.st_uid != me {
        return Err(RegionError::new(
            ErrorKind::Permission,
            format!(
                "{what} is owned by uid {}, this process runs as uid {me}; a region is only shared by one user's processes",
                st.st_uid
            ),
        ));
    }

    let header = read_header(fd.0, &what)?;
    let fresh = st.st_size == 0 || header.iter().all(|&b| b == 0);
    if fresh {
        // A new file, or one whose creator died before writing the magic: (re)initialise.
        // Never under running processes: then the file was emptied or its header erased from
        // outside, and re-creating it would silently reset every count they rely on.
        if in_use(fd.0, &what)? {
            return Err(RegionError::new(
                ErrorKind::Format,
                format!(
                    "{what} is in use by running processes, but its header is erased or the file was emptied \
                     (something outside fast_litellm wrote to it). It is not re-created under them: that would reset \
                     their counts. Stop the processes that use it (`fuser {what}` lists them), then remove it, \
                     or point FAST_LITELLM_SHM elsewhere."
                ),
            ));
        }
        // The old creator may have asked for a larger size: start from an empty file.
        let dims = opts.dims;
        // SAFETY: fd is open for writing and we hold the exclusive lock.
        if st.st_size != 0 && unsafe { libc::ftruncate(fd.0, 0) } != 0 {
            return Err(RegionError::os(ErrorKind::Io, format!("cannot reset {what}")));
        }
        reserve(fd.0, dims.total_size(), &what)?;
        let map = Mapping::map(fd.0, dims.total_size(), true, &what)?;
        map.clear_after_header();
        write_new_header(&map, dims);
        hold_in_use(fd.0, &what)?;
        return Ok((map, Attach::Created));
    }
    let dims = validate_header(&header, st.st_size as u64, &what)?;
    let asked: Vec<String> = [
        (opts.check_capacity && dims.capacity != opts.dims.capacity)
            .then(|| format!("capacity {} (it has {})", opts.dims.capacity, dims.capacity)),
        (opts.check_workers && dims.max_workers != opts.dims.max_workers)
            .then(|| format!("{} workers (it has {})", opts.dims.max_workers, dims.max_workers)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !asked.is_empty() {
        return Err(RegionError::new(
            ErrorKind::Config,
            format!(
                "{what} exists with capacity {} and {} workers, but {} was asked for; \
                 remove the file while no process uses it, or ask for the existing size",
                dims.capacity,
                dims.max_workers,
                asked.join(" and ")
            ),
        ));
    }
    let map = Mapping::map(fd.0, dims.total_size(), true, &what)?;
    hold_in_use(fd.0, &what)?;
    if map.header().boot_id != sys::boot_id() {
        map.clear_after_header();
        // SAFETY: we hold the exclusive flock; no process of this boot has attached yet
        // (every attach of this boot would have rewritten the boot id).
        unsafe { (*(map.ptr as *mut Header)).boot_id = sys::boot_id() };
        return Ok((map, Attach::ResetAfterReboot));
    }
    Ok((map, Attach::Reused))
}

/// Creates an anonymous region (a memfd) shared with every process forked after this call.
pub fn open_anonymous(dims: Dimensions) -> Result<Mapping, RegionError> {
    check_cpu()?;
    dims.check()?;
    let name = CString::new("fast_litellm").unwrap();
    // SAFETY: name is a valid C string; MFD_CLOEXEC keeps the fd out of exec'd children (the
    // mapping itself is what fork shares).
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(RegionError::os(
            ErrorKind::Io,
            "cannot create an anonymous region (memfd_create)".into(),
        ));
    }
    let fd = Fd(fd);
    reserve(fd.0, dims.total_size(), "(anonymous)")?;
    let map = Mapping::map(fd.0, dims.total_size(), true, "the anonymous region")?;
    write_new_header(&map, dims);
    Ok(map)
}

/// Maps an existing region read-only, for the inspector: never creates, never writes.
pub fn open_read_only(path: &Path) -> Result<(Mapping, Dimensions), RegionError> {
    let what = path.display().to_string();
    let cpath = c_path(path)?;
    // SAFETY: cpath is a valid C string; read-only open, links not followed.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let kind = match err.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::ELOOP) => ErrorKind::Permission,
            _ => ErrorKind::Io,
        };
        return Err(RegionError::new(kind, format!("cannot open {what}: {err}")));
    }
    let fd = Fd(fd);
    // A shared lock waits out a creator that is still initialising the file.
    flock(fd.0, libc::LOCK_SH, &what)?;
    let st = fstat(fd.0, &what)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(RegionError::new(
            ErrorKind::Format,
            format!("{what} is not a regular file"),
        ));
    }
    let header = read_header(fd.0, &what)?;
    let dims = validate_header(&header, st.st_size as u64, &what)?;
    let map = Mapping::map(fd.0, dims.total_size(), false, &what)?;
    Ok((map, dims))
}

/// The error for a mapping whose file was shrunk while in use (a caught SIGBUS).
pub fn intact(map: &Mapping, what: &str) -> Result<(), RegionError> {
    if !map.lost() {
        return Ok(());
    }
    Err(RegionError::new(
        ErrorKind::Format,
        format!(
            "the fast_litellm region {what} was truncated or emptied while this process used it \
             (something outside fast_litellm wrote to the file); its counts are gone, so this \
             process answers no more calls from it. Restart the processes that use it."
        ),
    ))
}

/// Where a path-less region comes from: FAST_LITELLM_SHM's value.
pub fn display_path(path: Option<&PathBuf>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "(anonymous)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_header(dims: Dimensions) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[20..24].copy_from_slice(&(WORKER_SIZE as u32).to_le_bytes());
        b[24..28].copy_from_slice(&dims.capacity.to_le_bytes());
        b[28..32].copy_from_slice(&dims.max_workers.to_le_bytes());
        b[32..40].copy_from_slice(&(dims.total_size() as u64).to_le_bytes());
        b
    }

    #[test]
    fn a_good_header_validates() {
        let d = Dimensions {
            capacity: 1024,
            max_workers: 8,
        };
        assert_eq!(validate_header(&good_header(d), d.total_size() as u64, "x").unwrap(), d);
    }

    #[test]
    fn every_header_field_is_checked() {
        let d = Dimensions {
            capacity: 1024,
            max_workers: 8,
        };
        let size = d.total_size() as u64;
        let cases: Vec<(usize, u32, &str)> = vec![
            (8, 99, "layout version 99"),
            (12, 128, "slot size is 128"),
            (16, 8192, "header size is 8192"),
            (20, 1, "worker entry size is 1"),
            (24, 1000, "not a power of two"),
            (28, 1, "max_workers 1"),
        ];
        for (offset, value, expect) in cases {
            let mut h = good_header(d);
            h[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            let err = validate_header(&h, size, "f").unwrap_err();
            assert_eq!(err.kind, ErrorKind::Format);
            assert!(err.message.contains(expect), "{expect:?} not in {}", err.message);
        }
        let mut h = good_header(d);
        h[0] = b'X';
        assert!(validate_header(&h, size, "f").unwrap_err().message.contains("magic"));
        let mut h = good_header(d);
        h[32..40].copy_from_slice(&(size + 64).to_le_bytes());
        assert!(validate_header(&h, size, "f")
            .unwrap_err()
            .message
            .contains("header says"));
        let err = validate_header(&good_header(d), size - 64, "f").unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let err = validate_header(&good_header(d)[..100], 100, "f").unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
    }

    #[test]
    fn dimensions_are_bounded() {
        assert!(Dimensions {
            capacity: 3,
            max_workers: 8
        }
        .check()
        .is_err());
        assert!(Dimensions {
            capacity: 1 << 30,
            max_workers: 8
        }
        .check()
        .is_err());
        assert!(Dimensions {
            capacity: 1024,
            max_workers: 100_000
        }
        .check()
        .is_err());
        assert!(Dimensions::default().check().is_ok());
        // The default fits Docker's default 64 MiB /dev/shm with room to spare.
        assert!(Dimensions::default().total_size() < 20 * 1024 * 1024);
    }

    #[test]
    fn random_header_damage_is_refused_never_a_panic() {
        let d = Dimensions {
            capacity: 1024,
            max_workers: 8,
        };
        let good = good_header(d);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut h = good.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % 40) as usize;
                h[at] = next() as u8;
            }
            let size = if next() % 4 == 0 {
                next() % (1 << 24)
            } else {
                d.total_size() as u64
            };
            match validate_header(&h, size, "f") {
                Ok(found) => assert_eq!((found.total_size() as u64, found), (size, d)),
                Err(e) => assert_eq!(e.kind, ErrorKind::Format),
            }
        }
    }
}
