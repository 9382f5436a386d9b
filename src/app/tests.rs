//! The loop tested as data: message sequences in, state and effects out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::actions::Target;
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
    snap.settings = crate::model::KernelSettings {
        keepalive_time_s: Some(7200),
        keepalive_intvl_s: Some(75),
        keepalive_probes: Some(9),
        retries2: Some(15),
        rto_max_ms: Some(120_000),
        conntrack_established_s: None,
    };
    update(&mut app, Msg::Poll(Box::new(snap), t0));
    (app, t0)
}

fn selected_cookie(app: &App) -> Option<u64> {
    app.selected.map(|k| k.cookie.0)
}

#[test]
fn first_poll_sorts_by_idle_and_selects_the_top() {
    let (app, _) = fixture_app();
    let firsts: Vec<&Line> = app.lines.iter().take(3).collect();
    assert_eq!(firsts, [&Line::Sock(2), &Line::Sock(0), &Line::Sock(3)]);
    assert_eq!(selected_cookie(&app), Some(3));
    // Two TIME_WAITs to one host become one summary line.
    assert!(app.lines.contains(&Line::TimeWait(0)));
    assert_eq!(app.time_wait, [("10.0.0.30".parse().unwrap(), 2)]);
    assert_eq!(
        app.state_counts,
        [
            ("ESTABLISHED", 4),
            ("LISTEN", 1),
            ("TIME_WAIT", 2),
            ("CLOSE_WAIT", 1)
        ]
    );
}

#[test]
fn selection_follows_its_socket_and_reports_it_gone() {
    let (mut app, t0) = fixture_app();
    update(&mut app, key(KeyCode::Down));
    assert_eq!(selected_cookie(&app), Some(1));
    // Next poll: the postgres client went quiet for even longer and others moved around.
    let mut socks = fixture_socks();
    socks.reverse();
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(socks)), t0 + Duration::from_secs(1)),
    );
    assert_eq!(selected_cookie(&app), Some(1));
    // It closes: still selected, greyed for a moment, and reported as gone.
    let socks: Vec<RawSock> = fixture_socks()
        .into_iter()
        .filter(|s| s.cookie.0 != 1)
        .collect();
    update(
        &mut app,
        Msg::Poll(
            Box::new(snapshot(socks.clone())),
            t0 + Duration::from_secs(2),
        ),
    );
    assert!(app.selected_gone);
    assert!(matches!(
        app.lines[app.selected_line().unwrap()],
        Line::Closed(_)
    ));
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(6)));
    assert!(!app.lines.iter().any(|l| matches!(l, Line::Closed(_))));
    assert_eq!(
        selected_cookie(&app),
        Some(1),
        "the selection never jumps to another socket by itself"
    );
    update(&mut app, key(KeyCode::Down));
    assert!(!app.selected_gone);
    assert_ne!(selected_cookie(&app), Some(1));
}

#[test]
fn filter_bar_validates_and_never_clears_the_table() {
    let (mut app, _) = fixture_app();
    let all = app.lines.len();
    update(&mut app, ch('/'));
    for c in "service:postgres idle>".chars() {
        update(&mut app, ch(c));
    }
    match &app.mode {
        Mode::Filter { error: Some(e), .. } => assert_eq!(e.column, 23),
        other => panic!("expected a filter error, got {other:?}"),
    }
    // The last valid prefix ("service:postgres") filters meanwhile.
    assert_eq!(app.lines.len(), 2);
    update(&mut app, key(KeyCode::Enter));
    assert!(
        matches!(app.mode, Mode::Filter { error: Some(_), .. }),
        "an invalid filter is not accepted"
    );
    for c in "1h".chars() {
        update(&mut app, ch(c));
    }
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Browse);
    assert_eq!(app.filter.source(), "service:postgres idle>1h");
    assert_eq!(app.lines, [Line::Sock(2), Line::Sock(0)]);
    assert_eq!(selected_cookie(&app), Some(3));
    update(&mut app, ch('1'));
    assert_eq!(app.lines.len(), all);
}

