//! What a GraphQL document may cost, under `api.graphqlLimits`: checked on every
//! query and subscription before async-graphql parses, validates or runs it, and
//! by the compiler on the documents of a safelist.
//!
//! The checks run in time linear in the document: its text is measured before it
//! is parsed (the parser recurses over nesting), and each fragment's cost is
//! computed once however often it is spread, so a document spreading fragments
//! 2^20 times is refused in microseconds instead of being expanded.

use std::collections::HashMap;

use async_graphql_parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql_parser::Positioned;
use async_graphql_value::{Name, Value};

use super::types::GraphqlLimits;

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Nesting of brackets a document may have before it is parsed: more than any
/// document within the depth limit needs (selections, arguments, lists, objects).
const MAX_TEXT_NESTING: usize = 128;

/// Checks the text of a document before it is parsed.
pub fn check_text(query: &str, limits: &GraphqlLimits) -> Result<(), Refused> {
    let max = limits.max_document_bytes as usize;
    if query.len() > max {
        return Err(Refused(format!(
            "the document is {} bytes; at most {max} are allowed",
            query.len()
        )));
    }
    if text_nesting(query) > MAX_TEXT_NESTING {
        return Err(Refused(format!(
            "the document nests brackets deeper than {MAX_TEXT_NESTING}"
        )));
    }
    Ok(())
}

/// The deepest nesting of `{`, `(` and `[` outside strings and comments.
fn text_nesting(query: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        match c {
            '{' | '(' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ')' | ']' => depth = depth.saturating_sub(1),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                // Block strings (`"""`) are skipped as ordinary strings that
                // happen to be empty around them: brackets inside are ignored.
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// Rows a list field (`<projection>List`) returns without `first`, and at most.
pub const DEFAULT_PAGE: u64 = 100;
pub const MAX_PAGE: u64 = 1000;

/// What an operation selects once its fragments are expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Fields it may resolve: a list's selection counts once per row of its page
    /// (`first`, or [`DEFAULT_PAGE`]; a variable counts as [`MAX_PAGE`]), each
    /// spread of a fragment counts its fields again.
    pub fields: u64,
    /// Aliased fields, counted the same way.
    pub aliases: u64,
    /// The deepest nesting of selections (`{ a { b } }` is 2).
    pub depth: u64,
}

impl Cost {
    fn add(self, other: Cost) -> Cost {
        Cost {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
            depth: self.depth.max(other.depth),
        }
    }
}

/// The cost of the costliest operation of a parsed document.
pub fn cost(document: &ExecutableDocument) -> Cost {
    let mut costs = FragmentCosts {
        document,
        known: HashMap::new(),
        visiting: Vec::new(),
    };
    document
        .operations
        .iter()
        .map(|(_, operation)| costs.of_set(&operation.node.selection_set))
        .fold(Cost::default(), |worst, cost| Cost {
            fields: worst.fields.max(cost.fields),
            aliases: worst.aliases.max(cost.aliases),
            depth: worst.depth.max(cost.depth),
        })
}

/// Checks a parsed document against the limits.
pub fn check_document(
    document: &ExecutableDocument,
    limits: &GraphqlLimits,
) -> Result<(), Refused> {
    let cost = cost(document);
    if cost.depth > u64::from(limits.max_depth) {
        return Err(Refused(format!(
            "the query nests {} levels deep; at most {} are allowed",
            cost.depth, limits.max_depth
        )));
    }
    if cost.fields > u64::from(limits.max_complexity) {
        return Err(Refused(format!(
            "the query may resolve {} fields (a list's fields once per row of its page, fragments each time they are spread); at most {} are allowed",
            cost.fields, limits.max_complexity
        )));
    }
    if cost.aliases > u64::from(limits.max_aliases) {
        return Err(Refused(format!(
            "the query has {} aliases; at most {} are allowed",
            cost.aliases, limits.max_aliases
        )));
    }
    Ok(())
}

/// Checks a document's text, parses it and checks what it selects.
pub fn check(query: &str, limits: &GraphqlLimits) -> Result<ExecutableDocument, Refused> {
    check_text(query, limits)?;
    let document = async_graphql_parser::parse_query(query)
        .map_err(|e| Refused(format!("the document does not parse: {e}")))?;
    check_document(&document, limits)?;
    Ok(document)
}

struct FragmentCosts<'a> {
    document: &'a ExecutableDocument,
    known: HashMap<&'a Name, Cost>,
    /// Fragments being costed, to stop at a cycle (which validation then refuses).
    visiting: Vec<&'a Name>,
}

impl<'a> FragmentCosts<'a> {
    fn of_set(&mut self, set: &'a Positioned<SelectionSet>) -> Cost {
        let mut total = Cost::default();
        for item in &set.node.items {
            let cost = match &item.node {
                Selection::Field(field) => {
                    let inner = self.of_set(&field.node.selection_set);
                    let rows = page_rows(&field.node);
                    Cost {
                        fields: inner.fields.saturating_mul(rows).saturating_add(1),
                        aliases: inner
                            .aliases
                            .saturating_add(u64::from(field.node.alias.is_some())),
                        depth: inner.depth + 1,
                    }
                }
                Selection::InlineFragment(inline) => self.of_set(&inline.node.selection_set),
                Selection::FragmentSpread(spread) => {
                    self.of_fragment(&spread.node.fragment_name.node)
                }
            };
            total = total.add(cost);
        }
        total
    }

