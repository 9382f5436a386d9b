//! A real `PostgreSQL` server for a test: its own cluster in a temporary directory, on its own
//! port, run as the `postgres` user (Debian's `postgresql` package, which `.ci/run` installs),
//! stopped and removed when dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    clients: Vec<Child>,
}

/// The server binaries (`/usr/lib/postgresql/N/bin`), newest first.
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn as_postgres(bin: &std::path::Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl Postgres {
    /// Starts one, or says why it cannot (printing the reason) and returns `None`. On CI (root,
    /// the package installed) it always starts: not starting there is a failure.
    pub fn start(name: &str) -> Option<Postgres> {
        let skip = |why: &str| {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL test cannot run on CI: {why}"
            );
            super::skipped(why);
        };
        if !super::is_root() {
            skip("starting PostgreSQL as its own user needs root");
            return None;
        }
        let Some(bin) = bin_dir() else {
            skip("PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("katop-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success());
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        let out = as_postgres(&bin, "initdb")
            .args(["--auth=trust", "-U", "postgres", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        let out = as_postgres(&bin, "pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .args(["-l"])
            .arg(dir.join("log"))
            .args(["-o", &opts, "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        Some(Postgres {
            port,
            dir,
            bin,
            clients: Vec::new(),
        })
    }

    /// A `psql` session over TCP that stays connected (its backend idle in a sleep) until the
    /// server stops.
    pub fn connect_psql(&mut self) {
        let child = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-X", "-q", "-c", "select pg_sleep(300)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql (postgresql-client)");
        self.clients.push(child);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        for c in &mut self.clients {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
