//! Which events a trigger receives, with Knative's semantics, plus CESQL and JSONPath.
//!
//! Filters run on the fanout's and the workers' async threads, so each one's work is bounded
//! whatever a client declared: CESQL by its parse limits and evaluation budget
//! (`switchyard_cesql::MAX_*`), JSONPath by the limits below, checked when the trigger is
//! declared, and a work budget per evaluation. An evaluation that runs out of budget does not
//! match, like any other evaluation error, and is counted in [`FILTER_BUDGET_EXHAUSTED`].

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use jsonpath_rust::parser::model as jp;
use switchyard_event::Event;
use switchyard_meta::resources::{AttributesFilter, SubscriptionsFilter};
use switchyard_meta::ValidationError;

/// Filter evaluations stopped by their work budget, by `dialect` (`cesql`, `jsonpath`): the
/// event did not match.
pub const FILTER_BUDGET_EXHAUSTED: &str = "switchyard_filter_budget_exhausted_total";

fn budget_exhausted(dialect: &'static str) {
    metrics::counter!(FILTER_BUDGET_EXHAUSTED, "dialect" => dialect).increment(1);
}

/// An event under evaluation, with its JSON form built at most once, and only if a JSONPath
/// filter asks for it.
pub struct EventView<'a> {
    event: &'a Event,
    json: OnceCell<serde_json::Value>,
}

impl<'a> EventView<'a> {
    /// A view of `event`.
    pub fn new(event: &'a Event) -> EventView<'a> {
        EventView { event, json: OnceCell::new() }
    }

    /// The event's JSON form (JSON event format): attributes, and `data` parsed as JSON when
    /// its content type is JSON (a string for text, `data_base64` for bytes). Data nested
    /// deeper than serde_json's recursion limit (128) does not parse, and is `data_base64`.
    fn json(&self) -> &serde_json::Value {
        self.json.get_or_init(|| switchyard_event::json::to_value(self.event))
    }
}

/// A compiled trigger filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every event passes (no filter declared).
    All,
    /// Knative `filter.attributes`: every pair must hold. An empty expected value means "the
    /// attribute is present and non-empty"; otherwise equality, case-sensitive.
    Attributes(Vec<(String, String)>),
    /// Subscriptions API `exact`: every attribute equals its value.
    Exact(Vec<(String, String)>),
    /// Subscriptions API `prefix`: every attribute starts with its value.
    Prefix(Vec<(String, String)>),
    /// Subscriptions API `suffix`: every attribute ends with its value.
    Suffix(Vec<(String, String)>),
    /// Subscriptions API `all`: every nested filter passes (an empty list passes).
    AllOf(Vec<Filter>),
    /// Subscriptions API `any`: some nested filter passes (an empty list passes, as in
    /// Knative, where an empty `any` yields "no filter").
    AnyOf(Vec<Filter>),
    /// Subscriptions API `not`.
    Not(Box<Filter>),
    /// Subscriptions API `cesql`: passes when the expression evaluates to true without error.
    Cesql(Arc<switchyard_cesql::Expression>),
    /// Switchyard's `jsonpath`: passes when the query selects at least one node of the event's
    /// JSON form.
    JsonPath(Arc<JsonPath>),
}

impl Filter {
    /// Compiles a trigger's `filter` and `filters` (field names under `prefix`, e.g. `spec.`),
    /// checking them on the way: attribute names, one dialect per element, parseable CESQL and
    /// JSONPath. Knative: a non-empty `filters` overrides `filter`; an empty one does not.
    pub fn compile(
        filter: Option<&AttributesFilter>,
        filters: &[SubscriptionsFilter],
        prefix: &str,
    ) -> Result<Filter, ValidationError> {
        // Both are checked, even the one that does not apply, so a declaration never holds a
        // filter that would be refused on its own.
        let attributes = match filter {
            Some(filter) => {
                let field = format!("{prefix}filter.attributes");
                filter.attributes.keys().try_for_each(|key| check_attribute_name(&field, key))?;
                pairs(&filter.attributes)
            }
            None => Vec::new(),
        };
        let subscriptions = filters
            .iter()
            .enumerate()
            .map(|(i, filter)| compile_subscriptions_filter(filter, &format!("{prefix}filters[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(if !subscriptions.is_empty() {
            Filter::AllOf(subscriptions)
        } else if !attributes.is_empty() {
            Filter::Attributes(attributes)
        } else {
            Filter::All
        })
    }

    /// Whether `event` passes. Names resolve to context attributes, then extensions (they share
    /// one namespace in the event); non-string values compare by their canonical string.
    pub fn matches(&self, event: &Event) -> bool {
        self.evaluate(&EventView::new(event), &mut None)
    }

    /// Whether `event` passes, and the errors met on the way (a CESQL evaluation error, a
    /// JSONPath query that failed), for the filter-test API.
    pub fn explain(&self, event: &Event) -> (bool, Vec<String>) {
        let mut errors = Some(Vec::new());
        let matched = self.evaluate(&EventView::new(event), &mut errors);
        (matched, errors.unwrap_or_default())
    }

    /// Evaluates against a shared view, so that several filters parse `data` at most once.
    pub fn evaluate(&self, view: &EventView<'_>, errors: &mut Option<Vec<String>>) -> bool {
        let event = view.event;
        match self {
            Filter::All => true,
            Filter::Attributes(pairs) => pairs.iter().all(|(name, expected)| match event.get(name) {
                None => false,
                Some(value) if expected.is_empty() => !value.to_canonical_string().is_empty(),
                Some(value) => value.to_canonical_string() == expected.as_str(),
            }),
            Filter::Exact(pairs) => compare(event, pairs, |value, expected| value == expected),
            Filter::Prefix(pairs) => compare(event, pairs, |value, expected| value.starts_with(expected)),
            Filter::Suffix(pairs) => compare(event, pairs, |value, expected| value.ends_with(expected)),
            Filter::AllOf(filters) => filters.iter().all(|f| f.evaluate(view, errors)),
            Filter::AnyOf(filters) => filters.is_empty() || filters.iter().any(|f| f.evaluate(view, errors)),
            Filter::Not(filter) => !filter.evaluate(view, errors),
            Filter::Cesql(expression) => match errors {
                // Fail-fast (CESQL §4): any error means the event does not pass.
                None => expression.matches_within_budget(event).unwrap_or_else(|_| {
                    budget_exhausted("cesql");
                    false
                }),
                Some(errors) => match expression.evaluate(event) {
                    Ok(switchyard_cesql::Value::Boolean(result)) => result,
                    // CESQL v1.0 §1.2: only a Boolean true passes.
                    Ok(other) => {
                        errors.push(format!("cesql: the expression yields {other}, not a boolean"));
                        false
                    }
                    Err(error) => {
                        errors.push(format!("cesql {} error: {}", error.kind.as_str(), error.message));
                        false
                    }
                },
            },
            Filter::JsonPath(query) => match query.matches(view.json()) {
                Ok(matched) => matched,
                Err(exhausted) => {
                    budget_exhausted("jsonpath");
                    if let Some(errors) = errors {
                        errors.push(format!("jsonpath: {exhausted}"));
                    }
                    false
                }
            },
        }
    }
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Knative: filter keys match `^[a-z][a-z0-9]*$`.
fn check_attribute_name(field: &str, key: &str) -> Result<(), ValidationError> {
    let mut bytes = key.bytes();
    let valid = matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ValidationError::field(field, format!("invalid attribute name '{key}': must match ^[a-z][a-z0-9]*$")))
    }
}

