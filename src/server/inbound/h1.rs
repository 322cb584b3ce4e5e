//! HTTP/1 request framing, followed as the bytes pass: where each head
//! starts and ends, and where its body does, so that every head hyper will
//! read gets its verdict in order. It follows only what it is sure hyper
//! reads the same way (heads httparse parses, a single decimal length, the
//! plain chunked coding); anything else stops it, and hyper decides alone
//! from there. `differential` checks it against hyper on generated
//! request streams.

use super::Verdicts;
use crate::defaults::{MAX_HEADERS, MAX_HEADER_BYTES};

#[derive(Debug, Default)]
pub(super) struct Follower {
    state: State,
    /// The head read so far (a head can come in pieces).
    head: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Head,
    /// Bytes of a body with a length still to pass.
    Body(u64),
    Chunked(Chunk),
    Stopped,
}

/// Where a chunked body stands (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The size's hex digits: how many so far, and the value.
    Size {
        digits: u8,
        size: u64,
    },
    /// After `;`: an extension, up to the CR.
    Extension {
        size: u64,
    },
    /// The LF of the size line.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line, `at_start` when nothing of it
    /// has come yet (an empty line ends the body).
    Trailer {
        at_start: bool,
    },
    TrailerLf {
        empty: bool,
    },
}

/// Hex digits a chunk size may have here (hyper takes up to 16; longer is
/// left to hyper).
const SIZE_DIGITS: u8 = 15;

impl Follower {
    pub(super) fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Follows the next `bytes` of the connection.
    pub(super) fn follow(&mut self, bytes: &[u8], verdicts: &Verdicts) {
        let mut at = 0;
        while at < bytes.len() {
            at += match self.state {
                State::Stopped => return,
                State::Head => self.head_bytes(&bytes[at..], verdicts),
                State::Body(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - at);
                    self.state = match left - n as u64 {
                        0 => State::Head,
                        rest => State::Body(rest),
                    };
                    n
                }
                State::Chunked(chunk) => self.chunk_bytes(chunk, &bytes[at..]),
            };
        }
    }

    /// Takes bytes of a head; once it is whole, judges it and sets where
    /// its body goes. Returns how many bytes were the head's.
    ///
    /// A head is parsed once, when the blank line that ends it has come: a
    /// client that sends a head byte by byte costs one scan of each byte,
    /// not one parse per byte.
    fn head_bytes(&mut self, bytes: &[u8], verdicts: &Verdicts) -> usize {
        if self.head.is_empty() {
            // Blank lines before a request line are skipped, as hyper does.
            let blank = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            if blank > 0 {
                return blank;
            }
            // Nearly every head comes whole in one read: judged in place.
            if let Some(end) = head_end(bytes, 0) {
                self.judge(&bytes[..end], verdicts);
                return end;
            }
        }
        let before = self.head.len();
        let take = bytes
            .len()
            .min((MAX_HEADER_BYTES + 1).saturating_sub(before));
        self.head.extend_from_slice(&bytes[..take]);
        // The blank line may have begun in the bytes held before.
        let Some(end) = head_end(&self.head, before.saturating_sub(2)) else {
            if self.head.len() > MAX_HEADER_BYTES {
                // Too large: hyper refuses it (431) and closes.
                self.state = State::Stopped;
            }
            return take;
        };
        let head = std::mem::take(&mut self.head);
        self.judge(&head[..end], verdicts);
        if head.capacity() <= 4096 {
            // Kept for the next head in pieces; a large one is let go.
            self.head = head;
            self.head.clear();
        }
        end - before
    }

    /// Judges a whole head (up to and with its blank line) and sets where
    /// its body goes.
    fn judge(&mut self, head: &[u8], verdicts: &Verdicts) {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => {
                let (body, refused) = framing(&req);
                verdicts.push(refused);
                self.state = if refused { State::Stopped } else { body };
            }
            // Malformed (hyper refuses it and closes), or a blank line
            // httparse does not end the head at: not followed further.
            _ => self.state = State::Stopped,
        }
    }

    fn chunk_bytes(&mut self, chunk: Chunk, bytes: &[u8]) -> usize {
        let b = bytes[0];
        let next = match chunk {
            Chunk::Data(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                self.state = State::Chunked(match left - n as u64 {
                    0 => Chunk::DataCr,
                    rest => Chunk::Data(rest),
                });
                return n;
            }
            Chunk::Size { digits, size } => match hex(b) {
                Some(d) if digits < SIZE_DIGITS => Some(Chunk::Size {
                    digits: digits + 1,
                    size: size << 4 | d,
                }),
                Some(_) => None,
                None if digits == 0 => None,
                None if b == b';' => Some(Chunk::Extension { size }),
                None if b == b'\r' => Some(Chunk::SizeLf { size }),
                None => None,
            },
            Chunk::Extension { size } => match b {
                b'\r' => Some(Chunk::SizeLf { size }),
                b'\n' | 0 => None,
                _ => Some(chunk),
            },
            Chunk::SizeLf { size: 0 } if b == b'\n' => Some(Chunk::Trailer { at_start: true }),
            Chunk::SizeLf { size } if b == b'\n' => Some(Chunk::Data(size)),
            Chunk::SizeLf { .. } => None,
            Chunk::DataCr if b == b'\r' => Some(Chunk::DataLf),
            Chunk::DataLf if b == b'\n' => Some(Chunk::Size { digits: 0, size: 0 }),
            Chunk::DataCr | Chunk::DataLf => None,
            Chunk::Trailer { at_start } => match b {
                b'\r' => Some(Chunk::TrailerLf { empty: at_start }),
                b'\n' | 0 => None,
                _ => Some(Chunk::Trailer { at_start: false }),
            },
            Chunk::TrailerLf { empty: true } if b == b'\n' => {
                self.state = State::Head;
                return 1;
            }
            Chunk::TrailerLf { empty: false } if b == b'\n' => {
                Some(Chunk::Trailer { at_start: true })
            }
            Chunk::TrailerLf { .. } => None,
        };
        self.state = next.map_or(State::Stopped, State::Chunked);
        1
    }
}

