//! The `homeroom-media-node` binary: startup line, health, graceful exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_binary_prints_its_addresses_and_drains_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_homeroom-media-node"))
        .args(["--http-addr", "127.0.0.1:0", "--node-id", "bin-test", "--region", "local", "--drain-timeout-secs", "2"])
        .env("NODE_SECRET", "binary-test-node-secret")
        .env("HOMEROOM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // homeroom-media-node listening http=127.0.0.1:PORT udp=127.0.0.1:PORT
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..2], ["homeroom-media-node", "listening"], "{line}");
    let http = fields[2].strip_prefix("http=").unwrap();
    let udp = fields[3].strip_prefix("udp=").unwrap();
    assert!(http.parse::<std::net::SocketAddr>().unwrap().port() > 0);
    assert!(udp.parse::<std::net::SocketAddr>().unwrap().port() > 0);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let health: serde_json::Value =
        runtime.block_on(async { reqwest::get(format!("http://{http}/healthz")).await.unwrap().json().await.unwrap() });
    assert_eq!(health["node"], "bin-test");

    let stopping = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clean exit after SIGTERM: {status}");
            break;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "the node did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_short_secret_is_refused_at_start_with_what_to_do() {
    let output = Command::new(env!("CARGO_BIN_EXE_homeroom-media-node"))
        .args(["--http-addr", "127.0.0.1:0"])
        .env("NODE_SECRET", "hunter2")
        .output()
        .unwrap();
    assert!(!output.status.success(), "a guessable secret must not start a node");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NODE_SECRET is 7 bytes") && stderr.contains("at least 16"), "{stderr}");
}

#[test]
fn a_missing_secret_is_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_homeroom-media-node"))
        .args(["--http-addr", "127.0.0.1:0"])
        .env_remove("NODE_SECRET")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("NODE_SECRET"), "{stderr}");
}
