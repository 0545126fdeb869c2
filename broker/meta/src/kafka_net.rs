//! How a Kafka client of a declaration reaches its cluster: TLS and SASL in Knative's shape
//! (`spec.net` of a KafkaSource; Switchyard's extension on KafkaSink). Every value is a
//! [`Secret`]: checked at declaration, read when the client starts, and turned into librdkafka's
//! properties ([`KafkaNet::properties`]).

use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretError, SecretSource};
use crate::ValidationError;

/// The SASL mechanisms a client may use, as Knative names them (`net.sasl.type`).
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// `spec.net`: TLS and SASL, each off unless enabled.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaNet {
    /// SASL authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
    /// TLS to the brokers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
}

/// `spec.net.sasl`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaSasl {
    /// Whether the client authenticates with SASL; the other settings are ignored when false.
    #[serde(default)]
    pub enable: bool,
    /// The user name (required when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Secret>,
    /// The password (required when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// The mechanism: `PLAIN` (the default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<Secret>,
}

/// `spec.net.tls`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaTls {
    /// Whether the client speaks TLS to the brokers; the other settings are ignored when false.
    #[serde(default)]
    pub enable: bool,
    /// The PEM certificates of the CAs the brokers' certificates are checked against (the
    /// system's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<Secret>,
    /// The client's PEM certificate, for brokers that authenticate clients by certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Secret>,
    /// The client certificate's PEM private key (with `cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
}

/// What a setting holds, checked where its value is known (inline at declaration, the others
/// when read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Text,
    Mechanism,
    Certificate,
    PrivateKey,
}

impl Content {
    /// Why `text` cannot be this setting's value, if it cannot.
    fn problem(self, text: &str) -> Option<String> {
        match self {
            Content::Text => None,
            Content::Mechanism => (!SASL_MECHANISMS.contains(&text))
                .then(|| format!("'{text}' is not a SASL mechanism: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")),
            Content::Certificate => (!text.contains("-----BEGIN CERTIFICATE-----"))
                .then(|| "is not a PEM certificate ('-----BEGIN CERTIFICATE-----')".to_owned()),
            Content::PrivateKey => (!(text.contains("-----BEGIN") && text.contains("PRIVATE KEY-----")))
                .then(|| "is not a PEM private key ('-----BEGIN PRIVATE KEY-----')".to_owned()),
        }
    }
}

/// One setting: where it is in the spec, its librdkafka property, what it holds, and the
/// property and value that stand in for it when it is not given.
struct Setting<'a> {
    field: &'static str,
    property: &'static str,
    content: Content,
    secret: Option<&'a Secret>,
    absent: Option<(&'static str, &'static str)>,
}

impl<'a> Setting<'a> {
    fn new(field: &'static str, property: &'static str, content: Content, secret: &'a Option<Secret>) -> Self {
        Setting { field, property, content, secret: secret.as_ref(), absent: None }
    }

    fn or(self, property: &'static str, value: &'static str) -> Self {
        Setting { absent: Some((property, value)), ..self }
    }
}

impl KafkaNet {
    fn sasl(&self) -> Option<&KafkaSasl> {
        self.sasl.as_ref().filter(|sasl| sasl.enable)
    }

    fn tls(&self) -> Option<&KafkaTls> {
        self.tls.as_ref().filter(|tls| tls.enable)
    }

