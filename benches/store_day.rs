//! Opening a moment of a full day's store: a day (`--hours`, 24) of polls every `--interval-s` (10) over
//! `--count` connections (100k, both ends: 2 × count sockets) of which `--change-per-mille`
//! (20: 2%) change each poll, written with katop's own store writer, delta and keyframe rules,
//! at the times they would have been polled (the last 24 h); then `katop --json --at` at
//! moments across the day, each timed. No kernel involved: the sockets are made up (every
//! row whole, `tcp_info` without its "ms ago" clocks, so that only the chosen 2% change).
//!
//! ```sh
//! cargo build --release
//! cargo bench --bench store_day -- --count 100000
//! ```

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use katop::model::{
    Cookie, Endpoint, Family, Inode, NetnsId, Owner, Process, Proto, RawSock, SockState,
};
use katop::store::{changes::Changes, snapshot, Limits, Writer};

mod common;

/// One end of connection `n`: the client's (`server` false) or the server's.
fn end(n: u64, server: bool, owner: &Arc<Process>) -> RawSock {
    let client = format!(
        "10.{}.{}.{}:{}",
        n >> 16 & 255,
        n >> 8 & 255,
        n & 255,
        40_000
    );
    let listen = "10.255.0.1:5432".to_string();
    let (local, remote) = if server {
        (listen, client)
    } else {
        (client, listen)
    };
    // The fields before the clocks (offset 44): the rest read as absent.
    let mut info = [0u8; 44];
    for (i, b) in info.iter_mut().enumerate() {
        *b = (n as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    RawSock {
        proto: Proto::Tcp,
        family: Family::Inet,
        state: SockState::Established,
        local: Endpoint::Inet(local.parse::<std::net::SocketAddr>().unwrap().into()),
        remote: Endpoint::Inet(remote.parse::<std::net::SocketAddr>().unwrap().into()),
        interface: 0,
        inode: Inode(1_000_000 + 2 * n as u32 + u32::from(server)),
        cookie: Cookie(2 * n + u64::from(server)),
        netns: NetnsId(4_026_531_840),
        uid: katop::model::Uid::new(0),
        recv_q: 0,
        send_q: 0,
        timer: None,
        tcp_info: Some(katop::model::tcp_info::TcpInfo::from_kernel_bytes(&info)),
        owner: Owner::Process {
            process: Arc::clone(owner),
            fd: 3 + n as u32,
        },
        opts: katop::model::keepalive::SockOpts::default(),
    }
}

fn main() {
    let count = common::arg("--count").unwrap_or(100_000) as u64;
    let interval = common::arg("--interval-s").unwrap_or(10) as u64;
    let per_mille = common::arg("--change-per-mille").unwrap_or(20) as u64;
    let bin = std::env::var("KATOP_BIN").unwrap_or_else(|_| "target/release/katop".into());
    let owner = Arc::new(Process {
        pid: 4242,
        name: "pgbouncer".into(),
        cmdline: "pgbouncer /etc/pgbouncer.ini".into(),
        container: None,
    });
    let mut socks: Vec<RawSock> = (0..count)
        .flat_map(|n| [end(n, false, &owner), end(n, true, &owner)])
        .collect();
    let store = std::env::temp_dir().join(format!("katop-bench-day-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let limits = Limits {
        retain: Duration::from_secs(7 * 86_400),
        max_size: 8 << 30,
    };
    let mut writer = Writer::open(&store, limits).expect("a store in the temp dir");
    let hours = common::arg("--hours").unwrap_or(24).max(2) as u64;
    let polls = hours * 3600 / interval;
    let start = SystemTime::now() - Duration::from_secs(polls * interval + 60);
    let settings = katop::model::KernelSettings::default();
    let namespaces = vec![(4_026_531_840, "host".to_string(), None, true)];
    let mut changes = Changes::default();
    let written = Instant::now();
    for poll in 0..polls {
        let wall = start + Duration::from_secs(poll * interval);
        let changing = count * per_mille / 1000;
        for k in 0..changing {
            let n = (poll * changing + k) % count;
            socks[2 * n as usize].send_q = poll as u32 % 1000 + 1;
        }
        let keyframe = changes.keyframe_due(writer.next_starts_segment(wall));
        let names = changes.to_name(namespaces.clone(), keyframe);
        // Their clocks are absent (read as 0 ms ago): compared at one moment, they stand still.
        let delta = changes.delta(socks.iter(), (start, Duration::ZERO), keyframe);
        let sample = snapshot::Sample {
            time: katop::actions::log::rfc3339(wall),
            sample: delta.tcp,
        };
        let bytes = writer
            .append_with((wall, keyframe), |w| {
                snapshot::write_poll(w, &sample, (&settings, &names), keyframe, delta).map(|_| ())
            })
            .expect("written");
        changes.wrote(bytes, keyframe);
    }
    drop(writer);
    let size: u64 = std::fs::read_dir(&store)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "a store of {hours} h: {polls} polls of {} sockets ({count} connections, {per_mille}‰ changing \
         each), written in {:.1?}: {:.1} MiB, {:.2} bytes per connection per sample",
        socks.len(),
        written.elapsed(),
        size as f64 / f64::from(1 << 20),
        size as f64 / count as f64 / polls as f64
    );
    for hours_ago in [hours - 1, hours / 2, 1] {
        let at = start + Duration::from_secs(polls * interval - hours_ago * 3600 + 5);
        let at = katop::actions::log::rfc3339(at);
        let started = Instant::now();
        let out = Command::new(&bin)
            .args(["--json", "--filter", "src:10.0.0.1:40000", "--at", &at])
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        let listed =
            serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).map_or(0, |v| v.len());
        println!(
            "katop --json --at ({hours_ago} h into the past): {:.2?}, {listed} of its sockets \
             listed (exit {})",
            started.elapsed(),
            out.status
        );
    }
    let _ = std::fs::remove_dir_all(&store);
}
