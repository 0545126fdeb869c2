//! RedisStreamSource (`sources.knative.dev/v1alpha1`, Knative's `eventing-redis` shape): the
//! entries of a Redis stream, read through a consumer group, as CloudEvents: entries laid out
//! as CloudEvents pass through, others are wrapped as Knative wraps them ([`entry`]).
//!
//! **At least once from the edge**: an entry is acknowledged (`XACK`) only after its event is
//! durable in the sink. Until then it stays in the consumer group's pending list, under this
//! source's consumer name (`switchyard-<uid>`, the same on every node and after every
//! restart); a run reads that pending list first (`XREADGROUP ... 0`), so a crash in between
//! delivers the entry again, with the same `id`.
//!
//! **Entries left by other consumers** of the group (a Knative adapter, a consumer renamed)
//! are claimed with `XAUTOCLAIM` once they have been idle for `claimMinIdleMs`.
//!
//! **The group** is created when missing (`XGROUP CREATE <stream> <group> $ MKSTREAM`, as
//! Knative does): a new group starts with the entries added after it; an existing group is
//! used as it is (create it from `0` beforehand to read a stream's backlog).

mod entry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, IntoConnectionInfo, RedisError, Value};
use serde::{Deserialize, Serialize};
use switchyard_meta::ValidationError;

use crate::message::{self, BadMessages};
use crate::resource::{
    canonical, check_common, is_env_name, secret_from_env, typed_spec, CeOverrides, Declared, SinkSpec,
};
use crate::runtime::{RunContext, Stopped};
use crate::{Activity, Behaviour, Clients, NotReady, SourceKind};

pub use entry::{entry_event, event_source, Entry, EVENT_TYPE};

/// How long one `XREADGROUP` waits for new entries before the loop looks around (claims).
const BLOCK: Duration = Duration::from_secs(1);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take beyond [`BLOCK`] before the connection counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of `claimMinIdleMs`: a minute, Redis' usual advice.
const DEFAULT_CLAIM_MIN_IDLE_MS: i64 = 60_000;
/// The longest `claimMinIdleMs`: a day.
const MAX_CLAIM_MIN_IDLE_MS: i64 = 86_400_000;
/// The reason while the server cannot be reached or refuses.
const UNAVAILABLE: &str = "RedisUnavailable";

/// The RedisStreamSource kind.
pub struct RedisStream;

/// `spec` of a RedisStreamSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisStreamSourceSpec {
    /// The server: `redis://[user:password@]host[:port][/db]` (TLS, `rediss://`, is refused).
    #[serde(default)]
    pub address: String,
    /// The stream to read.
    #[serde(default)]
    pub stream: String,
    /// The consumer group (default `switchyard-<uid>`); created from `$` when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Knative's number of consumers: accepted; Switchyard runs one consumer per source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<i32>,
    /// Knative's connection options: `password` as `{"env": "NAME"}` (an environment variable
    /// of the server); TLS and Kubernetes secret references are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_options: Option<RedisDialOptions>,
    /// Entries read at once and held unacknowledged at most (`XREADGROUP COUNT`, `XAUTOCLAIM
    /// COUNT`): 1 to 10000, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// How long an entry of another consumer stays pending before this source claims it
    /// (`XAUTOCLAIM` min idle time), in milliseconds: 1 to 86400000, default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_min_idle_ms: Option<i64>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// Knative's `dialOptions`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedisDialOptions {
    /// The password: `{"env": "NAME"}`, the environment variable of the server holding it
    /// (read when the source starts). Knative's object reference is refused, `{}` is none.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<serde_json::Value>,
    /// TLS: refused when `true` (this build's Redis client has no TLS).
    #[serde(default, rename = "useTLS", skip_serializing_if = "Option::is_none")]
    pub use_tls: Option<bool>,
    /// TLS verification: refused when `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_verify: Option<bool>,
    /// TLS client certificate: refused.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<serde_json::Value>,
    /// TLS client key: refused.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<serde_json::Value>,
    /// TLS server CA: refused.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<serde_json::Value>,
}

