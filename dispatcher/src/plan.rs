//! A trigger compiled into what its worker runs. A declaration is validated once, directly
//! into these objects — the filter, the subscriber, the delivery policy — so there is one set
//! of types and one set of defaults, and what is accepted is exactly what runs (ripgrep's
//! `lowargs` → `hiargs`). Nothing downstream reads the declared (string) shapes.

use std::sync::Arc;
use std::time::Duration;

use switchyard_event::http::HeaderEncoding;
use switchyard_meta::resources::{validate_dns_label, validate_http_url, DeliverySpec, Destination, TriggerSpec};
use switchyard_meta::{parse_iso8601_duration, ValidationError};
use url::Url;

use crate::ca_certs::{compile_ca_certs, CaCerts};
use crate::filter::Filter;
use crate::retry::{Backoff, KnativeRetry};
use crate::signing::{Signer, SigningError, SigningPlan};

/// The HTTP content mode of deliveries (HTTP binding §3; `delivery.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Attributes in `ce-` headers, data as the body (the default, as in Knative).
    #[default]
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Json,
}

/// Delivery order within a trigger (`delivery.ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// Up to `maxInFlight` events at once, in any order.
    #[default]
    Unordered,
    /// Events with the same `partitionkey` strictly in log order: the next is sent only once
    /// the previous is delivered or dead-lettered. Other keys proceed meanwhile.
    Ordered,
}

/// The most retries a delivery may ask for: with Knative's exponential backoff, far more than
/// any subscriber outage lasts, and it bounds the attempts one event can cost.
pub const MAX_RETRY: i64 = 1000;
/// The most deliveries in flight per trigger that `maxInFlight` may ask for.
pub const MAX_IN_FLIGHT: i64 = 10_000;

/// The longest `backoffDelay`, `timeout` and `retryAfterMax` a delivery may ask for: past an
/// hour a retry or an attempt is better served by the dead-letter store and a redrive, and
/// every timer stays far from `Instant`'s range.
pub const MAX_DELIVERY_DURATION: Duration = Duration::from_secs(3600);

/// The slowest `rateLimit`: one attempt every 1,000 s.
pub const MIN_RATE_LIMIT: f64 = 0.001;

/// The fastest `rateLimit`: above this it limits nothing a node can do.
pub const MAX_RATE_LIMIT: f64 = 1_000_000.0;

/// How a trigger delivers: Knative's `DeliverySpec` plus Switchyard's `format`, `ordering`,
/// `maxInFlight` and `rateLimit`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// What follows a failed attempt (for the subscriber and the dead-letter sink alike).
    pub retry: KnativeRetry,
    /// Per-attempt timeout; never zero.
    pub timeout: Duration,
    /// Binary or structured.
    pub format: Format,
    /// How binary deliveries write string attributes; `None` is the server's default.
    pub header_encoding: Option<HeaderEncoding>,
    /// Whether deliveries may overtake each other.
    pub ordering: Ordering,
    /// Attempts in flight at once, 1 to [`MAX_IN_FLIGHT`].
    pub max_in_flight: u32,
    /// Attempts per second, if limited; finite and positive.
    pub rate_limit: Option<f64>,
    /// Where events go when the retries are spent, if anywhere but the dead-letter store.
    pub dead_letter_sink: Option<Url>,
    /// The dead-letter sink's `audience`: its attempts carry a token for it.
    pub dead_letter_audience: Option<String>,
    /// The dead-letter sink's `CACerts`: trusted by its TLS connections besides the built-in roots.
    pub dead_letter_ca_certs: Option<CaCerts>,
}

impl Default for DeliveryPolicy {
    /// The server-wide defaults, for every field a `delivery` leaves unset: 10 exponential
    /// retries from PT0.2S (Knative's default broker configuration, `config-br-defaults`),
    /// `Retry-After` honoured up to 5 minutes, 30 s per attempt, binary mode with the server's
    /// header encoding, unordered, 100 in flight, no rate limit, no dead-letter sink.
    fn default() -> DeliveryPolicy {
        DeliveryPolicy {
            retry: KnativeRetry {
                retries: 10,
                backoff: Backoff::Exponential,
                delay: Duration::from_millis(200),
                retry_after_max: Duration::from_secs(300),
            },
            timeout: Duration::from_secs(30),
            format: Format::Binary,
            header_encoding: None,
            ordering: Ordering::Unordered,
            max_in_flight: 100,
            rate_limit: None,
            dead_letter_sink: None,
            dead_letter_audience: None,
            dead_letter_ca_certs: None,
        }
    }
}