    /// The settings that apply (those of what is enabled).
    fn settings(&self) -> Vec<Setting<'_>> {
        let mut settings = Vec::new();
        if let Some(sasl) = self.sasl() {
            settings.extend([
                Setting::new("spec.net.sasl.user", "sasl.username", Content::Text, &sasl.user),
                Setting::new("spec.net.sasl.password", "sasl.password", Content::Text, &sasl.password),
                Setting::new("spec.net.sasl.type", "sasl.mechanism", Content::Mechanism, &sasl.mechanism)
                    .or("sasl.mechanism", "PLAIN"),
            ]);
        }
        if let Some(tls) = self.tls() {
            settings.extend([
                // The system's CAs: librdkafka's statically linked OpenSSL looks for them in the
                // usual places only when told to.
                Setting::new("spec.net.tls.caCert", "ssl.ca.pem", Content::Certificate, &tls.ca_cert)
                    .or("ssl.ca.location", "probe"),
                Setting::new("spec.net.tls.cert", "ssl.certificate.pem", Content::Certificate, &tls.cert),
                Setting::new("spec.net.tls.key", "ssl.key.pem", Content::PrivateKey, &tls.key),
            ]);
        }
        settings
    }

    /// Checks what is enabled: SASL needs `user` and `password`; a TLS client certificate needs
    /// both `cert` and `key`; every secret given must be usable, and an inline one must hold
    /// what its setting takes. Errors name the field (`spec.net.sasl.password`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(sasl) = self.sasl() {
            for (field, secret) in [("spec.net.sasl.user", &sasl.user), ("spec.net.sasl.password", &sasl.password)] {
                if secret.is_none() {
                    return Err(ValidationError::field(
                        field,
                        "is required when spec.net.sasl.enable is true".to_owned(),
                    ));
                }
            }
        }
        if let Some(tls) = self.tls() {
            match (&tls.cert, &tls.key) {
                (Some(_), None) => {
                    return Err(ValidationError::field(
                        "spec.net.tls.key",
                        "is required with spec.net.tls.cert".to_owned(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(ValidationError::field(
                        "spec.net.tls.cert",
                        "is required with spec.net.tls.key".to_owned(),
                    ))
                }
                _ => {}
            }
        }
        for setting in self.settings() {
            let Some(secret) = setting.secret else { continue };
            secret.validate(setting.field)?;
            if let Some(SecretSource::Value(value)) = secret.source() {
                if let Some(problem) = setting.content.problem(value) {
                    return Err(ValidationError::field(&format!("{}.value", setting.field), problem));
                }
            }
        }
        Ok(())
    }

    /// librdkafka's properties for these settings, the secrets read now: `security.protocol`
    /// and the SASL and TLS settings. None when neither is enabled (the client's plaintext
    /// default). The error names the field and says what to fix, never quoting a secret.
    pub fn properties(&self) -> Result<Vec<(String, String)>, SecretError> {
        let protocol = match (self.sasl().is_some(), self.tls().is_some()) {
            (false, false) => return Ok(Vec::new()),
            (true, false) => "sasl_plaintext",
            (false, true) => "ssl",
            (true, true) => "sasl_ssl",
        };
        let mut properties = vec![("security.protocol".to_owned(), protocol.to_owned())];
        for setting in self.settings() {
            let Some(secret) = setting.secret else {
                if let Some((property, value)) = setting.absent {
                    properties.push((property.to_owned(), value.to_owned()));
                }
                continue;
            };
            let value = secret.read(setting.field)?;
            if let Some(problem) = setting.content.problem(&value) {
                // A mechanism is no secret; a certificate's or key's content is never quoted.
                return Err(SecretError(format!("{} {problem}", setting.field)));
            }
            properties.push((setting.property.to_owned(), value));
        }
        Ok(properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

    fn net(json: serde_json::Value) -> KafkaNet {
        serde_json::from_value(json).unwrap()
    }

    fn properties(json: serde_json::Value) -> Vec<(String, String)> {
        net(json).properties().unwrap()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn sasl_and_tls_map_to_librdkafka_properties() {
        assert_eq!(properties(serde_json::json!({})), pairs(&[]));
        let disabled = serde_json::json!({"sasl": {"enable": false, "user": {"value": "u"}}, "tls": {"enable": false}});
        assert_eq!(properties(disabled), pairs(&[]));
        let sasl = serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}, "password": {"value": "p"}}});
        assert_eq!(
            properties(sasl),
            pairs(&[
                ("security.protocol", "sasl_plaintext"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
                ("sasl.mechanism", "PLAIN")
            ])
        );
        let tls = serde_json::json!({"tls": {"enable": true}});
        assert_eq!(properties(tls), pairs(&[("security.protocol", "ssl"), ("ssl.ca.location", "probe")]));
        let both = serde_json::json!({
            "sasl": {"enable": true, "user": {"value": "u"}, "password": {"value": "p"}, "type": {"value": "SCRAM-SHA-512"}},
            "tls": {"enable": true, "caCert": {"value": CERT}, "cert": {"value": CERT}, "key": {"value": KEY}},
        });
        assert_eq!(
            properties(both),
            pairs(&[
                ("security.protocol", "sasl_ssl"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("ssl.ca.pem", CERT),
                ("ssl.certificate.pem", CERT),
                ("ssl.key.pem", KEY)
            ])
        );
    }

    #[test]
    fn secrets_are_read_when_the_client_starts_and_errors_name_the_field() {
        let missing = net(serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"},
            "password": {"env": "SWITCHYARD_TEST_KAFKA_NET_UNSET"}}}));
        missing.validate().unwrap();
        let error = missing.properties().unwrap_err().0;
        assert!(
            error.contains("SWITCHYARD_TEST_KAFKA_NET_UNSET") && error.contains("spec.net.sasl.password"),
            "{error}"
        );

        let dir = std::env::temp_dir().join(format!("switchyard-kafka-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, mechanism) = (dir.join("ca.pem"), dir.join("mechanism"));
        std::fs::write(&ca, "not a certificate").unwrap();
        std::fs::write(&mechanism, "GSSAPI\n").unwrap();
        let bad_ca = net(serde_json::json!({"tls": {"enable": true, "caCert": {"file": ca.display().to_string()}}}));
        let error = bad_ca.properties().unwrap_err().0;
        assert!(error.contains("spec.net.tls.caCert") && !error.contains("not a certificate"), "{error}");
        let bad_mechanism = net(serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"},
            "password": {"value": "p"}, "type": {"file": mechanism.display().to_string()}}}));
        let error = bad_mechanism.properties().unwrap_err().0;
        assert!(error.contains("spec.net.sasl.type") && error.contains("'GSSAPI'"), "{error}");
        std::fs::write(&ca, CERT).unwrap();
        assert!(bad_ca.properties().unwrap().contains(&("ssl.ca.pem".to_owned(), CERT.trim().to_owned())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let cases = [
            (serde_json::json!({"sasl": {"enable": true, "password": {"value": "p"}}}), "spec.net.sasl.user"),
            (serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}}}), "spec.net.sasl.password"),
            (
                serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}, "password": {"secretKeyRef": {"name": "s", "key": "p"}}}}),
                "spec.net.sasl.password.secretKeyRef",
            ),
            (
                serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}, "password": {"env": "1BAD"}}}),
                "spec.net.sasl.password.env",
            ),
            (
                serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"}, "password": {"value": "p"}, "type": {"value": "GSSAPI"}}}),
                "spec.net.sasl.type.value",
            ),
            (serde_json::json!({"tls": {"enable": true, "caCert": {"value": "nope"}}}), "spec.net.tls.caCert.value"),
            (serde_json::json!({"tls": {"enable": true, "cert": {"value": CERT}}}), "spec.net.tls.key"),
            (serde_json::json!({"tls": {"enable": true, "key": {"value": KEY}}}), "spec.net.tls.cert"),
            (
                serde_json::json!({"tls": {"enable": true, "cert": {"value": CERT}, "key": {"file": "relative"}}}),
                "spec.net.tls.key.file",
            ),
        ];
        for (json, expected) in cases {
            let error = net(json.clone()).validate().expect_err(&json.to_string());
            let ValidationError::Field { field, .. } = &error else { panic!("{json}: {error}") };
            assert_eq!(field, expected, "{json}: {error}");
        }
        let secret_key_ref = serde_json::json!({"sasl": {"enable": true, "user": {"value": "u"},
            "password": {"secretKeyRef": {"name": "s", "key": "p"}}}});
        let message = net(secret_key_ref).validate().unwrap_err().to_string();
        assert!(message.contains("'env'") && message.contains("'file'"), "{message}");
    }
}
