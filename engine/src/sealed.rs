//! Secrets sealed in the declaration log: a declaration's inline secret values and URL
//! passwords (what a read redacts, [`switchyard_meta::secret::replace_secrets`]) are encrypted
//! before it is published and decrypted as each node reads it back, so the log (the Kafka
//! backend's `{prefix}config` topic, which every node and anyone with read access to it sees)
//! never holds them in clear.
//!
//! ChaCha20-Poly1305 with a random 96-bit nonce per secret, under the cluster's 256-bit
//! [`SecretsKey`]. A secret a node cannot open (sealed under another key) stays sealed: it reads
//! as `sealed.v1.…`, which [`switchyard_meta::secret::Secret::read`] refuses with a message
//! saying which key to give, and the declaration's status shows it.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use switchyard_log::{Change, Changes, DeclarationLog, LogError};
use switchyard_meta::secret::{replace_secrets, SEALED_PREFIX};
use tokio::sync::mpsc;

/// The length of a key, in bytes.
pub const KEY_BYTES: usize = 32;

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// The key that seals secrets: the same on every node of a cluster.
pub struct SecretsKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretsKey, KeyError> {
        if bytes.len() != KEY_BYTES {
            return Err(KeyError(format!("a secrets key is {KEY_BYTES} bytes, not {}", bytes.len())));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| KeyError("unusable key".to_owned()))?;
        Ok(SecretsKey { key: LessSafeKey::new(key), random: SystemRandom::new() })
    }

    /// A key from its base64 text (standard alphabet, as `switchyard secrets-key` prints).
    pub fn from_base64(text: &str) -> Result<SecretsKey, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError(format!("a secrets key is {KEY_BYTES} bytes in base64, and this is not base64")))?;
        SecretsKey::from_bytes(&bytes)
    }

    /// 32 fresh random bytes.
    pub fn generate() -> Result<[u8; KEY_BYTES], KeyError> {
        let mut bytes = [0; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).map_err(|_| KeyError("no randomness to make a key".to_owned()))?;
        Ok(bytes)
    }

    /// `plain` sealed: `sealed.v1.` then base64url(nonce ‖ ciphertext ‖ tag).
    fn seal(&self, plain: &str) -> Option<String> {
        let mut nonce = [0; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut sealed = plain.as_bytes().to_vec();
        self.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed).ok()?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Some(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// What `sealed` holds, if this key sealed it.
    fn open(&self, sealed: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(SEALED_PREFIX)?).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut opened = ciphertext.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut opened).ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// A declaration (JSON) with every secret not yet sealed sealed.
    pub fn seal_declaration(&self, declaration: &[u8]) -> Vec<u8> {
        self.rewrite(declaration, &mut |text| match text.starts_with(SEALED_PREFIX) {
            true => None,
            false => self.seal(text),
        })
    }

    /// A declaration (JSON) with every secret this key sealed opened; `unopened` counts the
    /// sealed ones it could not open.
    pub fn open_declaration(&self, declaration: &[u8], unopened: &mut usize) -> Vec<u8> {
        self.rewrite(declaration, &mut |text| {
            if !text.starts_with(SEALED_PREFIX) {
                return None;
            }
            let opened = self.open(text);
            *unopened += usize::from(opened.is_none());
            opened
        })
    }

    fn rewrite(&self, declaration: &[u8], replace: &mut dyn FnMut(&str) -> Option<String>) -> Vec<u8> {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(declaration) else {
            return declaration.to_vec();
        };
        replace_secrets(&mut value, replace);
        serde_json::to_vec(&value).unwrap_or_else(|_| declaration.to_vec())
    }
}

/// A [`DeclarationLog`] whose secrets are sealed in the log it wraps.
pub struct SealedDeclarations {
    inner: Arc<dyn DeclarationLog>,
    key: Arc<SecretsKey>,
}

impl SealedDeclarations {
    /// `inner`, its secrets sealed with `key`.
    pub fn new(inner: Arc<dyn DeclarationLog>, key: SecretsKey) -> SealedDeclarations {
        SealedDeclarations { inner, key: Arc::new(key) }
    }
}

#[async_trait]
impl DeclarationLog for SealedDeclarations {
    async fn publish(&self, key: &str, value: Option<Vec<u8>>) -> Result<u64, LogError> {
        let sealed = value.map(|value| self.key.seal_declaration(&value));
        self.inner.publish(key, sealed).await
    }

    fn changes(&self) -> Result<Changes, LogError> {
        let Changes { mut receiver, replayed } = self.inner.changes()?;
        let (opened, changes) = mpsc::unbounded_channel();
        let key = Arc::clone(&self.key);
        tokio::spawn(async move {
            while let Some(change) = receiver.recv().await {
                let Change { sequence, key: name, value } = change;
                let mut unopened = 0;
                let value = value.map(|value| key.open_declaration(&value, &mut unopened));
                if unopened > 0 {
                    tracing::warn!(
                        declaration = %name,
                        secrets = unopened,
                        "secrets of this declaration were sealed with another key: give this node the cluster's [secrets] key_file"
                    );
                }
                if opened.send(Change { sequence, key: name, value }).is_err() {
                    break;
                }
            }
        });
        Ok(Changes { receiver: changes, replayed })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_bytes(&SecretsKey::generate().unwrap()).unwrap()
    }

    fn declaration() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "metadata": {"name": "gh"},
            "spec": {"secretToken": {"value": "hunter2"}, "sink": {"uri": "http://user:p%40ss@127.0.0.1:9/x"},
                     "filter": {"attributes": {"type": "value"}}}
        }))
        .unwrap()
    }

    #[test]
    fn sealed_declarations_hold_no_secret_and_open_to_the_original() {
        let key = key();
        let sealed = key.seal_declaration(&declaration());
        let text = String::from_utf8(sealed.clone()).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("p%40ss"), "{text}");
        assert!(text.contains("\"type\":\"value\""), "other fields are untouched: {text}");
        assert_eq!(key.seal_declaration(&sealed), sealed, "sealing twice seals once");
        let mut unopened = 0;
        let opened: serde_json::Value = serde_json::from_slice(&key.open_declaration(&sealed, &mut unopened)).unwrap();
        assert_eq!(unopened, 0);
        assert_eq!(opened["spec"]["secretToken"]["value"], "hunter2");
        assert_eq!(opened["spec"]["sink"]["uri"], "http://user:p%40ss@127.0.0.1:9/x");
    }

    #[test]
    fn another_key_leaves_the_secret_sealed_and_counts_it() {
        let sealed = key().seal_declaration(&declaration());
        let mut unopened = 0;
        let opened: serde_json::Value =
            serde_json::from_slice(&key().open_declaration(&sealed, &mut unopened)).unwrap();
        assert_eq!(unopened, 2);
        let token = opened["spec"]["secretToken"]["value"].as_str().unwrap();
        assert!(token.starts_with(SEALED_PREFIX), "{token}");
        let secret: switchyard_meta::secret::Secret =
            serde_json::from_value(opened["spec"]["secretToken"].clone()).unwrap();
        let error = secret.read("the webhook secret").unwrap_err().to_string();
        assert!(error.contains("sealed with a key this node does not have"), "{error}");
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        assert!(SecretsKey::from_base64(&STANDARD.encode([7; KEY_BYTES])).is_ok());
        let short = SecretsKey::from_base64(&STANDARD.encode([7; 16])).unwrap_err().to_string();
        assert!(short.contains("32 bytes, not 16"), "{short}");
        assert!(SecretsKey::from_base64("not base64!").is_err());
    }
}
