//! The real `switchboard serve` as a child process, for the tests that kill
//! it, and the simulators' binaries (`banksim`, `walletsim`) beside it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where [`free_port`] looks: below Linux's ephemeral range (32768 on).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port free right now on loopback, each handed out once per test
/// process. Not one the kernel would pick (`bind` to port 0): such a port
/// can become the local end of an outgoing connection before the process
/// meant to listen on it starts, and a switch reconnecting to a bank that
/// is not up yet can even connect to itself on it (TCP simultaneous open),
/// so the bank then cannot bind its port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    // Test binaries run one after another; each starts at its own place.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = TEST_PORTS.start + offset as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}");
}

/// Where a switch process finds its store and its banks.
pub struct SwitchFile<'a> {
    pub name: &'a str,
    /// The `[store]` line: `path = "…"` or `url = "…"`.
    pub store: &'a str,
    pub wallet_port: u16,
    pub bank_a: SocketAddr,
    pub bank_b: SocketAddr,
    pub timeout_ms: u64,
    pub max_backoff_ms: u64,
}

/// A config in `dir` for a switch whose banks are never reached (an unused
/// address): for commands that only read its store (`switchboard.db` is
/// `switch.db` in `dir`) and for a switch that must refuse to start.
pub fn offline_config(dir: &Path) -> PathBuf {
    let nowhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
    write_config(
        dir,
        SwitchFile {
            name: "switch.toml",
            store: "path = \"switch.db\"",
            wallet_port: free_port(),
            bank_a: nowhere,
            bank_b: nowhere,
            timeout_ms: 500,
            max_backoff_ms: 200,
        },
    )
}

/// Writes a config for a switch process in `dir`.
pub fn write_config(dir: &Path, f: SwitchFile<'_>) -> PathBuf {
    let path = dir.join(f.name);
    std::fs::write(
        &path,
        format!(
            r#"
[switch]
institution_id = "{switch}"
[store]
{store}
[[wallets]]
listen = "127.0.0.1:{wallet_port}"
institutions = ["{wallet}"]
max_connections = 256
[[banks]]
institution_id = "{a}"
bins = ["622202"]
hosts = ["{a_addr}"]
timeout_ms = {timeout}
connections = 2
[[banks]]
institution_id = "{b}"
bins = ["621700"]
hosts = ["{b_addr}"]
timeout_ms = {timeout}
connections = 2
[saf]
initial_backoff_ms = 100
max_backoff_ms = {max_backoff}
"#,
            switch = super::SWITCH_ID,
            wallet = super::WALLET_ID,
            a = super::BANK_A,
            b = super::BANK_B,
            store = f.store,
            wallet_port = f.wallet_port,
            a_addr = f.bank_a,
            b_addr = f.bank_b,
            timeout = f.timeout_ms,
            max_backoff = f.max_backoff_ms,
        ),
    )
    .unwrap();
    path
}

/// A child process that is killed and reaped when dropped, so a test that
/// fails half-way (a panic unwinds through it) leaves no process behind.
/// Derefs to the `Child` for `kill`, `wait` and `id`.
pub struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    pub fn new(child: Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child, no longer killed on drop: for `wait_with_output` once the
    /// test has told it to stop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("present until dropped")
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("present until dropped")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Already gone when the test killed or waited for it: both are no-ops then.
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `switchboard serve` and waits until it listens.
pub fn serve(config: &Path) -> KillOnDrop {
    serve_logging(config, Stdio::null())
}

/// [`serve`] with its log (stderr) going to `log`.
pub fn serve_logging(config: &Path, log: impl Into<Stdio>) -> KillOnDrop {
    let mut command = serve_command(config);
    command.stderr(log);
    listening(command, String::new)
}

fn serve_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped());
    command
}

/// The child's side of a kill -9 test: this test binary run again, running
/// only `test`, with `env` set. Each whole line it prints starting `ACK `
/// goes to `acked` (without the prefix and newline; a line cut by the kill
/// has no newline and is not acknowledged); once `acked` returns true the
/// child is killed with SIGKILL. Returns when the child is gone and its
/// output drained; fails if it ended before being killed.
pub fn kill_9_child(test: &str, env: (&str, &Path), mut acked: impl FnMut(&str) -> bool) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop::new(child);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break; // EOF: the child is gone and the pipe drained.
        }
        if let Some(ack) = line.strip_prefix("ACK ").and_then(|r| r.strip_suffix('\n')) {
            if acked(ack) && !killed {
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
    }
    child.wait().unwrap();
    assert!(killed, "the child ended before being killed");
}

/// Spawns `command` and waits for its "listening" line; `log` says why not.
pub fn listening(mut command: Command, log: impl Fn() -> String) -> KillOnDrop {
    let mut child = KillOnDrop::new(command.spawn().unwrap());
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.contains("listening"),
        "switch did not start: {line:?} {}",
        log()
    );
    child
}

/// A process's log as plain text: ANSI colour sequences left out.
pub fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Starts `switchboard serve` logging at `level` into `log`, without data
/// keys from the environment, and waits until it listens.
pub fn serve_logged(config: &Path, log: &Path, level: &str) -> KillOnDrop {
    let mut command = serve_command(config);
    command
        .env("RUST_LOG", level)
        .env_remove(switchboard::vault::KEYS_ENV)
        .stderr(std::fs::File::create(log).unwrap());
    listening(command, || std::fs::read_to_string(log).unwrap_or_default())
}

/// Stops a switch process as an operator does (SIGTERM) and checks it ended well.
pub fn stop(switch: KillOnDrop) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(switch.id() as i32, libc::SIGTERM) };
    let status = switch.into_inner().wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A binary of the simulators package (`banksim`, `walletsim`), built beside
