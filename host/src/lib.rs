//! weft: a durable workflow engine for WebAssembly components.
//!
//! A workflow is a component exporting `run` and importing the durable
//! calls of `wit/workflow.wit`. The [`runner::Runtime`] runs instances,
//! journals every durable result in redb ([`journal`]) and replays the guest
//! from the journal after a crash or a long wait ([`replay`]).

pub mod api;
pub mod bindings;
pub mod cli;
pub mod config;
pub mod control;
pub mod defaults;
pub mod durable;
pub mod endpoint;
pub mod engine;
pub mod journal;
pub mod logs;
pub mod metrics;
pub mod otel;
pub mod replay;
pub mod runner;
pub mod scheduler;
pub mod summary;