impl DeliveryPolicy {
    /// Compiles a `delivery` (field names under `field`, e.g. `spec.delivery`); `None` is every
    /// default. Errors name the field and quote the value.
    pub fn compile(spec: Option<&DeliverySpec>, field: &str) -> Result<DeliveryPolicy, ValidationError> {
        let mut policy = DeliveryPolicy::default();
        let Some(spec) = spec else { return Ok(policy) };
        let path = |name: &str| format!("{field}.{name}");
        if let Some(sink) = &spec.dead_letter_sink {
            policy.dead_letter_sink = Some(compile_destination(sink, &path("deadLetterSink"))?);
            policy.dead_letter_audience = compile_audience(sink, &path("deadLetterSink"))?;
            policy.dead_letter_ca_certs = compile_ca_certs(sink, &path("deadLetterSink"))?;
        }
        if let Some(retry) = spec.retry {
            policy.retry.retries =
                u32::try_from(retry).ok().filter(|&r| i64::from(r) <= MAX_RETRY).ok_or_else(|| {
                    ValidationError::field(&path("retry"), format!("'{retry}' is out of range: use 0 to {MAX_RETRY}"))
                })?;
        }
        if let Some(backoff) = &spec.backoff_policy {
            let choices = [("linear", Backoff::Linear), ("exponential", Backoff::Exponential)];
            policy.retry.backoff = one_of(&path("backoffPolicy"), backoff, "a backoff policy", choices)?;
        }
        if let Some(delay) = &spec.backoff_delay {
            policy.retry.delay = duration_field(&path("backoffDelay"), delay)?;
        }
        if let Some(timeout) = &spec.timeout {
            policy.timeout = duration_field(&path("timeout"), timeout)?;
            if policy.timeout.is_zero() {
                return Err(ValidationError::field(&path("timeout"), format!("'{timeout}' must be longer than zero")));
            }
        }
        if let Some(max) = &spec.retry_after_max {
            policy.retry.retry_after_max = duration_field(&path("retryAfterMax"), max)?;
        }
        if let Some(format) = &spec.format {
            let choices = [("binary", Format::Binary), ("json", Format::Json)];
            policy.format = one_of(&path("format"), format, "a format", choices)?;
        }
        if let Some(encoding) = &spec.header_encoding {
            let choices = HeaderEncoding::ALL.map(|encoding| (encoding.name(), encoding));
            policy.header_encoding = Some(one_of(&path("headerEncoding"), encoding, "a header encoding", choices)?);
        }
        if let Some(ordering) = &spec.ordering {
            let choices = [("unordered", Ordering::Unordered), ("ordered", Ordering::Ordered)];
            policy.ordering = one_of(&path("ordering"), ordering, "an ordering", choices)?;
        }
        if let Some(max_in_flight) = spec.max_in_flight {
            policy.max_in_flight = u32::try_from(max_in_flight)
                .ok()
                .filter(|&m| m >= 1 && i64::from(m) <= MAX_IN_FLIGHT)
                .ok_or_else(|| {
                    ValidationError::field(
                        &path("maxInFlight"),
                        format!("'{max_in_flight}' is out of range: use 1 to {MAX_IN_FLIGHT}"),
                    )
                })?;
        }
        if let Some(rate) = spec.rate_limit {
            // NaN fails both comparisons.
            if !(MIN_RATE_LIMIT..=MAX_RATE_LIMIT).contains(&rate) {
                return Err(ValidationError::field(
                    &path("rateLimit"),
                    format!(
                        "'{rate}' is out of range: use a number of attempts per second from {MIN_RATE_LIMIT} to {MAX_RATE_LIMIT}"
                    ),
                ));
            }
            policy.rate_limit = Some(rate);
        }
        Ok(policy)
    }
}

