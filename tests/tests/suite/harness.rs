//! The harness itself: a private nats-server comes up with JetStream on a
//! port of its own choosing and answers its health check.

use std::io::{Read, Write};
use std::net::TcpStream;

use cascade_tests::NatsServer;

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to the monitoring port");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read response");
    body
}

#[test]
fn nats_server_starts_with_jetstream_on_its_own_ports() {
    let a = NatsServer::start();
    let b = NatsServer::start();
    assert_ne!(a.client_url, b.client_url, "two tests get two servers");
    let monitor = a.monitor_url.trim_start_matches("http://").to_owned();
    let health = http_get(&monitor, "/healthz?js-enabled-only=true");
    assert!(
        health.contains("200 OK") && health.contains("\"ok\""),
        "{health}"
    );
    let varz = http_get(&monitor, "/varz");
    let version = varz
        .split("\"version\":")
        .nth(1)
        .and_then(|v| v.split('"').nth(1))
        .unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (2, 10),
        "nats-server {version} is older than 2.10"
    );
    let _ = a.client_addr();
}
