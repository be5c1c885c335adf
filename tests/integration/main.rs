//! Integration tests: the real gateway on port 0, real rmcp clients, real
//! HTTP backends, a real SQLite file. One module per area.

#![allow(clippy::unwrap_used)]

mod admin_keys;
mod approval_ui;
mod approvals;
mod architecture;
mod audit;
mod check;
mod cli;
mod config;
mod crash;
mod credentials;
mod demo;
mod edge;
mod fuzz_findings;
mod http_transport;
mod identity;
mod inputs;
mod instances;
mod lifecycle;
mod manifests;
mod observability;
mod packaging;
mod policy;
mod readme;
mod reload;
mod revocation;
mod secrets;
mod shutdown;
mod stdio_transport;
mod task_binding;
mod tasks;
mod trace_logs;
mod traces;
mod upstream;
