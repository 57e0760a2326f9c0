//! Token counting with OpenAI's tiktoken encodings, the way LiteLLM counts: text cut into
//! chunks of a fixed number of characters (code points, as Python slices), each encoded on
//! its own with special-token text treated as ordinary text, the counts summed; and past a
//! length limit, counted on evenly spaced samples and extrapolated. Plain Rust, no Python.
//!
//! cl100k_base and o200k_base are counted by bpe-openai (the same counts as tiktoken, 1.3-3x
//! faster, no allocation per count, and threads scale: README, Token counting); p50k_base,
//! which it does not have, by tiktoken-rs.
//!
//! Encoders are loaded on first use, once per process, and never freed. A process forked
//! after its parent loaded one uses the parent's copy (shared pages). Nothing in a loaded
//! encoder can block after a fork: the regex crate's scratch pools only ever `try_lock` and
//! make a fresh cache when that fails (regex-automata util/pool.rs). A load can: bpe-openai
//! builds its encoders in a `LazyLock`, which a child would wait on forever if another thread
//! of the parent was inside it at the fork. So loads take `LoadTurn`, and so does a fork
//! (a pthread_atfork handler, installed by `install_fork_guard`): a fork waits for a load to
//! finish, and a load for a fork.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering::*};
use std::sync::Once;
use tiktoken_rs::CoreBPE;

/// The tiktoken encodings LiteLLM's `openai_tokenizer` path can select and this module serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Cl100kBase,
    O200kBase,
    P50kBase,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Cl100kBase, Encoding::O200kBase, Encoding::P50kBase];

    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
            Encoding::P50kBase => "p50k_base",
        }
    }
}

/// A count that could not be made: an encoder that failed to load, a regex that gave up on
/// a pathological chunk, or an extrapolation too large to round exactly. The caller counts
/// another way (LiteLLM's own function).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// LiteLLM's two counting constants (`TIKTOKEN_ENCODE_CHUNK_SIZE_CHARS` and
/// `TOKEN_COUNTER_MAX_EXACT_CHARS`, both settable by environment in LiteLLM), and its sample
/// count past the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunking {
    pub chunk_chars: usize,
    pub max_exact_chars: usize,
}

impl Chunking {
    /// LiteLLM 1.106's defaults.
    pub const LITELLM: Chunking = Chunking {
        chunk_chars: 1024,
        max_exact_chars: 4_000_000,
    };
    /// `EXTRAPOLATION_SAMPLES` in litellm_core_utils/token_counter.py.
    pub const SAMPLES: usize = 16;
}

/// Held by a thread loading an encoder, and by a thread forking (between the prepare and
/// the parent/child handlers of pthread_atfork). A spin lock, because a fork handler cannot
/// hold a std guard; both holders keep it for at most one load (~0.1 s).
static LOAD_TURN: AtomicBool = AtomicBool::new(false);
static FORK_GUARD: Once = Once::new();

struct LoadTurn;

impl LoadTurn {
    fn take() -> LoadTurn {
        while LOAD_TURN.compare_exchange_weak(false, true, Acquire, Relaxed).is_err() {
            std::thread::yield_now();
        }
        LoadTurn
    }
}

impl Drop for LoadTurn {
    fn drop(&mut self) {
        LOAD_TURN.store(false, Release);
    }
}

extern "C" fn before_fork() {
    std::mem::forget(LoadTurn::take());
}

extern "C" fn after_fork() {
    // In the parent and in the child: the forking thread took the turn in before_fork.
    LOAD_TURN.store(false, Release);
}

/// Makes a fork wait for an encoder load in another thread to finish. Call it before any
/// thread can load (the Python module does at import); `encoder` calls it too.
pub fn install_fork_guard() {
    FORK_GUARD.call_once(|| {
        // SAFETY: the handlers only touch a static atomic and yield; registering them has no
        // other precondition.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork)) };
    });
}

