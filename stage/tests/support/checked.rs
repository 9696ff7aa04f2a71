//! A dispatcher wrapper that counts every send beyond the credit a subscription asked for,
//! for the property tests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stage::{
    Contract, DemandDispatcher, Dispatcher, DispatcherState, Outbox, SubscribeError,
    SubscribeOptions, SubscriptionId,
};

/// An event: (producer index, sequence number).
pub type Ev = (usize, u64);

/// Wraps a dispatcher and counts sends beyond a subscription's credit.
pub struct Checked<D = DemandDispatcher<Ev>> {
    inner: D,
    credit: HashMap<SubscriptionId, usize>,
    violations: Arc<AtomicUsize>,
    /// Sends already charged in the outbox being filled.
    charged: usize,
}

impl Checked {
    pub fn new(violations: Arc<AtomicUsize>) -> Self {
        Checked::around(DemandDispatcher::new(), violations)
    }
}

impl<D> Checked<D> {
    pub fn around(inner: D, violations: Arc<AtomicUsize>) -> Self {
        Checked {
            inner,
            credit: HashMap::new(),
            violations,
            charged: 0,
        }
    }

    /// Charges the sends the inner dispatcher added to `out` since the last charge.
    fn charge_new(&mut self, out: &Outbox<Ev>) {
        let sends = out.sends();
        // The producer empties the outbox between calls.
        if self.charged > sends.len() {
            self.charged = 0;
        }
        for (id, batch) in &sends[self.charged..] {
            charge(&mut self.credit, &self.violations, *id, batch);
        }
        self.charged = sends.len();
    }
}

fn charge(
    credit: &mut HashMap<SubscriptionId, usize>,
    violations: &AtomicUsize,
    id: SubscriptionId,
    batch: &[Ev],
) {
    let c = credit.entry(id).or_default();
    if batch.len() > *c {
        violations.fetch_add(1, Ordering::Relaxed);
    }
    *c = c.saturating_sub(batch.len());
}

impl<D: Dispatcher<Ev>> Dispatcher<Ev> for Checked<D> {
    fn contract(&self) -> Contract {
        self.inner.contract()
    }
    fn subscribe(
        &mut self,
        id: SubscriptionId,
        opts: &SubscribeOptions,
        out: &mut Outbox<Ev>,
    ) -> Result<(), SubscribeError> {
        self.credit.insert(id, 0);
        let subscribed = self.inner.subscribe(id, opts, out);
        self.charge_new(out);
        subscribed
    }
    fn cancel(&mut self, id: SubscriptionId, returned: Vec<Ev>, out: &mut Outbox<Ev>) -> Vec<Ev> {
        self.credit.remove(&id);
        let requeue = self.inner.cancel(id, returned, out);
        self.charge_new(out);
        requeue
    }
    fn ask(&mut self, id: SubscriptionId, n: usize, out: &mut Outbox<Ev>) {
        *self.credit.entry(id).or_default() += n;
        self.inner.ask(id, n, out);
        self.charge_new(out);
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn dispatch(&mut self, events: Vec<Ev>, out: &mut Outbox<Ev>) -> Vec<Ev> {
        let left = self.inner.dispatch(events, out);
        self.charge_new(out);
        left
    }
    fn hold(&mut self, token: u64) -> bool {
        self.inner.hold(token)
    }
    fn state(&self) -> DispatcherState {
        self.inner.state()
    }
}
