//! RedisStreamSource end to end against the real Redis of `deploy/redis/local.sh` (the shared
//! instance at `$SWITCHYARD_TEST_REDIS`, started if it does not answer; a private one for the
//! outage): plain entries are wrapped as Knative wraps them, entries laid out as CloudEvents
//! pass through, entries are acknowledged only once their events are durable (a `kill -9`
//! mid-stream loses none), entries other consumers left pending are claimed, and the server
//! going away is survived with the right status.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value as RedisValue;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{free_port, fresh, local_sh, local_sh_down, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(45);
const KIND: &str = "RedisStreamSource";

/// The shared Redis: `$SWITCHYARD_TEST_REDIS` (what `deploy/redis/local.sh up` prints), default
/// `redis://127.0.0.1:16379`; started with the script when it does not answer.
async fn shared_redis() -> String {
    static STARTING: Mutex<()> = Mutex::new(());
    let address = std::env::var("SWITCHYARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:16379".to_owned());
    if connect(&address).await.is_err() {
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let port = address.rsplit(':').next().unwrap_or("16379").trim_end_matches('/').to_owned();
        local_sh("redis", "up", &[("REDIS_PORT", port)]);
    }
    address
}

/// A Redis of this test alone, on a free port with its data in a temporary directory: it may
/// be stopped. Deleted when dropped.
struct PrivateRedis {
    env: Vec<(&'static str, String)>,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = vec![("REDIS_PORT", free_port().to_string()), ("REDIS_DIR", dir.path().display().to_string())];
        let address = local_sh("redis", "up", &env);
        PrivateRedis { env, address, _dir: dir }
    }

    fn stop(&self) {
        local_sh("redis", "stop", &self.env);
    }

    fn up(&self) {
        local_sh("redis", "up", &self.env);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        local_sh_down("redis", &self.env);
    }
}

async fn connect(address: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(address)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async::<String>(&mut connection).await?;
    Ok(connection)
}

/// Adds an entry; its ID.
async fn xadd(connection: &mut MultiplexedConnection, stream: &str, fields: &[(&str, &[u8])]) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd.query_async(connection).await.expect("XADD")
}

