//! Auto-recharge, the rules: when a committed balance below an account's threshold starts a
//! recharge, and what each outcome does to the account's recharge state. Pure functions; the
//! stream consumer that reads balances and the webhook that learns outcomes write what they
//! decide in one conditional write on the state's version, so at most one recharge is in flight
//! per account whatever the number of balance changes or their redeliveries.
//!
//! A recharge's id is its account's sequence number: a redelivered balance change decides the
//! same id again, and the id is the Stripe idempotency key of its PaymentIntent, so a retry is
//! the same charge.

use serde::{Deserialize, Serialize};

/// Failures in a row that turn auto-recharge off.
pub const FAILURES_TO_DISABLE: u32 = 3;

/// What an account asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeSettings {
    pub enabled: bool,
    /// Below this balance (minor units) a recharge starts.
    pub threshold: i64,
    /// What one recharge charges (minor units of the deployment's currency).
    pub amount: i64,
}

/// What the project allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeBounds {
    pub max_per_recharge: i64,
    pub max_per_day: u32,
}

/// Why auto-recharge was turned off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Disabled {
    ByUser,
    ByDeveloper,
    /// The account's settings went past the project's bounds.
    ByBounds,
    /// Payments failed `FAILURES_TO_DISABLE` times in a row.
    ByFailures,
}

/// A recharge started and not settled yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub id: String,
    pub amount: i64,
    /// Stripe asked the user to authenticate: nothing new starts until it settles.
    #[serde(default)]
    pub action_required: bool,
}

/// An account's recharge state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeState {
    /// Recharges started so far (the next one's id is one more).
    pub started: u64,
    pub in_flight: Option<InFlight>,
    pub failures_in_a_row: u32,
    /// The day (days since the epoch, UTC) of `started_today`.
    pub day: i64,
    pub started_today: u32,
    pub disabled: Option<Disabled>,
}

/// What a committed balance change decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start this recharge (its id is the Stripe idempotency key).
    Start(InFlight),
    /// Turn auto-recharge off (the settings are past the project's bounds).
    Disable(Disabled),
    /// Nothing to do.
    Nothing(Why),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    Off,
    AboveThreshold,
    InFlight,
    DailyCap,
}

/// What a committed balance of `balance` decides at `now` (Unix seconds).
pub fn decide(
    settings: &RechargeSettings,
    bounds: &RechargeBounds,
    state: &RechargeState,
    balance: i64,
    now: i64,
) -> Decision {
    if !settings.enabled || state.disabled.is_some() {
        return Decision::Nothing(Why::Off);
    }
    if settings.amount <= 0 || settings.amount > bounds.max_per_recharge {
        return Decision::Disable(Disabled::ByBounds);
    }
    if balance >= settings.threshold {
        return Decision::Nothing(Why::AboveThreshold);
    }
    if state.in_flight.is_some() {
        return Decision::Nothing(Why::InFlight);
    }
    let today = now.div_euclid(86_400);
    if state.day == today && state.started_today >= bounds.max_per_day {
        return Decision::Nothing(Why::DailyCap);
    }
    Decision::Start(InFlight {
        id: format!("rc{}", state.started + 1),
        amount: settings.amount,
        action_required: false,
    })
}

/// The state after `decision` is written (a start counts toward the day's cap).
pub fn apply(state: &RechargeState, decision: &Decision, now: i64) -> RechargeState {
    let mut next = state.clone();
    match decision {
        Decision::Start(recharge) => {
            let today = now.div_euclid(86_400);
            if next.day != today {
                next.day = today;
                next.started_today = 0;
            }
            next.started += 1;
            next.started_today += 1;
            next.in_flight = Some(recharge.clone());
        }
        Decision::Disable(why) => next.disabled = Some(*why),
        Decision::Nothing(_) => {}
    }
    next
}

/// How a recharge's payment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Paid, and its credits committed.
    Succeeded,
    /// Declined or failed, with Stripe's reason.
    Failed(String),
    /// Stripe asks the user to authenticate (strong customer authentication).
    ActionRequired,
}

