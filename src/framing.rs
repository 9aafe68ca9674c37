//! A guard on HTTP/1 client connections that fails closed: it follows the framing of each request
//! as bytes are read (heads, then `Content-Length` or chunked bodies) with a strict model of
//! HTTP/1.1, and anything outside that model refuses the request it belongs to and every later one
//! on the connection.
//!
//! hyper re-frames every request it forwards, so a desync with the node is not the risk: the guard
//! is the policy. hyper accepts some framings a strict proxy refuses (`Content-Length` together with
//! `Transfer-Encoding`, which it resolves by dropping the length; bare LF line ends; whitespace after
//! a chunk size; repeated equal lengths); the guard refuses them all:
//! - a flaw in a request head: the bytes still reach hyper, and the service answers that request
//!   (and every later one) 400 with `Connection: close` ([`Verdicts::refuses_next`]), or hyper
//!   answers its own 400/431 when it cannot parse the head either;
//! - a flaw in a body: the bytes before it are delivered, and every later read fails, so the body
//!   breaks: geolb answers 400 if it has not started a response yet, else the connection closes.
//!
//! The guard stays a pass of its own over the bytes (hyper owns the parsing of heads, and offers no
//! hook into it); it parses each head with httparse, as hyper does, so both read the same head.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const NONE: u64 = u64::MAX;

/// What the scanner found, shared with the connection's service.
#[derive(Debug)]
pub struct Verdicts {
    /// The number (1-based) of the first request found outside the model; `NONE` if none was.
    refused_from: AtomicU64,
    /// What was outside the model.
    why: OnceLock<&'static str>,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Verdicts {
    fn new() -> Self {
        Verdicts {
            refused_from: AtomicU64::new(NONE),
            why: OnceLock::new(),
            served: AtomicU64::new(0),
        }
    }

    /// Called once per request, in order: why this request must be refused (it, or one before it
    /// on the connection, is outside the model), or `None`.
    pub fn refuses_next(&self) -> Option<&'static str> {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        if n < self.refused_from.load(Ordering::Acquire) {
            return None;
        }
        Some(self.why.get().copied().unwrap_or("request framing"))
    }
}

/// The connection's I/O with the scanner watching what is read.
pub struct Watched<T> {
    io: T,
    scanner: Scanner,
    verdicts: Arc<Verdicts>,
    /// A body flaw was found: every later read fails.
    broken: bool,
}

