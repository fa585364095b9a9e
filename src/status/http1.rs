//! A minimal HTTP/1.1 server side, for the status endpoint: GET and HEAD without bodies, one
//! request at a time per connection (keep-alive and pipelining allowed), everything bounded.
//!
//! Written here rather than taken from hyper: the endpoint answers a handful of fixed paths,
//! and hyper's server added about 190 KB to the binary and 0.5 MB to a leader's resident
//! memory (more of the binary's pages are mapped), with or without `--status-addr`.
//!
//! The bounds, so that no client can hold the supervisor's thread or its memory:
//! - the request head (request line and headers) must arrive within [`HEAD_TIMEOUT`], idle
//!   kept-alive connections included, and fit in [`MAX_HEAD`] bytes with at most
//!   [`MAX_HEADERS`] headers (else 431, then close);
//! - a response must be taken by the client within [`WRITE_TIMEOUT`];
//! - a request with a body (`Content-Length` above 0, any `Transfer-Encoding`) is answered,
//!   then the connection closed: its body is never read;
//! - anything that is not HTTP/1.x is answered 400 (505 for another version), then closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A request head must be complete within this, counted from the connection's start or the
/// previous response: a client that never sends is closed after it.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A response must be taken within this.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers per request.
pub const MAX_HEADERS: usize = 64;

/// What the handler sees of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
}

impl Request {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A response: no body is sent for HEAD (its length is, as for GET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Extra header lines, each `Name: value`.
    pub headers: Vec<String>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// A head that cannot be served: answered with this status, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub u16);

/// A parsed head: the request, and whether the connection may serve another one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub request: Request,
    pub keep_alive: bool,
}

/// Serve requests on `stream` with `handler` until the client closes, breaks a bound, or asks
/// to close. Errors end the connection quietly: they concern that client only. `waiting` is
/// true while the connection waits for a request head (it may then be closed for a newer one
/// without cutting an answer short), false while a request is answered.
pub async fn serve<F, Fut>(mut stream: TcpStream, waiting: &AtomicBool, handler: F)
where
    F: Fn(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        waiting.store(true, Ordering::Relaxed);
        let head = match timeout(HEAD_TIMEOUT, read_head(&mut stream, &mut buf)).await {
            Ok(Ok(Some(head))) => head,
            // Closed, failed, or too slow: nothing to answer.
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => return,
        };
        waiting.store(false, Ordering::Relaxed);
        let parsed = parse_head(&buf[..head]);
        buf.drain(..head);
        let (response, head_only, keep_alive) = match parsed {
            Ok(h) => {
                let is_head = h.request.is_head();
                (handler(h.request).await, is_head, h.keep_alive)
            }
            Err(Refused(status)) => (refusal(status), false, false),
        };
        let bytes = encode(&response, head_only, keep_alive);
        match timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
            Ok(Ok(())) if keep_alive => {}
            _ => return,
        }
    }
}

/// Read until `buf` holds a whole head; Some(its length with the blank line), None when the
/// client closed before sending one. A head longer than [`MAX_HEAD`] is Some(the limit): it
/// is refused by the parser as too large.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(buf).filter(|end| *end <= MAX_HEAD) {
            return Ok(Some(end));
        }
        if buf.len() >= MAX_HEAD {
            buf.truncate(MAX_HEAD);
            return Ok(Some(MAX_HEAD));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The length of the head at the start of `buf` (through its blank line), if it is all there.
/// Lines end in CRLF or, leniently, LF. Empty lines before the request line are skipped by
/// the parser (RFC 9112 allows them).
fn head_end(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let mut i = start;
    while let Some(nl) = buf[i..].iter().position(|b| *b == b'\n') {
        let next = i + nl + 1;
        match buf.get(next..) {
            Some([b'\n', ..]) => return Some(next + 1),
            Some([b'\r', b'\n', ..]) => return Some(next + 2),
            _ => i = next,
        }
    }
    None
}

/// Parse a whole head (as [`head_end`] delimited it).
pub fn parse_head(head: &[u8]) -> Result<Head, Refused> {
    if head.len() >= MAX_HEAD && head_end(head).is_none() {
        return Err(Refused(431));
    }
    let text = std::str::from_utf8(head).map_err(|_| Refused(400))?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or(Refused(400))?;
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(Refused(400)),
    };
    if method.is_empty() || !method.bytes().all(is_token) {
        return Err(Refused(400));
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(Refused(400));
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v if v.starts_with("HTTP/") => return Err(Refused(505)),
        _ => return Err(Refused(400)),
    };
    let mut count = 0;
    for line in lines.take_while(|l| !l.is_empty()) {
        count += 1;
        if count > MAX_HEADERS {
            return Err(Refused(431));
        }
        let (name, value) = line.split_once(':').ok_or(Refused(400))?;
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(Refused(400));
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("connection") {
            let has = |word: &str| {
                value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(word))
            };
            if has("close") {
                keep_alive = false;
            } else if has("keep-alive") {
                keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value != "0")
        {
            // A body we will not read: answer, then close.
            keep_alive = false;
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Head {
        request: Request {
            method: method.to_string(),
            path: path.to_string(),
        },
        keep_alive,
    })
}

/// RFC 9110's token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn refusal(status: u16) -> Response {
    Response::new(
        status,
        "text/plain; charset=utf-8",
        format!("{}\n", reason(status)),
    )
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The response's bytes: the head, and the body unless `head_only`.
pub fn encode(r: &Response, head_only: bool, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for h in &r.headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&r.body);
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Head, Refused> {
        let end = head_end(s.as_bytes()).expect("a whole head");
        parse_head(&s.as_bytes()[..end])
    }

    #[test]
    fn requests_are_parsed() {
        let h = parse("GET /leader?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(h.request.method, "GET");
        assert_eq!(h.request.path, "/leader");
        assert!(h.keep_alive);
        let h = parse("\r\nHEAD /status HTTP/1.0\nConnection: Keep-Alive\n\n").unwrap();
        assert!(h.request.is_head() && h.keep_alive);
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        let post = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert!(!post.keep_alive);
    }

    #[test]
    fn garbage_is_refused() {
        for (head, status) in [
            ("\x16\x03\x01 hello there\r\n\r\n", 400),
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\n\r\n", 400),
            ("GET leader HTTP/1.1\r\n\r\n", 400),
            ("GET / FTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nbad name: x\r\n\r\n", 400),
        ] {
            assert_eq!(parse(head), Err(Refused(status)), "{head:?}");
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(&many), Err(Refused(431)));
        assert_eq!(parse_head(&[b'a'; MAX_HEAD]), Err(Refused(431)));
        assert_eq!(parse_head(&[0xff, b' ', b'\n', b'\n']), Err(Refused(400)));
    }

    #[test]
    fn the_end_of_a_head_is_found_only_when_whole() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nGET"), Some(18));
        assert_eq!(head_end(b"\r\n"), None);
    }

    #[test]
    fn head_responses_have_the_length_but_no_body() {
        let r = Response::new(200, "text/plain", "leader\n");
        let full = String::from_utf8(encode(&r, false, true)).unwrap();
        assert!(full.starts_with("HTTP/1.1 200 OK\r\n"), "{full}");
        assert!(full.contains("Content-Length: 7\r\n") && full.ends_with("\r\n\r\nleader\n"));
        let head = String::from_utf8(encode(&r, true, false)).unwrap();
        assert!(head.contains("Content-Length: 7\r\n") && head.ends_with("close\r\n\r\n"));
    }
}
