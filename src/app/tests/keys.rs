//! The bars (filter, search), their editing and history, the interval keys, scrolling panes,
//! keys that do not apply, and churn.

#[allow(clippy::wildcard_imports)]
use super::*;

fn ctrl(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn listed(app: &App) -> Vec<u64> {
    app.lines
        .iter()
        .filter_map(|l| match l {
            Line::Sock(i) => Some(app.table.entry(*i as usize).sock.cookie.0),
            _ => None,
        })
        .collect()
}

fn bar_text(app: &App) -> String {
    match &app.mode {
        Mode::Filter { input, .. } | Mode::Search { input, .. } => input.value().to_string(),
        other => panic!("no bar open: {other:?}"),
    }
}

#[test]
fn the_filter_bar_edits_in_place_and_esc_puts_back_the_previous_filter() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('5'));
    assert_eq!(listed(&app), [4]);
    update(&mut app, ch('\\'));
    assert_eq!(bar_text(&app), "close-wait");
    update(&mut app, ctrl('u'));
    type_text(&mut app, "established idle>2h1m");
    assert_eq!(listed(&app), [3]);
    // Ctrl-W deletes the word before the cursor: the text is invalid meanwhile, and the
    // table keeps the last valid filter.
    update(&mut app, ctrl('w'));
    assert_eq!(bar_text(&app), "established idle>");
    assert_eq!(listed(&app), [3]);
    type_text(&mut app, "10m");
    assert_eq!(listed(&app), [3, 1]);
    // ← moves into the text: a `!` typed there negates the state word.
    for _ in 0.."established idle>10m".len() {
        update(&mut app, key(KeyCode::Left));
    }
    update(&mut app, ch('!'));
    assert_eq!(bar_text(&app), "!established idle>10m");
    assert_eq!(listed(&app), [4]);
    // Esc: the filter from before the bar opened, not the one typed.
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Browse);
    assert_eq!(app.filter.source(), "close-wait");
    assert_eq!(listed(&app), [4]);
    // Enter keeps, and the history remembers; ↑ brings it back.
    update(&mut app, key(KeyCode::F(4)));
    update(&mut app, ctrl('u'));
    type_text(&mut app, "probing");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.filter.source(), "probing");
    update(&mut app, ch('\\'));
    update(&mut app, ctrl('u'));
    assert_eq!(listed(&app).len(), 6, "an empty bar shows everything");
    update(&mut app, key(KeyCode::Up));
    assert_eq!(bar_text(&app), "probing");
    assert_eq!(listed(&app), [3]);
    update(&mut app, key(KeyCode::Enter));
    // Del clears the filter; the footer says so while one is active.
    assert!(crate::ui::hints(&app).contains(&("Del", "clears filter")));
    update(&mut app, key(KeyCode::Delete));
    assert!(app.filter.matches_all());
    assert!(!crate::ui::hints(&app).contains(&("Del", "clears filter")));
}

#[test]
fn search_jumps_to_matching_rows_and_hides_none() {
    let (mut app, _) = fixture_app();
    let all = app.lines.clone();
    assert_eq!(selected_cookie(&app), Some(3));
    update(&mut app, ch('/'));
    type_text(&mut app, "6379");
    assert_eq!(selected_cookie(&app), Some(2), "the redis connection");
    assert_eq!(app.lines, all, "a search filters nothing");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Browse);
    // `java` is three rows: n walks them, wrapping; N goes back.
    update(&mut app, ch('/'));
    type_text(&mut app, "JAVA");
    let first = selected_cookie(&app);
    update(&mut app, key(KeyCode::Enter));
    let mut seen = vec![first];
    for _ in 0..3 {
        update(&mut app, ch('n'));
        seen.push(selected_cookie(&app));
    }
    assert_eq!(seen[3], seen[0], "wraps round: {seen:?}");
    assert_eq!(
        {
            let mut s: Vec<_> = seen[..3].iter().flatten().copied().collect();
            s.sort_unstable();
            s
        },
        [1, 2, 3]
    );
    update(&mut app, ch('N'));
    assert_eq!(selected_cookie(&app), seen[2]);
    // Nothing matches: said, and the selection stays.
    let before = selected_cookie(&app);
    update(&mut app, ch('/'));
    type_text(&mut app, "nosuchthing");
    assert_eq!(selected_cookie(&app), before);
    assert!(app.status.as_deref().unwrap().contains("nothing matches"));
    // The bar says so while it is open (the status line is behind it).
    assert!(matches!(app.mode, Mode::Search { missed: true, .. }));
    for _ in 0.."nosuchthing".len() {
        update(&mut app, key(KeyCode::Backspace));
    }
    type_text(&mut app, "java");
    assert!(matches!(app.mode, Mode::Search { missed: false, .. }));
    type_text(&mut app, "x");
    // Esc goes back to where the search started.
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(selected_cookie(&app), before);
    assert_eq!(app.lines, all);
}

