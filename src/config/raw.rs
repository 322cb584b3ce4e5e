//! The YAML schema, exactly as an operator writes it.
//!
//! Every struct denies unknown keys so a typo is an error, not a silently
//! ignored setting. Nothing here is checked beyond its shape: `validate` turns
//! these into a [`Config`](super::Config) and collects every semantic error.
//!
//! Every key is optional at this level, required ones included: a missing
//! key is reported by `validate` with its path, and the shape pass (`shape`)
//! can drop a key whose value does not parse and carry on, without a
//! "missing field" error that would stop it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::units::{ByteSize, Duration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub webhook: Option<RawWebhook>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub poll: Option<RawPoll>,
    pub buffer: Option<RawBuffer>,
    pub broker: Option<RawBroker>,
    pub shutdown: Option<RawShutdown>,
    pub server: Option<RawServer>,
    pub limits: Option<RawLimits>,
    pub client_id: Option<RawClientId>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub sni: Option<Vec<RawSni>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSni {
    pub hosts: Option<Vec<String>>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_per_client: Option<usize>,
    pub max_per_address: Option<usize>,
    pub max_per_channel: Option<usize>,
    pub max_total: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientId {
    pub from: Option<RawClientIdFrom>,
    pub header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawClientIdFrom {
    Header,
    Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorize {
    pub upstream: Option<String>,
    pub path: Option<String>,
    pub timeout: Option<Duration>,
    pub cache: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub listen: Option<String>,
    pub max_body: Option<ByteSize>,
    pub token: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub ca: Option<String>,
    pub max_in_flight: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    pub host: Option<String>,
    pub upstream: Option<String>,
    pub timeout: Option<Duration>,
    pub poll: Option<RawPollRoute>,
    pub grip: Option<RawGrip>,
}

/// `grip:` on an upstream route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrip {
    pub sig_key: Option<String>,
    pub sig_key_env: Option<String>,
    pub sig_iss: Option<String>,
    pub default_timeout: Option<Duration>,
    pub min_timeout: Option<Duration>,
    pub stream_max: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPollRoute {
    pub cors: Option<RawCors>,
    pub client_id: Option<RawClientId>,
    pub authorize: Option<RawAuthorize>,
    pub sse: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    pub allow_headers: Option<Vec<String>>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    pub default_timeout: Option<Duration>,
    pub max_timeout: Option<Duration>,
    pub max_batch_bytes: Option<ByteSize>,
    pub sse_heartbeat: Option<Duration>,
    pub sse_max_duration: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    pub max_size: Option<usize>,
    pub max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub kind: Option<RawBrokerKind>,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub cluster: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawBrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub header_timeout: Option<Duration>,
    pub body_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub threads: Option<usize>,
}
