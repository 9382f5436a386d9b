//! The past in the dashboard: what the store answers is shown by the same table, the present
//! waits aside (still polled), and nothing in the past can be changed.

use std::time::{Duration, SystemTime};

use super::*;

fn at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

/// The store's answer: one idle connection, cookie 900, at `at()`.
fn arrive_past(app: &mut App) {
    let past = conn(
        900,
        "10.0.0.5:40000",
        "10.0.0.9:5432",
        SockState::Established,
        60_000,
    );
    let snap = snapshot(vec![past]);
    update(
        app,
        Msg::Arrived(Arrival::At(at(), Box::new(snap), "the store")),
    );
}

fn cookies(app: &App) -> Vec<u64> {
    app.table.entries().map(|e| e.sock.cookie.0).collect()
}

#[test]
fn stepping_back_asks_the_store_from_now_then_from_the_moment_shown() {
    let (mut app, _) = fixture_app();
    assert_eq!(
        update(&mut app, ch('T')),
        vec![Effect::Travel {
            from: None,
            to: Travel::Back
        }]
    );
    arrive_past(&mut app);
    assert_eq!(
        update(&mut app, ch('T')),
        vec![Effect::Travel {
            from: Some(at()),
            to: Travel::Back
        }]
    );
    assert_eq!(
        update(&mut app, ch('t')),
        vec![Effect::Travel {
            from: Some(at()),
            to: Travel::Forward
        }]
    );
}

#[test]
fn the_past_replaces_the_table_and_the_present_comes_back_with_its_polls() {
    let (mut app, t0) = fixture_app();
    let live = cookies(&app);
    arrive_past(&mut app);
    assert_eq!(cookies(&app), vec![900]);
    assert_eq!(app.past.as_ref().map(|p| p.at), Some(at()));
    // The filters and rows work on it as on the present.
    app.set_filter("established idle>=30s").unwrap();
    assert_eq!(app.lines.len(), 1);
    // A live poll meanwhile goes aside: the screen keeps the past, the spare buffer goes back.
    let mut more = fixture_socks();
    more.push(conn(
        77,
        "10.0.0.5:40001",
        "10.0.0.9:5432",
        SockState::Established,
        1,
    ));
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(more)), t0 + Duration::from_secs(1)),
    );
    assert_eq!(cookies(&app), vec![900]);
    assert!(app.spare.is_some());
    // Time passing does not age the past.
    let now = app.now;
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(30)));
    assert_eq!(app.now, now);
    // Forward past the newest record: live again, with the poll that came meanwhile.
    update(&mut app, Msg::Arrived(Arrival::Live));
    assert!(app.past.is_none());
    let mut back = cookies(&app);
    back.sort_unstable();
    let mut expected = live.clone();
    expected.push(77);
    expected.sort_unstable();
    assert_eq!(back, expected);
}

#[test]
fn nothing_in_the_past_can_be_marked_killed_or_tuned() {
    let (mut app, _) = fixture_app();
    arrive_past(&mut app);
    for c in ['k', 'K', ' ', 'a'] {
        let effects = update(&mut app, ch(c));
        assert!(effects.is_empty(), "{c}: {effects:?}");
        assert!(app.mode == Mode::Browse, "{c} opened {:?}", app.mode);
        assert!(app.marked.is_empty());
        assert!(
            app.status.as_deref().unwrap_or("").contains("the past"),
            "{c}: {:?}",
            app.status
        );
    }
}

#[test]
fn b_takes_a_time_or_now_and_says_what_it_cannot_read() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('b'));
    type_text(&mut app, "yesterday-ish");
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    assert!(matches!(&app.mode, Mode::Jump { error: Some(e), .. } if e.contains("not a time")));
    update(&mut app, key(KeyCode::Esc));
    update(&mut app, ch('b'));
    type_text(&mut app, "10m ago");
    let effects = update(&mut app, key(KeyCode::Enter));
    let Some(Effect::Travel {
        from: None,
        to: Travel::To(t),
    }) = effects.first()
    else {
        panic!("{effects:?}");
    };
    let ago = SystemTime::now().duration_since(*t).unwrap();
    assert!(
        ago >= Duration::from_secs(599) && ago <= Duration::from_secs(660),
        "{ago:?}"
    );
    arrive_past(&mut app);
    update(&mut app, ch('b'));
    type_text(&mut app, "now");
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    assert!(app.past.is_none());
    assert!(cookies(&app).len() > 1);
}

#[test]
fn a_store_that_cannot_answer_leaves_the_view_where_it_was_and_says_why() {
    let (mut app, _) = fixture_app();
    let live = cookies(&app);
    update(
        &mut app,
        Msg::Arrived(Arrival::Failed("the store \u{1b}[2J holds nothing".into())),
    );
    assert!(app.past.is_none());
    assert_eq!(cookies(&app), live);
    let said = app.status.clone().unwrap();
    assert!(
        said.contains("holds nothing") && !said.contains('\u{1b}'),
        "{said}"
    );
}

#[test]
fn the_header_says_the_past_plainly() {
    let (mut app, _) = fixture_app();
    arrive_past(&mut app);
    let backend = ratatui::backend::TestBackend::new(120, 30);
    let mut terminal = ratatui::Terminal::new(backend).unwrap();
    lay_out(&mut app, 120, 30);
    terminal.draw(|f| crate::ui::render(&app, f)).unwrap();
    let screen: String = terminal
        .backend()
        .buffer()
        .content()
        .iter()
        .map(ratatui::buffer::Cell::symbol)
        .collect();
    let first: String = screen.chars().take(120).collect();
    assert!(first.contains("THE PAST: 2026-"), "{first}");
}

#[test]
fn the_past_details_ask_the_store_for_the_connections_life_once_per_moment() {
    let (mut app, _) = fixture_app();
    arrive_past(&mut app);
    lay_out(&mut app, 120, 30);
    assert_eq!(
        update(&mut app, key(KeyCode::Enter)),
        vec![Effect::Lifeline {
            cookie: 900,
            until: at()
        }]
    );
    // Asked once; the answer is kept for the details.
    update(&mut app, key(KeyCode::Esc));
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    let lines = vec!["2026-11-18T… opened ESTABLISHED".to_string()];
    update(
        &mut app,
        Msg::Arrived(Arrival::Lifeline(900, Ok(lines.clone()))),
    );
    let kept = app.past.as_ref().and_then(|p| p.lifeline.clone()).unwrap();
    assert_eq!(kept.lines, Some(Ok(lines)));
    // Another moment with the details open: its own lifeline.
    let past = conn(
        900,
        "10.0.0.5:40000",
        "10.0.0.9:5432",
        SockState::Established,
        1,
    );
    let later = at() + Duration::from_secs(10);
    let effects = update(
        &mut app,
        Msg::Arrived(Arrival::At(
            later,
            Box::new(snapshot(vec![past])),
            "the store",
        )),
    );
    assert_eq!(
        effects,
        vec![Effect::Lifeline {
            cookie: 900,
            until: later
        }]
    );
    // Live: no lifeline is asked for.
    update(&mut app, Msg::Arrived(Arrival::Live));
    update(&mut app, key(KeyCode::Esc));
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
}
