//! The admin listener's HTTP, as the tests read it: one request per
//! connection and the samples of a `/metrics` text.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use super::process::addr;

/// One GET on a new connection: status and body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let (status, _, body) = get_with_head(port, path);
    (status, body)
}

/// One GET on a new connection: status, response head and body.
pub fn get_with_head(port: u16, path: &str) -> (u16, String, String) {
    request(port, "GET", path, &[])
}

/// One request without a body on a new connection, with extra header
/// lines: status, response head and body.
pub fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr(port)).expect("admin listener answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

/// Samples of a metrics text: `name{labels}` → value.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}