fn compile_subscriptions_filter(filter: &SubscriptionsFilter, field: &str) -> Result<Filter, ValidationError> {
    let attributes = |map: &BTreeMap<String, String>| {
        if map.is_empty() {
            return Err(ValidationError::field(field, "needs at least one attribute".to_owned()));
        }
        map.keys().try_for_each(|key| check_attribute_name(field, key))?;
        Ok(pairs(map))
    };
    let nested = |filters: &[SubscriptionsFilter]| {
        filters
            .iter()
            .enumerate()
            .map(|(i, nested)| compile_subscriptions_filter(nested, &format!("{field}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(match filter {
        SubscriptionsFilter::Exact(map) => Filter::Exact(attributes(map)?),
        SubscriptionsFilter::Prefix(map) => Filter::Prefix(attributes(map)?),
        SubscriptionsFilter::Suffix(map) => Filter::Suffix(attributes(map)?),
        SubscriptionsFilter::All(filters) => Filter::AllOf(nested(filters)?),
        SubscriptionsFilter::Any(filters) => Filter::AnyOf(nested(filters)?),
        SubscriptionsFilter::Not(filter) => {
            Filter::Not(Box::new(compile_subscriptions_filter(filter, &format!("{field}.not"))?))
        }
        SubscriptionsFilter::Cesql(expression) => Filter::Cesql(Arc::new(
            switchyard_cesql::parse(expression)
                .map_err(|e| ValidationError::field(field, format!("invalid CESQL expression '{expression}': {e}")))?,
        )),
        SubscriptionsFilter::Jsonpath(query) => Filter::JsonPath(Arc::new(
            JsonPath::compile(query)
                .map_err(|e| ValidationError::field(field, format!("invalid JSONPath query '{query}': {e}")))?,
        )),
    })
}

fn compare(event: &Event, pairs: &[(String, String)], test: impl Fn(&str, &str) -> bool) -> bool {
    pairs
        .iter()
        .all(|(name, expected)| event.get(name).is_some_and(|value| test(&value.to_canonical_string(), expected)))
}

/// The longest JSONPath query a filter may have, in characters.
pub const MAX_JSONPATH_CHARS: usize = 1024;

/// The most descendant segments (`..`) a JSONPath query may have, counting those of the queries
/// inside its filters: each one can multiply the nodes under consideration by the size of the
/// document.
pub const MAX_JSONPATH_DESCENDANTS: usize = 2;

/// The deepest nesting of brackets and parentheses in a JSONPath query, checked before the
/// (recursive) parser sees it.
pub const MAX_JSONPATH_NESTING: usize = 16;

/// The steps one JSONPath evaluation may take: a node visited, selected or compared, 16 bytes
/// of a string measured or matched, a regular expression run (20 steps). A step is about 10 ns,
/// so this is about a millisecond: enough for a filter over an array of ~20,000 objects.
/// Running out counts as no match, with an error.
pub const MAX_JSONPATH_WORK: u64 = 100_000;

/// The largest compiled regular expression of `match()` and `search()`.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// A JSONPath evaluation ran out of its work budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonPathBudgetExhausted {
    /// The budget.
    pub budget: u64,
}

impl std::fmt::Display for JsonPathBudgetExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "evaluation exceeds the work budget of {} steps (jsonpath work budget)", self.budget)
    }
}

impl std::error::Error for JsonPathBudgetExhausted {}

