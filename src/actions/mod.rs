//! Actions that change sockets: killing them (and, later, setting their options). Everything
//! here acts on exactly the socket chosen, identified by its cookie, and every attempt is
//! recorded in the [`log`].
//!
//! The dashboard and `katop kill` share this layer: they build [`Target`]s from what the
//! operator saw, and get one [`Report`] per target back.

pub mod kill;
pub mod log;
pub mod target;

pub use kill::{Killer, Mechanism, Method, Outcome};
pub use log::AuditLog;
pub use target::{Report, Target};
