//! Q1: a document's size, with its fragments expanded, is bounded before any work that can grow
//! faster than its text.
//!
//! async-graphql's own checks (recursion depth, query depth, complexity, several validation
//! rules) walk a document with every fragment spread expanded in place. A chain of fragments that
//! each spread the next one twice is 1 KB of text and expands to 2^30 selections, so those checks
//! ran for minutes before they refused it. This extension runs first, on the parsed document,
//! and counts what the document expands to in time proportional to its text: each fragment is
//! counted once and its count reused wherever it is spread. A document over the limit is refused
//! with QUERY_REJECTED before anything else looks at it. The check sits in the schema, so every
//! transport that executes GraphQL passes through it.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{Name, Pos, Positioned, Request, ServerResult};

use crate::error::{AppError, ErrorCode};

/// Installs the check with the server's limits.
pub struct QueryBudget {
    /// Most selections (fields, fragment spreads, inline fragments) a document may expand to.
    pub selections_max: u64,
    /// Deepest nesting of selection sets, fragment spreads counted as a level.
    pub nesting_max: usize,
}

impl ExtensionFactory for QueryBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryBudgetCheck { selections_max: self.selections_max, nesting_max: self.nesting_max })
    }
}

struct QueryBudgetCheck {
    selections_max: u64,
    nesting_max: usize,
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryBudgetCheck {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // The document is parsed here once and kept in the request for execution. A document that
        // does not parse is left to the engine, which reports the syntax error.
        if let Ok(document) = request.parsed_query() {
            expanded_selections(document, self.selections_max, self.nesting_max).map_err(|message| {
                async_graphql::Error::from(AppError::new(ErrorCode::QueryRejected, message)).into_server_error(Pos::default())
            })?;
        }
        next.run(ctx, request).await
    }
}

/// How many selections `document` holds once every fragment spread is replaced by its fragment,
/// or why it is refused: more than `selections_max`, nested deeper than `nesting_max`, or a
/// fragment that spreads itself.
pub fn expanded_selections(document: &ExecutableDocument, selections_max: u64, nesting_max: usize) -> Result<u64, String> {
    let mut count = Count { fragments: &document.fragments, counted: HashMap::new(), selections_max, nesting_max };
    let mut total: u64 = 0;
    for (_, operation) in document.operations.iter() {
        total += count.selection_set(&operation.node.selection_set.node, 0)?;
        if total > selections_max {
            return Err(count.too_many());
        }
    }
    Ok(total)
}

struct Count<'d> {
    fragments: &'d HashMap<Name, Positioned<FragmentDefinition>>,
    /// Each fragment's expanded count once known; `None` while it is being counted.
    counted: HashMap<&'d str, Option<u64>>,
    selections_max: u64,
    nesting_max: usize,
}

impl<'d> Count<'d> {
    /// Never returns more than `selections_max`: the sum is checked after every selection, so the
    /// counts stay small whatever the document.
    fn selection_set(&mut self, set: &'d SelectionSet, depth: usize) -> Result<u64, String> {
        if depth > self.nesting_max {
            return Err(format!("the query nests deeper than {} levels (fragments included)", self.nesting_max));
        }
        let mut total: u64 = 0;
        for selection in &set.items {
            let inner = match &selection.node {
                Selection::Field(field) => self.selection_set(&field.node.selection_set.node, depth + 1)?,
                Selection::InlineFragment(inline) => self.selection_set(&inline.node.selection_set.node, depth + 1)?,
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node, depth + 1)?,
            };
            total += 1 + inner;
            if total > self.selections_max {
                return Err(self.too_many());
            }
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &'d str, depth: usize) -> Result<u64, String> {
        match self.counted.get(name) {
            Some(Some(count)) => return Ok(*count),
            Some(None) => return Err(format!("the fragment {name} spreads itself")),
            None => {}
        }
        // An unknown fragment counts nothing here; validation reports it.
        let Some(fragment) = self.fragments.get(name) else { return Ok(0) };
        self.counted.insert(name, None);
        let count = self.selection_set(&fragment.node.selection_set.node, depth)?;
        self.counted.insert(name, Some(count));
        Ok(count)
    }

    fn too_many(&self) -> String {
        format!(
            "the query selects more than {} fields once its fragments are expanded; select fewer fields or spread fragments fewer times",
            self.selections_max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(query: &str) -> Result<u64, String> {
        expanded_selections(&async_graphql::parser::parse_query(query).unwrap(), 5_000, 32)
    }

    /// `query { ...F0 }` where each of `levels` fragments spreads the next one twice.
    fn doubling_chain(levels: usize) -> String {
        let mut query = "query { ...F0 }".to_owned();
        for level in 0..levels {
            query.push_str(&format!(" fragment F{level} on Query {{ ...F{next} ...F{next} }}", next = level + 1));
        }
        query.push_str(&format!(" fragment F{levels} on Query {{ viewer {{ tenant }} }}"));
        query
    }

    #[test]
    fn q1_counts_fragments_expanded() {
        assert_eq!(count("{ viewer { tenant role } }"), Ok(3));
        assert_eq!(count("{ ...A ...A } fragment A on Query { viewer { tenant } }"), Ok(6));
        assert_eq!(count("{ ... on Query { viewer { tenant } } }"), Ok(3));
        // F2 = 2 fields, F1 = 2 spreads + 2 x F2 = 6, F0 = 2 + 2 x F1 = 14, plus the spread of F0.
        assert_eq!(count(&doubling_chain(2)), Ok(15));
    }

    #[test]
    fn q1_refuses_a_doubling_chain_without_expanding_it() {
        // 2^20 selections, 22 levels deep: refused for its size.
        let refused = count(&doubling_chain(20)).unwrap_err();
        assert!(refused.contains("more than 5000"), "{refused}");
        // 2^30 selections, 32 levels deep: refused for its depth before its size.
        let refused = count(&doubling_chain(30)).unwrap_err();
        assert!(refused.contains("deeper than 32"), "{refused}");
    }

    #[test]
    fn q1_refuses_fragment_cycles_and_deep_nesting() {
        assert!(count("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").unwrap_err().contains("spreads itself"));
        let deep = format!("{{ {}x{} }}", "a { ".repeat(40), " }".repeat(40));
        assert!(count(&deep).unwrap_err().contains("deeper than 32"));
    }
}