    fn of_fragment(&mut self, name: &'a Name) -> Cost {
        if let Some(cost) = self.known.get(name) {
            return *cost;
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return Cost::default(); // unknown: validation names it
        };
        if self.visiting.contains(&name) {
            return Cost::default(); // a cycle: validation names it
        }
        self.visiting.push(name);
        let cost = self.of_set(&fragment.node.selection_set);
        self.visiting.pop();
        self.known.insert(name, cost);
        cost
    }
}

/// How many rows a field's selection is resolved for: a page's (a field with
/// `first`, or named as list fields are), else one.
fn page_rows(field: &Field) -> u64 {
    let first = field
        .arguments
        .iter()
        .find(|(name, _)| name.node.as_str() == "first")
        .map(|(_, value)| &value.node);
    match first {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1).clamp(1, MAX_PAGE),
        Some(_) => MAX_PAGE,
        None if field.name.node.ends_with("List") => DEFAULT_PAGE,
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GraphqlLimits {
        GraphqlLimits::default()
    }

    #[test]
    fn counts_fields_aliases_and_depth_through_fragments() {
        let document = async_graphql_parser::parse_query(
            "query { a: orderList(first: 10) { items { ...F ...F } } b: order(key: \"1\") { id } }
             fragment F on Order { id status }",
        )
        .unwrap();
        assert_eq!(
            cost(&document),
            Cost {
                fields: 1 + 10 * (1 + 4) + 2,
                aliases: 2,
                depth: 3
            }
        );
    }

    /// Regression (issue 24): `first` did not count, so 30 aliases of
    /// `first: 1000` passed a limit of 500 fields.
    #[test]
    fn a_list_counts_its_selection_once_per_row_of_its_page() {
        let cost_of = |q: &str| cost(&async_graphql_parser::parse_query(q).unwrap()).fields;
        assert_eq!(
            cost_of("{ orderList { items { id } } }"),
            1 + DEFAULT_PAGE * 2
        );
        assert_eq!(
            cost_of("{ orderList(first: 1000) { items { id } } }"),
            1 + 1000 * 2
        );
        assert_eq!(
            cost_of("{ orderList(first: 5000) { items { id } } }"),
            1 + 1000 * 2
        );
        assert_eq!(
            cost_of("query($n: Int) { orderList(first: $n) { items { id } } }"),
            1 + MAX_PAGE * 2
        );
        let aliases: String = (0..30)
            .map(|i| format!("a{i}: orderList(first: 1000) {{ items {{ id }} }} "))
            .collect();
        let refused = check(&format!("{{ {aliases} }}"), &limits()).unwrap_err();
        assert!(
            refused.0.starts_with("the query may resolve 60030 fields"),
            "{refused}"
        );
    }

    #[test]
    fn a_fragment_bomb_is_costed_without_being_expanded() {
        // F0 spreads F1 twice, F1 spreads F2 twice...: 2^40 fields once expanded.
        let mut query = String::from("query { orderList { items { ...F0 } } }\n");
        for i in 0..40 {
            query += &format!("fragment F{i} on Order {{ ...F{} ...F{} }}\n", i + 1, i + 1);
        }
        query += "fragment F40 on Order { id }\n";
        let started = std::time::Instant::now();
        let refused = check(&query, &limits()).unwrap_err();
        assert_eq!(
            refused.0,
            format!(
                "the query may resolve {} fields (a list's fields once per row of its page, fragments each time they are spread); at most {} are allowed",
                1 + DEFAULT_PAGE * ((1u64 << 40) + 1),
                limits().max_complexity
            )
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn text_is_bounded_before_parsing() {
        let deep = format!("{}{}", "{a".repeat(200), "}".repeat(200));
        assert_eq!(
            check_text(&deep, &limits()).unwrap_err().0,
            "the document nests brackets deeper than 128"
        );
        // Brackets in strings and comments do not count.
        let quoted = format!("{{ a(s: \"{}\") }} # {}", "{".repeat(300), "[".repeat(300));
        assert_eq!(check_text(&quoted, &limits()), Ok(()));
        let long = "#".repeat(limits().max_document_bytes as usize + 1);
        assert!(check_text(&long, &limits())
            .unwrap_err()
            .0
            .starts_with("the document is "));
    }

    #[test]
    fn cycles_and_unknown_fragments_are_left_to_validation() {
        let document = async_graphql_parser::parse_query(
            "{ a { ...A ...Missing } } fragment A on T { b ...B } fragment B on T { ...A }",
        )
        .unwrap();
        assert_eq!(cost(&document).fields, 2);
    }
}