impl RedisStreamSourceSpec {
    /// The address, checked.
    fn address(&self) -> Result<url::Url, ValidationError> {
        let field = "spec.address";
        let address = self.address.trim();
        if address.is_empty() {
            return Err(ValidationError::field(field, "is required: 'redis://host:port'".to_owned()));
        }
        let url = url::Url::parse(address)
            .map_err(|e| ValidationError::field(field, format!("'{address}' is not a URL: {e}")))?;
        match url.scheme() {
            "redis" => {}
            "rediss" => {
                return Err(ValidationError::field(
                    field,
                    format!("'{address}' asks for TLS, which this build's Redis client does not have"),
                ))
            }
            other => {
                return Err(ValidationError::field(
                    field,
                    format!("'{address}': scheme '{other}' is not 'redis' (redis://host:port)"),
                ))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ValidationError::field(field, format!("'{address}' names no host")));
        }
        let db = url.path().trim_matches('/');
        if !db.is_empty() && db.parse::<u16>().is_err() {
            return Err(ValidationError::field(field, format!("'{address}': '{db}' is not a database number")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ValidationError::field(field, format!("'{address}' has options Switchyard does not read")));
        }
        url.as_str()
            .into_connection_info()
            .map_err(|e| ValidationError::field(field, format!("'{address}' is not a Redis address: {e}")))?;
        Ok(url)
    }

    /// The environment variable holding the password, if one is named.
    fn password_env(&self) -> Result<Option<&str>, ValidationError> {
        let field = "spec.dialOptions.password";
        let Some(password) = self.dial_options.as_ref().and_then(|options| options.password.as_ref()) else {
            return Ok(None);
        };
        let Some(object) = password.as_object() else {
            return Err(ValidationError::field(
                field,
                format!("'{password}' is not an object like {{\"env\": \"NAME\"}}"),
            ));
        };
        if object.is_empty() {
            return Ok(None);
        }
        match (object.len(), object.get("env").and_then(serde_json::Value::as_str)) {
            (1, Some(env)) if is_env_name(env) => Ok(Some(env)),
            (1, Some(env)) => {
                Err(ValidationError::field("spec.dialOptions.password.env", format!("'{env}' is not an environment variable name")))
            }
            _ => Err(ValidationError::field(
                field,
                format!("'{password}': Kubernetes secrets need Kubernetes: name an environment variable of the server holding the password, {{\"env\": \"NAME\"}}, or give it in the address"),
            )),
        }
    }

    fn check_tls(&self) -> Result<(), ValidationError> {
        let Some(options) = &self.dial_options else { return Ok(()) };
        let refused = |field: &str| {
            Err(ValidationError::field(
                &format!("spec.dialOptions.{field}"),
                "is not supported: this build's Redis client has no TLS".to_owned(),
            ))
        };
        if options.use_tls == Some(true) {
            return refused("useTLS");
        }
        if options.skip_verify == Some(true) {
            return refused("skipVerify");
        }
        for (field, value) in [("cert", &options.cert), ("key", &options.key), ("caCert", &options.ca_cert)] {
            if value.as_ref().is_some_and(|v| !v.is_null() && v != &serde_json::json!({})) {
                return refused(field);
            }
        }
        Ok(())
    }

    fn count(&self) -> Result<u32, ValidationError> {
        message::max_in_flight("spec.count", self.count)
    }

    fn claim_min_idle(&self) -> Result<Duration, ValidationError> {
        match self.claim_min_idle_ms {
            None => Ok(Duration::from_millis(DEFAULT_CLAIM_MIN_IDLE_MS as u64)),
            Some(ms) if (1..=MAX_CLAIM_MIN_IDLE_MS).contains(&ms) => Ok(Duration::from_millis(ms as u64)),
            Some(ms) => Err(ValidationError::field(
                "spec.claimMinIdleMs",
                format!("'{ms}' is not between 1 and {MAX_CLAIM_MIN_IDLE_MS} (milliseconds)"),
            )),
        }
    }
}

/// A name Redis tools show as it is: printable text without spaces, up to `max` bytes.
fn check_name(field: &str, name: &str, what: &str, max: usize) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::field(field, format!("is required: the {what}")));
    }
    if name.len() > max || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::field(
            field,
            format!("'{}' is not a {what}: up to {max} bytes of text without spaces", name.escape_debug()),
        ));
    }
    Ok(())
}

