//! Q1: a document's size and depth, with its fragments expanded, are bounded before any work that
//! can grow faster than its text.
//!
//! async-graphql's own checks (recursion depth, complexity, several validation rules) walk a
//! document with every fragment spread expanded in place. A chain of fragments that each spread
//! the next one twice is 1 KB of text and expands to 2^30 selections, so those checks ran for
//! minutes before they refused it. This extension runs first, on the parsed document, and measures
//! what the document expands to in time proportional to its text: each fragment is measured once
//! and its measure reused wherever it is spread. A document over a limit is refused with
//! QUERY_REJECTED before anything else looks at it. The check sits in the schema, so every
//! transport that executes GraphQL passes through it.
//!
//! Depth is measured here too, in two parts, because the introspection query every GraphQL tool
//! sends (graphql-js's `getIntrospectionQuery`, graphql-core's, Apollo Rover's) nests `ofType`
//! nine levels deep inside `__schema { types { fields { args { type ... } } } }`: 15 fields deep,
//! deeper than any query of Settle's own types needs. So:
//! - the fields of Settle's own types are held to the server's `query_depth_max`;
//! - the fields under `__schema` and `__type` are held to bounds of their own, which depend only on
//!   the shape of the introspection types of the GraphQL spec, never on Settle's schema:
//!   [`INTROSPECTION_DEPTH_MAX`] fields deep and [`INTROSPECTION_LISTS_MAX`] lists inside one
//!   another. The lists are what make introspection expensive (`types` answers every type,
//!   `fields` every field of each, ...), while `ofType` answers one value; the standard queries
//!   nest three lists (`types { fields { args } }`), and
//!   `types { fields { type { fields { type { fields ... } } } } }` is refused at its fourth.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{Name, Pos, Positioned, Request, ServerResult};

use crate::error::{AppError, ErrorCode};

/// Deepest path under `__schema` or `__type`, in fields from the operation's root. The standard
/// introspection queries need 15; 20 leaves room for a tool that unwraps a few more `ofType`.
pub const INTROSPECTION_DEPTH_MAX: usize = 20;

/// Most introspection lists (`types`, `fields`, `args`, `inputFields`, `interfaces`,
/// `possibleTypes`, `enumValues`, `directives`) nested in one another. The standard queries need 3.
pub const INTROSPECTION_LISTS_MAX: usize = 3;

/// The fields of the spec's introspection types that answer a list of objects.
const INTROSPECTION_LISTS: [&str; 8] =
    ["types", "fields", "args", "inputFields", "interfaces", "possibleTypes", "enumValues", "directives"];

/// Installs the check with the server's limits.
pub struct QueryBudget {
    /// Most selections (fields, fragment spreads, inline fragments) a document may expand to.
    pub selections_max: u64,
    /// Deepest nesting of selection sets, fragment spreads counted as a level.
    pub nesting_max: usize,
    /// Deepest path of fields of Settle's own types (introspection has its own bounds).
    pub depth_max: usize,
}

impl ExtensionFactory for QueryBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryBudgetCheck { selections_max: self.selections_max, nesting_max: self.nesting_max, depth_max: self.depth_max })
    }
}

struct QueryBudgetCheck {
    selections_max: u64,
    nesting_max: usize,
    depth_max: usize,
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
            measure(document, self.selections_max, self.nesting_max)
                .and_then(|measure| measure.check(self.depth_max))
                .map_err(|message| {
                    async_graphql::Error::from(AppError::new(ErrorCode::QueryRejected, message)).into_server_error(Pos::default())
                })?;
        }
        next.run(ctx, request).await
    }
}

/// What a document (or a part of it) expands to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measure {
    /// Selections (fields, fragment spreads, inline fragments), fragments expanded.
    pub selections: u64,
    /// Deepest path of fields of Settle's own types, in fields.
    pub depth: usize,
    /// Deepest path through `__schema` or `__type`, in fields from the root; 0 without one.
    pub introspection_depth: usize,
    /// Most introspection lists nested in one another.
    pub introspection_lists: usize,
}

