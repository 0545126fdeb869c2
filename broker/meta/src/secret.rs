//! A secret in a declaration: a reference the server reads when it applies the declaration (an
//! environment variable, `env`, or a file, `file`: the normal way, since only the reference is
//! stored and shown), or the secret itself (`value`), which is write-only: every read of the
//! declaration shows [`REDACTED`] in its place.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// What a read shows instead of an inline secret. Submitting it back (a GET edited and PUT
/// again) keeps the secret already stored.
pub const REDACTED: &str = "<redacted>";

/// How a secret sealed in the declaration log begins (`sealed.v1.` and its ciphertext): a node
/// that does not have the key it was sealed with reads this instead of the secret, and
/// [`Secret::read`] refuses it.
pub const SEALED_PREFIX: &str = "sealed.v1.";

/// [`REDACTED`] as a URL's password: percent-encoded.
const REDACTED_IN_URL: &str = "%3Credacted%3E";

/// A secret: exactly one of `value`, `env` or `file`. Knative's `secretKeyRef` names a
/// Kubernetes Secret and is refused.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    /// The secret itself: stored with the declaration, never shown (reads say `<redacted>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The name of an environment variable of the server holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// An absolute path of a file on the server holding the secret (surrounding whitespace is
    /// ignored), e.g. a mounted Kubernetes Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Knative's Kubernetes Secret reference: refused.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<serde_json::Value>,
}

/// Where a valid [`Secret`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// Inline.
    Value(&'a str),
    /// In this environment variable of the server.
    Env(&'a str),
    /// In this file of the server.
    File(&'a str),
}

impl Secret {
    /// Checks that exactly one usable form is given; `field` names the secret in errors (e.g.
    /// `spec.secretToken`).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        if self.secret_key_ref.is_some() {
            return Err(ValidationError::field(
                &format!("{field}.secretKeyRef"),
                "Kubernetes secrets are not read: name an environment variable of the server with 'env', or a file with 'file' (a mounted Secret), or give the secret as 'value'".to_owned(),
            ));
        }
        let given = [self.value.is_some(), self.env.is_some(), self.file.is_some()].iter().filter(|g| **g).count();
        if given > 1 {
            return Err(ValidationError::field(field, "give one of 'value', 'env' or 'file', not several".to_owned()));
        }
        match self.source() {
            Some(SecretSource::Value("")) => {
                Err(ValidationError::field(&format!("{field}.value"), "is empty".to_owned()))
            }
            Some(SecretSource::Env(name)) if !is_env_name(name) => Err(ValidationError::field(
                &format!("{field}.env"),
                format!("'{name}' is not an environment variable name"),
            )),
            Some(SecretSource::File(path)) if !path.starts_with('/') => Err(ValidationError::field(
                &format!("{field}.file"),
                format!("'{path}' is not an absolute path"),
            )),
            Some(_) => Ok(()),
            None => Err(ValidationError::field(
                field,
                "is required: an environment variable of the server holding it as 'env', a file as 'file', or the secret itself as 'value'".to_owned(),
            )),
        }
    }

    /// Where the secret is, if a form is given.
    pub fn source(&self) -> Option<SecretSource<'_>> {
        match (&self.value, &self.env, &self.file) {
            (Some(value), _, _) => Some(SecretSource::Value(value)),
            (None, Some(env), _) => Some(SecretSource::Env(env)),
            (None, None, Some(file)) => Some(SecretSource::File(file)),
            (None, None, None) => None,
        }
    }

    /// Reads the secret: `what` ("the webhook secret") names it in errors, which say which
    /// variable or file to fix and never quote the secret or the file's content.
    pub fn read(&self, what: &str) -> Result<String, SecretError> {
        match self.source() {
            Some(SecretSource::Value(value)) if value.starts_with(SEALED_PREFIX) => Err(SecretError(format!(
                "{what} is sealed with a key this node does not have: give it the cluster's [secrets] key_file"
            ))),
            Some(SecretSource::Value(value)) => Ok(value.to_owned()),
            Some(SecretSource::Env(name)) => {
                std::env::var(name).ok().filter(|value| !value.is_empty()).ok_or_else(|| {
                    SecretError(format!("the environment variable '{name}' holding {what} is not set on this server"))
                })
            }
            Some(SecretSource::File(path)) => match std::fs::read_to_string(path) {
                Ok(content) if !content.trim().is_empty() => Ok(content.trim().to_owned()),
                Ok(_) => Err(SecretError(format!("the file '{path}' holding {what} is empty"))),
                Err(error) => {
                    Err(SecretError(format!("cannot read the file '{path}' holding {what}: {}", error.kind())))
                }
            },
            None => Err(SecretError(format!("{what} is not given"))),
        }
    }
}

