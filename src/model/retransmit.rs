//! When the kernel gives up on a connection whose data goes unacknowledged, modelled on
//! `net/ipv4/tcp_timer.c` for a peer that answers nothing from now on:
//!
//! - `tcp_retransmit_timer` retransmits at each RTO firing and doubles the RTO up to
//!   `tcp_rto_max_ms` (120 s); the first retransmission stamps `retrans_stamp`.
//! - `tcp_write_timeout` → `retransmits_timed_out` gives up at the first firing at which the
//!   time since `retrans_stamp` reaches `TCP_USER_TIMEOUT`, or without one the time
//!   `tcp_model_timeout` gives for `tcp_retries2` retransmissions backed off from
//!   `TCP_RTO_MIN` (924.6 s for 15). The clock counts from the first retransmission, not from
//!   the peer's last packet.
//! - `tcp_clamp_rto_to_user_timeout` shortens the last wait so the timer fires exactly when
//!   the user timeout runs out.
//!
//! How long ago the first retransmission was is the one input the kernel does not report
//! directly: `tcpi_total_rto_time` (Linux 6.7+) gives it exactly when this is the
//! connection's only RTO recovery; otherwise it is estimated from the retransmit count and the
//! current RTO, and said to be an estimate.

/// `TCP_RTO_MIN`, ms: the base of `tcp_model_timeout`.
pub const RTO_MIN_MS: u64 = 200;
/// `TCP_RTO_MAX`, ms: the default of `net.ipv4.tcp_rto_max_ms`.
pub const RTO_MAX_MS: u64 = 120_000;

/// `tcp_model_timeout(retries2, TCP_RTO_MIN)`: how long after the first retransmission the
/// kernel stops retransmitting: exponential backoff from `TCP_RTO_MIN` up to the RTO cap,
/// then linear. 924.6 s for the default 15 and 120 s cap.
pub fn give_up_ms(retries2: u32, rto_max_ms: u64) -> u64 {
    let rto_max_ms = rto_max_ms.max(RTO_MIN_MS);
    let thresh = (rto_max_ms / RTO_MIN_MS).ilog2();
    if retries2 <= thresh {
        ((2u64 << retries2) - 1) * RTO_MIN_MS
    } else {
        ((2u64 << thresh) - 1) * RTO_MIN_MS + u64::from(retries2 - thresh) * rto_max_ms
    }
}

/// A connection with a retransmission timer armed, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// ms until the armed timer fires.
    pub expires_ms: u64,
    /// Retransmission timeouts so far in this recovery (`icsk_retransmits`).
    pub retransmits: u32,
    /// The current RTO (`tcpi_rto`), µs: what the armed timer was set to.
    pub rto_us: u64,
    /// ms since the first retransmission, when the kernel says so exactly.
    pub since_first_ms: Option<u64>,
    /// Smoothed RTT and its variance (µs), to estimate the first RTO when the current one
    /// has reached the cap.
    pub rtt_us: u64,
    pub rttvar_us: u64,
}

/// When the kernel would abort, and whether the input it rests on was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abort {
    pub in_ms: u64,
    pub estimated: bool,
}

impl InFlight {
    /// ms from now until the kernel aborts the connection, if the peer answers nothing.
    pub fn abort(&self, user_timeout_ms: u64, retries2: u32, rto_max_ms: u64) -> Abort {
        let rto_max_ms = rto_max_ms.max(RTO_MIN_MS);
        let rto_ms = (self.rto_us / 1000).clamp(1, rto_max_ms);
        let expires = self.expires_ms;
        if self.retransmits == 0 {
            // The armed timer makes the first retransmission, which starts the clock.
            let in_ms = if user_timeout_ms > 0 {
                expires.saturating_add(user_timeout_ms)
            } else {
                let limit = give_up_ms(retries2, rto_max_ms);
                expires.saturating_add(backoff_until(rto_ms, rto_max_ms, limit))
            };
            return Abort {
                in_ms,
                estimated: false,
            };
        }
        let (since, estimated) = match self.since_first_ms {
            Some(ms) => (ms, false),
            None => (self.estimate_since_first(rto_ms, rto_max_ms), true),
        };
        let in_ms = if user_timeout_ms > 0 {
            // The clamped timer fires when the user timeout runs out; if it already has, the
            // armed timer is the last.
            expires.max(user_timeout_ms.saturating_sub(since))
        } else {
            let limit = give_up_ms(retries2, rto_max_ms);
            let at_next = since.saturating_add(expires);
            if at_next >= limit {
                expires
            } else {
                expires.saturating_add(backoff_until(rto_ms, rto_max_ms, limit - at_next))
            }
        };
        Abort { in_ms, estimated }
    }

    /// ms since the first retransmission, from the retransmissions made and the RTO: the
    /// waits between them doubled from the first RTO (`rto >> n` unless the cap hid it, then
    /// an estimate from the RTT), and the current wait has run `rto - expires`.
    fn estimate_since_first(&self, rto_ms: u64, rto_max_ms: u64) -> u64 {
        let n = self.retransmits;
        let first = if rto_ms < rto_max_ms {
            (self.rto_us >> n.min(63)) / 1000
        } else {
            self.rtt_us
                .saturating_add(self.rttvar_us.saturating_mul(4).max(RTO_MIN_MS * 1000))
                / 1000
        }
        .max(1);
        // The doubled waits until the cap, then capped ones.
        let mut waits = 0u64;
        let mut k = 1;
        while k < n {
            let wait = first.checked_shl(k).unwrap_or(u64::MAX).min(rto_max_ms);
            if wait == rto_max_ms {
                waits = waits.saturating_add(u64::from(n - k).saturating_mul(rto_max_ms));
                break;
            }
            waits = waits.saturating_add(wait);
            k += 1;
        }
        waits.saturating_add(rto_ms.saturating_sub(self.expires_ms))
    }
}