impl<T> Watched<T> {
    pub fn new(io: T, max_head: usize) -> (Self, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::new());
        (
            Watched {
                io,
                scanner: Scanner::new(max_head),
                verdicts: verdicts.clone(),
                broken: false,
            },
            verdicts,
        )
    }
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "request framing outside what geolb accepts",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Err(broken()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if !matches!(result, Poll::Ready(Ok(()))) || !this.scanner.watching() {
            return result;
        }
        let Some(flaw) = this.scanner.feed(&buf.filled()[before..]) else {
            return result;
        };
        let _ = this.verdicts.why.set(flaw.why);
        let _ = this.verdicts.refused_from.compare_exchange(
            NONE,
            flaw.request,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if let Some(at) = flaw.body_at {
            // Deliver what came before the flaw (a head it completes is then answered 400), and
            // fail from there on.
            this.broken = true;
            buf.set_filled(before + at);
            if at == 0 {
                return Poll::Ready(Err(broken()));
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
    /// Before a request head: empty lines (CRLF) may come first.
    Start,
    /// The CR of an empty line before a request.
    StartLf,
    /// Inside a request head.
    Head,
    Length(u64),
    Chunk(Chunk),
    /// HTTP/2 prior knowledge: not HTTP/1 framing, not watched.
    H2,
    /// Something outside the model was seen: nothing more is watched.
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// The first digit of a chunk size.
    Start,
    Size(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk's line: a trailer field, or the final CRLF.
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
}

/// Where the model was left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flaw {
    /// The request (1-based) the offending byte belongs to.
    pub request: u64,
    /// For a flaw in a body: the offset of the offending byte in the bytes fed.
    pub body_at: Option<usize>,
    pub why: &'static str,
}

/// Follows request framing over a byte stream.
#[derive(Debug)]
pub struct Scanner {
    phase: Phase,
    /// The part of a head that came in earlier reads (a head in one read is never copied).
    head: Vec<u8>,
    /// Where the head's current line starts (offset in the whole head).
    line_start: usize,
    max_head: usize,
    /// Requests whose head has been seen whole (the current one is `requests + 1` in a head).
    requests: u64,
}

impl Scanner {
    pub fn new(max_head: usize) -> Self {
        Scanner {
            phase: Phase::Start,
            head: Vec::new(),
            line_start: 0,
            max_head,
            requests: 0,
        }
    }

    fn watching(&self) -> bool {
        !matches!(self.phase, Phase::H2 | Phase::Failed)
    }

    /// Feeds bytes read from the client; returns the first flaw in them, after which the scanner
    /// stops.
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Flaw> {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let step = match self.phase {
                Phase::H2 | Phase::Failed => return None,
                Phase::Start => match rest[0] {
                    b'\r' => {
                        self.phase = Phase::StartLf;
                        Ok(1)
                    }
                    b'\n' => Err("a bare LF before a request"),
                    _ => {
                        self.phase = Phase::Head;
                        Ok(0)
                    }
                },
                Phase::StartLf => match rest[0] {
                    b'\n' => {
                        self.phase = Phase::Start;
                        Ok(1)
                    }
                    _ => Err("a CR without LF before a request"),
                },
                Phase::Head => self.head_bytes(rest),
                Phase::Length(left) => {
                    let take = left.min(rest.len() as u64);
                    self.phase = if left == take {
                        Phase::Start
                    } else {
                        Phase::Length(left - take)
                    };
                    Ok(take as usize)
                }
                Phase::Chunk(Chunk::Data(left)) => {
                    let take = left.min(rest.len() as u64);
                    self.phase = Phase::Chunk(if left == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left - take)
                    });
                    Ok(take as usize)
                }
                Phase::Chunk(state) => chunk_step(state, rest[0]).map(|next| {
                    self.phase = next;
                    1
                }),
            };
            match step {
                Ok(n) => at += n,
                Err(why) => {
                    let in_body = matches!(self.phase, Phase::Length(_) | Phase::Chunk(_));
                    self.phase = Phase::Failed;
                    self.head = Vec::new();
                    return Some(Flaw {
                        request: self.requests + u64::from(!in_body),
                        body_at: in_body.then_some(at),
                        why,
                    });
                }
            }
        }
        None
    }

    /// Follows a head up to its CRLF CRLF, checking every line end; returns how many bytes it took.
    fn head_bytes(&mut self, bytes: &[u8]) -> Result<usize, &'static str> {
        let base = self.head.len();
        if self.head.last() == Some(&b'\r') && bytes.first() != Some(&b'\n') {
            return Err("a CR without LF in a request head");
        }
        let mut from = 0;
        while let Some(i) = memchr::memchr2(b'\r', b'\n', &bytes[from..]) {
            let at = from + i;
            from = at + 1;
            if bytes[at] == b'\r' {
                match bytes.get(at + 1) {
                    Some(b'\n') | None => continue,
                    Some(_) => return Err("a CR without LF in a request head"),
                }
            }
            let prev = match at {
                0 => self.head.last().copied(),
                _ => Some(bytes[at - 1]),
            };
            if prev != Some(b'\r') {
                return Err("a bare LF in a request head");
            }
            // A line ends at `base + at`: an empty one ends the head.
            if base + at - 1 == self.line_start {
                let end = at + 1;
                self.phase = if base == 0 {
                    self.framing(&bytes[..end])?
                } else {
                    // Taken, and not given back: an idle connection keeps no head buffer.
                    let mut head = std::mem::take(&mut self.head);
                    head.extend_from_slice(&bytes[..end]);
                    self.framing(&head)?
                };
                self.line_start = 0;
                return Ok(end);
            }
            self.line_start = base + at + 1;
        }
        if base + bytes.len() > self.max_head {
            return Err("a request head over limits.max_header_bytes");
        }
        self.head.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    /// At the end of a head: the framing of its body.
    fn framing(&mut self, head: &[u8]) -> Result<Phase, &'static str> {
        if self.requests == 0 && head.starts_with(b"PRI * HTTP/2.0\r\n\r\n") {
            // The HTTP/2 connection preface (its `SM` part follows).
            return Ok(Phase::H2);
        }
        // Uninitialised: 128 headers would be 4 KiB to clear on every request.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        if !matches!(
            req.parse_with_uninit_headers(head, &mut headers),
            Ok(httparse::Status::Complete(_))
        ) {
            return Err("a request head that does not parse");
        }
        if req.method == Some("CONNECT") || req.method == Some("PRI") {
            return Err("CONNECT or PRI");
        }
        let http10 = req.version == Some(0);
        self.requests += 1;
        let (mut length, mut lengths, mut chunked, mut encodings) = (None, 0, false, 0);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = parse_length(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encodings += 1;
                chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        }
        // Counted as the request it is: flaws found from here are this request's.
        match (lengths, encodings) {
            (0, 0) => Ok(Phase::Start),
            (1, 0) => match length {
                Some(0) => Ok(Phase::Start),
                Some(n) => Ok(Phase::Length(n)),
                None => self.refuse("a Content-Length that is not a plain number"),
            },
            (0, 1) if chunked && !http10 => Ok(Phase::Chunk(Chunk::Start)),
            (0, 1) => self.refuse("a Transfer-Encoding other than chunked"),
            (0, _) => self.refuse("Transfer-Encoding given twice"),
            (_, 0) => self.refuse("Content-Length given twice"),
            _ => self.refuse("both Content-Length and Transfer-Encoding"),
        }
    }

    /// A flaw of the request whose head just ended (it was counted already).
    fn refuse(&mut self, why: &'static str) -> Result<Phase, &'static str> {
        self.requests -= 1;
        Err(why)
    }
}