/// One of two names; the error quotes the value and lists both.
fn one_of<T: Copy>(field: &str, value: &str, what: &str, choices: [(&str, T); 2]) -> Result<T, ValidationError> {
    let [(first, _), (second, _)] = choices;
    choices
        .into_iter()
        .find(|(name, _)| *name == value)
        .map(|(_, chosen)| chosen)
        .ok_or_else(|| ValidationError::field(field, format!("'{value}' is not {what}: use '{first}' or '{second}'")))
}

/// A delivery duration, at most [`MAX_DELIVERY_DURATION`].
fn duration_field(field: &str, text: &str) -> Result<Duration, ValidationError> {
    let duration = parse_iso8601_duration(text)
        .map_err(|e| ValidationError::field(field, format!("'{text}' is not a valid ISO-8601 duration: {e}")))?;
    if duration > MAX_DELIVERY_DURATION {
        return Err(ValidationError::field(field, format!("'{text}' is longer than the limit of PT1H")));
    }
    Ok(duration)
}

/// A Knative `Destination` as an absolute http(s) URL (`field` e.g. `spec.subscriber`). A
/// `ref` needs Kubernetes to resolve it. A literal address the outbound guard always refuses
/// (link-local, cloud metadata, unspecified, multicast) is refused here already.
pub fn compile_destination(destination: &Destination, field: &str) -> Result<Url, ValidationError> {
    if destination.r#ref.is_some() {
        return Err(ValidationError::field(
            &format!("{field}.ref"),
            "object references need Kubernetes: give the address as 'uri'".to_owned(),
        ));
    }
    let field = format!("{field}.uri");
    let uri = destination.uri.as_deref().ok_or_else(|| ValidationError::field(&field, "is required".to_owned()))?;
    validate_http_url(&field, uri)?;
    let url =
        Url::parse(uri).map_err(|e| ValidationError::field(&field, format!("'{uri}' is not an absolute URL: {e}")))?;
    crate::outbound::check_declared(&field, &url)?;
    Ok(url)
}

/// The longest `audience`: it is sent in every token, and an identifier, not a document.
pub const MAX_AUDIENCE_BYTES: usize = 512;

/// A destination's `audience` (`field` e.g. `spec.subscriber`), if set: non-empty, at most
/// [`MAX_AUDIENCE_BYTES`], without control characters (it is compared byte for byte by the
/// subscriber, RFC 7519 §4.1.3).
pub fn compile_audience(destination: &Destination, field: &str) -> Result<Option<String>, ValidationError> {
    let Some(audience) = &destination.audience else { return Ok(None) };
    let field = format!("{field}.audience");
    if audience.trim().is_empty() {
        let message = "must not be empty: give the destination's audience or leave it out";
        return Err(ValidationError::field(&field, message.to_owned()));
    }
    if audience.len() > MAX_AUDIENCE_BYTES {
        return Err(ValidationError::field(&field, format!("is longer than the limit of {MAX_AUDIENCE_BYTES} bytes")));
    }
    if audience.chars().any(char::is_control) {
        return Err(ValidationError::field(&field, format!("'{}' has a control character", audience.escape_debug())));
    }
    Ok(Some(audience.clone()))
}

/// What a trigger's worker runs: its filter, its subscriber, its delivery policy, and how its
/// deliveries are signed.
#[derive(Debug, Clone)]
pub struct TriggerPlan {
    /// Which events it receives.
    pub filter: Filter,
    /// Where they go.
    pub subscriber: Url,
    /// The subscriber's `audience`: its attempts carry a token for it.
    pub audience: Option<String>,
    /// The subscriber's `CACerts`: trusted by its TLS connections besides the built-in roots.
    pub ca_certs: Option<CaCerts>,
    /// How.
    pub delivery: DeliveryPolicy,
    /// `spec.signing`, checked; its secrets are read by [`TriggerPlan::read_secrets`].
    pub signing: Option<SigningPlan>,
    /// What signs every attempt, once the secrets are read; deliveries are unsigned without.
    pub signer: Option<Arc<Signer>>,
}

