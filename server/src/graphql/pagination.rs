//! Relay connections: `first`/`after` parsed once into a [`Page`], opaque cursors, totalCount.
//! Each subject declares the connection types of its nodes with [`connection_types`].

use async_graphql::SimpleObject;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{AppError, AppResult};

/// Page size when `first` is not given.
pub const PAGE_SIZE_DEFAULT: usize = 20;

/// A validated page request: how many rows, after which record key.
#[derive(Debug, Clone)]
pub struct Page {
    pub size: usize,
    pub after: Option<String>,
    table: &'static str,
}

impl Page {
    /// `first` must be 1..=page_size_max; `after` must be a cursor this server gave for `table`.
    pub fn parse(first: Option<i32>, after: Option<String>, table: &'static str, page_size_max: usize) -> AppResult<Page> {
        let size = match first {
            None => PAGE_SIZE_DEFAULT.min(page_size_max),
            Some(n) if n >= 1 && (n as usize) <= page_size_max => n as usize,
            Some(n) => {
                return Err(AppError::invalid(format!("first must be between 1 and {page_size_max}, not {n}")));
            }
        };
        let after = match after {
            None => None,
            Some(cursor) => Some(decode_cursor(&cursor, table)?),
        };
        Ok(Page { size, after, table })
    }

    /// Like [`Page::parse`] for a list whose cursors hold more than a record key (a list ordered
    /// by an amount keeps the amount and the key): `after` is the text the cursor was made from,
    /// for the list to read.
    pub fn parse_ordered(first: Option<i32>, after: Option<String>, table: &'static str, page_size_max: usize) -> AppResult<Page> {
        let page = Page::parse(first, None, table, page_size_max)?;
        let after = match after {
            None => None,
            Some(cursor) => Some(decode_cursor_text(&cursor, table)?),
        };
        Ok(Page { after, ..page })
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> usize {
        self.size + 1
    }

    /// Builds the connection from up to `fetch_limit` rows in order.
    pub fn connection<T: Connected>(&self, mut rows: Vec<(String, T)>, total_count: i64) -> T::Connection {
        let has_next_page = rows.len() > self.size;
        rows.truncate(self.size);
        let edges: Vec<(String, T)> =
            rows.into_iter().map(|(key, node)| (encode_cursor(self.table, &key), node)).collect();
        let page_info = PageInfo {
            has_next_page,
            has_previous_page: self.after.is_some(),
            start_cursor: edges.first().map(|(cursor, _)| cursor.clone()),
            end_cursor: edges.last().map(|(cursor, _)| cursor.clone()),
        };
        T::connection(edges, page_info, total_count)
    }
}

/// Whether the client asked for `totalCount`: counting reads every matching record, so lists
/// that can page without reading everything count only when asked.
pub fn wants_total(ctx: &async_graphql::Context<'_>) -> bool {
    ctx.look_ahead().field("totalCount").exists()
}

fn encode_cursor(table: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{table}:{key}"))
}

fn decode_cursor(cursor: &str, table: &str) -> AppResult<String> {
    let key = decode_cursor_text(cursor, table)?;
    uuid::Uuid::parse_str(&key).map_err(|_| AppError::invalid("after is not a cursor from this list"))?;
    Ok(key)
}

fn decode_cursor_text(cursor: &str, table: &str) -> AppResult<String> {
    let invalid = || AppError::invalid("after is not a cursor from this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor.as_bytes()).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let key = text.strip_prefix(table).and_then(|rest| rest.strip_prefix(':')).ok_or_else(invalid)?;
    Ok(key.to_owned())
}

#[derive(SimpleObject)]
pub struct PageInfo {
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
    pub end_cursor: Option<String>,
}

/// A page of nodes of one type, as Relay connections have it.
pub trait Connected: Sized {
    type Connection;
    fn connection(edges: Vec<(String, Self)>, page_info: PageInfo, total_count: i64) -> Self::Connection;
}

/// Declares the connection and edge types of one node type.
macro_rules! connection_types {
    ($node:ty, $connection:ident, $edge:ident) => {
        #[derive(async_graphql::SimpleObject)]
        pub struct $edge {
            pub cursor: String,
            pub node: $node,
        }

        #[derive(async_graphql::SimpleObject)]
        pub struct $connection {
            pub edges: Vec<$edge>,
            pub page_info: $crate::graphql::pagination::PageInfo,
            /// How many records match, across all pages.
            pub total_count: i64,
        }

        impl $crate::graphql::pagination::Connected for $node {
            type Connection = $connection;
            fn connection(
                edges: Vec<(String, Self)>,
                page_info: $crate::graphql::pagination::PageInfo,
                total_count: i64,
            ) -> $connection {
                let edges = edges.into_iter().map(|(cursor, node)| $edge { cursor, node }).collect();
                $connection { edges, page_info, total_count }
            }
        }
    };
}

pub(crate) use connection_types;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_tables() {
        let key = uuid::Uuid::now_v7().to_string();
        let cursor = encode_cursor("invoice", &key);
        assert_eq!(decode_cursor(&cursor, "invoice").unwrap(), key);
        assert!(decode_cursor(&cursor, "client").is_err());
        assert!(decode_cursor("not base64!", "invoice").is_err());
    }

    #[test]
    fn page_size_is_bounded() {
        assert!(Page::parse(Some(0), None, "invoice", 100).is_err());
        assert!(Page::parse(Some(101), None, "invoice", 100).is_err());
        assert_eq!(Page::parse(None, None, "invoice", 100).unwrap().size, PAGE_SIZE_DEFAULT);
    }
}
