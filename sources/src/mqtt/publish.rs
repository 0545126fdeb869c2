//! An MQTT PUBLISH message → the event it stands for: a CloudEvent in the MQTT binding
//! (`switchyard_event::mqtt`) passes through unchanged; any other message is wrapped.
//!
//! Pure: no client types, so it is tested without a server.

use bytes::Bytes;
use switchyard_event::mqtt::{self as binding, MqttVersion};

use crate::message::{content_id, MessageEvent, Plain};

/// `type` of a wrapped message.
pub const EVENT_TYPE: &str = "dev.switchyard.mqtt.message";
/// Prefix of the extensions carrying a wrapped message's User Properties.
pub const PROPERTY_EXTENSION_PREFIX: &str = "mqttproperty";

/// What the mapping reads of a PUBLISH message.
#[derive(Debug, Clone, Copy)]
pub struct PublishParts<'a> {
    /// The protocol version of the connection it came over.
    pub version: MqttVersion,
    /// Its topic name.
    pub topic: &'a str,
    /// Its Content Type property (MQTT 5 only).
    pub content_type: Option<&'a str>,
    /// Its User Properties (MQTT 5 only).
    pub user_properties: &'a [(String, String)],
    /// Its payload.
    pub payload: &'a Bytes,
}

/// The event a message received by MqttSource `namespace/name` stands for. Never panics,
/// whatever the message holds.
///
/// A wrapped message gets `type` [`EVENT_TYPE`], `source`
/// `/apis/v1/namespaces/<ns>/mqttsources/<name>`, `subject` the topic, `datacontenttype` the
/// Content Type (lower-cased; left out when empty, and carried as the extension
/// `mqttpropertycontenttype` when it names a CloudEvents format the payload is not in), every
/// User Property as an extension `mqttproperty<name>` (the name lower-cased, keeping only letters
/// and digits; of properties that give the same name, the last wins; a value with control
/// characters is left out), and the payload as the data, byte for byte (none when empty).
///
/// Its `id` is [`content_id`] of the payload, topic, Content Type and User Properties: MQTT
/// packet ids are reused and change across sessions, while a redelivery carries the same
/// message, so it gets the same id. Two messages with the same topic, properties and payload
/// get the same id too: a publisher that sends identical messages and wants them told apart
/// gives each a distinguishing User Property (or sends CloudEvents, which carry their own id).
pub fn message_event(namespace: &str, name: &str, message: PublishParts<'_>) -> MessageEvent {
    let PublishParts { version, topic, content_type, user_properties, payload } = message;
    let decoded = binding::decode(version, content_type, user_properties, payload);
    let claims = binding::claims_to_be_a_cloudevent(version, content_type, user_properties, payload);
    MessageEvent::of(decoded, claims, || Plain {
        event_type: EVENT_TYPE.to_owned(),
        source: format!("/apis/v1/namespaces/{namespace}/mqttsources/{name}"),
        id: message_id(message),
        subject: Some(topic.to_owned()),
        time: None,
        content_type: content_type.map(str::to_owned),
        extension_prefix: PROPERTY_EXTENSION_PREFIX,
        headers: user_properties.iter().map(|(name, value)| (name.clone(), value.as_bytes().to_vec())).collect(),
        extensions: Vec::new(),
        payload: (!payload.is_empty()).then(|| payload.clone()),
    })
}

/// The stable id of a message that is not a CloudEvent (see [`message_event`]).
fn message_id(message: PublishParts<'_>) -> String {
    // A marker tells "no Content Type" from an empty one.
    let content_type = match message.content_type {
        Some(content_type) => format!("+{content_type}"),
        None => "-".to_owned(),
    };
    let mut parts: Vec<&[u8]> = vec![message.payload, message.topic.as_bytes(), content_type.as_bytes()];
    for (name, value) in message.user_properties {
        parts.push(name.as_bytes());
        parts.push(value.as_bytes());
    }
    content_id(&parts)
}

#[cfg(test)]
mod tests {
    use switchyard_event::{DataForm, Event};

    use super::*;