#[test]
fn presets_sort_pause_and_quit() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('s'));
    assert_eq!(app.filter.source(), "stale");
    let stale: Vec<u64> = app
        .lines
        .iter()
        .filter_map(|l| match l {
            Line::Sock(i) => Some(app.table.entry(*i as usize).sock.cookie.0),
            _ => None,
        })
        .collect();
    assert_eq!(stale, [3, 1, 4]);
    update(&mut app, ch('s'));
    assert!(app.filter.matches_all());
    update(&mut app, ch('4'));
    assert_eq!(app.lines, [Line::Sock(2)]);
    update(&mut app, ch('5'));
    assert_eq!(app.lines, [Line::Sock(3)]);
    update(&mut app, ch('1'));
    update(&mut app, ch('>'));
    assert_eq!(app.sort, Column::State);
    update(&mut app, ch('r'));
    assert!(app.reverse);
    assert_eq!(update(&mut app, ch('z')), [Effect::SetPaused(true)]);
    assert_eq!(update(&mut app, ch('z')), [Effect::SetPaused(false)]);
    assert_eq!(update(&mut app, ch('q')), [Effect::Quit]);
    assert_eq!(update(&mut app, key(KeyCode::F(10))), [Effect::Quit]);
    assert_eq!(update(&mut app, Msg::Signal), [Effect::Quit]);
}

#[test]
fn time_wait_rows_appear_when_the_filter_asks() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('/'));
    for c in "state:time-wait".chars() {
        update(&mut app, ch(c));
    }
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.lines, [Line::Sock(5), Line::Sock(6)]);
}

#[test]
fn groups_count_and_open_into_a_filter() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Tab));
    assert_eq!(app.view, View::Groups);
    let g = &app.groups[0];
    assert_eq!(
        (
            g.process.as_str(),
            g.peer.as_str(),
            g.count,
            g.stale,
            g.keepalive_off
        ),
        ("java[4121]", "postgres", 2, 2, 1)
    );
    assert_eq!(
        (g.idle_min_ms, g.idle_max_ms),
        (Some(7_200_000), Some(9_000_000))
    );
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.view, View::Sockets);
    assert_eq!(app.filter.source(), "pid:4121 service:postgres");
    assert_eq!(app.lines.len(), 2);
}

#[test]
fn enter_toggles_details_and_help_closes_on_any_key() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Detail);
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Browse);
    update(&mut app, ch('?'));
    assert_eq!(app.mode, Mode::Help);
    assert_eq!(update(&mut app, ch('q')), []);
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn selection_stays_in_range_and_in_view() {
    let (mut app, _) = fixture_app();
    for _ in 0..50 {
        update(&mut app, key(KeyCode::PageDown));
    }
    let last = app.selected_line().unwrap();
    assert!(last < app.lines.len());
    app.scroll_into_view(3);
    assert!(app.offset <= last && last < app.offset + 3);
    update(&mut app, key(KeyCode::Home));
    app.scroll_into_view(3);
    assert_eq!((app.selected_line(), app.offset), (Some(0), 0));
    // An empty poll leaves nothing to select and nothing to panic about.
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(vec![])), Instant::now()),
    );
    update(&mut app, key(KeyCode::Down));
    app.scroll_into_view(3);
}

#[test]
fn clicking_a_header_sorts_by_it_and_again_reverses() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let (mut app, _) = fixture_app();
    let area = ratatui::layout::Rect::new(0, 0, 160, 30);
    let table = crate::ui::layout(area, &app).table;
    // The STATE header starts after "PROTO" and its spacing.
    let x = (0..160)
        .find(|&x| crate::ui::column_at(&app, table, x) == Some(Column::State))
        .unwrap();
    let click = |column| {
        Msg::Mouse(
            MouseEvent {
                kind: MouseEventKind::Down(MouseButton::Left),
                column,
                row: table.y,
                modifiers: KeyModifiers::NONE,
            },
            area,
        )
    };
    update(&mut app, click(x));
    assert_eq!((app.sort, app.reverse), (Column::State, false));
    update(&mut app, click(x));
    assert_eq!((app.sort, app.reverse), (Column::State, true));
    // A click on a row selects it.
    let row = Msg::Mouse(
        MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column: 3,
            row: table.y + 2,
            modifiers: KeyModifiers::NONE,
        },
        area,
    );
    update(&mut app, row);
    assert_eq!(app.selected_line(), Some(1));
}

