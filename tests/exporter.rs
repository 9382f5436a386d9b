//! `katop exporter`: metrics checked by promtool and against connections the test opened, the
//! cardinality cap, the textfile never half-written, usage errors, abusive clients, SIGTERM,
//! and the shipped alert rules' own unit tests.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// An exporter child, killed on drop.
struct Exporter {
    child: Child,
    addr: Option<SocketAddr>,
}

impl Exporter {
    fn start(args: &[&str]) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_katop"))
            .arg("exporter")
            .args(args)
            .env("KATOP_NETNS", "host")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut addr = None;
        if !args.contains(&"none") {
            let err = child.stderr.take().unwrap();
            let mut lines = BufReader::new(err).lines();
            for line in lines.by_ref() {
                let line = line.unwrap();
                if let Some(rest) = line.strip_prefix("katop exporter: serving http://") {
                    addr = rest.strip_suffix("/metrics").and_then(|a| a.parse().ok());
                    break;
                }
            }
            // Keep draining stderr so the exporter never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            assert!(addr.is_some(), "the exporter never said where it serves");
        }
        Exporter { child, addr }
    }

    fn get(&self, accept: Option<&str>) -> String {
        get(self.addr.unwrap(), "/metrics", accept)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; the response body.
fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: katop\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        common::skipped(
            "promtool is missing (Debian: prometheus; .ci/run installs it): not checked",
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A listener on a free port below the ephemeral range, so it is the service label.
fn service_listener() -> TcpListener {
    (20_000 + (std::process::id() % 5000) as u16..30_000)
        .find_map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
        .unwrap()
}

fn my_comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string()
}

/// Scrapes until `pred` holds (the exporter polls every 200 ms), at most 20 s.
fn scrape_until(e: &Exporter, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = e.get(None);
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn metrics_count_what_the_test_set_up() {
    let l = service_listener();
    let port = l.local_addr().unwrap().port();
    let mut held = Vec::new();
    for _ in 0..4 {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        held.push((c, l.accept().unwrap().0));
    }
    // One peer closes: the server end stays in CLOSE_WAIT (this test never closes it).
    held[0].0.shutdown(Shutdown::Both).unwrap();
    let e = Exporter::start(&[
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "200ms",
        "--stale-after",
        "1s",
    ]);
    let group = format!(r#"process="{}",service="{port}",container="""#, my_comm());
    let stale = |reason: &str| format!(r#"katop_stale_connections{{reason="{reason}",{group}}} "#);
    let text = scrape_until(&e, "the connections idle past --stale-after", |t| {
        sample(t, &stale("idle")) == Some(6.0) && sample(t, &stale("close-wait")) == Some(1.0)
    });
    assert_eq!(
        sample(&text, &format!("katop_connections{{{group}}} ")),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("katop_keepalive_off_connections{{{group}}} ")
        ),
        Some(6.0)
    );
    assert_eq!(sample(&text, &stale("no-keepalive")), Some(6.0));
    assert!(
        sample(
            &text,
            &format!("katop_close_wait_oldest_seconds{{{group}}} ")
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"katop_idle_connections{{{group},idle_over="5m"}} "#)
        ),
        Some(0.0)
    );
    assert!(text.contains(r#"katop_sockets{netns="host",proto="tcp",state="CLOSE_WAIT"}"#));
    assert!(text.contains("katop_build_info{version="), "{text}");
    promtool_check(&text);
    let om = e.get(Some("application/openmetrics-text; version=1.0.0"));
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE katop_poll_errors counter"));
}

#[test]
fn label_sets_are_capped_and_the_rest_folded() {
    let (a, b) = (service_listener(), service_listener());
    let mut held = Vec::new();
    for (l, n) in [(&a, 3), (&b, 1)] {
        for _ in 0..n {
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            held.push((c, l.accept().unwrap().0));
        }
    }
    let e = Exporter::start(&[
        "--listen",
        "127.0.0.1:0",
        "--interval",
        "200ms",
        "--max-groups",
        "1",
    ]);
    let text = scrape_until(&e, "folding", |t| {
        sample(t, "katop_groups_truncated ").is_some_and(|n| n >= 1.0)
    });
    let sets = text
        .lines()
        .filter(|l| l.starts_with("katop_connections{"))
        .count();
    assert_eq!(sets, 2, "one kept and one folded:\n{text}");
    assert!(
        text.contains(r#"katop_connections{process="other",service="",container=""}"#),
        "{text}"
    );
    promtool_check(&text);
}

/// An exporter writing only a textfile, every 100 ms, in a fresh directory: (the directory,
/// the file, the exporter).
fn textfile_exporter(name: &str, more: &[&str]) -> (common::Scratch, std::path::PathBuf, Exporter) {
    // Removed however the test ends.
    let dir = common::Scratch::new(name);
    let path = dir.0.join("katop.prom");
    let mut args = vec![
        "--listen",
        "none",
        "--textfile",
        path.to_str().unwrap(),
        "--interval",
        "100ms",
    ];
    args.extend_from_slice(more);
    let e = Exporter::start(&args);
    (dir, path, e)
}

#[test]
fn the_textfile_is_never_seen_half_written() {
    let (dir, path, _e) = textfile_exporter("textfile", &[]);
    let (mut reads, deadline) = (0, Instant::now() + Duration::from_secs(3));
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&path) {
            reads += 1;
            assert!(
                text.ends_with('\n') && text.contains("katop_build_info"),
                "{text}"
            );
            assert!(
                !text.contains("# EOF"),
                "the textfile is the Prometheus format"
            );
        }
    }
    assert!(reads > 50, "only {reads} reads");
    promtool_check(&std::fs::read_to_string(&path).unwrap());
    drop(dir);
}

#[test]
fn a_bad_listen_or_a_port_in_use_is_a_usage_error() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for (args, says) in [
        (vec!["--listen", "nonsense"], "is not [ADDR]:PORT"),
        (vec!["--listen", &addr], "cannot listen"),
        (vec!["--listen", "none"], "needs --textfile"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_katop"))
            .arg("exporter")
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn abusive_clients_do_not_stop_it_and_sigterm_does() {
    let mut e = Exporter::start(&["--listen", "127.0.0.1:0", "--interval", "200ms"]);
    let addr = e.addr.unwrap();
    let before = rss_kib(e.child.id());
    // Clients that say nothing, one that sends a 10 MB header, one that never reads.
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let flood = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nX-Flood: ");
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < 10 << 20 {
            if s.write_all(&chunk).is_err() {
                return sent; // the server gave up on it: good
            }
            sent += chunk.len();
        }
        sent
    });
    let mut deaf = TcpStream::connect(addr).unwrap();
    for _ in 0..50 {
        write!(deaf, "GET /metrics HTTP/1.1\r\nHost: k\r\n\r\n").unwrap();
    }
    // Meanwhile, concurrent scrapes are all served.
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let body = get(addr, "/metrics", None);
                    assert!(body.contains("katop_build_info"));
                }
            })
        })
        .collect();
    for s in scrapers {
        s.join().unwrap();
    }
    let sent = flood.join().unwrap();
    assert!(sent < 10 << 20, "the server read a 10 MB header");
    let after = rss_kib(e.child.id());
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    drop(idle);
    drop(deaf);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(e.child.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = e.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "SIGTERM did not stop the exporter"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_shipped_alert_rules_pass_their_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/prometheus");
    let Ok(check) = Command::new("promtool")
        .args(["check", "rules", "katop-alerts.yml"])
        .current_dir(dir)
        .output()
    else {
        common::skipped("promtool is missing (Debian: prometheus; .ci/run installs it)");
        return;
    };
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "katop-alerts.test.yml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
}