/// What an outcome of the recharge `id` tells, and the state after it. An outcome of another
/// recharge than the one in flight (late, repeated) changes nothing and tells nothing.
pub fn settle(state: &RechargeState, id: &str, outcome: &Outcome) -> (RechargeState, Vec<Told>) {
    let mut next = state.clone();
    let Some(current) = next.in_flight.as_mut().filter(|f| f.id == id) else {
        return (next, Vec::new());
    };
    let mut told = Vec::new();
    match outcome {
        Outcome::Succeeded => {
            next.in_flight = None;
            next.failures_in_a_row = 0;
            told.push(Told::Succeeded);
        }
        Outcome::ActionRequired => {
            if !current.action_required {
                current.action_required = true;
                told.push(Told::ActionRequired);
            }
        }
        Outcome::Failed(reason) => {
            next.in_flight = None;
            next.failures_in_a_row += 1;
            told.push(Told::Failed(reason.clone()));
            if next.failures_in_a_row >= FAILURES_TO_DISABLE && next.disabled.is_none() {
                next.disabled = Some(Disabled::ByFailures);
                told.push(Told::Disabled);
            }
        }
    }
    (next, told)
}

/// What the app's backend is told (`recharge.*` events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    Succeeded,
    Failed(String),
    ActionRequired,
    Disabled,
}

/// An account's auto-recharge: what it asked for, the saved card to charge (the SetupIntent that
/// saved it), and its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRecharge {
    pub settings: RechargeSettings,
    pub setup_intent: Option<String>,
    #[serde(default)]
    pub state: RechargeState,
}

/// Who changes an account's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangedBy {
    User,
    Developer,
}

