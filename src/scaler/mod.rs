//! The scaling decision: pure and deterministic.
