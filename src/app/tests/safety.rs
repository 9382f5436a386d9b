//! What must never act on a socket the operator did not see: keys outside the socket table,
//! dialogs on a terminal too small to show them, a detail pane whose socket closed, a group
//! opened under a filter.

#[allow(clippy::wildcard_imports)]
use super::*;

#[test]
fn acting_keys_act_only_in_the_socket_table() {
    let (mut app, _) = fixture_app();
    assert!(selected_cookie(&app).is_some());
    for view_key in [KeyCode::Tab, KeyCode::Char('L')] {
        update(&mut app, key(view_key));
        assert_ne!(app.view, View::Sockets);
        for k in ['k', 'K', ' ', 'a'] {
            assert!(update(&mut app, ch(k)).is_empty());
            assert_eq!(
                app.mode,
                Mode::Browse,
                "{k} opened something in {:?}",
                app.view
            );
            assert!(app.marked.is_empty(), "{k} marked in {:?}", app.view);
            let status = app.status.clone().unwrap_or_default();
            assert!(status.contains("acts on the socket table"), "{status}");
        }
        assert!(update(&mut app, key(KeyCode::F(9))).is_empty());
        assert_eq!(app.mode, Mode::Browse);
        update(&mut app, key(view_key));
        assert_eq!(app.view, View::Sockets);
    }
    update(&mut app, ch('k'));
    assert!(matches!(app.mode, Mode::ConfirmKill { .. }));
}

#[test]
fn a_terminal_too_small_shows_no_dialog_and_answers_none() {
    let (mut app, _) = fixture_app();
    lay_out(&mut app, 80, 24);
    update(&mut app, ch('k'));
    assert!(matches!(app.mode, Mode::ConfirmKill { .. }));
    // Shrunk under it: the dialog is gone, and `y` kills nothing.
    lay_out(&mut app, 40, 10);
    assert_eq!(app.mode, Mode::Browse);
    assert!(app.status.as_deref().unwrap().contains("too small"));
    for k in ['k', 'y', 'K'] {
        assert!(update(&mut app, ch(k)).is_empty());
        assert_eq!(app.mode, Mode::Browse);
    }
    assert!(update(&mut app, key(KeyCode::Enter)).is_empty());
    assert_eq!(update(&mut app, ch('q')), [Effect::Quit]);
}

#[test]
fn the_detail_pane_closes_when_its_socket_closes() {
    let (mut app, t0) = fixture_app();
    let shown = selected_cookie(&app).unwrap();
    update(&mut app, key(KeyCode::Enter));
    assert!(matches!(app.mode, Mode::Detail { .. }));
    let socks = fixture_socks()
        .into_iter()
        .filter(|s| s.cookie.0 != shown)
        .collect();
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(socks)), t0 + Duration::from_secs(1)),
    );
    // Not the neighbour's details under the closed one's title: the pane closes.
    assert_eq!(app.mode, Mode::Browse);
    assert_ne!(selected_cookie(&app), Some(shown));
    assert!(app.status.as_deref().unwrap().contains("closed"));
}

#[test]
fn a_group_opens_under_the_filter_it_was_counted_under() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::F(4)));
    for c in "idle>2h1m".chars() {
        update(&mut app, ch(c));
    }
    update(&mut app, key(KeyCode::Enter));
    update(&mut app, key(KeyCode::Tab));
    let g = &app.groups[0];
    assert_eq!((g.process.as_str(), g.count), ("java", 1));
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        app.filter.source(),
        "(idle>2h1m) comm:java dport:5432 !listen !time-wait"
    );
    // The one socket the group counted, not the process's two.
    assert_eq!(app.lines.len(), 1);
    // Opened again from the groups it now counts: the same filter, not nested.
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        app.filter.source(),
        "(idle>2h1m) comm:java dport:5432 !listen !time-wait"
    );
}

#[test]
fn groups_keep_a_nameless_process_and_ones_named_like_markers_apart() {
    let t0 = Instant::now();
    let named_in = |cookie: u64, pid: u32, name: &str, container: Option<&str>| {
        let mut s = conn(
            cookie,
            &format!("10.0.0.5:{}", 41000 + cookie),
            "10.0.0.9:5432",
            SockState::Established,
            1_000,
        );
        s.owner = Owner::Process {
            process: Arc::new(Process {
                pid,
                name: name.into(),
                cmdline: String::new().into(),
                container: container.map(Into::into),
            }),
            fd: 3,
        };
        s
    };
    let named = |cookie: u64, pid: u32, name: &str| named_in(cookie, pid, name, None);
    let mut nobody = named(3, 0, "");
    nobody.owner = Owner::None;
    // And names a word cannot spell, beside names their `?` would match.
    let socks = vec![
        named(1, 90, ""),
        named(2, 91, "-"),
        nobody,
        named(4, 92, "a b"),
        named(5, 93, "aXb"),
        named(6, 94, "x(y)"),
        named(7, 95, "x1y2"),
        named(8, 96, "p*q"),
        named(9, 97, "pzzq"),
        // One name on the host and in containers (one named with a space).
        named(10, 98, "nginx"),
        named_in(11, 99, "nginx", Some("docker:web")),
        named_in(12, 100, "nginx", Some("podman:my web")),
        named_in(13, 101, "nginx", Some("podman:my-web")),
    ];
    let mut table = crate::model::ConnTable::new(Duration::from_secs(300));
    table.apply(snapshot(socks), t0);
    let all = Filter::parse("").unwrap();
    let groups = crate::app::groups::groups(&table, &all, t0, crate::app::GroupSort::Count);
    assert_eq!(groups.len(), 13, "{groups:#?}");
    for g in &groups {
        // Each group's filter selects its one socket, and only it.
        let f = Filter::parse(&g.filter).unwrap_or_else(|e| panic!("{}: {e}", g.filter));
        let hits = table.entries().filter(|e| f.matches(e, t0)).count();
        assert_eq!(hits, 1, "{} selects {hits}", g.filter);
    }
}