/// Where the head in `buf` ends (after its blank line, CRLF or a bare LF
/// as httparse takes them), looking from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf.get(from..)?)
        .map(|i| from + i)
        .find_map(|i| match buf.get(i + 1..) {
            Some([b'\n', ..]) => Some(i + 2),
            Some([b'\r', b'\n', ..]) => Some(i + 3),
            _ => None,
        })
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

/// A whole head's body framing, and whether it is refused (`Transfer-
/// Encoding` with `Content-Length`). `Stopped` for anything else than a
/// plain length, the plain chunked coding or no body.
fn framing(req: &httparse::Request<'_, '_>) -> (State, bool) {
    let http11 = req.version == Some(1);
    let mut te: Option<&[u8]> = None;
    let mut lengths = Vec::new();
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Several: the last coding of the last one is what counts.
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            lengths.push(h.value);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if te.is_some() && !lengths.is_empty() {
        return (State::Stopped, true);
    }
    // After an upgrade the connection may not be HTTP any more.
    if upgrade {
        return (State::Stopped, false);
    }
    let body = match (te, lengths.as_slice()) {
        (Some(te), _) if http11 && last_coding_is_chunked(te) => {
            State::Chunked(Chunk::Size { digits: 0, size: 0 })
        }
        (Some(_), _) => State::Stopped,
        (None, []) => State::Head,
        (None, [one]) => match decimal(one) {
            Some(0) => State::Head,
            Some(n) => State::Body(n),
            None => State::Stopped,
        },
        (None, _) => State::Stopped,
    };
    (body, false)
}

fn last_coding_is_chunked(te: &[u8]) -> bool {
    te.rsplit(|b| *b == b',')
        .next()
        .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A length of plain decimal digits (at most 18 of them).
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts_of(pieces: &[&[u8]]) -> (Vec<bool>, bool) {
        let v = Verdicts::default();
        let mut f = Follower::default();
        for p in pieces {
            f.follow(p, &v);
        }
        let out = v.inner.lock().queue.drain(..).collect();
        (out, f.stopped())
    }

    #[test]
    fn heads_and_bodies_are_followed_in_any_pieces() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
            GET /c HTTP/1.1\r\n\r\n";
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                verdicts_of(&[a, b]),
                (vec![false; 3], false),
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(verdicts_of(&bytes), (vec![false; 3], false));
    }

    #[test]
    fn transfer_encoding_with_content_length_is_refused_and_following_stops() {
        let (v, stopped) = verdicts_of(&[
            b"GET /a HTTP/1.1\r\n\r\n",
            b"GET /b HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET /c HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!((v, stopped), (vec![false, true], true));
    }

    #[test]
    fn what_it_is_not_sure_of_stops_it() {
        for stream in [
            &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: +4\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            assert!(
                verdicts_of(&[stream]).1,
                "{}",
                String::from_utf8_lossy(stream)
            );
        }
    }
}
