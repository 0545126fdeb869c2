//! Which triggers can match an event, without asking every one of them. Each trigger's filter
//! is reduced to one indexable constraint it requires — an exact or prefix value of `type`,
//! `source` or `subject` — and filed under it; a trigger without one is always a candidate.
//! Looking an event up costs one hash probe per indexed attribute plus one per prefix length of
//! its value, whatever the number of triggers. Candidates then run their whole filter.

use std::collections::HashMap;

use switchyard_event::Event;

use crate::filter::Filter;

/// The attributes worth indexing: present on (nearly) every event and what filters select on.
const INDEXED: [&str; 3] = ["type", "source", "subject"];

/// A constraint a filter cannot pass without.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Exact(usize, String),
    Prefix(usize, String),
}

/// Triggers filed by the constraint their filter requires.
#[derive(Debug, Default)]
pub struct MatchIndex<T> {
    exact: HashMap<(usize, String), Vec<T>>,
    prefix: HashMap<(usize, String), Vec<T>>,
    /// Longest indexed prefix per attribute, to bound the probes.
    longest_prefix: [usize; INDEXED.len()],
    unindexed: Vec<T>,
}

impl<T: Clone> MatchIndex<T> {
    /// An empty index.
    pub fn new() -> MatchIndex<T> {
        MatchIndex {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            longest_prefix: [0; INDEXED.len()],
            unindexed: Vec::new(),
        }
    }

    /// Files `id` under the constraint its filter requires.
    pub fn insert(&mut self, id: T, filter: &Filter) {
        match required_key(filter) {
            Some(Key::Exact(attribute, value)) => self.exact.entry((attribute, value)).or_default().push(id),
            Some(Key::Prefix(attribute, value)) => {
                self.longest_prefix[attribute] = self.longest_prefix[attribute].max(value.len());
                self.prefix.entry((attribute, value)).or_default().push(id);
            }
            None => self.unindexed.push(id),
        }
    }

    /// Every trigger that may match `event` (a superset of those that do).
    pub fn candidates(&self, event: &Event, out: &mut Vec<T>) {
        out.extend(self.unindexed.iter().cloned());
        let mut probe = (0, String::new());
        for (attribute, name) in INDEXED.iter().enumerate() {
            let Some(value) = event.get_str(name) else { continue };
            probe.0 = attribute;
            if !self.exact.is_empty() {
                probe.1.clear();
                probe.1.push_str(value);
                if let Some(ids) = self.exact.get(&probe) {
                    out.extend(ids.iter().cloned());
                }
            }
            if self.longest_prefix[attribute] > 0 {
                for (end, _) in value.char_indices().skip(1).chain(std::iter::once((value.len(), ' '))) {
                    if end > self.longest_prefix[attribute] {
                        break;
                    }
                    probe.1.clear();
                    probe.1.push_str(&value[..end]);
                    if let Some(ids) = self.prefix.get(&probe) {
                        out.extend(ids.iter().cloned());
                    }
                }
            }
        }
    }
}

/// The most selective constraint `filter` requires, if any: an exact value beats a prefix.
fn required_key(filter: &Filter) -> Option<Key> {
    let indexed = |name: &str| INDEXED.iter().position(|i| *i == name);
    match filter {
        Filter::Attributes(pairs) | Filter::Exact(pairs) => pairs
            .iter()
            // Knative's `""` means "present": not a value to index.
            .find_map(|(name, value)| Some(Key::Exact(indexed(name)?, value.clone())).filter(|_| !value.is_empty())),
        Filter::Prefix(pairs) => pairs
            .iter()
            .find_map(|(name, value)| Some(Key::Prefix(indexed(name)?, value.clone())).filter(|_| !value.is_empty())),
        // A string attribute compared with a string literal is plain equality (CESQL §3.4.3).
        Filter::Cesql(expression) => expression
            .required_equalities()
            .into_iter()
            .find_map(|(name, value)| Some(Key::Exact(indexed(name)?, value.to_owned()))),
        Filter::AllOf(filters) => {
            let keys = filters.iter().filter_map(required_key);
            keys.reduce(
                |best, key| if matches!(best, Key::Prefix(..)) && matches!(key, Key::Exact(..)) { key } else { best },
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_event::AttrValue;

    fn event(ty: &str, source: &str) -> Event {
        let s = |v: &str| AttrValue::String(v.to_owned());
        let attributes = vec![
            ("specversion".into(), s("1.0")),
            ("id".into(), s("1")),
            ("source".into(), s(source)),
            ("type".into(), s(ty)),
        ];
        Event::new(attributes, None).unwrap()
    }

    fn pairs(name: &str, value: &str) -> Vec<(String, String)> {
        vec![(name.to_owned(), value.to_owned())]
    }

    #[test]
    fn candidates_are_a_superset_of_matches_and_skip_the_rest() {
        let filters = vec![
            Filter::Attributes(pairs("type", "order.created")),
            Filter::Exact(pairs("type", "order.shipped")),
            Filter::Prefix(pairs("type", "order.")),
            Filter::Prefix(pairs("source", "/eu/")),
            Filter::AllOf(vec![Filter::Prefix(pairs("type", "ord")), Filter::Exact(pairs("source", "/us/1"))]),
            Filter::Suffix(pairs("type", ".created")),
            Filter::Attributes(pairs("type", "")),
            Filter::All,
            Filter::Cesql(std::sync::Arc::new(
                switchyard_cesql::parse("source = '/us/1' AND type LIKE 'order%'").unwrap(),
            )),
            Filter::Cesql(std::sync::Arc::new(
                switchyard_cesql::parse("type = 'a' OR type = 'order.created'").unwrap(),
            )),
        ];
        let mut index = MatchIndex::new();
        for (id, filter) in filters.iter().enumerate() {
            index.insert(id, filter);
        }
        for (ty, source) in [("order.created", "/eu/1"), ("order.shipped", "/us/1"), ("other", "/x"), ("o", "/eu/")] {
            let event = event(ty, source);
            let mut candidates = Vec::new();
            index.candidates(&event, &mut candidates);
            for (id, filter) in filters.iter().enumerate() {
                if filter.matches(&event) {
                    assert!(candidates.contains(&id), "{ty} {source}: trigger {id} matches but is no candidate");
                }
            }
            if ty == "other" {
                candidates.sort();
                assert_eq!(candidates, [5, 6, 7, 9], "only the unindexable filters are asked");
            }
        }
    }

    #[test]
    fn lookups_do_not_grow_with_the_number_of_triggers() {
        let mut index = MatchIndex::new();
        for i in 0..10_000 {
            index.insert(i, &Filter::Attributes(pairs("type", &format!("type.{i}"))));
        }
        let mut candidates = Vec::new();
        index.candidates(&event("type.4242", "/s"), &mut candidates);
        assert_eq!(candidates, [4242]);
    }
}
