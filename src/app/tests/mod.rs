//! The loop tested as data: message sequences in, state and effects out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::actions::Target;
use crate::columns::Column;
use crate::model::filter::Filter;
use crate::model::table::tests::{info, snapshot, sock};
use crate::model::{Cookie, Endpoint, Owner, Process, RawSock, SockState, Timer, TimerKind};

pub fn key(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

pub fn ch(c: char) -> Msg {
    key(KeyCode::Char(c))
}

/// A TCP socket with `cookie`, `idle_ms`, talking from `local` to `remote`.
pub fn conn(cookie: u64, local: &str, remote: &str, state: SockState, idle_ms: u32) -> RawSock {
    let mut s = sock(state);
    s.cookie = Cookie(cookie);
    let local: std::net::SocketAddr = local.parse().unwrap();
    s.family = if local.is_ipv6() {
        crate::model::Family::Inet6
    } else {
        crate::model::Family::Inet
    };
    s.local = Endpoint::Inet(local.into());
    s.remote = Endpoint::Inet(remote.parse().unwrap());
    s.tcp_info = Some(info(idle_ms, 1001, 500));
    s
}

/// Fixed sockets: an idle postgres client (no keepalive), a keepalive redis client, one whose
/// peer stopped answering probes, a `CLOSE_WAIT`, a listener, two `TIME_WAITs` to one host and an
/// IPv6 connection from a process with a hostile name.
pub fn fixture_socks() -> Vec<RawSock> {
    let java = Arc::new(Process {
        pid: 4121,
        name: "java".into(),
        cmdline: "java -jar billing.jar".into(),
        container: None,
    });
    let owned = |mut s: RawSock, p: &Arc<Process>, fd| {
        s.owner = Owner::Process {
            process: Arc::clone(p),
            fd,
        };
        s
    };
    let pg = owned(
        conn(
            1,
            "10.0.0.5:41000",
            "10.0.0.9:5432",
            SockState::Established,
            7_200_000,
        ),
        &java,
        10,
    );
    let mut redis = owned(
        conn(
            2,
            "10.0.0.5:41001",
            "10.0.0.7:6379",
            SockState::Established,
            2_000,
        ),
        &java,
        11,
    );
    redis.timer = Some(Timer {
        kind: TimerKind::Keepalive,
        expires_ms: 7_198_000,
        retrans: 0,
    });
    let mut probing = owned(
        conn(
            3,
            "10.0.0.5:41002",
            "10.0.0.8:5432",
            SockState::Established,
            9_000_000,
        ),
        &java,
        12,
    );
    probing.timer = Some(Timer {
        kind: TimerKind::Keepalive,
        expires_ms: 40_000,
        retrans: 3,
    });
    let cw = conn(
        4,
        "10.0.0.5:8080",
        "10.0.0.20:50000",
        SockState::CloseWait,
        900_000,
    );
    let mut listen = conn(5, "0.0.0.0:8080", "0.0.0.0:0", SockState::Listen, 0);
    listen.tcp_info = None;
    let tw = |c| {
        let mut s = conn(
            c,
            "10.0.0.5:8080",
            &format!("10.0.0.30:{}", 50000 + c),
            SockState::TimeWait,
            0,
        );
        s.tcp_info = None;
        s.owner = Owner::None;
        s.timer = Some(Timer {
            kind: TimerKind::Timewait,
            expires_ms: 30_000,
            retrans: 0,
        });
        s
    };
    let weird = Arc::new(Process {
        pid: 77,
        name: "\u{fffd}\u{1b}[2Jevil-name-that-is-very-long-indeed".into(),
        cmdline: String::new().into(),
        container: None,
    });
    let v6 = owned(
        conn(
            8,
            "[2001:db8::1]:44444",
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:1]:443",
            SockState::Established,
            1_000,
        ),
        &weird,
        3,
    );
    vec![pg, redis, probing, cw, listen, tw(6), tw(7), v6]
}

pub fn fixture_app() -> (App, Instant) {
    let t0 = Instant::now();
    let mut app = App::new(
        Duration::from_secs(300),
        Duration::from_secs(1),
        Filter::parse("").unwrap(),
        Column::Idle,
        "db-host".into(),
        t0,
    );
    let mut snap = snapshot(fixture_socks());
    snap.settings = crate::model::table::tests::linux_defaults();
    update(&mut app, Msg::Poll(Box::new(snap), t0));
    (app, t0)
}

pub fn selected_cookie(app: &App) -> Option<u64> {
    app.selected.map(|k| k.cookie.0)
}

/// Types `text` into whatever has the keys.
pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        update(app, ch(c));
    }
}

/// The layout a terminal of `w`×`h` gives, as the loop hands it in before drawing.
pub fn lay_out(app: &mut App, w: u16, h: u16) {
    let v = crate::ui::viewport(app, ratatui::layout::Rect::new(0, 0, w, h));
    update(app, Msg::Layout(v));
}

mod act;
mod keys;
mod safety;
mod travel;
mod view;
