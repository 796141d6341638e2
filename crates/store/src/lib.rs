//! kumo store: an etcd v3–compatible key-value store.
//!
//! Layers, bottom up: [`mvcc`] (revisioned keyspace in redb + in-memory key index),
//! [`raft`] (openraft: write-ahead log with group commit, state machine applying to MVCC),
//! [`lease`] and [`watch`] (lessor and watch hub fed by the state machine), [`server`] (the
//! etcd gRPC services) and [`metrics`]. [`run`] wires them into a serving member.

pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod raft;
pub mod server;
pub mod state;
pub mod watch;

mod member;

pub use config::StoreConfig;
pub use error::StoreError;
pub use member::{restore_snapshot, run};
