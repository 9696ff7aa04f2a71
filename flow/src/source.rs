//! The producers at the start of a flow.

use stage::{Cancel, Context, Producer, Reason, SubscribeOptions, SubscriptionId};

/// Emits the items of an iterator, exactly as many as asked for; finishes when it runs dry and
/// stops when every consumer has left (the flow was dropped).
pub(crate) struct IterSource<I> {
    iter: I,
    consumers: usize,
}

impl<I> IterSource<I> {
    pub(crate) fn new(iter: I) -> Self {
        IterSource { iter, consumers: 0 }
    }
}

impl<I> Producer for IterSource<I>
where
    I: Iterator + Send + 'static,
    I::Item: Send + 'static,
{
    type Out = I::Item;
    type Call = ();
    type Reply = ();
    type Msg = ();

    async fn handle_demand(&mut self, demand: usize, ctx: &mut Context<I::Item>) -> Vec<I::Item> {
        let events: Vec<_> = self.iter.by_ref().take(demand).collect();
        if events.len() < demand {
            ctx.finish();
        }
        events
    }

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<I::Item>,
    ) {
        self.consumers += 1;
    }

    async fn handle_cancel(&mut self, _: Cancel, _: SubscriptionId, ctx: &mut Context<I::Item>) {
        self.consumers -= 1;
        if self.consumers == 0 {
            ctx.stop(Reason::Shutdown);
        }
    }
}