#[test]
fn plus_and_minus_step_the_poll_interval() {
    let (mut app, _) = fixture_app();
    assert_eq!(
        update(&mut app, ch('+')),
        [Effect::SetInterval(Duration::from_secs(2))]
    );
    assert_eq!(
        update(&mut app, ch('-')),
        [Effect::SetInterval(Duration::from_secs(1))]
    );
    for _ in 0..3 {
        update(&mut app, ch('-'));
    }
    assert_eq!(app.interval, Duration::from_millis(100));
    // The floor holds, and says so.
    assert!(update(&mut app, ch('-')).is_empty());
    assert!(app.status.as_deref().unwrap().contains("fastest"));
    for _ in 0..20 {
        update(&mut app, ch('+'));
    }
    assert_eq!(app.interval, Duration::from_secs(60));
}

#[test]
fn the_detail_pane_and_help_scroll_within_their_text() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Enter));
    lay_out(&mut app, 80, 24);
    let (lines, height) = (app.viewport.detail_lines, app.viewport.detail_height);
    assert!(
        lines > height,
        "at 80x24 the pane needs scrolling: {lines} in {height}"
    );
    let before = selected_cookie(&app);
    update(&mut app, key(KeyCode::Down));
    assert_eq!(app.mode, Mode::Detail { scroll: 1 });
    assert_eq!(
        selected_cookie(&app),
        before,
        "↓ scrolls the pane, not the table"
    );
    update(&mut app, key(KeyCode::End));
    lay_out(&mut app, 80, 24);
    assert_eq!(
        app.mode,
        Mode::Detail {
            scroll: lines - height
        }
    );
    update(&mut app, key(KeyCode::PageUp));
    assert!(matches!(app.mode, Mode::Detail { scroll } if scroll < lines - height));
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Browse);

    update(&mut app, ch('?'));
    lay_out(&mut app, 80, 24);
    let (lines, height) = (app.viewport.help_lines, app.viewport.help_height);
    assert!(lines > height);
    update(&mut app, key(KeyCode::PageDown));
    assert_eq!(app.mode, Mode::Help { scroll: height });
    update(&mut app, key(KeyCode::End));
    lay_out(&mut app, 80, 24);
    assert_eq!(
        app.mode,
        Mode::Help {
            scroll: lines - height
        }
    );
    update(&mut app, ch('x'));
    assert_eq!(app.mode, Mode::Browse);
}

#[test]
fn keys_that_do_not_apply_say_why_instead_of_asking() {
    let (mut app, t0) = fixture_app();
    let mut socks = fixture_socks();
    let mut unix = sock(SockState::Established);
    unix.proto = crate::model::Proto::Unix;
    unix.family = crate::model::Family::Unix;
    unix.cookie = Cookie(50);
    unix.local = Endpoint::Unix(Some("/run/app.sock".into()));
    unix.remote = Endpoint::UnixPeer(None);
    unix.tcp_info = None;
    socks.push(unix);
    update(&mut app, Msg::Poll(Box::new(snapshot(socks)), t0));
    update(&mut app, ch('\\'));
    type_text(&mut app, "unix");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(selected_cookie(&app), Some(50));
    assert!(!crate::ui::hints(&app).iter().any(|h| h.0 == "k"));
    update(&mut app, ch('k'));
    assert_eq!(app.mode, Mode::Browse);
    assert!(app
        .status
        .as_deref()
        .unwrap()
        .contains("Unix socket cannot be killed"));
    // K: ESTABLISHED TCP only.
    update(&mut app, ch('5'));
    update(&mut app, ch('K'));
    assert_eq!(app.mode, Mode::Browse);
    assert!(app.status.as_deref().unwrap().contains("ESTABLISHED TCP"));
    // And --read-only offers neither.
    update(&mut app, ch('1'));
    app.read_only = true;
    let hints = crate::ui::hints(&app);
    assert!(
        !hints
            .iter()
            .any(|h| h.0 == "k" || h.0 == "K" || h.0 == "Space"),
        "{hints:?}"
    );
}

