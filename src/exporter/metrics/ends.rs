//! `katop_tcp_connections_closed_total{cause,cause_source}`: connection ends by cause, counted
//! from the exporter's start. Every cause of the source in use is shown from the first scrape
//! (at 0), so `rate()` and `increase()` see a surge's first ends.

use std::collections::BTreeMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::model::ends::join::Ended;
use crate::model::ends::{Cause, CauseSource};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    cause: String,
    cause_source: String,
}

/// Ends counted so far.
#[derive(Debug, Default)]
pub struct EndCounts {
    counts: BTreeMap<(Cause, &'static str), u64>,
    /// The source whose causes are shown at 0 before any end.
    pub source: Option<CauseSource>,
}

impl EndCounts {
    pub fn add(&mut self, ended: &[Ended]) {
        for e in ended {
            *self.counts.entry((e.cause, e.source.name())).or_default() += 1;
        }
    }

    pub fn encode(&self, reg: &mut Registry) {
        let family = Family::<EndLabels, Counter>::default();
        let zeros = self
            .source
            .into_iter()
            .flat_map(|s| Cause::ALL.map(|c| ((c, s.name()), 0)));
        let mut all: BTreeMap<(Cause, &str), u64> = zeros.collect();
        all.extend(self.counts.iter().map(|(k, v)| (*k, *v)));
        for ((cause, source), n) in all {
            family
                .get_or_create(&EndLabels {
                    cause: cause.name().into(),
                    cause_source: source.into(),
                })
                .inc_by(n);
        }
        reg.register(
            "katop_tcp_connections_closed",
            "TCP connections that ended, by why (cause_source: tracepoint, as the kernel said; inferred, from the last poll)",
            family,
        );
    }
}
