//! Decode and encode costs on the ingest path: one event with eight `ce-` headers and a 1 KiB
//! JSON body, in binary and structured mode, and the storage codec round trip.
//!
//! Run: `cargo bench -p switchyard-event --bench decode -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard_event::{http as ce_http, storage, AttrValue, Data, DataForm, Event};

/// A JSON object of exactly 1024 bytes.
fn json_body() -> Bytes {
    let mut body = String::from("{\"items\":[");
    let mut i = 0;
    while body.len() < 950 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("{{\"id\":{i},\"name\":\"item-{i}\",\"ok\":true}}"));
        i += 1;
    }
    body.push_str("],\"pad\":\"");
    // Pad the closing string so the whole text is 1 KiB.
    let closing = "\"}";
    while body.len() + closing.len() < 1024 {
        body.push('x');
    }
    body.push_str(closing);
    Bytes::from(body)
}

/// Eight attributes travel as `ce-` headers; `datacontenttype` as `Content-Type`.
fn event() -> Event {
    let s = |v: &str| AttrValue::String(v.to_owned());
    let attributes = vec![
        ("specversion".to_owned(), s("1.0")),
        ("id".to_owned(), s("8f1f6e4c-6a3b-4f5e-9a43-0d5b2b1c7e11")),
        ("source".to_owned(), s("https://orders.example.com/api/v1")),
        ("type".to_owned(), s("com.example.order.created")),
        ("time".to_owned(), s("2024-05-01T10:00:00.123+02:00")),
        ("subject".to_owned(), s("orders/12345")),
        ("datacontenttype".to_owned(), s("application/json")),
        ("traceparent".to_owned(), s("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
        ("tenant".to_owned(), s("acme corp")),
    ];
    let data = Data { form: DataForm::Json, bytes: json_body() };
    Event::new(attributes, Some(data)).expect("valid benchmark event")
}

fn benches(c: &mut Criterion) {
    let event = event();
    let (headers, body) = ce_http::encode_binary(&event, ce_http::HeaderEncoding::Compatible);
    assert_eq!(headers.keys().filter(|n| n.as_str().starts_with("ce-")).count(), 8);
    assert_eq!(body.len(), 1024);
    let (content_type, structured_body) = ce_http::encode_structured(&event);
    let mut structured_headers = ::http::HeaderMap::new();
    structured_headers.insert(::http::header::CONTENT_TYPE, content_type);
    let stored = Bytes::from(storage::encode(&event).unwrap());

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_binary_8_headers_1k_json", |b| {
        b.iter(|| ce_http::decode_request(black_box(&headers), black_box(body.clone())))
    });
    group.bench_function("decode_structured_1k_json", |b| {
        b.iter(|| ce_http::decode_request(black_box(&structured_headers), black_box(structured_body.clone())))
    });
    group.bench_function("encode_binary", |b| {
        b.iter(|| ce_http::encode_binary(black_box(&event), ce_http::HeaderEncoding::Compatible))
    });
    group.bench_function("encode_binary_percent", |b| {
        b.iter(|| ce_http::encode_binary(black_box(&event), ce_http::HeaderEncoding::Percent))
    });
    group.bench_function("encode_structured", |b| b.iter(|| ce_http::encode_structured(black_box(&event))));
    group.bench_function("storage_encode_decode", |b| {
        b.iter(|| {
            let bytes = Bytes::from(storage::encode(black_box(&event)).unwrap());
            storage::decode(&bytes)
        })
    });
    group.bench_function("storage_decode", |b| b.iter(|| storage::decode(black_box(&stored))));
    group.finish();
}

criterion_group!(decode, benches);
criterion_main!(decode);
