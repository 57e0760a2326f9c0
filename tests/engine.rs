//! cargo tests of the counter table and the region handle, on real shared mappings.

use fast_litellm::{Acquired, Algorithm, Dimensions, FullPolicy, Hit, Region};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MS: u64 = 1_000_000;

fn anon(capacity: u32, policy: FullPolicy) -> Region {
    Region::open(
        None,
        Some(Dimensions {
            capacity,
            max_workers: 8,
        }),
        policy,
    )
    .unwrap()
}

fn hit(key: &str, limit: u64, window_ns: u64, cost: u64) -> Hit<'_> {
    Hit {
        key: key.as_bytes(),
        limit,
        window_ns,
        cost,
        algorithm: Algorithm::FixedWindow,
    }
}

#[test]
fn fixed_window_admits_exactly_the_limit_then_restarts() {
    let r = anon(1024, FullPolicy::Closed);
    let admitted = (0..25).filter(|_| r.hit(&hit("k", 10, 150 * MS, 1)).allowed).count();
    assert_eq!(admitted, 10);
    let d = r.hit(&hit("k", 10, 150 * MS, 1));
    assert!(!d.allowed);
    assert_eq!((d.current, d.remaining), (10, 0));
    assert!(d.reset_in_ns > 0 && d.reset_in_ns <= 150 * MS);
    assert_eq!(d.retry_after_ns, d.reset_in_ns);
    std::thread::sleep(Duration::from_millis(160));
    // The window starts again at the first hit after the previous one ended.
    let d = r.hit(&hit("k", 10, 150 * MS, 1));
    assert!(d.allowed);
    assert_eq!((d.current, d.remaining), (1, 9));
    assert!(d.reset_in_ns > 140 * MS);
}

#[test]
fn costs_count_as_units_and_a_cost_above_the_limit_never_fits() {
    let r = anon(1024, FullPolicy::Closed);
    assert!(r.hit(&hit("tpm", 1000, 60_000 * MS, 600)).allowed);
    let d = r.hit(&hit("tpm", 1000, 60_000 * MS, 500));
    assert!(!d.allowed);
    assert_eq!(d.current, 600, "a refused hit is not counted");
    assert!(r.hit(&hit("tpm", 1000, 60_000 * MS, 400)).allowed);
    let d = r.hit(&hit("big", 10, 60_000 * MS, 11));
    assert!(!d.allowed && d.retry_after_ns == 60_000 * MS);
    assert!(!r.hit(&hit("zero", 0, 60_000 * MS, 1)).allowed);
}

#[test]
fn gcra_allows_a_burst_then_spaces_requests() {
    let r = anon(1024, FullPolicy::Closed);
    let g = |cost| Hit {
        key: b"g",
        limit: 10,
        window_ns: 1000 * MS,
        cost,
        algorithm: Algorithm::Gcra,
    };
    let admitted = (0..20).filter(|_| r.hit(&g(1)).allowed).count();
    assert_eq!(admitted, 10, "a full window's burst");
    let d = r.hit(&g(1));
    assert!(!d.allowed);
    assert!(
        d.retry_after_ns > 0 && d.retry_after_ns <= 100 * MS,
        "one interval: {}",
        d.retry_after_ns
    );
    std::thread::sleep(Duration::from_millis(110));
    assert!(r.hit(&g(1)).allowed, "one unit comes back per window/limit");
    assert!(!r.hit(&g(1)).allowed);
}

#[test]
fn hit_many_is_all_or_nothing() {
    let r = anon(1024, FullPolicy::Closed);
    let w = 60_000 * MS;
    let limits = || vec![hit("key", 5, w, 1), hit("user", 3, w, 1), hit("team", 100, w, 1)];
    let admitted = (0..10).filter(|_| r.hit_many(&limits()).allowed).count();
    assert_eq!(admitted, 3);
    let m = r.hit_many(&limits());
    assert!(!m.allowed);
    assert_eq!(m.denied_index, Some(1));
    // The key and team limits were not charged for the refused calls.
    assert_eq!(m.decisions.iter().map(|d| d.current).collect::<Vec<_>>(), vec![3, 3, 3]);
    assert!(m.decisions.iter().all(|d| !d.allowed));
}

