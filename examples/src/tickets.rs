//! The book's ticket bookings, as two `ingest` pipelines over in-memory queues (the book's
//! RabbitMQ queues), for `examples/tickets.rs` and its tests.
//!
//! - **Bookings** read `bookings` (payloads `"<event>,<user id>"`). `prepare_messages` parses
//!   each chunk's payloads and loads all of its users with one `users_by_ids` call;
//!   `handle_message` takes a seat for the booking, or fails it `"bookings-closed"` once its
//!   event is sold out; `handle_failed` has those rejected (not requeued: they would fail
//!   again), while bookings that make no sense (a malformed payload, an unknown event or user)
//!   go to the dead-letter list instead of coming back for ever. The rest are batched by event
//!   type (`cinema` 75, `musical` 100, the others 50 at a time); each batch's tickets are
//!   inserted with one call, and an `"email,<address>"` notification is published to
//!   `notifications` for each booking.
//! - **Notifications** read `notifications`, batch the emails by recipient for a window of
//!   10 s (the book's `batch_timeout`), and send one digest per recipient per window.
//!
//! The fake `Tickets` service sleeps where the book's does, scaled by
//! [`Settings::time_scale`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingest::{
    BatchInfo, BatchKey, Batcher, Context, Failure, Handler, Message, Pipeline, Processors, Report,
};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::queue::{Queue, QueueCounts};

/// The events one can book.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A film.
    Cinema,
    /// A musical.
    Musical,
    /// A play.
    Play,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 3] = [Event::Cinema, Event::Musical, Event::Play];

    /// The event's name in payloads.
    pub fn name(self) -> &'static str {
        match self {
            Event::Cinema => "cinema",
            Event::Musical => "musical",
            Event::Play => "play",
        }
    }

    fn parse(name: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The batcher its bookings go to (the book's: cinema and musical have their own).
    pub fn batcher(self) -> &'static str {
        match self {
            Event::Cinema => "cinema",
            Event::Musical => "musical",
            Event::Play => "default",
        }
    }
}

/// A user of the booking site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The id payloads name the user by.
    pub id: String,
    /// Where notifications go.
    pub email: String,
}

/// A booking on its way through the pipeline: the payload as it came, then what
/// `prepare_messages` made of it.
#[derive(Clone, Debug)]
pub struct Booking {
    /// The payload, `"<event>,<user id>"`.
    pub payload: String,
    /// The event, once parsed.
    pub event: Option<Event>,
    /// The user, once loaded.
    pub user: Option<User>,
}

impl Booking {
    fn new(payload: String) -> Self {
        Booking {
            payload,
            event: None,
            user: None,
        }
    }
}

/// A ticket sold: what the bookings' batches insert.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// For what.
    pub event: Event,
    /// For whom.
    pub user: User,
}

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seats per event: bookings beyond them fail with `"bookings-closed"`.
    pub seats: u64,
    /// Events closed to bookings from the start (the book closes cinema).
    pub closed: Vec<Event>,
    /// The book's sleeps are multiplied by this (1.0: the book's own, 0.01: a hundred times
    /// faster).
    pub time_scale: f64,
    /// How long the shutdowns may take once the queues are drained.
    pub deadline: Duration,
    /// The seed of the fake service's latencies.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seats: 250,
            closed: Vec::new(),
            time_scale: 0.01,
            deadline: Duration::from_secs(30),
            seed: 7,
        }
    }
}

/// The book's three users.
pub fn users() -> [User; 3] {
    ["foo", "bar", "baz"].map(|name| User {
        id: match name {
            "foo" => "1",
            "bar" => "2",
            _ => "3",
        }
        .to_string(),
        email: format!("{name}@email.com"),
    })
}

