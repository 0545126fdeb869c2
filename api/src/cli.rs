//! The client commands of the `switchyard` CLI (`send`, `apply`, `get`, `delete`, `filter`,
//! `cesql`, `deadletters`): they talk to a running server over its HTTP API.

use std::io::Read;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use switchyard_engine::Kind;

/// `builder` trusting the PEM certificates of `cacert`, if given (`--cacert`).
pub fn trust_ca_file(
    mut builder: reqwest::ClientBuilder,
    cacert: Option<&std::path::Path>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let Some(path) = cacert else { return Ok(builder) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read --cacert '{}'", path.display()))?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("--cacert '{}' is not PEM certificates", path.display()))?;
    if certificates.is_empty() {
        bail!("--cacert '{}' holds no PEM certificate", path.display());
    }
    for certificate in certificates {
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder)
}

/// Talks to a switchyard server.
pub struct Client {
    server: String,
    http: reqwest::Client,
}

/// What `send` sends.
pub struct SendRequest {
    /// `namespace/name`.
    pub broker: String,
    /// `type`.
    pub ty: String,
    /// `source`.
    pub source: String,
    /// `id` (a random UUID when absent).
    pub id: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// The data: inline, or `@file`.
    pub data: Option<String>,
    /// `datacontenttype`.
    pub content_type: Option<String>,
    /// Extensions `name=value`.
    pub extensions: Vec<String>,
    /// Structured mode instead of binary.
    pub structured: bool,
}

impl Client {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`), sending `token` as a bearer token.
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<Client> {
        Client::trusting(server, token, None)
    }

    /// [`Client::new`] trusting the CA certificates in `cacert` (PEM) besides the built-in roots:
    /// a server whose `[tls]` certificate comes from a private CA.
    pub fn trusting(server: &str, token: Option<&str>, cacert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.filter(|token| !token.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the token has characters a header cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).default_headers(headers);
        let http = trust_ca_file(builder, cacert)?.build()?;
        Ok(Client { server: server.trim_end_matches('/').to_owned(), http })
    }

    /// `switchyard send`.
    pub async fn send(&self, request: SendRequest) -> anyhow::Result<String> {
        let (namespace, broker) = split_qualified(&request.broker)?;
        let id = request.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let data = match request.data.as_deref() {
            Some(path) if path.starts_with('@') => Some(read_file_or_stdin(&path[1..])?),
            Some(text) => Some(text.as_bytes().to_vec()),
            None => None,
        };
        let mut attributes = vec![
            ("specversion".to_owned(), "1.0".to_owned()),
            ("id".to_owned(), id.clone()),
            ("source".to_owned(), request.source),
            ("type".to_owned(), request.ty),
        ];
        if let Some(subject) = request.subject {
            attributes.push(("subject".to_owned(), subject));
        }
        for extension in &request.extensions {
            let (name, value) =
                extension.split_once('=').ok_or_else(|| anyhow!("invalid extension '{extension}': use name=value"))?;
            attributes.push((name.to_owned(), value.to_owned()));
        }
        let url = format!("{}/{namespace}/{broker}", self.server);
        let builder = if request.structured {
            let mut object = serde_json::Map::new();
            for (name, value) in attributes {
                object.insert(name, Value::String(value));
            }
            let content_type = request.content_type.unwrap_or_else(|| "application/json".to_owned());
            if let Some(data) = data {
                if switchyard_event::json::is_json_content_type(&content_type) {
                    let value: Value =
                        serde_json::from_slice(&data).context("--data is not valid JSON for a JSON content type")?;
                    object.insert("data".to_owned(), value);
                } else {
                    match String::from_utf8(data) {
                        Ok(text) => object.insert("data".to_owned(), Value::String(text)),
                        Err(e) => {
                            use base64::Engine;
                            let encoded = base64::engine::general_purpose::STANDARD.encode(e.into_bytes());
                            object.insert("data_base64".to_owned(), Value::String(encoded))
                        }
                    };
                }
            }
            object.insert("datacontenttype".to_owned(), Value::String(content_type));
            self.http
                .post(url)
                .header("content-type", "application/cloudevents+json")
                .body(serde_json::to_vec(&object)?)
        } else {
            let mut builder = self.http.post(url);
            for (name, value) in &attributes {
                builder = builder.header(
                    format!("ce-{name}"),
                    switchyard_event::http::encode_header_value(value, switchyard_event::http::HeaderEncoding::Percent)
                        .into_owned(),
                );
            }
            if let Some(content_type) = request.content_type.or(data.as_ref().map(|_| "application/json".to_owned())) {
                builder = builder.header("content-type", content_type);
            }
            builder.body(data.unwrap_or_default())
        };
        let response = builder.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        check(response).await?;
        Ok(id)
    }

    /// `switchyard apply -f`: PUT every Broker, Trigger and source document, each to the path
    /// of its `kind`.
    pub async fn apply(&self, documents: &str) -> anyhow::Result<Vec<String>> {
        let mut applied = Vec::new();
        for document in yaml_serde::Deserializer::from_str(documents) {
            let value = yaml_serde::Value::deserialize(document).context("invalid YAML")?;
            if value.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(&value).context("YAML document is not representable as JSON")?;
            let kind = json.get("kind").and_then(Value::as_str).ok_or_else(|| anyhow!("document without 'kind'"))?;
            let plural = resource_plural(kind)?;
            let metadata = json.get("metadata");
            let name = metadata
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{kind} without 'metadata.name'"))?;
            let namespace = metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("default");
            let url = format!("{}/v1/namespaces/{namespace}/{plural}/{name}", self.server);
            let response =
                self.http.put(url).json(&json).send().await.with_context(|| format!("cannot reach {}", self.server))?;
            let created = response.status() == reqwest::StatusCode::CREATED;
            check(response).await.with_context(|| format!("{} {namespace}/{name}", kind.to_lowercase()))?;
            applied.push(format!(
                "{}/{namespace}/{name} {}",
                kind.to_lowercase(),
                if created { "created" } else { "configured" }
            ));
        }
        Ok(applied)
    }

    /// `switchyard get`: one resource or a list.
    pub async fn get(&self, plural: &str, namespace: Option<&str>, name: Option<&str>) -> anyhow::Result<Value> {
        let url = match (namespace, name) {
            (Some(ns), Some(name)) => format!("{}/v1/namespaces/{ns}/{plural}/{name}", self.server),
            (Some(ns), None) => format!("{}/v1/namespaces/{ns}/{plural}", self.server),
            (None, _) => format!("{}/v1/{plural}", self.server),
        };
        let response = self.http.get(url).send().await.with_context(|| format!("cannot reach {}", self.server))?;
        let body = check(response).await?;
        Ok(serde_json::from_slice(&body)?)
    }

    /// `switchyard delete`.
    pub async fn delete(&self, plural: &str, namespace: &str, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/v1/namespaces/{namespace}/{plural}/{name}", self.server);
        let response = self.http.delete(url).send().await.with_context(|| format!("cannot reach {}", self.server))?;
        check(response).await?;
        Ok(())
    }
}

use serde::Deserialize;

impl Client {
    fn dead_letters_url(&self, namespace: &str, trigger: &str) -> String {
        format!("{}/v1/namespaces/{namespace}/triggers/{trigger}/deadletters", self.server)
    }

    /// `switchyard deadletters list`: one page.
    pub async fn list_dead_letters(
        &self,
        namespace: &str,
        trigger: &str,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        let request = self.http.get(self.dead_letters_url(namespace, trigger)).query(&query);
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.server))?;
        Ok(serde_json::from_slice(&check(response).await?)?)
    }

    /// `switchyard deadletters redrive`: all, or the given ids.
    pub async fn redrive_dead_letters(&self, namespace: &str, trigger: &str, ids: &[String]) -> anyhow::Result<()> {
        let body = if ids.is_empty() { serde_json::json!({}) } else { serde_json::json!({ "ids": ids }) };
        let url = format!("{}/redrive", self.dead_letters_url(namespace, trigger));
        let response =
            self.http.post(url).json(&body).send().await.with_context(|| format!("cannot reach {}", self.server))?;
        check(response).await?;
        Ok(())
    }

    /// `switchyard deadletters purge`: one entry, or all; returns how many were removed.
    pub async fn purge_dead_letters(&self, namespace: &str, trigger: &str, id: Option<&str>) -> anyhow::Result<u64> {
        let url = match id {
            Some(id) => format!("{}/{id}", self.dead_letters_url(namespace, trigger)),
            None => self.dead_letters_url(namespace, trigger),
        };
        let response = self.http.delete(url).send().await.with_context(|| format!("cannot reach {}", self.server))?;
        let body = check(response).await?;
        Ok(match id {
            Some(_) => 1,
            None => serde_json::from_slice::<Value>(&body)?.get("purged").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

impl Client {
    /// `switchyard filter test`: the trigger's `filter`/`filters` (from the first Trigger in
    /// `trigger_yaml`) against `event`.
    pub async fn test_filter(&self, trigger_yaml: &str, event: Value) -> anyhow::Result<Value> {
        let trigger = yaml_serde::Deserializer::from_str(trigger_yaml)
            .map(|document| yaml_serde::Value::deserialize(document).context("invalid YAML"))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .map(|document| serde_json::to_value(document).context("YAML document is not representable as JSON"))
            .collect::<anyhow::Result<Vec<Value>>>()?
            .into_iter()
            .find(|document| {
                document.get("kind").and_then(Value::as_str) == Some("Trigger") || document.get("spec").is_some()
            })
            .ok_or_else(|| anyhow!("no Trigger in the file"))?;
        let spec = trigger.get("spec").cloned().unwrap_or(Value::Null);
        let mut request = serde_json::Map::new();
        for field in ["filter", "filters"] {
            if let Some(value) = spec.get(field) {
                request.insert(field.to_owned(), value.clone());
            }
        }
        request.insert("event".to_owned(), event);
        self.post_json("/v1/filters/test", &Value::Object(request)).await
    }

    /// `switchyard cesql`: evaluates an expression against an event.
    pub async fn evaluate_cesql(&self, expression: &str, event: Value) -> anyhow::Result<Value> {
        self.post_json("/v1/cesql/evaluate", &serde_json::json!({ "expression": expression, "event": event })).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let response =
            self.http.post(url).json(body).send().await.with_context(|| format!("cannot reach {}", self.server))?;
        Ok(serde_json::from_slice(&check(response).await?)?)
    }
}

/// Renders dead letters as a table: one line each.
pub fn dead_letter_table(value: &Value) -> String {
    let mut lines = vec![format!("{:<22}  {:<24}  {:>8}  {:>6}  REASON", "ID", "EVENT", "ATTEMPTS", "STATUS")];
    for item in value.get("items").and_then(Value::as_array).into_iter().flatten() {
        let text =
            |pointer: &str| item.pointer(pointer).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        lines.push(format!(
            "{:<22}  {:<24}  {:>8}  {:>6}  {}",
            text("/id").unwrap_or_default(),
            text("/event/id").unwrap_or_default(),
            text("/attempts").unwrap_or_default(),
            text("/lastStatus").filter(|s| s != "null").unwrap_or_else(|| "-".to_owned()),
            text("/reason").unwrap_or_default(),
        ));
    }
    if let Some(next) = value.get("next").and_then(Value::as_str) {
        lines.push(format!("(more: --after {next})"));
    }
    lines.join("\n")
}

/// The REST path segment of a kind, named singular or plural in any case (`PingSource`,
/// `pingsources`), from the engine's registry of declared kinds.
pub fn resource_plural(kind: &str) -> anyhow::Result<&'static str> {
    let lower = kind.to_ascii_lowercase();
    let found = Kind::all().find(|known| known.plural() == lower || known.name().eq_ignore_ascii_case(&lower));
    if let Some(known) = found {
        return Ok(known.plural());
    }
    let known: Vec<&str> = Kind::all().map(Kind::name).collect();
    bail!("unsupported kind '{kind}': use {}", known.join(", "))
}

/// The help of a command's kind argument: the registered kinds' plurals.
pub fn kinds_help() -> String {
    let plurals: Vec<&str> = Kind::all().map(Kind::plural).collect();
    format!("The kind: {} (or the singular, in any case).", plurals.join(", "))
}

fn split_qualified(broker: &str) -> anyhow::Result<(&str, &str)> {
    match broker.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok((ns, name)),
        None if !broker.is_empty() => Ok(("default", broker)),
        _ => bail!("invalid broker '{broker}': use namespace/name"),
    }
}

/// Reads a file, or standard input for `-`.
pub fn read_file_or_stdin(path: &str) -> anyhow::Result<Vec<u8>> {
    if path == "-" {
        let mut buffer = Vec::new();
        std::io::stdin().read_to_end(&mut buffer)?;
        return Ok(buffer);
    }
    std::fs::read(path).with_context(|| format!("cannot read '{path}'"))
}

async fn check(response: reqwest::Response) -> anyhow::Result<bytes::Bytes> {
    let status = response.status();
    let body = response.bytes().await?;
    if status.is_success() {
        return Ok(body);
    }
    let detail = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    bail!("server answered {status}: {detail}")
}

/// Renders resources as a table: one line each.
pub fn table(value: &Value, plural: &str) -> String {
    let items: Vec<&Value> = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![value],
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let mut rows = vec![match plural {
        "brokers" => ["NAMESPACE", "NAME", "READY", "URL"].map(str::to_owned),
        "triggers" => ["NAMESPACE", "NAME", "BROKER", "SUBSCRIBER"].map(str::to_owned),
        "kafkasinks" => ["NAMESPACE", "NAME", "READY", "TOPIC"].map(str::to_owned),
        _ => ["NAMESPACE", "NAME", "READY", "SINK"].map(str::to_owned),
    }];
    for item in items {
        let metadata = item.get("metadata");
        let namespace = text(metadata.and_then(|m| m.get("namespace")));
        let name = text(metadata.and_then(|m| m.get("name")));
        let row = match plural {
            "brokers" => {
                let ready = item.pointer("/status/conditions/0/status");
                [namespace, name, text(ready), text(item.pointer("/status/address/url"))]
            }
            "triggers" => {
                // The status has the subscriber resolved (a KafkaSink `ref`, say).
                let subscriber = item.pointer("/status/subscriberUri").or_else(|| item.pointer("/spec/subscriber/uri"));
                [namespace, name, text(item.pointer("/spec/broker")), text(subscriber)]
            }
            "kafkasinks" => {
                let ready = item.pointer("/status/conditions/0/status");
                [namespace, name, text(ready), text(item.pointer("/spec/topic"))]
            }
            _ => {
                let ready = item.pointer("/status/conditions/0/status");
                [namespace, name, text(ready), text(item.pointer("/status/sinkUri"))]
            }
        };
        rows.push(row);
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            let line: Vec<String> = r.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            line.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