impl TriggerPlan {
    /// Compiles a trigger's spec; its own `delivery`, when set, replaces `inherited` (its
    /// broker's) as a whole, as in Knative. Errors name the field under `spec.`.
    pub fn compile(spec: &TriggerSpec, inherited: Option<&DeliverySpec>) -> Result<TriggerPlan, ValidationError> {
        if spec.broker.is_empty() {
            return Err(ValidationError::field("spec.broker", "is required".to_owned()));
        }
        validate_dns_label("spec.broker", &spec.broker)?;
        let filter = Filter::compile(spec.filter.as_ref(), &spec.filters, "spec.")?;
        let subscriber = compile_destination(&spec.subscriber, "spec.subscriber")?;
        let audience = compile_audience(&spec.subscriber, "spec.subscriber")?;
        let ca_certs = compile_ca_certs(&spec.subscriber, "spec.subscriber")?;
        let delivery = DeliveryPolicy::compile(spec.delivery.as_ref().or(inherited), "spec.delivery")?;
        let signing = spec.signing.as_ref().map(|signing| SigningPlan::compile(signing, "spec.signing")).transpose()?;
        Ok(TriggerPlan { filter, subscriber, audience, ca_certs, delivery, signing, signer: None })
    }

    /// Reads the signing secrets, if any, into [`TriggerPlan::signer`]: done when the trigger
    /// starts, not when it is declared, so that an environment variable or a file may be
    /// provided (or rotated) in between.
    pub fn read_secrets(mut self) -> Result<TriggerPlan, SigningError> {
        self.signer = self.signing.as_ref().map(SigningPlan::read).transpose()?.map(Signer::shared);
        Ok(self)
    }
}

/// Which trigger runs, and where in the log it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerRef {
    /// The trigger's namespace.
    pub namespace: String,
    /// The trigger's name.
    pub name: String,
    /// The broker it belongs to (in the same namespace).
    pub broker: String,
    /// The broker's topic.
    pub topic: String,
    /// The trigger's group on that topic.
    pub group: String,
}

impl TriggerRef {
    /// `namespace/name`: for logs, and the trigger's scope in the dead-letter store.
    pub fn key(&self) -> String {
        dead_letter_scope(&self.namespace, &self.name)
    }
}

