//! weft's end-to-end tests, one binary (as wasmtime's `tests/all`): each
//! module drives the real `weft` binary; `common` holds the shared helpers,
//! compiled once.

mod common;

mod cli;
mod cluster;
mod compat;
mod corruption;
mod crash;
mod cron;
mod examples;
mod http_edges;
mod javascript;
mod limits;
mod observe;
mod postgres;
mod python;
mod sandbox;
mod semantics;
mod server;
mod shared;
mod ui;
mod wasi_http;
