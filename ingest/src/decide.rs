//! What becomes of a failed message: retried in the pipeline, or settled, and with which
//! outcome. Pure.

use std::sync::Arc;
use std::time::Duration;

use crate::ack::Outcome;
use crate::failure::{Action, Failure};
use crate::options::{MAX_WAIT, RetryPolicy};

/// The fate of a failed message, decided when its attempt fails.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Fate {
    /// Try again in the pipeline after this long.
    Retry(Duration),
    /// Done: settle it (after `handle_failed`), with the failure possibly rewritten.
    Final,
}

/// Whether a failure is retried in the pipeline, and how its failure reads if not.
///
/// `attempt` is the attempt that failed (1 for the first); `draining` says the pipeline is
/// shutting down, when nothing waits for a retry: a message that would have been retried is
/// handed back to its source to retry ([`Outcome::Retry`]). `random` picks the jitter.
pub(crate) fn decide(
    failure: &mut Failure,
    attempt: u32,
    policy: Option<&RetryPolicy>,
    draining: bool,
    random: f64,
) -> Fate {
    let wants_retry = match failure.action() {
        Action::Default => policy.is_some(),
        Action::Retry { .. } => true,
        Action::Nack { .. } | Action::DeadLetter => false,
    };
    if !wants_retry {
        return Fate::Final;
    }
    let explicit = match failure.action() {
        Action::Retry { after } => *after,
        _ => None,
    };
    match policy {
        Some(policy) if attempt < policy.max_attempts => {
            let after = explicit
                .unwrap_or_else(|| policy.backoff.delay(attempt, random))
                .min(MAX_WAIT);
            if draining {
                *failure = failure.clone().retry_after(after);
                Fate::Final
            } else {
                Fate::Retry(after)
            }
        }
        Some(policy) => {
            // Out of attempts: the stage's default for a failure that cannot be retried.
            let reason = format!(
                "gave up after {} attempts: {}",
                policy.max_attempts,
                failure.reason()
            );
            let mut given_up = Failure::new(reason).with_action(Action::Default);
            std::mem::swap(failure, &mut given_up);
            Fate::Final
        }
        // No policy: the source is asked to retry.
        None => Fate::Final,
    }
}

/// The outcome a failure settles with, once `handle_failed` has had its say. `dead_letters`
/// says whether the pipeline has a dead-letter sink.
pub(crate) fn outcome_of(failure: &Failure, dead_letters: bool) -> Outcome {
    match failure.action() {
        Action::Default if dead_letters => Outcome::DeadLetter {
            reason: failure.reason_arc(),
        },
        Action::Default => Outcome::Nack { requeue: false },
        Action::Retry { after } => Outcome::Retry {
            after: after.unwrap_or(Duration::ZERO),
        },
        Action::Nack { requeue } => Outcome::Nack { requeue: *requeue },
        Action::DeadLetter => Outcome::DeadLetter {
            reason: failure.reason_arc(),
        },
    }
}

/// The reason a settlement carries for a failure.
pub(crate) fn reason_of(failure: &Failure) -> Option<Arc<str>> {
    Some(failure.reason_arc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Backoff;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy::new(attempts).backoff(Backoff::exponential(Duration::from_millis(10)))
    }

    #[test]
    fn default_failures_retry_under_a_policy_until_it_gives_up() {
        let p = policy(3);
        let mut f = Failure::new("boom");
        assert_eq!(
            decide(&mut f, 1, Some(&p), false, 0.0),
            Fate::Retry(Duration::from_millis(10))
        );
        assert_eq!(
            decide(&mut f, 2, Some(&p), false, 0.0),
            Fate::Retry(Duration::from_millis(20))
        );
        assert_eq!(decide(&mut f, 3, Some(&p), false, 0.0), Fate::Final);
        assert_eq!(f.reason(), "gave up after 3 attempts: boom");
        assert_eq!(outcome_of(&f, false), Outcome::Nack { requeue: false });
        assert!(matches!(outcome_of(&f, true), Outcome::DeadLetter { .. }));
    }

    #[test]
    fn without_a_policy_a_retry_goes_back_to_the_source() {
        let mut f = Failure::new("later").retry_after(Duration::from_secs(5));
        assert_eq!(decide(&mut f, 1, None, false, 0.0), Fate::Final);
        assert_eq!(
            outcome_of(&f, true),
            Outcome::Retry {
                after: Duration::from_secs(5)
            }
        );
        let mut plain = Failure::new("no");
        assert_eq!(decide(&mut plain, 1, None, false, 0.0), Fate::Final);
        assert_eq!(outcome_of(&plain, false), Outcome::Nack { requeue: false });
    }

    #[test]
    fn explicit_actions_are_not_retried() {
        let p = policy(5);
        let mut f = Failure::new("poison").nack(true);
        assert_eq!(decide(&mut f, 1, Some(&p), false, 0.0), Fate::Final);
        assert_eq!(outcome_of(&f, true), Outcome::Nack { requeue: true });
        let mut d = Failure::new("bad").dead_letter();
        assert_eq!(decide(&mut d, 1, Some(&p), false, 0.0), Fate::Final);
        assert_eq!(
            outcome_of(&d, false),
            Outcome::DeadLetter {
                reason: Arc::from("bad")
            }
        );
    }

    #[test]
    fn an_explicit_delay_wins_over_the_backoff_and_draining_hands_retries_back() {
        let p = policy(5);
        let mut f = Failure::new("x").retry_after(Duration::from_secs(2));
        assert_eq!(
            decide(&mut f, 1, Some(&p), false, 0.0),
            Fate::Retry(Duration::from_secs(2))
        );
        let mut g = Failure::new("y");
        assert_eq!(decide(&mut g, 1, Some(&p), true, 0.0), Fate::Final);
        assert_eq!(
            outcome_of(&g, false),
            Outcome::Retry {
                after: Duration::from_millis(10)
            }
        );
    }
}
