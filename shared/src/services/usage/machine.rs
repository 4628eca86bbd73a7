//! The decisions of recording one usage, as a small state machine with no I/O. The service asks
//! it for the next step, does that step's reads or writes, and tells it what came of them.
//!
//! The rules it keeps:
//! - the first round works from this instance's cache; anything surprising (an unknown metric,
//!   a failed condition, too little left) reads afresh, and nothing is refused and no overage
//!   paid on cached data;
//! - a used-up allowance seen a moment ago is refused without reading again (a replay still
//!   gets its first answer);
//! - small usages take from this instance's leased block;
//! - beyond the allowance: the key's first answer if it has one, else leased units come back
//!   once, then units other instances hold make it "try again", then overage from credits, or
//!   a refusal;
//! - a bounded number of rounds, then the service answers that the allowance kept changing.

/// Rounds of read-decide-write before a busy allowance is given up on.
pub const ROUNDS: u32 = 30;

/// What the service does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Read the account's terms (plan, period, known metrics), from the cache unless `fresh`.
    Terms { fresh: bool },
    /// Look for a used-up verdict of this allowance reached here a moment ago.
    Exhausted,
    /// Read the allowance (from the cache unless `fresh`) and decide what to take from it.
    Allowance { fresh: bool },
    /// Take from this instance's leased block (leasing one if it has none).
    Lease,
    /// Take from the shards in one transaction with the usage record (a dry run only answers).
    Take,
    /// Look for the first answer of this usage's key.
    Replay,
    /// Give back leased units: this instance's, and those of leases that ended.
    Reclaim,
    /// Count the units other instances still hold in leases.
    HeldElsewhere,
    /// Pay the units beyond the allowance with credits (a dry run only checks the balance).
    Overage,
    /// Done: the answer the last step made.
    Answer,
    /// Done: the key's first answer.
    AnswerFirst,
    /// Done: refused.
    Refuse(Refusal),
    /// Done: the allowance kept changing for every round.
    GiveUp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The metric is in none of the scope's plans.
    UnknownMetric,
    /// The allowance is used up. `mark`: note it as reached (for `limit.reached`);
    /// `remember`: keep the verdict here for a moment.
    LimitReached { mark: bool, remember: bool },
    /// Units other instances hold come back within seconds: try again.
    HeldForNow { remember: bool },
    /// The account's credits are in another currency.
    OtherCurrency,
}

/// What came of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Terms {
        known_metric: bool,
    },
    /// `Some(held_elsewhere)`: a verdict says the quantity is more than was left.
    Exhausted(Option<bool>),
    /// How many units are beyond what the allowance has (0: it has room).
    Allowance {
        short: i64,
    },
    Lease(Leased),
    Took(bool),
    Replay {
        found: bool,
    },
    Reclaimed(usize),
    HeldElsewhere(i64),
    Overage(Paid),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leased {
    /// The usage was recorded from the block (or the key's first answer was found).
    Answered,
    /// No block could be had here: take from the shards.
    NoLease,
    /// The shard had less than the cache said: read afresh.
    ReadAgain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paid {
    Done,
    /// The plan has no overage price for the metric (or a meter bills it).
    NoPrice,
    /// The price of the units does not fit in a number.
    Overflow,
    /// A dry run whose balance would not pay it.
    WouldNotPay,
    /// The balance does not pay it.
    Insufficient,
    OtherCurrency,
    /// The write lost to another (or the key was used): look for a first answer, then again.
    Retry,
}

/// What a replay that finds nothing leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Refuse(Refusal),
    NextRound,
    BeyondAllowance,
}

/// One usage's rounds.
#[derive(Debug)]
pub struct UsageLoop {
    dry_run: bool,
    /// The quantity is small enough to take from a leased block.
    leasable: bool,
    round: u32,
    fresh: bool,
    reclaimed: bool,
    asked: Step,
    after_replay: Then,
}

impl UsageLoop {
    pub fn new(dry_run: bool, leasable: bool) -> Self {
        Self {
            dry_run,
            leasable,
            round: 1,
            fresh: false,
            reclaimed: false,
            asked: Step::Terms { fresh: false },
            after_replay: Then::NextRound,
        }
    }