/// A trigger's scope in the dead-letter store.
pub fn dead_letter_scope(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> TriggerSpec {
        serde_json::from_str(json).expect(json)
    }

    fn trigger(json: &str) -> Result<TriggerPlan, ValidationError> {
        TriggerPlan::compile(&spec(json), None)
    }

    fn delivery(json: &str) -> Result<DeliveryPolicy, ValidationError> {
        let spec: DeliverySpec = serde_json::from_str(json).expect(json);
        DeliveryPolicy::compile(Some(&spec), "spec.delivery")
    }

    #[test]
    fn invalid_triggers_name_the_field() {
        let cases = [
            (r#"{"subscriber":{"uri":"http://x/"}}"#, "spec.broker"),
            (r#"{"broker":"b"}"#, "spec.subscriber.uri"),
            (r#"{"broker":"b","subscriber":{"uri":"/relative"}}"#, "spec.subscriber.uri"),
            (r#"{"broker":"b","subscriber":{"uri":"ftp://x/"}}"#, "spec.subscriber.uri"),
            (r#"{"broker":"b","subscriber":{"uri":"http://[fe80::1]/"}}"#, "spec.subscriber.uri"),
            (r#"{"broker":"b","subscriber":{"ref":{"kind":"Service","name":"s"}}}"#, "spec.subscriber.ref"),
            (r#"{"broker":"b","subscriber":{"uri":"http://x/"},"filter":{"attributes":{"Type":"x"}}}"#, "Type"),
            (r#"{"broker":"b","subscriber":{"uri":"http://x/"},"delivery":{"format":"xml"}}"#, "spec.delivery.format"),
            (r#"{"broker":"B_","subscriber":{"uri":"http://x/"}}"#, "spec.broker"),
            (r#"{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"cesql":"type ="}]}"#, "spec.filters[0]"),
            (r#"{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"jsonpath":"$["}]}"#, "spec.filters[0]"),
            (r#"{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"exact":{}}]}"#, "spec.filters[0]"),
        ];
        for (body, needle) in cases {
            let err = trigger(body).expect_err(body).to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn a_trigger_delivery_replaces_the_inherited_one_as_a_whole() {
        let broker: DeliverySpec = serde_json::from_str(r#"{"retry":3,"timeout":"PT5S"}"#).unwrap();
        let inherits = TriggerPlan::compile(&spec(r#"{"broker":"b","subscriber":{"uri":"http://x/"}}"#), Some(&broker));
        let inherits = inherits.unwrap().delivery;
        assert_eq!((inherits.retry.retries, inherits.timeout), (3, Duration::from_secs(5)));
        let own = spec(r#"{"broker":"b","subscriber":{"uri":"http://x/"},"delivery":{"retry":1}}"#);
        let own = TriggerPlan::compile(&own, Some(&broker)).unwrap().delivery;
        assert_eq!((own.retry.retries, own.timeout), (1, DeliveryPolicy::default().timeout));
    }

    #[test]
    fn delivery_defaults() {
        let defaults = DeliveryPolicy {
            retry: KnativeRetry {
                retries: 10,
                backoff: Backoff::Exponential,
                delay: Duration::from_millis(200),
                retry_after_max: Duration::from_secs(300),
            },
            timeout: Duration::from_secs(30),
            format: Format::Binary,
            header_encoding: None,
            ordering: Ordering::Unordered,
            max_in_flight: 100,
            rate_limit: None,
            dead_letter_sink: None,
            dead_letter_audience: None,
            dead_letter_ca_certs: None,
        };
        assert_eq!(DeliveryPolicy::compile(None, "spec.delivery").unwrap(), defaults);
        assert_eq!(delivery("{}").unwrap(), defaults);
        assert_eq!(DeliveryPolicy::default(), defaults);
    }

    #[test]
    fn delivery_overrides() {
        let compiled = delivery(
            r#"{"deadLetterSink":{"uri":"https://dls.example/x"},"retry":3,"backoffPolicy":"linear",
                "backoffDelay":"PT1S","timeout":"PT2M","retryAfterMax":"PT0S","format":"json","headerEncoding":"percent",
                "ordering":"ordered","maxInFlight":1,"rateLimit":2.5}"#,
        )
        .unwrap();
        assert_eq!(
            compiled,
            DeliveryPolicy {
                retry: KnativeRetry {
                    retries: 3,
                    backoff: Backoff::Linear,
                    delay: Duration::from_secs(1),
                    retry_after_max: Duration::ZERO,
                },
                timeout: Duration::from_secs(120),
                format: Format::Json,
                header_encoding: Some(HeaderEncoding::Percent),
                ordering: Ordering::Ordered,
                max_in_flight: 1,
                rate_limit: Some(2.5),
                dead_letter_sink: Some(Url::parse("https://dls.example/x").unwrap()),
                dead_letter_audience: None,
                dead_letter_ca_certs: None,
            }
        );
        let one = delivery(r#"{"retry":0}"#).unwrap();
        let mut expected = DeliveryPolicy::default();
        expected.retry.retries = 0;
        assert_eq!(one, expected);
        let edges = delivery(r#"{"retry":1000,"maxInFlight":10000,"backoffDelay":"PT0S"}"#).unwrap();
        assert_eq!((edges.retry.retries, edges.max_in_flight, edges.retry.delay), (1000, 10_000, Duration::ZERO));
    }

    #[test]
    fn invalid_delivery_fields_are_named_and_quoted() {
        let cases = [
            (r#"{"retry":-1}"#, "spec.delivery.retry", "'-1'"),
            (r#"{"retry":1001}"#, "spec.delivery.retry", "'1001'"),
            (r#"{"retry":99999999999}"#, "spec.delivery.retry", "'99999999999'"),
            (r#"{"backoffPolicy":"Linear"}"#, "spec.delivery.backoffPolicy", "'Linear'"),
            (r#"{"backoffPolicy":"fibonacci"}"#, "spec.delivery.backoffPolicy", "'fibonacci'"),
            (r#"{"backoffDelay":"200ms"}"#, "spec.delivery.backoffDelay", "'200ms'"),
            (r#"{"backoffDelay":"P1M"}"#, "spec.delivery.backoffDelay", "no fixed length"),
            (r#"{"backoffDelay":"-PT1S"}"#, "spec.delivery.backoffDelay", "'-PT1S'"),
            (r#"{"backoffDelay":""}"#, "spec.delivery.backoffDelay", "''"),
            (r#"{"timeout":"PT"}"#, "spec.delivery.timeout", "'PT'"),
            (r#"{"timeout":"PT0S"}"#, "spec.delivery.timeout", "'PT0S' must be longer than zero"),
            (r#"{"timeout":"pt30s"}"#, "spec.delivery.timeout", "write 'PT30S'"),
            (r#"{"retryAfterMax":"P1Y"}"#, "spec.delivery.retryAfterMax", "'P1Y'"),
            (r#"{"retryAfterMax":"5m"}"#, "spec.delivery.retryAfterMax", "'5m'"),
            (r#"{"format":"xml"}"#, "spec.delivery.format", "'xml'"),
            (r#"{"headerEncoding":"raw"}"#, "spec.delivery.headerEncoding", "'raw' is not a header encoding"),
            (r#"{"ordering":"fifo"}"#, "spec.delivery.ordering", "'fifo'"),
            (r#"{"maxInFlight":0}"#, "spec.delivery.maxInFlight", "'0'"),
            (r#"{"maxInFlight":-5}"#, "spec.delivery.maxInFlight", "'-5'"),
            (r#"{"maxInFlight":10001}"#, "spec.delivery.maxInFlight", "'10001'"),
            (r#"{"rateLimit":0}"#, "spec.delivery.rateLimit", "'0'"),
            (r#"{"rateLimit":-1.5}"#, "spec.delivery.rateLimit", "'-1.5'"),
            // Found by hand: 1e-300 passed and panicked in `Duration::from_secs_f64(1 / rate)`.
            (r#"{"rateLimit":1e-300}"#, "spec.delivery.rateLimit", "from 0.001 to 1000000"),
            (r#"{"rateLimit":1e7}"#, "spec.delivery.rateLimit", "'10000000'"),
            (r#"{"timeout":"P9999999W"}"#, "spec.delivery.timeout", "longer than the limit of PT1H"),
            (r#"{"backoffDelay":"PT1H0.001S"}"#, "spec.delivery.backoffDelay", "limit of PT1H"),
            (r#"{"retryAfterMax":"P1D"}"#, "spec.delivery.retryAfterMax", "limit of PT1H"),
            (r#"{"deadLetterSink":{}}"#, "spec.delivery.deadLetterSink.uri", "is required"),
            (r#"{"deadLetterSink":{"uri":"/dls"}}"#, "spec.delivery.deadLetterSink.uri", "'/dls'"),
            (r#"{"deadLetterSink":{"uri":"ftp://x/"}}"#, "spec.delivery.deadLetterSink.uri", "'ftp://x/'"),
            (
                r#"{"deadLetterSink":{"uri":"http://169.254.169.254/latest/meta-data"}}"#,
                "spec.delivery.deadLetterSink.uri",
                "'169.254.169.254' is a link-local address (cloud metadata)",
            ),
        ];
        for (json, field, quoted) in cases {
            let error = delivery(json).expect_err(json);
            let ValidationError::Field { field: actual, message } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
            assert!(message.contains(quoted), "{json}: {error}");
        }
    }

    #[test]
    fn non_finite_rate_limits_are_refused() {
        // JSON cannot carry them, but a spec built in code can.
        for rate in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let spec = DeliverySpec { rate_limit: Some(rate), ..DeliverySpec::default() };
            let error = DeliveryPolicy::compile(Some(&spec), "spec.delivery").unwrap_err().to_string();
            assert!(error.contains("spec.delivery.rateLimit"), "{error}");
        }
    }
}
