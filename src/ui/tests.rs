//! Rendering tests: a fixture [`App`] drawn into ratatui's `TestBackend`.

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

use super::*;
use crate::app::tests::{ch, fixture_app, key, lay_out};
use crate::app::{update, App};

pub(super) fn draw(app: &mut App, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    lay_out(app, w, h);
    t.draw(|f| render(app, f)).unwrap();
    t.backend().buffer().clone()
}

pub(super) fn text(b: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..b.area.height {
        let line: String = (0..b.area.width).map(|x| b[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row_of(b: &Buffer, needle: &str) -> u16 {
    let t = text(b);
    t.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle} not on screen:\n{t}")) as u16
}

#[test]
fn dashboard_at_120x30() {
    let (mut app, _) = fixture_app();
    insta::assert_snapshot!("sockets_120x30", text(&draw(&mut app, 120, 30)));
}

#[test]
fn detail_pane_at_100x48() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Enter));
    let screen = text(&draw(&mut app, 100, 48));
    insta::assert_snapshot!("detail_100x48", screen);
    for needle in [
        "3 probes sent, none answered",
        "next probe in 40s",
        "kernel would drop it in ~8m16s (an estimate",
        "probing:",
        "java -jar billing.jar",
        "cookie 3",
    ] {
        assert!(
            screen.contains(needle),
            "detail lacks {needle:?}:\n{screen}"
        );
    }
}

#[test]
fn eighty_by_twenty_four_keeps_the_essentials() {
    let (mut app, _) = fixture_app();
    // Even with a 41-character IPv6 peer on screen, what identifies a connection and what
    // katop is for stay: compact (the local port alone, an elided IPv6 address, the first
    // stale reason and a count), and the footer says what is hidden.
    let screen = text(&draw(&mut app, 80, 24));
    for needle in [
        "LOCAL",
        "REMOTE",
        "PROCESS",
        "IDLE",
        "KEEPALIVE",
        "DETECT",
        "STALE",
        ":41002",
        "10.0.0.8:5432",
        "java[4121]",
        "probe 3/~9",
        "~8m15s",
        "probing+1",
        "columns hidden: ←→",
        "[2001",
    ] {
        assert!(screen.contains(needle), "80x24 lacks {needle:?}:\n{screen}");
    }
    assert!(screen.lines().all(|l| l.chars().count() <= 80));
    // → pages through every column, left to right, from the first (PROTO, dropped from the
    // compact page): hidden ones come into view; ← back.
    update(&mut app, key(KeyCode::Right));
    let first = text(&draw(&mut app, 80, 24));
    assert!(first.lines().any(|l| l.starts_with("PROTO")), "{first}");
    let mut presses = 1;
    let mut scrolled = first;
    while !scrolled.contains("SERVICE") && presses < 8 {
        update(&mut app, key(KeyCode::Right));
        presses += 1;
        scrolled = text(&draw(&mut app, 80, 24));
    }
    assert!(
        scrolled.contains("SERVICE") && scrolled.contains("http-alt"),
        "{scrolled}"
    );
    for _ in 0..presses {
        update(&mut app, key(KeyCode::Left));
    }
    assert_eq!(text(&draw(&mut app, 80, 24)), screen);
}

#[test]
fn tiny_terminal_says_so() {
    let (mut app, _) = fixture_app();
    let screen = text(&draw(&mut app, 40, 8));
    assert!(screen.contains("terminal too small: 40x8"), "{screen}");
    // Degenerate sizes draw without panicking.
    for (w, h) in [(1, 1), (0, 0), (60, 12), (59, 30), (200, 12)] {
        draw(&mut app, w, h);
    }
}

#[test]
fn hostile_names_and_ipv6_are_shown_safely() {
    let (mut app, _) = fixture_app();
    let b = draw(&mut app, 200, 30);
    let screen = text(&b);
    assert!(
        screen.contains("[2001:db8:ffff:ffff:ffff:ffff:ffff:1]:443"),
        "{screen}"
    );
    assert!(
        !screen.contains('\u{1b}'),
        "an escape sequence reached the screen"
    );
    assert!(screen.contains("\u{fffd}?[2Jevil-name"), "{screen}");
}

#[test]
fn stale_tags_are_red_and_no_color_removes_colour() {
    let (mut app, _) = fixture_app();
    let b = draw(&mut app, 160, 30);
    let y = row_of(&b, "no-keepalive,idle");
    let x = text(&b)
        .lines()
        .nth(y as usize)
        .unwrap()
        .find("no-keepalive,idle")
        .unwrap() as u16;
    assert_eq!(b[(x, y)].fg, Color::Red);
    app.color = false;
    let b = draw(&mut app, 160, 30);
    for cell in b.content() {
        assert!(
            matches!(cell.fg, Color::Reset),
            "colour {:?} with NO_COLOR",
            cell.fg
        );
    }
}