/// A compiled JSONPath query (RFC 9535), evaluated for existence: the filter passes when the
/// query selects at least one node. Compiling bounds the query (length, descendant segments,
/// nesting) and evaluating bounds the work, so no query holds a thread for long on any event.
#[derive(Debug, Clone)]
pub struct JsonPath {
    query: Query,
}

#[derive(Debug, Clone)]
struct Query {
    /// `$…` rather than `@…`.
    absolute: bool,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone)]
struct Segment {
    /// `..[…]`: the selectors apply to the node and all its descendants.
    descendant: bool,
    selectors: Box<[Selector]>,
}

#[derive(Debug, Clone)]
enum Selector {
    Name(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    Filter(Logical),
}

#[derive(Debug, Clone)]
enum Logical {
    Or(Box<[Logical]>),
    And(Box<[Logical]>),
    Not(Box<Logical>),
    /// A test query: true when it selects a node.
    Exists(Query),
    /// A test query of names and indices only: true when it names a node.
    ExistsSingular(Operand),
    Compare(CompareOp, Operand, Operand),
    /// `match()` (anchored) and `search()`, with the pattern compiled at declaration.
    Regex(Operand, regex::Regex),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A value in a filter: a JSON value or Nothing.
#[derive(Debug, Clone)]
enum Operand {
    Literal(serde_json::Value),
    /// A singular query: the node it names, if any.
    Singular {
        absolute: bool,
        path: Box<[Step]>,
    },
    /// `value(query)`, and a query passed where a value is expected: its node if it selects
    /// exactly one.
    Value(Query),
    Length(Box<Operand>),
    Count(Query),
}

#[derive(Debug, Clone)]
enum Step {
    Name(String),
    Index(i64),
}

impl JsonPath {
    /// Compiles `text`, refusing queries over the limits, and the functions whose work could
    /// not be bounded at declaration: unknown functions, and `match()`/`search()` whose pattern
    /// is not a string literal.
    pub fn compile(text: &str) -> Result<JsonPath, String> {
        let length = text.chars().count();
        if length > MAX_JSONPATH_CHARS {
            return Err(format!(
                "the query has {length} characters, above the limit of {MAX_JSONPATH_CHARS} (jsonpath query length)"
            ));
        }
        let nesting = bracket_nesting(text);
        if nesting > MAX_JSONPATH_NESTING {
            return Err(format!(
                "brackets and parentheses nest {nesting} deep, above the limit of {MAX_JSONPATH_NESTING} (jsonpath nesting)"
            ));
        }
        let parsed = jsonpath_rust::parser::parse_json_path(text).map_err(|e| e.to_string())?;
        let mut compiler = Compiler { descendants: 0 };
        let query = compiler.query(&parsed.segments, true)?;
        if compiler.descendants > MAX_JSONPATH_DESCENDANTS {
            return Err(format!(
                "the query has {} descendant segments ('..'), above the limit of {MAX_JSONPATH_DESCENDANTS} (jsonpath descendant segments)",
                compiler.descendants
            ));
        }
        Ok(JsonPath { query })
    }

