//! Structure-aware fuzzing that stays: well-framed netlink messages with fuzzed payloads and
//! attributes go through the parser, the model, every column, JSON, the table and the
//! dashboard at fuzzed sizes; the text inputs (filters, durations, middleboxes, keepalive
//! changes, config files) get shaped and random text. Random bytes alone almost never form a
//! valid `nlmsghdr`, which is why this builds them.
//!
//! `cargo test --test fuzz` runs proptest's default 256 cases per property; run them long
//! with `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use katop::app::{self, App, Msg};
use katop::collector::wire::{parse_datagram, DumpSink};
use katop::columns::Column;
use katop::model::filter::Filter;
use katop::model::{
    ConnTable, KernelSettings, Middlebox, NetnsId, NsInfo, Owner, PollCost, Process, Proto,
    RawSock, Snapshot, SockOpts,
};
use katop::output::{write_table, JsonSock};
use proptest::prelude::*;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const AF_UNIX: u8 = 1;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One netlink attribute: a type, a value, and a length that is usually right.
fn attribute(kinds: Vec<u16>) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(kinds),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::option::weighted(0.1, any::<u16>()),
    )
        .prop_map(|(kind, value, bad_len)| {
            let len = bad_len.unwrap_or(4 + value.len() as u16);
            let mut b = Vec::with_capacity(value.len() + 8);
            b.extend_from_slice(&len.to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&value);
            b.resize(b.len().div_ceil(4) * 4, 0);
            b
        })
}

/// A socket message for `proto`: the fixed header with fuzzed fields, then attributes
/// (`tcp_info` for TCP, names and peers for Unix).
fn sock_payload(proto: Proto) -> impl Strategy<Value = Vec<u8>> {
    let (header_len, family, kinds) = match proto {
        Proto::Unix => (16, vec![AF_UNIX], vec![0, 1, 2, 4, 7, 99]),
        _ => (72, vec![AF_INET, AF_INET6], vec![1, 2, 3, 4, 99]),
    };
    (
        prop::sample::select(family),
        0u8..14,
        0u8..6,
        prop::collection::vec(any::<u8>(), header_len - 3..=header_len - 3),
        prop::collection::vec(attribute(kinds), 0..4),
    )
        .prop_map(move |(family, state, timer, rest, attrs)| {
            let mut p = vec![family, state, timer];
            p.extend_from_slice(&rest);
            if proto == Proto::Unix {
                p[1] = state % 3; // type (stream, dgram, seqpacket-ish), then state
            }
            for a in attrs {
                p.extend_from_slice(&a);
            }
            p
        })
}

/// A whole netlink message around `payload`, of `kind`; its length is right unless fuzzed.
fn message(kind: u16, payload: &[u8], bad_len: Option<u32>) -> Vec<u8> {
    let len = bad_len.unwrap_or(16 + payload.len() as u32);
    let mut m = Vec::with_capacity(payload.len() + 20);
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&2u16.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(m.len().div_ceil(4) * 4, 0);
    m
}

/// A datagram of socket messages, with now and then an error, a done, or a broken length.
fn datagram(proto: Proto) -> impl Strategy<Value = Vec<u8>> {
    let one = prop_oneof![
        8 => (sock_payload(proto), prop::option::weighted(0.05, any::<u32>()))
            .prop_map(|(p, bad)| message(SOCK_DIAG_BY_FAMILY, &p, bad)),
        1 => any::<i32>().prop_map(|code| message(NLMSG_ERROR, &code.to_ne_bytes(), None)),
        1 => any::<i32>().prop_map(|code| message(NLMSG_DONE, &code.to_ne_bytes(), None)),
    ];
    prop::collection::vec(one, 1..12).prop_map(|ms| ms.concat())
}

/// Names and command lines as hostile as other users can make them.
fn hostile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("\u{1b}[2J".to_string()),
            Just("\u{202e}".to_string()),
            Just("\u{0085}\u{009b}".to_string()),
            Just("\u{200b}".to_string()),
            Just("日本".to_string()),
            "[a-z0-9 ]{0,8}",
            any::<char>().prop_map(String::from),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

