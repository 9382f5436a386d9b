//! Marks, the kill and keepalive dialogs, and their results.

#[allow(clippy::wildcard_imports)]
use super::*;

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
        Mode::ConfirmKill { targets, yes, .. } => {
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
    let Mode::ConfirmKill {
        targets, hidden, ..
    } = &app.mode
    else {
        panic!("{:?}", app.mode)
    };
    // Both are hidden now, and the dialog says so.
    assert_eq!((targets.len(), *hidden), (2, 2));
    let screen = {
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 30)).unwrap();
        t.draw(|f| crate::ui::render(&app, f)).unwrap();
        let b = t.backend().buffer().clone();
        (0..b.area.height)
            .map(|y| {
                (0..b.area.width)
                    .map(|x| b[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        screen.contains("2 of them marked earlier and hidden"),
        "{screen}"
    );
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
    // Esc leaves it too.
    update(&mut app, ch('L'));
    update(&mut app, key(KeyCode::Esc));
    assert_eq!(app.view, View::Sockets);
}

#[test]
fn read_only_explains_and_kills_nothing() {
    let (mut app, _) = fixture_app();
    app.read_only = true;
    for k in ['k', 'K', ' ', 'a'] {
        app.status = None;
        assert!(update(&mut app, ch(k)).is_empty());
        assert_eq!(app.mode, Mode::Browse);
        assert!(app.marked.is_empty(), "{k:?} marked");
        assert!(app.status.as_deref().unwrap().contains("--read-only"));
    }
}

#[test]
fn shift_k_offers_keepalive_settings_and_applies_only_valid_ones() {
    let (mut app, _) = fixture_app();
    let sel = selected_cookie(&app).unwrap();
    assert!(update(&mut app, ch('K')).is_empty());
    let Mode::SetKeepalive { targets, input, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert_eq!(cookies(targets), [sel]);
    assert_eq!(input.value(), "idle=60s intvl=10s cnt=5");
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
    assert!(
        error
            .as_deref()
            .unwrap()
            .contains("from 1 to 127, not '900'"),
        "{error:?}"
    );
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
    let Mode::SetKeepalive { input, .. } = &app.mode else {
        panic!("{:?}", app.mode)
    };
    assert_eq!(input.value(), "idle=25s intvl=10s cnt=5");
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
