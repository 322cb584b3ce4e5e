//! The poll request's inputs: channel from the path, options from the query.
//! Pure; every rejection names the parameter at fault.

use std::time::Duration;

use uuid::Uuid;

use crate::broker::{ChannelName, ChannelNameError, Cursor, Timestamp};
use crate::defaults::POLL_MAX_BATCH;

/// Poll holds and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    pub default_timeout: Duration,
    /// Invariant: `default_timeout <= max_timeout`.
    pub max_timeout: Duration,
    /// A batch answer stops before the message that would pass this (it
    /// always carries one).
    pub max_batch_bytes: usize,
    /// Event streams: a comment line after this long with nothing sent.
    pub sse_heartbeat: Duration,
    /// Event streams end (cleanly) after at most this long.
    pub sse_max_duration: Duration,
}

/// A poll request, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct PollParams {
    /// `None`: only messages published after the request arrived.
    pub cursor: Option<Cursor>,
    /// How long to hold, already capped at `poll.max_timeout`.
    pub timeout: Duration,
    /// `Some(n)`: batch form with up to n messages.
    pub max: Option<usize>,
}

/// A rejected input; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("invalid channel: {0}")]
    Channel(ChannelNameError),
    #[error("invalid {name}: {reason}")]
    Query {
        name: &'static str,
        reason: &'static str,
    },
}

/// Decodes the channel: the path after the route prefix, percent-decoded.
pub fn channel(rest: &str) -> Result<ChannelName, ParamError> {
    ChannelName::from_path(rest).map_err(ParamError::Channel)
}

/// Parses the query string. Unknown parameters are ignored (clients add
/// cache busters); for a repeated parameter the first one counts, as in nginx.
pub fn parse(query: Option<&str>, config: &PollConfig) -> Result<PollParams, ParamError> {
    let mut since = None;
    let mut last_id = None;
    let mut timeout = None;
    let mut max = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match key.as_ref() {
            "since" => &mut since,
            "last_id" => &mut last_id,
            "timeout" => &mut timeout,
            "max" => &mut max,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }

    let cursor = match (last_id, since) {
        (Some(id), _) => Some(Cursor::AfterId(Uuid::parse_str(&id).map_err(|_| {
            ParamError::Query {
                name: "last_id",
                reason: "must be a message id (a UUID)",
            }
        })?)),
        (None, Some(s)) => Some(self::since(&s).ok_or(ParamError::Query {
            name: "since",
            reason: "must be a timestamp: a number of seconds, 0 or more",
        })?),
        (None, None) => None,
    };

    let timeout = match timeout {
        None => config.default_timeout,
        Some(t) => {
            let secs =
                seconds(&t)
                    .filter(|s| *s >= 0.0 && s.is_finite())
                    .ok_or(ParamError::Query {
                        name: "timeout",
                        reason: "must be a number of seconds, 0 or more",
                    })?;
            // Capping before converting keeps 1e300 from overflowing Duration.
            Duration::from_secs_f64(secs.min(config.max_timeout.as_secs_f64()))
        }
    }
    .min(config.max_timeout);

    let max = match max {
        None => None,
        Some(m) => Some(
            m.parse::<usize>()
                .ok()
                .filter(|n| (1..=POLL_MAX_BATCH).contains(n))
                .ok_or(ParamError::Query {
                    name: "max",
                    reason: "must be a whole number from 1 to 1000",
                })?,
        ),
    };
    Ok(PollParams {
        cursor,
        timeout,
        max,
    })
}

/// A timestamp cursor as `since` (and an event stream's `Last-Event-ID`)
/// carries it: `0` is the oldest buffered message.
pub fn since(text: &str) -> Option<Cursor> {
    let t = seconds(text).and_then(Timestamp::from_secs_f64)?;
    Some(if t.0 == 0 {
        Cursor::Oldest
    } else {
        Cursor::After(t)
    })
}

