//! Integration tests: the real gateway on port 0, real rmcp clients, real
//! HTTP backends, a real SQLite file. One module per area.

#![allow(clippy::unwrap_used)]

mod cli;
mod credentials;
mod demo;
mod fuzz_findings;
mod http_transport;
mod identity;
mod lifecycle;
mod manifests;
mod reload;
mod stdio_transport;
mod tasks;
