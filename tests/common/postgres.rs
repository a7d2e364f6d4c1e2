//! A real PostgreSQL server for the shared-store tests: a throwaway cluster (`initdb` +
//! `pg_ctl`) in a temporary folder on a free port, one per test binary, a fresh database per
//! test. As root the cluster runs as the `postgres` user (PostgreSQL refuses root).
//!
//! A watcher process stops the cluster and removes its folder when the test process exits,
//! however it exits. Without PostgreSQL the tests say so loudly; under CI (`CI=true`) that is a
//! failure, so a CI run never passes with the PostgreSQL tests silently skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Cluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// The cluster shared by this test binary; `None` (after a loud message) when PostgreSQL is not
/// installed and this is not CI.
pub fn shared() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(|| bin_dir().map(|bin| Cluster::start_new(&bin))).as_ref()
}

/// A cluster of the test's own (for tests that stop the server); stopped when dropped.
pub fn private() -> Option<Cluster> {
    bin_dir().map(|bin| Cluster::start_new(&bin))
}

fn bin_dir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    // The newest installed major version.
    candidates.sort_by_key(|bin| {
        bin.parent().and_then(|p| p.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    if let Some(bin) = candidates.pop() {
        return Some(bin);
    }
    let message = "POSTGRESQL TESTS NOT RUN: no initdb under /usr/lib/postgresql. Install Debian's `postgresql` \
                   (sh .ci/install-test-deps)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("\n*** {message} ***\n");
    None
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `program args...`, as the `postgres` user when this process is root.
fn as_cluster_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Cluster {
    fn start_new(bin: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("tierline-pg-{}-{}", std::process::id(), super::unique()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&dir);
                    c
                },
                "chown the cluster folder",
            );
        }
        let data = dir.join("data");
        let mut initdb = as_cluster_owner(&bin.join("initdb"));
        initdb.args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D"]).arg(&data);
        run(initdb, "initdb");
        let cluster = Self { port: super::free_port(), dir, bin: bin.to_path_buf() };
        cluster.start();
        cluster.watch_for_exit();
        cluster
    }

    fn pg_ctl(&self) -> Command {
        let mut command = as_cluster_owner(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.dir.join("data"));
        command
    }

    /// Starts (or restarts) the server and waits until it accepts connections.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let mut start = self.pg_ctl();
        start.args(["-w", "-t", "60", "-l"]).arg(self.dir.join("server.log")).args(["-o", &options, "start"]);
        run(start, "pg_ctl start");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server at once (as a crash or an outage would).
    pub fn stop(&self) {
        let mut stop = self.pg_ctl();
        stop.args(["-w", "-m", "immediate", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// A fresh, empty database; its URL.
    pub fn database(&self) -> String {
        let name = format!("t{}_{}", std::process::id(), super::unique());
        let mut create = as_cluster_owner(&self.bin.join("createdb"));
        create.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", &name]);
        run(create, "createdb");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the cluster and removes its folder once this test process is gone, even when it
    /// panics or is killed.
    fn watch_for_exit(&self) {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; '{pg_ctl}' -D '{data}' -m immediate stop >/dev/null 2>&1; \
             rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display(),
        );
        let mut watcher = as_cluster_owner(Path::new("/bin/sh"));
        watcher.args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // Outlives this process on purpose (it stops the cluster after it): never waited for.
        #[allow(clippy::zombie_processes)]
        let _watcher = watcher.spawn().expect("the cluster watcher starts");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = self.pg_ctl();
        stop.args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = stop.status();
    }
}
