//! The QUIC transport settings of a trunk, set explicitly rather than left to quinn's defaults
//! (which allow 100 concurrent streams and size windows for a generic client).
//!
//! A trunk carries many cross-cluster connections at once over one long-lived, possibly
//! long-distance path, so: [`MAX_CONCURRENT_STREAMS`] bidirectional streams per connection (no
//! unidirectional ones), per-stream receive windows of one bandwidth x delay product (one busy
//! connection can fill the path), a connection window of a few of them bounded by
//! [`MAX_CONNECTION_WINDOW`] (memory per peer stays bounded however many streams are open),
//! keepalive PINGs every [`KEEPALIVE_INTERVAL`] so that NAT bindings and an idle trunk stay up,
//! and an idle timeout of [`IDLE_TIMEOUT`] after which a silent peer counts as gone.

use std::sync::Arc;
use std::time::Duration;

use quinn::{IdleTimeout, TransportConfig, VarInt};

/// Concurrent bidirectional streams each side allows the other per connection (quinn's
/// default is 100; each stream is one cross-cluster TCP connection).
pub const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// The path's bandwidth assumed when none is configured: 1 Gbit/s.
pub const DEFAULT_BANDWIDTH_BITS_PER_SECOND: u64 = 1_000_000_000;
/// The round-trip time assumed when none is configured: a cross-region path.
pub const DEFAULT_ROUND_TRIP: Duration = Duration::from_millis(50);
/// The smallest per-stream window, whatever the path: a stream gets going without waiting.
pub const MIN_STREAM_WINDOW: u64 = 256 * 1024;
/// The largest per-stream window.
pub const MAX_STREAM_WINDOW: u64 = 16 * 1024 * 1024;
/// How many streams' windows the connection window holds, before the bound.
pub const CONNECTION_WINDOW_STREAMS: u64 = 4;
/// The bound on the connection's receive window (and send window), the most a peer may have
/// in flight towards us over one connection.
pub const MAX_CONNECTION_WINDOW: u64 = 64 * 1024 * 1024;
/// How often an idle connection is PINGed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a connection may hear nothing before it is closed (several keepalives).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The path a trunk runs over, from which its windows are sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrunkPath {
    pub bandwidth_bits_per_second: u64,
    pub round_trip: Duration,
}

impl Default for TrunkPath {
    fn default() -> Self {
        TrunkPath {
            bandwidth_bits_per_second: DEFAULT_BANDWIDTH_BITS_PER_SECOND,
            round_trip: DEFAULT_ROUND_TRIP,
        }
    }
}

impl TrunkPath {
    /// Bytes in flight on a full path: bandwidth x round trip.
    pub fn bandwidth_delay_product(&self) -> u64 {
        let bits =
            u128::from(self.bandwidth_bits_per_second) * self.round_trip.as_micros() / 1_000_000;
        u64::try_from(bits / 8).unwrap_or(u64::MAX)
    }

    /// One stream's receive window.
    pub fn stream_window(&self) -> u64 {
        self.bandwidth_delay_product()
            .clamp(MIN_STREAM_WINDOW, MAX_STREAM_WINDOW)
    }

    /// The connection's receive (and send) window.
    pub fn connection_window(&self) -> u64 {
        self.stream_window()
            .saturating_mul(CONNECTION_WINDOW_STREAMS)
            .min(MAX_CONNECTION_WINDOW)
    }

    /// quinn's transport configuration for this path, the same on both sides.
    pub fn transport_config(&self) -> Arc<TransportConfig> {
        let mut config = TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(MAX_CONCURRENT_STREAMS))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .stream_receive_window(varint(self.stream_window()))
            .receive_window(varint(self.connection_window()))
            .send_window(self.connection_window())
            .initial_rtt(self.round_trip)
            .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
            .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
            .datagram_receive_buffer_size(None);
        Arc::new(config)
    }
}

/// Windows are bounded far below QUIC's 2^62 limit.
fn varint(value: u64) -> VarInt {
    VarInt::from_u64(value).unwrap_or(VarInt::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_bandwidth_times_delay_within_bounds() {
        let default = TrunkPath::default();
        // 1 Gbit/s x 50 ms = 6.25 MB.
        assert_eq!(default.bandwidth_delay_product(), 6_250_000);
        assert_eq!(default.stream_window(), 6_250_000);
        assert_eq!(default.connection_window(), 25_000_000);

        let lan = TrunkPath {
            bandwidth_bits_per_second: 10_000_000,
            round_trip: Duration::from_millis(1),
        };
        assert_eq!(lan.stream_window(), MIN_STREAM_WINDOW);
        assert_eq!(lan.connection_window(), 4 * MIN_STREAM_WINDOW);

        let huge = TrunkPath {
            bandwidth_bits_per_second: u64::MAX,
            round_trip: Duration::from_secs(10),
        };
        assert_eq!(huge.stream_window(), MAX_STREAM_WINDOW);
        assert_eq!(huge.connection_window(), MAX_CONNECTION_WINDOW);
        let _ = huge.transport_config();
    }

    #[test]
    fn keepalive_fires_well_within_the_idle_timeout() {
        assert!(KEEPALIVE_INTERVAL * 3 <= IDLE_TIMEOUT);
        assert!(u64::from(MAX_CONCURRENT_STREAMS) > 100);
    }
}
