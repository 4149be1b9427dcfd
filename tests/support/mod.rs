#![allow(dead_code)]
//! Shared helpers for integration tests.

pub mod broker_procs;
pub mod brokers_amqp;