#[test]
fn groups_and_help() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Tab));
    let screen = text(&draw(&mut app, 100, 24));
    assert!(
        screen.contains("PROCESS")
            && screen.contains("java")
            && screen.contains("→ :5432 postgres"),
        "{screen}"
    );
    update(&mut app, ch('?'));
    let screen = text(&draw(&mut app, 100, 34));
    assert!(
        screen.contains("katop help") && screen.contains("pause / resume polling"),
        "{screen}"
    );
}

#[test]
fn filter_error_is_shown_in_place() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('\\'));
    for c in "idle>".chars() {
        update(&mut app, ch(c));
    }
    let screen = text(&draw(&mut app, 120, 24));
    let last = screen.lines().nth(23).unwrap();
    assert!(
        last.contains("filter: idle>") && last.contains("error at 6: expected a duration like 10m"),
        "{last}"
    );
    // The table still shows every socket.
    assert!(screen.contains("10.0.0.9:5432"));
}

/// Wide characters take two cells: the bar scrolls by cells, so the text up to the cursor
/// fills the room it has and the last one typed shows beside the cursor.
#[test]
fn the_filter_bar_scrolls_wide_text_by_cells() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('\\'));
    for c in "proc:"
        .chars()
        .chain(std::iter::repeat_n('日', 60))
        .chain(['末'])
    {
        update(&mut app, ch(c));
    }
    let screen = text(&draw(&mut app, 80, 24));
    let last = screen.lines().nth(23).unwrap();
    assert!(
        last.starts_with("filter: ") && last.contains('末'),
        "{last}"
    );
    let wide = last.chars().filter(|&c| c == '日').count();
    assert!((30..=36).contains(&wide), "{wide} shown: {last}");
    // (One symbol per cell here: a wide character's second cell is blank.)
    assert!(last.chars().count() <= 80, "{last}");
}

#[test]
fn the_cursor_shows_at_the_end_of_a_long_filter() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('\\'));
    let long = (1..60)
        .map(|p| format!("port:{p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    for c in long.chars() {
        update(&mut app, ch(c));
    }
    let buf = draw(&mut app, 80, 24);
    let last = text(&buf).lines().nth(23).unwrap().to_string();
    assert!(last.contains("port:59"), "{last}");
    // The cursor cell, after `59`, is drawn in the selected style, before any closing `…`.
    let x = last.find("port:59").unwrap() + "port:59".len();
    let cursor = buf[(x as u16, 23)].style();
    assert_ne!(
        cursor,
        buf[(x as u16 - 1, 23)].style(),
        "no cursor at {x}: {last}"
    );
}

#[test]
fn collector_warnings_reach_the_status_line() {
    let (mut app, t0) = fixture_app();
    let mut snap = crate::model::table::tests::snapshot(crate::app::tests::fixture_socks());
    snap.warnings
        .push("the fds of 3 processes could not be read".into());
    update(&mut app, crate::app::Msg::Poll(Box::new(snap), t0));
    let screen = text(&draw(&mut app, 120, 24));
    let lines: Vec<&str> = screen.lines().collect();
    // Its own line above the key hints, which stay.
    assert!(
        lines[lines.len() - 2].contains("the fds of 3 processes could not be read"),
        "{screen}"
    );
    assert!(lines[lines.len() - 1].contains("q quit"), "{screen}");
}

#[test]
fn a_wide_terminal_shows_bytes_and_rates() {
    let (mut app, t0) = fixture_app();
    // A second poll two seconds later, 2000 more bytes each way on every connection.
    let socks = crate::app::tests::fixture_socks()
        .into_iter()
        .map(|mut s| {
            if s.tcp_info.is_some() {
                s.tcp_info = Some(crate::model::table::tests::info(0, 3001, 2500));
            }
            s
        })
        .collect();
    update(
        &mut app,
        crate::app::Msg::Poll(
            Box::new(crate::model::table::tests::snapshot(socks)),
            t0 + std::time::Duration::from_secs(2),
        ),
    );
    let screen = text(&draw(&mut app, 220, 30));
    let header = screen.lines().nth(4).unwrap();
    assert!(
        header.contains("BYTES-IN")
            && header.contains("BYTES-OUT")
            && header.contains("RATE IN/OUT"),
        "{screen}"
    );
    let row = screen
        .lines()
        .find(|l| l.contains("10.0.0.9:5432"))
        .unwrap();
    assert!(
        row.contains("2.4 KiB") && row.contains("2.9 KiB") && row.contains("1000 B/s / 1000 B/s"),
        "{row}"
    );
}

#[test]
fn marked_rows_and_the_kill_confirmation() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch(' '));
    update(&mut app, ch(' '));
    update(&mut app, ch('k'));
    let b = draw(&mut app, 120, 30);
    let screen = text(&b);
    insta::assert_snapshot!("confirm_kill_120x30", screen);
    assert!(screen.contains("Kill these 2 sockets?"), "{screen}");
    assert!(screen.contains("2 marked"), "{screen}");
    // Marked rows carry a `*` (visible without colour) and the dialog names each socket.
    let marked = screen
        .lines()
        .filter(|l| l.starts_with('*'))
        .collect::<Vec<_>>();
    assert_eq!(marked.len(), 2, "{screen}");
    assert!(marked[0].contains("10.0.0.8:5432"), "{screen}");
    assert!(screen.contains("java[4121]"), "{screen}");
    // No is highlighted until the operator moves to Yes.
    let no = row_of(&b, "[ No ]");
    let x = text(&b)
        .lines()
        .nth(no as usize)
        .unwrap()
        .find("[ No ]")
        .unwrap();
    let col = text(&b).lines().nth(no as usize).unwrap()[..x]
        .chars()
        .count() as u16;
    assert!(b[(col + 2, no)]
        .modifier
        .contains(ratatui::style::Modifier::REVERSED));
    // A tiny terminal still draws the dialog without panicking.
    for (w, h) in [(60, 12), (61, 13)] {
        draw(&mut app, w, h);
    }
}

