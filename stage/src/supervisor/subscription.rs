//! How the supervisor subscribes: its own `min_demand` default, and every subscription made
//! temporary for the engine, the user's cancel mode kept aside for the supervisor to apply.
//!
//! The engine stops a consumer as soon as a permanent (or, on an abnormal reason, transient)
//! subscription ends. A supervisor must first let its running children finish, so the engine
//! sees only temporary subscriptions and the supervisor decides in `handle_cancel`. The
//! subscription's id, which the mode must be filed under, is made by the engine; the producer
//! is wrapped so that the engine hands over the id as it subscribes, before it calls
//! `handle_subscribe`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::address::{Ack, Asks, Downstream, ProducerRef, Upstream};
use crate::error::{Cancel, OptionError, SubscribeError};
use crate::options::{CancelMode, SubscribeOptions, SubscriptionId};

/// The `min_demand` of a supervisor's subscription that does not set one: every slot freed
/// is asked for again at once, so `max_demand` children keep running while there is work.
pub(super) const DEFAULT_MIN_DEMAND: usize = 0;

/// The user's cancel mode of each live subscription, filed by id as the subscription is made.
/// Shared by the stage and its handles; only the stage's own task touches it in practice.
#[derive(Clone, Debug, Default)]
pub(super) struct Modes(Arc<Mutex<HashMap<SubscriptionId, CancelMode>>>);

impl Modes {
    fn record(&self, id: SubscriptionId, mode: CancelMode) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, mode);
    }

    /// The mode of a subscription that has ended, forgotten.
    pub(super) fn take(&self, id: SubscriptionId) -> Option<CancelMode> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }
}

/// The producer and options to give the engine for a subscription of the supervisor to
/// `producer` with `opts`: the supervisor's `min_demand` default, a temporary cancel mode, and
/// the producer wrapped to file the user's mode in `modes`.
///
/// # Errors
///
/// The [`OptionError`] of invalid options.
pub(super) fn prepare<T: Send + 'static>(
    producer: ProducerRef<T>,
    opts: SubscribeOptions,
    modes: &Modes,
) -> Result<(ProducerRef<T>, SubscribeOptions), OptionError> {
    let (_, min) = opts.limits()?;
    // The options compare equal with `min_demand` set to its value only if it was set.
    let min_given = opts == opts.clone().min_demand(min);
    let mode = opts.cancel_mode();
    let mut opts = opts.cancel(CancelMode::Temporary);
    if !min_given {
        opts = opts.min_demand(DEFAULT_MIN_DEMAND);
    }
    let tagged = Tagged {
        inner: producer,
        mode,
        modes: modes.clone(),
    };
    Ok((ProducerRef(Arc::new(tagged)), opts))
}

/// A producer seen through a supervisor: files the subscription's cancel mode under its id.
struct Tagged<T> {
    inner: ProducerRef<T>,
    mode: CancelMode,
    modes: Modes,
}

impl<T: Send + 'static> Upstream<T> for Tagged<T> {
    fn subscribe(
        &self,
        id: SubscriptionId,
        sink: Box<dyn Downstream<T>>,
        asks: Asks,
        opts: SubscribeOptions,
        ack: Option<Ack>,
    ) -> bool {
        self.modes.record(id, self.mode);
        if self.inner.is_closed() {
            // Only for a permanent or transient subscription (see `is_closed`): the engine
            // sends the supervisor a down with `Reason::NoProc`, and the supervisor stops.
            if let Some(ack) = ack {
                let _ = ack.send(Err(SubscribeError::ProducerClosed));
            }
            return false;
        }
        self.inner.0.subscribe(id, sink, asks, opts, ack)
    }
    fn wake(&self, id: SubscriptionId) -> bool {
        self.inner.wake(id)
    }
    fn cancel(&self, id: SubscriptionId, cancel: Cancel, returned: Vec<T>) -> Result<(), Vec<T>> {
        self.inner.cancel(id, cancel, returned)
    }
    fn check(&self, opts: &SubscribeOptions) -> Result<(), SubscribeError> {
        self.inner.0.check(opts)
    }
    /// A closed producer is reported as such only for a temporary subscription, which the
    /// engine then skips silently, as the user asked. Any other goes on to `subscribe`, so that
    /// the supervisor hears of it and stops as its mode says (the engine, seeing a temporary
    /// subscription, would not).
    fn is_closed(&self) -> bool {
        self.mode == CancelMode::Temporary && self.inner.is_closed()
    }
    fn name(&self) -> Arc<str> {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(opts: SubscribeOptions) -> SubscribeOptions {
        let producer = ProducerRef::<u64>::not_a_producer(Arc::from("p"));
        prepare(producer, opts, &Modes::default()).unwrap().1
    }

    #[test]
    fn min_demand_defaults_to_zero_and_a_given_one_is_kept() {
        let opts = prepared(SubscribeOptions::new().max_demand(10));
        assert_eq!(opts.limits(), Ok((10, DEFAULT_MIN_DEMAND)));
        let opts = prepared(SubscribeOptions::new().max_demand(10).min_demand(5));
        assert_eq!(opts.limits(), Ok((10, 5)));
        let opts = prepared(SubscribeOptions::new().max_demand(10).min_demand(0));
        assert_eq!(opts.limits(), Ok((10, 0)));
    }

    #[test]
    fn the_engine_sees_a_temporary_subscription() {
        for mode in [
            CancelMode::Permanent,
            CancelMode::Transient,
            CancelMode::Temporary,
        ] {
            let opts = prepared(SubscribeOptions::new().cancel(mode));
            assert_eq!(opts.cancel_mode(), CancelMode::Temporary);
        }
    }

    #[test]
    fn invalid_options_are_refused() {
        let producer = ProducerRef::<u64>::not_a_producer(Arc::from("p"));
        let opts = SubscribeOptions::new().max_demand(0);
        let err = prepare(producer, opts, &Modes::default()).unwrap_err();
        assert_eq!(err.option, "max_demand");
    }

    #[test]
    fn the_mode_is_filed_when_the_engine_subscribes() {
        let modes = Modes::default();
        let producer = ProducerRef::<u64>::not_a_producer(Arc::from("p"));
        let opts = SubscribeOptions::new().cancel(CancelMode::Transient);
        let (tagged, _) = prepare(producer, opts, &modes).unwrap();
        assert!(
            !tagged.is_closed(),
            "a transient subscription must reach `subscribe`"
        );
        let id = SubscriptionId::from_raw(7);
        struct Nowhere;
        impl Downstream<u64> for Nowhere {
            fn events(&self, _: SubscriptionId, events: Vec<u64>) -> Result<(), Vec<u64>> {
                Err(events)
            }
            fn packet(
                &self,
                _: SubscriptionId,
                packet: crate::packet::Packet,
            ) -> Result<(), crate::packet::Packet> {
                Err(packet)
            }
            fn cancel(&self, _: SubscriptionId, _: Cancel) -> bool {
                false
            }
            fn name(&self) -> &str {
                "nowhere"
            }
        }
        let (ack, mut answer) = tokio::sync::oneshot::channel();
        let opts = SubscribeOptions::new();
        let sent = tagged
            .0
            .subscribe(id, Box::new(Nowhere), Asks::default(), opts, Some(ack));
        assert!(!sent, "the producer is closed");
        assert_eq!(answer.try_recv(), Ok(Err(SubscribeError::ProducerClosed)));
        assert_eq!(modes.take(id), Some(CancelMode::Transient));
        assert_eq!(modes.take(id), None);
    }
}