/// The account's auto-recharge after a change of its settings, or why it is refused (in words).
/// Turning it on needs a saved card and amounts within the project's bounds, and starts afresh
/// (no failure counted); turning it off records who did. A recharge already in flight is left to
/// settle: it is never started again nor credited twice.
pub fn change_settings(
    current: Option<&AccountRecharge>,
    settings: RechargeSettings,
    setup_intent: Option<String>,
    bounds: Option<&RechargeBounds>,
    by: ChangedBy,
) -> Result<AccountRecharge, String> {
    let state = current.map(|c| c.state.clone()).unwrap_or_default();
    let setup_intent = setup_intent.or_else(|| current.and_then(|c| c.setup_intent.clone()));
    if settings.threshold < 0 {
        return Err("threshold must not be negative.".into());
    }
    if !settings.enabled {
        let mut state = state;
        state.disabled = Some(match by {
            ChangedBy::User => Disabled::ByUser,
            ChangedBy::Developer => Disabled::ByDeveloper,
        });
        return Ok(AccountRecharge {
            settings,
            setup_intent,
            state,
        });
    }
    let Some(bounds) = bounds else {
        return Err("This project does not offer auto-recharge.".into());
    };
    if settings.amount <= 0 || settings.amount > bounds.max_per_recharge {
        return Err(format!(
            "amount must be above zero and at most the project's {} a recharge.",
            bounds.max_per_recharge
        ));
    }
    if setup_intent.is_none() {
        return Err(
            "setupIntentId (the SetupIntent that saved the card to charge) is required to turn auto-recharge on."
                .into(),
        );
    }
    // Off stays off for the other party: a developer never turns a user's opt-out back on, and
    // a user never undoes the developer's.
    match (state.disabled, by) {
        (Some(Disabled::ByUser), ChangedBy::Developer) => {
            return Err("The account's user turned auto-recharge off; only they can turn it on.".into())
        }
        (Some(Disabled::ByDeveloper), ChangedBy::User) => {
            return Err("Auto-recharge was turned off for this account by the app; it cannot be turned on here.".into())
        }
        _ => {}
    }
    let mut state = state;
    state.disabled = None;
    state.failures_in_a_row = 0;
    Ok(AccountRecharge {
        settings,
        setup_intent,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn settings() -> RechargeSettings {
        RechargeSettings {
            enabled: true,
            threshold: 500,
            amount: 2_000,
        }
    }

    fn bounds() -> RechargeBounds {
        RechargeBounds {
            max_per_recharge: 10_000,
            max_per_day: 2,
        }
    }

    #[test]
    fn a_balance_below_the_threshold_starts_one_recharge_and_its_redelivery_the_same_one() {
        let state = RechargeState::default();
        let first = decide(&settings(), &bounds(), &state, 400, 0);
        assert_eq!(
            first,
            Decision::Start(InFlight {
                id: "rc1".into(),
                amount: 2_000,
                action_required: false
            })
        );
        // Redelivered before the write: the same decision, the same id (the same charge).
        assert_eq!(decide(&settings(), &bounds(), &state, 400, 0), first);
        let after = apply(&state, &first, 0);
        // Fifty more spends below the threshold: nothing more starts.
        for balance in (0..400).step_by(8) {
            assert_eq!(
                decide(&settings(), &bounds(), &after, balance, 1),
                Decision::Nothing(Why::InFlight)
            );
        }
    }

    #[test]
    fn three_failures_in_a_row_turn_it_off_and_off_means_off() {
        let mut state = RechargeState::default();
        let mut told = Vec::new();
        for day in 0..3 {
            let now = day * 86_400;
            let decision = decide(&settings(), &bounds(), &state, 100, now);
            let Decision::Start(recharge) = &decision else {
                panic!("{decision:?}");
            };
            let id = recharge.id.clone();
            state = apply(&state, &decision, now);
            let (next, said) = settle(&state, &id, &Outcome::Failed("card_declined".into()));
            state = next;
            told.extend(said);
        }
        assert_eq!(told.last(), Some(&Told::Disabled));
        assert_eq!(state.disabled, Some(Disabled::ByFailures));
        assert_eq!(
            decide(&settings(), &bounds(), &state, 100, 10 * 86_400),
            Decision::Nothing(Why::Off),
            "no fourth charge"
        );
    }

    #[test]
    fn an_authentication_asked_for_blocks_new_recharges_until_it_settles() {
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds(), &state, 100, 0);
        let state = apply(&state, &decision, 0);
        let (state, told) = settle(&state, "rc1", &Outcome::ActionRequired);
        assert_eq!(told, [Told::ActionRequired]);
        let (state, again) = settle(&state, "rc1", &Outcome::ActionRequired);
        assert!(again.is_empty(), "told once");
        assert_eq!(
            decide(&settings(), &bounds(), &state, 50, 0),
            Decision::Nothing(Why::InFlight)
        );
        let (state, told) = settle(&state, "rc1", &Outcome::Succeeded);
        assert_eq!(told, [Told::Succeeded]);
        assert!(state.in_flight.is_none());
        // A late outcome of a settled recharge changes nothing.
        assert_eq!(
            settle(&state, "rc1", &Outcome::Failed("late".into())),
            (state.clone(), Vec::new())
        );
    }

    #[test]
    fn turning_it_on_needs_a_card_and_the_bounds_and_forgives_failures_turning_it_off_says_who() {
        let bounds = bounds();
        let failed = AccountRecharge {
            settings: settings(),
            setup_intent: Some("seti_1".into()),
            state: RechargeState {
                failures_in_a_row: 3,
                disabled: Some(Disabled::ByFailures),
                ..RechargeState::default()
            },
        };
        let on = change_settings(
            Some(&failed),
            settings(),
            None,
            Some(&bounds),
            ChangedBy::User,
        )
        .expect("on again");
        let by_user = change_settings(
            Some(&on),
            RechargeSettings {
                enabled: false,
                ..settings()
            },
            None,
            Some(&bounds),
            ChangedBy::User,
        )
        .expect("off");
        assert!(
            change_settings(
                Some(&by_user),
                settings(),
                None,
                Some(&bounds),
                ChangedBy::Developer
            )
            .unwrap_err()
            .contains("only they"),
            "a developer never turns a user's opt-out back on"
        );
        assert_eq!((on.state.disabled, on.state.failures_in_a_row), (None, 0));
        assert_eq!(on.setup_intent.as_deref(), Some("seti_1"), "the card kept");
        let off = change_settings(
            Some(&on),
            RechargeSettings {
                enabled: false,
                ..settings()
            },
            None,
            Some(&bounds),
            ChangedBy::Developer,
        )
        .expect("off");
        assert_eq!(off.state.disabled, Some(Disabled::ByDeveloper));
        assert!(
            change_settings(Some(&off), settings(), None, Some(&bounds), ChangedBy::User).is_err(),
            "a user never undoes the developer's off"
        );
        assert!(
            change_settings(None, settings(), None, Some(&bounds), ChangedBy::User)
                .unwrap_err()
                .contains("setupIntentId")
        );
        assert!(change_settings(
            None,
            RechargeSettings {
                amount: 20_000,
                ..settings()
            },
            Some("seti_1".into()),
            Some(&bounds),
            ChangedBy::User
        )
        .unwrap_err()
        .contains("at most"));
        assert!(change_settings(
            None,
            settings(),
            Some("seti_1".into()),
            None,
            ChangedBy::User
        )
        .unwrap_err()
        .contains("does not offer"));
    }

    #[test]
    fn settings_past_the_projects_bounds_turn_it_off() {
        let over = RechargeSettings {
            amount: 20_000,
            ..settings()
        };
        assert_eq!(
            decide(&over, &bounds(), &RechargeState::default(), 0, 0),
            Decision::Disable(Disabled::ByBounds)
        );
    }

    /// One thing that happens to an account.
    #[derive(Clone, Debug)]
    enum Event {
        Balance(i64),
        Outcome(u8),
        Tick(i64),
        TurnOff,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0i64..1_000).prop_map(Event::Balance),
            (0u8..4).prop_map(Event::Outcome),
            (0i64..50_000).prop_map(Event::Tick),
            Just(Event::TurnOff),
        ]
    }

    proptest! {
        /// Any sequence of balances, outcomes (in any order, repeated, late), clock moves and a
        /// user turning it off: never two recharges in flight, never more a day than the cap,
        /// never a start once off, never a start after three failures in a row.
        #[test]
        fn at_most_one_in_flight_within_the_daily_cap_and_never_once_off(events in proptest::collection::vec(event(), 1..80)) {
            let mut settings = settings();
            let bounds = bounds();
            let mut state = RechargeState::default();
            let mut now = 0i64;
            let mut starts_by_day: std::collections::BTreeMap<i64, u32> = Default::default();
            let mut ids: Vec<String> = Vec::new();
            for event in events {
                match event {
                    Event::Balance(balance) => {
                        let decision = decide(&settings, &bounds, &state, balance, now);
                        if let Decision::Start(recharge) = &decision {
                            prop_assert!(state.in_flight.is_none(), "one in flight");
                            prop_assert!(settings.enabled && state.disabled.is_none(), "off means off");
                            prop_assert!(state.failures_in_a_row < FAILURES_TO_DISABLE);
                            prop_assert!(!ids.contains(&recharge.id), "a new id each time");
                            ids.push(recharge.id.clone());
                            *starts_by_day.entry(now.div_euclid(86_400)).or_default() += 1;
                        }
                        state = apply(&state, &decision, now);
                    }
                    Event::Outcome(which) => {
                        let id = ids.last().cloned().unwrap_or_default();
                        let outcome = match which {
                            0 => Outcome::Succeeded,
                            1 => Outcome::ActionRequired,
                            _ => Outcome::Failed("card_declined".into()),
                        };
                        state = settle(&state, &id, &outcome).0;
                    }
                    Event::Tick(by) => now += by,
                    Event::TurnOff => settings.enabled = false,
                }
                prop_assert!(starts_by_day.values().all(|n| *n <= bounds.max_per_day));
            }
        }
    }
}
