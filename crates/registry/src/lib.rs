//! The API's resource definitions: what resources exist, how they are named and scoped, and
//! per kind the behaviour the generic apiserver handlers call into.
//!
//! - [`resource`]: [`ResourceDef`] and the table of built-in resources ([`builtin`]).
//! - [`crd`]: the [`ResourceDef`]s a CustomResourceDefinition serves.
//! - [`kinds`]: the k8s-openapi type of each built-in kind.
//! - [`openapi`]: `/openapi/v3` (index + one document per group-version) and `/openapi/v2`.
//! - [`table`]: server-side `meta.k8s.io/v1` Table output with upstream's printer columns.
//! - [`defaults`]: upstream's defaulting of built-in kinds.
//! - [`validate`]: upstream's validation, typed decoding checks and unknown-field detection.
//! - [`jsonpath`]: the small JSONPath subset CRD printer columns use.

pub mod crd;
pub mod defaults;
pub mod jsonpath;
pub mod kinds;
pub mod openapi;
pub mod resource;
pub mod table;
pub mod validate;

pub use openapi::{OpenApi, OpenApiBuilder, OpenApiDoc};
pub use resource::{
    CustomResource, PrinterColumn, ResourceDef, ScaleSubresource, Scope, Subresource, builtin,
};
pub use table::{IncludeObject, table_for};
