//! HTTP/2 frames judged by their 9-byte header alone (RFC 9113 §4.1, §6):
//! the checks a payload cannot change, so a client that announces an
//! impossible frame and then waits is cut off at once instead of holding a
//! connection until a timeout.
//!
//! A refused frame's header is replaced by [`POISON`], a frame h2 refuses
//! on sight with GOAWAY(PROTOCOL_ERROR): h2 writes the GOAWAY itself, on
//! its own writer, with the right last stream id, and closes. (h2 answers
//! every one of these errors with PROTOCOL_ERROR once the payload has come;
//! `differential` checks that, on every rule.)

/// Bytes of a frame header.
pub(super) const HEADER: usize = 9;

/// RST_STREAM of length 0 on stream 1: h2 refuses a RST_STREAM whose
/// length is not 4 before looking at anything else.
pub(super) const POISON: [u8; HEADER] = [0, 0, 0, 0x3, 0, 0, 0, 0, 1];

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const ACK: u8 = 0x1;

/// One frame header, as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub length: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub(super) fn parse(b: &[u8; HEADER]) -> Head {
        Head {
            length: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored (§4.1).
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
        }
    }

    /// Why this header alone makes the frame a connection error, if it
    /// does. `first`: the first frame after the preface.
    pub(super) fn refused(&self, first: bool) -> Option<&'static str> {
        let zero = self.stream == 0;
        match self.kind {
            // §3.4: the preface is followed by SETTINGS.
            k if first && k != SETTINGS => Some("the first frame is not SETTINGS"),
            SETTINGS if !zero => Some("SETTINGS on a stream"),
            SETTINGS if self.flags & ACK != 0 && self.length != 0 => {
                Some("SETTINGS ACK with a payload")
            }
            SETTINGS if self.length % 6 != 0 => Some("SETTINGS not a multiple of 6 bytes"),
            PING if !zero => Some("PING on a stream"),
            PING if self.length != 8 => Some("PING not 8 bytes"),
            GOAWAY if !zero => Some("GOAWAY on a stream"),
            GOAWAY if self.length < 8 => Some("GOAWAY under 8 bytes"),
            WINDOW_UPDATE if self.length != 4 => Some("WINDOW_UPDATE not 4 bytes"),
            RST_STREAM if zero => Some("RST_STREAM on stream 0"),
            RST_STREAM if self.length != 4 => Some("RST_STREAM not 4 bytes"),
            PRIORITY if zero => Some("PRIORITY on stream 0"),
            PRIORITY if self.length != 5 => Some("PRIORITY not 5 bytes"),
            DATA | HEADERS | CONTINUATION if zero => Some("a stream frame on stream 0"),
            // §8.4: a client cannot push.
            PUSH_PROMISE => Some("PUSH_PROMISE from a client"),
            // Unknown types are ignored (§4.1); the rest need their payload.
            _ => None,
        }
    }
}

/// Where a connection's frames stand.
#[derive(Debug, Default)]
pub(super) struct Frames {
    /// A frame has come after the preface.
    started: bool,
    /// Payload bytes of the current frame still to pass.
    payload: usize,
    /// The start of a frame header, held back until the rest comes.
    held: Vec<u8>,
}

impl Frames {
    /// Follows `bytes` (what comes after what was held); returns how many
    /// hyper may have, and whether a frame was refused (its header then
    /// replaced by the poison, and nothing after it passed).
    pub(super) fn follow(&mut self, bytes: &mut [u8]) -> (usize, bool) {
        let mut at = 0;
        loop {
            let step = self.payload.min(bytes.len() - at);
            at += step;
            self.payload -= step;
            if at == bytes.len() {
                return (at, false);
            }
            let Some(header) = bytes.get(at..at + HEADER) else {
                self.held = bytes[at..].to_vec();
                return (at, false);
            };
            let mut raw = [0; HEADER];
            raw.copy_from_slice(header);
            let head = Head::parse(&raw);
            if let Some(why) = head.refused(!self.started) {
                tracing::debug!(refused = why, ?head, "HTTP/2 frame refused by its header");
                bytes[at..at + HEADER].copy_from_slice(&POISON);
                return (at + HEADER, true);
            }
            self.started = true;
            self.payload = head.length;
            at += HEADER;
        }
    }

    /// The held-back start of a header, to go first at the next read.
    pub(super) fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Holds `bytes` back again (the read found nothing new).
    pub(super) fn hold(&mut self, bytes: &[u8]) {
        self.held = bytes.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(length: usize, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
        let mut b = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            kind,
            flags,
        ];
        b.extend_from_slice(&stream.to_be_bytes());
        b.extend(std::iter::repeat_n(0, length));
        b
    }

    #[test]
    fn frames_pass_whole_and_a_header_split_across_reads_is_held() {
        let mut f = Frames::default();
        let mut bytes = [frame(6, SETTINGS, 0, 0), frame(8, PING, 0, 0)].concat();
        let len = bytes.len();
        // All but the last 5 bytes of the PING's header and payload.
        let cut = 6 + HEADER + 4;
        assert_eq!(f.follow(&mut bytes[..cut]), (6 + HEADER, false));
        let mut rest = [f.take_held(), bytes[cut..len].to_vec()].concat();
        let n = rest.len();
        assert_eq!(f.follow(&mut rest), (n, false));
    }

    #[test]
    fn a_frame_wrong_by_its_header_is_poisoned_and_nothing_after_it_passes() {
        for (head, first) in [
            (frame(4, RST_STREAM, 0, 1)[..HEADER].to_vec(), true),
            (frame(7, PING, 0, 0)[..HEADER].to_vec(), false),
            (frame(5, RST_STREAM, 0, 1)[..HEADER].to_vec(), false),
            (frame(6, SETTINGS, ACK, 0)[..HEADER].to_vec(), false),
            (frame(4, DATA, 0, 0)[..HEADER].to_vec(), false),
        ] {
            let mut f = Frames {
                started: !first,
                ..Frames::default()
            };
            let mut bytes = [head, b"tail".to_vec()].concat();
            assert_eq!(f.follow(&mut bytes), (HEADER, true));
            assert_eq!(bytes[..HEADER], POISON);
        }
    }
}