#[test]
fn a_new_filter_moves_a_gone_selection_to_its_first_row() {
    let (mut app, t0) = fixture_app();
    assert_eq!(selected_cookie(&app), Some(3));
    let socks: Vec<RawSock> = fixture_socks()
        .into_iter()
        .filter(|s| s.cookie.0 != 3)
        .collect();
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(socks)), t0 + Duration::from_secs(1)),
    );
    assert!(app.selected_gone);
    assert_eq!(
        selected_cookie(&app),
        Some(3),
        "a poll never moves the selection"
    );
    update(&mut app, ch('5'));
    assert_eq!((selected_cookie(&app), app.selected_gone), (Some(4), false));
}

fn cookies(targets: &[Target]) -> Vec<u64> {
    targets.iter().map(|t| t.cookie).collect()
}

/// The targets an effect list asks to kill.
fn kill_effect(effects: &[Effect]) -> Vec<u64> {
    match effects {
        [Effect::Kill(t)] => cookies(t),
        other => panic!("expected one kill, got {other:?}"),
    }
}

#[test]
fn k_asks_first_and_no_is_the_default() {
    let (mut app, _) = fixture_app();
    let sel = selected_cookie(&app).unwrap();
    assert!(update(&mut app, ch('k')).is_empty());
    match &app.mode {
        Mode::ConfirmKill { targets, yes } => {
            assert_eq!(cookies(targets), [sel]);
            assert!(!yes);
        }
        m => panic!("{m:?}"),
    }
    // Enter on the default answer cancels; keys behind the dialog do nothing.
    assert!(update(&mut app, key(KeyCode::Down)).is_empty());
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    assert_eq!(app.mode, Mode::Browse);
    assert_eq!(selected_cookie(&app), Some(sel));
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("nothing was killed"));
    // F9, move to Yes, Enter: exactly the selected socket.
    update(&mut app, key(KeyCode::F(9)));
    update(&mut app, key(KeyCode::Right));
    assert_eq!(kill_effect(&update(&mut app, key(KeyCode::Enter))), [sel]);
    // `y` kills at once; Esc cancels.
    update(&mut app, ch('k'));
    assert!(update(&mut app, key(KeyCode::Esc)).is_empty());
    update(&mut app, ch('k'));
    assert_eq!(kill_effect(&update(&mut app, ch('y'))), [sel]);
}

#[test]
fn marks_choose_what_dies() {
    let (mut app, t0) = fixture_app();
    let first = selected_cookie(&app).unwrap();
    update(&mut app, ch(' '));
    let second = selected_cookie(&app).unwrap();
    assert_ne!(first, second, "Space moves down");
    update(&mut app, ch(' '));
    update(&mut app, ch(' '));
    update(&mut app, key(KeyCode::Up));
    update(&mut app, ch(' ')); // unmarks the third
    assert_eq!(app.marked.len(), 2);
    update(&mut app, ch('k'));
    let effects = update(&mut app, ch('y'));
    assert_eq!(kill_effect(&effects), [first, second]);

    // A filter that hides a marked socket still lists it: the dialog shows all that will die.
    update(&mut app, ch('5')); // CLOSE_WAIT only
    update(&mut app, ch('k'));
    let Mode::ConfirmKill { targets, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert_eq!(targets.len(), 2);
    update(&mut app, key(KeyCode::Esc));

    // `a` marks what the filter shows, again unmarks; U clears.
    update(&mut app, ch('U'));
    assert!(app.marked.is_empty());
    update(&mut app, ch('a'));
    assert_eq!(app.marked.len(), 1);
    update(&mut app, ch('a'));
    assert!(app.marked.is_empty());

    // Marks of sockets that closed are dropped on the next poll.
    update(&mut app, ch('1'));
    update(&mut app, ch('a'));
    let n = app.marked.len();
    assert!(n >= 5, "{n}");
    let mut fewer = fixture_socks();
    fewer.retain(|s| s.cookie.0 != first);
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(fewer)), t0 + Duration::from_secs(1)),
    );
    assert_eq!(app.marked.len(), n - 1);
}

