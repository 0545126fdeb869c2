//! The embedded dead-letter store on real files: durability across reopen, id format and
//! continuity, independence from topics, and behaviour once closed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchyard_log::testkit::sample_dead_letter;
use switchyard_log::{DeadLetter, EventLog, LogError};
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};

const SCOPE: &str = "default/my-trigger";

async fn open(dir: &Path) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(EmbeddedConfig::new(dir)).await.unwrap()
}

fn with_id(entry: &DeadLetter, id: &str) -> DeadLetter {
    DeadLetter { id: id.to_owned(), ..entry.clone() }
}

#[tokio::test]
async fn entries_survive_reopen_and_ids_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let store = log.dead_letters();
    let mut entries = Vec::new();
    for i in 0..3 {
        let mut entry = sample_dead_letter(&format!("e{i}"), i + 1);
        entry.last_error = Some(format!("error {i}"));
        let id = store.put(SCOPE, entry.clone()).await.unwrap();
        entries.push(with_id(&entry, &id));
    }
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["00000000000000000001", "00000000000000000002", "00000000000000000003"]);
    let other = store.put("default/other", sample_dead_letter("o", 1)).await.unwrap();
    assert_eq!(other, "00000000000000000001", "each scope counts on its own");
    assert!(store.remove(SCOPE, "00000000000000000003").await.unwrap());
    log.close().await;
    drop(store);
    drop(log);

    let log = open(dir.path()).await;
    let store = log.dead_letters();
    assert_eq!(store.list(SCOPE, None, 10).await.unwrap(), entries[..2]);
    assert_eq!(store.get(SCOPE, &entries[1].id).await.unwrap().as_ref(), Some(&entries[1]));
    assert_eq!(store.get(SCOPE, "00000000000000000003").await.unwrap(), None);
    let id = store.put(SCOPE, sample_dead_letter("e3", 1)).await.unwrap();
    assert_eq!(id, "00000000000000000004", "the removed last id is not reused after reopen");
    assert_eq!(store.purge(SCOPE).await.unwrap(), 3);
    // Dropped without close: the drop closes it.
    drop(store);
    drop(log);

    let log = open(dir.path()).await;
    let store = log.dead_letters();
    assert!(store.list(SCOPE, None, 10).await.unwrap().is_empty());
    assert_eq!(store.list("default/other", None, 10).await.unwrap().len(), 1);
    let id = store.put(SCOPE, sample_dead_letter("e5", 1)).await.unwrap();
    assert_eq!(id, "00000000000000000005", "ids are not reused after purge and reopen");
    log.close().await;
}

#[tokio::test]
async fn entries_are_kept_through_topic_deletion_retention_and_orphan_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EmbeddedConfig::new(dir.path());
    config.segment_bytes = 1024;
    config.retention_age = Duration::ZERO;
    let log = EmbeddedLog::open(config.clone()).await.unwrap();
    let store = log.dead_letters();
    log.create_topic("default.b").await.unwrap();
    log.create_group("default.b", "t").await.unwrap();
    let entry = sample_dead_letter("kept", 4);
    // Scopes spelled like the group's key in the same database.
    let scopes = ["default.b/t", "default/t"];
    let mut ids = Vec::new();
    for scope in scopes {
        ids.push(store.put(scope, entry.clone()).await.unwrap());
    }
    let events: Vec<_> = (0..40).map(|i| switchyard_log::testkit::sample_event(&format!("x{i}"), 100)).collect();
    for e in &events {
        log.append("default.b", std::slice::from_ref(e)).await.unwrap();
    }
    assert!(log.enforce_retention() > 0, "retention deleted segments");
    log.delete_group("default.b", "t").await.unwrap();
    log.delete_topic("default.b").await.unwrap();
    log.close().await;
    drop(store);
    drop(log);

    let log = EmbeddedLog::open(config).await.unwrap();
    let store = log.dead_letters();
    for (scope, id) in scopes.iter().zip(&ids) {
        assert_eq!(store.get(scope, id).await.unwrap(), Some(with_id(&entry, id)), "{scope}");
    }
    log.close().await;
}

#[tokio::test]
async fn a_closed_store_fails_and_does_not_hold_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let store = log.dead_letters();
    let id = store.put(SCOPE, sample_dead_letter("a", 1)).await.unwrap();
    log.close().await;
    assert!(matches!(store.put(SCOPE, sample_dead_letter("b", 1)).await, Err(LogError::Closed)));
    assert!(matches!(store.list(SCOPE, None, 10).await, Err(LogError::Closed)));
    assert!(matches!(store.get(SCOPE, &id).await, Err(LogError::Closed)));
    assert!(matches!(store.remove(SCOPE, &id).await, Err(LogError::Closed)));
    assert!(matches!(store.purge(SCOPE).await, Err(LogError::Closed)));

    // The old handle is still alive; the directory opens again all the same.
    let reopened = open(dir.path()).await;
    assert_eq!(reopened.dead_letters().list(SCOPE, None, 10).await.unwrap().len(), 1);
    drop(store);
    reopened.close().await;
}
