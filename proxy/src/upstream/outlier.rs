//! Outlier detection for one endpoint: counting errors in a row and deciding when it is
//! ejected and for how long. The cluster decides whether an ejection is allowed (how many are
//! out already) and sweeps ejections that have run their course.

use std::time::{Duration, Instant};

use crate::snapshot::OutlierDetection;

/// How a request to an endpoint ended, as outlier detection counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response below 500 (or a 5xx that is not counted, none today).
    Success,
    /// A 5xx response; `gateway` for 502, 503 and 504.
    ServerError { gateway: bool },
    /// Connecting failed, or the connection was reset before a response: counts as a gateway
    /// error, as Envoy counts local-origin failures when they are not split out.
    ConnectFailure,
}

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub(crate) struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Set while ejected.
    ejected_until: Option<Instant>,
    /// Ejections so far; each lasts `base_ejection_time` times this.
    times_ejected: u32,
}

impl OutlierState {
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Counts an outcome; true when the endpoint has now reached an ejection threshold.
    pub(crate) fn record(&mut self, outcome: Outcome, config: &OutlierDetection) -> bool {
        match outcome {
            Outcome::Success => {
                self.consecutive_5xx = 0;
                self.consecutive_gateway = 0;
                return false;
            }
            Outcome::ServerError { gateway: true } | Outcome::ConnectFailure => {
                self.consecutive_5xx += 1;
                self.consecutive_gateway += 1;
            }
            Outcome::ServerError { gateway: false } => {
                self.consecutive_5xx += 1;
                self.consecutive_gateway = 0;
            }
        }
        self.reached(config)
    }

    fn reached(&self, config: &OutlierDetection) -> bool {
        if self.is_ejected() {
            return false;
        }
        let by_5xx = config.consecutive_5xx > 0 && self.consecutive_5xx >= config.consecutive_5xx;
        let by_gateway = config.consecutive_gateway_errors > 0
            && self.consecutive_gateway >= config.consecutive_gateway_errors;
        by_5xx || by_gateway
    }

    /// Ejects the endpoint now: for `base_ejection_time` times the number of ejections.
    pub(crate) fn eject(&mut self, now: Instant, config: &OutlierDetection) {
        self.times_ejected = self.times_ejected.saturating_add(1);
        let duration = config
            .base_ejection_time
            .checked_mul(self.times_ejected)
            .unwrap_or(Duration::MAX / 2);
        self.ejected_until = Some(now + duration);
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
    }

    /// At an interval tick: ends an ejection that has run its course (true when it did), and
    /// lets an endpoint that stayed healthy work its ejection multiplier back down.
    pub(crate) fn sweep(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if until <= now => {
                self.ejected_until = None;
                true
            }
            Some(_) => false,
            None => {
                if self.consecutive_5xx == 0 && self.consecutive_gateway == 0 {
                    self.times_ejected = self.times_ejected.saturating_sub(1);
                }
                false
            }
        }
    }
}

/// How many endpoints of `total` may be ejected at once: `max_ejection_percent` of them, but
/// always at least one (a literal reading of Istio's 10% over three endpoints would never eject).
pub(crate) fn max_ejected(total: usize, config: &OutlierDetection) -> usize {
    let by_percent = total * config.max_ejection_percent as usize / 100;
    by_percent.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(consecutive_5xx: u32, gateway: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx,
            consecutive_gateway_errors: gateway,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
            min_health_percent: 0,
        }
    }

    #[test]
    fn five_5xx_in_a_row_reach_the_threshold_and_a_success_resets() {
        let config = config(5, 0);
        let mut state = OutlierState::default();
        for _ in 0..4 {
            assert!(!state.record(Outcome::ServerError { gateway: false }, &config));
        }
        assert!(!state.record(Outcome::Success, &config));
        for _ in 0..4 {
            assert!(!state.record(Outcome::ServerError { gateway: false }, &config));
        }
        assert!(state.record(Outcome::ServerError { gateway: false }, &config));
    }

    #[test]
    fn gateway_errors_count_separately() {
        let config = config(0, 2);
        let mut state = OutlierState::default();
        assert!(!state.record(Outcome::ServerError { gateway: false }, &config));
        assert!(!state.record(Outcome::ServerError { gateway: true }, &config));
        assert!(state.record(Outcome::ConnectFailure, &config));
    }

    #[test]
    fn ejections_grow_with_repetition_and_end_at_a_sweep() {
        let config = config(1, 0);
        let mut state = OutlierState::default();
        let start = Instant::now();
        state.eject(start, &config);
        assert!(state.is_ejected());
        assert!(!state.sweep(start + Duration::from_secs(29)));
        assert!(state.sweep(start + Duration::from_secs(30)));
        assert!(!state.is_ejected());
        let again = start + Duration::from_secs(31);
        state.eject(again, &config);
        assert!(
            !state.sweep(again + Duration::from_secs(59)),
            "second ejection lasts 2x"
        );
        assert!(state.sweep(again + Duration::from_secs(60)));
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected() {
        let config = config(5, 0);
        assert_eq!(
            max_ejected(3, &config),
            1,
            "10% of 3 is 0, but one is always allowed"
        );
        assert_eq!(max_ejected(30, &config), 3);
    }
}
