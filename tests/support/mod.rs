#![allow(dead_code)]
pub mod brokers;
