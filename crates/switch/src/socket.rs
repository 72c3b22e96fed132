//! Options every TCP connection of the switch gets, wallet or bank.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Between probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Probes unanswered before the kernel gives the connection up.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// No Nagle delay (a message is one small write), and TCP keepalive: a peer
/// that vanished without a FIN or RST (power lost, a NAT or firewall that
/// forgot the flow) is found within about 90 s of silence, and its
/// connection is closed and its slot freed, even where the listener's
/// `idle_timeout_ms` is 0 and on bank links, which have no idle limit.
pub fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_RETRIES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_ends_of_an_accepted_connection_get_keepalive_and_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        for stream in [&client, &server] {
            assert!(!SockRef::from(stream).keepalive().unwrap());
            configure(stream).unwrap();
            let sock = SockRef::from(stream);
            assert!(sock.keepalive().unwrap());
            assert!(stream.nodelay().unwrap());
            #[cfg(target_os = "linux")]
            {
                assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
                assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
                assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
            }
        }
    }
}
