//! Marks, and the dialogs before an action: which sockets, asked first, and what came of it.
//! Keys an action does not apply to are not offered (the footer leaves them out) and say why
//! when pressed, instead of confirming and refusing afterwards.

use crossterm::event::{KeyCode, KeyEvent};
use rustc_hash::FxHashSet;

use super::{App, Editor, Effect, Line, Mode, View};
use crate::actions::target::summary;
use crate::actions::{Change, Report, Target};
use crate::model::keepalive::middlebox_for;
use crate::model::{Endpoint, Proto, SockEntry, SockKey, SockState};

/// The sockets an action takes: the marked ones (in table order, then those the filter now
/// hides), else the selected one; and where the hidden ones start.
pub(super) fn chosen(app: &App) -> (Vec<Target>, usize) {
    if app.marked.is_empty() {
        // The highlighted row: only a listed socket is ever chosen this way.
        let one: Vec<Target> = app
            .selected
            .filter(|_| app.selected_idx.is_some())
            .and_then(|k| app.table.get(&k))
            .map(|e| vec![Target::of(&e)])
            .unwrap_or_default();
        let n = one.len();
        return (one, n);
    }
    let mut shown = Vec::with_capacity(app.marked.len());
    let mut listed = FxHashSet::default();
    for &l in &app.lines {
        if let Line::Sock(i) = l {
            let e = app.table.entry(i as usize);
            if app.marked.contains(&e.key()) {
                listed.insert(e.key());
                shown.push(Target::of(&e));
            }
        }
    }
    // Marked, then hidden by a later filter: still marked, so still listed (and killed).
    let mut hidden: Vec<Target> = app
        .marked
        .iter()
        .filter(|k| !listed.contains(k))
        .filter_map(|k| app.table.get(k))
        .map(|e| Target::of(&e))
        .collect();
    hidden.sort_by_key(|t| t.cookie);
    let first_hidden = shown.len();
    shown.extend(hidden);
    (shown, first_hidden)
}

impl App {
    /// Why each of `targets` would be refused `action`, foreseen (whose socket it is, the
    /// model's guard, a missing privilege): what the dialog says before anyone confirms.
    pub fn refused(&self, action: crate::actions::Action, targets: &[Target]) -> Vec<String> {
        let method = crate::actions::Method::Auto;
        targets
            .iter()
            .filter_map(|t| t.foreseen_refusal(&self.scope, &self.powers, action, method))
            .collect()
    }

    /// With every one of `targets` refused: no dialog, the reason in the status line.
    fn all_refused(
        &mut self,
        key: &str,
        action: crate::actions::Action,
        targets: &[Target],
    ) -> bool {
        let refused = self.refused(action, targets);
        if refused.len() < targets.len() {
            return false;
        }
        if let Some(why) = refused.first() {
            self.note(format!("{key}: katop would be refused: {why}"));
        }
        true
    }
}

/// Whether acting is allowed; says why not.
pub(super) fn may_act(app: &mut App, key: &str) -> bool {
    if app.read_only {
        app.note(format!(
            "read-only: katop was started with --read-only, so {key} changes nothing"
        ));
    }
    !app.read_only
}

/// Whether `k` applies: `SOCK_DESTROY` takes TCP and UDP sockets, never Unix ones.
pub fn killable(e: &SockEntry) -> bool {
    e.sock.proto != Proto::Unix
}

/// Whether `K` applies: keepalive probes live connections, so ESTABLISHED TCP only.
pub fn tunable(e: &SockEntry) -> bool {
    e.sock.proto == Proto::Tcp && e.sock.state == SockState::Established
}

/// The chosen sockets an action applies to; the rest are left out and counted.
/// The chosen sockets `ok` takes, how many it left out, and how many of those it takes the
/// filter hides (marked earlier).
fn applicable(app: &App, ok: fn(&Target) -> bool) -> (Vec<Target>, usize, usize) {
    let (all, first_hidden) = chosen(app);
    let n = all.len();
    let hidden = all[first_hidden..].iter().filter(|t| ok(t)).count();
    let kept: Vec<Target> = all.into_iter().filter(ok).collect();
    let left_out = n - kept.len();
    (kept, left_out, hidden)
}

/// `K`: offer to turn keepalive on (or change its timers) on the chosen sockets.
pub(super) fn ask_keepalive(app: &mut App) {
    if !may_act(app, "K") {
        return;
    }
    let (targets, left_out, hidden) = applicable(app, |t| {
        t.proto == Proto::Tcp && t.state == SockState::Established
    });
    if targets.is_empty() {
        app.note(if left_out > 0 {
            "K: keepalive applies to ESTABLISHED TCP connections only; this is not one".into()
        } else {
            "nothing chosen: select a socket or mark some with Space".into()
        });
        return;
    }
    if left_out > 0 {
        app.note(format!(
            "{left_out} marked socket(s) left out: keepalive applies to ESTABLISHED TCP only"
        ));
    }
    let keepalive = crate::actions::Action::Keepalive(Change::default());
    if app.all_refused("K", keepalive, &targets) {
        return;
    }
    // Probe well inside the tightest middlebox in front of the first socket's peer.
    let mut change = Change::default();
    let first = targets
        .first()
        .and_then(|t| t.id)
        .map(|id| Endpoint::Inet(id.remote));
    if let Some(m) = first.and_then(|r| middlebox_for(&app.table.ctx.middleboxes, &r)) {
        change.idle_s = change.idle_s.min((m.timeout_s / 2).max(1));
    }
    app.mode = Mode::SetKeepalive {
        targets,
        input: Editor::new(&change.to_string()),
        error: None,
        hidden,
    };
}

