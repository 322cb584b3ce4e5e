//! The label values and label sets of pollgate's metrics.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};

/// How a poll ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PollOutcome {
    message,
    timeout,
    gap,
    /// Refused by a limit (429).
    rejected_limit,
    /// Refused for bad input (400) or authorization.
    rejected_invalid,
    /// The client went away while held.
    client_gone,
    /// The broker failed mid-hold.
    error,
}

/// A fault of the client's, counted apart from the app's errors (an
/// operator alerting on upstream errors is never paged for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ClientError {
    /// Closed the connection in the middle of a request body.
    body_aborted,
    /// Stopped sending a request body (`server.body_timeout`).
    body_timeout,
    /// Took no answer bytes for `server.write_timeout`: its connection
    /// was closed.
    write_timeout,
    /// An HTTP/2 stream of a connection on which nothing was taken for
    /// `server.write_timeout`: given up on, the connection kept.
    stream_write_timeout,
    /// Sent no complete request within `server.header_timeout` of connecting.
    no_request,
    /// Cancelled HTTP/2 streams faster than `H2_MAX_RESETS_PER_SEC`.
    rapid_reset,
    /// Sent an HTTP/1 request whose framing could be read two ways
    /// (`Transfer-Encoding` with `Content-Length`): refused with 400.
    bad_framing,
    /// Sent an HTTP/2 frame that is an error by its header alone: answered
    /// with GOAWAY at once.
    bad_frame,
}

/// A GRIP hold's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum GripMode {
    response,
    stream,
}

/// How a GRIP hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum GripOutcome {
    /// A response hold answered with an item.
    message,
    /// A response hold's timeout passed: the app's own answer went out.
    timeout,
    /// The app was asked again (`prev-id` behind the channel, `hint`).
    retry,
    /// A stream ended by an item with `action: close`.
    closed,
    /// A stream reached `grip.stream_max`.
    max_duration,
    /// A stream fell behind the buffer (items it should have had were
    /// trimmed): ended so that the client comes back and is answered afresh.
    gap,
    /// pollgate shut down.
    shutdown,
    /// A stream's client took nothing for `server.write_timeout`.
    slow_client,
    /// The client went away (or stopped reading a stream).
    client_gone,
    /// Refused by a limit (429).
    rejected_limit,
}

/// How an event stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SseOutcome {
    /// Reached `poll.sse_max_duration` (the client reconnects).
    max_duration,
    /// pollgate shut down.
    shutdown,
    /// The client went away.
    client_gone,
    /// The client stopped reading: its connection took nothing for
    /// `server.write_timeout` and was closed.
    slow_client,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct SseLabel {
    pub(super) outcome: SseOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ResultKind {
    ok,
    failed,
    accepted,
    rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RouteLabel {
    pub(super) route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct OutcomeLabel {
    pub(super) outcome: PollOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: ResultKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ProxyLabel {
    pub(super) route: String,
    pub(super) class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct UpstreamErrorLabel {
    pub(super) upstream: String,
    pub(super) kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct UpstreamRetryLabel {
    pub(super) upstream: String,
    pub(super) reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HashLabel {
    pub(super) hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ClientErrorLabel {
    pub(super) kind: ClientError,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ListenerLabel {
    pub(super) listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct UpstreamLabel {
    pub(super) upstream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct GripLabel {
    pub(super) mode: GripMode,
    pub(super) outcome: GripOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct LimitLabel {
    pub(super) limit: &'static str,
}