/// Every query of the shipped Grafana dashboard: (panel title, `PromQL` as Grafana sends it).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/grafana/katop-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // What Grafana's import needs: an id, a title, a schema, the data source as an input.
    assert_eq!(dash["uid"], "katop-connections");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut queries = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate panel id: {p}"
        );
        let pos = &p["gridPos"];
        let right = pos["x"].as_u64().unwrap() + pos["w"].as_u64().unwrap();
        assert!(right <= 24, "panel past the grid's 24 columns: {p}");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            queries.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        let q = v["query"]["query"].as_str().unwrap();
        // label_values(METRIC{…}, label): the metric is a query too.
        let inner = q
            .trim_start_matches("label_values(")
            .rsplit_once(',')
            .unwrap()
            .0;
        queries.push((format!("variable {}", v["name"]), inner.to_string()));
    }
    queries
}

/// The Grafana dashboard asks only for metrics the exporter serves, shows every one of them,
/// and each query is `PromQL` that Prometheus accepts (promtool checks them as recording rules,
/// with the dashboard's variables filled in).
#[test]
fn the_grafana_dashboard_queries_what_the_exporter_serves() {
    let queries = dashboard_queries();
    // A family with no series is not written: connections that fill every one (idle past
    // --stale-after, one with keepalive on for a countdown, one in CLOSE_WAIT).
    let l = service_listener();
    let mut held = Vec::new();
    for _ in 0..3 {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        held.push((c, l.accept().unwrap().0));
    }
    socket2::SockRef::from(&held[1].0)
        .set_keepalive(true)
        .unwrap();
    held[2].0.shutdown(Shutdown::Both).unwrap();
    let (dir, path, e) = textfile_exporter("grafana", &["--stale-after", "1s"]);
    let families = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_string)
            .collect()
    };
    // Every family a panel asks for (the stale ones only once the connections have been idle
    // past --stale-after: not on the first poll).
    let names = |q: &str| -> Vec<String> {
        q.match_indices("katop_")
            .map(|(i, _)| {
                q[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    };
    let wanted: std::collections::BTreeSet<String> =
        queries.iter().flat_map(|(_, q)| names(q)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if wanted.is_subset(&families(&text)) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(e);
    drop(held);
    let served = families(&text);
    assert!(served.len() >= 14, "not every family was written:\n{text}");
    let mut asked = std::collections::BTreeSet::new();
    for (title, q) in &queries {
        for name in names(q) {
            assert!(served.contains(&name), "{title}: {name} is not served");
            asked.insert(name);
        }
    }
    let unshown: Vec<_> = served.iter().filter(|m| !asked.contains(*m)).collect();
    assert!(unshown.is_empty(), "served but on no panel: {unshown:?}");
    // PromQL: Grafana's variables as Prometheus would get them.
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (n, (_, q)) in queries.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$container", ".*")
            .replace("$process", ".*");
        // A JSON string is a YAML double-quoted scalar.
        let _ = writeln!(
            rules,
            "      - record: katop:grafana_{n}\n        expr: {}",
            serde_json::to_string(&q).unwrap()
        );
    }
    let rules_path = dir.0.join("grafana-rules.yml");
    std::fs::write(&rules_path, &rules).unwrap();
    match Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}\n{rules}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => common::skipped("promtool is missing (Debian: prometheus): PromQL not checked"),
    }
    drop(dir);
}

