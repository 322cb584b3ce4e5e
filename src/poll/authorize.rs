//! Channel authorization (nginx's `auth_request`): before a poll is held,
//! the app is asked `GET {path}?channel={channel}` with the client's own
//! headers, so a legacy app's session cookies stay the only credential.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Response, StatusCode};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::answer::{self as h, Body};
use crate::broker::ChannelName;
use crate::defaults::AUTHORIZE_CACHE_MAX;
use crate::proxy::{self, Caller, ProxyError};
use crate::routes::Authorize;

/// Why a poll was not authorized.
#[derive(Debug)]
pub enum AuthError {
    /// The app said 401 or 403: its answer goes back to the client as is.
    Denied(Response<Body>),
    /// The app answered something else.
    Unexpected(StatusCode),
    /// The app could not be asked.
    Upstream(ProxyError),
}

/// Remembers recent 2xx answers per (route, client, credentials, channel).
#[derive(Default)]
pub struct Authorizer {
    cache: Mutex<HashMap<u64, Instant>>,
    hasher: RandomState,
}

impl Authorizer {
    /// Asks the app (or the cache) whether this poll may be held.
    ///
    /// # Errors
    /// See `AuthError`.
    pub async fn check(
        &self,
        auth: &Authorize,
        caller: Caller<'_>,
        headers: &HeaderMap,
        channel: &ChannelName,
        client: &str,
    ) -> Result<(), AuthError> {
        let key = self.key(auth, headers, channel, client);
        let now = Instant::now();
        if self
            .cache
            .lock()
            .get(&key)
            .is_some_and(|expiry| *expiry > now)
        {
            return Ok(());
        }
        let target = format!(
            "{}?channel={}",
            auth.path,
            form_urlencoded::byte_serialize(channel.as_str().as_bytes()).collect::<String>()
        );
        let resp = proxy::subrequest(caller, &auth.upstream, &target, headers, auth.timeout)
            .await
            .map_err(AuthError::Upstream)?;
        let status = resp.status();
        if status.is_success() {
            if !auth.cache.is_zero() {
                self.remember(key, now + auth.cache, now);
            }
            return Ok(());
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let (parts, body) = resp.into_parts();
            return Err(AuthError::Denied(Response::from_parts(
                parts,
                h::stream(body),
            )));
        }
        Err(AuthError::Unexpected(status))
    }

    fn key(
        &self,
        auth: &Authorize,
        headers: &HeaderMap,
        channel: &ChannelName,
        client: &str,
    ) -> u64 {
        let mut h = self.hasher.build_hasher();
        auth.path.hash(&mut h);
        auth.upstream.name.hash(&mut h);
        client.hash(&mut h);
        channel.hash(&mut h);
        // Credentials are part of the key: two users behind one address must
        // never share an answer.
        for name in [COOKIE, AUTHORIZATION] {
            for v in headers.get_all(name) {
                v.as_bytes().hash(&mut h);
            }
        }
        h.finish()
    }

    fn remember(&self, key: u64, expiry: Instant, now: Instant) {
        let mut cache = self.cache.lock();
        if cache.len() >= AUTHORIZE_CACHE_MAX {
            cache.retain(|_, e| *e > now);
            if cache.len() >= AUTHORIZE_CACHE_MAX {
                return;
            }
        }
        cache.insert(key, expiry);
    }
}
