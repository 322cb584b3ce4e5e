//! pollgate: a reverse-proxy sidecar that adds HTTP long polling to an
//! existing backend.
//!
//! # Layout
//! - [`config`]: the YAML file -> a validated, immutable [`config::Config`];
//!   hot reload swaps a new one in whole.
//! - [`routes`]: the route table (longest prefix wins), pure.
//! - [`server`]: the accept loop both listeners share, and every
//!   connection's deadlines and caps.
//! - [`app`]: wires everything and routes each request: proxy or poll on the
//!   public listener, webhook on the internal one.
//! - [`proxy`]: forwarding to upstream apps (the only code that talks to them).
//! - [`poll`]: holding long polls on the broker.
//! - [`broker`]: channels, history by cursor, and wakeups.
//! - [`webhook`]: publish, health and debug endpoints on the internal listener.
//! - [`grip`]: GRIP, Pushpin's protocol: apps that answer with hold
//!   instructions, and the EPCP items that release them.
//! - [`tls`]: certificates, SNI, the TLS acceptor.
//! - [`client`]: the client commands (`pollgate publish`, `tail`, `probe`).
//! - [`answer`]: what every handler answers with (bodies, JSON, errors by
//!   fault, the per-connection send queue).
//! - [`metrics`], [`shutdown`], [`logging`], [`memory`] (the allocator, and giving
//!   freed memory back), [`threads`] (serving threads), [`defaults`] (every default
//!   timeout and limit).

// Denied, not forbidden: `memory` makes one call into jemalloc
// (`mallctl`), allowed there alone with the reason beside it.
#![deny(unsafe_code)]
#![deny(rust_2018_idioms, clippy::unwrap_used, clippy::expect_used)]

pub mod answer;
pub mod app;
pub mod broker;
pub mod client;
pub mod config;
pub mod defaults;
pub mod grip;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod poll;
pub mod proxy;
pub mod routes;
pub mod server;
mod sharded;
pub mod shutdown;
pub mod threads;
pub mod tls;
pub mod webhook;

pub use app::{start, Options, Running};
pub use server::{BindError, Listeners};