#[test]
fn kill_results_reach_the_status_line_and_the_log_view() {
    use crate::actions::{Mechanism, Outcome, Report};
    let (mut app, _) = fixture_app();
    update(&mut app, ch('a'));
    let target = Target::of(&app.table.entry(0));
    let report = |outcome| Report {
        target: target.clone(),
        action: crate::actions::Action::Kill,
        outcome,
        at: std::time::SystemTime::UNIX_EPOCH,
    };
    update(
        &mut app,
        Msg::Acted {
            reports: vec![
                report(Outcome::Killed {
                    mechanism: Mechanism::SockDestroy,
                    after: None,
                }),
                report(Outcome::Refused("needs CAP_NET_ADMIN".into())),
            ],
            log_error: Some("/x/kills.jsonl: read-only file system".into()),
        },
    );
    let status = app.status.clone().unwrap();
    assert!(
        status.contains("killed 1, already gone 0, refused 1"),
        "{status}"
    );
    assert!(status.contains("needs CAP_NET_ADMIN"), "{status}");
    assert!(status.contains("LOG NOT WRITTEN"), "{status}");
    assert!(
        !app.marked.contains(&app.table.entry(0).key()),
        "a killed socket is unmarked"
    );
    assert_eq!(app.kills.len(), 2);
    update(&mut app, ch('L'));
    assert_eq!(app.view, View::Kills);
    update(&mut app, ch('L'));
    assert_eq!(app.view, View::Sockets);
}

#[test]
fn read_only_explains_and_kills_nothing() {
    let (mut app, _) = fixture_app();
    app.read_only = true;
    assert!(update(&mut app, ch('k')).is_empty());
    assert_eq!(app.mode, Mode::Browse);
    assert!(app.status.as_deref().unwrap().contains("--read-only"));
}

#[test]
fn shift_k_offers_keepalive_settings_and_applies_only_valid_ones() {
    let (mut app, _) = fixture_app();
    let sel = selected_cookie(&app).unwrap();
    assert!(update(&mut app, ch('K')).is_empty());
    let Mode::SetKeepalive { targets, text, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert_eq!(cookies(targets), [sel]);
    assert_eq!(text, "idle=60s intvl=10s cnt=5");
    // Edit: a bad value is reported and nothing is applied.
    for _ in 0..5 {
        update(&mut app, key(KeyCode::Backspace));
    }
    for c in "cnt=900".chars() {
        update(&mut app, ch(c));
    }
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    let Mode::SetKeepalive { error, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert!(error.as_deref().unwrap().contains("1..=127"), "{error:?}");
    for _ in 0..3 {
        update(&mut app, key(KeyCode::Backspace));
    }
    update(&mut app, ch('3'));
    let effects = update(&mut app, key(KeyCode::Enter));
    match effects.as_slice() {
        [Effect::SetKeepalive(t, c)] => {
            assert_eq!(cookies(t), [sel]);
            assert_eq!((c.idle_s, c.intvl_s, c.cnt), (60, 10, 3));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.mode, Mode::Browse);
    // Esc cancels; read-only refuses.
    update(&mut app, ch('K'));
    assert!(update(&mut app, key(KeyCode::Esc)).is_empty());
    assert_eq!(app.mode, Mode::Browse);
    app.read_only = true;
    update(&mut app, ch('K'));
    assert_eq!(app.mode, Mode::Browse);
    assert!(app.status.as_deref().unwrap().contains("--read-only"));
}

#[test]
fn a_declared_middlebox_shortens_the_offered_idle_time() {
    let (mut app, t0) = fixture_app();
    app.table
        .set_middleboxes(vec![crate::model::Middlebox::parse(None, "50s").unwrap()]);
    update(&mut app, Msg::Poll(Box::new(snapshot(fixture_socks())), t0));
    update(&mut app, ch('K'));
    let Mode::SetKeepalive { text, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert_eq!(text, "idle=25s intvl=10s cnt=5");
}

#[test]
fn a_hostile_process_name_cannot_reach_the_terminal_through_a_kill_listing() {
    let (app, _) = fixture_app();
    let evil = app
        .table
        .entries()
        .find(|e| {
            e.sock
                .owner
                .process()
                .is_some_and(|p| p.name.contains('\u{1b}'))
        })
        .expect("the fixture's hostile name");
    let line = Target::of(&evil).describe();
    assert!(!line.chars().any(char::is_control), "{line:?}");
    assert!(line.contains("?[2Jevil"), "{line}");
}
