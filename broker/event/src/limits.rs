//! The limits on what enters a broker, whoever brings it (a producer's request, a source, a
//! subscriber's reply): the size of an event, its attribute count once the broker has stamped
//! it, and the events of one batch. Pure checks, so every way in refuses the same event with
//! the same words.

use crate::model::{AttrValue, Event};

/// Limits on events entering a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// The largest event: its data plus the names and values of its attributes.
    pub max_event_bytes: usize,
    /// The most attributes an event may have, counting those the broker adds
    /// (`knativearrivaltime`, `knativebrokerttl`, trace context).
    pub max_attributes: usize,
    /// The most events one request (a batch) may carry.
    pub max_batch_events: usize,
    /// The longest attribute name, in bytes.
    pub max_attribute_name_bytes: usize,
    /// The longest attribute value as text, in bytes (data is not an attribute).
    pub max_attribute_value_bytes: usize,
}

/// The most attributes the storage codec can hold; `max_attributes` may not exceed it.
pub const MAX_STORABLE_ATTRIBUTES: usize = crate::model::MAX_ATTRIBUTES;

impl Default for EventLimits {
    /// 1 MiB events (Kafka's default record size), 128 attributes, 1,000 events per batch;
    /// names up to 128 bytes (the core spec asks for at most 20 characters, §3.1.1, and SDKs
    /// stay far below 128); values up to 8 KiB, so that every attribute fits in one HTTP
    /// header on delivery (Node's default for all of a request's headers is 16 KiB).
    fn default() -> EventLimits {
        EventLimits {
            max_event_bytes: 1 << 20,
            max_attributes: 128,
            max_batch_events: 1000,
            max_attribute_name_bytes: 128,
            max_attribute_value_bytes: 8 << 10,
        }
    }
}

