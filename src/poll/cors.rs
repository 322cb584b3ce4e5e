//! CORS for poll routes: preflight answers, and the headers that let a
//! browser on another origin read a poll's answer.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::answer::{self as h, Body};
use crate::routes::Cors;

pub(super) fn preflight(req: &HeaderMap, cors: Option<&Cors>) -> Response<Body> {
    let mut resp = Response::new(h::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let headers = resp.headers_mut();
    headers.insert(
        header::ALLOW,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    let Some(cors) = cors else { return resp };
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    let allow_headers = if cors.allow_headers.is_empty() {
        // Echo what the browser asks for: a poll carries no side effects.
        req.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
    } else {
        HeaderValue::from_str(&cors.allow_headers.join(", ")).ok()
    };
    if let Some(v) = allow_headers {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(cors.max_age.as_secs()),
    );
    resp
}

pub(super) fn allow_origin(headers: &mut HeaderMap, cors: &Cors, origin: &str) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(allowed) = cors
        .allowed_origin(origin)
        .and_then(|o| HeaderValue::from_str(o).ok())
    else {
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}