/// `n` random bookings (`"<event>,<user id>"`, the book's helper), seeded; every
/// `malformed_every`-th one (if not 0) is broken in one of three ways: no user, an unknown
/// event, an unknown user.
pub fn bookings(n: usize, seed: u64, malformed_every: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let r = mix(seed ^ i as u64);
            if malformed_every > 0 && i % malformed_every == malformed_every - 1 {
                return match r % 3 {
                    0 => "cinema".to_string(),
                    1 => "opera,1".to_string(),
                    _ => "play,9".to_string(),
                };
            }
            let event = Event::ALL[(r % 3) as usize];
            format!("{},{}", event.name(), 1 + (r >> 8) % 3)
        })
        .collect()
}

/// A well-mixed number from `x` (splitmix64).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The book's fake `Tickets` module: seats, users, and sleeps where the real one would wait.
#[derive(Debug)]
pub struct Tickets {
    seats: HashMap<Event, AtomicU64>,
    scale: f64,
    seed: u64,
    calls: AtomicU64,
    /// Tickets inserted, by event.
    inserted: HashMap<Event, AtomicU64>,
}

impl Tickets {
    fn new(settings: &Settings) -> Self {
        let seats = Event::ALL
            .into_iter()
            .map(|e| {
                let n = if settings.closed.contains(&e) {
                    0
                } else {
                    settings.seats
                };
                (e, AtomicU64::new(n))
            })
            .collect();
        Tickets {
            seats,
            scale: settings.time_scale,
            seed: settings.seed,
            calls: AtomicU64::new(0),
            inserted: Event::ALL
                .into_iter()
                .map(|e| (e, AtomicU64::new(0)))
                .collect(),
        }
    }

    /// Sleeps between `min` and `max` milliseconds of the book's time, scaled.
    async fn work(&self, min: u64, max: u64) {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let ms = min + mix(self.seed ^ call.rotate_left(17)) % (max - min + 1);
        tokio::time::sleep(Duration::from_secs_f64(ms as f64 / 1000.0 * self.scale)).await;
    }

