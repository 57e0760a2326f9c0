//! fast_litellm's engine: a shared-memory counter table that holds rate limits and
//! concurrency slots across every process of a host, and LiteLLM-exact token counting.
//! Plain Rust; the PyO3 layer
//! (`bindings`, behind the `python` feature) only converts.

pub mod engine;
pub mod fault;
pub mod layout;
pub mod lease;
pub mod region;
pub mod snapshot;
pub mod stamped;
pub mod sys;
pub mod table;
pub mod tokens;
pub mod workers;

#[cfg(feature = "python")]
mod bindings;

pub use engine::{Acquired, Region};
pub use region::{Dimensions, ErrorKind, RegionError};
pub use table::{Algorithm, Decision, FullPolicy, Hit, MultiDecision, Table};
