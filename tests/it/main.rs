//! pollgate's integration tests, one binary (a binary per file rebuilt the
//! harness fourteen times): real upstreams, real pollgate listeners on
//! 127.0.0.1:0, real Redis, real TLS, real browsers. `support` is the
//! harness; each module is the spec of one part of pollgate.
//!
//! Tests that assert on the process's memory live in `tests/memory.rs`, a
//! binary of their own, so that no other test's allocations move them.

mod support;

mod answers;
mod app_servers;
mod browser;
mod caps;
mod check_cli;
mod cli;
mod deadlines;
mod deploy;
mod grip;
mod http1;
mod js_client;
mod limits;
mod ops;
mod poll;
mod proxy;
mod redis_broker;
mod reload;
mod schema;
mod sse;
mod tls;
mod webhook;