    /// The first step.
    pub fn start(&self) -> Step {
        self.asked
    }

    /// The step after `outcome` (the outcome of the step asked last).
    pub fn next(&mut self, outcome: Outcome) -> Step {
        let step = self.decide(outcome);
        self.asked = step;
        step
    }

    fn decide(&mut self, outcome: Outcome) -> Step {
        match outcome {
            Outcome::Terms {
                known_metric: false,
            } => match self.fresh {
                false => self.next_round(),
                true => Step::Refuse(Refusal::UnknownMetric),
            },
            Outcome::Terms { known_metric: true } => {
                if !self.fresh && !self.dry_run {
                    Step::Exhausted
                } else {
                    Step::Allowance { fresh: self.fresh }
                }
            }
            Outcome::Exhausted(None) => Step::Allowance { fresh: self.fresh },
            Outcome::Exhausted(Some(held_elsewhere)) => {
                self.replay(Then::Refuse(match held_elsewhere {
                    true => Refusal::HeldForNow { remember: false },
                    false => Refusal::LimitReached {
                        mark: false,
                        remember: false,
                    },
                }))
            }
            Outcome::Allowance { short: 0 } => {
                if !self.dry_run && !self.fresh && self.leasable {
                    Step::Lease
                } else {
                    Step::Take
                }
            }
            // Beyond the allowance as known here: decide only on what is stored now.
            Outcome::Allowance { .. } if !self.fresh => self.next_round(),
            Outcome::Allowance { .. } => self.replay(Then::BeyondAllowance),
            Outcome::Lease(Leased::Answered) => Step::Answer,
            Outcome::Lease(Leased::NoLease) => Step::Take,
            Outcome::Lease(Leased::ReadAgain) => self.next_round(),
            Outcome::Took(true) => Step::Answer,
            Outcome::Took(false) => self.replay(Then::NextRound),
            Outcome::Replay { found: true } => Step::AnswerFirst,
            Outcome::Replay { found: false } => match self.after_replay {
                Then::Refuse(refusal) => Step::Refuse(refusal),
                Then::NextRound => self.next_round(),
                Then::BeyondAllowance if !self.reclaimed => {
                    self.reclaimed = true;
                    Step::Reclaim
                }
                Then::BeyondAllowance => self.held_or_overage(),
            },
            Outcome::Reclaimed(0) => self.held_or_overage(),
            Outcome::Reclaimed(_) => self.next_round(),
            Outcome::HeldElsewhere(held) if held > 0 => {
                Step::Refuse(Refusal::HeldForNow { remember: true })
            }
            Outcome::HeldElsewhere(_) => Step::Overage,
            Outcome::Overage(paid) => match paid {
                Paid::Done => Step::Answer,
                Paid::NoPrice => Step::Refuse(Refusal::LimitReached {
                    mark: !self.dry_run,
                    remember: !self.dry_run,
                }),
                Paid::Overflow | Paid::WouldNotPay => Step::Refuse(Refusal::LimitReached {
                    mark: false,
                    remember: false,
                }),
                Paid::Insufficient => Step::Refuse(Refusal::LimitReached {
                    mark: true,
                    remember: false,
                }),
                Paid::OtherCurrency => Step::Refuse(Refusal::OtherCurrency),
                Paid::Retry => self.replay(Then::NextRound),
            },
        }
    }

    fn replay(&mut self, then: Then) -> Step {
        self.after_replay = then;
        Step::Replay
    }

    /// Units other instances hold are counted before any refusal or charge (not in a dry run,
    /// which neither refuses for them nor charges).
    fn held_or_overage(&self) -> Step {
        match self.dry_run {
            false => Step::HeldElsewhere,
            true => Step::Overage,
        }
    }

