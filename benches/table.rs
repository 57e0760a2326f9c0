//! Criterion benchmarks of the engine's public API on an anonymous region.
//!
//! Every limit here is far above what a run can reach (count is capped at 2^48 - 1, so the
//! limit is 2^47), so every hit is admitted and the numbers are the cost of the admitting path.

use criterion::{criterion_group, criterion_main, Criterion};
use fast_litellm::{Algorithm, Dimensions, FullPolicy, Hit, Region};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const LIMIT: u64 = 1 << 47;
const WINDOW_NS: u64 = 600 * 1_000_000_000;

fn region() -> Region {
    Region::open(
        None,
        Some(Dimensions {
            capacity: 1 << 16,
            max_workers: 16,
        }),
        FullPolicy::Closed,
    )
    .expect("anonymous region")
}

fn limit(key: &[u8], algorithm: Algorithm) -> Hit<'_> {
    Hit {
        key,
        limit: LIMIT,
        window_ns: WINDOW_NS,
        cost: 1,
        algorithm,
    }
}

fn hit_fixed_window_one_key(c: &mut Criterion) {
    let r = region();
    let h = limit(b"{api_key:bench}:requests", Algorithm::FixedWindow);
    c.bench_function("hit/fixed_window/one_key", |b| {
        b.iter(|| {
            let d = r.hit(black_box(&h));
            debug_assert!(d.allowed);
            black_box(d)
        })
    });
}

fn hit_fixed_window_10k_keys(c: &mut Criterion) {
    let r = region();
    let keys: Vec<String> = (0..10_000).map(|i| format!("{{api_key:{i:08x}}}:requests")).collect();
    // Insert them all once, so the timed loop measures hits on existing keys.
    for k in &keys {
        assert!(r.hit(&limit(k.as_bytes(), Algorithm::FixedWindow)).allowed);
    }
    let mut next = 0usize;
    c.bench_function("hit/fixed_window/10k_keys", |b| {
        b.iter(|| {
            let k = &keys[next];
            next += 1;
            if next == keys.len() {
                next = 0;
            }
            black_box(r.hit(&limit(black_box(k.as_bytes()), Algorithm::FixedWindow)))
        })
    });
}

fn hit_gcra_one_key(c: &mut Criterion) {
    let r = region();
    let h = limit(b"{api_key:bench}:tokens", Algorithm::Gcra);
    c.bench_function("hit/gcra/one_key", |b| {
        b.iter(|| {
            let d = r.hit(black_box(&h));
            debug_assert!(d.allowed);
            black_box(d)
        })
    });
}

fn hit_many_4_limits(c: &mut Criterion) {
    let r = region();
    let hits = [
        limit(b"{api_key:bench}:requests", Algorithm::FixedWindow),
        limit(b"{user:bench}:requests", Algorithm::FixedWindow),
        limit(b"{team:bench}:requests", Algorithm::FixedWindow),
        limit(b"{model:gpt-bench}:tokens", Algorithm::Gcra),
    ];
    c.bench_function("hit_many/4_limits", |b| {
        b.iter(|| {
            let m = r.hit_many(black_box(&hits));
            debug_assert!(m.allowed);
            black_box(m)
        })
    });
}

fn acquire_release_one_key(c: &mut Criterion) {
    let r = region();
    let key: &[u8] = b"{deployment:bench}:parallel";
    c.bench_function("acquire_release/one_key", |b| {
        b.iter(|| {
            let a = r.acquire(black_box(key), 1_000).expect("acquire");
            r.release(black_box(key)).expect("release");
            black_box(a)
        })
    });
}

fn hit_fixed_window_contended(c: &mut Criterion) {
    let r = region();
    let h = limit(b"{api_key:hot}:requests", Algorithm::FixedWindow);
    c.bench_function("hit/fixed_window/one_key_2_threads_contended", |b| {
        b.iter_custom(|iters| {
            // Two threads share the iterations; the time is from the earlier start to the later
            // end, both taken after a barrier so thread start-up is not measured.
            let shares = [iters / 2, iters - iters / 2];
            let barrier = Barrier::new(2);
            let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
                let handles: Vec<_> = shares
                    .iter()
                    .map(|&n| {
                        let (r, h, barrier) = (&r, &h, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..n {
                                black_box(r.hit(black_box(h)));
                            }
                            (start, Instant::now())
                        })
                    })
                    .collect();
                handles.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let start = spans.iter().map(|s| s.0).min().unwrap();
            let end = spans.iter().map(|s| s.1).max().unwrap();
            end - start
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    targets =
        hit_fixed_window_one_key,
        hit_fixed_window_10k_keys,
        hit_gcra_one_key,
        hit_many_4_limits,
        acquire_release_one_key,
        hit_fixed_window_contended
}
criterion_main!(benches);
