//! CORS: lets a browser page from one of the configured origins call Settle.
//!
//! Off unless origins are configured (`--cors-allowed-origins`): then no response carries an
//! Access-Control-* header and browsers keep pages of other origins out. When on, a request from
//! an allowed origin is answered with that origin in Access-Control-Allow-Origin, and its
//! preflight (OPTIONS with Access-Control-Request-Method) with 204 and what Settle takes: GET and
//! POST, and the headers Settle reads. A request from another origin is served as if CORS were off
//! (no Access-Control-* header, so the browser does not hand the answer to the page); it is not
//! refused, because CORS guards browsers, not the server: a token is what authorizes a request.
//!
//! Settle authenticates with a bearer token, never a cookie, so credentials are not allowed
//! (no Access-Control-Allow-Credentials). poem's own `Cors` refuses (403) every request whose
//! Origin is not listed, which would also refuse Settle's own GraphiQL page when served under
//! another address, and leaves out `Vary: Origin` for listed origins, which lets a cache serve one
//! origin's answer to another; hence this small middleware.

use std::sync::Arc;

use poem::http::header::{self, HeaderValue};
use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// The request headers Settle reads, as a preflight answers them.
const ALLOW_HEADERS: &str = "authorization, content-type, x-request-id";

/// How long a browser may keep a preflight's answer, in seconds (Chrome keeps at most 7200).
const MAX_AGE_SECONDS: &str = "7200";

pub struct Cors {
    allowed_origins: Arc<[String]>,
}

impl Cors {
    /// `allowed_origins` as `scheme://host[:port]`, lowercase (see `config::parse_origin`);
    /// none turns CORS off.
    pub fn new(allowed_origins: &[String]) -> Cors {
        Cors { allowed_origins: allowed_origins.into() }
    }
}

impl<E: Endpoint> Middleware<E> for Cors {
    type Output = CorsEndpoint<E>;

    fn transform(&self, inner: E) -> CorsEndpoint<E> {
        CorsEndpoint { inner, allowed_origins: self.allowed_origins.clone() }
    }
}

pub struct CorsEndpoint<E> {
    inner: E,
    allowed_origins: Arc<[String]>,
}

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, request: Request) -> poem::Result<Response> {
        if self.allowed_origins.is_empty() {
            return self.inner.call(request).await.map(IntoResponse::into_response);
        }
        let allowed = request
            .header(header::ORIGIN)
            .filter(|origin| self.allowed_origins.iter().any(|allowed| allowed == origin))
            .and_then(|origin| HeaderValue::from_str(origin).ok());
        let preflight = request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if let (true, Some(origin)) = (preflight, &allowed) {
            return Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone())
                .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST")
                .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS)
                .header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECONDS)
                .header(header::VARY, "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
                .finish());
        }
        let mut response = self.inner.call(request).await?.into_response();
        let headers = response.headers_mut();
        // The answer depends on the Origin whenever CORS is on, whether or not this one is allowed.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-request-id"));
        }
        Ok(response)
    }
}
