//! Actions that change sockets: killing them, and turning their keepalive on. Everything
//! here acts on exactly the socket chosen, identified by its cookie, and every attempt is
//! recorded in the [`log`].
//!
//! The dashboard and `katop kill` share this layer: they build [`Target`]s from what the
//! operator saw, and get one [`Report`] per target back.

pub mod keepalive;
pub mod kill;
pub mod log;
pub mod powers;
mod reach;
pub mod scope;
pub mod target;

pub use keepalive::{Change, Tuner};
pub use kill::{Killer, Mechanism, Method};
pub use log::AuditLog;
pub use powers::Powers;
pub use scope::Scope;
pub use target::{Action, Outcome, Report, Target};