#[test]
fn a_kill_from_the_detail_pane_keeps_its_result_in_view() {
    use crate::actions::{Mechanism, Outcome, Report};
    // The poll that no longer has it may come before or after the result.
    for poll_first in [true, false] {
        let (mut app, t0) = fixture_app();
        let shown = selected_cookie(&app).unwrap();
        update(&mut app, key(KeyCode::Enter));
        update(&mut app, ch('k'));
        let Effect::Kill(targets) = &update(&mut app, ch('y'))[0] else {
            panic!("no kill")
        };
        let acted = Msg::Acted {
            reports: vec![Report {
                target: targets[0].clone(),
                action: crate::actions::Action::Kill,
                outcome: Outcome::Killed {
                    mechanism: Mechanism::SockDestroy,
                    after: None,
                },
                at: std::time::SystemTime::now(),
            }],
            log_error: None,
        };
        let without = fixture_socks()
            .into_iter()
            .filter(|s| s.cookie.0 != shown)
            .collect();
        let poll = Msg::Poll(Box::new(snapshot(without)), t0 + Duration::from_secs(1));
        if poll_first {
            update(&mut app, poll);
            update(&mut app, acted);
        } else {
            update(&mut app, acted);
            update(&mut app, poll);
        }
        let status = app.status.clone().unwrap();
        assert!(
            status.starts_with("kill: killed 1"),
            "{poll_first}: {status}"
        );
        assert_eq!(app.mode, Mode::Browse);
    }
}

#[test]
fn the_detail_pane_closes_when_the_filter_hides_its_socket() {
    let (mut app, _) = fixture_app();
    let shown = selected_cookie(&app).unwrap();
    update(&mut app, key(KeyCode::Enter));
    // The CLOSE_WAIT preset: not the socket shown.
    update(&mut app, ch('5'));
    assert_ne!(selected_cookie(&app), Some(shown));
    assert_eq!(app.mode, Mode::Browse, "the pane would show another socket");
}

#[test]
fn a_socket_the_filter_hides_is_never_selected_again() {
    let (mut app, t0) = fixture_app();
    // Only cookie 3 has been idle over 2h1m; it is selected.
    update(&mut app, key(KeyCode::F(4)));
    type_text(&mut app, "idle>2h1m");
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(selected_cookie(&app), Some(3));
    update(&mut app, ch('\\'));
    type_text(&mut app, " or close-wait");
    // Meanwhile data moves on cookie 3: the filter from before hides it now.
    let mut socks = fixture_socks();
    for s in &mut socks {
        if s.cookie.0 == 3 {
            s.tcp_info = Some(crate::model::table::tests::info(10, 2000, 600));
        }
    }
    update(
        &mut app,
        Msg::Poll(Box::new(snapshot(socks)), t0 + Duration::from_secs(1)),
    );
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.filter.source(), "idle>2h1m");
    assert_ne!(selected_cookie(&app), Some(3), "a hidden socket selected");
    // Nothing listed, nothing chosen.
    assert!(update(&mut app, ch('k')).is_empty());
    assert!(
        !matches!(app.mode, Mode::ConfirmKill { .. }),
        "{:?}",
        app.mode
    );
}

#[test]
fn a_group_within_an_or_filter_is_wrapped_not_taken_for_the_same() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::F(4)));
    type_text(
        &mut app,
        "close-wait or comm:java dport:5432 !listen !time-wait",
    );
    update(&mut app, key(KeyCode::Enter));
    update(&mut app, key(KeyCode::Tab));
    let java = app
        .group_lines
        .iter()
        .position(|l| matches!(l, GroupLine::Group(g) if app.groups[*g as usize].process == "java"))
        .unwrap();
    app.selected_group = java;
    update(&mut app, key(KeyCode::Enter));
    assert_eq!(
        app.filter.source(),
        "(close-wait or comm:java dport:5432 !listen !time-wait) comm:java dport:5432 !listen !time-wait"
    );
}

#[test]
fn a_kill_the_kernel_would_refuse_is_said_before_any_dialog() {
    let (mut app, _) = fixture_app();
    app.powers = crate::actions::Powers {
        net_admin: false,
        ptrace: false,
        euid: 65534,
    };
    update(&mut app, ch('k'));
    assert_eq!(
        app.mode,
        Mode::Browse,
        "a dialog opened for a kill that would be refused"
    );
    let status = app.status.clone().unwrap_or_default();
    assert!(status.contains("CAP_NET_ADMIN"), "{status}");
    // A keepalive change needs the owner's fd, of another user's process: ptrace rights.
    update(&mut app, ch('K'));
    let status = app.status.clone().unwrap_or_default();
    assert!(
        app.mode == Mode::Browse && status.contains("ptrace"),
        "{:?} {status}",
        app.mode
    );
}