impl SourceKind for RedisStream {
    fn kind(&self) -> &'static str {
        "RedisStreamSource"
    }

    fn plural(&self) -> &'static str {
        "redisstreamsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1alpha1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: RedisStreamSourceSpec = typed_spec(spec)?;
        spec.address()?;
        check_name("spec.stream", &spec.stream, "stream name", 1024)?;
        if let Some(group) = &spec.group {
            check_name("spec.group", group, "consumer group name", 256)?;
        }
        if let Some(consumers) = spec.consumers.filter(|n| *n < 1) {
            return Err(ValidationError::field("spec.consumers", format!("'{consumers}' is not a positive number")));
        }
        spec.check_tls()?;
        spec.password_env()?;
        spec.count()?;
        spec.claim_min_idle()?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _clients: &Clients) -> Result<Behaviour, NotReady> {
        let invalid = |message: String| NotReady { reason: "InvalidSpec", message };
        let spec: RedisStreamSourceSpec =
            serde_json::from_value(source.spec.clone()).map_err(|e| invalid(e.to_string()))?;
        let address = spec.address().map_err(|e| invalid(e.to_string()))?;
        let mut server = address.as_str().into_connection_info().map_err(|e| invalid(e.to_string()))?;
        if let Some(env) = spec.password_env().map_err(|e| invalid(e.to_string()))? {
            let password = secret_from_env(env, "the Redis password")?;
            let settings = server.redis_settings().clone().set_password(password);
            server = server.set_redis_settings(settings);
        }
        Ok(Behaviour::Active(Arc::new(Consumer {
            server,
            event_source: event_source(&address, &spec.stream),
            group: spec.group.clone().unwrap_or_else(|| format!("switchyard-{}", source.uid)),
            consumer: format!("switchyard-{}", source.uid),
            stream: spec.stream.clone(),
            count: spec.count().map_err(|e| invalid(e.to_string()))?,
            claim_min_idle: spec.claim_min_idle().map_err(|e| invalid(e.to_string()))?,
        })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<RedisStreamSourceSpec>()
    }
}

/// A running RedisStreamSource.
struct Consumer {
    server: ConnectionInfo,
    stream: String,
    group: String,
    /// This source's consumer name in the group: the same on every run, so that a run finds
    /// the entries an earlier one read but did not acknowledge.
    consumer: String,
    event_source: String,
    count: u32,
    claim_min_idle: Duration,
}

/// What one read gave: entries to deliver, IDs of entries deleted from the stream while
/// pending (nothing to deliver, only to acknowledge), and where a claim goes on.
#[derive(Debug, Default, PartialEq)]
struct Read {
    entries: Vec<Entry>,
    deleted: Vec<String>,
    /// `XAUTOCLAIM`'s next cursor; `None` once it went round the whole pending list.
    cursor: Option<String>,
}

/// Where the next read comes from.
enum Next {
    /// This consumer's own pending entries (`XREADGROUP ... 0`).
    OwnPending,
    /// Entries idle too long in other consumers' pending lists (`XAUTOCLAIM`), from a cursor.
    Claim(String),
    /// New entries (`XREADGROUP ... >`).
    New,
}

impl Consumer {
    /// Connects, and creates the group if it is missing.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let client = redis::Client::open(self.server.clone())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(BLOCK + REPLY_TIMEOUT));
        let mut connection = client.get_multiplexed_async_connection_with_config(&config).await?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async::<()>(&mut connection)
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => Err(error),
            _ => Ok(connection),
        }
    }

    async fn read(&self, connection: &mut MultiplexedConnection, next: &Next) -> Result<Read, RedisError> {
        let count = self.count;
        let read_group = |from: &str| {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(&self.group).arg(&self.consumer).arg("COUNT").arg(count);
            if from == ">" {
                cmd.arg("BLOCK").arg(BLOCK.as_millis() as u64);
            }
            cmd.arg("STREAMS").arg(&self.stream).arg(from);
            cmd
        };
        match next {
            Next::OwnPending => Ok(parse_read_reply(&read_group("0").query_async(connection).await?)?),
            Next::New => Ok(parse_read_reply(&read_group(">").query_async(connection).await?)?),
            Next::Claim(cursor) => {
                let reply: Value = redis::cmd("XAUTOCLAIM")
                    .arg(&self.stream)
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(self.claim_min_idle.as_millis() as u64)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(connection)
                    .await?;
                Ok(parse_claim_reply(&reply)?)
            }
        }
    }

    /// Reads, sends, acknowledges, until stopped or the connection fails.
    async fn pump(
        &self,
        context: &RunContext,
        connection: &mut MultiplexedConnection,
        bad: &mut BadMessages,
    ) -> Result<RedisError, Stopped> {
        // A run starts with what an earlier run read but did not acknowledge, then claims
        // what other consumers left, then reads new entries, claiming again now and then.
        let mut next = Next::OwnPending;
        let claim_every = (self.claim_min_idle / 2).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut next_claim = Instant::now();
        loop {
            if matches!(next, Next::New) && Instant::now() >= next_claim {
                next = Next::Claim("0-0".to_owned());
            }
            let read = tokio::select! {
                read = self.read(connection, &next) => read,
                () = context.stopped() => return Err(Stopped),
            };
            let read = match read {
                Ok(read) => read,
                Err(error) => return Ok(error),
            };
            // The cursor a claim goes on from, before `read` is taken apart.
            next = match next {
                Next::OwnPending if read.entries.is_empty() && read.deleted.is_empty() => Next::Claim("0-0".to_owned()),
                Next::Claim(_) => match read.cursor.clone() {
                    Some(cursor) => Next::Claim(cursor),
                    None => {
                        next_claim = Instant::now() + claim_every;
                        Next::New
                    }
                },
                other => other,
            };
            let mut ids: Vec<&str> = read.deleted.iter().map(String::as_str).collect();
            let events: Vec<_> = read
                .entries
                .iter()
                .filter_map(|entry| {
                    ids.push(&entry.id);
                    let at = format!("stream '{}' entry {}", self.stream, entry.id);
                    bad.event(context, entry_event(&self.event_source, entry), &at)
                })
                .collect();
            if !events.is_empty() {
                context.deliver(events).await?;
            }
            // Durable in the sink: now, and only now, the entries are done.
            if !ids.is_empty() {
                let acked =
                    redis::cmd("XACK").arg(&self.stream).arg(&self.group).arg(&ids).exec_async(connection).await;
                if let Err(error) = acked {
                    // Still pending under this consumer: the next run reads them again.
                    return Ok(error);
                }
            }
        }
    }
}

