//! Kubernetes API machinery that needs no server: everything here is a pure function over
//! `serde_json::Value` objects, so the apiserver, controllers and tests share one behaviour.
//!
//! - [`status`]: `metav1.Status` errors (`ApiError`) with upstream reasons, codes and causes.
//! - [`selector`]: label and field selectors (parse + match), upstream grammar.
//! - [`patch`]: RFC 6902 JSON patch and RFC 7386 merge patch with Kubernetes' error shapes.
//! - [`patchmeta`]: per-kind list semantics (merge keys, list types) of the built-in types.
//! - [`smp`]: strategic merge patch (`application/strategic-merge-patch+json`).
//! - [`managed`]: server-side apply: `managedFields` (fieldsV1), ownership and conflicts.
//! - [`validation`]: names, labels, annotations (DNS-1123, qualified names).

pub mod managed;
pub mod patch;
pub mod patchmeta;
pub mod selector;
pub mod smp;
pub mod status;
pub mod validation;

pub use status::{ApiError, Cause};