/// A loaded encoder.
#[derive(Clone, Copy)]
enum Encoder {
    Bpe(&'static bpe_openai::Tokenizer),
    Tiktoken(&'static CoreBPE),
}

impl Encoder {
    /// Tokens in one piece of text encoded as ordinary text (special tokens not recognised),
    /// which is `len(encoding.encode(text, disallowed_special=()))` in tiktoken.
    fn count(self, text: &str) -> Result<u64, TokenError> {
        // A regex can panic on a pathological piece (fancy-regex's backtrack limit in
        // tiktoken-rs): that is a count to make another way, never a crash.
        catch_unwind(AssertUnwindSafe(|| match self {
            Encoder::Bpe(tokenizer) => tokenizer.count(text) as u64,
            Encoder::Tiktoken(bpe) => bpe.encode_ordinary(text).len() as u64,
        }))
        .map_err(|_| TokenError("the tokenizer gave up on this text".into()))
    }
}

static BPE_LOADED: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
static P50K: AtomicPtr<CoreBPE> = AtomicPtr::new(ptr::null_mut());

/// The process's encoder, loaded on first use.
fn encoder(encoding: Encoding) -> Result<Encoder, TokenError> {
    let load: fn() -> &'static bpe_openai::Tokenizer = match encoding {
        Encoding::Cl100kBase => bpe_openai::cl100k_base,
        Encoding::O200kBase => bpe_openai::o200k_base,
        Encoding::P50kBase => return p50k_base().map(Encoder::Tiktoken),
    };
    let loaded = &BPE_LOADED[encoding as usize];
    // Acquire pairs with the Release below: once set, the LazyLock is initialised and
    // `load()` returns at once, so no turn is needed.
    if loaded.load(Acquire) {
        return Ok(Encoder::Bpe(load()));
    }
    install_fork_guard();
    let _turn = LoadTurn::take();
    let tokenizer = catch_unwind(load).map_err(|_| TokenError(format!("cannot load {}", encoding.name())))?;
    loaded.store(true, Release);
    Ok(Encoder::Bpe(tokenizer))
}

/// tiktoken-rs's p50k_base, built without a lock: two threads may both build, one publishes
/// and the other drops its copy.
fn p50k_base() -> Result<&'static CoreBPE, TokenError> {
    // SAFETY: a non-null pointer in P50K came from Box::into_raw below and is never freed,
    // so it is valid for 'static. Acquire pairs with the Release of the publishing CAS: the
    // encoder is fully built before it is read.
    if let Some(bpe) = unsafe { P50K.load(Acquire).as_ref() } {
        return Ok(bpe);
    }
    let built = tiktoken_rs::p50k_base().map_err(|e| TokenError(format!("cannot load p50k_base: {e}")))?;
    let fresh = Box::into_raw(Box::new(built));
    match P50K.compare_exchange(ptr::null_mut(), fresh, AcqRel, Acquire) {
        // SAFETY: just published; never freed (see above).
        Ok(_) => Ok(unsafe { &*fresh }),
        Err(published) => {
            // SAFETY: `fresh` was never published, so this thread owns it alone; `published`
            // is valid for 'static (see above).
            drop(unsafe { Box::from_raw(fresh) });
            Ok(unsafe { &*published })
        }
    }
}

/// Loads `encoding` in this process now rather than on the first count.
pub fn preload(encoding: Encoding) -> Result<(), TokenError> {
    encoder(encoding).map(|_| ())
}

/// Byte offsets at which `text` is cut every `chars` code points, `text.len()` last.
fn char_boundaries(text: &str, chars: usize) -> impl Iterator<Item = usize> + '_ {
    let ascii = text.is_ascii();
    let mut next = 0usize;
    let mut indices = text.char_indices().map(|(i, _)| i).step_by(chars.max(1)).skip(1);
    std::iter::from_fn(move || {
        if next >= text.len() {
            return None;
        }
        next = if ascii {
            (next + chars.max(1)).min(text.len())
        } else {
            indices.next().unwrap_or(text.len())
        };
        Some(next)
    })
}

/// LiteLLM's exact count (`count_exactly`): `text` cut every `chunk_chars` code points, each
/// chunk encoded on its own, the counts summed.
pub fn count_exact(encoding: Encoding, text: &str, chunk_chars: usize) -> Result<u64, TokenError> {
    count_chunked(encoder(encoding)?, text, chunk_chars)
}