#[async_trait]
impl Activity for Consumer {
    async fn run(&self, context: RunContext) {
        let mut bad = BadMessages::default();
        loop {
            let Ok(mut connection) = message::connect(&context, UNAVAILABLE, || self.connect()).await else { return };
            context.report(None);
            match self.pump(&context, &mut connection, &mut bad).await {
                Ok(error) => message::lost(&context, UNAVAILABLE, &error),
                Err(Stopped) => return,
            }
        }
    }
}

/// A reply that is not what the command returns.
#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from the server: {0}")]
struct UnexpectedReply(String);

impl From<UnexpectedReply> for RedisError {
    fn from(error: UnexpectedReply) -> RedisError {
        RedisError::from((redis::ErrorKind::UnexpectedReturnType, "unexpected reply", error.0))
    }
}

fn unexpected(what: &str) -> UnexpectedReply {
    UnexpectedReply(what.to_owned())
}

/// The items of an array (or set, or push) reply.
fn items(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    bytes(value).and_then(|bytes| std::str::from_utf8(bytes).ok()).map(str::to_owned)
}

/// An `XREADGROUP` reply: nil (nothing within the block time), or per stream its name and
/// entries (RESP2 array, RESP3 map); one stream is read.
fn parse_read_reply(reply: &Value) -> Result<Read, UnexpectedReply> {
    let streams: Vec<&Value> = match reply {
        Value::Nil => return Ok(Read::default()),
        Value::Map(pairs) => pairs.iter().map(|(_, entries)| entries).collect(),
        other => items(other)
            .ok_or_else(|| unexpected("XREADGROUP: not an array"))?
            .iter()
            .map(|stream| match items(stream) {
                Some([_, entries]) => Ok(entries),
                _ => Err(unexpected("XREADGROUP: a stream is not [name, entries]")),
            })
            .collect::<Result<_, _>>()?,
    };
    let mut read = Read::default();
    for entries in streams {
        parse_entries(entries, &mut read)?;
    }
    Ok(read)
}

