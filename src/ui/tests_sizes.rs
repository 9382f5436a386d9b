//! Every screen at 80×24, 100×40 and 200×50: snapshots, and a check that no line is cut.
//!
//! Text keeps its last column free ([`super::wrap::MARGIN`]) and ends in `…` when shortened,
//! so a character that reaches a right edge (the screen's, or a box's border) means a line
//! ran past its place. The check fails on any.

use crossterm::event::KeyCode;
use ratatui::buffer::Buffer;

use super::tests::{draw, text};
use crate::app::tests::{ch, fixture_app, key};
use crate::app::{update, App};

const SIZES: [(u16, u16); 3] = [(80, 24), (100, 40), (200, 50)];

/// Characters that may touch an edge: borders, the sparklines' blocks, and blank.
fn may_touch_edge(s: &str) -> bool {
    s.chars().all(|c| {
        c == ' '
            || c == '…'
            || ('\u{2500}'..='\u{257f}').contains(&c)
            || ('\u{2581}'..='\u{2588}').contains(&c)
    })
}

/// Whether (x, y) is on a box's right side: a `│` (or `┘`) under a `┐` in the same column
/// with no `┘` between.
fn is_right_border(b: &Buffer, x: u16, y: u16) -> bool {
    if !matches!(b[(x, y)].symbol(), "│" | "┘" | "┤") {
        return false;
    }
    for up in (0..y).rev() {
        match b[(x, up)].symbol() {
            "┐" => return true,
            "┘" => return false,
            _ => {}
        }
    }
    false
}

/// Fails when a line of text runs into the screen's right edge or a box's right border.
fn assert_uncut(b: &Buffer, what: &str) {
    let w = b.area.width;
    for y in 0..b.area.height {
        let last = b[(w - 1, y)].symbol();
        let cut_at_edge = !may_touch_edge(last);
        let cut_at_border =
            (1..w).any(|x| is_right_border(b, x, y) && !may_touch_edge(b[(x - 1, y)].symbol()));
        assert!(
            !cut_at_edge && !cut_at_border,
            "{what}: line {y} is cut at the right:\n{}",
            text(b)
        );
    }
}

/// Draws `app` at each size, checks nothing is cut, and snapshots it as `name_WxH`.
fn each_size(app: &mut App, name: &str, prepare: impl Fn(&mut App)) {
    for (w, h) in SIZES {
        prepare(app);
        let b = draw(app, w, h);
        let what = format!("{name}_{w}x{h}");
        assert_uncut(&b, &what);
        insta::assert_snapshot!(what, text(&b));
    }
}

#[test]
fn the_socket_table() {
    let (mut app, _) = fixture_app();
    each_size(&mut app, "table", |_| {});
}

#[test]
fn help() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('?'));
    each_size(&mut app, "help", |_| {});
    // Scrolled to its end, every line of it was on screen once, whole.
    let (mut app, _) = fixture_app();
    update(&mut app, ch('?'));
    update(&mut app, key(KeyCode::End));
    each_size(&mut app, "help_end", |_| {});
}

#[test]
fn the_detail_pane_scrolled_to_its_end() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Enter));
    each_size(&mut app, "detail_end", |app| {
        update(app, key(KeyCode::End));
    });
    update(&mut app, key(KeyCode::End));
    let screen = text(&draw(&mut app, 80, 24));
    // The end of the pane: the tcp_info counters, with their units.
    assert!(screen.contains("bytes_received 500 B"), "{screen}");
    assert!(screen.contains("ago"), "{screen}");
}

#[test]
fn groups() {
    let (mut app, _) = fixture_app();
    update(&mut app, key(KeyCode::Tab));
    update(&mut app, key(KeyCode::Right));
    each_size(&mut app, "groups", |_| {});
}

#[test]
fn the_keepalive_dialog() {
    let (mut app, _) = fixture_app();
    update(&mut app, ch('K'));
    each_size(&mut app, "keepalive_dialog", |_| {});
}

#[test]
fn the_check_catches_a_cut_line() {
    let mut b = Buffer::empty(ratatui::layout::Rect::new(0, 0, 10, 2));
    b.set_string(0, 0, "0123456789", ratatui::style::Style::new());
    let cut = std::panic::catch_unwind(|| assert_uncut(&b, "cut"));
    assert!(cut.is_err(), "a line filling the edge is a cut line");
    let mut b = Buffer::empty(ratatui::layout::Rect::new(0, 0, 10, 2));
    b.set_string(0, 0, "x┌──────┐", ratatui::style::Style::new());
    b.set_string(0, 1, "x│ text │", ratatui::style::Style::new());
    assert_uncut(&b, "boxed");
    b.set_string(0, 1, "x│ textx│", ratatui::style::Style::new());
    assert!(std::panic::catch_unwind(|| assert_uncut(&b, "boxed")).is_err());
}

/// At the smallest size, with every note showing (marks the filter hides, a scope that limits
/// what may be killed), the dialog still lists what will die and shows how to answer.
#[test]
fn the_kill_dialog_at_the_smallest_size_keeps_the_list_and_the_answer() {
    let (mut app, _) = fixture_app();
    // (Limited to uid 1000, the fixture's: a dialog opens only when some socket can be acted on.)
    app.scope = crate::actions::Scope::OwnOnly { uid: 1000 };
    update(&mut app, ch(' '));
    update(&mut app, ch(' '));
    update(&mut app, ch('5'));
    update(&mut app, ch('k'));
    let screen = text(&draw(&mut app, 60, 12));
    assert!(
        screen.contains("[ No ]") && screen.contains("[ Yes, kill ]"),
        "{screen}"
    );
    assert!(
        screen.contains("tcp ESTABLISHED") || screen.contains("… and 2 more"),
        "{screen}"
    );
    update(&mut app, key(KeyCode::Esc));
    update(&mut app, ch('K'));
    let screen = text(&draw(&mut app, 60, 12));
    assert!(
        screen.contains("settings:") && screen.contains("Enter applies"),
        "{screen}"
    );
}
