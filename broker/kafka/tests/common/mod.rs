//! What the Kafka backend's integration tests share.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A Kafka broker of the test's own (`deploy/kafka/local.sh` on a free port), so that the test
/// can stop it: the shared one stays up for everybody else. Deleted when dropped.
pub(crate) struct OwnKafka {
    port: u16,
    dir: PathBuf,
    script: PathBuf,
}

impl OwnKafka {
    /// Starts one; `name` tells its data directory apart.
    pub(crate) fn start(name: &str) -> OwnKafka {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kafka/local.sh");
        // The broker listens on the port, its controller on the next one.
        let port = loop {
            let port = 20_000 + fastrand::u16(..20_000);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let dir = std::env::temp_dir().join(format!("switchyard-kafka-{name}-{port}"));
        let kafka = OwnKafka { port, dir, script };
        kafka.run("up");
        kafka
    }

    /// `local.sh <command>` (`up`, `stop`, `down`) for this broker; panics when it fails.
    pub(crate) fn run(&self, command: &str) {
        let output = self.script(command).output().expect("deploy/kafka/local.sh runs");
        assert!(output.status.success(), "local.sh {command}: {}", String::from_utf8_lossy(&output.stderr));
    }

    fn script(&self, command: &str) -> Command {
        let mut script = Command::new(&self.script);
        script.arg(command).env("KAFKA_PORT", self.port.to_string()).env("KAFKA_DIR", &self.dir);
        script
    }

    /// Its bootstrap address.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = self.script("down").status();
    }
}