/// An `XAUTOCLAIM` reply: `[next cursor, entries, deleted IDs]` (the third since Redis 7).
fn parse_claim_reply(reply: &Value) -> Result<Read, UnexpectedReply> {
    let parts = items(reply).ok_or_else(|| unexpected("XAUTOCLAIM: not an array"))?;
    let (cursor, entries) = match parts {
        [cursor, entries, ..] => (cursor, entries),
        _ => return Err(unexpected("XAUTOCLAIM: fewer than two parts")),
    };
    let cursor = text(cursor).ok_or_else(|| unexpected("XAUTOCLAIM: the cursor is not text"))?;
    let mut read = Read::default();
    parse_entries(entries, &mut read)?;
    // Deleted entries XAUTOCLAIM already took out of the pending list: nothing to do.
    read.deleted.clear();
    read.cursor = (cursor != "0-0").then_some(cursor);
    Ok(read)
}

/// Entries `[[id, [field, value, ...]], ...]`; an entry deleted while pending has nil fields.
fn parse_entries(entries: &Value, read: &mut Read) -> Result<(), UnexpectedReply> {
    let entries = match entries {
        Value::Nil => return Ok(()),
        other => items(other).ok_or_else(|| unexpected("entries are not an array"))?,
    };
    for entry in entries {
        let [id, fields] = items(entry).ok_or_else(|| unexpected("an entry is not [id, fields]"))? else {
            return Err(unexpected("an entry is not [id, fields]"));
        };
        let id = text(id).ok_or_else(|| unexpected("an entry id is not text"))?;
        let fields = match fields {
            Value::Nil => {
                read.deleted.push(id);
                continue;
            }
            Value::Map(pairs) => pairs.iter().map(|(f, v)| (f, v)).collect::<Vec<_>>(),
            other => {
                let flat = items(other).ok_or_else(|| unexpected("entry fields are not an array"))?;
                if flat.len() % 2 != 0 {
                    return Err(unexpected("entry fields are not pairs"));
                }
                flat.chunks_exact(2).map(|pair| (&pair[0], &pair[1])).collect()
            }
        };
        let fields = fields
            .into_iter()
            .map(|(field, value)| match (bytes(field), bytes(value)) {
                (Some(field), Some(value)) => Ok((field.to_vec(), value.to_vec())),
                _ => Err(unexpected("an entry field or value is not a string")),
            })
            .collect::<Result<_, _>>()?;
        read.entries.push(Entry { id, fields });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        RedisStream.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "address": "redis://127.0.0.1:6379",
            "stream": "orders",
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn knative_specs_are_accepted() {
        validate(valid()).unwrap();
        let mut spec = valid();
        spec["address"] = serde_json::json!("redis://user:pw@redis.example:6380/2");
        spec["group"] = serde_json::json!("orders-group");
        spec["consumers"] = serde_json::json!(3);
        spec["count"] = serde_json::json!(500);
        spec["claimMinIdleMs"] = serde_json::json!(1000);
        spec["dialOptions"] = serde_json::json!({"password": {"env": "REDIS_PASSWORD"}, "useTLS": false,
            "skipVerify": false, "cert": {}, "key": {}, "caCert": {}});
        validate(spec).unwrap();
        let mut spec = valid();
        spec["dialOptions"] = serde_json::json!({"password": {}});
        validate(spec).unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: [(&str, serde_json::Value, &str); 18] = [
            ("address", serde_json::json!(""), "spec.address"),
            ("address", serde_json::json!("127.0.0.1:6379"), "spec.address"),
            ("address", serde_json::json!("rediss://127.0.0.1:6379"), "spec.address"),
            ("address", serde_json::json!("unix:///tmp/redis.sock"), "spec.address"),
            ("address", serde_json::json!("redis://127.0.0.1:6379/x"), "spec.address"),
            ("address", serde_json::json!("redis://127.0.0.1:99999"), "spec.address"),
            ("stream", serde_json::json!(""), "spec.stream"),
            ("stream", serde_json::json!("a b"), "spec.stream"),
            ("group", serde_json::json!("a\nb"), "spec.group"),
            ("consumers", serde_json::json!(0), "spec.consumers"),
            ("count", serde_json::json!(0), "spec.count"),
            ("count", serde_json::json!(10_001), "spec.count"),
            ("claimMinIdleMs", serde_json::json!(0), "spec.claimMinIdleMs"),
            ("dialOptions", serde_json::json!({"useTLS": true}), "spec.dialOptions.useTLS"),
            ("dialOptions", serde_json::json!({"caCert": {"secretKeyRef": {"name": "c"}}}), "spec.dialOptions.caCert"),
            (
                "dialOptions",
                serde_json::json!({"password": {"name": "redis", "kind": "Secret"}}),
                "spec.dialOptions.password",
            ),
            ("dialOptions", serde_json::json!({"password": "pw"}), "spec.dialOptions.password"),
            ("dialOptions", serde_json::json!({"password": {"env": "1X"}}), "spec.dialOptions.password.env"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{value}: {error}") };
            assert_eq!(actual, expected, "{value}: {error}");
        }
        let mut spec = valid();
        spec["numConsumers"] = serde_json::json!(1);
        assert!(validate(spec).unwrap_err().to_string().contains("numConsumers"));
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry_value(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields.iter().map(|f| bulk(f)).collect())])
    }

    #[test]
    fn read_replies_are_parsed_never_a_panic() {
        assert_eq!(parse_read_reply(&Value::Nil).unwrap(), Read::default());
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("orders"),
            Value::Array(vec![entry_value("1-0", &["a", "1", "b", "2"]), Value::Array(vec![bulk("2-0"), Value::Nil])]),
        ])]);
        let read = parse_read_reply(&reply).unwrap();
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].id, "1-0");
        assert_eq!(read.entries[0].fields[1], (b"b".to_vec(), b"2".to_vec()));
        assert_eq!(read.deleted, vec!["2-0".to_owned()]);
        // RESP3 shape.
        let map = Value::Map(vec![(bulk("orders"), Value::Array(vec![entry_value("3-0", &["x", "y"])]))]);
        assert_eq!(parse_read_reply(&map).unwrap().entries[0].id, "3-0");
        for odd in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![entry_value("1-0", &["odd"])])])]),
            Value::Array(vec![Value::Array(vec![bulk("s"), Value::Array(vec![Value::Array(vec![Value::Int(1)])])])]),
        ] {
            assert!(parse_read_reply(&odd).is_err(), "{odd:?}");
        }
    }

    #[test]
    fn claim_replies_give_the_cursor() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![entry_value("4-0", &["a", "b"])]),
            Value::Array(vec![bulk("4-1")]),
        ]);
        let read = parse_claim_reply(&reply).unwrap();
        assert_eq!((read.cursor.as_deref(), read.entries.len(), read.deleted.len()), (Some("5-0"), 1, 0));
        let done = Value::Array(vec![bulk("0-0"), Value::Array(vec![])]);
        assert_eq!(parse_claim_reply(&done).unwrap().cursor, None);
        assert!(parse_claim_reply(&Value::Array(vec![bulk("0-0")])).is_err());
    }
}