impl Measure {
    /// The measure of a selection set holding both `self` and `other`.
    fn beside(self, other: Measure) -> Measure {
        Measure {
            selections: self.selections + other.selections,
            depth: self.depth.max(other.depth),
            introspection_depth: self.introspection_depth.max(other.introspection_depth),
            introspection_lists: self.introspection_lists.max(other.introspection_lists),
        }
    }

    /// Why the document is refused for its depth, if it is.
    pub fn check(&self, depth_max: usize) -> Result<(), String> {
        if self.depth > depth_max {
            return Err(format!("the query nests fields {} deep; the limit is {depth_max} (see limits {{ queryDepthMax }})", self.depth));
        }
        if self.introspection_depth > INTROSPECTION_DEPTH_MAX {
            return Err(format!(
                "the introspection query nests fields {} deep; the limit is {INTROSPECTION_DEPTH_MAX}",
                self.introspection_depth
            ));
        }
        if self.introspection_lists > INTROSPECTION_LISTS_MAX {
            return Err(format!(
                "the introspection query nests {} lists (types, fields, args, ...) in one another; the limit is {INTROSPECTION_LISTS_MAX}",
                self.introspection_lists
            ));
        }
        Ok(())
    }
}

/// Whether a selection set holds fields of Settle's own types or of the introspection types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Api,
    Introspection,
}

/// What `document` holds once every fragment spread is replaced by its fragment, or why it is
/// refused: more than `selections_max` selections, nested deeper than `nesting_max`, or a fragment
/// that spreads itself.
pub fn measure(document: &ExecutableDocument, selections_max: u64, nesting_max: usize) -> Result<Measure, String> {
    let mut walk = Walk { fragments: &document.fragments, measured: HashMap::new(), selections_max, nesting_max };
    let mut total = Measure::default();
    for (_, operation) in document.operations.iter() {
        total = total.beside(walk.selection_set(&operation.node.selection_set.node, 0, Part::Api)?);
        if total.selections > selections_max {
            return Err(walk.too_many());
        }
    }
    Ok(total)
}

struct Walk<'d> {
    fragments: &'d HashMap<Name, Positioned<FragmentDefinition>>,
    /// Each fragment's measure in a part once known; `None` while it is being measured.
    measured: HashMap<(&'d str, Part), Option<Measure>>,
    selections_max: u64,
    nesting_max: usize,
}

impl<'d> Walk<'d> {
    /// Never counts more than `selections_max` selections: the sum is checked after every
    /// selection, so the counts stay small whatever the document.
    fn selection_set(&mut self, set: &'d SelectionSet, nesting: usize, part: Part) -> Result<Measure, String> {
        if nesting > self.nesting_max {
            return Err(format!("the query nests deeper than {} levels (fragments included)", self.nesting_max));
        }
        let mut total = Measure::default();
        for selection in &set.items {
            let measure = match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    let inner_part = if name == "__schema" || name == "__type" { Part::Introspection } else { part };
                    let inner = self.selection_set(&field.node.selection_set.node, nesting + 1, inner_part)?;
                    field_measure(name, part, inner_part, inner)
                }
                Selection::InlineFragment(inline) => self.selection_set(&inline.node.selection_set.node, nesting + 1, part)?,
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node, nesting + 1, part)?,
            };
            total = total.beside(Measure { selections: 1 + measure.selections, ..measure });
            if total.selections > self.selections_max {
                return Err(self.too_many());
            }
        }
        Ok(total)
    }

    fn fragment(&mut self, name: &'d str, nesting: usize, part: Part) -> Result<Measure, String> {
        match self.measured.get(&(name, part)) {
            Some(Some(measure)) => return Ok(*measure),
            Some(None) => return Err(format!("the fragment {name} spreads itself")),
            None => {}
        }
        // An unknown fragment counts nothing here; validation reports it.
        let Some(fragment) = self.fragments.get(name) else { return Ok(Measure::default()) };
        self.measured.insert((name, part), None);
        let measure = self.selection_set(&fragment.node.selection_set.node, nesting, part)?;
        self.measured.insert((name, part), Some(measure));
        Ok(measure)
    }

    fn too_many(&self) -> String {
        format!(
            "the query selects more than {} fields once its fragments are expanded; select fewer fields or spread fragments fewer times",
            self.selections_max
        )
    }
}