/// Who holds each parsed socket, and its options: fuzzed too.
fn owners(n: usize) -> impl Strategy<Value = Vec<(u8, String, u32, SockOpts)>> {
    prop::collection::vec(
        (
            0u8..3,
            hostile_text(),
            any::<u32>(),
            (
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                any::<bool>(),
                any::<bool>(),
            ),
        )
            .prop_map(|(o, name, fd, (ut, idle, intvl, cnt, ka, read))| {
                let opts = SockOpts {
                    user_timeout_ms: ut,
                    idle_s: idle,
                    intvl_s: intvl,
                    cnt,
                    keepalive: ka,
                    read,
                };
                (o, name, fd, opts)
            }),
        n..=n,
    )
}

fn settings() -> impl Strategy<Value = KernelSettings> {
    let v = || prop::option::of(any::<u32>());
    (v(), v(), v(), v(), v(), v(), v()).prop_map(|(t, i, p, r, m, c, hz)| KernelSettings {
        keepalive_time_s: t,
        keepalive_intvl_s: i,
        keepalive_probes: p,
        retries2: r,
        rto_max_ms: m,
        conntrack_established_s: c,
        hz,
    })
}

fn snapshot(socks: Vec<RawSock>, settings: KernelSettings) -> Snapshot {
    Snapshot {
        socks,
        netns: NetnsId(1),
        settings,
        interfaces: std::collections::HashMap::default(),
        holders: Arc::default(),
        // Read as one of several namespaces, with its own sysctls and a hostile name.
        namespaces: vec![NsInfo {
            id: NetnsId(1),
            name: "ns\u{202e}1".into(),
            container: Some("podman:\u{1b}[31mweb".into()),
            settings,
            age: Duration::ZERO,
            host: false,
        }],
        unread_namespaces: 0,
        taken_at: Instant::now(),
        wall: std::time::SystemTime::now(),
        cost: PollCost::default(),
        warnings: vec!["a warning \u{202e} with \u{1b}[31m escapes".into()],
        ends: None,
        every_namespace: true,
        unlisted: Vec::new(),
        opts_changed: Vec::new(),
    }
}

/// No line of `text` carries a control or invisible reordering character.
fn no_unsafe(text: &str) {
    for line in text.lines() {
        assert!(
            !line.chars().any(katop::text::is_unsafe),
            "unsafe characters reached the output: {line:?}"
        );
    }
}