    fn next_round(&mut self) -> Step {
        if self.round >= ROUNDS {
            return Step::GiveUp;
        }
        self.round += 1;
        self.fresh = true;
        Step::Terms { fresh: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds outcomes in turn and returns every step asked.
    fn run(dry_run: bool, leasable: bool, outcomes: &[Outcome]) -> Vec<Step> {
        let mut machine = UsageLoop::new(dry_run, leasable);
        let mut steps = vec![machine.start()];
        for outcome in outcomes {
            steps.push(machine.next(*outcome));
        }
        steps
    }

    const KNOWN: Outcome = Outcome::Terms { known_metric: true };
    const ROOM: Outcome = Outcome::Allowance { short: 0 };
    const SHORT: Outcome = Outcome::Allowance { short: 5 };
    const NOT_FOUND: Outcome = Outcome::Replay { found: false };

    #[test]
    fn the_fast_path_reads_nothing_fresh_and_takes_from_a_block_or_the_shards() {
        assert_eq!(
            run(
                false,
                true,
                &[
                    KNOWN,
                    Outcome::Exhausted(None),
                    ROOM,
                    Outcome::Lease(Leased::Answered)
                ]
            ),
            [
                Step::Terms { fresh: false },
                Step::Exhausted,
                Step::Allowance { fresh: false },
                Step::Lease,
                Step::Answer
            ]
        );
        // Too large for a block, or no block to be had: the shards.
        assert_eq!(
            run(false, false, &[KNOWN, Outcome::Exhausted(None), ROOM])[3],
            Step::Take
        );
        let steps = run(
            false,
            true,
            &[
                KNOWN,
                Outcome::Exhausted(None),
                ROOM,
                Outcome::Lease(Leased::NoLease),
                Outcome::Took(true),
            ],
        );
        assert_eq!(steps[4..], [Step::Take, Step::Answer]);
        // A dry run never leases, never reads a verdict, and answers from the take.
        assert_eq!(
            run(true, true, &[KNOWN, ROOM, Outcome::Took(true)]),
            [
                Step::Terms { fresh: false },
                Step::Allowance { fresh: false },
                Step::Take,
                Step::Answer
            ]
        );
    }

    #[test]
    fn an_unknown_metric_is_read_again_before_it_is_refused() {
        let unknown = Outcome::Terms {
            known_metric: false,
        };
        assert_eq!(
            run(false, true, &[unknown, unknown]),
            [
                Step::Terms { fresh: false },
                Step::Terms { fresh: true },
                Step::Refuse(Refusal::UnknownMetric)
            ]
        );
        // Known once read afresh: no verdict is trusted and no block is used in a fresh round.
        let steps = run(false, true, &[unknown, KNOWN, ROOM]);
        assert_eq!(steps[2..], [Step::Allowance { fresh: true }, Step::Take]);
    }

    #[test]
    fn a_recent_verdict_refuses_without_reading_but_a_replay_still_gets_its_answer() {
        let over = |held| {
            run(
                false,
                true,
                &[KNOWN, Outcome::Exhausted(Some(held)), NOT_FOUND],
            )
            .last()
            .copied()
        };
        assert_eq!(
            over(false),
            Some(Step::Refuse(Refusal::LimitReached {
                mark: false,
                remember: false
            }))
        );
        assert_eq!(
            over(true),
            Some(Step::Refuse(Refusal::HeldForNow { remember: false }))
        );
        let replayed = run(
            false,
            true,
            &[
                KNOWN,
                Outcome::Exhausted(Some(false)),
                Outcome::Replay { found: true },
            ],
        );
        assert_eq!(replayed.last(), Some(&Step::AnswerFirst));
    }

    #[test]
    fn nothing_is_refused_or_paid_on_cached_data() {
        let steps = run(false, true, &[KNOWN, Outcome::Exhausted(None), SHORT]);
        assert_eq!(steps.last(), Some(&Step::Terms { fresh: true }));
        // A failed take or a lost lease reads afresh too (after looking for a first answer).
        let steps = run(
            false,
            false,
            &[
                KNOWN,
                Outcome::Exhausted(None),
                ROOM,
                Outcome::Took(false),
                NOT_FOUND,
            ],
        );
        assert_eq!(steps[4..], [Step::Replay, Step::Terms { fresh: true }]);
        let steps = run(
            false,
            true,
            &[
                KNOWN,
                Outcome::Exhausted(None),
                ROOM,
                Outcome::Lease(Leased::ReadAgain),
            ],
        );
        assert_eq!(steps.last(), Some(&Step::Terms { fresh: true }));
    }

    /// Steps of a fresh round that finds the allowance short.
    fn short_fresh(dry_run: bool, then: &[Outcome]) -> Vec<Step> {
        let mut outcomes = vec![KNOWN, Outcome::Exhausted(None), SHORT, KNOWN, SHORT];
        if dry_run {
            outcomes = vec![KNOWN, SHORT, KNOWN, SHORT];
        }
        outcomes.extend_from_slice(then);
        let steps = run(dry_run, true, &outcomes);
        steps[outcomes.len() - then.len()..].to_vec()
    }

    #[test]
    fn beyond_the_allowance_leases_come_back_once_then_held_units_then_overage() {
        // First answer, if any.
        assert_eq!(
            short_fresh(false, &[Outcome::Replay { found: true }]),
            [Step::Replay, Step::AnswerFirst]
        );
        // Leased units came back: read again, and the next time no reclaim.
        assert_eq!(
            short_fresh(
                false,
                &[NOT_FOUND, Outcome::Reclaimed(2), KNOWN, SHORT, NOT_FOUND]
            ),
            [
                Step::Replay,
                Step::Reclaim,
                Step::Terms { fresh: true },
                Step::Allowance { fresh: true },
                Step::Replay,
                Step::HeldElsewhere
            ]
        );
        assert_eq!(
            short_fresh(
                false,
                &[NOT_FOUND, Outcome::Reclaimed(0), Outcome::HeldElsewhere(3)]
            ),
            [
                Step::Replay,
                Step::Reclaim,
                Step::HeldElsewhere,
                Step::Refuse(Refusal::HeldForNow { remember: true })
            ]
        );
        let paid = |paid| {
            short_fresh(
                false,
                &[
                    NOT_FOUND,
                    Outcome::Reclaimed(0),
                    Outcome::HeldElsewhere(0),
                    Outcome::Overage(paid),
                ],
            )
            .last()
            .copied()
        };
        assert_eq!(paid(Paid::Done), Some(Step::Answer));
        assert_eq!(
            paid(Paid::NoPrice),
            Some(Step::Refuse(Refusal::LimitReached {
                mark: true,
                remember: true
            }))
        );
        assert_eq!(
            paid(Paid::Insufficient),
            Some(Step::Refuse(Refusal::LimitReached {
                mark: true,
                remember: false
            }))
        );
        assert_eq!(
            paid(Paid::Overflow),
            Some(Step::Refuse(Refusal::LimitReached {
                mark: false,
                remember: false
            }))
        );
        assert_eq!(
            paid(Paid::OtherCurrency),
            Some(Step::Refuse(Refusal::OtherCurrency))
        );
        assert_eq!(paid(Paid::Retry), Some(Step::Replay));
    }

    #[test]
    fn a_dry_run_reclaims_but_neither_waits_for_held_units_nor_marks() {
        assert_eq!(
            short_fresh(
                true,
                &[
                    NOT_FOUND,
                    Outcome::Reclaimed(0),
                    Outcome::Overage(Paid::NoPrice)
                ]
            ),
            [
                Step::Replay,
                Step::Reclaim,
                Step::Overage,
                Step::Refuse(Refusal::LimitReached {
                    mark: false,
                    remember: false
                })
            ]
        );
        assert_eq!(
            short_fresh(
                true,
                &[
                    NOT_FOUND,
                    Outcome::Reclaimed(0),
                    Outcome::Overage(Paid::WouldNotPay)
                ]
            )
            .last(),
            Some(&Step::Refuse(Refusal::LimitReached {
                mark: false,
                remember: false
            }))
        );
    }

    #[test]
    fn rounds_are_bounded() {
        let mut machine = UsageLoop::new(false, true);
        let mut rounds = 1;
        loop {
            match machine.next(Outcome::Reclaimed(1)) {
                Step::Terms { fresh: true } => rounds += 1,
                Step::GiveUp => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(rounds, ROUNDS);
    }
}
