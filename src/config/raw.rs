//! The YAML schema, exactly as an operator writes it.
//!
//! Every struct denies unknown keys so a typo is an error, not a silently
//! ignored setting. Nothing here is checked beyond its shape: `validate` turns
//! these into a [`Config`](super::Config) and collects every semantic error.
//!
//! Every key is optional at this level, required ones included: a missing
//! key is reported by `validate` with its path, and the shape pass (`shape`)
//! can drop a key whose value does not parse and carry on, without a
//! "missing field" error that would stop it. The published JSON Schema
//! (`pollgate schema`, see `schema`) is derived from these same types: the
//! doc comments are its descriptions, and `#[schemars(required)]` marks what
//! `validate` demands, so editors ask for it too.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::units::{ByteSize, Duration};
use crate::defaults::MAX_CAP;

/// The empty value serde falls back to is no default an editor should
/// offer: the key is required (`routes`, `allow_origins`) or means nothing
/// empty (`upstreams`).
fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// pollgate's configuration file (pollgate.yaml). Only `routes` is required.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// `routes` defaults to empty for the shape pass; the schema still asks for it.
#[schemars(title = "pollgate configuration", extend("required" = ["routes"]))]
pub struct RawConfig {
    /// Public listener address, like "0.0.0.0:8080" (default). Restart to change.
    pub listen: Option<String>,
    /// The internal listener the app publishes to; it also serves health, metrics and the status page.
    pub webhook: Option<RawWebhook>,
    /// The apps pollgate forwards to, by name.
    #[serde(default)]
    // Empty (every entry commented out) reads as none, as in pollgate.
    #[schemars(extend("type" = ["object", "null"]), transform = no_default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Routes by path prefix (the longest matching one wins): each forwards to an upstream or holds long polls.
    #[serde(default)]
    #[schemars(length(min = 1), transform = no_default)]
    pub routes: Vec<RawRoute>,
    /// Long-poll and event-stream settings for every poll route.
    pub poll: Option<RawPoll>,
    /// Messages each channel keeps for catch-up.
    pub buffer: Option<RawBuffer>,
    /// Where channels live: this process (memory) or Redis, shared by every instance.
    pub broker: Option<RawBroker>,
    pub shutdown: Option<RawShutdown>,
    /// Connection deadlines and caps of the public listener.
    pub server: Option<RawServer>,
    /// Held polls (and event streams) allowed per client, address, channel and instance.
    pub limits: Option<RawLimits>,
    /// Who a poll belongs to, for limits (default: the X-Client-ID header, else the client address).
    pub client_id: Option<RawClientId>,
    /// Addresses or CIDRs (like "10.0.0.0/8") whose X-Forwarded-For is believed.
    pub trusted_proxies: Option<Vec<String>>,
    /// TLS on the public listener (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls: Option<RawTls>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first.
    #[schemars(required)]
    pub cert: Option<String>,
    /// PEM private key: PKCS#8, PKCS#1 or SEC1.
    #[schemars(required)]
    pub key: Option<String>,
    /// More certificates, chosen by the client's SNI host name.
    pub sni: Option<Vec<RawSni>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSni {
    /// Host names this certificate serves, like "api.example.com" or "*.example.org".
    #[schemars(required, length(min = 1))]
    pub hosts: Option<Vec<String>>,
    /// PEM certificate chain, leaf first.
    #[schemars(required)]
    pub cert: Option<String>,
    /// PEM private key.
    #[schemars(required)]
    pub key: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Held polls one client may have (default 6; 429 beyond).
    #[schemars(range(min = 1))]
    pub max_per_client: Option<usize>,
    /// Held polls from one client address, whatever X-Client-ID says (default 1000).
    #[schemars(range(min = 1))]
    pub max_per_address: Option<usize>,
    /// Held polls on one channel (default 10000).
    #[schemars(range(min = 1))]
    pub max_per_channel: Option<usize>,
    /// Held polls in the instance (default 100000).
    #[schemars(range(min = 1))]
    pub max_total: Option<usize>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientId {
    /// `header`: the header when present, else the client address; `addr`: the address only.
    #[schemars(required)]
    pub from: Option<RawClientIdFrom>,
    /// The header to read (default X-Client-ID).
    pub header: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawClientIdFrom {
    Header,
    Addr,
}

/// Ask the app before holding a poll, like nginx's auth_request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorize {
    /// The upstream to ask.
    #[schemars(required)]
    pub upstream: Option<String>,
    /// The path to ask, like /auth/poll: GET {path}?channel={channel} with the client's headers.
    #[schemars(required)]
    pub path: Option<String>,
    /// 504 when the check takes longer (default 2s).
    pub timeout: Option<Duration>,
    /// Remember a 2xx for (client, credentials, channel) this long (default 0s).
    pub cache: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Address of the internal listener (default "127.0.0.1:8081"). Restart to change.
    pub listen: Option<String>,
    /// Largest publish body (default 1MiB; 413 beyond).
    pub max_body: Option<ByteSize>,
    /// Bearer token required on every webhook request but /healthz: at least 16 printable characters.
    pub token: Option<String>,
    /// Name of an environment variable holding the token (instead of `token`).
    pub token_env: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// http://host:port or https://host:port of the app (no path).
    #[schemars(required, regex(pattern = r"^[hH][tT][tT][pP][sS]?://[^/?#]+/?$"))]
    pub url: Option<String>,
    /// TCP connect limit before 502 (default 5s).
    pub connect_timeout: Option<Duration>,
    /// PEM bundle to verify an https:// upstream against (default: the system roots).
    pub ca: Option<String>,
    /// Requests in flight at once (default 1024); more are answered 503 at once.
    #[schemars(range(min = 1, max = MAX_CAP))]
    pub max_in_flight: Option<usize>,
}

/// A route forwards to an `upstream` or holds long polls (`poll`): one of the two.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// A key set to null is absent for pollgate: each branch asks for a value.
#[schemars(extend("oneOf" = [
    {"required": ["upstream"], "properties": {"upstream": {"type": "string"}}},
    {"required": ["poll"], "properties": {"poll": {"type": "object"}}},
]))]
pub struct RawRoute {
    /// Path prefix, like /api/ (a plain string prefix; the longest match wins).
    #[schemars(required, regex(pattern = r"^/"))]
    pub prefix: Option<String>,
    /// HTTP methods this route takes, like [GET, POST] (default: all).
    #[schemars(length(min = 1))]
    pub methods: Option<Vec<String>>,
    /// Match only this Host (port ignored).
    pub host: Option<String>,
    /// Forward to this upstream (a name under `upstreams`).
    pub upstream: Option<String>,
    /// Proxy routes: time to the upstream's response head before 504, and the longest pause between two reads of its body (default 30s).
    pub timeout: Option<Duration>,
    /// Hold long polls (and event streams) here: `{}` or with settings.
    pub poll: Option<RawPollRoute>,
    /// Understand GRIP instructions in the upstream's answers (as Pushpin does).
    pub grip: Option<RawGrip>,
}

