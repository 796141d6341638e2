//! Shared helpers for the kumo integration tests.