/// An event or batch over a limit. The message names the limit's setting, so the sender knows
/// what is refused and an operator knows what to raise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// An event larger than `max_event_bytes`.
    #[error("{} exceeds the limit of {limit} bytes (max_event_bytes)", which(*.index))]
    EventTooLarge {
        /// Its index in a batch, `None` for a single event.
        index: Option<usize>,
        /// The limit.
        limit: usize,
    },
    /// An event with more than `max_attributes` attributes once stamped.
    #[error("{} has {count} attributes with the broker's own, above the limit of {limit} (max_event_attributes)", which(*.index))]
    TooManyAttributes {
        /// Its index in a batch, `None` for a single event.
        index: Option<usize>,
        /// Its attribute count, stamped.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// An attribute name longer than `max_attribute_name_bytes`.
    #[error("{} has an attribute name of {len} bytes starting '{start}', above the limit of {limit} (max_attribute_name_bytes)", which(*.index))]
    AttributeNameTooLong {
        /// Its index in a batch, `None` for a single event.
        index: Option<usize>,
        /// The name's first characters.
        start: String,
        /// The name's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An attribute value longer than `max_attribute_value_bytes`.
    #[error("{} has a value of {len} bytes in attribute '{name}', above the limit of {limit} (max_attribute_value_bytes)", which(*.index))]
    AttributeValueTooLong {
        /// Its index in a batch, `None` for a single event.
        index: Option<usize>,
        /// The attribute.
        name: String,
        /// The value's length as text.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A batch of more than `max_batch_events` events.
    #[error("the batch has {count} events, above the limit of {limit} (max_batch_events): send it in smaller batches")]
    TooManyEvents {
        /// How many it has.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

impl LimitExceeded {
    /// A closed name for metrics: `too_large`, `too_many_attributes`, `too_many_events`.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitExceeded::EventTooLarge { .. } => "too_large",
            LimitExceeded::TooManyAttributes { .. } => "too_many_attributes",
            LimitExceeded::TooManyEvents { .. } => "too_many_events",
            LimitExceeded::AttributeNameTooLong { .. } => "attribute_name_too_long",
            LimitExceeded::AttributeValueTooLong { .. } => "attribute_value_too_long",
        }
    }
}

fn which(index: Option<usize>) -> String {
    match index {
        Some(index) => format!("event {index} of the batch"),
        None => "the event".to_owned(),
    }
}

/// An event's size as the limit counts it: its data plus the names and values of its
/// attributes (what it costs to store, whatever the mode it came in).
pub fn event_size(event: &Event) -> usize {
    let attributes: usize = event.attributes().iter().map(|(n, v)| n.len() + v.to_canonical_string().len()).sum();
    attributes + event.data().map_or(0, |d| d.bytes.len())
}

impl EventLimits {
    /// The index to name for event `i` of `count`: none when it is alone.
    fn index(i: usize, count: usize) -> Option<usize> {
        (count > 1).then_some(i)
    }

    /// Checks what can be checked before the broker stamps the events: the batch's length and
    /// each event's size.
    pub fn check_received(&self, events: &[Event]) -> Result<(), LimitExceeded> {
        if events.len() > self.max_batch_events {
            return Err(LimitExceeded::TooManyEvents { count: events.len(), limit: self.max_batch_events });
        }
        for (i, event) in events.iter().enumerate() {
            let index = Self::index(i, events.len());
            if event_size(event) > self.max_event_bytes {
                return Err(LimitExceeded::EventTooLarge { index, limit: self.max_event_bytes });
            }
            self.check_attributes(event, index)?;
        }
        Ok(())
    }

    fn check_attributes(&self, event: &Event, index: Option<usize>) -> Result<(), LimitExceeded> {
        for (name, value) in event.attributes() {
            if name.len() > self.max_attribute_name_bytes {
                let start = name.chars().take(20).collect();
                let limit = self.max_attribute_name_bytes;
                return Err(LimitExceeded::AttributeNameTooLong { index, start, len: name.len(), limit });
            }
            let len = match value {
                AttrValue::String(text) => text.len(),
                // At most 11 characters as text.
                AttrValue::Bool(_) | AttrValue::Integer(_) => 0,
            };
            if len > self.max_attribute_value_bytes {
                let limit = self.max_attribute_value_bytes;
                return Err(LimitExceeded::AttributeValueTooLong { index, name: name.clone(), len, limit });
            }
        }
        Ok(())
    }

    /// Checks each stamped event's attribute count.
    pub fn check_stamped(&self, events: &[Event]) -> Result<(), LimitExceeded> {
        match events.iter().position(|event| event.attributes().len() > self.max_attributes) {
            Some(i) => Err(LimitExceeded::TooManyAttributes {
                index: Self::index(i, events.len()),
                count: events[i].attributes().len(),
                limit: self.max_attributes,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Data, DataForm};
    use crate::testing::required;

    fn event(extensions: usize, data: usize) -> Event {
        let mut attributes = required();
        attributes.extend((0..extensions).map(|i| (format!("x{i}"), AttrValue::String("v".into()))));
        let data = (data > 0).then(|| Data { form: DataForm::Binary, bytes: vec![b'a'; data].into() });
        Event::new(attributes, data).unwrap()
    }

    #[test]
    fn sizes_count_data_and_attributes() {
        let plain = event(0, 0);
        let base = event_size(&plain);
        assert!(base > 0);
        assert_eq!(event_size(&event(0, 100)), base + 100);
        assert_eq!(event_size(&event(1, 0)), base + "x0".len() + 1);
    }

    #[test]
    fn attribute_names_and_values_are_held_to_their_limits() {
        let limits =
            EventLimits { max_attribute_name_bytes: 15, max_attribute_value_bytes: 13, ..EventLimits::default() };
        let with = |name: &str, value: &str| {
            let mut attributes = required();
            attributes.push((name.to_owned(), AttrValue::String(value.into())));
            Event::new(attributes, None).unwrap()
        };
        // `datacontenttype` has 15 bytes; `com.example.t` 13.
        assert_eq!(limits.check_received(&[with("abcdefghijklmno", "abcdefghijklm")]), Ok(()));
        let name = limits.check_received(&[with("abcdefghijklmnopqrstuvwxyz", "a")]).unwrap_err();
        assert_eq!(
            name.to_string(),
            "the event has an attribute name of 26 bytes starting 'abcdefghijklmnopqrst', above the limit of 15 (max_attribute_name_bytes)"
        );
        let value = limits.check_received(&[with("x", "a"), with("x", "abcdefghijklmn")]).unwrap_err();
        assert_eq!(
            value.to_string(),
            "event 1 of the batch has a value of 14 bytes in attribute 'x', above the limit of 13 (max_attribute_value_bytes)"
        );
        assert_eq!(value.reason(), "attribute_value_too_long");
    }

    #[test]
    fn each_limit_names_its_setting_and_the_event() {
        let limits =
            EventLimits { max_event_bytes: 200, max_attributes: 6, max_batch_events: 2, ..EventLimits::default() };
        assert_eq!(limits.check_received(&[event(0, 10)]), Ok(()));
        let too_large = limits.check_received(&[event(0, 300)]).unwrap_err();
        assert_eq!(too_large.to_string(), "the event exceeds the limit of 200 bytes (max_event_bytes)");
        assert_eq!(too_large.reason(), "too_large");
        let in_batch = limits.check_received(&[event(0, 1), event(0, 300)]).unwrap_err();
        assert_eq!(in_batch.to_string(), "event 1 of the batch exceeds the limit of 200 bytes (max_event_bytes)");
        let many = limits.check_received(&[event(0, 1), event(0, 1), event(0, 1)]).unwrap_err();
        assert!(many.to_string().starts_with("the batch has 3 events, above the limit of 2 (max_batch_events)"));
        let required = required().len();
        assert_eq!(limits.check_stamped(&[event(6 - required, 0)]), Ok(()));
        let attributes = limits.check_stamped(&[event(7 - required, 0)]).unwrap_err();
        assert_eq!(
            attributes.to_string(),
            "the event has 7 attributes with the broker's own, above the limit of 6 (max_event_attributes)"
        );
    }
}
