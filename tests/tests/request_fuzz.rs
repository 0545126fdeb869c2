//! A bounded, deterministic request fuzzer against the live server: a few thousand requests,
//! each a valid request of one of the routes (ingest in its three content modes, the REST
//! API, filters, webhooks) broken in one to three ways: the request line, the headers (huge,
//! duplicated, invalid bytes, bad or conflicting `Content-Length` / `Transfer-Encoding`), the
//! content type, the body, the chunked framing, truncation. It fails on any 5xx answer to
//! one (a client mistake is a 4xx; a 503 must carry `Retry-After`), printing the request, on
//! any panic in the server's log, and if the node does not answer `/healthz` within 100 ms
//! afterwards. `SWITCHYARD_FUZZ_SEED` and `SWITCHYARD_FUZZ_REQUESTS` replay or widen a run.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_tests::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

/// SplitMix64: small, seeded, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap()).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

/// A request under construction: every part can be broken independently.
#[derive(Clone)]
struct Request {
    method: Vec<u8>,
    target: Vec<u8>,
    version: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    /// Send the body chunked (with these chunk sizes as written, `None` for the true size).
    chunked: Option<Vec<Option<Vec<u8>>>>,
    /// Whether `Content-Length` is set from the body when written.
    content_length: bool,
    /// Stop sending after this many bytes (then close the write side): no answer expected.
    truncate_at: Option<usize>,
}