/// `switchboard` by `cargo test --workspace` (or `cargo build -p simulators`).
pub fn simulator_path(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_switchboard")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test --workspace`",
        path.display()
    );
    path
}

/// Loopback at `port`.
pub fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// What each account of a [`banksim`] starts with, in minor units.
pub const BANKSIM_BALANCE: i64 = 10_000_000;

/// A `banksim` process: its bank port and admin port.
pub struct Banksim {
    pub child: KillOnDrop,
    pub port: u16,
    pub admin: u16,
}

/// Starts a `banksim` with 6 accounts of [`BANKSIM_BALANCE`] and the given
/// faults (`none` for none), and waits until its admin port answers.
pub fn banksim(institution: &str, bin: &str, seed: u64, faults: &str) -> Banksim {
    banksim_with(institution, bin, seed, faults, &[])
}

/// [`banksim`] with more arguments: `--framing binary2`, `--capture FILE`.
pub fn banksim_with(
    institution: &str,
    bin: &str,
    seed: u64,
    faults: &str,
    more: &[&OsStr],
) -> Banksim {
    banksim_logging(institution, bin, seed, faults, more, Stdio::null())
}

/// [`banksim_with`] with its log (stderr) going to `log`.
pub fn banksim_logging(
    institution: &str,
    bin: &str,
    seed: u64,
    faults: &str,
    more: &[&OsStr],
    log: impl Into<Stdio>,
) -> Banksim {
    banksim_at(free_port(), institution, bin, seed, faults, more, log)
}

/// [`banksim_logging`] listening on `port`: a bank that comes back where
/// it was, or that a switch was told of before it started.
pub fn banksim_at(
    port: u16,
    institution: &str,
    bin: &str,
    seed: u64,
    faults: &str,
    more: &[&OsStr],
    log: impl Into<Stdio>,
) -> Banksim {
    let admin = free_port();
    let child = banksim_command(institution, bin, seed, port, admin)
        .args(["--faults", faults])
        .args(more)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("banksim runs");
    let child = KillOnDrop::new(child);
    // Ready when its admin port answers.
    send_admin(admin, "faults");
    Banksim { child, port, admin }
}

/// `banksim` with 6 accounts of [`BANKSIM_BALANCE`] on `port`, its admin
/// port on `admin`: the rest (faults, output) is the caller's.
pub fn banksim_command(institution: &str, bin: &str, seed: u64, port: u16, admin: u16) -> Command {
    let mut command = Command::new(simulator_path("banksim"));
    command
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .args([
            "--institution",
            institution,
            "--bin",
            bin,
            "--accounts",
            "6",
        ])
        .args([
            "--balance",
            &BANKSIM_BALANCE.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
    command
}

impl Banksim {
    /// Ctrl-C (SIGINT), as an operator stops it, and waits until it has exited
    /// (a capture flushed and complete), which must be within 10 s and clean.
    pub fn interrupt(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "banksim exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("banksim did not exit within 10 s of SIGINT");
    }
}

/// Sends one admin command and returns the first line of the answer. A
/// process started a moment ago may take a while to listen on a loaded
/// machine: it is given 30 s to accept, and 30 s to answer.
pub fn send_admin(port: u16, command: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr(port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.write_all(format!("{command}\n").as_bytes()).unwrap();
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("admin port {port} gave no answer to {command:?}: {e}"));
            return line;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("admin port {port} does not answer");
}

/// `switchboard capture decode --json FILE`, which must succeed: its lines
/// parsed, the summary last.
pub fn capture_decode_json(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["capture", "decode", "--json"])
        .arg(path)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two `banksim`s and the config of a switch between them on the embedded
/// store, for tests that run `switchboard serve` and `walletsim` as processes.
pub struct BanksAndSwitch {
    pub bank_a: Banksim,
    pub bank_b: Banksim,
    pub dir: tempfile::TempDir,
    pub wallet_port: u16,
    pub config: PathBuf,
}

/// Starts the banks (their books seeded with `seed_a` and `seed_b`) and
/// writes the switch's config; the switch is for the test to [`serve`].
pub fn banks_and_switch(seed_a: u64, seed_b: u64) -> BanksAndSwitch {
    let bank_a = banksim(super::BANK_A, "622202", seed_a, "none");
    let bank_b = banksim(super::BANK_B, "621700", seed_b, "none");
    let dir = tempfile::tempdir().unwrap();
    let wallet_port = free_port();
    let config = write_config(
        dir.path(),
        SwitchFile {
            name: "switch.toml",
            store: "path = \"switchboard.db\"",
            wallet_port,
            bank_a: addr(bank_a.port),
            bank_b: addr(bank_b.port),
            timeout_ms: 5_000,
            max_backoff_ms: 500,
        },
    );
    BanksAndSwitch {
        bank_a,
        bank_b,
        dir,
        wallet_port,
        config,
    }
}

/// Asserts that a command whose stderr was a pipe drew no progress bar on
/// it: no escape sequence, no carriage return.
pub fn assert_no_progress(what: &str, stderr: &[u8]) {
    assert!(
        !stderr.contains(&0x1b) && !stderr.contains(&b'\r'),
        "{what} wrote terminal control to a stderr that is not a terminal: {:?}",
        String::from_utf8_lossy(stderr)
    );
}

/// Runs the shell command line `command` in `dir` on a pseudo-terminal
/// (util-linux `script`), as a user at a terminal would: its exit status and
/// all it wrote there, stdout and stderr together.
pub fn on_a_terminal(command: &str, dir: &Path) -> (std::process::ExitStatus, Vec<u8>) {
    let out = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    (out.status, out.stdout)
}

/// `path` quoted for a shell command line.
pub fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}
