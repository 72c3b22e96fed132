//! haproxy in front of several switch instances, for the multi-instance tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// haproxy, stopped when dropped.
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.exists())
}

/// The configuration README gives, with this test's addresses.
fn haproxy_config(listen: SocketAddr, switches: &[SocketAddr]) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\n\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    \
         timeout server 1h\n\n\
         frontend wallets\n    bind {listen}\n    default_backend switches\n\n\
         backend switches\n    balance roundrobin\n"
    );
    for (i, addr) in switches.iter().enumerate() {
        text.push_str(&format!(
            "    server switch{} {addr} check inter 1s\n",
            i + 1
        ));
    }
    text
}

pub async fn start_haproxy(switches: &[SocketAddr]) -> Haproxy {
    let binary = find_haproxy().unwrap_or_else(|| {
        panic!(
            "haproxy is not installed: this test runs two switch instances behind it. \
             Install it with `apt-get install -y haproxy` (.ci/run does)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = dir.path().join("haproxy.cfg");
    std::fs::write(&config, haproxy_config(listen, switches)).unwrap();
    let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
    let mut child = Command::new(&binary)
        .arg("-db")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("haproxy.log")).unwrap_or_default();
            panic!("haproxy exited with {status}: {log}");
        }
        if tokio::net::TcpStream::connect(listen).await.is_ok() {
            return Haproxy {
                child,
                addr: listen,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("haproxy did not listen on {listen}");
}
