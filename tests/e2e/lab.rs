//! The lab every scenario runs in: a private network namespace (entered once, by re-executing
//! this test binary under `unshare`), a loopback subnet 127.N.0.0/24 per scenario, a scratch
//! folder, and the processes started in it, all stopped when the lab is dropped. Nothing here
//! sends a packet outside the namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const IN_NAMESPACE: &str = "VIRTDNS_E2E_IN_NETNS";
const IN_USER_NAMESPACE: &str = "VIRTDNS_E2E_IN_USERNS";

/// A scenario that cannot run here says why by panicking with this; the runner counts it as
/// skipped, not failed.
pub struct Skipped(pub String);

/// True when the suite runs as an unprivileged user inside a user namespace.
pub fn in_user_namespace() -> bool {
    std::env::var_os(IN_USER_NAMESPACE).is_some()
}

pub fn skip(reason: &str) -> ! {
    std::panic::panic_any(Skipped(reason.to_string()))
}

/// How a scenario ended, for scenarios that sum up others (the README table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed,
    Skipped(String),
}

static OUTCOMES: Mutex<Vec<(String, Outcome)>> = Mutex::new(Vec::new());

/// The runner records each scenario's outcome here as it ends.
pub fn record_outcome(name: &str, outcome: Outcome) {
    OUTCOMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_string(), outcome));
}

/// How the scenario `name` ended in this run; None when it did not run (filtered out, or not
/// yet).
pub fn outcome(name: &str) -> Option<Outcome> {
    OUTCOMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, o)| o.clone())
}
/// Addresses 127.N.0.1 to 127.N.0.HOSTS are put on lo for each lab.
const HOSTS: u8 = 12;

/// Re-executes this binary inside fresh network and mount namespaces unless already there.
/// Returns only inside the namespace.
pub fn enter_namespace() {
    if std::env::var_os(IN_NAMESPACE).is_some() {
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut cmd = Command::new("unshare");
    if effective_uid() != 0 {
        cmd.args(["--user", "--map-root-user"]);
        cmd.env(IN_USER_NAMESPACE, "1");
    }
    cmd.args(["--net", "--mount", "--"])
        .arg(exe)
        .args(std::env::args().skip(1));
    cmd.env(IN_NAMESPACE, "1");
    let status = cmd
        .status()
        .expect("unshare (util-linux) must be installed");
    std::process::exit(status.code().unwrap_or(1));
}

fn effective_uid() -> u32 {
    // Reading /proc avoids a libc dependency just for geteuid().
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(1)
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls until `addr` accepts TCP connections.
pub fn wait_for_tcp(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` every 20 ms until it returns true or `limit` passes; returns the time taken.
pub fn wait_until(limit: Duration, what: &str, check: impl FnMut() -> bool) -> Duration {
    poll_until(limit, check).unwrap_or_else(|| panic!("{what}: not within {limit:?}"))
}

/// Like `wait_until`, but returns None instead of failing when `limit` passes, for a scenario
/// that records what it saw before it asserts.
pub fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process owned by the lab, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    /// Waits up to `limit` for the process to exit on its own: its exit status, or None when
    /// it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Lab {
    net: u8,
    dir: PathBuf,
    procs: Vec<Proc>,
    /// Logs of processes the lab did not start itself (a daemon a hook started), shown with
    /// the others on failure: (label, file or folder of files).
    attached: Vec<(String, PathBuf)>,
}

impl Lab {
    pub fn new(index: usize, name: &str) -> Lab {
        let dir = std::env::temp_dir()
            .join(format!("virtdns-e2e-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("lab folder");
        let lab = Lab {
            net: 10 + index as u8,
            dir,
            procs: Vec::new(),
            attached: Vec::new(),
        };
        // Servers such as BIND listen only on addresses an interface carries.
        let batch: String = (1..=HOSTS)
            .map(|h| format!("addr add {}/32 dev lo\n", lab.ip(h)))
            .collect();
        let script = lab.write("ip.batch", &batch);
        run(Command::new("ip").arg("-batch").arg(script));
        lab
    }

    /// 127.N.0.host: this lab's loopback addresses.
    pub fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.net, 0, host)
    }

    pub fn addr(&self, host: u8) -> SocketAddr {
        SocketAddr::new(self.ip(host).into(), 53)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Starts `cmd` with its output in `<name>.log`, owned by the lab.
    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> &mut Proc {
        let log = self.path(&format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
        self.procs.last_mut().unwrap()
    }

    pub fn proc(&mut self, name: &str) -> &mut Proc {
        // The newest of that name: a restarted process replaces the killed one.
        self.procs
            .iter_mut()
            .rev()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Shows `path` (a log file, or a folder of them) with the lab's own logs on failure.
    pub fn attach_log(&mut self, label: &str, path: PathBuf) {
        self.attached.push((label.to_string(), path));
    }

    /// Ends a scenario that passed: its processes stop and its folder goes, and the run's
    /// folder with its last scenario (a failed scenario keeps its folder, for its files).
    pub fn discard(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(run) = dir.parent() {
            let _ = std::fs::remove_dir(run);
        }
    }

    /// The scenario's folder.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Logs of every process, for a failure report.
    pub fn logs(&self) -> String {
        let mut logs: Vec<String> = self
            .procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, tail(&p.log_text(), 40)))
            .collect();
        for (label, path) in &self.attached {
            let mut files: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(_) => vec![path.clone()],
            };
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                logs.push(format!(
                    "--- {label}: {} ---\n{}",
                    file.display(),
                    tail(&text, 40)
                ));
            }
        }
        logs.join("\n")
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