    /// Whether the query selects at least one node of `document`.
    pub fn matches(&self, document: &serde_json::Value) -> Result<bool, JsonPathBudgetExhausted> {
        let mut run = Run { root: document, remaining: MAX_JSONPATH_WORK };
        match run.select(&self.query, document) {
            Ok(nodes) => Ok(!nodes.is_empty()),
            Err(Exhausted) => Err(JsonPathBudgetExhausted { budget: MAX_JSONPATH_WORK }),
        }
    }
}

/// The deepest run of open `(` and `[` outside string literals.
fn bracket_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if let Some(delimiter) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == delimiter {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Turns the parser's tree into ours, counting descendant segments.
struct Compiler {
    descendants: usize,
}

type Compiled<T> = Result<T, String>;

impl Compiler {
    fn query(&mut self, segments: &[jp::Segment], absolute: bool) -> Compiled<Query> {
        let segments = segments.iter().map(|s| self.segment(s)).collect::<Compiled<_>>()?;
        Ok(Query { absolute, segments })
    }

    fn segment(&mut self, segment: &jp::Segment) -> Compiled<Segment> {
        Ok(match segment {
            jp::Segment::Descendant(inner) => {
                self.descendants += 1;
                Segment { descendant: true, selectors: self.segment(inner)?.selectors }
            }
            jp::Segment::Selector(selector) => {
                Segment { descendant: false, selectors: Box::new([self.selector(selector)?]) }
            }
            jp::Segment::Selectors(selectors) => Segment {
                descendant: false,
                selectors: selectors.iter().map(|s| self.selector(s)).collect::<Compiled<_>>()?,
            },
        })
    }

    fn selector(&mut self, selector: &jp::Selector) -> Compiled<Selector> {
        Ok(match selector {
            jp::Selector::Name(name) => Selector::Name(name.clone()),
            jp::Selector::Wildcard => Selector::Wildcard,
            jp::Selector::Index(index) => Selector::Index(*index),
            jp::Selector::Slice(start, end, step) => Selector::Slice(*start, *end, *step),
            jp::Selector::Filter(filter) => Selector::Filter(self.logical(filter)?),
        })
    }

    fn logical(&mut self, filter: &jp::Filter) -> Compiled<Logical> {
        Ok(match filter {
            jp::Filter::Or(operands) => Logical::Or(operands.iter().map(|f| self.logical(f)).collect::<Compiled<_>>()?),
            jp::Filter::And(operands) => {
                Logical::And(operands.iter().map(|f| self.logical(f)).collect::<Compiled<_>>()?)
            }
            jp::Filter::Atom(jp::FilterAtom::Filter { expr, not }) => negate(self.logical(expr)?, *not),
            jp::Filter::Atom(jp::FilterAtom::Test { expr, not }) => negate(self.test(expr)?, *not),
            jp::Filter::Atom(jp::FilterAtom::Comparison(comparison)) => {
                let op = match **comparison {
                    jp::Comparison::Eq(..) => CompareOp::Eq,
                    jp::Comparison::Ne(..) => CompareOp::Ne,
                    jp::Comparison::Lt(..) => CompareOp::Lt,
                    jp::Comparison::Lte(..) => CompareOp::Le,
                    jp::Comparison::Gt(..) => CompareOp::Gt,
                    jp::Comparison::Gte(..) => CompareOp::Ge,
                };
                let (left, right) = comparison.vals();
                Logical::Compare(op, self.comparable(left)?, self.comparable(right)?)
            }
        })
    }

    fn test(&mut self, test: &jp::Test) -> Compiled<Logical> {
        Ok(match test {
            jp::Test::RelQuery(segments) => match singular(segments, false) {
                Some(singular) => Logical::ExistsSingular(singular),
                None => Logical::Exists(self.query(segments, false)?),
            },
            jp::Test::AbsQuery(query) => match singular(&query.segments, true) {
                Some(singular) => Logical::ExistsSingular(singular),
                None => Logical::Exists(self.query(&query.segments, true)?),
            },
            jp::Test::Function(function) => match &**function {
                jp::TestFunction::Match(value, pattern) => {
                    Logical::Regex(self.argument(value)?, regex(pattern, false)?)
                }
                jp::TestFunction::Search(value, pattern) => {
                    Logical::Regex(self.argument(value)?, regex(pattern, true)?)
                }
                jp::TestFunction::Custom(name, _) => return Err(unknown_function(name)),
                other => return Err(format!("{other} yields a value, not a test: compare it with something")),
            },
        })
    }

    fn comparable(&mut self, comparable: &jp::Comparable) -> Compiled<Operand> {
        Ok(match comparable {
            jp::Comparable::Literal(literal) => Operand::Literal(json_literal(literal)?),
            jp::Comparable::Function(function) => self.value_function(function)?,
            jp::Comparable::SingularQuery(query) => {
                let (absolute, steps) = match query {
                    jp::SingularQuery::Current(steps) => (false, steps),
                    jp::SingularQuery::Root(steps) => (true, steps),
                };
                let path = steps
                    .iter()
                    .map(|step| match step {
                        jp::SingularQuerySegment::Name(name) => Step::Name(name.clone()),
                        jp::SingularQuerySegment::Index(index) => Step::Index(*index),
                    })
                    .collect();
                Operand::Singular { absolute, path }
            }
        })
    }

    fn value_function(&mut self, function: &jp::TestFunction) -> Compiled<Operand> {
        Ok(match function {
            jp::TestFunction::Length(argument) => Operand::Length(Box::new(self.argument(argument)?)),
            jp::TestFunction::Count(argument) => Operand::Count(self.nodes(argument, "count")?),
            jp::TestFunction::Value(argument) => Operand::Value(self.nodes(argument, "value")?),
            jp::TestFunction::Custom(name, _) => return Err(unknown_function(name)),
            other => return Err(format!("{other} is a test, not a value: it cannot be compared")),
        })
    }

    /// An argument of type ValueType (RFC 9535 §2.4.1).
    fn argument(&mut self, argument: &jp::FnArg) -> Compiled<Operand> {
        match argument {
            jp::FnArg::Literal(literal) => Ok(Operand::Literal(json_literal(literal)?)),
            jp::FnArg::Test(test) => match &**test {
                jp::Test::RelQuery(segments) => match singular(segments, false) {
                    Some(singular) => Ok(singular),
                    None => Ok(Operand::Value(self.query(segments, false)?)),
                },
                jp::Test::AbsQuery(query) => match singular(&query.segments, true) {
                    Some(singular) => Ok(singular),
                    None => Ok(Operand::Value(self.query(&query.segments, true)?)),
                },
                jp::Test::Function(function) => self.value_function(function),
            },
            jp::FnArg::Filter(filter) => Err(format!("a logical expression ({filter}) is not a value")),
        }
    }

    /// An argument of type NodesType (RFC 9535 §2.4.1).
    fn nodes(&mut self, argument: &jp::FnArg, function: &str) -> Compiled<Query> {
        match argument {
            jp::FnArg::Test(test) => match &**test {
                jp::Test::RelQuery(segments) => self.query(segments, false),
                jp::Test::AbsQuery(query) => self.query(&query.segments, true),
                jp::Test::Function(_) => Err(format!("{function}() takes a query, not a function")),
            },
            other => Err(format!("{function}() takes a query, not '{other}'")),
        }
    }
}

/// A query of single names and indices, as the singular query it is (evaluated without
/// building a nodelist).
fn singular(segments: &[jp::Segment], absolute: bool) -> Option<Operand> {
    let path = segments
        .iter()
        .map(|segment| match segment {
            jp::Segment::Selector(jp::Selector::Name(name)) => Some(Step::Name(name.clone())),
            jp::Segment::Selector(jp::Selector::Index(index)) => Some(Step::Index(*index)),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(Operand::Singular { absolute, path })
}

fn negate(logical: Logical, not: bool) -> Logical {
    if not {
        Logical::Not(Box::new(logical))
    } else {
        logical
    }
}

fn unknown_function(name: &str) -> String {
    format!("unsupported function '{name}': the functions are length, count, value, match and search")
}

fn json_literal(literal: &jp::Literal) -> Compiled<serde_json::Value> {
    Ok(match literal {
        jp::Literal::Int(i) => serde_json::Value::from(*i),
        jp::Literal::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("number literal {f} is out of range"))?,
        jp::Literal::String(s) => serde_json::Value::String(s.clone()),
        jp::Literal::Bool(b) => serde_json::Value::Bool(*b),
        jp::Literal::Null => serde_json::Value::Null,
    })
}

/// The I-Regexp (RFC 9485) of `match()` (anchored) or `search()`, which must be a string
/// literal so that it is compiled, and its size bounded, once at declaration.
fn regex(pattern: &jp::FnArg, search: bool) -> Compiled<regex::Regex> {
    let function = if search { "search" } else { "match" };
    let jp::FnArg::Literal(jp::Literal::String(pattern)) = pattern else {
        return Err(format!("the pattern of {function}() must be a string literal, not '{pattern}'"));
    };
    // RFC 9485 §5.3: `.` matches any character but `\n` and `\r`; the crate's also takes `\r`.
    let mut translated = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                translated.push(c);
                if let Some(escaped) = chars.next() {
                    translated.push(escaped);
                }
            }
            '[' if !in_class => {
                in_class = true;
                translated.push(c);
            }
            ']' if in_class => {
                in_class = false;
                translated.push(c);
            }
            '.' if !in_class => translated.push_str(r"[^\n\r]"),
            c => translated.push(c),
        }
    }
    let translated = if search { translated } else { format!("^(?:{translated})$") };
    regex::RegexBuilder::new(&translated)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| format!("invalid pattern '{pattern}' in {function}(): {e}"))
}

