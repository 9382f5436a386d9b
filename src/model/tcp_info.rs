//! The part of the kernel's `struct tcp_info` (`include/uapi/linux/tcp.h`) that katop keeps:
//! what its views and rules use, and no more, since a copy lives in every socket (100k+).
//!
//! Older kernels send a shorter struct and newer ones a longer one; a field that lies past the
//! length the kernel sent is absent (`None`), never zero and never an error. The offsets are the
//! uapi layout, which only ever grows at the end.

/// A little-endian-or-native integer read at an offset, `None` past the end of the buffer.
trait ReadAt: Sized + Copy + Default {
    fn read_at(buf: &[u8], offset: usize) -> Option<Self>;
}

macro_rules! read_at {
    ($($ty:ty),*) => {$(
        impl ReadAt for $ty {
            fn read_at(buf: &[u8], offset: usize) -> Option<Self> {
                let bytes = buf.get(offset..offset + std::mem::size_of::<$ty>())?;
                // The kernel writes tcp_info in host byte order.
                Some(<$ty>::from_ne_bytes(bytes.try_into().ok()?))
            }
        }
    )*};
}
read_at!(u8, u16, u32, u64);

macro_rules! tcp_info_fields {
    ($( $(#[doc = $doc:literal])* $name:ident: $ty:ty = $offset:literal, )*) => {
        /// Selected `tcp_info` fields with the length the kernel sent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct TcpInfo {
            /// Bytes of `struct tcp_info` the kernel sent; fields past it are absent. Never
            /// zero, so `Option<TcpInfo>` costs no tag (room for the socket's options).
            len: std::num::NonZeroU16,
            $( $name: $ty, )*
        }

        impl TcpInfo {
            /// Reads the fields present in an `INET_DIAG_INFO` payload of any length.
            pub fn from_kernel_bytes(buf: &[u8]) -> Self {
                TcpInfo {
                    len: std::num::NonZeroU16::new(u16::try_from(buf.len()).unwrap_or(u16::MAX))
                        .unwrap_or(std::num::NonZeroU16::MIN),
                    $( $name: <$ty as ReadAt>::read_at(buf, $offset).unwrap_or_default(), )*
                }
            }

            $(
                $(#[doc = $doc])*
                #[allow(clippy::int_plus_one)] // `>= offset + size` reads as the bounds check it is
                pub fn $name(&self) -> Option<$ty> {
                    (usize::from(self.len.get()) >= $offset + std::mem::size_of::<$ty>()).then_some(self.$name)
                }
            )*

            /// The fields back in the kernel's layout, as long as the kernel sent (what the store
            /// keeps; [`Self::from_kernel_bytes`] reads it back).
            pub fn to_kernel_bytes(&self) -> Vec<u8> {
                let mut buf = vec![0u8; usize::from(self.len.get())];
                $(
                    let bytes = self.$name.to_ne_bytes();
                    if let Some(dst) = buf.get_mut($offset..$offset + bytes.len()) {
                        dst.copy_from_slice(&bytes);
                    }
                )*
                buf
            }

            /// The length the kernel sent, then every field in order: the store's compact form.
            pub fn to_values(&self) -> Vec<u64> {
                vec![u64::from(self.len.get()), $( u64::from(self.$name), )*]
            }

            /// [`Self::to_values`] read back; `None` for a value out of its field's range or a
            /// list too short.
            pub fn from_values(v: &[u64]) -> Option<Self> {
                let mut values = v.iter();
                let len = u16::try_from(*values.next()?).ok()?;
                let mut buf = vec![0u8; usize::from(len)];
                $(
                    let bytes = <$ty>::try_from(*values.next()?).ok()?.to_ne_bytes();
                    if let Some(dst) = buf.get_mut($offset..$offset + bytes.len()) {
                        dst.copy_from_slice(&bytes);
                    }
                )*
                (len > 0).then(|| Self::from_kernel_bytes(&buf))
            }

            /// Every field by its kernel name (without `tcpi_`), for detail views.
            pub fn fields(&self) -> Vec<(&'static str, Option<u64>)> {
                vec![$( (stringify!($name), self.$name().map(u64::from)), )*]
            }
        }
    };
}

impl TcpInfo {
    /// Its "ms ago" clocks, in the order of [`TcpInfo::to_values`]: last data sent, last data
    /// received, last ACK received.
    pub fn clocks(&self) -> [u32; 3] {
        [self.last_data_sent, self.last_data_recv, self.last_ack_recv]
    }

    /// The same with its clocks at zero (what changes when a socket does more than age).
    #[must_use]
    pub fn without_clocks(mut self) -> TcpInfo {
        (self.last_data_sent, self.last_data_recv, self.last_ack_recv) = (0, 0, 0);
        self
    }

    /// The same socket `ms` later with no packet meanwhile: its "ms ago" clocks advanced.
    #[must_use]
    pub fn aged(mut self, ms: u32) -> TcpInfo {
        self.last_data_sent = self.last_data_sent.saturating_add(ms);
        self.last_data_recv = self.last_data_recv.saturating_add(ms);
        self.last_ack_recv = self.last_ack_recv.saturating_add(ms);
        self
    }
}

tcp_info_fields! {
    /// Consecutive retransmission timeouts without progress (`tcpi_retransmits`).
    retransmits: u8 = 2,
    /// Unanswered keepalive or zero-window probes (`icsk_probes_out`).
    probes: u8 = 3,
    /// Exponential backoff of the retransmission timer.
    backoff: u8 = 4,
    /// Congestion-avoidance state (0 open … 4 loss).
    ca_state: u8 = 1,
    /// The current retransmission timeout, µs (backed off while retransmitting).
    rto: u32 = 8,
    /// ms since we last sent data.
    last_data_sent: u32 = 44,
    /// ms since we last received data.
    last_data_recv: u32 = 52,
    /// ms since we last received an ACK (any segment from the peer, keepalive answers too).
    last_ack_recv: u32 = 56,
    /// Smoothed round-trip time, µs.
    rtt: u32 = 68,
    /// Round-trip time variance, µs.
    rttvar: u32 = 72,
    /// Segments retransmitted over the connection's life.
    total_retrans: u32 = 100,
    /// Bytes we sent that the peer acknowledged.
    bytes_acked: u64 = 120,
    /// Bytes received from the peer.
    bytes_received: u64 = 128,
    bytes_sent: u64 = 200,
    /// RTO recoveries over the connection's life (Linux 6.7+).
    total_rto_recoveries: u16 = 242,
    /// ms spent in RTO recoveries, the unfinished one included (Linux 6.7+).
    total_rto_time: u32 = 244,
}

impl TcpInfo {
    /// Idle time: how long since data moved in either direction (the smaller of the two).
    pub fn idle_ms(&self) -> Option<u32> {
        Some(self.last_data_sent()?.min(self.last_data_recv()?))
    }

    /// How long since the peer last sent anything (data or ACK), as the keepalive timer
    /// measures it (`keepalive_time_elapsed`: the smaller of the two).
    pub fn silent_ms(&self) -> Option<u32> {
        Some(self.last_data_recv()?.min(self.last_ack_recv()?))
    }

    /// ms since the first retransmission of the RTO recovery under way, when the kernel says
    /// so exactly: it is the connection's only one (`tcpi_total_rto_time`, Linux 6.7+).
    pub fn rto_recovery_ms(&self) -> Option<u32> {
        (self.total_rto_recoveries()? == 1).then_some(self.total_rto_time()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_bytes(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[3] = 2; // probes
        b[44..48].copy_from_slice(&1500u32.to_ne_bytes()); // last_data_sent
        b[52..56].copy_from_slice(&900u32.to_ne_bytes()); // last_data_recv
        b[68..72].copy_from_slice(&250u32.to_ne_bytes()); // rtt
        if len >= 136 {
            b[120..128].copy_from_slice(&12_345u64.to_ne_bytes()); // bytes_acked
            b[128..136].copy_from_slice(&678u64.to_ne_bytes()); // bytes_received
        }
        b
    }

    #[test]
    fn fields_go_back_to_the_kernels_layout() {
        let i = TcpInfo::from_kernel_bytes(&info_bytes(248));
        assert_eq!(TcpInfo::from_kernel_bytes(&i.to_kernel_bytes()), i);
        let short = TcpInfo::from_kernel_bytes(&info_bytes(104));
        assert_eq!(short.to_kernel_bytes().len(), 104);
        assert_eq!(TcpInfo::from_kernel_bytes(&short.to_kernel_bytes()), short);
        assert_eq!(i.aged(100).idle_ms(), Some(1000));
    }

    #[test]
    fn the_compact_form_reads_back_and_refuses_what_no_field_holds() {
        for len in [248, 104] {
            let i = TcpInfo::from_kernel_bytes(&info_bytes(len));
            assert_eq!(TcpInfo::from_values(&i.to_values()), Some(i));
        }
        let mut v = TcpInfo::from_kernel_bytes(&info_bytes(248)).to_values();
        v[2] = 300; // probes is a u8
        assert_eq!(TcpInfo::from_values(&v), None);
        assert_eq!(TcpInfo::from_values(&v[..5]), None);
        assert_eq!(TcpInfo::from_values(&[]), None);
    }

    #[test]
    fn reads_fields_at_uapi_offsets() {
        let i = TcpInfo::from_kernel_bytes(&info_bytes(248));
        assert_eq!(i.probes(), Some(2));
        assert_eq!(i.rtt(), Some(250));
        assert_eq!(i.bytes_acked(), Some(12_345));
        assert_eq!(i.bytes_received(), Some(678));
        assert_eq!(i.idle_ms(), Some(900));
        assert_eq!(i.bytes_sent(), Some(0));
    }

    #[test]
    fn rto_recovery_time_is_exact_only_for_a_first_recovery() {
        let mut b = info_bytes(248);
        b[242..244].copy_from_slice(&1u16.to_ne_bytes());
        b[244..248].copy_from_slice(&4321u32.to_ne_bytes());
        assert_eq!(TcpInfo::from_kernel_bytes(&b).rto_recovery_ms(), Some(4321));
        b[242..244].copy_from_slice(&2u16.to_ne_bytes());
        assert_eq!(TcpInfo::from_kernel_bytes(&b).rto_recovery_ms(), None);
        // Before Linux 6.7 the struct ends at 240 bytes.
        assert_eq!(
            TcpInfo::from_kernel_bytes(&b[..240]).rto_recovery_ms(),
            None
        );
    }

    #[test]
    fn fields_past_a_short_struct_are_absent() {
        // A 104-byte tcp_info (kernels before 4.1) has no byte counters.
        let i = TcpInfo::from_kernel_bytes(&info_bytes(104));
        assert_eq!(i.total_retrans(), Some(0));
        assert_eq!(i.bytes_acked(), None);
        assert_eq!(i.bytes_received(), None);
        assert_eq!(i.bytes_sent(), None);
        // Even an empty payload is data, not a panic.
        let empty = TcpInfo::from_kernel_bytes(&[]);
        assert_eq!(empty.rtt(), None);
        assert_eq!(empty.idle_ms(), None);
    }
}