#[test]
fn closed_rows_linger_capped_and_not_in_a_stale_hunt() {
    let (mut app, t0) = fixture_app();
    // 40 short-lived connections come and go.
    let mut socks = fixture_socks();
    socks.extend((100..140).map(|c| {
        conn(
            c,
            &format!("10.0.0.5:{}", 30000 + c),
            "10.0.0.9:80",
            SockState::Established,
            10,
        )
    }));
    update(&mut app, Msg::Poll(Box::new(snapshot(socks)), t0));
    update(
        &mut app,
        Msg::Poll(
            Box::new(snapshot(fixture_socks())),
            t0 + Duration::from_secs(1),
        ),
    );
    let closed = app
        .lines
        .iter()
        .filter(|l| matches!(l, Line::Closed(_)))
        .count();
    assert_eq!(closed, MAX_CLOSED);
    // Under the stale preset, what closes just goes.
    update(&mut app, ch('s'));
    let mut fewer = fixture_socks();
    fewer.retain(|s| s.cookie.0 != 1);
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(fewer)), t0 + Duration::from_secs(2)),
    );
    assert!(!app.lines.iter().any(|l| matches!(l, Line::Closed(_))));
}

#[test]
fn pasting_goes_into_the_bar_and_nowhere_else() {
    let (mut app, _) = fixture_app();
    update(&mut app, Msg::Paste("k".into()));
    assert_eq!(app.mode, Mode::Browse, "a paste is never keys");
    update(&mut app, ch('\\'));
    update(&mut app, Msg::Paste("state:close-wait\n".into()));
    assert_eq!(bar_text(&app), "state:close-wait ");
    assert_eq!(listed(&app), [4]);
}

#[test]
fn esc_in_the_filter_bar_puts_back_the_selection_too() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Down));
    let before = selected_cookie(&app);
    update(&mut app, ch('\\'));
    // A filter that hides the selected row moves the selection while typing…
    type_text(&mut app, "port:6379");
    assert_ne!(selected_cookie(&app), before);
    // …and Esc brings both back.
    update(&mut app, key(KeyCode::Esc));
    assert!(app.filter.matches_all());
    assert_eq!(selected_cookie(&app), before);
}

#[test]
fn a_note_leaves_the_status_line_after_a_while() {
    let (mut app, t0) = fixture_app();
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(1)));
    update(&mut app, ch('9'));
    assert!(app.status.is_some());
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(5)));
    assert!(app.status.is_some(), "gone too soon");
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(12)));
    assert_eq!(app.status, None);
    // The same note again starts its time again.
    update(&mut app, ch('9'));
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(21)));
    update(&mut app, ch('9'));
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(25)));
    assert!(
        app.status.is_some(),
        "the repeated note went with the first"
    );
}

#[test]
fn esc_then_a_key_typed_quickly_is_both_keys_where_alt_means_nothing() {
    let alt = |c: char| Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT));
    let (mut app, _) = fixture_app();
    update(&mut app, ch('?'));
    assert!(matches!(app.mode, Mode::Help { .. }));
    // Esc q arrives as Alt-q: the help closes and q quits.
    assert_eq!(update(&mut app, alt('q')), vec![Effect::Quit]);
    assert_eq!(app.mode, Mode::Browse);
    // In the filter bar Alt-b is a word move: it stays one key.
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::F(4)));
    type_text(&mut app, "idle>1s port:1");
    update(&mut app, alt('b'));
    assert!(matches!(app.mode, Mode::Filter { .. }), "{:?}", app.mode);
}