    fn parts<'a>(
        version: MqttVersion,
        content_type: Option<&'a str>,
        user_properties: &'a [(String, String)],
        payload: &'a Bytes,
    ) -> PublishParts<'a> {
        PublishParts { version, topic: "sensors/kitchen/temperature", content_type, user_properties, payload }
    }

    type Properties = Vec<(String, String)>;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()
    }

    fn wrapped(event: MessageEvent) -> Event {
        match event {
            MessageEvent::Wrapped(event) => event,
            other => panic!("expected a wrapped message, got {other:?}"),
        }
    }

    #[test]
    fn plain_messages_are_wrapped_with_a_stable_id() {
        let payload = Bytes::from_static(b"{\"celsius\":21.5}");
        let properties = props(&[("Unit", "C"), ("x-site", "north"), ("bad", "a\u{7}b")]);
        let message = parts(MqttVersion::V5, Some("Application/JSON"), &properties, &payload);
        let event = wrapped(message_event("home", "sensors", message));
        assert_eq!(event.ty(), EVENT_TYPE);
        assert_eq!(event.source(), "/apis/v1/namespaces/home/mqttsources/sensors");
        assert_eq!(event.get_str("subject"), Some("sensors/kitchen/temperature"));
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.get_str("mqttpropertyunit"), Some("C"));
        assert_eq!(event.get_str("mqttpropertyxsite"), Some("north"));
        assert!(event.get("mqttpropertybad").is_none());
        assert_eq!(event.data().map(|d| (d.form, d.bytes.clone())), Some((DataForm::Json, payload.clone())));
        assert!(event.id().starts_with("sha256:"));
        // A redelivery is the same event; another payload, topic or property is another.
        assert_eq!(wrapped(message_event("home", "sensors", message)), event);
        let other_payload = Bytes::from_static(b"{\"celsius\":22}");
        let ids = [
            parts(MqttVersion::V5, Some("Application/JSON"), &properties, &other_payload),
            PublishParts { topic: "sensors/hall/temperature", ..message },
            parts(MqttVersion::V5, Some("Application/JSON"), &properties[..1], &payload),
            parts(MqttVersion::V5, None, &properties, &payload),
            parts(MqttVersion::V5, Some(""), &properties, &payload),
        ]
        .map(|other| wrapped(message_event("home", "sensors", other)).id().to_owned());
        for (i, id) in ids.iter().enumerate() {
            assert_ne!(id, event.id(), "{i}");
            assert!(ids[i + 1..].iter().all(|other| other != id), "{i}");
        }
    }

    #[test]
    fn mqtt_3_messages_and_empty_payloads() {
        let payload = Bytes::from_static(b"21.5");
        let event = wrapped(message_event("ns", "s", parts(MqttVersion::V3_1_1, None, &[], &payload)));
        assert!(event.datacontenttype().is_none());
        assert_eq!(event.data().map(|d| d.bytes.clone()), Some(payload));
        let empty = Bytes::new();
        let event = wrapped(message_event("ns", "s", parts(MqttVersion::V3_1_1, None, &[], &empty)));
        assert!(event.data().is_none());
    }

    #[test]
    fn cloudevents_pass_through_in_both_modes_and_versions() {
        let original = Event::new(
            vec![
                ("specversion".to_owned(), switchyard_event::AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), switchyard_event::AttrValue::String("reading-1".to_owned())),
                ("source".to_owned(), switchyard_event::AttrValue::String("/home".to_owned())),
                ("type".to_owned(), switchyard_event::AttrValue::String("reading".to_owned())),
                ("region".to_owned(), switchyard_event::AttrValue::String("eu".to_owned())),
            ],
            Some(switchyard_event::Data { form: DataForm::Binary, bytes: Bytes::from_static(b"\x00raw") }),
        )
        .unwrap();
        let binary = binding::encode_binary(&original);
        let structured = binding::encode_structured(&original);
        for (version, message) in [
            (MqttVersion::V5, &binary),
            (MqttVersion::V5, &structured),
            (MqttVersion::V3_1_1, &binding::MqttMessage { content_type: None, ..structured.clone() }),
        ] {
            let parts = parts(version, message.content_type.as_deref(), &message.user_properties, &message.payload);
            assert_eq!(message_event("ns", "s", parts), MessageEvent::CloudEvent(original.clone()), "{message:?}");
        }
    }

    #[test]
    fn messages_that_claim_to_be_cloudevents_but_are_not_are_wrapped_with_why() {
        let payload = Bytes::from_static(b"{nope");
        let cases: [(MqttVersion, Option<&str>, Properties); 3] = [
            (MqttVersion::V5, Some("application/cloudevents+json"), vec![]),
            (MqttVersion::V5, None, props(&[("specversion", "1.0"), ("type", "t")])),
            (MqttVersion::V3_1_1, None, vec![]),
        ];
        let v3_payload = Bytes::from_static(b"{\"specversion\": 1}");
        for (version, content_type, properties) in cases {
            let payload = if version == MqttVersion::V3_1_1 { &v3_payload } else { &payload };
            let event = message_event("ns", "s", parts(version, content_type, &properties, payload));
            let MessageEvent::WrappedInvalid { event, .. } = event else { panic!("{event:?}") };
            assert_eq!(event.ty(), EVENT_TYPE);
            assert_eq!(event.data().map(|d| d.bytes.clone()).as_ref(), Some(payload), "the payload, as it was");
            if content_type.is_some() {
                assert!(event.datacontenttype().is_none());
                assert_eq!(event.get_str("mqttpropertycontenttype"), Some("application/cloudevents+json"));
            }
        }
    }

    #[test]
    fn messages_no_event_can_carry_are_said_so() {
        let payload = Bytes::new();
        let many: Vec<(String, String)> = (0..70_000).map(|i| (format!("h{i}"), "v".to_owned())).collect();
        let event = message_event("ns", "s", parts(MqttVersion::V5, None, &many, &payload));
        assert!(matches!(event, MessageEvent::Unmappable(_)), "{event:?}");
        let message = PublishParts { topic: "bad\ntopic", ..parts(MqttVersion::V5, None, &[], &payload) };
        assert!(matches!(message_event("ns", "s", message), MessageEvent::Unmappable(_)));
    }
}