/// After a firing with RTO `rto_ms`, the kernel doubles the RTO (up to the cap) before each
/// next wait: the time from that firing to the first later one at which `remaining` ms have
/// passed.
fn backoff_until(rto_ms: u64, rto_max_ms: u64, remaining: u64) -> u64 {
    let mut wait = rto_ms.max(1);
    let mut total = 0u64;
    // Doubling reaches the cap within 64 steps; after that, whole capped waits.
    for _ in 0..64 {
        wait = wait.saturating_mul(2).min(rto_max_ms);
        total = total.saturating_add(wait);
        if total >= remaining {
            return total;
        }
        if wait == rto_max_ms {
            break;
        }
    }
    let left = remaining - total;
    total.saturating_add(left.div_ceil(rto_max_ms).saturating_mul(rto_max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(expires_ms: u64, retransmits: u32, rto_ms: u64) -> InFlight {
        InFlight {
            expires_ms,
            retransmits,
            rto_us: rto_ms * 1000,
            since_first_ms: None,
            rtt_us: 100,
            rttvar_us: 50,
        }
    }

    #[test]
    fn model_timeout_matches_the_kernels() {
        assert_eq!(give_up_ms(15, RTO_MAX_MS), 924_600);
        assert_eq!(give_up_ms(8, RTO_MAX_MS), 102_200);
        assert_eq!(give_up_ms(0, RTO_MAX_MS), 200);
        // A lower cap makes the linear part start sooner.
        assert_eq!(give_up_ms(15, 10_000), 63 * 200 + 10 * 10_000);
    }

    #[test]
    fn user_timeout_counts_from_the_first_retransmission() {
        // First RTO pending in 200 ms: the clock starts then, 8 s more.
        let a = in_flight(200, 0, 200).abort(8000, 15, RTO_MAX_MS);
        assert_eq!(
            a,
            Abort {
                in_ms: 8200,
                estimated: false
            }
        );
        // Three retransmissions, 1.4 s since the first (exact): 6.6 s left.
        let mut f = in_flight(1000, 3, 1600);
        f.since_first_ms = Some(1400);
        assert_eq!(f.abort(8000, 15, RTO_MAX_MS).in_ms, 6600);
        // Estimated: waits of 400 and 800 ms, and 600 of the current 1600: 1.8 s.
        let a = in_flight(1000, 3, 1600).abort(8000, 15, RTO_MAX_MS);
        assert_eq!(
            a,
            Abort {
                in_ms: 6200,
                estimated: true
            }
        );
        // At the cap the first RTO comes from the RTT (200 ms here): 400 … 102.4 s doubled,
        // then capped 120 s waits, and 20 s of the current one.
        let f = in_flight(100_000, 12, 120_000);
        assert_eq!(
            f.estimate_since_first(120_000, RTO_MAX_MS),
            204_400 + 2 * 120_000 + 20_000
        );
        // Past the user timeout: the armed (clamped) timer is the last.
        let mut f = in_flight(300, 9, 60_000);
        f.since_first_ms = Some(9000);
        assert_eq!(f.abort(8000, 15, RTO_MAX_MS).in_ms, 300);
    }

    #[test]
    fn retries2_gives_up_at_the_first_firing_past_the_model_timeout() {
        // retries2 4: 6.2 s. RTO 200 ms: retransmissions after 0.4, 1.2, 2.8, 6.0 s (6.0 <
        // 6.2), then 12.4 s: that firing aborts.
        let a = in_flight(200, 0, 200).abort(0, 4, RTO_MAX_MS);
        assert_eq!(a.in_ms, 200 + 12_400);
        // RTO 210 ms: the fourth lands at 6.3 s, past 6.2 s.
        let a = in_flight(210, 0, 210).abort(0, 4, RTO_MAX_MS);
        assert_eq!(a.in_ms, 210 + 6300);
        // Default 15: capped waits of 120 s after the doubling.
        let a = in_flight(200, 0, 200).abort(0, 15, RTO_MAX_MS);
        assert_eq!(a.in_ms, 200 + 204_400 + 6 * 120_000 + 120_000);
        // Mid-way, exact clock at 2.8 s, next firing in 3.2 s: 6.0 < 6.2, so 6.4 s more.
        let mut f = in_flight(3200, 3, 3200);
        f.since_first_ms = Some(2800);
        assert_eq!(f.abort(0, 4, RTO_MAX_MS).in_ms, 3200 + 6400);
    }

    #[test]
    fn huge_values_neither_overflow_nor_loop() {
        let f = InFlight {
            expires_ms: u64::from(u32::MAX),
            retransmits: u32::MAX,
            rto_us: u64::MAX,
            since_first_ms: None,
            rtt_us: u64::from(u32::MAX),
            rttvar_us: u64::from(u32::MAX),
        };
        let _ = f.abort(u64::from(u32::MAX), u32::MAX, RTO_MAX_MS);
        let _ = f.abort(0, u32::MAX, 0);
        let _ = in_flight(0, 0, 0).abort(0, u32::MAX, RTO_MAX_MS);
    }
}
