//! Which events a trigger receives, with Knative's semantics, plus CESQL and JSONPath.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_event::Event;
use switchyard_meta::resources::{AttributesFilter, SubscriptionsFilter};
use switchyard_meta::ValidationError;

/// A parsed JSONPath query (RFC 9535).
pub type JsonPathQuery = jsonpath_rust::parser::model::JpQuery;

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
    /// its content type is JSON (a string for text, `data_base64` for bytes).
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
    JsonPath(Arc<JsonPathQuery>),
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
                None => expression.matches(event),
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
            Filter::JsonPath(query) => match jsonpath_rust::query::js_path_process(query.as_ref(), view.json()) {
                Ok(nodes) => !nodes.is_empty(),
                Err(error) => {
                    if let Some(errors) = errors {
                        errors.push(format!("jsonpath: {error}"));
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
            jsonpath_rust::parser::parse_json_path(query)
                .map_err(|e| ValidationError::field(field, format!("invalid JSONPath query '{query}': {e}")))?,
        )),
    })
}

fn compare(event: &Event, pairs: &[(String, String)], test: impl Fn(&str, &str) -> bool) -> bool {
    pairs
        .iter()
        .all(|(name, expected)| event.get(name).is_some_and(|value| test(&value.to_canonical_string(), expected)))
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
}
