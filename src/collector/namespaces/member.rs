//! One network namespace katop reads: kept open (its `sock_diag` socket and `sockstat` files,
//! three descriptors, made on a thread inside it) while the descriptor budget allows, else
//! visited: entered, counted, dumped and let go at each of its dumps. Either way no fd to the
//! namespace itself is kept: an open socket already pins it (its inode cannot be reused), and a
//! visit checks the inode again each time.

use std::sync::Arc;
use std::time::Instant;

use super::super::netns::{self, Counts, Found, Handle, InUse};
use super::super::sock_diag::{DiagSocket, DumpKind};
use super::super::wire::DumpSink;
use crate::error::CollectError;
use crate::model::{KernelSettings, NetnsId, RawSock};

/// What katop keeps open of a namespace between polls.
pub struct Open {
    pub diag: DiagSocket,
    pub counts: Counts,
}

pub struct Member {
    pub id: NetnsId,
    /// How to reach it again: a process in it, or a mount of it (the latest discovery's).
    pub handle: Handle,
    /// Kept open, or `None`: visited at each dump.
    pub open: Option<Open>,
    pub settings: KernelSettings,
    /// Whether its sysctls are due to be read (visited members read them on a visit).
    pub settings_due: bool,
    pub name: Arc<str>,
    pub container: Option<Arc<str>>,
    pub host: bool,
    /// Its sockets as last dumped, and its socket counts then.
    pub socks: Vec<RawSock>,
    pub dumped_at: Option<Instant>,
    pub counted: Option<InUse>,
    /// Why its latest dump failed, if it did.
    pub failure: Option<CollectError>,
}

impl Member {
    /// A namespace to be visited: nothing opened yet (its first dump enters it).
    pub fn visited(f: &Found, name: Arc<str>, container: Option<Arc<str>>, host: bool) -> Self {
        Member {
            id: f.id,
            handle: f.handle.clone(),
            open: None,
            settings: KernelSettings::default(),
            settings_due: true,
            name,
            container,
            host,
            socks: Vec::new(),
            dumped_at: None,
            counted: None,
            failure: None,
        }
    }

    /// Opens its `sock_diag` socket and `sockstat` files inside it, and reads its sysctls.
    pub fn open(&mut self) -> Result<(), CollectError> {
        let fd = netns::hold(self.id, &self.handle)?;
        let (open, settings) = netns::inside(&fd, self.id, move || {
            let mut diag = DiagSocket::open()?;
            diag.release_buffer();
            Ok((
                Open {
                    diag,
                    counts: Counts::open(),
                },
                super::super::sysctl::read(),
            ))
        })?;
        self.open = Some(open);
        self.settings = settings;
        self.settings_due = false;
        Ok(())
    }

    /// Its socket counts now, when it is kept open.
    pub fn count(&mut self) -> Option<InUse> {
        self.open.as_mut().map(|o| o.counts.read())
    }

    /// Dumps it (skipping protocols it has no socket of): through what is open, or in a visit.
    pub fn dump(&mut self, dumps: &[DumpKind]) -> Result<(), CollectError> {
        let id = self.id;
        let result = match &mut self.open {
            Some(open) => {
                let mut socks = std::mem::take(&mut self.socks);
                socks.clear();
                let in_use = open.counts.read();
                self.counted = Some(in_use);
                let mut sink = DumpSink {
                    socks,
                    ..DumpSink::default()
                };
                let r = dump_counted(&mut open.diag, in_use, dumps, id, &mut sink);
                open.diag.release_buffer();
                self.socks = sink.socks;
                r
            }
            // A failed visit keeps the sockets last read (its warning says they are old).
            None => self.visit(Vec::with_capacity(self.socks.len()), dumps),
        };
        self.dumped_at = Some(Instant::now());
        result
    }

    /// Enters it (on the namespace thread), counts, dumps there and closes everything: the
    /// namespace costs no descriptor between its dumps.
    fn visit(&mut self, socks: Vec<RawSock>, dumps: &[DumpKind]) -> Result<(), CollectError> {
        let fd = netns::hold(self.id, &self.handle)?;
        let id = self.id;
        let with_settings = self.settings_due;
        let dumps = dumps.to_vec();
        let (socks, in_use, settings) = netns::inside(&fd, id, move || {
            let mut diag = DiagSocket::open()?;
            let in_use = Counts::open().read();
            let mut sink = DumpSink {
                socks,
                ..DumpSink::default()
            };
            dump_counted(&mut diag, in_use, &dumps, id, &mut sink)?;
            Ok((
                sink.socks,
                in_use,
                with_settings.then(super::super::sysctl::read),
            ))
        })?;
        self.socks = socks;
        self.counted = Some(in_use);
        if let Some(s) = settings {
            self.settings = s;
            self.settings_due = false;
        }
        Ok(())
    }

    /// Reads its sysctls again: now when kept open, at its next visit otherwise.
    pub fn refresh_settings(&mut self) {
        if self.open.is_none() {
            self.settings_due = true;
            return;
        }
        let Ok(fd) = netns::hold(self.id, &self.handle) else {
            return;
        };
        if let Some(s) = netns::read_settings(&fd, self.id) {
            self.settings = s;
        }
    }
}

fn dump_counted(
    diag: &mut DiagSocket,
    in_use: InUse,
    dumps: &[DumpKind],
    id: NetnsId,
    sink: &mut DumpSink,
) -> Result<(), CollectError> {
    let kinds: Vec<DumpKind> = dumps
        .iter()
        .copied()
        .filter(|k| in_use.may_have(k.proto, k.family))
        .collect();
    diag.dump_each(&kinds, id, sink)
}