/// `grip:` on an upstream route.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGrip {
    /// Key the upstream's Grip-Sig JWT must be signed with (HS256).
    pub sig_key: Option<String>,
    /// Name of an environment variable holding `sig_key`.
    pub sig_key_env: Option<String>,
    /// Issuer the Grip-Sig JWT must name.
    pub sig_iss: Option<String>,
    /// Hold time when the upstream's instruction names none.
    pub default_timeout: Option<Duration>,
    /// Shortest hold an instruction may ask for.
    pub min_timeout: Option<Duration>,
    /// A GRIP stream then ends.
    pub stream_max: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPollRoute {
    /// Answer cross-origin polls from browsers on other origins.
    pub cors: Option<RawCors>,
    /// Who a poll belongs to on this route (overrides the top-level `client_id`).
    pub client_id: Option<RawClientId>,
    /// Ask the app before holding a poll.
    pub authorize: Option<RawAuthorize>,
    /// Answer a GET with Accept: text/event-stream as an event stream (default true).
    pub sse: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("required" = ["allow_origins"]))]
pub struct RawCors {
    /// Exact origins (https://app.example) or "*".
    #[serde(default)]
    #[schemars(length(min = 1), transform = no_default)]
    pub allow_origins: Vec<String>,
    /// Access-Control-Allow-Headers for preflights (default: echo the request's).
    pub allow_headers: Option<Vec<String>>,
    /// Preflight cache time (default 10m).
    pub max_age: Option<Duration>,
    /// Send Access-Control-Allow-Credentials: true (default false).
    pub allow_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// Hold time when the client sends no `timeout` (default 30s).
    pub default_timeout: Option<Duration>,
    /// Cap on any hold (default 60s).
    pub max_timeout: Option<Duration>,
    /// A batch answer (max=) stops before the message that would pass this (default 4MiB).
    pub max_batch_bytes: Option<ByteSize>,
    /// An event stream with nothing sent this long gets a comment line (default 15s; 100ms to 7 days).
    pub sse_heartbeat: Option<Duration>,
    /// An event stream then ends cleanly and the client reconnects (default 10m; 1s to 7 days).
    pub sse_max_duration: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBuffer {
    /// Messages kept per channel for catch-up (default 1000).
    #[schemars(range(min = 1))]
    pub max_size: Option<usize>,
    /// Messages older than this are dropped (default 300s).
    pub max_age: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    /// memory (default): channels live in this process; redis: shared by every instance.
    pub kind: Option<RawBrokerKind>,
    /// Redis URL, redis://[user:pass@]host:port/db or rediss:// (default redis://127.0.0.1:6379/0).
    pub url: Option<String>,
    /// Everything pollgate stores in Redis lives under it (default "pollgate:").
    pub key_prefix: Option<String>,
    /// true for Redis Cluster (`url` names any node).
    pub cluster: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawBrokerKind {
    Memory,
    Redis,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// After SIGTERM, time in-flight proxied requests get to finish (default 10s).
    pub drain_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// A client must send its request head within this; also closes idle keep-alive connections (default 10s).
    pub header_timeout: Option<Duration>,
    /// Longest pause between two reads of a request body (default 30s).
    pub body_timeout: Option<Duration>,
    /// A connection that takes no answer bytes this long is closed (default 30s).
    pub write_timeout: Option<Duration>,
    /// Connections the public listener serves at once (default: the open-file limit less a reserve).
    #[schemars(range(min = 1, max = MAX_CAP))]
    pub max_connections: Option<usize>,
    /// Runtime worker threads (default: the cores available).
    #[schemars(range(min = 1))]
    pub threads: Option<usize>,
}