/// A secret that could not be read; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// Whether `name` can be an environment variable's name.
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The fields whose value (or each element of whose list) is a [`Secret`]: a GitHubSource's
/// `secretToken`, a trigger's `signing.secrets`.
const SECRET_FIELDS: [&str; 2] = ["secretToken", "secrets"];

/// Hides what a read must not show, in a declaration as the API answers it: every inline
/// secret's `value`, and the password of every URL that has one (`amqp://user:pass@host`,
/// `http://user:pass@host`).
pub fn redact(resource: &mut serde_json::Value) {
    walk(resource, false, &mut |value, in_secret| match value {
        serde_json::Value::String(text) if in_secret => *text = REDACTED.to_owned(),
        serde_json::Value::String(text) => {
            if let Some(redacted) = redact_url(text) {
                *text = redacted;
            }
        }
        _ => {}
    });
}

/// `text` with the password of the URL it is replaced by [`REDACTED`], if it is a URL with one.
pub fn redact_url(text: &str) -> Option<String> {
    replace_url_password(text, |_| Some(REDACTED.to_owned()))
}

/// `text` with the password of the URL it is (percent-encoded, as the URL holds it) replaced by
/// what `replace` returns for it, if it is a URL with one and `replace` returns something.
fn replace_url_password(text: &str, replace: impl FnOnce(&str) -> Option<String>) -> Option<String> {
    if !text.contains('@') || !text.contains("://") {
        return None;
    }
    let mut url = url::Url::parse(text).ok()?;
    let replaced = replace(url.password()?)?;
    url.set_password(Some(&replaced)).ok()?;
    Some(url.to_string())
}

/// Replaces what a read must not show (what [`redact`] hides: every inline secret's `value`, and
/// the password of every URL that has one) by what `replace` returns for it, where it returns
/// something: how the declaration log seals secrets, and opens them again.
pub fn replace_secrets(resource: &mut serde_json::Value, replace: &mut dyn FnMut(&str) -> Option<String>) {
    walk(resource, false, &mut |value, in_secret| {
        let serde_json::Value::String(text) = value else { return };
        let replaced = match in_secret {
            true => replace(text),
            false => replace_url_password(text, &mut *replace),
        };
        if let Some(replaced) = replaced {
            *text = replaced;
        }
    });
}

/// `url` as logs and error details may show it: with any password [`REDACTED`].
pub fn shown_url(url: &str) -> String {
    redact_url(url).unwrap_or_else(|| url.to_owned())
}

fn walk(value: &mut serde_json::Value, in_secret: bool, visit: &mut dyn FnMut(&mut serde_json::Value, bool)) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let secret_value = in_secret && key == "value";
                if SECRET_FIELDS.contains(&key.as_str()) {
                    match field {
                        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| walk(item, true, visit)),
                        _ => walk(field, true, visit),
                    }
                } else if secret_value {
                    visit(field, true);
                } else if key == "net" {
                    walk_kafka_net(field, visit);
                } else {
                    walk(field, false, visit);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|item| walk(item, false, visit)),
        _ => visit(value, false),
    }
}

