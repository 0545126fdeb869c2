//! The embedded state table on real files: what was written survives a reopen, and a closed
//! log refuses writes. (Surviving `kill -9` is the end-to-end PingSource tests' business.)

use std::path::Path;
use std::sync::Arc;

use switchyard_log::{EventLog, LogError};
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};

async fn open(dir: &Path) -> Arc<EmbeddedLog> {
    EmbeddedLog::open(EmbeddedConfig::new(dir)).await.unwrap()
}

#[tokio::test]
async fn entries_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let state = log.state();
    state.put("pingsource/ns/p/cursor", b"1").await.unwrap();
    state.put("githubsource/ns/g/seen/d1", b"2").await.unwrap();
    state.put("githubsource/ns/g/seen/d2", b"3").await.unwrap();
    state.remove("githubsource/ns/g/seen/d1").await.unwrap();
    log.close().await;
    assert!(
        matches!(state.put("x", b"y").await, Err(LogError::Closed | LogError::Io(_))),
        "a closed log takes no write"
    );
    drop((state, log));

    let log = open(dir.path()).await;
    let state = log.state();
    assert_eq!(state.get("pingsource/ns/p/cursor").await.unwrap().as_deref(), Some(b"1".as_slice()));
    let seen = state.scan("githubsource/ns/g/").await.unwrap();
    assert_eq!(seen, vec![("githubsource/ns/g/seen/d2".to_owned(), b"3".to_vec())]);
    assert!(state.get("x").await.unwrap().is_none());
}
