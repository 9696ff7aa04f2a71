//! The control plane: a stage's own handle, timers on tokio's clock, and the start hook.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stage::{
    Call, Cast, Consumer, Context, Info, Producer, ReplyTo, SubscribeOptions, SubscriptionId,
    SubscriptionMode, TimerRef,
};
use support::{Source, emit, settle, within};
use tokio::time::Instant;

type Journal = Arc<Mutex<Vec<String>>>;

fn journal() -> Journal {
    Arc::default()
}

fn read(journal: &Journal) -> Vec<String> {
    journal.lock().unwrap().clone()
}

/// Sets timers when told to and journals when each fires, with the paused clock's time.
struct Clock {
    journal: Journal,
    start: Instant,
    timers: Vec<TimerRef>,
}

/// Set a timer named `.0` firing after `.1`.
struct Set(&'static str, Duration);
/// Cancel the timer set `.0`-th.
struct CancelTimer(usize);
/// A timer fired.
struct Fired(&'static str);

impl Clock {
    fn new(journal: &Journal) -> Self {
        Clock {
            journal: Arc::clone(journal),
            start: Instant::now(),
            timers: Vec::new(),
        }
    }
}

impl Consumer for Clock {
    type In = u64;

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        let at = self.start.elapsed().as_millis();
        self.journal
            .lock()
            .unwrap()
            .push(format!("{} events at {at}", events.len()));
    }
}

impl Cast<Set> for Clock {
    async fn handle_cast(&mut self, Set(name, after): Set, ctx: &mut Context<Self>) {
        self.timers.push(ctx.send_after(after, Fired(name)));
    }
}

impl Cast<CancelTimer> for Clock {
    async fn handle_cast(&mut self, CancelTimer(i): CancelTimer, ctx: &mut Context<Self>) {
        ctx.cancel_timer(self.timers[i]);
    }
}

impl Info<Fired> for Clock {
    async fn handle_info(&mut self, Fired(name): Fired, _: &mut Context<Self>) {
        let at = self.start.elapsed().as_millis();
        self.journal.lock().unwrap().push(format!("{name} at {at}"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_once_at_its_time() {
    let j = journal();
    let c = stage::consumer(Clock::new(&j)).start().unwrap();
    c.cast(Set("a", Duration::from_millis(250))).unwrap();
    c.cast(Set("b", Duration::from_millis(100))).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(read(&j), ["b at 100", "a at 250"]);
}

#[tokio::test(start_paused = true)]
async fn a_timer_longer_than_tokios_timer_wheel_fires_at_its_time_or_is_cancelled() {
    // tokio's timers take at most about two years; these wait three and a half.
    let day = Duration::from_secs(24 * 3600);
    let j = journal();
    let c = stage::consumer(Clock::new(&j)).start().unwrap();
    c.cast(Set("long", day * 1277)).unwrap();
    c.cast(Set("cancelled", day * 1277)).unwrap();
    c.cast(Set("short", Duration::from_millis(5))).unwrap();
    tokio::time::sleep(day * 500).await;
    // Cancelled after its first leg.
    c.cast(CancelTimer(1)).unwrap();
    tokio::time::sleep(day * 776).await;
    assert_eq!(read(&j), ["short at 5"], "nothing fires early");
    tokio::time::sleep(day * 2).await;
    let ms = (day * 1277).as_millis();
    assert_eq!(
        read(&j),
        ["short at 5".to_string(), format!("long at {ms}")]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_timer_never_fires() {
    let j = journal();
    let c = stage::consumer(Clock::new(&j)).start().unwrap();
    c.cast(Set("kept", Duration::from_millis(300))).unwrap();
    c.cast(Set("cancelled", Duration::from_millis(200)))
        .unwrap();
    c.cast(CancelTimer(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Cancelling a timer twice, or after it fired, is ignored.
    c.cast(CancelTimer(1)).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    c.cast(CancelTimer(0)).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(read(&j), ["kept at 300"]);
}

#[tokio::test(start_paused = true)]
async fn timers_fire_on_time_while_many_events_keep_arriving() {
    let j = journal();
    let p = stage::producer(Source::silent()).start().unwrap();
    let c = stage::consumer(Clock::new(&j))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1_000_000))
        .start()
        .unwrap();
    c.cast(Set("tick", Duration::from_millis(50))).unwrap();
    settle().await;
    // 100 batches 1 ms apart: the timer fires between the 50th and the 51st.
    for _ in 0..100 {
        emit(&p, vec![1]).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let log = read(&j);
    assert_eq!(log.len(), 101);
    let tick = log.iter().position(|l| l == "tick at 50").expect("fired");
    assert!((49..=51).contains(&tick), "{log:?}");
}

/// Counts down by sending itself messages through its own handle.
struct Countdown {
    journal: Journal,
}

/// Count down from `.0`.
struct From(u32);

impl Consumer for Countdown {
    type In = u64;

    async fn handle_events(&mut self, _: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {}
}

impl Cast<From> for Countdown {
    async fn handle_cast(&mut self, From(n): From, ctx: &mut Context<Self>) {
        self.journal.lock().unwrap().push(n.to_string());
        if n > 0 {
            ctx.myself().cast(From(n - 1)).unwrap();
        }
    }
}

#[tokio::test]
async fn a_stage_sends_itself_messages_through_myself() {
    let j = journal();
    let c = stage::consumer(Countdown {
        journal: Arc::clone(&j),
    })
    .start()
    .unwrap();
    c.cast(From(3)).unwrap();
    settle().await;
    assert_eq!(read(&j), ["3", "2", "1", "0"]);
    assert!(c.is_running());
}

/// Journals its hooks in order.
struct Hooks {
    journal: Journal,
}

impl Hooks {
    fn log(&self, entry: impl Into<String>) {
        self.journal.lock().unwrap().push(entry.into());
    }
}

impl Consumer for Hooks {
    type In = u64;

    async fn handle_subscribe(
        &mut self,
        _: SubscriptionId,
        _: &SubscribeOptions,
        _: &mut Context<Self>,
    ) -> SubscriptionMode {
        self.log("subscribed");
        SubscriptionMode::Automatic
    }

    async fn handle_start(&mut self, ctx: &mut Context<Self>) {
        self.log(format!("consumer start ({})", ctx.name()));
    }

    async fn handle_events(&mut self, events: Vec<u64>, _: SubscriptionId, _: &mut Context<Self>) {
        self.log(format!("events {events:?}"));
    }
}

impl Producer for Hooks {
    type Out = u64;

    async fn handle_start(&mut self, _: &mut Context<Self>) {
        self.log("producer start");
    }
}

impl Call<()> for Hooks {
    type Reply = ();

    async fn handle_call(&mut self, _: (), reply: ReplyTo<()>, _: &mut Context<Self>) {
        self.log("call");
        reply.send(());
    }
}

#[tokio::test]
async fn handle_start_runs_after_the_initial_subscriptions_and_before_anything_else() {
    let p = stage::from_iter(0..3u64).start().unwrap();
    let q = stage::from_iter(10..12u64).start().unwrap();
    let j = journal();
    let c = stage::consumer(Hooks {
        journal: Arc::clone(&j),
    })
    .name("hooks")
    .subscribe_to(&p, SubscribeOptions::new())
    .subscribe_to(&q, SubscribeOptions::new())
    .start()
    .unwrap();
    // Sent before the stage ran at all: still handled after its start hook.
    within(c.call(())).await.unwrap();
    within(p.join()).await;
    within(q.join()).await;
    let log = read(&j);
    assert_eq!(
        log[..4],
        ["subscribed", "subscribed", "consumer start (hooks)", "call"]
    );
    let starts = log.iter().filter(|l| l.contains("start")).count();
    assert_eq!(starts, 1, "once: {log:?}");
}

#[tokio::test]
async fn a_producer_consumer_runs_both_start_hooks_consumer_side_first() {
    let p = stage::from_iter(0..3u64).start().unwrap();
    let j = journal();
    let pc = stage::producer_consumer(Hooks {
        journal: Arc::clone(&j),
    })
    .name("both")
    .subscribe_to(&p, SubscribeOptions::new())
    .start()
    .unwrap();
    within(pc.call(())).await.unwrap();
    assert_eq!(
        read(&j)[..4],
        [
            "subscribed",
            "consumer start (both)",
            "producer start",
            "call"
        ]
    );
}
