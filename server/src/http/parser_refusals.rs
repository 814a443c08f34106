//! Gives the refusals hyper makes by itself the JSON error shape and a code.
//!
//! hyper answers some requests itself, before poem or Settle see them: a request line whose URI
//! is longer than 65,534 bytes (414), a request head larger than its read buffer or with more than
//! 100 headers (431), and a request line or header it cannot parse (400). It writes only a head,
//! `HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: ...\r\n\r\n`,
//! then closes the connection; no setting of hyper or poem changes that answer (hyper 1.12,
//! `proto/h1/role.rs`, `on_error`). So each accepted connection is wrapped, and when hyper writes
//! exactly one of those heads the wrapper writes the same status with the JSON error body instead.
//!
//! What hyper writes was checked on the wire (hyper 1.12 behind poem 3.1.12): poem passes each
//! connection to hyper through an IO type without vectored writes, so hyper writes each response,
//! head and body, with one `poll_write` of one buffer, and the automatic head alone. A head is
//! replaced only when a write is exactly one of the three automatic heads and does not continue a
//! partial write. No response of Settle's can be one: they all pass through `observe`, which adds
//! `x-request-id`, and no body Settle sends holds a raw CR. Every other write costs a length check
//! and a comparison of its first bytes. If hyper changes what it writes, nothing is replaced and
//! hyper's bodiless answer goes out; `hostile::requests_the_http_parser_refuses_have_a_code` fails.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use poem::http::uri::Scheme;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{AppError, ErrorCode};
use crate::metrics::Metrics;

/// Accepts connections from `inner` and wraps each in [`RefusalIo`].
pub struct RefusalAcceptor<A> {
    inner: A,
    metrics: Metrics,
}

impl<A: Acceptor> RefusalAcceptor<A> {
    pub fn new(inner: A, metrics: Metrics) -> RefusalAcceptor<A> {
        RefusalAcceptor { inner, metrics }
    }
}

impl<A: Acceptor> Acceptor for RefusalAcceptor<A> {
    type Io = RefusalIo<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((RefusalIo { inner: io, metrics: self.metrics.clone(), continuing: false, replacing: None }, local, remote, scheme))
    }
}

/// A connection whose automatic refusal heads from hyper are replaced by JSON error responses.
pub struct RefusalIo<T> {
    inner: T,
    metrics: Metrics,
    /// The last write was partial: the next one continues it and cannot start a response.
    continuing: bool,
    replacing: Option<Replacement>,
}

/// The JSON response being written in place of hyper's head.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's head, reported to hyper as written once the replacement is.
    replaces: usize,
}

/// The statuses hyper answers by itself, with their status lines as it writes them.
const AUTOMATIC_STATUS_LINES: [(u16, &[u8]); 3] = [
    (400, b"HTTP/1.1 400 Bad Request\r\n"),
    (414, b"HTTP/1.1 414 URI Too Long\r\n"),
    (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
];
/// What follows the status line in an automatic head, up to the date.
const AUTOMATIC_HEADERS: &[u8] = b"connection: close\r\ncontent-length: 0\r\ndate: ";
/// The length of an HTTP date, such as "Sun, 06 Nov 1994 08:49:37 GMT".
const DATE_LEN: usize = 29;
/// The length of the longest automatic head, the 431 one.
const AUTOMATIC_HEAD_MAX: usize = AUTOMATIC_STATUS_LINES[2].1.len() + AUTOMATIC_HEADERS.len() + DATE_LEN + 4;

/// One of hyper's automatic refusals: its status, status line and date.
#[derive(Debug, PartialEq)]
struct Refusal<'a> {
    status: u16,
    line: &'static [u8],
    date: &'a [u8],
}

/// `head` as one of hyper's automatic refusals if it is exactly one, such as
/// `HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: <date>\r\n\r\n`.
fn automatic_refusal(head: &[u8]) -> Option<Refusal<'_>> {
    let &(status, line) = AUTOMATIC_STATUS_LINES.iter().find(|(_, line)| head.starts_with(line))?;
    let date = head[line.len()..].strip_prefix(AUTOMATIC_HEADERS)?;
    (date.len() == DATE_LEN + 4 && date.ends_with(b"\r\n\r\n")).then(|| Refusal { status, line, date: &date[..DATE_LEN] })
}

