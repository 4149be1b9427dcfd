//! Shared helpers for the integration test binaries.
//!
//! Each test binary uses only a subset of these helpers, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod apiserver;