#[test]
fn connection_ends_are_counted_by_cause() {
    if !common::is_root() {
        common::skipped("the exporter reads why connections end from tracepoints as root");
        return;
    }
    let e = Exporter::start(&["--listen", "127.0.0.1:0", "--interval", "200ms"]);
    let series = |cause: &str| {
        format!(
            "katop_tcp_connections_closed_total{{cause=\"{cause}\",cause_source=\"tracepoint\"}} "
        )
    };
    let (received, sent) = (series("reset-received"), series("reset-sent"));
    // Every cause is shown (at 0) from the start, once the tracepoints are read.
    let text = scrape_until(&e, "the end counters", |t| sample(t, &received).is_some());
    promtool_check(&text);
    let (r0, s0) = (
        sample(&text, &received).unwrap(),
        sample(&text, &sent).unwrap(),
    );
    // Three connections aborted (SO_LINGER 0): three resets each way, and three server ends
    // this test holds on to: dead.
    let l = service_listener();
    let port = l.local_addr().unwrap().port();
    let mut held = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
        held.push(l.accept().unwrap().0);
    }
    let group = format!(r#"process="{}",service="{port}",container="""#, my_comm());
    let connections = format!("katop_connections{{{group}}} ");
    scrape_until(&e, "the six ends listed", |t| {
        sample(t, &connections) == Some(6.0)
    });
    for c in clients {
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    scrape_until(&e, "three resets each way", |t| {
        sample(t, &received).is_some_and(|r| r >= r0 + 3.0)
            && sample(t, &sent).is_some_and(|s| s >= s0 + 3.0)
    });
    // Its peer not kept between polls, a dead connection has no service label.
    let dead = format!(
        r#"katop_stale_connections{{reason="dead",process="{}",service="",container=""}} "#,
        my_comm()
    );
    scrape_until(&e, "three dead connections", |t| {
        sample(t, &dead) == Some(3.0)
    });
    drop(held);
}
