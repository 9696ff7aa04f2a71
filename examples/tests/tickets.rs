//! Runs the compiled `tickets` example and checks its summary against the bookings it
//! published; then runs its pipelines in-process on tokio's paused clock, at the book's own
//! timings, to check the batches and the digests' windows.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use examples::tickets::{self, Event, Settings};
use support::run;

/// How many well-formed bookings each event gets among `tickets::bookings(n, seed, every)`.
fn per_event(n: usize, seed: u64, every: usize) -> HashMap<Event, u64> {
    let mut counts = HashMap::new();
    for payload in tickets::bookings(n, seed, every) {
        let Some((event, user)) = payload.split_once(',') else {
            continue;
        };
        let Some(event) = Event::ALL.into_iter().find(|e| e.name() == event) else {
            continue;
        };
        if ["1", "2", "3"].contains(&user) {
            *counts.entry(event).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn every_booking_is_settled_once_and_sold_out_ones_are_rejected() {
    let out = run(
        "tickets",
        &["--bookings", "600", "--seats", "150", "--seed", "42"],
        Duration::from_secs(30),
    );
    let counts = per_event(600, 42, 50);
    let valid: u64 = counts.values().sum();
    assert_eq!(out.get("published"), 600);
    assert_eq!(out.get("settled_once"), 1, "{:?}", out.summary);
    assert_eq!(out.get("requeued"), 0, "nothing loops");
    // The malformed ones (every 50th) are dead-lettered, not redelivered.
    assert_eq!(out.get("dead_lettered"), 600 - valid);
    // Each event sells its 150 seats; the bookings beyond are rejected as closed.
    let sold: u64 = counts.values().map(|&n| n.min(150)).sum();
    assert_eq!(out.get("acked"), sold);
    assert_eq!(out.get("rejected"), valid - sold);
    for event in Event::ALL {
        let name = event.name();
        assert_eq!(out.get(&format!("tickets_{name}")), counts[&event].min(150));
    }
    // Batches by event type, never beyond their sizes.
    assert!((1..=75).contains(&out.get("largest_cinema")));
    assert!((1..=100).contains(&out.get("largest_musical")));
    assert!((1..=50).contains(&out.get("largest_default")));
    assert!(out.get("batches_default") >= counts[&Event::Play].min(150).div_ceil(50));
    // One notification per ticket, and digests for the three users.
    assert_eq!(out.get("notifications"), sold);
    assert_eq!(out.get("recipients"), 3);
    assert!(out.get("digests") >= 3);
    for line in [
        "publishing the bookings",
        "inserted a batch of tickets",
        "sent one digest",
        "rejected \"",
        "bookings-closed",
        "dead-lettered \"",
    ] {
        assert!(
            out.log.contains(line),
            "no {line:?} in the log:\n{}",
            out.log
        );
    }
}

/// The book's change: cinema closes, and every cinema booking is rejected.
#[test]
fn a_closed_event_sells_nothing() {
    let out = run(
        "tickets",
        &[
            "--bookings",
            "300",
            "--closed",
            "cinema",
            "--malformed-every",
            "0",
        ],
        Duration::from_secs(30),
    );
    let counts = per_event(300, 42, 0);
    assert_eq!(out.get("tickets_cinema"), 0);
    assert_eq!(out.get("batches_cinema"), 0);
    assert_eq!(out.get("rejected"), counts[&Event::Cinema]);
    assert_eq!(out.get("dead_lettered"), 0);
    assert_eq!(out.get("settled_once"), 1);
}

/// At the book's own timings, on the paused clock: batches never mix batchers, and each
/// recipient gets at most one digest per 10 s window.
#[tokio::test(start_paused = true)]
async fn digests_come_once_per_window_at_the_books_timings() {
    let settings = Settings {
        seats: 120,
        time_scale: 1.0,
        ..Settings::default()
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(3600),
        tickets::run(tickets::bookings(400, 3, 40), &settings),
    )
    .await
    .expect("the run ends")
    .expect("the pipelines start");
    assert_eq!(outcome.window, Duration::from_secs(10));
    assert!(outcome.bookings_report.adds_up() && !outcome.bookings_report.timed_out);
    assert!(outcome.notifications_report.adds_up());
    assert_eq!(outcome.bookings.done(), 400);
    assert_eq!(outcome.bookings.unknown + outcome.notifications.unknown, 0);
    for batch in &outcome.batches {
        assert!(
            batch.events.iter().all(|e| e.batcher() == batch.batcher),
            "{batch:?}"
        );
        let size = match batch.batcher.as_str() {
            "cinema" => 75,
            "musical" => 100,
            _ => 50,
        };
        assert!(batch.size <= size, "{batch:?}");
    }
    let mut by_recipient: HashMap<&str, Vec<&tickets::Digest>> = HashMap::new();
    for digest in &outcome.digests {
        by_recipient
            .entry(&digest.recipient)
            .or_default()
            .push(digest);
    }
    assert_eq!(by_recipient.len(), 3);
    let emails: usize = outcome.digests.iter().map(|d| d.emails).sum();
    assert_eq!(emails as u64, outcome.notifications.published);
    for (recipient, mut digests) in by_recipient {
        digests.sort_by_key(|d| d.sent);
        for d in &digests {
            assert!(d.sent - d.opened <= outcome.window, "{recipient}: {d:?}");
        }
        for pair in digests.windows(2) {
            // The next window opens after the last digest went, and lasts its full length.
            assert!(pair[1].opened >= pair[0].sent, "{recipient}: {pair:?}");
            if pair[1].on_time {
                assert!(
                    pair[1].sent - pair[0].sent >= outcome.window,
                    "{recipient}: {pair:?}"
                );
            }
        }
    }
}