/// The secrets of a Kafka client's `net` (`spec.net` of a KafkaSource or KafkaSink), by group:
/// found by place, since `user`, `key` and `type` are no secrets elsewhere.
const KAFKA_NET_SECRETS: [(&str, &[&str]); 2] = [("sasl", &["user", "password"]), ("tls", &["key"])];

fn walk_kafka_net(net: &mut serde_json::Value, visit: &mut dyn FnMut(&mut serde_json::Value, bool)) {
    let serde_json::Value::Object(groups) = net else { return walk(net, false, visit) };
    for (group, settings) in groups.iter_mut() {
        let secrets = KAFKA_NET_SECRETS.iter().find(|(name, _)| name == group).map_or(&[][..], |(_, names)| names);
        match settings {
            serde_json::Value::Object(settings) => {
                for (name, setting) in settings.iter_mut() {
                    walk(setting, secrets.contains(&name.as_str()), visit);
                }
            }
            other => walk(other, false, visit),
        }
    }
}

/// Puts back what a read redacted, so that a declaration read, edited and submitted again keeps
/// its secrets: each [`REDACTED`] in `submitted` (a secret's `value`, or a URL's password) takes
/// the value at the same place in `stored`, the declaration it replaces. A redacted value with
/// nothing to take it from (a new declaration, a moved field, a changed URL) is refused, naming
/// the field, under `path` (e.g. `spec`, for a spec).
pub fn restore(
    submitted: &mut serde_json::Value,
    stored: Option<&serde_json::Value>,
    path: &str,
) -> Result<(), ValidationError> {
    match submitted {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                restore(field, stored.and_then(|s| s.get(key)), &child)?;
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                restore(item, stored.and_then(|s| s.get(i)), &format!("{path}[{i}]"))?;
            }
        }
        serde_json::Value::String(text) if text.contains(REDACTED) || text.contains(REDACTED_IN_URL) => {
            let kept = stored
                .and_then(serde_json::Value::as_str)
                .filter(|previous| text == REDACTED || redact_url(previous).as_deref() == Some(text.as_str()));
            let Some(kept) = kept else {
                return Err(ValidationError::field(
                    path,
                    format!("'{REDACTED}' is what reads show in place of a secret, and there is no stored secret here to keep: give the secret itself"),
                ));
            };
            *text = kept.to_owned();
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(json: serde_json::Value) -> Secret {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn exactly_one_usable_form_is_accepted() {
        for good in [
            serde_json::json!({"value": "s"}),
            serde_json::json!({"env": "A_1"}),
            serde_json::json!({"file": "/run/s"}),
        ] {
            secret(good.clone()).validate("spec.s").unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for (bad, field) in [
            (serde_json::json!({}), "spec.s"),
            (serde_json::json!({"value": "a", "env": "B"}), "spec.s"),
            (serde_json::json!({"value": ""}), "spec.s.value"),
            (serde_json::json!({"env": "1X"}), "spec.s.env"),
            (serde_json::json!({"file": "relative"}), "spec.s.file"),
            (serde_json::json!({"secretKeyRef": {"name": "n", "key": "k"}}), "spec.s.secretKeyRef"),
        ] {
            let error = secret(bad.clone()).validate("spec.s").unwrap_err();
            assert!(matches!(&error, ValidationError::Field { field: f, .. } if f == field), "{bad}: {error}");
        }
    }

    #[test]
    fn reads_hide_inline_secrets_and_url_passwords_and_a_resubmission_keeps_them() {
        let stored = serde_json::json!({"spec": {
            "secretToken": {"value": "s3cret"},
            "signing": {"secrets": [{"value": "whsec_abc"}, {"env": "KEY"}]},
            "subscriber": {"uri": "http://user:p4ss@127.0.0.1:1/hook"},
            "ceOverrides": {"extensions": {"value": "not-a-secret"}},
        }});
        let mut read = stored.clone();
        redact(&mut read);
        let text = read.to_string();
        assert!(!text.contains("s3cret") && !text.contains("whsec_abc") && !text.contains("p4ss"), "{text}");
        assert_eq!(read["spec"]["secretToken"]["value"], REDACTED);
        assert_eq!(read["spec"]["signing"]["secrets"][1]["env"], "KEY");
        assert_eq!(read["spec"]["subscriber"]["uri"], "http://user:%3Credacted%3E@127.0.0.1:1/hook");
        assert_eq!(read["spec"]["ceOverrides"]["extensions"]["value"], "not-a-secret");

        let mut resubmitted = read.clone();
        restore(&mut resubmitted, Some(&stored), "").unwrap();
        assert_eq!(resubmitted, stored);

        let mut moved = read.clone();
        moved["spec"]["subscriber"]["uri"] = serde_json::json!("http://user:%3Credacted%3E@127.0.0.1:2/hook");
        let error = restore(&mut moved, Some(&stored), "").unwrap_err();
        assert!(matches!(&error, ValidationError::Field { field, .. } if field == "spec.subscriber.uri"), "{error}");
        let error = restore(&mut read, None, "").unwrap_err();
        assert!(error.to_string().contains("give the secret itself"), "{error}");
    }

    #[test]
    fn a_kafka_clients_net_secrets_are_hidden_and_kept_and_the_same_names_elsewhere_are_not() {
        let stored = serde_json::json!({"spec": {
            "net": {
                "sasl": {"enable": true, "user": {"value": "alice"}, "password": {"value": "p4ss"}, "type": {"value": "PLAIN"}},
                "tls": {"enable": true, "caCert": {"value": "CA PEM"}, "cert": {"value": "CERT PEM"}, "key": {"value": "KEY PEM"}},
            },
            "filters": [{"exact": {"type": "dev.example", "user": "u", "password": "x"}}],
            "ceOverrides": {"extensions": {"key": "k"}},
            "sasl": {"password": {"value": "not-under-net"}},
        }});
        let mut read = stored.clone();
        redact(&mut read);
        let net = &read["spec"]["net"];
        for secret in [&net["sasl"]["user"], &net["sasl"]["password"], &net["tls"]["key"]] {
            assert_eq!(secret["value"], REDACTED, "{read}");
        }
        assert_eq!(net["sasl"]["type"]["value"], "PLAIN");
        assert_eq!(
            (net["tls"]["caCert"]["value"].as_str(), net["tls"]["cert"]["value"].as_str()),
            (Some("CA PEM"), Some("CERT PEM"))
        );
        assert_eq!(read["spec"]["filters"], stored["spec"]["filters"]);
        assert_eq!(read["spec"]["ceOverrides"], stored["spec"]["ceOverrides"]);
        assert_eq!(read["spec"]["sasl"], stored["spec"]["sasl"]);

        let mut resubmitted = read.clone();
        restore(&mut resubmitted, Some(&stored), "").unwrap();
        assert_eq!(resubmitted, stored);
        let error = restore(&mut read, None, "").unwrap_err();
        assert!(matches!(&error, ValidationError::Field { field, .. } if field.starts_with("spec.net.")), "{error}");
    }

    #[test]
    fn a_file_is_read_trimmed_and_errors_name_it_without_its_content() {
        let dir = std::env::temp_dir().join(format!("switchyard-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "hunter2\n").unwrap();
        let file = Secret { file: Some(path.display().to_string()), ..Secret::default() };
        assert_eq!(file.read("the token").unwrap(), "hunter2");
        std::fs::write(&path, "  \n").unwrap();
        assert!(file.read("the token").unwrap_err().0.contains("is empty"));
        std::fs::remove_file(&path).unwrap();
        let missing = file.read("the token").unwrap_err().0;
        assert!(missing.contains(&path.display().to_string()) && missing.contains("the token"), "{missing}");
        std::fs::remove_dir(&dir).unwrap();
    }
}
