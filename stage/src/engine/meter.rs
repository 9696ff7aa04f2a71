//! The stage's counters through the `metrics` facade (with the `metrics` feature), recorded
//! per batch into handles registered once when the stage starts; without the feature, nothing.

#[cfg(feature = "metrics")]
mod on {
    use std::sync::Arc;

    use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};

    /// The handles of one stage's series, labelled with its name and kind.
    pub(crate) struct Meter {
        events_in: Counter,
        events_out: Counter,
        dropped: Counter,
        returned: Counter,
        buffered: Gauge,
        /// What was recorded as dropped so far, to add only the rest at the exit.
        dropped_so_far: u64,
    }

    fn describe() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            describe_counter!("stage_events_in_total", Unit::Count, "Events a stage received from its producers.");
            describe_counter!("stage_events_out_total", Unit::Count, "Events a stage sent to its consumers.");
            describe_counter!("stage_events_dropped_total", Unit::Count, "Events a stage dropped (a full buffer, a partition hash, what it held when it exited).");
            describe_counter!("stage_events_returned_total", Unit::Count, "Events a stopping stage gave back to its producers unhandled.");
            describe_gauge!("stage_buffered_events", Unit::Count, "Events waiting in a stage's buffer for demand.");
        });
    }

    impl Meter {
        pub(crate) fn new(name: &Arc<str>, kind: &'static str) -> Self {
            describe();
            let labels = [("stage", name.to_string()), ("kind", kind.to_owned())];
            Meter {
                events_in: counter!("stage_events_in_total", &labels),
                events_out: counter!("stage_events_out_total", &labels),
                dropped: counter!("stage_events_dropped_total", &labels),
                returned: counter!("stage_events_returned_total", &labels),
                buffered: gauge!("stage_buffered_events", &labels),
                dropped_so_far: 0,
            }
        }
        pub(crate) fn received(&self, n: usize) {
            self.events_in.increment(n as u64);
        }
        pub(crate) fn sent(&self, n: u64) {
            self.events_out.increment(n);
        }
        pub(crate) fn discarded(&mut self, n: usize) {
            self.dropped_so_far += n as u64;
            self.dropped.increment(n as u64);
        }
        pub(crate) fn buffered(&self, n: usize) {
            self.buffered.set(n as f64);
        }
        /// The stage exited with these totals.
        pub(crate) fn exited(&mut self, dropped: u64, returned: u64) {
            self.dropped
                .increment(dropped.saturating_sub(self.dropped_so_far));
            self.dropped_so_far = dropped.max(self.dropped_so_far);
            self.returned.increment(returned);
            self.buffered.set(0.0);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use std::sync::Arc;

    /// Nothing: the `metrics` feature is off.
    pub(crate) struct Meter;

    impl Meter {
        pub(crate) fn new(_: &Arc<str>, _: &'static str) -> Self {
            Meter
        }
        #[inline(always)]
        pub(crate) fn received(&self, _: usize) {}
        #[inline(always)]
        pub(crate) fn sent(&self, _: u64) {}
        #[inline(always)]
        pub(crate) fn discarded(&mut self, _: usize) {}
        #[inline(always)]
        pub(crate) fn exited(&mut self, _: u64, _: u64) {}
    }
}

pub(crate) use on::Meter;
