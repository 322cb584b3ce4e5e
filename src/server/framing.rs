//! The answer to a request refused for its framing (`inbound` decides):
//! both `Transfer-Encoding` and `Content-Length`, as nginx (since 1.21.1)
//! and Envoy refuse it. RFC 9112 §6.1 lets a server read such a request by
//! its `Transfer-Encoding`, but a proxy in front may have read it by its
//! length: the two would not agree on where the next request starts
//! (request smuggling).

use http::header::CONNECTION;
use http::{HeaderValue, Response, StatusCode};

use super::inbound::Verdict;
use crate::answer::{self, Body};

/// The refusal: the connection closes after it, so nothing the client
/// sent after the head (its body, a request behind it) is read.
pub(super) fn refusal(verdict: Verdict) -> Response<Body> {
    let why = match verdict {
        Verdict::Unjudged => {
            "the body of the previous request on this connection could not be followed"
        }
        Verdict::Ambiguous | Verdict::Serve => {
            "a request may not carry both Transfer-Encoding and Content-Length"
        }
    };
    let mut resp = answer::json(StatusCode::BAD_REQUEST, answer::error_body(why));
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