/// `1*DIGIT`, nothing else (no sign, no list, no inner space), as a `u64`.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One byte of chunked framing (outside chunk data).
fn chunk_step(state: Chunk, b: u8) -> Result<Phase, &'static str> {
    let hex = |n: u64| match (b as char).to_digit(16) {
        Some(d) if n < (1 << 56) => Ok(n * 16 + u64::from(d)),
        Some(_) => Err("a chunk size too large"),
        None => Err("a chunk size that is not hexadecimal"),
    };
    let next = match (state, b) {
        (Chunk::Start, _) => Chunk::Size(hex(0)?),
        (Chunk::Size(n), b';') => Chunk::Extension(n),
        (Chunk::Size(n), b'\r') | (Chunk::Extension(n), b'\r') => Chunk::SizeLf(n),
        (Chunk::Size(n), _) => Chunk::Size(hex(n)?),
        // Visible characters, spaces and tabs: anything else ends the model.
        (Chunk::Extension(n), b'\t' | b' '..=b'~') => Chunk::Extension(n),
        (Chunk::Extension(_), _) => return Err("a control character in a chunk extension"),
        (Chunk::SizeLf(0), b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf(n), b'\n') => Chunk::Data(n),
        (Chunk::SizeLf(_), _) => return Err("a chunk size line not ended by CRLF"),
        // Data is taken in bulk by `feed`; byte by byte it would be this.
        (Chunk::Data(n), _) if n > 1 => Chunk::Data(n - 1),
        (Chunk::Data(_), _) => Chunk::DataCr,
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataCr, _) => return Err("chunk data longer than its size"),
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::DataLf, _) => return Err("chunk data not ended by CRLF"),
        (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
        (Chunk::TrailerStart | Chunk::TrailerLine, b'\t' | b' '..=b'~') => Chunk::TrailerLine,
        (Chunk::TrailerLine, b'\r') => Chunk::TrailerLf,
        (Chunk::TrailerStart | Chunk::TrailerLine, _) => {
            return Err("a control character or bare LF in a trailer")
        }
        (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
        (Chunk::TrailerLf, _) => return Err("a trailer line not ended by CRLF"),
        (Chunk::FinalLf, b'\n') => return Ok(Phase::Start),
        (Chunk::FinalLf, _) => return Err("a chunked body not ended by CRLF"),
    };
    Ok(Phase::Chunk(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in two reads cut at `cut`; the flaw, and where the scanner is left.
    fn fed(stream: &[u8], cut: usize) -> (Option<Flaw>, Phase, u64) {
        let mut s = Scanner::new(64 * 1024);
        let first = s.feed(&stream[..cut]);
        let second = match first {
            Some(_) => None,
            None => s.feed(&stream[cut..]).map(|f| Flaw {
                body_at: f.body_at.map(|at| at + cut),
                ..f
            }),
        };
        (first.or(second), s.phase, s.requests)
    }

    const CLEAN: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
        \r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn follows_clean_requests_at_any_cut() {
        for cut in 0..=CLEAN.len() {
            assert_eq!(fed(CLEAN, cut), (None, Phase::Start, 4), "cut at {cut}");
        }
    }

    #[test]
    fn head_flaws_refuse_that_request_and_the_rest() {
        let cases: &[(&[u8], &str)] = &[
            (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "both Content-Length and Transfer-Encoding"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n", "both Content-Length and Transfer-Encoding"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length given twice"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd", "a Content-Length that is not a plain number"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd", "a Content-Length that is not a plain number"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "a Transfer-Encoding other than chunked"),
            (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding given twice"),
            (b"POST /x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "a Transfer-Encoding other than chunked"),
            (b"GET /x HTTP/1.1\nHost: x\n\n", "a bare LF in a request head"),
            (b"GET /x HTTP/1.1\r\nHost: x\n\r\n", "a bare LF in a request head"),
            (b"GET /x HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", "a CR without LF in a request head"),
            (b"GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", "a request head that does not parse"),
            (b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n", "a request head that does not parse"),
            (b"\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n", "a bare LF before a request"),
            (b"CONNECT x:1 HTTP/1.1\r\nHost: x\r\n\r\n", "CONNECT or PRI"),
        ];
        for (flawed, why) in cases {
            let stream = [CLEAN, flawed].concat();
            for cut in [0, 10, CLEAN.len(), CLEAN.len() + 20, stream.len()] {
                let (flaw, phase, _) = fed(&stream, cut.min(stream.len()));
                assert_eq!(
                    flaw,
                    Some(Flaw {
                        request: 5,
                        body_at: None,
                        why
                    }),
                    "{} cut at {cut}",
                    String::from_utf8_lossy(flawed)
                );
                assert_eq!(phase, Phase::Failed);
            }
        }
    }

    #[test]
    fn body_flaws_cut_the_stream_at_the_offending_byte() {
        let head = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: &[(&[u8], usize, &str)] = &[
            (
                b"5\r\nhello!\r\n0\r\n\r\n",
                8,
                "chunk data longer than its size",
            ),
            (
                b"5 \r\nhello\r\n0\r\n\r\n",
                1,
                "a chunk size that is not hexadecimal",
            ),
            (
                b"5\nhello\r\n0\r\n\r\n",
                1,
                "a chunk size that is not hexadecimal",
            ),
            (b"zz\r\n", 0, "a chunk size that is not hexadecimal"),
            (
                b"5;a\x01\r\nhello\r\n0\r\n\r\n",
                3,
                "a control character in a chunk extension",
            ),
            (
                b"5\r\nhello\r\n0\r\nX: 1\nGET / HTTP/1.1\r\n\r\n",
                17,
                "a control character or bare LF in a trailer",
            ),
            (
                b"5\r\nhello\r\n0\r\n\r\r",
                14,
                "a chunked body not ended by CRLF",
            ),
            (b"10000000000000000\r\n", 15, "a chunk size too large"),
        ];
        for (body, at, why) in cases {
            let stream = [CLEAN, head, body].concat();
            for cut in [0, CLEAN.len() + head.len(), stream.len() - 1] {
                assert_eq!(
                    fed(&stream, cut).0,
                    Some(Flaw {
                        request: 5,
                        body_at: Some(CLEAN.len() + head.len() + at),
                        why
                    }),
                    "{} cut at {cut}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn http2_prior_knowledge_is_left_alone() {
        let (flaw, phase, _) = fed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00", 5);
        assert_eq!((flaw, phase), (None, Phase::H2));
        // Not as a later request.
        let stream = [CLEAN, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"].concat();
        assert_eq!(fed(&stream, 0).0.map(|f| f.request), Some(5));
    }

    #[test]
    fn a_head_over_the_limit_is_a_flaw() {
        let mut s = Scanner::new(8192);
        let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 9000]].concat();
        assert_eq!(
            s.feed(&big).map(|f| f.why),
            Some("a request head over limits.max_header_bytes")
        );
    }

    #[test]
    fn verdicts_refuse_from_the_first_flawed_request_on() {
        let v = Verdicts::new();
        v.refused_from.store(2, Ordering::Release);
        let _ = v.why.set("a bare LF in a request head");
        assert_eq!(v.refuses_next(), None);
        assert_eq!(v.refuses_next(), Some("a bare LF in a request head"));
        assert!(v.refuses_next().is_some(), "and every later one");
    }
}
