//! Response compression: gzip or brotli, as the request's Accept-Encoding asks.
//!
//! Only responses of at least [`MIN_BYTES`] are compressed: below that the saving is a few
//! hundred bytes at best and costs CPU on every request. Every Settle response is built in memory,
//! so the body is compressed whole and sent with its length. Request bodies are never
//! decompressed (poem's `Compression` middleware would, on every route; Settle takes plain JSON).

use async_compression::Level;
use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
use futures::future::BoxFuture;
use poem::http::header::{self, HeaderValue};
use poem::http::StatusCode;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};
use tokio::io::AsyncReadExt;

/// Smallest body worth compressing, in bytes.
pub const MIN_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The coding to answer with: the one with the highest q-value among br and gzip (a `*` counts for
/// both), brotli when they tie; none when neither is acceptable (absent or q=0).
pub fn negotiate(accept_encoding: &str) -> Option<Coding> {
    let mut brotli: Option<f32> = None;
    let mut gzip: Option<f32> = None;
    let mut any: Option<f32> = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let q = parts
            .filter_map(|parameter| parameter.trim().strip_prefix("q=").or_else(|| parameter.trim().strip_prefix("Q=")))
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .next()
            .unwrap_or(1.0);
        match coding.to_ascii_lowercase().as_str() {
            "br" => brotli = Some(q),
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    let brotli = brotli.or(any).unwrap_or(0.0);
    let gzip = gzip.or(any).unwrap_or(0.0);
    match (brotli > 0.0, gzip > 0.0) {
        (false, false) => None,
        _ if brotli >= gzip => Some(Coding::Brotli),
        _ => Some(Coding::Gzip),
    }
}

pub struct Compression;

impl<E: Endpoint> Middleware<E> for Compression {
    type Output = CompressionEndpoint<E>;

    fn transform(&self, inner: E) -> CompressionEndpoint<E> {
        CompressionEndpoint { inner }
    }
}

pub struct CompressionEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Endpoint for CompressionEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        let coding = request.header(header::ACCEPT_ENCODING).and_then(negotiate);
        let response = self.inner.call(request).await?.into_response();
        compress(response, coding).await
    }
}

/// Compresses `response` with `coding` when it is worth it. Boxed: the encoders' state is tens of
/// kilobytes, and a debug build reserves a future's size on the stack in every layer around it,
/// while the request is served, on top of the database's deep stack.
fn compress(mut response: Response, coding: Option<Coding>) -> BoxFuture<'static, poem::Result<Response>> {
    Box::pin(async move {
        let status = response.status();
        if response.headers().contains_key(header::CONTENT_ENCODING)
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Ok(response);
        }
        let body = response.take_body().into_vec().await?;
        if body.len() < MIN_BYTES {
            response.set_body(body);
            return Ok(response);
        }
        // Whatever this request accepted, a cache must not hand this answer to another that
        // accepts something else.
        response.headers_mut().append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        let Some(coding) = coding else {
            response.set_body(body);
            return Ok(response);
        };
        let mut compressed = Vec::with_capacity(body.len() / 4);
        // Brotli's fast levels already beat gzip's default on JSON, at gzip's speed.
        let read = match coding {
            Coding::Brotli => BrotliEncoder::with_quality(&body[..], Level::Precise(4)).read_to_end(&mut compressed).await,
            Coding::Gzip => GzipEncoder::with_quality(&body[..], Level::Default).read_to_end(&mut compressed).await,
        };
        read.map_err(poem::error::InternalServerError)?;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.name()));
        headers.remove(header::CONTENT_LENGTH);
        response.set_body(compressed);
        Ok(response)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values_and_prefers_brotli() {
        let cases = [
            ("gzip", Some(Coding::Gzip)),
            ("br", Some(Coding::Brotli)),
            ("gzip, deflate, br", Some(Coding::Brotli)),
            ("br;q=0.5, gzip", Some(Coding::Gzip)),
            ("br;q=0, gzip;q=0.1", Some(Coding::Gzip)),
            ("*", Some(Coding::Brotli)),
            ("*;q=0.5, br;q=0", Some(Coding::Gzip)),
            ("identity", None),
            ("deflate, zstd", None),
            ("gzip;q=0, br;q=0", None),
            ("GZIP ; q=1", Some(Coding::Gzip)),
            ("", None),
        ];
        for (header, expected) in cases {
            assert_eq!(negotiate(header), expected, "Accept-Encoding: {header}");
        }
    }
}
