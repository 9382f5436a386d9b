//! A database is known by its server process on any port: `PostgreSQL` on a port no table
//! names is still `postgres`, for its backends and, through the loopback pair, for its
//! clients.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::postgres::Postgres;

fn jsonl(args: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_katop"))
        .env("KATOP_NETNS", "host")
        .env_remove("KATOP_FILTER")
        .env("XDG_CONFIG_HOME", "/nonexistent-katop-config")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn postgres_on_any_port_is_postgres() {
    let Some(mut pg) = Postgres::start("services") else {
        return;
    };
    pg.connect_psql();
    let port = pg.port;
    let mine = format!("(src:127.0.0.1:{port} or dst:127.0.0.1:{port}) established");
    let deadline = Instant::now() + Duration::from_secs(60);
    let conns = loop {
        let conns = jsonl(&["--jsonl", "-t", "--filter", &mine]);
        if conns.len() == 2 || Instant::now() > deadline {
            break conns;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(conns.len(), 2, "the psql client and its backend: {conns:?}");
    for c in &conns {
        assert_eq!(c["service"], "postgres", "{c}");
    }
    // And the filter words and the preset's term find them.
    let by_service = jsonl(&[
        "--jsonl",
        "-t",
        "--filter",
        &format!("service:postgres (src:127.0.0.1:{port} or dst:127.0.0.1:{port}) !time-wait"),
    ]);
    assert_eq!(
        by_service.len(),
        3,
        "the listener and both ends: {by_service:?}"
    );
}
