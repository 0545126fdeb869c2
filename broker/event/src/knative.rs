//! The extension attributes Knative's broker data plane adds and reads.

use crate::model::{AttrValue, Event};

/// When the broker accepted the event (RFC 3339, UTC), set by the ingress.
pub const ARRIVAL_TIME: &str = "knativearrivaltime";
/// The hop counter that bounds reply loops: set by the ingress when absent, removed before
/// delivery, decremented on every reply (Knative eventing `broker.TTL`).
pub const BROKER_TTL: &str = "knativebrokerttl";
/// The hop budget of a new event.
pub const DEFAULT_TTL: i32 = 255;

/// Stamps an event at ingress: its arrival time always (the ingress is authoritative), and a
/// hop budget: the default when it carries none or one that is not a number, and never more
/// than the default, so a client cannot buy a reply loop more hops than Knative allows.
pub fn stamp_ingress(event: &mut Event, arrival_time: &str) {
    // Both names are valid extension names, so setting them cannot fail.
    let _ = event.set_extension(ARRIVAL_TIME, AttrValue::String(arrival_time.to_owned()));
    let budget = ttl(event).clamp(0, DEFAULT_TTL);
    if event.get(BROKER_TTL) != Some(&AttrValue::Integer(budget)) {
        let _ = event.set_extension(BROKER_TTL, AttrValue::Integer(budget));
    }
}

/// Now, as an RFC 3339 UTC timestamp (the arrival time format).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The event's remaining hop budget; an absent or unreadable counter counts as the default.
pub fn ttl(event: &Event) -> i32 {
    event.get(BROKER_TTL).and_then(|v| v.to_canonical_string().trim().parse().ok()).unwrap_or(DEFAULT_TTL)
}

/// The event as a subscriber sees it: without the hop counter, which is the broker's own
/// bookkeeping (Knative's filter strips it the same way).
pub fn for_subscriber(event: &Event) -> std::borrow::Cow<'_, Event> {
    if event.get(BROKER_TTL).is_none() {
        return std::borrow::Cow::Borrowed(event);
    }
    let mut outgoing = event.clone();
    outgoing.remove_extension(BROKER_TTL);
    std::borrow::Cow::Owned(outgoing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::required;

    #[test]
    fn ingress_stamps_arrival_and_default_ttl_and_delivery_strips_ttl() {
        let mut event = Event::new(required(), None).unwrap();
        stamp_ingress(&mut event, "2024-01-01T00:00:00Z");
        assert_eq!(event.get_str(ARRIVAL_TIME), Some("2024-01-01T00:00:00Z"));
        assert_eq!(ttl(&event), 255);
        let outgoing = for_subscriber(&event);
        assert!(outgoing.get(BROKER_TTL).is_none());
        assert_eq!(outgoing.get_str(ARRIVAL_TIME), Some("2024-01-01T00:00:00Z"));
    }

    #[test]
    fn an_existing_ttl_is_kept_and_read_from_any_type() {
        let mut event = Event::new(required(), None).unwrap();
        event.set_extension(BROKER_TTL, AttrValue::String("7".into())).unwrap();
        stamp_ingress(&mut event, "2024-01-01T00:00:00Z");
        assert_eq!(ttl(&event), 7);
        event.set_extension(BROKER_TTL, AttrValue::String("junk".into())).unwrap();
        assert_eq!(ttl(&event), DEFAULT_TTL);
    }

    #[test]
    fn a_client_cannot_raise_the_hop_budget() {
        for (sent, kept) in
            [(AttrValue::Integer(i32::MAX), 255), (AttrValue::Integer(-5), 0), (AttrValue::Integer(9), 9)]
        {
            let mut event = Event::new(required(), None).unwrap();
            event.set_extension(BROKER_TTL, sent.clone()).unwrap();
            stamp_ingress(&mut event, "2024-01-01T00:00:00Z");
            assert_eq!(event.get(BROKER_TTL), Some(&AttrValue::Integer(kept)), "{sent:?}");
        }
    }
}