/// Waits until the source's group exists (the source created it from `$`: entries added from
/// now on are its).
async fn wait_for_group(connection: &mut MultiplexedConnection, stream: &str, group: &str, server: &Server) {
    let deadline = Instant::now() + WAIT;
    loop {
        let groups: redis::RedisResult<RedisValue> =
            redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(connection).await;
        if format!("{groups:?}").contains(group) {
            return;
        }
        assert!(Instant::now() < deadline, "group {group} never created on {stream}: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn redis_source(server: &Server, name: &str, spec: Value) {
    let mut full = json!({
        "stream": "s",
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
    });
    for (key, value) in spec.as_object().expect("an object") {
        full[key] = value.clone();
    }
    let (status, body) = server
        .put(
            &format!("/v1/namespaces/default/redisstreamsources/{name}"),
            json!({
                "apiVersion": "sources.knative.dev/v1alpha1",
                "kind": KIND,
                "metadata": {"name": name, "namespace": "default"},
                "spec": full,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A server with broker `b` and a trigger sending everything to a new subscriber.
async fn setup() -> (Server, Subscriber) {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    (server, subscriber)
}

async fn wait_for_condition(server: &Server, name: &str, status: &str, reason: Option<&str>) {
    let path = format!("/v1/namespaces/default/redisstreamsources/{name}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(&path).await;
        let condition = &body["status"]["conditions"][0];
        if condition["status"] == status && reason.is_none_or(|reason| condition["reason"] == reason) {
            return;
        }
        assert!(Instant::now() < deadline, "expected {status} {reason:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn plain_entries_are_wrapped_and_cloudevents_entries_pass_through() {
    let address = shared_redis().await;
    let mut redis = connect(&address).await.expect("redis");
    let (stream, group) = (fresh("orders"), fresh("group"));
    let (server, subscriber) = setup().await;
    redis_source(&server, "orders", json!({"address": address, "stream": stream, "group": group})).await;
    wait_for_group(&mut redis, &stream, &group, &server).await;

    let plain = xadd(&mut redis, &stream, &[("sku", b"A1"), ("qty", b"2")]).await;
    let binary_entry = xadd(
        &mut redis,
        &stream,
        &[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"order-1"),
            ("ce_source", b"/shop"),
            ("ce_type", b"order.created"),
            ("ce_region", b"eu"),
            ("content-type", b"application/octet-stream"),
            ("data", &[0, 1, 2, 0xff]),
        ],
    )
    .await;
    let structured = json!({"specversion": "1.0", "id": "order-2", "type": "order.shipped", "source": "/shop",
                            "datacontenttype": "text/plain", "data": "by boat"})
    .to_string();
    xadd(&mut redis, &stream, &[("content-type", b"application/cloudevents+json"), ("data", structured.as_bytes())])
        .await;
    let dapr = json!({"specversion": "1.0", "id": "order-3", "type": "com.dapr.event.sent", "source": "checkout",
                      "datacontenttype": "application/json", "data": {"orderId": 3}, "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    .to_string();
    xadd(&mut redis, &stream, &[("data", dapr.as_bytes())]).await;
    let invalid = xadd(&mut redis, &stream, &[("ce_specversion", b"1.0"), ("ce_type", b"t"), ("data", b"x")]).await;
    let expected: BTreeSet<String> =
        [&plain, "order-1", "order-2", "order-3", &invalid].into_iter().map(str::to_owned).collect();
    subscriber.wait_for_ids(&expected, &server).await;
    let received = subscriber.received();
    let by_id = |id: &str| received.iter().find(|r| r.header("ce-id") == Some(id)).cloned().expect("received");

    let wrapped = by_id(&plain);
    assert_eq!(wrapped.header("ce-type"), Some("dev.knative.sources.redisstream"));
    assert_eq!(wrapped.attribute("source"), Some(format!("{}/{stream}", address.trim_end_matches('/'))));
    assert_eq!(wrapped.header("content-type"), Some("application/json"));
    assert!(wrapped.header("ce-time").is_some_and(|t| t.ends_with('Z')), "the entry's time");
    assert_eq!(&wrapped.body[..], br#"["sku","A1","qty","2"]"#, "fields and values, as Knative lays them out");

    let binary = by_id("order-1");
    assert!(!subscriber.ids().contains(&binary_entry), "a CloudEvent keeps its own id");
    assert_eq!(binary.header("ce-type"), Some("order.created"));
    assert_eq!(binary.header("ce-source"), Some("/shop"));
    assert_eq!(binary.header("ce-region"), Some("eu"));
    assert_eq!(binary.header("content-type"), Some("application/octet-stream"));
    assert_eq!(&binary.body[..], &[0, 1, 2, 0xff], "the data, byte for byte");
    let structured = by_id("order-2");
    assert_eq!(structured.header("ce-type"), Some("order.shipped"));
    assert_eq!(&structured.body[..], b"by boat");
    let dapr = by_id("order-3");
    assert_eq!(dapr.header("ce-source"), Some("checkout"));
    assert!(dapr.header("ce-traceparent").or(dapr.header("traceparent")).is_some(), "{dapr:?}");
    assert_eq!(serde_json::from_slice::<Value>(&dapr.body).unwrap(), json!({"orderId": 3}));
    let invalid = by_id(&invalid);
    assert_eq!(invalid.header("ce-type"), Some("dev.knative.sources.redisstream"), "wrapped, not lost");

    let bad = server
        .metric("switchyard_source_bad_messages_total", &[("kind", KIND), ("reason", "invalid_cloudevent")])
        .await;
    assert_eq!(bad, Some(1.0));
    wait_for_condition(&server, "orders", "True", None).await;
    // Everything delivered is acknowledged: nothing stays pending.
    let deadline = Instant::now() + WAIT;
    loop {
        let pending: RedisValue =
            redis::cmd("XPENDING").arg(&stream).arg(&group).query_async(&mut redis).await.expect("XPENDING");
        if matches!(&pending, RedisValue::Array(parts) if parts.first() == Some(&RedisValue::Int(0))) {
            break;
        }
        assert!(Instant::now() < deadline, "still pending: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kill_mid_stream_loses_no_entry() {
    let address = shared_redis().await;
    let mut redis = connect(&address).await.expect("redis");
    let (stream, group) = (fresh("stream"), fresh("group"));
    let (mut server, subscriber) = setup().await;
    redis_source(&server, "stream", json!({"address": address, "stream": stream, "group": group, "count": 20})).await;
    wait_for_group(&mut redis, &stream, &group, &server).await;
    let mut expected = BTreeSet::new();
    for i in 0..300 {
        expected.insert(xadd(&mut redis, &stream, &[("n", i.to_string().as_bytes())]).await);
    }
    // Mid-stream: some entries are taken, some are not, some are in flight.
    subscriber.wait_for(30, WAIT).await;
    server.kill9();
    for i in 300..400 {
        expected.insert(xadd(&mut redis, &stream, &[("n", i.to_string().as_bytes())]).await);
    }
    server.restart().await;
    subscriber.wait_for_ids(&expected, &server).await;
}

#[tokio::test]
async fn entries_other_consumers_left_pending_are_claimed() {
    let address = shared_redis().await;
    let mut redis = connect(&address).await.expect("redis");
    let (stream, group) = (fresh("claim"), fresh("group"));
    // A group from the start of the stream, and a consumer that read five entries and crashed.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(&group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await
        .expect("XGROUP CREATE");
    let mut expected = BTreeSet::new();
    for i in 0..5 {
        expected.insert(xadd(&mut redis, &stream, &[("n", i.to_string().as_bytes())]).await);
    }
    let _: RedisValue = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("crashed")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut redis)
        .await
        .expect("XREADGROUP");
    let (server, subscriber) = setup().await;
    redis_source(
        &server,
        "claims",
        json!({"address": address, "stream": stream, "group": group, "claimMinIdleMs": 300}),
    )
    .await;
    subscriber.wait_for_ids(&expected, &server).await;
}

#[tokio::test]
async fn the_server_going_away_and_coming_back_is_survived() {
    let redis_server = PrivateRedis::start();
    let address = redis_server.address.clone();
    let mut redis = connect(&address).await.expect("redis");
    let (stream, group) = (fresh("outage"), fresh("group"));
    let (server, subscriber) = setup().await;
    redis_source(&server, "outage", json!({"address": address, "stream": stream, "group": group})).await;
    wait_for_group(&mut redis, &stream, &group, &server).await;
    let before = xadd(&mut redis, &stream, &[("n", b"before")]).await;
    subscriber.wait_for_ids(&BTreeSet::from([before]), &server).await;

    redis_server.stop();
    wait_for_condition(&server, "outage", "False", Some("RedisUnavailable")).await;
    redis_server.up();
    let mut redis = connect(&address).await.expect("redis again");
    let mut expected = BTreeSet::new();
    for i in 0..10 {
        expected.insert(xadd(&mut redis, &stream, &[("n", i.to_string().as_bytes())]).await);
    }
    subscriber.wait_for_ids(&expected, &server).await;
    wait_for_condition(&server, "outage", "True", None).await;
    assert!(
        server.metric("switchyard_source_reconnects_total", &[("kind", KIND)]).await.unwrap_or(0.0) >= 1.0,
        "the reconnects are counted"
    );
}

#[tokio::test]
async fn specs_are_checked_at_declaration() {
    let server = Server::start().await;
    for (spec, field) in [
        (json!({"address": "rediss://127.0.0.1:6379", "stream": "s"}), "spec.address"),
        (json!({"address": "redis://127.0.0.1:6379", "stream": ""}), "spec.stream"),
        (json!({"address": "redis://127.0.0.1:6379", "stream": "s", "count": 0}), "spec.count"),
        (
            json!({"address": "redis://127.0.0.1:6379", "stream": "s", "dialOptions": {"useTLS": true}}),
            "spec.dialOptions.useTLS",
        ),
    ] {
        let (status, body) = server
            .put(
                "/v1/namespaces/default/redisstreamsources/bad",
                json!({"apiVersion": "sources.knative.dev/v1alpha1", "kind": KIND,
                       "metadata": {"name": "bad", "namespace": "default"}, "spec": spec}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {body}");
        assert!(body.to_string().contains(field), "{spec}: {body}");
    }
}
