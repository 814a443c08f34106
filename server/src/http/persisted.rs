//! Automatic persisted queries, Apollo's protocol: a client sends the SHA-256 of its query in
//! `extensions.persistedQuery` instead of the query; when Settle does not know the hash it answers
//! PersistedQueryNotFound and the client sends query and hash once, which registers the query.
//!
//! Queries are kept as text, in memory, in a least-recently-used cache of a configured number of
//! entries (each at most `query_length_max_bytes`), shared by all tenants: a query's text holds no
//! tenant data. A restart or an eviction costs a client one extra round trip. The text found by
//! hash takes the same path as a query sent in full: the GET-is-not-for-mutations check, the
//! length limit and the schema's budget.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::error::{AppError, ErrorCode};

/// The message Apollo clients look for (with the code PERSISTED_QUERY_NOT_FOUND) before they
/// send the query in full.
pub const NOT_FOUND_MESSAGE: &str = "PersistedQueryNotFound";

pub struct PersistedQueries {
    cache: Mutex<LruCache<String, Arc<str>>>,
}

/// A query sent with its hash, to keep once it has run without being refused.
#[derive(Debug)]
pub struct ToRegister {
    hash: String,
    query: Arc<str>,
}

impl PersistedQueries {
    pub fn new(capacity: NonZeroUsize) -> PersistedQueries {
        PersistedQueries { cache: Mutex::new(LruCache::new(capacity)) }
    }

    /// Applies the protocol to `request`. Without `extensions.persistedQuery` nothing changes.
    /// With a hash alone, the query is filled in from the cache, or the answer is
    /// PERSISTED_QUERY_NOT_FOUND. With query and hash, the hash must be the query's; the query is
    /// returned to be registered once it has run (a document that is refused is not kept).
    pub fn resolve(&self, request: &mut async_graphql::Request) -> Result<Option<ToRegister>, AppError> {
        let Some(extension) = request.extensions.get("persistedQuery") else { return Ok(None) };
        let hash = parse_extension(&extension.clone().into_json().unwrap_or_default())?;
        if request.query.is_empty() {
            let found = self.cache.lock().expect("the persisted query cache").get(&hash).cloned();
            return match found {
                Some(query) => {
                    request.query = query.to_string();
                    Ok(None)
                }
                None => Err(AppError::new(ErrorCode::PersistedQueryNotFound, NOT_FOUND_MESSAGE)),
            };
        }
        let actual = hex::encode(Sha256::digest(request.query.as_bytes()));
        if actual != hash {
            return Err(AppError::new(
                ErrorCode::QueryRejected,
                format!("extensions.persistedQuery.sha256Hash is not the SHA-256 of the query, which is {actual}"),
            ));
        }
        Ok(Some(ToRegister { hash, query: request.query.as_str().into() }))
    }

    pub fn register(&self, query: ToRegister) {
        self.cache.lock().expect("the persisted query cache").put(query.hash, query.query);
    }
}

/// The hash of a `persistedQuery` extension: `{"version": 1, "sha256Hash": "<64 hex digits>"}`.
fn parse_extension(extension: &serde_json::Value) -> Result<String, AppError> {
    let rejected = |message: &str| AppError::new(ErrorCode::QueryRejected, message);
    if extension.get("version").and_then(serde_json::Value::as_i64) != Some(1) {
        return Err(rejected("extensions.persistedQuery.version must be 1"));
    }
    let hash = extension
        .get("sha256Hash")
        .and_then(serde_json::Value::as_str)
        .filter(|hash| hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| rejected("extensions.persistedQuery.sha256Hash must be the SHA-256 of the query in 64 hex digits"))?;
    Ok(hash.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, extension: serde_json::Value) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(query);
        request.extensions.insert("persistedQuery".into(), async_graphql::Value::from_json(extension).unwrap());
        request
    }

    const QUERY: &str = "{ viewer { tenant } }";

    fn hash() -> String {
        hex::encode(Sha256::digest(QUERY.as_bytes()))
    }

    #[test]
    fn a_query_registers_under_its_hash_and_the_least_recently_used_is_forgotten() {
        let cache = PersistedQueries::new(NonZeroUsize::new(1).unwrap());
        let by_hash = || request("", serde_json::json!({"version": 1, "sha256Hash": hash()}));
        assert_eq!(cache.resolve(&mut by_hash()).unwrap_err().code, ErrorCode::PersistedQueryNotFound);
        let to_register = cache.resolve(&mut request(QUERY, serde_json::json!({"version": 1, "sha256Hash": hash()}))).unwrap();
        cache.register(to_register.expect("a query to register"));
        let mut found = by_hash();
        assert!(cache.resolve(&mut found).unwrap().is_none());
        assert_eq!(found.query, QUERY);
        // An uppercase hash names the same query.
        let mut upper = request("", serde_json::json!({"version": 1, "sha256Hash": hash().to_uppercase()}));
        cache.resolve(&mut upper).unwrap();
        assert_eq!(upper.query, QUERY);
        let other = "{ limits { pageSizeMax } }";
        let other_hash = hex::encode(Sha256::digest(other.as_bytes()));
        let to_register = cache.resolve(&mut request(other, serde_json::json!({"version": 1, "sha256Hash": other_hash}))).unwrap();
        cache.register(to_register.unwrap());
        assert_eq!(cache.resolve(&mut by_hash()).unwrap_err().code, ErrorCode::PersistedQueryNotFound);
    }

    #[test]
    fn a_wrong_hash_or_extension_is_refused() {
        let cache = PersistedQueries::new(NonZeroUsize::new(8).unwrap());
        let cases = [
            (QUERY, serde_json::json!({"version": 1, "sha256Hash": "0".repeat(64)}), "not the SHA-256 of the query"),
            (QUERY, serde_json::json!({"version": 2, "sha256Hash": hash()}), "version must be 1"),
            ("", serde_json::json!({"version": 1, "sha256Hash": "abc"}), "64 hex digits"),
            ("", serde_json::json!({"version": 1}), "64 hex digits"),
            ("", serde_json::json!("yes"), "version must be 1"),
        ];
        for (query, extension, expected) in cases {
            let error = cache.resolve(&mut request(query, extension.clone())).unwrap_err();
            assert_eq!(error.code, ErrorCode::QueryRejected, "{extension}");
            assert!(error.message.contains(expected), "{extension}: {}", error.message);
        }
    }
}