fn count_chunked(encoder: Encoder, text: &str, chunk_chars: usize) -> Result<u64, TokenError> {
    let mut start = 0;
    let mut total = 0;
    for end in char_boundaries(text, chunk_chars) {
        total += encoder.count(&text[start..end])?;
        start = end;
    }
    Ok(total)
}

fn char_len(text: &str) -> usize {
    if text.is_ascii() {
        text.len()
    } else {
        text.chars().count()
    }
}

/// The text between code points `start` and `start + len`.
fn char_slice(text: &str, start: usize, len: usize) -> &str {
    if text.is_ascii() {
        return &text[start..start + len];
    }
    let mut offsets = text.char_indices().map(|(i, _)| i).chain(std::iter::once(text.len()));
    let begin = offsets.nth(start).unwrap_or(text.len());
    let end = if len == 0 {
        begin
    } else {
        offsets.nth(len - 1).unwrap_or(text.len())
    };
    &text[begin..end]
}

/// Where LiteLLM samples a text of `chars` code points past `max_exact_chars`:
/// (first code point, code points) of each of `Chunking::SAMPLES` evenly spaced samples.
pub fn samples(chars: usize, chunking: Chunking) -> impl Iterator<Item = (usize, usize)> {
    let samples = Chunking::SAMPLES.min(chunking.max_exact_chars);
    let sample_chars = chunking.max_exact_chars / samples;
    let last_start = chars.saturating_sub(sample_chars);
    (0..samples).map(move |index| (last_start * index / (samples - 1).max(1), sample_chars))
}

/// `round(sampled_tokens * chars / sampled_chars)` as Python computes it.
pub fn extrapolate(sampled_tokens: u64, chars: usize, sampled_chars: usize) -> Result<u64, TokenError> {
    let numerator = sampled_tokens as u128 * chars as u128;
    // Python divides the exact integers and rounds once; two f64s below 2^53 are exact, so
    // one IEEE division rounds the same.
    const EXACT: u128 = 1 << 53;
    if numerator >= EXACT || sampled_chars as u128 >= EXACT || sampled_chars == 0 {
        return Err(TokenError("extrapolated count too large to round exactly".into()));
    }
    Ok((numerator as f64 / sampled_chars as f64).round_ties_even() as u64)
}

/// LiteLLM's count of `text`: chunked, and past `max_exact_chars` extrapolated from
/// `Chunking::SAMPLES` evenly spaced samples, rounded half to even as Python's round().
pub fn count(encoding: Encoding, text: &str, chunking: Chunking) -> Result<u64, TokenError> {
    let encoder = encoder(encoding)?;
    let chars = char_len(text);
    if chars <= chunking.max_exact_chars {
        return count_chunked(encoder, text, chunking.chunk_chars);
    }
    let (mut sampled_tokens, mut sampled_chars) = (0, 0);
    for (start, len) in samples(chars, chunking) {
        sampled_tokens += count_chunked(encoder, char_slice(text, start, len), chunking.chunk_chars)?;
        sampled_chars += len;
    }
    extrapolate(sampled_tokens, chars, sampled_chars)
}

