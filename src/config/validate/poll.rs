//! `poll:` and `limits:`: how long polls are held and streams kept, and
//! how many a client, an address, a channel and the instance may hold.

use std::time::Duration;

use super::super::raw::{RawLimits, RawPoll};
use super::super::{Limits, PollConfig};
use super::Validator;
use crate::defaults;

impl Validator {
    pub(super) fn poll(&mut self, raw: RawPoll) -> PollConfig {
        let poll = PollConfig {
            default_timeout: raw
                .default_timeout
                .map_or(defaults::POLL_DEFAULT_TIMEOUT, |d| d.0),
            max_timeout: raw.max_timeout.map_or(defaults::POLL_MAX_TIMEOUT, |d| d.0),
            max_batch_bytes: raw
                .max_batch_bytes
                .map_or(defaults::POLL_MAX_BATCH_BYTES, |b| b.0)
                .try_into()
                .unwrap_or(usize::MAX),
            sse_heartbeat: raw.sse_heartbeat.map_or(defaults::SSE_HEARTBEAT, |d| d.0),
            sse_max_duration: raw
                .sse_max_duration
                .map_or(defaults::SSE_MAX_DURATION, |d| d.0),
        };
        self.within(
            "poll.sse_heartbeat",
            poll.sse_heartbeat,
            defaults::SSE_HEARTBEAT_MIN,
            defaults::SSE_DURATION_LIMIT,
        );
        self.within(
            "poll.sse_max_duration",
            poll.sse_max_duration,
            defaults::SSE_MAX_DURATION_MIN,
            defaults::SSE_DURATION_LIMIT,
        );
        if poll.default_timeout > poll.max_timeout {
            self.fail(
                "poll.default_timeout",
                format!(
                    "is longer than poll.max_timeout ({})",
                    humantime::format_duration(poll.max_timeout)
                ),
            );
        }
        if poll.max_batch_bytes == 0 {
            self.fail("poll.max_batch_bytes", "must be more than 0 bytes");
        }
        poll
    }

    pub(super) fn limits(&mut self, raw: RawLimits) -> Limits {
        let limits = Limits {
            max_per_client: raw.max_per_client.unwrap_or(defaults::LIMIT_MAX_PER_CLIENT),
            max_per_address: raw
                .max_per_address
                .unwrap_or(defaults::LIMIT_MAX_PER_ADDRESS),
            max_per_channel: raw
                .max_per_channel
                .unwrap_or(defaults::LIMIT_MAX_PER_CHANNEL),
            max_total: raw.max_total.unwrap_or(defaults::LIMIT_MAX_TOTAL),
        };
        for (key, value) in [
            ("limits.max_per_client", limits.max_per_client),
            ("limits.max_per_address", limits.max_per_address),
            ("limits.max_per_channel", limits.max_per_channel),
            ("limits.max_total", limits.max_total),
        ] {
            if value == 0 {
                self.fail(key, "must be at least 1");
            }
        }
        limits
    }

    /// A duration between `min` and `max` (a heartbeat of 1 ns would be a
    /// busy loop; one past the clock's range would overflow it).
    fn within(&mut self, path: &str, value: Duration, min: Duration, max: Duration) {
        if value < min || value > max {
            self.fail(
                path,
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            );
        }
    }
}