#[test]
fn kill_log_view_lists_results() {
    use crate::actions::{Mechanism, Outcome, Report, Target};
    let (mut app, _) = fixture_app();
    app.kill_log = Some("/root/.local/state/katop/kills.jsonl".into());
    let target = Target::of(&app.table.entry(0));
    update(
        &mut app,
        crate::app::Msg::Acted {
            reports: vec![
                Report {
                    target: target.clone(),
                    action: crate::actions::Action::Kill,
                    outcome: Outcome::Killed {
                        mechanism: Mechanism::SockDestroy,
                        after: None,
                    },
                    at: std::time::SystemTime::UNIX_EPOCH,
                },
                Report {
                    target,
                    action: crate::actions::Action::Kill,
                    outcome: Outcome::AlreadyGone,
                    at: std::time::SystemTime::UNIX_EPOCH,
                },
            ],
            log_error: None,
        },
    );
    update(&mut app, ch('L'));
    let screen = text(&draw(&mut app, 120, 30));
    insta::assert_snapshot!("kill_log_120x30", screen);
    assert!(screen.contains("action log · recorded in /root/.local/state/katop/kills.jsonl"));
    assert!(
        screen.contains("killed (sock-destroy, now gone)  tcp ESTABLISHED"),
        "{screen}"
    );
    // Narrow: the path gives up its start, never its file name, and nothing is cut.
    for w in [60, 61, 72] {
        let screen = text(&draw(&mut app, w, 20));
        let title = screen
            .lines()
            .nth(4)
            .unwrap()
            .trim_end_matches('─')
            .trim_end();
        assert!(
            title.contains("kills.jsonl") || title.ends_with('…'),
            "{title}"
        );
        assert!(
            !title.contains("kills.json ") && !title.ends_with("kills.jso"),
            "{title}"
        );
        assert!(title.chars().count() < usize::from(w), "{title}");
    }
}

#[test]
fn keepalive_dialog_shows_the_settings_and_their_meaning() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch(' '));
    update(&mut app, ch('K'));
    let screen = text(&draw(&mut app, 120, 30));
    insta::assert_snapshot!("keepalive_120x30", screen);
    assert!(
        screen.contains("Turn keepalive on (or set its timers) for this socket?"),
        "{screen}"
    );
    assert!(
        screen.contains("settings: idle=60s intvl=10s cnt=5"),
        "{screen}"
    );
    assert!(screen.contains("noticed within 1m50s"), "{screen}");
    update(&mut app, ch(' '));
    update(&mut app, ch('x'));
    let screen = text(&draw(&mut app, 120, 30));
    assert!(screen.contains("'x': expected idle=DUR"), "{screen}");
}

#[test]
fn declared_middleboxes_show_in_the_header_and_flag_at_risk() {
    let (mut app, t0) = fixture_app();
    app.table
        .set_middleboxes(vec![crate::model::Middlebox::parse(
            Some("aws-nlb"),
            "350s",
        )
        .unwrap()]);
    update(
        &mut app,
        crate::app::Msg::Poll(
            Box::new(crate::model::table::tests::snapshot(
                crate::app::tests::fixture_socks(),
            )),
            t0,
        ),
    );
    let screen = text(&draw(&mut app, 120, 30));
    assert!(screen.contains("aws-nlb 5m50s"), "{screen}");
    // The idle postgres client (2 h, keepalive off) has outlived the NLB's memory.
    assert!(screen.contains("at-risk"), "{screen}");
}

#[test]
fn namespaces_whose_settings_are_unknown_are_not_said_to_differ() {
    let (mut app, _) = fixture_app();
    let host = *app.table.settings();
    let ns = |id: u32, settings: crate::model::KernelSettings| crate::model::NsInfo {
        id: crate::model::NetnsId(id),
        name: format!("netns:{id}").into(),
        container: None,
        settings,
        age: std::time::Duration::ZERO,
        host: false,
    };
    let own = crate::model::KernelSettings {
        keepalive_time_s: Some(60),
        ..host
    };
    // The store keeps the host's settings only: another namespace's come back unknown.
    let unknown = crate::model::KernelSettings::default();
    app.table.ctx.namespaces = vec![ns(7, host), ns(8, own), ns(9, unknown)];
    let screen = text(&draw(&mut app, 160, 30));
    assert!(
        screen.contains("(differ in 1 namespace, not known in 1)"),
        "{screen}"
    );
}