/// The response Settle gives instead of one of hyper's automatic refusals.
fn replacement(refusal: Refusal<'_>, metrics: &Metrics) -> Vec<u8> {
    let Refusal { status, line, date } = refusal;
    let error = match status {
        414 => AppError::new(
            ErrorCode::RequestTooLarge,
            "the request line is longer than 65,534 bytes; send long queries with POST",
        ),
        431 => AppError::new(
            ErrorCode::RequestTooLarge,
            "the request headers are too large or more than 100; send long queries with POST",
        ),
        _ => AppError::new(ErrorCode::QueryRejected, "the request line or a header is not valid HTTP/1.1"),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::info!(request_id = %request_id, status, code = %error.code, "request refused by the HTTP parser");
    metrics.http_requests.with_label_values(&["other", "4xx"]).inc();
    let body = super::error_body(&error, &request_id, metrics);
    let mut bytes = Vec::with_capacity(256 + body.len());
    bytes.extend_from_slice(line);
    bytes.extend_from_slice(b"content-type: application/json\r\n");
    bytes.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // hyper closes the connection after this answer, as its own head said.
    bytes.extend_from_slice(b"connection: close\r\n");
    bytes.extend_from_slice(format!("x-request-id: {request_id}\r\n").as_bytes());
    bytes.extend_from_slice(b"date: ");
    bytes.extend_from_slice(date);
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

impl<T: AsyncWrite + Unpin> RefusalIo<T> {
    /// Starts replacing `buf` when it is an automatic refusal written at the start of a response;
    /// returns whether it is.
    fn detect(&mut self, buf: &[u8]) -> bool {
        // The cheap test first: every other write is passed on after it.
        if self.continuing || buf.len() > AUTOMATIC_HEAD_MAX || !buf.starts_with(b"HTTP/1.1 4") {
            return false;
        }
        let Some(refusal) = automatic_refusal(buf) else { return false };
        let bytes = replacement(refusal, &self.metrics);
        self.replacing = Some(Replacement { bytes, written: 0, replaces: buf.len() });
        true
    }

    /// Writes the replacement; reports hyper's head as written (at most `asked` bytes) once done.
    fn poll_replacement(&mut self, cx: &mut Context<'_>, asked: usize) -> Poll<io::Result<usize>> {
        let replacing = self.replacing.as_mut().expect("a replacement in progress");
        while replacing.written < replacing.bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &replacing.bytes[replacing.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            replacing.written += n;
        }
        let replaces = replacing.replaces;
        self.replacing = None;
        Poll::Ready(Ok(replaces.min(asked)))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RefusalIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Only `poll_write`: poem hands hyper each connection through its `BoxIo`, which has no vectored
/// writes, so hyper flattens what it sends into one buffer and writes it with `poll_write` (the
/// default `poll_write_vectored` would come here too).
impl<T: AsyncWrite + Unpin> AsyncWrite for RefusalIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_some() || self.detect(buf) {
            return self.poll_replacement(cx, buf.len());
        }
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.continuing = written < buf.len();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn only_hypers_exact_automatic_heads_are_refusals() {
        // As hyper 1.12 writes them (seen on the wire), the 431 one being the longest.
        for (status, line) in [(400, "400 Bad Request"), (414, "414 URI Too Long"), (431, "431 Request Header Fields Too Large")] {
            let head = format!("HTTP/1.1 {line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
            let refusal = automatic_refusal(head.as_bytes()).unwrap_or_else(|| panic!("{head:?}"));
            assert_eq!((refusal.status, refusal.date), (status, DATE.as_bytes()), "{head:?}");
            assert!(head.len() <= AUTOMATIC_HEAD_MAX);
        }
        assert_eq!(AUTOMATIC_HEAD_MAX, 123);
        for other in [
            // Responses of Settle's: they have x-request-id and a body.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nx-request-id: a\r\ncontent-length: 2\r\ndate: {DATE}\r\n\r\n{{}}"),
            format!("HTTP/1.1 400 Bad Request\r\nx-request-id: a\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 10\r\ndate: {DATE}\r\n\r\n"),
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\nmore"),
            format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n"),
            format!("HTTP/1.0 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n"),
            "{\"data\":null}".to_owned(),
            String::new(),
        ] {
            assert_eq!(automatic_refusal(other.as_bytes()), None, "{other:?}");
        }
    }

    /// A socket that takes at most `chunk` bytes a write.
    struct Trickle {
        written: Vec<u8>,
        chunk: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn connection(chunk: usize) -> RefusalIo<Trickle> {
        RefusalIo { inner: Trickle { written: Vec::new(), chunk }, metrics: Metrics::new(), continuing: false, replacing: None }
    }

    #[tokio::test]
    async fn the_automatic_head_is_replaced_whole_even_by_small_writes() {
        use tokio::io::AsyncWriteExt;
        let head = format!("HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
        let mut io = connection(7);
        io.write_all(head.as_bytes()).await.unwrap();
        let written = String::from_utf8(io.inner.written).unwrap();
        let (response_head, body) = written.split_once("\r\n\r\n").unwrap();
        assert!(response_head.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\n"), "{written}");
        assert!(response_head.contains(&format!("content-length: {}\r\n", body.len())), "{written}");
        assert!(response_head.ends_with(&format!("date: {DATE}")), "{written}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "REQUEST_TOO_LARGE");
    }

    #[tokio::test]
    async fn a_write_that_continues_a_partial_one_is_never_replaced() {
        use tokio::io::AsyncWriteExt;
        // A response whose remainder, after a partial write, looks like an automatic head.
        let head = format!("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n");
        let response = format!("{}{head}", "x".repeat(16));
        let mut io = connection(16);
        io.write_all(response.as_bytes()).await.unwrap();
        assert_eq!(String::from_utf8(io.inner.written).unwrap(), response);
    }
}