/// A plain decimal number; "inf", "NaN" and hex are not seconds.
fn seconds(text: &str) -> Option<f64> {
    let t = text.trim();
    let plain = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !plain {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: PollConfig = PollConfig {
        default_timeout: Duration::from_secs(30),
        max_timeout: Duration::from_secs(60),
        max_batch_bytes: 1024,
        sse_heartbeat: Duration::from_secs(15),
        sse_max_duration: Duration::from_secs(600),
    };

    fn ok(q: &str) -> PollParams {
        parse(Some(q), &CONFIG).unwrap()
    }

    fn bad(q: &str) -> String {
        parse(Some(q), &CONFIG).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_without_parameters() {
        let p = parse(None, &CONFIG).unwrap();
        assert_eq!(
            p,
            PollParams {
                cursor: None,
                timeout: CONFIG.default_timeout,
                max: None
            }
        );
    }

    #[test]
    fn timeout_is_fractional_and_capped() {
        assert_eq!(ok("timeout=0").timeout, Duration::ZERO);
        assert_eq!(ok("timeout=0.25").timeout, Duration::from_millis(250));
        assert_eq!(ok("timeout=3600").timeout, CONFIG.max_timeout);
        assert_eq!(ok("timeout=1e300").timeout, CONFIG.max_timeout);
    }

    #[test]
    fn since_zero_is_oldest_and_other_values_are_after() {
        assert_eq!(ok("since=0").cursor, Some(Cursor::Oldest));
        assert_eq!(
            ok("since=1764420000.123456").cursor,
            Some(Cursor::After(Timestamp(1_764_420_000_123_456)))
        );
    }

    #[test]
    fn last_id_wins_over_since() {
        let id = Uuid::new_v4();
        assert_eq!(
            ok(&format!("since=5&last_id={id}")).cursor,
            Some(Cursor::AfterId(id))
        );
    }

    #[test]
    fn absurd_values_are_rejected_naming_the_parameter() {
        for q in [
            "timeout=-1",
            "timeout=NaN",
            "timeout=inf",
            "timeout=1e309",
            "timeout=abc",
            "timeout=",
        ] {
            assert!(bad(q).starts_with("invalid timeout"), "{q}: {}", bad(q));
        }
        for q in [
            "since=-1",
            "since=abc",
            "since=NaN",
            "since=1e309",
            "since=0x10",
        ] {
            assert!(bad(q).starts_with("invalid since"), "{q}");
        }
        for q in ["max=0", "max=1001", "max=-1", "max=1.5", "max=x"] {
            assert!(bad(q).starts_with("invalid max"), "{q}");
        }
        assert!(bad("last_id=nope").starts_with("invalid last_id"));
        assert_eq!(ok("max=1000").max, Some(1000));
    }

    #[test]
    fn unknown_parameters_are_ignored_and_first_wins() {
        assert_eq!(
            ok("_=123&timeout=1&timeout=2").timeout,
            Duration::from_secs(1)
        );
    }

    proptest::proptest! {
        /// Fuzz: any query string is parsed or refused, never a panic, and
        /// whatever is accepted respects the caps.
        #[test]
        fn any_query_is_parsed_or_refused(query in ".{0,200}") {
            if let Ok(p) = parse(Some(&query), &CONFIG) {
                proptest::prop_assert!(p.timeout <= CONFIG.max_timeout);
                proptest::prop_assert!(p.max.is_none_or(|m| (1..=POLL_MAX_BATCH).contains(&m)));
            }
        }

        #[test]
        fn numeric_looking_queries_never_panic(
            key in "(since|timeout|max|last_id)",
            value in "[-+0-9.eE]{0,30}|NaN|inf|-inf|1e309",
        ) {
            let _ = parse(Some(&format!("{key}={value}")), &CONFIG);
        }

        #[test]
        fn any_channel_path_is_decoded_or_refused(rest in ".{0,300}") {
            if let Ok(c) = channel(&rest) {
                proptest::prop_assert!(!c.as_str().is_empty() && c.as_str().len() <= 200);
            }
        }
    }

    #[test]
    fn channels_are_percent_decoded_then_checked() {
        assert_eq!(channel("user%3A42").unwrap().as_str(), "user:42");
        assert!(matches!(channel("a%2Fb"), Err(ParamError::Channel(_))));
        assert!(matches!(
            channel(""),
            Err(ParamError::Channel(ChannelNameError::Empty))
        ));
        assert_eq!(
            channel("%FF"),
            Err(ParamError::Channel(ChannelNameError::Encoding))
        );
        assert!(channel("a/b").is_err());
    }
}