/// Keys while the keepalive dialog is open: the settings are edited in place; Enter applies
/// valid ones, Esc cancels.
pub(super) fn keepalive_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let Mode::SetKeepalive {
        targets,
        input,
        error,
        ..
    } = &mut app.mode
    else {
        return vec![];
    };
    match k.code {
        KeyCode::Esc => {
            app.mode = Mode::Browse;
            app.note("keepalive unchanged".into());
        }
        KeyCode::Enter => match input.value().parse::<Change>() {
            Ok(change) => {
                let targets = std::mem::take(targets);
                app.mode = Mode::Browse;
                app.note(format!(
                    "turning keepalive on ({change}) for {} socket(s)…",
                    targets.len()
                ));
                return vec![Effect::SetKeepalive(targets, change)];
            }
            Err(e) => *error = Some(e),
        },
        _ => {
            if input.key(k) == super::edit::Edited::Text {
                *error = None;
            }
        }
    }
    vec![]
}

/// `k` / F9: ask before killing (or say why not).
pub(super) fn ask_kill(app: &mut App) {
    if !may_act(app, "k") {
        return;
    }
    let (targets, left_out, hidden) = applicable(app, |t| t.proto != Proto::Unix);
    if targets.is_empty() {
        app.note(if left_out > 0 {
            "k: a Unix socket cannot be killed (SOCK_DESTROY takes TCP and UDP sockets); its \
             process can be"
                .into()
        } else {
            "nothing to kill: select a socket or mark some with Space".into()
        });
        return;
    }
    if left_out > 0 {
        app.note(format!(
            "{left_out} marked Unix socket(s) left out: SOCK_DESTROY takes TCP and UDP only"
        ));
    }
    if app.all_refused("k", crate::actions::Action::Kill, &targets) {
        return;
    }
    app.mode = Mode::ConfirmKill {
        targets,
        yes: false,
        hidden,
    };
}

/// Keys while the kill confirmation is open; only an explicit yes kills.
pub(super) fn confirm_key(app: &mut App, k: KeyEvent) -> Vec<Effect> {
    let Mode::ConfirmKill { targets, yes, .. } = &mut app.mode else {
        return vec![];
    };
    let go = match k.code {
        KeyCode::Left
        | KeyCode::Right
        | KeyCode::Tab
        | KeyCode::BackTab
        | KeyCode::Char('h' | 'l') => {
            *yes = !*yes;
            return vec![];
        }
        KeyCode::Char('y' | 'Y') => true,
        KeyCode::Enter => *yes,
        KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => false,
        _ => return vec![],
    };
    let targets = std::mem::take(targets);
    app.mode = Mode::Browse;
    if go {
        app.note(format!("killing {} socket(s)…", targets.len()));
        vec![Effect::Kill(targets)]
    } else {
        app.note("kill cancelled: nothing was killed".into());
        vec![]
    }
}

pub(super) fn acted(app: &mut App, reports: Vec<Report>, log_error: Option<String>) {
    let action = reports.first().map_or("kill", |r| r.action.name());
    let mut status = format!("{action}: {} (L shows the log)", summary(&reports));
    if let Some(reason) = reports.iter().find_map(|r| r.outcome.reason()) {
        status = format!("{status} · {reason}");
    }
    if let Some(e) = log_error {
        status = format!("LOG NOT WRITTEN: {e} · {status}");
    }
    app.note(status);
    for r in &reports {
        if r.outcome.is_success() && r.action == crate::actions::Action::Kill {
            app.marked.retain(|k| k.cookie.0 != r.target.cookie);
        }
    }
    app.kills.extend(reports);
}

/// Space: mark or unmark the selected socket, then move down (as htop tags).
pub(super) fn toggle_mark(app: &mut App) {
    if app.view != View::Sockets {
        return;
    }
    if let Some(key) = app.selected.filter(|k| app.table.get(k).is_some()) {
        if !app.marked.remove(&key) {
            app.marked.insert(key);
        }
        app.move_selection(1);
    }
}

/// `a`: mark every listed socket (all the filter matches); when all are marked, unmark them.
pub(super) fn mark_all(app: &mut App) {
    let keys: Vec<SockKey> = app
        .lines
        .iter()
        .filter_map(|&l| match l {
            Line::Sock(i) => Some(app.table.entry(i as usize).key()),
            _ => None,
        })
        .collect();
    if !keys.is_empty() && keys.iter().all(|k| app.marked.contains(k)) {
        for k in &keys {
            app.marked.remove(k);
        }
        app.note(format!("unmarked {} socket(s)", keys.len()));
    } else {
        app.note(format!(
            "marked {} socket(s) (the filter's matches)",
            keys.len()
        ));
        app.marked.extend(keys);
    }
}