proptest! {
    #[test]
    fn netlink_messages_through_model_and_every_output(
        proto in prop::sample::select(vec![Proto::Tcp, Proto::Udp, Proto::Unix]),
        bytes in prop::collection::vec(datagram(Proto::Tcp), 1..3),
        unix in datagram(Proto::Unix),
        who in owners(24),
        settings in settings(),
        middlebox in prop::option::of(1u32..100_000),
        width in 0usize..300,
        size in (0u16..260, 0u16..90),
        later_ms in 0u64..10_000_000,
    ) {
        let mut sink = DumpSink::default();
        let datagrams = if proto == Proto::Unix { vec![unix] } else { bytes };
        for d in &datagrams {
            let _ = parse_datagram(d, proto, NetnsId(1), &mut sink);
        }
        let mut socks = sink.socks;
        socks.truncate(24);
        for (s, (o, name, fd, opts)) in socks.iter_mut().zip(who) {
            s.opts = opts;
            s.owner = match o {
                0 => Owner::None,
                1 => Owner::Unknown,
                _ => Owner::Process {
                    process: Arc::new(Process {
                        pid: fd % 100_000,
                        name: name.clone().into(),
                        cmdline: name.into(),
                        container: None,
                    }),
                    fd,
                },
            };
        }
        let t0 = Instant::now();
        let mut table = ConnTable::new(Duration::from_secs(300));
        if let Some(m) = middlebox {
            table.set_middleboxes(vec![Middlebox::parse(None, &format!("{m}s")).unwrap()]);
        }
        table.apply(snapshot(socks.clone(), settings), t0);
        let now = t0 + Duration::from_millis(later_ms);
        table.apply(snapshot(socks, settings), now);
        for e in table.entries() {
            for col in Column::DASHBOARD.iter().chain(&[Column::Timer, Column::Uid, Column::Age, Column::Cmdline]) {
                let _ = col.cell(&e, now);
                let _ = col.sort_key(&e, now);
            }
            let _ = (e.detect(now), e.at_risk(), e.protected(), e.params());
            let stamp = katop::output::Stamp::of(&table);
            let json = katop::text::to_string(&JsonSock::new(&e, &table, &stamp)).unwrap();
            no_unsafe(&json);
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            prop_assert!(back.is_object());
        }
        let rows: Vec<_> = table.entries().collect();
        let mut out = Vec::new();
        write_table(&mut out, &rows, &Column::DEFAULT, Some(width), now).unwrap();
        let text = String::from_utf8(out).unwrap();
        no_unsafe(&text);
        // Every line fits, the note on what did not fit wrapped to the width too (a column
        // name is one word: it may stand alone on a line wider than an absurdly narrow width).
        let fits = |l: &str| {
            let w = unicode_width::UnicodeWidthStr::width(l);
            w <= width.max(1) || (!l.contains(' ') && w <= "BYTES-OUT".len() + 1)
        };
        prop_assert!(text.lines().all(fits), "{text}");
        // The dashboard, drawn at a fuzzed size.
        let mut app = App::new(
            Duration::from_secs(300),
            Duration::from_secs(1),
            Filter::parse("").unwrap(),
            Column::Idle,
            "host\u{202e}".into(),
            now,
        );
        let socks: Vec<RawSock> = rows.iter().map(|e| e.sock.clone()).collect();
        app::update(&mut app, Msg::Poll(Box::new(snapshot(socks, settings)), now));
        let mut term = Terminal::new(TestBackend::new(size.0, size.1)).unwrap();
        term.draw(|f| katop::ui::render(&app, f)).unwrap();
        let screen: String = term.backend().buffer().content().iter().map(ratatui::buffer::Cell::symbol).collect();
        no_unsafe(&screen);
    }

    #[test]
    fn filters_parse_or_fail_with_a_column(
        parts in prop::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("!"), Just("not "), Just(" and "), Just(" or "),
            Just("state:"), Just("established"), Just("idle>"), Just("10m"), Just("dport:"),
            Just("5432"), Just("src:"), Just("10.0.0.0/8"), Just("[::1]:80"), Just("proc:"),
            Just("stale:"), Just("unaccepted"), Just("detect<"), Just("ka_cnt>="), Just("="),
            Just("!="), Just("<="), Just(" "), Just("\u{202e}"), Just("9999999999999999999999"),
        ], 0..40),
        tail in ".{0,20}",
    ) {
        let text = format!("{}{tail}", parts.concat());
        match Filter::parse(&text) {
            Ok(f) => {
                let _ = f.source();
            }
            Err(e) => {
                prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e} in {text:?}");
                let _ = e.pointed(&text);
            }
        }
    }

    #[test]
    fn durations_middleboxes_keepalive_changes_and_configs(
        d in "[0-9a-z]{0,12}",
        mb in "[0-9a-z:=./\\[\\]-]{0,24}",
        change in "(idle|intvl|cnt|x)=[0-9a-z]{0,8}( (idle|intvl|cnt)=[0-9a-z]{0,10}){0,3}",
        config in "(\\[(middleboxes|ui|ui.presets|services)\\]\n)?([a-z0-9_-]{1,8} = (\"[0-9a-z:=./ >-]{0,16}\"|\\[\"[a-z]{0,6}\"\\]|true|7)\n){0,4}",
        junk in ".{0,64}",
    ) {
        let _ = katop::model::duration::parse_ms(&d);
        let _ = Middlebox::parse(None, &mb);
        let _ = change.parse::<katop::actions::Change>();
        let _ = katop::config::parse_config(&config);
        let _ = katop::config::parse_config(&junk);
        let _ = katop::model::duration::parse_ms(&junk);
        let _ = Middlebox::parse(Some(&junk), &junk);
    }
}