    /// Whether a seat is left for `event`, taking it if so (100-200 ms).
    pub async fn tickets_available(&self, event: Event) -> bool {
        self.work(100, 200).await;
        self.seats[&event]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// The users of these ids (no wait: one query).
    pub fn users_by_ids(&self, ids: &[&str]) -> Vec<User> {
        users()
            .into_iter()
            .filter(|u| ids.contains(&u.id.as_str()))
            .collect()
    }

    /// Inserts a batch of tickets (250 ms per ticket, as in the book).
    pub async fn insert_all_tickets(&self, tickets: &[Message<Ticket>]) {
        let ms = 250 * tickets.len() as u64;
        self.work(ms, ms).await;
        for t in tickets {
            self.inserted[&t.data.event].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends an email (100-250 ms).
    pub async fn send_email(&self, _to: &str) {
        self.work(100, 250).await;
    }

    /// Tickets inserted for `event` so far.
    pub fn inserted(&self, event: Event) -> u64 {
        self.inserted[&event].load(Ordering::Relaxed)
    }
}

/// A batch the bookings pipeline handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookedBatch {
    /// Its batcher.
    pub batcher: String,
    /// How many bookings it held.
    pub size: usize,
    /// The events of its bookings.
    pub events: Vec<Event>,
}

/// The bookings pipeline's work.
#[derive(Debug)]
pub struct Bookings {
    tickets: Arc<Tickets>,
    notifications: Queue,
    batches: Mutex<Vec<BookedBatch>>,
}

impl Handler for Bookings {
    type In = Booking;
    type Out = Ticket;

    async fn prepare_messages(
        &self,
        messages: &mut [Message<Booking>],
        _: &Context,
    ) -> Result<(), Failure> {
        let mut ids = Vec::new();
        for msg in messages.iter_mut() {
            let parsed =
                msg.data.payload.split_once(',').and_then(|(event, user)| {
                    Some((Event::parse(event)?, user.trim().to_string()))
                });
            match parsed {
                Some((event, user)) => {
                    msg.data.event = Some(event);
                    ids.push(user);
                }
                None => {
                    let reason = format!("malformed booking {:?}", msg.data.payload);
                    msg.fail(Failure::new(reason).dead_letter());
                }
            }
        }
        // One query for the whole chunk.
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let users = self.tickets.users_by_ids(&ids);
        for msg in messages.iter_mut().filter(|m| !m.is_failed()) {
            let id = msg
                .data
                .payload
                .split_once(',')
                .map_or("", |(_, u)| u.trim());
            match users.iter().find(|u| u.id == id) {
                Some(user) => msg.data.user = Some(user.clone()),
                None => {
                    let reason = format!("unknown user {id:?}");
                    msg.fail(Failure::new(reason).dead_letter());
                }
            }
        }
        Ok(())
    }

    async fn handle_message(
        &self,
        msg: &mut Message<Booking>,
        _: &Context,
    ) -> Result<Ticket, Failure> {
        let (Some(event), Some(user)) = (msg.data.event, msg.data.user.take()) else {
            return Err(Failure::new("not prepared").dead_letter());
        };
        if !self.tickets.tickets_available(event).await {
            return Err(Failure::new("bookings-closed"));
        }
        msg.put_batcher(event.batcher());
        Ok(Ticket { event, user })
    }

    async fn handle_failed(&self, messages: &mut [Message<Booking>], _: &Context) {
        for msg in messages {
            let Some(failure) = msg.failure() else {
                continue;
            };
            // The book's `configure_ack(on_failure: :reject)`: a closed booking would fail
            // again, so it is dropped instead of requeued.
            if failure.reason() == "bookings-closed" {
                let rejected = failure.clone().nack(false);
                msg.fail(rejected);
            }
        }
    }

    async fn handle_batch(
        &self,
        batch: &mut [Message<Ticket>],
        info: &BatchInfo,
        _: &Context,
    ) -> Result<(), Failure> {
        self.tickets.insert_all_tickets(batch).await;
        self.notifications
            .publish(batch.iter().map(|m| format!("email,{}", m.data.user.email)));
        info!(
            batcher = %info.batcher,
            size = batch.len(),
            trigger = ?info.trigger,
            "inserted a batch of tickets and queued its notifications"
        );
        self.batches.lock().unwrap().push(BookedBatch {
            batcher: info.batcher.to_string(),
            size: batch.len(),
            events: batch.iter().map(|m| m.data.event).collect(),
        });
        Ok(())
    }
}

/// A digest the notifications pipeline sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// To whom.
    pub recipient: String,
    /// How many emails it gathers.
    pub emails: usize,
    /// When its batch got its first email, and when it was sent, from the run's start.
    pub opened: Duration,
    /// When it was sent.
    pub sent: Duration,
    /// Whether it went because its window closed (not because the pipeline drained).
    pub on_time: bool,
}

/// The notifications pipeline's work.
#[derive(Debug)]
pub struct Notifications {
    tickets: Arc<Tickets>,
    start: Instant,
    digests: Mutex<Vec<Digest>>,
}

impl Handler for Notifications {
    type In = String;
    type Out = String;

    async fn handle_message(
        &self,
        msg: &mut Message<String>,
        _: &Context,
    ) -> Result<String, Failure> {
        let Some(("email", recipient)) = msg.data.split_once(',') else {
            let reason = format!("malformed notification {:?}", msg.data);
            return Err(Failure::new(reason).dead_letter());
        };
        let recipient = recipient.to_string();
        msg.put_batcher("email");
        msg.put_batch_key(recipient.as_str());
        Ok(recipient)
    }

