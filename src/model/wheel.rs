//! The kernel's timer wheel, as far as a countdown needs it (`kernel/time/timer.c`). A timer
//! of `delta` jiffies lands in the level whose range holds it: level 0 below 63 jiffies, then
//! each level 8 times coarser (`LVL_START(n) = 63 << 3(n-1)`, granularity `8^n` jiffies), and
//! `calc_index` rounds its expiry up to the next multiple of that granularity, strictly past it
//! (`((expires >> shift) + 1) << shift`: a timer never fires early). A 30 s timer at HZ=250
//! (7,500 jiffies, level 3, 512-jiffy granules) fires up to 2 s late.
//!
//! How late is known exactly when the timer was armed on a granule boundary of its level: a
//! keepalive probe timer re-armed from its own callback, which runs as the wheel reaches a
//! bucket, so on a boundary of that bucket's level (one of a coarser level is also on a finer
//! boundary). Then the lateness is `granule - delta % granule`. A timer armed anywhere else (at
//! the handshake, by `setsockopt`) is late by 1 to `granule` jiffies, evenly likely.

/// Levels of the wheel (`LVL_DEPTH` at HZ > 100; one fewer below, which a countdown never
/// reaches).
const LEVELS: u32 = 9;
const CLK_SHIFT: u32 = 3;
const LVL_SIZE: u64 = 64;

/// How late one timer fires, in ms: at least, at most, and the expected value.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Late {
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl std::ops::Add for Late {
    type Output = Late;
    fn add(self, o: Late) -> Late {
        Late {
            min_ms: self.min_ms + o.min_ms,
            max_ms: self.max_ms + o.max_ms,
            mean_ms: self.mean_ms + o.mean_ms,
        }
    }
}

impl std::ops::Mul<u64> for Late {
    type Output = Late;
    /// `n` timers each this late (in one product, not `n` additions: a count can be a
    /// misconfigured sysctl's billions).
    fn mul(self, n: u64) -> Late {
        let n = n as f64;
        Late {
            min_ms: self.min_ms * n,
            max_ms: self.max_ms * n,
            mean_ms: self.mean_ms * n,
        }
    }
}

/// The wheel at `hz` ticks a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wheel {
    pub hz: u32,
}

impl Wheel {
    /// A timer of `delta_ms` in jiffies (keepalive times are whole seconds × HZ).
    fn jiffies(self, delta_ms: u64) -> u64 {
        (delta_ms * u64::from(self.hz)).div_ceil(1000)
    }

    fn ms(self, jiffies: u64) -> f64 {
        jiffies as f64 * 1000.0 / f64::from(self.hz)
    }

    /// The level a timer of `delta` jiffies lands in (`calc_wheel_index`).
    pub fn level(self, delta: u64) -> u32 {
        (1..LEVELS)
            .find(|&n| delta < (LVL_SIZE - 1) << (CLK_SHIFT * (n - 1)))
            .map_or(LEVELS - 1, |n| n - 1)
    }

    /// The granule of level `lvl`, in jiffies.
    fn granule(lvl: u32) -> u64 {
        1 << (CLK_SHIFT * lvl)
    }

    /// How late a timer of `delta_ms` fires: exactly when it was armed on a boundary of its
    /// level (`aligned`), else anywhere from 1 jiffy to a granule.
    pub fn late(self, delta_ms: u64, aligned: bool) -> Late {
        let delta = self.jiffies(delta_ms);
        let g = Self::granule(self.level(delta));
        if aligned {
            let exact = self.ms(g - delta % g);
            Late {
                min_ms: exact,
                max_ms: exact,
                mean_ms: exact,
            }
        } else {
            Late {
                min_ms: self.ms(1),
                max_ms: self.ms(g),
                mean_ms: self.ms(g + 1) / 2.0,
            }
        }
    }

    /// Whether a timer of `delta_ms` armed from the callback of one of `prev_ms` starts on a
    /// boundary of its own level (the previous one's level is at least as coarse).
    pub fn aligned_after(self, prev_ms: u64, delta_ms: u64) -> bool {
        self.level(self.jiffies(prev_ms)) >= self.level(self.jiffies(delta_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ250: Wheel = Wheel { hz: 250 };

    #[test]
    fn levels_and_granules_as_the_kernel_has_them() {
        assert_eq!(HZ250.level(62), 0);
        assert_eq!(HZ250.level(63), 1);
        assert_eq!(HZ250.level(503), 1);
        assert_eq!(HZ250.level(504), 2);
        assert_eq!(HZ250.level(4031), 2);
        assert_eq!(HZ250.level(4032), 3);
        // 30 s at HZ=250: 7,500 jiffies, level 3, 512-jiffy (2.048 s) granules.
        assert_eq!(HZ250.level(7500), 3);
        assert_eq!(Wheel::granule(3), 512);
    }

    #[test]
    fn a_timer_rearmed_from_its_callback_is_late_by_a_known_amount() {
        // 30 s: 7,500 % 512 = 332, so 180 jiffies (0.72 s) late, every time.
        let l = HZ250.late(30_000, true);
        assert!(
            (l.mean_ms - 720.0).abs() < 0.01 && (l.min_ms - l.max_ms).abs() < 1e-9,
            "{l:?}"
        );
        // 41 s: 10,250 jiffies, 502 late (2.008 s).
        assert!((HZ250.late(41_000, true).mean_ms - 2008.0).abs() < 0.01);
        // A multiple of the granule is a whole granule late (the expiry is strictly past).
        assert!((HZ250.late(2048, true).mean_ms - 256.0).abs() < 0.01);
        // Armed anywhere: 1 jiffy to a granule.
        let u = HZ250.late(30_000, false);
        assert_eq!((u.min_ms, u.max_ms), (4.0, 2048.0));
        assert!(HZ250.aligned_after(30_000, 30_000));
        assert!(!HZ250.aligned_after(1000, 30_000));
    }
}