#[test]
fn many_threads_on_one_key_and_on_many_keys_admit_exactly_the_limit() {
    let r = Arc::new(anon(1 << 14, FullPolicy::Closed));
    let admitted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (r, admitted) = (r.clone(), admitted.clone());
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    if r.hit(&hit("hot", 10_000, 600_000 * MS, 1)).allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    // And 1000 keys inserted concurrently by every thread.
                    let key = format!("key-{}", i % 1000);
                    if r.hit(&hit(&key, 7, 600_000 * MS, 1)).allowed {
                        admitted.fetch_add(1_000_000, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = admitted.load(Ordering::Relaxed);
    assert_eq!(total % 1_000_000, 10_000, "hot key");
    assert_eq!(total / 1_000_000, 7 * 1000, "1000 keys x 7: no key was inserted twice");
    let s = r.table().stats();
    assert_eq!(s.used, 1001);
    assert_eq!(s.inserts, 1001);
}

#[test]
fn a_full_table_is_counted_and_follows_the_policy() {
    for policy in [FullPolicy::Closed, FullPolicy::Open] {
        let r = anon(64, policy);
        let w = 600_000 * MS;
        let mut full = 0;
        for i in 0..100 {
            let d = r.hit(&hit(&format!("k{i}"), 5, w, 1));
            if d.table_full {
                full += 1;
                assert_eq!(d.allowed, policy == FullPolicy::Open);
            } else {
                assert!(d.allowed);
            }
        }
        assert_eq!(full, 36);
        let s = r.table().stats();
        assert_eq!((s.used, s.full_events), (64, 36));
        // Existing keys still count exactly.
        assert_eq!((0..10).filter(|_| r.hit(&hit("k0", 5, w, 1)).allowed).count(), 4);
    }
}

#[test]
fn expired_entries_are_reclaimed_in_place() {
    let r = anon(64, FullPolicy::Closed);
    for i in 0..64 {
        assert!(r.hit(&hit(&format!("old{i}"), 5, 50 * MS, 1)).allowed);
    }
    assert!(r.hit(&hit("new-before-expiry", 5, 50 * MS, 1)).table_full);
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(r.table().stats().expired, 64);
    for i in 0..64 {
        let d = r.hit(&hit(&format!("new{i}"), 5, 600_000 * MS, 1));
        assert!(d.allowed && !d.table_full, "new{i}");
    }
    let s = r.table().stats();
    assert_eq!((s.used, s.reclaimed), (64, 64));
    // The old keys' slots went to the new keys: an old key finds no room now.
    assert!(r.hit(&hit("old3", 5, 50 * MS, 1)).table_full);
}

#[test]
fn slots_are_counted_held_and_given_back() {
    let r = anon(1024, FullPolicy::Closed);
    assert_eq!(r.acquire(b"deploy-a", 2).unwrap(), Acquired::Yes);
    assert_eq!(r.acquire(b"deploy-a", 2).unwrap(), Acquired::Yes);
    assert_eq!(r.acquire(b"deploy-a", 2).unwrap(), Acquired::No);
    assert_eq!(r.table().slots_in_use(b"deploy-a"), 2);
    r.release(b"deploy-a").unwrap();
    assert_eq!(r.acquire(b"deploy-a", 2).unwrap(), Acquired::Yes);
    r.release(b"deploy-a").unwrap();
    r.release(b"deploy-a").unwrap();
    assert!(
        r.release(b"deploy-a").is_err(),
        "a release without an acquire is an error"
    );
    assert!(r.release(b"never").is_err());
    assert_eq!(r.table().slots_in_use(b"deploy-a"), 0);
    // A slot key and a window key with the same text are separate entries.
    assert!(r.hit(&hit("deploy-a", 1, 60_000 * MS, 1)).allowed);
}

#[test]
fn slot_counts_stay_exact_under_threads() {
    let r = Arc::new(anon(1024, FullPolicy::Closed));
    let peak = Arc::new(AtomicU64::new(0));
    let inside = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (r, peak, inside) = (r.clone(), peak.clone(), inside.clone());
            std::thread::spawn(move || {
                for _ in 0..5_000 {
                    if r.acquire(b"pool", 3).unwrap() == Acquired::Yes {
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        r.release(b"pool").unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!(r.table().slots_in_use(b"pool"), 0);
}

#[test]
fn closing_gives_back_held_slots() {
    let path = std::env::temp_dir().join(format!("fl-engine-close-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let dims = Some(Dimensions {
        capacity: 1024,
        max_workers: 8,
    });
    let a = Region::open(Some(&path), dims, FullPolicy::Closed).unwrap();
    let b = Region::open(Some(&path), dims, FullPolicy::Closed).unwrap();
    assert_eq!(a.acquire(b"s", 2).unwrap(), Acquired::Yes);
    assert_eq!(b.acquire(b"s", 2).unwrap(), Acquired::Yes);
    assert_eq!(b.acquire(b"s", 2).unwrap(), Acquired::No);
    drop(a);
    assert_eq!(b.table().slots_in_use(b"s"), 1);
    assert_eq!(b.acquire(b"s", 2).unwrap(), Acquired::Yes);
    assert_eq!(b.table().stats().workers, 1);
    drop(b);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_sizing_rule_holds_three_quarters_of_capacity_without_a_full_event() {
    // The README sizes regions for 0.75 * capacity live counters.
    let capacity = 1 << 16;
    let r = anon(capacity, FullPolicy::Closed);
    let live = capacity as usize * 3 / 4;
    for i in 0..live {
        let key = format!("{{api_key:{i:08x}}}:requests");
        assert!(r.hit(&hit(&key, 10, 600_000 * MS, 1)).allowed, "{key}");
    }
    let s = r.table().stats();
    assert_eq!((s.used, s.full_events), (live as u64, 0));
}

#[test]
fn only_the_dimensions_asked_for_are_checked_on_attach() {
    let path = std::env::temp_dir().join(format!("fl-engine-dims-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let created = Region::open_with(Some(&path), Some(1024), Some(8), FullPolicy::Closed).unwrap();
    // Workers asked for, capacity not: the existing capacity is used, not the default's.
    let attached = Region::open_with(Some(&path), None, Some(8), FullPolicy::Closed).unwrap();
    assert_eq!(attached.table().dims().capacity, 1024);
    let wrong = Region::open_with(Some(&path), None, Some(16), FullPolicy::Closed)
        .err()
        .unwrap();
    assert!(
        wrong.to_string().contains("but 16 workers (it has 8) was asked for"),
        "{wrong}"
    );
    assert!(!wrong.to_string().contains("capacity 262144"), "{wrong}");
    drop((created, attached));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn peek_answers_as_hit_would_without_counting() {
    let r = anon(1024, FullPolicy::Closed);
    let t = r.table();
    for algorithm in [Algorithm::FixedWindow, Algorithm::Gcra] {
        let key = format!("peek-{algorithm:?}");
        let h = |limit| Hit {
            algorithm,
            ..hit(&key, limit, 60_000 * MS, 1)
        };
        assert!(t.peek(&h(2)).allowed, "an unused key is admitted");
        assert!(!t.peek(&h(0)).allowed, "a limit of 0 admits nothing");
        assert!(t.hit(&h(2)).unwrap().allowed && t.hit(&h(2)).unwrap().allowed);
        let read = t.peek(&h(2));
        let refused = t.hit(&h(2)).unwrap();
        assert!(!refused.allowed && !read.allowed, "{read:?} / {refused:?}");
        assert_eq!((read.current, read.remaining), (2, 0));
        assert!(read.retry_after_ns > 0);
    }
}

#[test]
fn a_refused_hit_many_leaves_no_entries_that_fill_the_table() {
    let r = anon(1024, FullPolicy::Closed);
    let t = r.table();
    let keys: Vec<String> = (0..2000).map(|i| format!("new-{i}")).collect();
    let hits: Vec<Hit> = keys.iter().map(|k| hit(k, 10, 600_000 * MS, 1)).collect();
    let m = t.hit_many(&hits, FullPolicy::Closed);
    assert!(!m.allowed);
    let fresh = t.hit(&hit("unrelated", 10, 600_000 * MS, 1)).unwrap();
    assert!(fresh.allowed && !fresh.table_full, "{fresh:?}");
    // 500 new keys refused by the last limit (already at 0 of 0): nothing of theirs stays counted.
    let mut refused: Vec<Hit> = keys[..500].iter().map(|k| hit(k, 10, 600_000 * MS, 1)).collect();
    refused.push(hit("unrelated", 0, 600_000 * MS, 1));
    assert!(!t.hit_many(&refused, FullPolicy::Closed).allowed);
    assert!(keys[..500]
        .iter()
        .all(|k| t.peek(&hit(k, 10, 600_000 * MS, 1)).current == 0));
    assert!(t.stats().used <= 2, "{:?}", t.stats());
}

fn file_region(path: &std::path::Path) -> Region {
    Region::open_with(Some(path), Some(1024), Some(8), FullPolicy::Closed).unwrap()
}

#[test]
fn a_region_in_use_is_never_re_created_when_its_header_is_erased_or_its_file_emptied() {
    use std::os::unix::fs::FileExt;
    let dir = std::env::temp_dir().join(format!("fl-engine-inuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("region");
    let _ = std::fs::remove_file(&path);
    let first = file_region(&path);
    for _ in 0..5 {
        assert!(first.hit(&hit("k", 5, 60_000 * MS, 1)).allowed);
    }
    // Header overwritten with zeros from outside: another attach must refuse, not reset.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0u8; 4096], 0).unwrap();
    let err = Region::open_with(Some(&path), None, None, FullPolicy::Closed).err().expect("attach must fail");
    assert_eq!(err.kind, fast_litellm::ErrorKind::Format);
    assert!(err.message.contains("in use by running processes"), "{}", err.message);
    assert!(!first.hit(&hit("k", 5, 60_000 * MS, 1)).allowed, "the count of 5 survived");
    // With its last user gone, an erased file is a creator that died: it is re-created.
    drop(first);
    let again = file_region(&path);
    assert_eq!(again.attach(), fast_litellm::region::Attach::Created);
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_region_file_shrunk_under_a_process_is_an_error_there_not_a_sigbus() {
    let dir = std::env::temp_dir().join(format!("fl-engine-shrunk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("region");
    let _ = std::fs::remove_file(&path);
    let r = file_region(&path);
    assert!(r.hit(&hit("k", 5, 60_000 * MS, 1)).allowed);
    assert!(r.intact().is_ok());
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(4096).unwrap();
    // The hit touches slots past the new end: SIGBUS is caught, the answer is discarded.
    let _ = r.hit(&hit("k", 5, 60_000 * MS, 1));
    let err = r.intact().err().expect("the region must be reported lost");
    assert!(err.message.contains("truncated or emptied"), "{}", err.message);
    // Attaching anew sees the short file for what it is.
    let err = Region::open_with(Some(&path), None, None, FullPolicy::Closed).err().unwrap();
    assert!(err.message.contains("truncated or extended"), "{}", err.message);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}