/// `count` of each text, on up to `threads` threads; the same results as one at a time.
pub fn count_batch(
    encoding: Encoding,
    texts: &[&str],
    chunking: Chunking,
    threads: usize,
) -> Result<Vec<u64>, TokenError> {
    encoder(encoding)?;
    let total_bytes: usize = texts.iter().map(|t| t.len()).sum();
    // A thread costs tens of microseconds to start: below this much text one thread wins.
    const BYTES_PER_THREAD: usize = 16 * 1024;
    let threads = threads.min(texts.len()).min(total_bytes / BYTES_PER_THREAD).max(1);
    if threads == 1 {
        return texts.iter().map(|t| count(encoding, t, chunking)).collect();
    }
    // Contiguous runs of about equal bytes, so one long text does not leave others idle.
    let share = total_bytes.div_ceil(threads);
    let mut runs: Vec<&[&str]> = Vec::with_capacity(threads);
    let (mut start, mut bytes) = (0, 0);
    for (i, text) in texts.iter().enumerate() {
        bytes += text.len();
        if bytes >= share && runs.len() + 1 < threads {
            runs.push(&texts[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    runs.push(&texts[start..]);
    let counted: Vec<Result<Vec<u64>, TokenError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|run| scope.spawn(move || run.iter().map(|t| count(encoding, t, chunking)).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TokenError("a counting thread panicked".into())))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(texts.len());
    for run in counted {
        all.extend(run?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Chunking = Chunking {
        chunk_chars: 4,
        max_exact_chars: 64,
    };

    #[test]
    fn names_round_trip() {
        for e in Encoding::ALL {
            assert_eq!(Encoding::from_name(e.name()), Some(e));
        }
        assert_eq!(Encoding::from_name("r50k_base"), None);
    }

    #[test]
    fn boundaries_cut_code_points_not_bytes() {
        let cuts: Vec<usize> = char_boundaries("héllo wörld", 4).collect();
        // h é l l | o _ w ö | r l d
        assert_eq!(cuts, vec![5, 10, 13]);
        assert_eq!(char_boundaries("", 4).count(), 0);
        assert_eq!(char_boundaries("abcd", 4).collect::<Vec<_>>(), vec![4]);
        assert_eq!(char_slice("héllo", 1, 3), "éll");
        assert_eq!(char_slice("héllo", 5, 0), "");
    }

    #[test]
    fn known_counts() {
        let c = Chunking::LITELLM;
        assert_eq!(count(Encoding::Cl100kBase, "Hello, world!", c), Ok(4));
        assert_eq!(count(Encoding::Cl100kBase, "", c), Ok(0));
        // Special-token text is ordinary text: "<|endoftext|>" is several tokens, not one.
        assert!(count(Encoding::Cl100kBase, "<|endoftext|>", c).unwrap() > 1);
        assert!(count(Encoding::O200kBase, "<|endoftext|>", c).unwrap() > 1);
        assert!(count(Encoding::P50kBase, "<|endoftext|>", c).unwrap() > 1);
    }

    #[test]
    fn chunks_are_counted_separately() {
        let text = "abcdefghijklmnop";
        let whole = count(
            Encoding::Cl100kBase,
            text,
            Chunking {
                chunk_chars: 1000,
                max_exact_chars: 1000,
            },
        )
        .unwrap();
        let chunked = count(Encoding::Cl100kBase, text, SMALL).unwrap();
        let by_hand: u64 = ["abcd", "efgh", "ijkl", "mnop"]
            .iter()
            .map(|t| count(Encoding::Cl100kBase, t, Chunking::LITELLM).unwrap())
            .sum();
        assert_eq!(chunked, by_hand);
        assert!(chunked > whole);
    }

    #[test]
    fn long_text_is_extrapolated_from_samples() {
        let text = "ab ".repeat(100); // 300 chars > 64
        let got = count(Encoding::Cl100kBase, &text, SMALL).unwrap();
        // 16 samples of 4 chars, starts spread from 0 to 296.
        let mut sampled = 0;
        for i in 0..16 {
            let start = 296 * i / 15;
            sampled += count(Encoding::Cl100kBase, &text[start..start + 4], SMALL).unwrap();
        }
        let expected = (sampled as f64 * 300.0 / 64.0).round_ties_even() as u64;
        assert_eq!(got, expected);
    }

    #[test]
    fn batch_equals_one_at_a_time() {
        let owned: Vec<String> = (0..300)
            .map(|i| format!("text {i} {}", "word é ".repeat(i * 7 % 500)))
            .collect();
        let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
        let one: Vec<u64> = texts
            .iter()
            .map(|t| count(Encoding::O200kBase, t, SMALL).unwrap())
            .collect();
        for threads in [1, 2, 4, 64] {
            assert_eq!(count_batch(Encoding::O200kBase, &texts, SMALL, threads).unwrap(), one);
        }
        assert_eq!(
            count_batch(Encoding::O200kBase, &[], SMALL, 4).unwrap(),
            Vec::<u64>::new()
        );
    }
}