impl Request {
    fn new(method: &str, target: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
        let mut headers = vec![(b"Host".to_vec(), b"fuzz".to_vec())];
        if let Some(content_type) = content_type {
            headers.push((b"Content-Type".to_vec(), content_type.as_bytes().to_vec()));
        }
        Request {
            method: method.as_bytes().to_vec(),
            target: target.as_bytes().to_vec(),
            version: b"HTTP/1.1".to_vec(),
            headers,
            body,
            chunked: None,
            content_length: true,
            truncate_at: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
        self
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.method);
        out.push(b' ');
        out.extend_from_slice(&self.target);
        out.push(b' ');
        out.extend_from_slice(&self.version);
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        match &self.chunked {
            Some(sizes) => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let pieces = sizes.len().max(1);
                let step = self.body.len().div_ceil(pieces).max(1);
                for (i, piece) in self.body.chunks(step).enumerate() {
                    match sizes.get(i).cloned().flatten() {
                        Some(size) => out.extend_from_slice(&size),
                        None => out.extend_from_slice(format!("{:x}", piece.len()).as_bytes()),
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            None => {
                if self.content_length {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
                }
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
        }
        if let Some(at) = self.truncate_at {
            out.truncate(at.min(out.len().saturating_sub(1)));
        }
        out
    }
}

fn structured_event(rng: &mut Rng) -> serde_json::Value {
    json!({"specversion": "1.0", "id": format!("fz-{}", rng.next()), "type": "fuzz.t", "source": "/fuzz", "data": {"n": rng.below(1000)}})
}

/// A valid request of one of the routes.
fn base(rng: &mut Rng) -> Request {
    let name = format!("fz{}", rng.below(50));
    match rng.below(14) {
        0 => Request::new("POST", "/default/b", Some("application/json"), br#"{"hello":"world"}"#.to_vec())
            .header("ce-specversion", "1.0")
            .header("ce-id", &format!("fz-{}", rng.next()))
            .header("ce-type", "fuzz.t")
            .header("ce-source", "/fuzz"),
        1 => Request::new(
            "POST",
            "/default/b",
            Some("application/cloudevents+json"),
            structured_event(rng).to_string().into_bytes(),
        ),
        2 => {
            let events: Vec<_> = (0..1 + rng.below(5)).map(|_| structured_event(rng)).collect();
            Request::new(
                "POST",
                "/default/b",
                Some("application/cloudevents-batch+json"),
                serde_json::to_vec(&events).unwrap(),
            )
        }
        3 => Request::new("POST", "/v1/b", Some("application/cloudevents+json"), structured_event(rng).to_string().into_bytes()),
        4 => Request::new("OPTIONS", "/default/b", None, Vec::new()).header("WebHook-Request-Origin", "fuzz.example"),
        5 => Request::new(
            "PUT",
            &format!("/v1/namespaces/default/brokers/{name}"),
            Some("application/json"),
            br#"{"spec":{"delivery":{"retry":2,"backoffPolicy":"linear","backoffDelay":"PT0.1S"}}}"#.to_vec(),
        ),
        6 => Request::new(
            "PUT",
            &format!("/v1/namespaces/default/triggers/{name}"),
            Some("application/json"),
            json!({"spec": {"broker": "b", "filter": {"attributes": {"type": "fuzz.t"}}, "subscriber": {"uri": "http://127.0.0.1:9/"}}}).to_string().into_bytes(),
        ),
        7 => Request::new(
            "PUT",
            &format!("/v1/namespaces/default/pingsources/{name}"),
            Some("application/json"),
            br#"{"spec":{"schedule":"0 0 1 1 *","data":"tick","sink":{"ref":{"kind":"Broker","name":"b"}}}}"#.to_vec(),
        ),
        8 => Request::new(
            "POST",
            "/v1/filters/test",
            Some("application/json"),
            json!({"filters": [{"prefix": {"type": "fuzz"}}], "event": structured_event(rng)}).to_string().into_bytes(),
        ),
        9 => Request::new(
            "POST",
            "/v1/cesql/evaluate",
            Some("application/json"),
            json!({"expression": "type LIKE 'fuzz.%' AND source = '/fuzz'", "event": structured_event(rng)}).to_string().into_bytes(),
        ),
        10 => Request::new("POST", "/webhooks/github/default/repo", Some("application/json"), br#"{"zen":"fuzz","hook_id":1}"#.to_vec())
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", &format!("d-{}", rng.next()))
            .header("X-Hub-Signature-256", "sha256=00"),
        11 => Request::new("GET", &format!("/v1/namespaces/default/triggers/{name}/deadletters?limit=5"), None, Vec::new()),
        12 => Request::new("DELETE", &format!("/v1/namespaces/default/brokers/{name}"), None, Vec::new()),
        _ => Request::new("GET", "/v1/brokers", None, Vec::new()),
    }
}

const GARBAGE_VALUES: &[&[u8]] = &[
    b"",
    b" ",
    b"\x00",
    b"\x7f\x01",
    b"\xff\xfe\xfd",
    b"\xc3\x28",
    b"%",
    b"%zz",
    b"%00",
    b"=?utf-8?q?x?=",
    b"\"unterminated",
    b"application/cloudevents+json; charset=\x01",
    b"application/cloudevents-batch+json; charset=utf-16",
    b"application/cloudevents+xml",
    b"application/cloudevents",
    b"text/plain; charset",
    b"multipart/form-data; boundary=",
    b"application/x-www-form-urlencoded",
    b"*/*",
    b"1.0",
    b"0.3",
    b"99",
    b"2024-13-45T25:61:61Z",
];

const BAD_LENGTHS: &[&str] =
    &["abc", "-1", "1e3", "0x10", "+5", "99999999999999999999999", "18446744073709551616", "5, 6", "", "1 2"];

const BAD_CHUNK_SIZES: &[&[u8]] =
    &[b"zz", b"-1", b"ffffffffffffffffff", b"", b" 5", b"5;ext=\x01", b"1\r\n", b"0", b"100000", b"7fffffffffffffff"];

const JSON_BREAKERS: &[&[u8]] = &[
    b"{",
    b"[",
    b"null",
    b"[]",
    b"{}",
    b"\"\\ud800\"",
    b"{\"specversion\":\"1.0\"}",
    b"[{\"specversion\":\"1.0\",\"id\":\"\",\"type\":\"\",\"source\":\"\"}]",
    b"{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\",\"data_base64\":\"!!!\"}",
    b"{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\",\"time\":\"yesterday\"}",
    b"{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\",\"knativebrokerttl\":\"-5\"}",
    b"{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\",\"Bad-Name\":1}",
    b"{\"spec\":{\"delivery\":{\"retry\":-1,\"backoffDelay\":\"P99999999999Y\"}}}",
    b"{\"spec\":{\"delivery\":{\"rateLimit\":1e308,\"timeout\":\"PT-1S\"}}}",
    b"{\"spec\":{\"broker\":\"\",\"subscriber\":{\"uri\":\"::\"}}}",
    b"{\"spec\":{\"schedule\":\"* * * * * * * *\",\"sink\":{}}}",
    b"{\"expression\":\"(((((((((((\",\"event\":{}}",
    b"{\"expression\":\"type LIKE '%%%%%%_'\",\"event\":{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\"}}",
    b"{\"filters\":[{\"cesql\":\"1/0 = 1\"}],\"event\":{\"specversion\":\"1.0\",\"id\":\"x\",\"type\":\"t\",\"source\":\"/s\"}}",
    b"{\"filters\":[{\"all\":[{\"any\":[{\"not\":{}}]}]}],\"event\":{}}",
    b"{\"a\":1,\"a\":2}",
    b"1e99999",
    b"\xef\xbb\xbf{}",
];

/// Breaks `request` in one way.
fn mutate(rng: &mut Rng, request: &mut Request) {
    match rng.below(24) {
        // The request line.
        0 => {
            request.method =
                rng.pick(&[&b"GET"[..], b"PATCH", b"BREW", b"get", b"P\x00ST", b"", b"CONNECT", b"TRACE"]).to_vec()
        }
        1 => {
            let targets: &[&[u8]] = &[
                b"*",
                b"",
                b"//",
                b"/%",
                b"/%00/b",
                b"/default/%ff",
                b"/default/b?x=%zz&&&==",
                b"/../../etc/passwd",
                b"/default/b/../../v1/brokers",
                b"http://evil.example/default/b",
                b"/v1/namespaces/-/brokers/-",
                b"/v1/namespaces/default/pingsources/",
                b"/v1/namespaces/default/triggers/x/deadletters?limit=-1&cursor=%ff",
                b"/v1/namespaces/default/triggers/x/deadletters?limit=99999999999999999999",
                b"/webhooks/github/default/repo/extra",
                b"/webhooks//default/repo",
                b"/v1/namespaces/default/NoSuchKind/x",
            ];
            request.target = rng.pick(targets).to_vec();
        }
        2 => {
            let long = "/a".repeat(1 + rng.below(20_000));
            request.target = long.into_bytes();
        }
        3 => {
            request.version =
                rng.pick(&[&b"HTTP/1.0"[..], b"HTTP/0.9", b"HTTP/3.0", b"HTTP/1.1\x00", b"", b"http/1.1"]).to_vec()
        }
        // Headers.
        4 => {
            let size = 1 + rng.below(200_000);
            request.headers.push((b"X-Huge".to_vec(), vec![b'h'; size]));
        }
        5 => {
            for i in 0..rng.below(300) {
                request.headers.push((format!("X-Many-{i}").into_bytes(), b"v".to_vec()));
            }
        }
        6 => {
            if let Some(first) = request.headers.get(rng.below(request.headers.len())).cloned() {
                request.headers.push((first.0, rng.pick(GARBAGE_VALUES).to_vec()));
            }
        }
        7 => {
            let names: &[&[u8]] = &[
                b"Content-Type",
                b"ce-specversion",
                b"ce-id",
                b"ce-type",
                b"ce-source",
                b"ce-time",
                b"ce-knativebrokerttl",
                b"ce-",
                b"ce-Bad Name",
                b"traceparent",
                b"tracestate",
                b"X-GitHub-Event",
                b"X-Hub-Signature-256",
                b"Expect",
                b"Connection",
                b"Host",
            ];
            request.headers.push((rng.pick(names).to_vec(), rng.pick(GARBAGE_VALUES).to_vec()));
        }
        8 => {
            let (name_length, value_length) = (1 + rng.below(8), rng.below(16));
            let name = rng.bytes(name_length);
            request.headers.push((name, rng.bytes(value_length)));
        }
        9 => request.headers.push((b"X-No-Colon-Here".to_vec(), Vec::new())),
        10 => request.headers.push((b" X-Folded".to_vec(), b"continued\r\n\tline".to_vec())),
        // Framing: Content-Length and Transfer-Encoding.
        11 => {
            request.content_length = false;
            request.headers.push((b"Content-Length".to_vec(), rng.pick(BAD_LENGTHS).as_bytes().to_vec()));
        }
        12 => {
            let length = request.body.len();
            request.headers.push((b"Content-Length".to_vec(), (length + 1 + rng.below(100)).to_string().into_bytes()));
        }
        13 => request.headers.push((b"Transfer-Encoding".to_vec(), b"chunked".to_vec())),
        14 => {
            let encodings: &[&[u8]] =
                &[b"gzip", b"chunked, chunked", b"identity", b"gzip, chunked", b"chunked;x=1", b"\x00"];
            request.headers.push((b"Transfer-Encoding".to_vec(), rng.pick(encodings).to_vec()));
        }
        15 => request.chunked = Some((0..1 + rng.below(5)).map(|_| None).collect()),
        16 => {
            let mut sizes: Vec<Option<Vec<u8>>> = (0..1 + rng.below(5)).map(|_| None).collect();
            let at = rng.below(sizes.len());
            sizes[at] = Some(rng.pick(BAD_CHUNK_SIZES).to_vec());
            request.chunked = Some(sizes);
        }
        // Content type and body.
        17 => {
            request.headers.retain(|(name, _)| !name.eq_ignore_ascii_case(b"content-type"));
            if rng.below(3) > 0 {
                request.headers.push((b"Content-Type".to_vec(), rng.pick(GARBAGE_VALUES).to_vec()));
            }
        }
        18 => request.body = rng.pick(JSON_BREAKERS).to_vec(),
        19 => {
            let cut = rng.below(request.body.len().max(1));
            request.body.truncate(cut);
        }
        20 => {
            let at = rng.below(request.body.len().max(1));
            let noise_length = 1 + rng.below(8);
            let noise = rng.bytes(noise_length);
            let at = at.min(request.body.len());
            request.body.splice(at..at, noise);
        }
        21 => {
            let depth = 1 + rng.below(5000);
            let mut nested = "[".repeat(depth).into_bytes();
            nested.extend("]".repeat(depth).into_bytes());
            request.body = nested;
        }
        22 => {
            let size = 1 + rng.below(3 << 20);
            request.body = vec![b'{'; size];
        }
        // Truncation anywhere.
        _ => {
            let length = request.wire().len();
            request.truncate_at = Some(rng.below(length));
        }
    }
}

/// What the server answered to one request: its status and whether it has `Retry-After`, or
/// nothing.
async fn send(address: &str, request: &Request) -> Option<(u16, bool)> {
    let mut stream = TcpStream::connect(address).await.ok()?;
    let wire = request.wire();
    // A server may answer (and stop reading) before the whole request is in: keep going.
    let _ = stream.write_all(&wire).await;
    if request.truncate_at.is_some() {
        let _ = stream.shutdown().await;
    }
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let status = head.split(' ').nth(1).and_then(|status| status.parse().ok())?;
            return Some((status, head.contains("\r\nretry-after:")));
        }
        match timeout(deadline.saturating_duration_since(Instant::now()), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buffer[..n]),
            _ => return None,
        }
    }
}

/// The request as text for a failure message, bounded.
fn shown(request: &Request) -> String {
    let wire = request.wire();
    let text: String = wire.iter().take(600).flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
    let more = wire.len().saturating_sub(600);
    if more > 0 {
        format!("{text}… ({more} more bytes)")
    } else {
        text
    }
}

#[tokio::test]
async fn malformed_requests_get_4xx_and_never_crash_or_stall_the_node() {
    let seed = std::env::var("SWITCHYARD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe_u64);
    let count = std::env::var("SWITCHYARD_FUZZ_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000usize);
    let server = Server::start_with_env(&[
        ("SWITCHYARD_HTTP_HEADER_READ_TIMEOUT_SECS", "2"),
        ("SWITCHYARD_HTTP_BODY_READ_TIMEOUT_SECS", "2"),
        ("SWITCHYARD_MAX_EVENT_BYTES", "65536"),
        ("SWITCHYARD_MAX_BATCH_BYTES", "262144"),
    ])
    .await;
    server.broker("default", "b").await;
    server.broker("v1", "b").await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/githubsources/repo",
            json!({"spec": {"ownerAndRepository": "o/r", "eventTypes": ["push"], "secretToken": {"value": "s"}, "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert!(status.is_success(), "github source: {status} {body}");
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut rng = Rng(seed);
    let requests: Vec<Request> = (0..count)
        .map(|_| {
            let mut request = base(&mut rng);
            for _ in 0..1 + rng.below(3) {
                mutate(&mut rng, &mut request);
            }
            request
        })
        .collect();
    let started = Instant::now();
    let parallel = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for (index, request) in requests.into_iter().enumerate() {
        let permit = parallel.clone().acquire_owned().await.unwrap();
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let status = send(&address, &request).await;
            drop(permit);
            (index, request, status)
        }));
    }
    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for task in tasks {
        let (index, request, answer) = task.await.unwrap();
        *statuses.entry(answer.map(|(status, _)| status)).or_default() += 1;
        // A 503 with `Retry-After` is "not now" (a declaration stored but not active yet).
        if answer.is_some_and(|(status, retry_after)| status >= 500 && !(status == 503 && retry_after)) {
            failures.push(format!("#{index} got {answer:?}: {}", shown(&request)));
        }
    }
    eprintln!("{count} requests (seed {seed:#x}) in {:?}; statuses: {statuses:?}", started.elapsed());
    assert!(failures.is_empty(), "5xx answers to client mistakes (seed {seed:#x}):\n{}", failures.join("\n"));
    server.assert_healthy().await;
}