    async fn handle_batch(
        &self,
        batch: &mut [Message<String>],
        info: &BatchInfo,
        ctx: &Context,
    ) -> Result<(), Failure> {
        let BatchKey::Str(recipient) = &info.batch_key else {
            return Err(Failure::new("a digest needs a recipient"));
        };
        self.tickets.send_email(recipient).await;
        info!(
            stage = ctx.stage(),
            batcher = %info.batcher,
            key = %recipient,
            emails = batch.len(),
            "sent one digest"
        );
        self.digests.lock().unwrap().push(Digest {
            recipient: recipient.to_string(),
            emails: batch.len(),
            opened: info.opened_at.duration_since(self.start),
            sent: info.closed_at.duration_since(self.start),
            on_time: info.trigger == ingest::Trigger::Timeout,
        });
        Ok(())
    }
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// The bookings queue's counts.
    pub bookings: QueueCounts,
    /// The notifications queue's counts.
    pub notifications: QueueCounts,
    /// The bookings pipeline's report.
    pub bookings_report: Report,
    /// The notifications pipeline's report.
    pub notifications_report: Report,
    /// The bookings' batches.
    pub batches: Vec<BookedBatch>,
    /// The digests sent.
    pub digests: Vec<Digest>,
    /// Bookings rejected, with why.
    pub rejected: Vec<(String, String)>,
    /// Bookings dead-lettered, with why.
    pub dead_letters: Vec<(String, String)>,
    /// Tickets inserted, by event.
    pub inserted: Vec<(Event, u64)>,
    /// The window digests gather emails for.
    pub window: Duration,
}

/// How long a digest gathers emails (the book's 10 s), scaled.
fn window(settings: &Settings) -> Duration {
    Duration::from_secs_f64(10.0 * settings.time_scale).max(Duration::from_millis(1))
}

/// Runs both pipelines over `payloads` until every booking and notification is settled for
/// good, shuts them down, and says what happened.
///
/// # Errors
///
/// If a pipeline does not start (a bad setting).
pub async fn run(
    payloads: Vec<String>,
    settings: &Settings,
) -> Result<RunSummary, ingest::BuildError> {
    let tickets = Arc::new(Tickets::new(settings));
    let bookings = Queue::new("bookings");
    let notifications = Queue::new("notifications");
    let scale = |ms: u64| Duration::from_secs_f64(ms as f64 / 1000.0 * settings.time_scale);

    let booking_pipeline = Pipeline::builder(
        "bookings",
        Bookings {
            tickets: Arc::clone(&tickets),
            notifications: notifications.clone(),
            batches: Mutex::default(),
        },
    )
    .producer(bookings.producer(Booking::new))
    .processors(Processors::new())
    .batcher(
        Batcher::new("cinema")
            .batch_size(75)
            .batch_timeout(scale(1000)),
    )
    .batcher(Batcher::new("musical").batch_timeout(scale(1000)))
    .batcher(
        Batcher::new("default")
            .batch_size(50)
            .batch_timeout(scale(1000)),
    )
    .start()?;

    let window = window(settings);
    let notification_pipeline = Pipeline::builder(
        "notifications",
        Notifications {
            tickets: Arc::clone(&tickets),
            start: Instant::now(),
            digests: Mutex::default(),
        },
    )
    .producer(notifications.producer(|payload| payload))
    .processors(Processors::new().max_demand(100))
    .batcher(
        Batcher::new("email")
            .concurrency(5)
            // Never full: one digest per recipient per window.
            .batch_size(100_000)
            .max_demand(100)
            .batch_timeout(window),
    )
    .start()?;
    info!("{}", booking_pipeline.topology());
    info!("{}", notification_pipeline.topology());

    bookings.publish(payloads);
    bookings.drained().await;
    let bookings_report = booking_pipeline.shutdown(settings.deadline).await;
    notifications.drained().await;
    let notifications_report = notification_pipeline.shutdown(settings.deadline).await;
    for (name, report) in [
        ("bookings", &bookings_report),
        ("notifications", &notifications_report),
    ] {
        if !report.adds_up() || report.timed_out {
            warn!(
                pipeline = name,
                ?report,
                "the pipeline did not settle everything"
            );
        }
    }

    let batches = booking_pipeline.handler().batches.lock().unwrap().clone();
    let digests = notification_pipeline
        .handler()
        .digests
        .lock()
        .unwrap()
        .clone();
    Ok(RunSummary {
        bookings: bookings.counts(),
        notifications: notifications.counts(),
        bookings_report,
        notifications_report,
        batches,
        digests,
        rejected: bookings.rejected(),
        dead_letters: bookings.dead_letters(),
        inserted: Event::ALL
            .into_iter()
            .map(|e| (e, tickets.inserted(e)))
            .collect(),
        window,
    })
}
