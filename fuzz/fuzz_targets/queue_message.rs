//! Untrusted messages read by the message-queue sources (anyone who can publish to a subject,
//! queue, topic or stream writes them). The first byte picks the protocol — NATS, RabbitMQ,
//! MQTT 5, MQTT 3.1.1, Redis Streams — then `name:value` header lines (NATS headers, AMQP
//! headers, MQTT User Properties, Redis fields), then, after a blank line, the payload.
//!
//! The mappings must never panic, and whatever becomes an event survives the storage codec the
//! broker's log keeps it in, unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard_event::mqtt::MqttVersion;
use switchyard_event::storage;
use switchyard_sources::{mqtt, nats, rabbitmq, redis_streams};

fuzz_target!(|input: &[u8]| {
    let Some((&protocol, rest)) = input.split_first() else { return };
    let split = rest.windows(2).position(|w| w == b"\n\n");
    let (head, payload) = match split {
        Some(at) => (&rest[..at], Bytes::copy_from_slice(&rest[at + 2..])),
        None => (rest, Bytes::new()),
    };
    let headers: Vec<(String, Vec<u8>)> = head
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name.to_owned(), line[colon + 1..].to_vec()))
        })
        .collect();
    let content_type = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, value)| std::str::from_utf8(value).ok());
    let event = match protocol % 5 {
        0 => nats::message_event(
            "fuzz",
            "nats",
            nats::MessageParts {
                subject: "orders.created",
                headers: &headers,
                payload: &payload,
                origin: nats::Origin::JetStream { stream: "ORDERS", sequence: 7, published_ms: Some(0) },
            },
        ),
        1 => {
            let amqp_headers: Vec<(String, Option<Vec<u8>>)> =
                headers.iter().map(|(name, value)| (name.clone(), Some(value.clone()))).collect();
            rabbitmq::message_event(
                "fuzz",
                "rabbit",
                rabbitmq::MessageParts {
                    queue: "orders",
                    exchange: "shop",
                    routing_key: "order.created",
                    message_id: None,
                    content_type,
                    timestamp: Some(0),
                    headers: &amqp_headers,
                    body: &payload,
                },
            )
        }
        2 | 3 => {
            let version = if protocol % 5 == 2 { MqttVersion::V5 } else { MqttVersion::V3_1_1 };
            let properties: Vec<(String, String)> = headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
                .filter_map(|(name, value)| Some((name.clone(), String::from_utf8(value.clone()).ok()?)))
                .collect();
            mqtt::message_event(
                "fuzz",
                "mqtt",
                mqtt::PublishParts {
                    version,
                    topic: "sensors/1/temperature",
                    content_type,
                    user_properties: &properties,
                    payload: &payload,
                },
            )
        }
        _ => {
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> =
                headers.iter().map(|(name, value)| (name.as_bytes().to_vec(), value.clone())).collect();
            if !payload.is_empty() {
                fields.push((b"data".to_vec(), payload.to_vec()));
            }
            let entry = redis_streams::Entry { id: "1700000000000-0".to_owned(), fields };
            redis_streams::entry_event("redis://127.0.0.1:6379/audit", &entry)
        }
    };
    let Some(event) = event.into_event() else { return };
    // What a source sends is appended to the log: it must come back as it went in.
    if let Ok(stored) = storage::encode(&event) {
        assert_eq!(storage::decode(&Bytes::from(stored)).expect("a stored event decodes"), event);
    }
});
