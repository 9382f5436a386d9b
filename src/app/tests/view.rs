//! Rows, selection, filter, sort and groups.

#[allow(clippy::wildcard_imports)]
use super::*;

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
fn selection_follows_its_socket_and_moves_to_its_neighbour_when_it_closes() {
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
    // It closes: the row lingers greyed, the selection goes to the row that took its place.
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
    assert_eq!(
        selected_cookie(&app),
        Some(4),
        "its neighbour, the CLOSE_WAIT"
    );
    assert_eq!(app.selected_line(), Some(1));
    assert!(app.lines.iter().any(|l| matches!(l, Line::Closed(_))));
    assert!(
        app.status
            .as_deref()
            .unwrap()
            .contains("moved to its neighbour"),
        "{:?}",
        app.status
    );
    // Closed rows are shown, never selected: moving steps over them.
    for _ in 0..20 {
        update(&mut app, key(KeyCode::Down));
        let l = app.lines[app.selected_line().unwrap()];
        assert!(matches!(l, Line::Sock(_)), "{l:?}");
    }
    update(&mut app, Msg::Tick(t0 + Duration::from_secs(6)));
    assert!(!app.lines.iter().any(|l| matches!(l, Line::Closed(_))));
    // With a row highlighted, k always has a socket to offer.
    update(&mut app, ch('k'));
    assert!(
        matches!(app.mode, Mode::ConfirmKill { .. }),
        "{:?}",
        app.mode
    );
}

#[test]
fn filter_bar_validates_and_never_clears_the_table() {
    let (mut app, _) = fixture_app();
    let all = app.lines.len();
    update(&mut app, ch('\\'));
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
    // A key with no preset says so.
    update(&mut app, ch('9'));
    assert!(app.status.as_deref().unwrap().contains("no preset on 9"));
    update(&mut app, ch('1'));
    // `<` `>` walk the columns on screen, each of them, and back to the start.
    lay_out(&mut app, 200, 30);
    let shown: Vec<Column> = app.viewport.columns.iter().map(|c| c.0).collect();
    assert!(shown.len() >= 12, "{shown:?}");
    update(&mut app, ch('>'));
    assert_eq!(app.sort, Column::Keepalive);
    update(&mut app, ch('<'));
    update(&mut app, ch('<'));
    assert_eq!(app.sort, Column::Process);
    let mut seen = vec![app.sort];
    for _ in 1..shown.len() {
        update(&mut app, ch('>'));
        seen.push(app.sort);
    }
    seen.sort_by_key(|c| shown.iter().position(|s| s == c));
    assert_eq!(seen, shown, "every column on screen is reachable");
    update(&mut app, ch('>'));
    assert_eq!(app.sort, Column::Process, "round and back");
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
    update(&mut app, key(KeyCode::F(4)));
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
            g.role,
            g.count,
            g.stale,
            g.keepalive_off
        ),
        ("java", Role::To(5432), 2, 2, 1)
    );
    assert_eq!(g.role.to_string(), "→ :5432 postgres");
    assert_eq!(
        (g.idle_min_ms, g.idle_max_ms),
        (Some(7_200_000), Some(9_000_000))
    );
    assert_eq!(g.members.iter().map(|m| m.pid).collect::<Vec<_>>(), [4121]);
    // → lists its processes under it, ← folds them again.
    update(&mut app, key(KeyCode::Right));
    assert_eq!(app.group_lines[1], GroupLine::Member(0, 0));
    update(&mut app, key(KeyCode::Down));
    update(&mut app, key(KeyCode::Left));
    assert_eq!(app.selected_group, 0);
    assert!(!app.group_lines.contains(&GroupLine::Member(0, 0)));
    // `r` reverses the groups, not the socket table.
    let (reverse, first) = (app.reverse, app.groups[0].id());
    update(&mut app, ch('r'));
    assert!(app.group_reverse && app.reverse == reverse);
    assert_ne!(app.groups[0].id(), first);
    update(&mut app, ch('r'));
    // `<` `>` order the groups.
    update(&mut app, ch('>'));
    assert_eq!(app.group_sort, GroupSort::IdleMax);
    update(&mut app, ch('<'));
    assert_eq!(app.group_sort, GroupSort::Count);
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.view, View::Sockets);
    assert_eq!(
        app.filter.source(),
        "comm:java dport:5432 !listen !time-wait"
    );
    assert_eq!(app.lines.len(), 2);
}

#[test]
fn enter_toggles_details_and_help_closes_on_any_key() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Detail { scroll: 0 });
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Browse);
    update(&mut app, ch('?'));
    assert_eq!(app.mode, Mode::Help { scroll: 0 });
    assert_eq!(update(&mut app, ch('q')), []);
    assert_eq!(app.mode, Mode::Browse);
}

/// A viewport whose table shows `rows` rows.
fn rows_on_screen(app: &mut App, rows: u16) {
    let v = Viewport {
        table: ratatui::layout::Rect::new(0, 4, 120, rows + 1),
        ..Viewport::default()
    };
    update(app, Msg::Layout(v));
}

#[test]
fn selection_stays_in_range_and_in_view() {
    let (mut app, _) = fixture_app();
    for _ in 0..50 {
        update(&mut app, key(KeyCode::PageDown));
    }
    let last = app.selected_line().unwrap();
    assert!(last < app.lines.len());
    rows_on_screen(&mut app, 3);
    assert!(app.offset <= last && last < app.offset + 3);
    update(&mut app, key(KeyCode::Home));
    rows_on_screen(&mut app, 3);
    assert_eq!((app.selected_line(), app.offset), (Some(0), 0));
    // An empty poll leaves nothing to select and nothing to panic about.
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(vec![])), Instant::now()),
    );
    update(&mut app, key(KeyCode::Down));
    rows_on_screen(&mut app, 3);
}

#[test]
fn clicking_a_header_sorts_by_it_and_again_reverses() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let (mut app, _) = fixture_app();
    lay_out(&mut app, 160, 30);
    let table = app.viewport.table;
    let &(_, x, _) = app
        .viewport
        .columns
        .iter()
        .find(|c| c.0 == Column::State)
        .expect("STATE on screen");
    let click = |column, row| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    update(&mut app, click(x, table.y));
    assert_eq!((app.sort, app.reverse), (Column::State, false));
    update(&mut app, click(x + 1, table.y));
    assert_eq!((app.sort, app.reverse), (Column::State, true));
    // A click on a row selects it.
    update(&mut app, click(3, table.y + 2));
    assert_eq!(app.selected_line(), Some(1));
}

#[test]
fn a_closed_selection_moves_to_its_neighbour_and_a_new_filter_to_its_first_row() {
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
    assert_eq!(selected_cookie(&app), Some(1), "the next row, at the top");
    update(&mut app, ch('5'));
    assert_eq!(selected_cookie(&app), Some(4));
}