/// The budget ran out.
struct Exhausted;

/// One evaluation: the document and the work it may still do.
struct Run<'a> {
    root: &'a serde_json::Value,
    remaining: u64,
}

/// Bytes of string per step.
const BYTES_PER_STEP: usize = 16;

/// Steps one run of a regular expression costs besides its input (the crate's per-call setup).
const STEPS_PER_REGEX: usize = 20;

impl<'a> Run<'a> {
    fn spend(&mut self, steps: usize) -> Result<(), Exhausted> {
        let steps = u64::try_from(steps).unwrap_or(u64::MAX);
        self.remaining = self.remaining.checked_sub(steps).ok_or(Exhausted)?;
        Ok(())
    }

    fn spend_string(&mut self, text: &str) -> Result<(), Exhausted> {
        self.spend(text.len() / BYTES_PER_STEP + 1)
    }

    /// The nodelist of `query` (RFC 9535 §2.1.2), duplicates included.
    fn select(
        &mut self,
        query: &'a Query,
        current: &'a serde_json::Value,
    ) -> Result<Vec<&'a serde_json::Value>, Exhausted> {
        let mut nodes = vec![if query.absolute { self.root } else { current }];
        for segment in query.segments.iter() {
            let mut selected = Vec::new();
            for node in nodes {
                if !segment.descendant {
                    self.apply(&segment.selectors, node, &mut selected)?;
                    continue;
                }
                // The node, then its descendants in document order, without recursion.
                let mut pending = vec![node];
                while let Some(node) = pending.pop() {
                    self.spend(1)?;
                    self.apply(&segment.selectors, node, &mut selected)?;
                    match node {
                        serde_json::Value::Array(items) => {
                            self.spend(items.len())?;
                            pending.extend(items.iter().rev());
                        }
                        serde_json::Value::Object(members) => {
                            self.spend(members.len())?;
                            pending.extend(members.values().rev());
                        }
                        _ => {}
                    }
                }
            }
            nodes = selected;
            if nodes.is_empty() {
                break;
            }
        }
        Ok(nodes)
    }

    fn apply(
        &mut self,
        selectors: &'a [Selector],
        node: &'a serde_json::Value,
        out: &mut Vec<&'a serde_json::Value>,
    ) -> Result<(), Exhausted> {
        use serde_json::Value;
        for selector in selectors {
            self.spend(1)?;
            match (selector, node) {
                (Selector::Name(name), Value::Object(members)) => out.extend(members.get(name)),
                (Selector::Wildcard, Value::Array(items)) => {
                    self.spend(items.len())?;
                    out.extend(items.iter());
                }
                (Selector::Wildcard, Value::Object(members)) => {
                    self.spend(members.len())?;
                    out.extend(members.values());
                }
                (Selector::Index(index), Value::Array(items)) => out.extend(element(items, *index)),
                (Selector::Slice(start, end, step), Value::Array(items)) => {
                    for index in slice_indices(items.len(), *start, *end, *step) {
                        self.spend(1)?;
                        out.extend(items.get(index));
                    }
                }
                (Selector::Filter(logical), Value::Array(items)) => {
                    for item in items {
                        if self.test(logical, item)? {
                            out.push(item);
                        }
                    }
                }
                (Selector::Filter(logical), Value::Object(members)) => {
                    for value in members.values() {
                        if self.test(logical, value)? {
                            out.push(value);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn test(&mut self, logical: &'a Logical, current: &'a serde_json::Value) -> Result<bool, Exhausted> {
        self.spend(1)?;
        Ok(match logical {
            Logical::Or(operands) => {
                for operand in operands.iter() {
                    if self.test(operand, current)? {
                        return Ok(true);
                    }
                }
                false
            }
            Logical::And(operands) => {
                for operand in operands.iter() {
                    if !self.test(operand, current)? {
                        return Ok(false);
                    }
                }
                true
            }
            Logical::Not(operand) => !self.test(operand, current)?,
            Logical::Exists(query) => !self.select(query, current)?.is_empty(),
            Logical::ExistsSingular(path) => self.operand(path, current)?.is_some(),
            Logical::Compare(op, left, right) => {
                let left = self.operand(left, current)?;
                let right = self.operand(right, current)?;
                let (left, right) = (left.as_deref(), right.as_deref());
                match op {
                    CompareOp::Eq => self.equal(left, right)?,
                    CompareOp::Ne => !self.equal(left, right)?,
                    CompareOp::Lt => self.less(left, right)?,
                    CompareOp::Gt => self.less(right, left)?,
                    CompareOp::Le => self.less(left, right)? || self.equal(left, right)?,
                    CompareOp::Ge => self.less(right, left)? || self.equal(left, right)?,
                }
            }
            Logical::Regex(value, regex) => match self.operand(value, current)?.as_deref() {
                Some(serde_json::Value::String(text)) => {
                    self.spend(STEPS_PER_REGEX)?;
                    self.spend_string(text)?;
                    regex.is_match(text)
                }
                _ => false,
            },
        })
    }

    fn operand(
        &mut self,
        operand: &'a Operand,
        current: &'a serde_json::Value,
    ) -> Result<Option<std::borrow::Cow<'a, serde_json::Value>>, Exhausted> {
        use serde_json::Value;
        use std::borrow::Cow;
        self.spend(1)?;
        Ok(match operand {
            Operand::Literal(value) => Some(Cow::Borrowed(value)),
            Operand::Singular { absolute, path } => {
                let mut node = if *absolute { self.root } else { current };
                for step in path.iter() {
                    self.spend(1)?;
                    let next = match (step, node) {
                        (Step::Name(name), Value::Object(members)) => members.get(name),
                        (Step::Index(index), Value::Array(items)) => element(items, *index),
                        _ => None,
                    };
                    match next {
                        Some(next) => node = next,
                        None => return Ok(None),
                    }
                }
                Some(Cow::Borrowed(node))
            }
            Operand::Value(query) => match self.select(query, current)?.as_slice() {
                [node] => Some(Cow::Borrowed(*node)),
                _ => None,
            },
            Operand::Count(query) => Some(Cow::Owned(Value::from(self.select(query, current)?.len()))),
            Operand::Length(value) => {
                let length = match self.operand(value, current)?.as_deref() {
                    Some(Value::String(text)) => {
                        self.spend_string(text)?;
                        Some(text.chars().count())
                    }
                    Some(Value::Array(items)) => Some(items.len()),
                    Some(Value::Object(members)) => Some(members.len()),
                    _ => None,
                };
                length.map(|n| Cow::Owned(Value::from(n)))
            }
        })
    }

    /// RFC 9535 §2.3.5.2.2: Nothing equals only Nothing; numbers compare by value; arrays and
    /// objects compare deeply.
    fn equal(
        &mut self,
        left: Option<&serde_json::Value>,
        right: Option<&serde_json::Value>,
    ) -> Result<bool, Exhausted> {
        match (left, right) {
            (None, None) => Ok(true),
            (Some(left), Some(right)) => self.json_equal(left, right),
            _ => Ok(false),
        }
    }

    fn json_equal(&mut self, left: &serde_json::Value, right: &serde_json::Value) -> Result<bool, Exhausted> {
        use serde_json::Value;
        self.spend(1)?;
        Ok(match (left, right) {
            (Value::Number(l), Value::Number(r)) => number_order(l, r) == Some(std::cmp::Ordering::Equal),
            (Value::String(l), Value::String(r)) => {
                self.spend_string(l)?;
                l == r
            }
            (Value::Array(l), Value::Array(r)) => {
                if l.len() != r.len() {
                    return Ok(false);
                }
                for (l, r) in l.iter().zip(r) {
                    if !self.json_equal(l, r)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Object(l), Value::Object(r)) => {
                if l.len() != r.len() {
                    return Ok(false);
                }
                for (name, l) in l {
                    match r.get(name) {
                        Some(r) if self.json_equal(l, r)? => {}
                        _ => return Ok(false),
                    }
                }
                true
            }
            (l, r) => l == r,
        })
    }

    /// RFC 9535 §2.3.5.2.2: `<` holds only between two numbers or two strings.
    fn less(&mut self, left: Option<&serde_json::Value>, right: Option<&serde_json::Value>) -> Result<bool, Exhausted> {
        use serde_json::Value;
        Ok(match (left, right) {
            (Some(Value::Number(l)), Some(Value::Number(r))) => number_order(l, r) == Some(std::cmp::Ordering::Less),
            (Some(Value::String(l)), Some(Value::String(r))) => {
                self.spend_string(l)?;
                l < r
            }
            _ => false,
        })
    }
}

fn number_order(left: &serde_json::Number, right: &serde_json::Number) -> Option<std::cmp::Ordering> {
    if let (Some(l), Some(r)) = (left.as_i64(), right.as_i64()) {
        return Some(l.cmp(&r));
    }
    if let (Some(l), Some(r)) = (left.as_u64(), right.as_u64()) {
        return Some(l.cmp(&r));
    }
    left.as_f64()?.partial_cmp(&right.as_f64()?)
}

/// RFC 9535 §2.3.3.2: a negative index counts from the end.
fn element(items: &[serde_json::Value], index: i64) -> Option<&serde_json::Value> {
    let index = if index < 0 { i64::try_from(items.len()).ok()?.checked_add(index)? } else { index };
    items.get(usize::try_from(index).ok()?)
}

/// RFC 9535 §2.3.4.2.2: the indices `start:end:step` selects in an array of `length`, lazily.
fn slice_indices(length: usize, start: Option<i64>, end: Option<i64>, step: Option<i64>) -> SliceIndices {
    let length = i64::try_from(length).unwrap_or(i64::MAX);
    let step = step.unwrap_or(1);
    let normalize = |i: i64| if i >= 0 { i } else { length.saturating_add(i) };
    if step > 0 {
        let lower = normalize(start.unwrap_or(0)).clamp(0, length);
        let upper = normalize(end.unwrap_or(length)).clamp(0, length);
        SliceIndices { next: lower, bound: upper, step }
    } else if step < 0 {
        let upper = normalize(start.unwrap_or(length - 1)).clamp(-1, length - 1);
        let lower = normalize(end.unwrap_or(-length - 1)).clamp(-1, length - 1);
        SliceIndices { next: upper, bound: lower, step }
    } else {
        SliceIndices { next: 0, bound: 0, step: 1 }
    }
}

struct SliceIndices {
    next: i64,
    bound: i64,
    step: i64,
}

impl Iterator for SliceIndices {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let more = if self.step > 0 { self.next < self.bound } else { self.bound < self.next };
        if !more {
            return None;
        }
        let index = self.next;
        // Past the end once the step would overflow.
        self.next = self.next.checked_add(self.step).unwrap_or(self.bound);
        usize::try_from(index).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_event::AttrValue;

    fn event() -> Event {
        let s = |v: &str| AttrValue::String(v.to_owned());
        Event::new(
            vec![
                ("specversion".into(), s("1.0")),
                ("id".into(), s("1")),
                ("source".into(), s("/orders/eu")),
                ("type".into(), s("com.example.order.created")),
                ("region".into(), s("eu")),
                ("empty".into(), s("")),
                ("count".into(), AttrValue::Integer(42)),
                ("flag".into(), AttrValue::Bool(true)),
            ],
            None,
        )
        .unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn knative_attribute_filter_semantics() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (&[("type", "com.example.order.created")], true),
            (&[("type", "com.example.order.created"), ("source", "/orders/eu")], true),
            (&[("type", "com.example.order.created"), ("source", "/orders/us")], false),
            (&[("type", "COM.EXAMPLE.ORDER.CREATED")], false),
            (&[("region", "")], true),
            (&[("missing", "")], false),
            (&[("empty", "")], false),
            (&[("count", "42")], true),
            (&[("flag", "true")], true),
            (&[("missing", "x")], false),
        ];
        for (list, expected) in cases {
            assert_eq!(Filter::Attributes(pairs(list)).matches(&event()), *expected, "{list:?}");
        }
    }

    #[test]
    fn subscriptions_dialects() {
        let e = event();
        let exact = Filter::Exact(pairs(&[("type", "com.example.order.created")]));
        let prefix = Filter::Prefix(pairs(&[("type", "com.example.")]));
        let suffix = Filter::Suffix(pairs(&[("source", "/us")]));
        assert!(exact.matches(&e));
        assert!(prefix.matches(&e));
        assert!(!suffix.matches(&e));
        assert!(Filter::Prefix(pairs(&[("count", "4")])).matches(&e));
        assert!(!Filter::Prefix(pairs(&[("missing", "")])).matches(&e));
        assert!(Filter::AllOf(vec![exact.clone(), prefix.clone()]).matches(&e));
        assert!(!Filter::AllOf(vec![exact.clone(), suffix.clone()]).matches(&e));
        assert!(Filter::AnyOf(vec![suffix.clone(), prefix.clone()]).matches(&e));
        assert!(!Filter::AnyOf(vec![suffix.clone()]).matches(&e));
        assert!(Filter::Not(Box::new(suffix.clone())).matches(&e));
        assert!(Filter::AllOf(vec![]).matches(&e));
        assert!(Filter::AnyOf(vec![]).matches(&e));
        let nested = Filter::AllOf(vec![Filter::AnyOf(vec![suffix.clone(), Filter::Not(Box::new(suffix))]), exact]);
        assert!(nested.matches(&e));
    }

    fn json_event(data: &str) -> Event {
        let text = format!(
            r#"{{"specversion":"1.0","id":"1","type":"t","source":"/s","datacontenttype":"application/json","data":{data}}}"#
        );
        switchyard_event::json::decode_event(text.as_bytes()).unwrap()
    }

    fn jsonpath(query: &str) -> Filter {
        let filters = [SubscriptionsFilter::Jsonpath(query.to_owned())];
        Filter::compile(None, &filters, "spec.").unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn refusal(query: &str) -> String {
        let filters = [SubscriptionsFilter::Jsonpath(query.to_owned())];
        Filter::compile(None, &filters, "spec.").unwrap_err().to_string()
    }

    #[test]
    fn jsonpath_selects_like_rfc_9535() {
        let event = json_event(
            r#"{"items":[{"sku":"A1","qty":2,"tags":["x"]},{"sku":"B2","qty":1.0,"price":null}],"total":31.5,"name":"Ünïcode"}"#,
        );
        let cases: &[(&str, bool)] = &[
            ("$.data.items[?@.sku == 'A1']", true),
            ("$.data.items[?@.sku == 'C3']", false),
            ("$.data.items[?@.qty == 1]", true),
            ("$.data.items[?@.qty > 1 && @.sku != 'A1']", false),
            ("$.data.items[?@.qty >= 2]", true),
            ("$.data.items[?@.price == null]", true),
            ("$.data.items[?@.missing == null]", false),
            ("$.data.items[?@.missing == @.other]", true),
            ("$.data.items[?!@.tags]", true),
            ("$.data.items[?@.tags[0] == 'x']", true),
            ("$.data.items[-1].sku", true),
            ("$.data.items[2]", false),
            ("$.data.items[1:]", true),
            ("$.data.items[5:]", false),
            ("$.data.items[::-1]", true),
            ("$.data.items[::0]", false),
            ("$..sku", true),
            ("$..nope", false),
            ("$.data[?length(@) == 2]", true),
            ("$.data[?count(@.*) == 2]", true),
            ("$.data.items[?count(@.*) == 3]", true),
            ("$.data.items[?count(@.*) == 4]", false),
            ("$.data[?value(@.sku) == 'A1']", false),
            ("$.data.items[?value(@.sku) == 'A1']", true),
            ("$.data.items[?match(@.sku, 'A.')]", true),
            ("$.data.items[?match(@.sku, 'A')]", false),
            ("$.data.items[?search(@.sku, '2')]", true),
            ("$.data[?length(@) == 7]", true),
            ("$.data.name", true),
            ("$.type", true),
            ("$['data']['total']", true),
            ("$.data[?@ > 30 && @ < 32]", true),
            ("$.data[?@ < 'Z']", false),
            ("$.data[?@ > 'A']", true),
        ];
        for (query, expected) in cases {
            let (matched, errors) = jsonpath(query).explain(&event);
            assert_eq!(matched, *expected, "{query}");
            assert!(errors.is_empty(), "{query}: {errors:?}");
        }
    }

    #[test]
    fn jsonpath_limits_are_checked_at_declaration_naming_them() {
        let long = format!("$.data.{}", "a".repeat(MAX_JSONPATH_CHARS));
        assert!(refusal(&long).contains("above the limit of 1024 (jsonpath query length)"));
        assert!(refusal("$..*..*..*").contains("3 descendant segments ('..'), above the limit of 2"));
        assert!(refusal("$..a[?@..b[?@..c]]").contains("descendant segments"));
        let deep = format!("$.data{}", "[?@".repeat(20) + &"]".repeat(20));
        assert!(refusal(&deep).contains("above the limit of 16 (jsonpath nesting)"), "{}", refusal(&deep));
        assert!(
            refusal("$.data[?in(@.a, $.b)]").contains("unsupported function 'in'"),
            "{}",
            refusal("$.data[?in(@.a, $.b)]")
        );
        assert!(refusal("$.data[?match(@.a, @.b)]").contains("must be a string literal"));
        assert!(refusal("$.data[?match(@.a, '(')]").contains("invalid pattern '('"));
        assert!(refusal("$.data[?length(@.a)]").contains("yields a value"));
        assert!(refusal("$.data[?@.a == 'x'").contains("JSONPath"));
        jsonpath("$..a..b");
    }

    /// The reproduction from the hardening issue: 110-deep data and `..*` four times took
    /// 14 s and 4 GiB. Two descendant segments are accepted; their work is bounded.
    #[test]
    fn jsonpath_work_is_bounded_on_deep_and_wide_data() {
        let deep = json_event(&format!("{}1{}", "[".repeat(110), "]".repeat(110)));
        assert!(refusal("$..*..*..*..*").contains("above the limit of 2"));
        let (matched, errors) = jsonpath("$..*..*").explain(&deep);
        assert!(matched, "{errors:?}");
        let (matched, errors) = jsonpath("$..*[?@..*[?@ == 2]]").explain(&deep);
        assert!(!matched && errors.is_empty(), "{errors:?}");
        // Wide: 300,000 elements, about 1 MiB.
        let wide = json_event(&format!("[{}2]", "1,".repeat(300_000)));
        let (matched, errors) = jsonpath("$.data[?@ == 2]").explain(&wide);
        assert!(!matched);
        assert_eq!(errors, ["jsonpath: evaluation exceeds the work budget of 100000 steps (jsonpath work budget)"]);
        let (matched, errors) = jsonpath("$..*..*").explain(&wide);
        assert!(!matched && errors[0].contains("work budget"), "{errors:?}");
        let (matched, errors) = jsonpath("$.data[-1:]").explain(&wide);
        assert!(matched, "{errors:?}");
    }

    #[test]
    fn cesql_budget_counts_as_no_match() {
        let s = |v: &str| AttrValue::String(v.to_owned());
        let event = Event::new(
            vec![
                ("specversion".into(), s("1.0")),
                ("id".into(), s("1")),
                ("source".into(), s("/s")),
                ("type".into(), s("t")),
                ("big".into(), AttrValue::String("a".repeat(600_000))),
            ],
            None,
        )
        .unwrap();
        let filters = [SubscriptionsFilter::Cesql("big LIKE '%b_' OR big LIKE '%a'".to_owned())];
        let filter = Filter::compile(None, &filters, "spec.").unwrap();
        assert!(!filter.matches(&event));
        let (matched, errors) = filter.explain(&event);
        assert!(!matched);
        assert!(errors[0].contains("cesql generic error: evaluation exceeds the work budget"), "{errors:?}");
    }
}
