//! Storage that cannot accept: ingest answers 503 with `Retry-After`, never a false 202, and
//! recovers once space is back. The data directory lives on a small tmpfs, so the disk really
//! fills up (this needs root to mount, as CI has).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Server, Subscriber};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap().keep();
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&dir).status();
        assert!(status.is_ok_and(|s| s.success()), "mounting a tmpfs needs root (the test command runs as root in CI)");
        Tmpfs(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_is_503_with_retry_after_and_nothing_acknowledged_is_lost() {
    let disk = Tmpfs::mount("8m");
    let data_dir = disk.path().join("data");
    let server = Server::start_in(Some(data_dir), &[]).await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;

    // Take most of the space, then ingest until storage refuses.
    let filler = disk.path().join("filler");
    let free = fs_free_bytes(disk.path());
    std::fs::write(&filler, vec![0u8; free.saturating_sub(256 * 1024) as usize]).unwrap();
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..2000 {
        let response = client
            .post(format!("{}/default/b", server.url))
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("e{i}"))
            .header("ce-type", "t")
            .header("ce-source", "/full")
            .body(vec![b'x'; 8 * 1024])
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::ACCEPTED => acknowledged.push(format!("e{i}")),
            StatusCode::SERVICE_UNAVAILABLE => {
                refusal = Some(response);
                break;
            }
            other => panic!("unexpected {other}: {}", response.text().await.unwrap()),
        }
    }
    let refusal = refusal.expect("storage filled up and ingest refused");
    assert!(refusal.headers().contains_key("retry-after"));
    assert_eq!(refusal.headers()["content-type"], "application/problem+json");
    assert!(!acknowledged.is_empty());

    // Space comes back: ingest accepts again.
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if server.send_binary("default", "b", "after-space", "t", b"{}").await == StatusCode::ACCEPTED {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "ingest recovers once space is free; log: {}", server.log());
    subscriber.wait_for(acknowledged.len() + 1, Duration::from_secs(30)).await;
    let delivered = subscriber.ids();
    for id in acknowledged.iter().chain(["after-space".to_owned()].iter()) {
        assert!(delivered.contains(id), "{id} acknowledged but not delivered");
    }
}

fn fs_free_bytes(path: &Path) -> u64 {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}