/// The measure of one field named `name` in `part`, whose selection set (in `inner_part`)
/// measured `inner`, not counting the field's own selection.
fn field_measure(name: &str, part: Part, inner_part: Part, inner: Measure) -> Measure {
    let selections = inner.selections;
    match (part, inner_part) {
        (Part::Api, Part::Api) => Measure {
            selections,
            depth: 1 + inner.depth,
            introspection_depth: if inner.introspection_depth > 0 { 1 + inner.introspection_depth } else { 0 },
            introspection_lists: inner.introspection_lists,
        },
        // `__schema` or `__type`: everything below is introspection.
        (Part::Api, Part::Introspection) => Measure {
            selections,
            depth: 0,
            introspection_depth: 1 + inner.introspection_depth,
            introspection_lists: inner.introspection_lists,
        },
        (Part::Introspection, _) => Measure {
            selections,
            depth: 0,
            introspection_depth: 1 + inner.introspection_depth,
            introspection_lists: inner.introspection_lists + usize::from(INTROSPECTION_LISTS.contains(&name)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(query: &str) -> Result<Measure, String> {
        measure(&async_graphql::parser::parse_query(query).unwrap(), 5_000, 32)
    }

    fn count(query: &str) -> Result<u64, String> {
        measured(query).map(|measure| measure.selections)
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

    #[test]
    fn q1_measures_depth_of_the_api_and_of_introspection_apart() {
        let measure = measured("{ invoices { edges { node { client { name } } } } }").unwrap();
        assert_eq!((measure.depth, measure.introspection_depth), (5, 0));
        // Fragments and inline fragments add no depth; a fragment's fields do.
        let measure = measured("{ invoices { ...E } } fragment E on InvoiceConnection { edges { ... on InvoiceEdge { node { id } } } }").unwrap();
        assert_eq!(measure.depth, 4);
        let measure = measured("{ __typename viewer { tenant } __schema { types { fields { type { ofType { name } } } } } }").unwrap();
        assert_eq!((measure.depth, measure.introspection_depth, measure.introspection_lists), (2, 6, 2));
        // The same fragment spread inside and outside introspection is measured in each part.
        let measure = measured("{ __type(name: \"Query\") { ...T } } fragment T on __Type { fields { name } interfaces { name } }").unwrap();
        assert_eq!((measure.depth, measure.introspection_depth, measure.introspection_lists), (0, 3, 1));
    }

    #[test]
    fn q1_introspection_has_bounds_of_its_own() {
        let of_type = |levels: usize| format!("{{ __type(name: \"Query\") {{ {}name{} }} }}", "ofType { ".repeat(levels), " }".repeat(levels));
        assert_eq!(measured(&of_type(18)).unwrap().check(12), Ok(()));
        let refused = measured(&of_type(19)).unwrap().check(12).unwrap_err();
        assert!(refused.contains("nests fields 21 deep; the limit is 20"), "{refused}");
        let lists = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        let refused = measured(lists).unwrap().check(12).unwrap_err();
        assert!(refused.contains("nests 4 lists"), "{refused}");
        let refused = measured("{ a { b { c { d } } } }").unwrap().check(3).unwrap_err();
        assert!(refused.contains("nests fields 4 deep; the limit is 3"), "{refused}");
    }
}
