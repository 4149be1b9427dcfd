//! Shared helpers for integration tests. Each test binary uses a subset.
#![allow(dead_code)]

pub mod apiserver;
pub mod broker_procs;
pub mod brokers;
pub mod brokers_amqp;
pub mod bullmq;
pub mod celery_pods;
pub mod celery_tasks;
pub mod closed_loop;
pub mod cloudwatch;
pub mod controller;
pub mod drain;
pub mod dramatiq;
pub mod e2e;
pub mod framework_loop;
pub mod garbage;
pub mod providers;
pub mod queues;
pub mod rq;
pub mod sidekiq;
