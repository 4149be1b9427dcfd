//! All integration tests in one binary: `tests/support` (the API server double, broker
//! helpers) is compiled and linked once instead of once per test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod manifests;
mod support;

mod apiserver_double;
mod apiserver_pods;
mod apiserver_pods_celery;
mod artifacts_manifests;
mod chart_render;
mod cli;
mod closed_loop;
mod closed_loop_bullmq;
mod closed_loop_dramatiq;
mod closed_loop_rq;
mod closed_loop_sidekiq;
mod controller_drain;
mod controller_e2e;
mod controller_features;
mod controller_queues;
mod controller_startup;
mod controller_workers;
mod crd;
mod drain_celery;
mod faults;
mod from_zero;
mod inspect;
mod parser_properties;
mod provider_docs;
mod queue_beanstalk;
mod queue_bullmq;
mod queue_dramatiq;
mod queue_http;
mod queue_rabbitmq;
mod queue_redis;
mod queue_redis_tls;
mod queue_registry;
mod queue_rq;
mod queue_sidekiq;
mod queue_sqs;
mod readable_logs;
mod scaler_properties;
mod simulate_compare;
mod simulate_practo;
mod tutor_plugin;
mod workers_celery;
