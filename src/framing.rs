//! A guard on HTTP/1 client connections against request smuggling: it follows the framing of each
//! request as bytes are read and flags one that carries both `Content-Length` and
//! `Transfer-Encoding`. hyper accepts such a request (by `Transfer-Encoding`, closing afterwards, as
//! RFC 9112 §6.1 allows); geolb refuses it with 400 and never forwards it, like a strict proxy.
//!
//! The scanner is a small state machine over the byte stream (heads, then `Content-Length` or chunked
//! bodies) that stops watching at anything it does not understand: hyper rejects those itself.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NONE: u64 = u64::MAX;

/// What the scanner found, shared with the connection's service.
#[derive(Debug)]
pub struct Verdicts {
    /// The number (1-based) of the first request that carried both framings; `NONE` if none did.
    flagged: AtomicU64,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Verdicts {
    fn new() -> Self {
        Verdicts {
            flagged: AtomicU64::new(NONE),
            served: AtomicU64::new(0),
        }
    }

    /// Called once per request, in order: true when this request must be refused.
    pub fn next_is_flagged(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.flagged.load(Ordering::Acquire) == n
    }
}

/// The connection's I/O with the scanner watching what is read.
pub struct Watched<T> {
    io: T,
    scanner: Scanner,
    verdicts: Arc<Verdicts>,
}

impl<T> Watched<T> {
    pub fn new(io: T, max_head: usize) -> (Self, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::new());
        (
            Watched {
                io,
                scanner: Scanner::new(max_head),
                verdicts: verdicts.clone(),
            },
            verdicts,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if result.is_ready() && this.scanner.phase != Phase::Off {
            if let Some(flagged) = this.scanner.feed(&buf.filled()[before..]) {
                let _ = this.verdicts.flagged.compare_exchange(
                    NONE,
                    flagged,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    Length(u64),
    Chunk(Chunk),
    /// Stopped watching: HTTP/2, or something hyper will reject by itself.
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Size(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
}

/// Follows request framing over a byte stream.
#[derive(Debug)]
pub struct Scanner {
    phase: Phase,
    head: Vec<u8>,
    max_head: usize,
    requests: u64,
}

impl Scanner {
    pub fn new(max_head: usize) -> Self {
        Scanner {
            phase: Phase::Head,
            head: Vec::new(),
            max_head,
            requests: 0,
        }
    }

    /// Feeds bytes read from the client; returns the number of a request flagged in them (the
    /// scanner stops at the first one: hyper closes the connection after it).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut flagged = None;
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => break,
                Phase::Head => bytes = self.head_bytes(bytes, &mut flagged),
                Phase::Length(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.phase = if left == take {
                        Phase::Head
                    } else {
                        Phase::Length(left - take)
                    };
                }
                Phase::Chunk(Chunk::Data(left)) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.phase = Phase::Chunk(if left == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - take)
                    });
                }
                Phase::Chunk(state) => {
                    self.phase = chunk_step(state, bytes[0]);
                    bytes = &bytes[1..];
                }
            }
        }
        flagged
    }

    /// Collects a head; at its end, decides the body's framing.
    fn head_bytes<'b>(&mut self, bytes: &'b [u8], flagged: &mut Option<u64>) -> &'b [u8] {
        // Empty lines before a request are ignored (RFC 9112 §2.2), as hyper does.
        let bytes = if self.head.is_empty() {
            let skip = bytes
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            &bytes[skip..]
        } else {
            bytes
        };
        if bytes.is_empty() {
            return bytes;
        }
        let start = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(bytes);
        let Some(end) = find(&self.head[start..], b"\r\n\r\n").map(|i| start + i + 4) else {
            if self.head.len() > self.max_head {
                self.phase = Phase::Off;
            }
            return &[];
        };
        let rest_len = self.head.len() - end;
        self.phase = self.framing(end, flagged);
        self.head.clear();
        &bytes[bytes.len() - rest_len..]
    }

    fn framing(&mut self, end: usize, flagged: &mut Option<u64>) -> Phase {
        if self.head.starts_with(b"PRI * HTTP/2.0") {
            return Phase::Off;
        }
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&self.head[..end]),
            Ok(httparse::Status::Complete(_))
        ) || req.method == Some("CONNECT")
        {
            return Phase::Off;
        }
        self.requests += 1;
        let (mut length, mut lengths, mut chunked, mut encodings) = (None, 0, false, 0);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encodings += 1;
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        if lengths > 0 && encodings > 0 {
            *flagged = Some(self.requests);
            // hyper answers it and closes the connection: nothing after it is a request.
            return Phase::Off;
        }
        match (encodings, length) {
            (0, None) if lengths == 0 => Phase::Head,
            (0, Some(0)) => Phase::Head,
            (0, Some(n)) => Phase::Length(n),
            (_, _) if chunked => Phase::Chunk(Chunk::Size(0)),
            _ => Phase::Off,
        }
    }
}

/// One byte of chunked framing (outside chunk data).
fn chunk_step(state: Chunk, b: u8) -> Phase {
    let next = match (state, b) {
        (Chunk::Size(n), b';') | (Chunk::Extension(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n), b'\r') | (Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Size(n), _) => match (b as char).to_digit(16) {
            Some(d) if n < (1 << 56) => Chunk::Size(n * 16 + u64::from(d)),
            _ => return Phase::Off,
        },
        (Chunk::Extension(n), _) => Chunk::Extension(n),
        (Chunk::SizeLf(0), b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size(0),
        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
        (Chunk::TrailerStart, _) | (Chunk::TrailerLine, _) if b != b'\n' => Chunk::TrailerLine,
        (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
        (Chunk::FinalLf, b'\n') => return Phase::Head,
        _ => return Phase::Off,
    };
    Phase::Chunk(next)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged_in(stream: &[u8], cut: usize) -> (Option<u64>, Phase) {
        let mut s = Scanner::new(64 * 1024);
        let first = s.feed(&stream[..cut]);
        let second = s.feed(&stream[cut..]);
        (first.or(second), s.phase)
    }

    const CLEAN: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
        \r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn follows_clean_requests_at_any_cut() {
        for cut in 0..=CLEAN.len() {
            let mut s = Scanner::new(64 * 1024);
            assert_eq!(s.feed(&CLEAN[..cut]), None);
            assert_eq!(s.feed(&CLEAN[cut..]), None);
            assert_eq!((s.requests, s.phase), (4, Phase::Head), "cut at {cut}");
        }
    }

    #[test]
    fn flags_content_length_with_transfer_encoding() {
        let smuggle = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let stream = [CLEAN, &smuggle[..]].concat();
        for cut in [0, 10, CLEAN.len(), CLEAN.len() + 30, stream.len()] {
            assert_eq!(
                flagged_in(&stream, cut),
                (Some(5), Phase::Off),
                "cut at {cut}"
            );
        }
        let reversed = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(flagged_in(reversed, 20).0, Some(1));
    }

    #[test]
    fn stops_at_http2_and_at_what_hyper_rejects() {
        assert_eq!(
            flagged_in(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 5).1,
            Phase::Off
        );
        assert_eq!(
            flagged_in(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 0).1,
            Phase::Off
        );
        assert_eq!(
            flagged_in(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                0
            )
            .1,
            Phase::Off
        );
    }

    #[test]
    fn verdicts_follow_request_order() {
        let v = Verdicts::new();
        v.flagged.store(2, Ordering::Release);
        assert!(!v.next_is_flagged());
        assert!(v.next_is_flagged());
        assert!(!v.next_is_flagged());
    }
}
