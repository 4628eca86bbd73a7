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

/// How long a payment that asked the user to authenticate waits for them (seconds) before the
/// recharge counts as failed and the next one may start.
pub const AUTHENTICATION_WINDOW_SECS: i64 = 86_400;

/// How long a charge Stripe took may go without its payment settling it (seconds) before Coffer
/// asks Stripe what became of it (a webhook lost for good, a payment that failed later).
pub const CHECK_AFTER_SECS: i64 = 3_600;

/// The prefix of a recharge's payment's package id (`recharge:<id>`).
pub const PACKAGE_PREFIX: &str = "recharge:";

/// What an account asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeSettings {
    pub enabled: bool,
    /// Below this balance (minor units) a recharge starts.
    pub threshold: i64,
    /// What one recharge charges (minor units of the deployment's currency): the package's
    /// price when a package is named.
    pub amount: i64,
    /// The credit package one recharge buys; without one, `amount` buys credits at the
    /// project's custom-amount rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

/// What the project allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeBounds {
    pub max_per_recharge: i64,
    pub max_per_day: u32,
    /// What an account that names no threshold gets (minor units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_threshold: Option<i64>,
    /// What one recharge of an account that names neither an amount nor a package charges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_amount: Option<i64>,
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

impl Disabled {
    pub fn name(self) -> &'static str {
        match self {
            Disabled::ByUser => "user",
            Disabled::ByDeveloper => "developer",
            Disabled::ByBounds => "bounds",
            Disabled::ByFailures => "failures",
        }
    }
}

/// A recharge started and not settled yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub id: String,
    pub amount: i64,
    /// When it was decided (Unix seconds).
    #[serde(default)]
    pub since: i64,
    /// Stripe answered the confirmation: the charge is Stripe's now, never asked again.
    #[serde(default)]
    pub launched: bool,
    /// Its PaymentIntent, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Stripe asked the user to authenticate: nothing new starts until it settles.
    #[serde(default)]
    pub action_required: bool,
    /// What the account's user needs to authenticate (Stripe.js): the intent's client secret
    /// and the saved card, while `action_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
}

/// How a recharge ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Ended {
    Succeeded,
    Failed {
        reason: String,
    },
    /// Turned off (or no longer needed) before Stripe was asked to charge: nothing charged.
    Canceled,
}

/// The last recharge that ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finished {
    pub id: String,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    pub ended: Ended,
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
    /// The account's user turned it off (only they turn it on again).
    #[serde(default, skip_serializing_if = "is_false")]
    pub user_off: bool,
    /// The project's developer turned it off (the user cannot turn it on again).
    #[serde(default, skip_serializing_if = "is_false")]
    pub developer_off: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Finished>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// What a committed balance change decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start this recharge (its id is the Stripe idempotency key).
    Start(InFlight),
    /// Go on with the recharge decided earlier that Stripe has not answered yet (the same
    /// idempotency keys make it the same charge).
    Resume(InFlight),
    /// Drop the recharge decided earlier that Stripe was never asked to charge: auto-recharge
    /// was turned off, or the balance is back above the threshold.
    Abandon(InFlight),
    /// The user did not authenticate within the window: the recharge failed.
    GiveUp(InFlight),
    /// Stripe took the charge an hour ago and its payment has not settled it: ask Stripe what
    /// became of it.
    Check(InFlight),
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

/// Whether auto-recharge is off for the account: turned off by anyone, past the bounds, or
/// after `FAILURES_TO_DISABLE` failures in a row (until the user turns it on again).
pub fn is_off(settings: &RechargeSettings, state: &RechargeState) -> bool {
    !settings.enabled || state.disabled.is_some() || state.failures_in_a_row >= FAILURES_TO_DISABLE
}

/// How long after it was decided a recharge Stripe was never asked to charge may still go on.
pub const RESUME_WITHIN_SECS: i64 = 3600;

/// What a committed balance of `balance` decides at `now` (Unix seconds).
pub fn decide(
    settings: &RechargeSettings,
    bounds: &RechargeBounds,
    state: &RechargeState,
    balance: i64,
    now: i64,
) -> Decision {
    let off = is_off(settings, state);
    if let Some(current) = &state.in_flight {
        if !current.launched {
            // Never charged yet: it goes on only as it was decided, within today's bounds and
            // soon after (an older one is dropped; the next balance decides afresh).
            let stale = current.amount > bounds.max_per_recharge
                || now >= current.since.saturating_add(RESUME_WITHIN_SECS);
            return if off || stale || balance >= settings.threshold {
                Decision::Abandon(current.clone())
            } else {
                Decision::Resume(current.clone())
            };
        }
        if current.action_required
            && now >= current.since.saturating_add(AUTHENTICATION_WINDOW_SECS)
        {
            return Decision::GiveUp(current.clone());
        }
        if !current.action_required && now >= current.since.saturating_add(CHECK_AFTER_SECS) {
            return Decision::Check(current.clone());
        }
        return Decision::Nothing(Why::InFlight);
    }
    if off {
        return Decision::Nothing(Why::Off);
    }
    if settings.amount <= 0 || settings.amount > bounds.max_per_recharge {
        return Decision::Disable(Disabled::ByBounds);
    }
    if balance >= settings.threshold {
        return Decision::Nothing(Why::AboveThreshold);
    }
    let today = now.div_euclid(86_400);
    if state.day == today && state.started_today >= bounds.max_per_day {
        return Decision::Nothing(Why::DailyCap);
    }
    Decision::Start(InFlight {
        id: format!("rc{}", state.started.saturating_add(1)),
        amount: settings.amount,
        since: now,
        ..InFlight::default()
    })
}

/// The state after `decision` is written (a start counts toward the day's cap; an abandoned
/// recharge ends as canceled; one given up on is a failure).
pub fn apply(state: &RechargeState, decision: &Decision, now: i64) -> RechargeState {
    let mut next = state.clone();
    match decision {
        Decision::Start(recharge) => {
            let today = now.div_euclid(86_400);
            if next.day != today {
                next.day = today;
                next.started_today = 0;
            }
            next.started = next.started.saturating_add(1);
            next.started_today = next.started_today.saturating_add(1);
            next.in_flight = Some(recharge.clone());
        }
        Decision::Abandon(recharge) => {
            next = settle(state, &recharge.id, &Outcome::Canceled);
        }
        Decision::GiveUp(recharge) => {
            next = settle(
                state,
                &recharge.id,
                &Outcome::Failed("The payment was not authenticated within a day.".into()),
            );
        }
        Decision::Disable(why) => next.disabled = Some(*why),
        Decision::Resume(_) | Decision::Check(_) | Decision::Nothing(_) => {}
    }
    next
}

/// What became of a recharge's payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its PaymentIntent was made (not confirmed yet).
    Created { intent: String },
    /// Stripe took the confirmation (the payment is succeeding or processing): the webhook
    /// tells the rest.
    Launched { intent: String },
    /// Paid, and its credits committed.
    Succeeded,
    /// Declined or failed, with Stripe's reason (Stripe's answer to the confirmation).
    Failed(String),
    /// The payment record says it failed (a webhook). A recharge waiting for the user to
    /// authenticate is not ended by it: the user may still complete it.
    PaymentFailed(Option<String>),
    /// Stripe asks the user to authenticate (strong customer authentication).
    ActionRequired {
        intent: String,
        client_secret: String,
        payment_method: Option<String>,
    },
    /// Never charged: dropped before Stripe was asked.
    Canceled,
}

/// The state after an outcome of the recharge `id`. An outcome of another recharge than the
/// one in flight (late, repeated) changes nothing.
pub fn settle(state: &RechargeState, id: &str, outcome: &Outcome) -> RechargeState {
    let mut next = state.clone();
    let Some(current) = next.in_flight.as_mut().filter(|f| f.id == id) else {
        return next;
    };
    let ended = match outcome {
        Outcome::Created { intent } => {
            current.intent = Some(intent.clone());
            return next;
        }
        Outcome::Launched { intent } => {
            current.launched = true;
            current.intent = Some(intent.clone());
            // Stripe took it: nothing is left for the user to authenticate.
            current.action_required = false;
            current.client_secret = None;
            return next;
        }
        Outcome::ActionRequired {
            intent,
            client_secret,
            payment_method,
        } => {
            current.launched = true;
            current.intent = Some(intent.clone());
            current.action_required = true;
            current.client_secret = Some(client_secret.clone());
            current.payment_method = payment_method.clone();
            return next;
        }
        // Stripe's own answer to the confirmation settles a recharge not answered yet (the
        // webhook of an off-session attempt that asks for authentication says "failed" too).
        Outcome::PaymentFailed(_) if current.action_required || !current.launched => return next,
        Outcome::PaymentFailed(reason) => Ended::Failed {
            reason: reason
                .clone()
                .unwrap_or_else(|| "The payment failed.".into()),
        },
        Outcome::Failed(reason) => Ended::Failed {
            reason: reason.clone(),
        },
        Outcome::Succeeded => Ended::Succeeded,
        Outcome::Canceled if current.launched => return next,
        Outcome::Canceled => Ended::Canceled,
    };
    let finished = Finished {
        id: current.id.clone(),
        amount: current.amount,
        intent: current.intent.clone(),
        ended,
    };
    let since = current.since;
    next.in_flight = None;
    match &finished.ended {
        Ended::Succeeded => next.failures_in_a_row = 0,
        Ended::Failed { .. } => {
            next.failures_in_a_row = next.failures_in_a_row.saturating_add(1);
            // Off by failures whoever else turned it off: only the user lifts it (the
            // developer's or the user's own off stays recorded in its own flag).
            if next.failures_in_a_row >= FAILURES_TO_DISABLE {
                next.disabled = Some(Disabled::ByFailures);
            }
        }
        Ended::Canceled => {
            // Never charged: it does not count toward the day's cap.
            if next.day == since.div_euclid(86_400) {
                next.started_today = next.started_today.saturating_sub(1);
            }
        }
    }
    next.last = Some(finished);
    next
}

/// What the app's backend is told (`recharge.*` events) when the state went from `old` to
/// `new`: each recharge that ended (succeeded only once its credits were committed, since only
/// that commit settles it), one that asks for authentication, and auto-recharge turning off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Told {
    Succeeded(Finished),
    Failed(Finished, String),
    ActionRequired(InFlight),
    Disabled(Disabled),
}

pub fn told(old: Option<&RechargeState>, new: &RechargeState) -> Vec<Told> {
    let mut said = Vec::new();
    if let Some(last) = new.last.as_ref() {
        if old.and_then(|o| o.last.as_ref()).map(|l| &l.id) != Some(&last.id) {
            match &last.ended {
                Ended::Succeeded => said.push(Told::Succeeded(last.clone())),
                Ended::Failed { reason } => said.push(Told::Failed(last.clone(), reason.clone())),
                Ended::Canceled => {}
            }
        }
    }
    if let Some(current) = new.in_flight.as_ref().filter(|f| f.action_required) {
        let before = old.and_then(|o| o.in_flight.as_ref());
        if !before.is_some_and(|b| b.id == current.id && b.action_required) {
            said.push(Told::ActionRequired(current.clone()));
        }
    }
    if let Some(why) = new.disabled {
        let was = old.and_then(|o| o.disabled);
        // Off from on, or off by failures from off for another reason: said once.
        if was.is_none() || (why == Disabled::ByFailures && was != Some(Disabled::ByFailures)) {
            said.push(Told::Disabled(why));
        }
    }
    said
}

/// The recharge a payment's package id names (`recharge:<id>`), and what the payment's change
/// means for it: paid and credited, or failed.
pub fn payment_outcome(
    package_id: &str,
    succeeded_and_credited: bool,
    failed: bool,
) -> Option<(&str, Outcome)> {
    let id = package_id.strip_prefix(PACKAGE_PREFIX)?;
    if succeeded_and_credited {
        Some((id, Outcome::Succeeded))
    } else if failed {
        Some((id, Outcome::PaymentFailed(None)))
    } else {
        None
    }
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
    // Earlier states kept who turned it off only in `disabled`.
    let mut state = state;
    state.user_off |= state.disabled == Some(Disabled::ByUser);
    state.developer_off |= state.disabled == Some(Disabled::ByDeveloper);
    if !settings.enabled {
        // Each party's off is its own: turning it off never clears the other's.
        match by {
            ChangedBy::User => state.user_off = true,
            ChangedBy::Developer => state.developer_off = true,
        }
        state.disabled = state.disabled.or(Some(match by {
            ChangedBy::User => Disabled::ByUser,
            ChangedBy::Developer => Disabled::ByDeveloper,
        }));
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
    // a user never undoes the developer's. Each may lift their own off while the other's stands
    // (it stays off, said as the other's).
    match by {
        ChangedBy::Developer if state.user_off && !state.developer_off => {
            return Err("The account's user turned auto-recharge off; only they can turn it on.".into())
        }
        ChangedBy::User if state.developer_off && !state.user_off => {
            return Err("Auto-recharge was turned off for this account by the app; it cannot be turned on here.".into())
        }
        ChangedBy::User if state.developer_off => {
            state.user_off = false;
            state.failures_in_a_row = 0;
            state.disabled = Some(Disabled::ByDeveloper);
        }
        ChangedBy::Developer if state.user_off => {
            state.developer_off = false;
            state.disabled = Some(Disabled::ByUser);
        }
        ChangedBy::User => {
            // The user, whose card it is, turns it on again: earlier failures are forgiven.
            state.user_off = false;
            state.disabled = None;
            state.failures_in_a_row = 0;
        }
        ChangedBy::Developer => {
            // The developer lifts their own off; what failures or the bounds turned off stays off
            // until the user, whose card it is, turns it on.
            state.developer_off = false;
            if matches!(state.disabled, Some(Disabled::ByDeveloper) | None) {
                state.disabled = (state.failures_in_a_row >= FAILURES_TO_DISABLE)
                    .then_some(Disabled::ByFailures);
            }
        }
    }
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
            package: None,
        }
    }

    fn bounds() -> RechargeBounds {
        RechargeBounds {
            max_per_recharge: 10_000,
            max_per_day: 2,
            default_threshold: None,
            default_amount: None,
        }
    }

    fn launched(state: &RechargeState, id: &str) -> RechargeState {
        settle(
            state,
            id,
            &Outcome::Launched {
                intent: format!("pi_{id}"),
            },
        )
    }

    #[test]
    fn failures_while_the_developer_had_it_off_keep_it_off_until_the_user_turns_it_on() {
        let mut state = RechargeState {
            started: 3,
            failures_in_a_row: 2,
            in_flight: Some(InFlight {
                id: "rc3".into(),
                amount: 2_000,
                launched: true,
                intent: Some("pi_rc3".into()),
                ..InFlight::default()
            }),
            ..RechargeState::default()
        };
        let current = AccountRecharge {
            settings: settings(),
            setup_intent: Some("seti_1".into()),
            state: state.clone(),
        };
        let off = RechargeSettings {
            enabled: false,
            ..settings()
        };
        let by_developer = change_settings(
            Some(&current),
            off,
            None,
            Some(&bounds()),
            ChangedBy::Developer,
        )
        .expect("off");
        state = by_developer.state.clone();
        let failed = settle(&state, "rc3", &Outcome::Failed("declined".into()));
        assert_eq!(failed.failures_in_a_row, 3);
        assert!(told(Some(&state), &failed).contains(&Told::Disabled(Disabled::ByFailures)));
        let back_on = change_settings(
            Some(&AccountRecharge {
                state: failed.clone(),
                ..by_developer.clone()
            }),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::Developer,
        )
        .expect("the developer lifts their own off");
        assert!(is_off(&back_on.settings, &back_on.state));
        assert_eq!(
            decide(&back_on.settings, &bounds(), &back_on.state, 0, 10),
            Decision::Nothing(Why::Off)
        );
        // Even a state whose label was lost stays off by its count.
        let unlabeled = RechargeState {
            disabled: None,
            ..back_on.state.clone()
        };
        assert_eq!(
            decide(&settings(), &bounds(), &unlabeled, 0, 10),
            Decision::Nothing(Why::Off)
        );
        let by_user = change_settings(
            Some(&back_on),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::User,
        )
        .expect("the user turns it on");
        assert!(!is_off(&by_user.settings, &by_user.state));
    }

    #[test]
    fn a_recharge_never_charged_goes_on_only_within_the_bounds_and_the_hour() {
        let state = RechargeState {
            started: 1,
            in_flight: Some(InFlight {
                id: "rc1".into(),
                amount: 2_000,
                since: 100,
                ..InFlight::default()
            }),
            ..RechargeState::default()
        };
        assert!(matches!(
            decide(&settings(), &bounds(), &state, 0, 200),
            Decision::Resume(_)
        ));
        let lower = RechargeBounds {
            max_per_recharge: 1_000,
            ..bounds()
        };
        assert!(matches!(
            decide(&settings(), &lower, &state, 0, 200),
            Decision::Abandon(_)
        ));
        assert!(matches!(
            decide(&settings(), &bounds(), &state, 0, 100 + RESUME_WITHIN_SECS),
            Decision::Abandon(_)
        ));
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
                ..InFlight::default()
            })
        );
        // Redelivered before the write: the same decision, the same id (the same charge).
        assert_eq!(decide(&settings(), &bounds(), &state, 400, 0), first);
        let after = apply(&state, &first, 0);
        // Redelivered after the write but before Stripe answered: the same recharge goes on.
        let Decision::Resume(resumed) = decide(&settings(), &bounds(), &after, 400, 1) else {
            panic!("resume");
        };
        assert_eq!(resumed.id, "rc1");
        let after = launched(&after, "rc1");
        // Fifty more spends below the threshold: nothing more starts.
        for balance in (0..400).step_by(8) {
            assert_eq!(
                decide(&settings(), &bounds(), &after, balance, 1),
                Decision::Nothing(Why::InFlight)
            );
        }
        let paid = settle(&after, "rc1", &Outcome::Succeeded);
        assert_eq!(
            told(Some(&after), &paid),
            [Told::Succeeded(Finished {
                id: "rc1".into(),
                amount: 2_000,
                intent: Some("pi_rc1".into()),
                ended: Ended::Succeeded
            })]
        );
        assert!(told(Some(&paid), &paid).is_empty(), "told once");
    }

    #[test]
    fn three_failures_in_a_row_turn_it_off_and_off_means_off() {
        let mut state = RechargeState::default();
        let mut said = Vec::new();
        for day in 0..3 {
            let now = day * 86_400;
            let decision = decide(&settings(), &bounds(), &state, 100, now);
            let Decision::Start(recharge) = &decision else {
                panic!("{decision:?}");
            };
            let id = recharge.id.clone();
            state = launched(&apply(&state, &decision, now), &id);
            let next = settle(
                &state,
                &id,
                &Outcome::Failed("Your card was declined.".into()),
            );
            said.extend(told(Some(&state), &next));
            state = next;
        }
        assert_eq!(said.last(), Some(&Told::Disabled(Disabled::ByFailures)));
        assert_eq!(
            said.iter()
                .filter(
                    |t| matches!(t, Told::Failed(_, reason) if reason == "Your card was declined.")
                )
                .count(),
            3
        );
        assert_eq!(state.disabled, Some(Disabled::ByFailures));
        assert_eq!(
            decide(&settings(), &bounds(), &state, 100, 10 * 86_400),
            Decision::Nothing(Why::Off),
            "no fourth charge"
        );
    }

    #[test]
    fn an_authentication_asked_for_blocks_new_recharges_until_it_settles_or_a_day_passes() {
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds(), &state, 100, 0);
        let state = apply(&state, &decision, 0);
        let asked = Outcome::ActionRequired {
            intent: "pi_1".into(),
            client_secret: "pi_1_secret_x".into(),
            payment_method: Some("pm_1".into()),
        };
        let waiting = settle(&state, "rc1", &asked);
        let said = told(Some(&state), &waiting);
        assert!(
            matches!(&said[..], [Told::ActionRequired(f)] if f.client_secret.as_deref() == Some("pi_1_secret_x"))
        );
        let again = settle(&waiting, "rc1", &asked);
        assert!(told(Some(&waiting), &again).is_empty(), "told once");
        // The webhook of the failed off-session attempt does not end it: the user may still act.
        assert_eq!(
            settle(&waiting, "rc1", &Outcome::PaymentFailed(None)),
            waiting
        );
        assert_eq!(
            decide(&settings(), &bounds(), &waiting, 50, 0),
            Decision::Nothing(Why::InFlight)
        );
        let paid = settle(&waiting, "rc1", &Outcome::Succeeded);
        assert!(paid.in_flight.is_none());
        // A late outcome of a settled recharge changes nothing.
        assert_eq!(settle(&paid, "rc1", &Outcome::Failed("late".into())), paid);
        // Not authenticated within a day: a failure, and the next may start.
        let Decision::GiveUp(given_up) = decide(
            &settings(),
            &bounds(),
            &waiting,
            50,
            AUTHENTICATION_WINDOW_SECS,
        ) else {
            panic!("give up");
        };
        let failed = apply(
            &waiting,
            &Decision::GiveUp(given_up),
            AUTHENTICATION_WINDOW_SECS,
        );
        assert_eq!(failed.failures_in_a_row, 1);
        assert!(matches!(
            decide(
                &settings(),
                &bounds(),
                &failed,
                50,
                AUTHENTICATION_WINDOW_SECS
            ),
            Decision::Start(_)
        ));
    }

    #[test]
    fn a_recharge_stripe_never_charged_is_dropped_once_off_or_no_longer_needed() {
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds(), &state, 100, 0);
        let pending = apply(&state, &decision, 0);
        let off = RechargeSettings {
            enabled: false,
            ..settings()
        };
        let Decision::Abandon(dropped) = decide(&off, &bounds(), &pending, 100, 5) else {
            panic!("abandon");
        };
        let after = apply(&pending, &Decision::Abandon(dropped.clone()), 5);
        assert!(after.in_flight.is_none());
        assert_eq!(after.failures_in_a_row, 0);
        assert!(
            told(Some(&pending), &after).is_empty(),
            "nothing charged, nothing said"
        );
        assert!(matches!(
            decide(&settings(), &bounds(), &pending, 900, 5),
            Decision::Abandon(_)
        ));
        // Once Stripe took it, it is never dropped: it settles through its payment.
        let taken = launched(&pending, "rc1");
        assert_eq!(settle(&taken, "rc1", &Outcome::Canceled), taken);
        assert_eq!(
            decide(&off, &bounds(), &taken, 100, 5),
            Decision::Nothing(Why::InFlight)
        );
    }

    #[test]
    fn a_failed_payment_webhook_before_stripes_answer_or_while_the_user_authenticates_ends_nothing()
    {
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds(), &state, 100, 0);
        let created = settle(
            &apply(&state, &decision, 0),
            "rc1",
            &Outcome::Created {
                intent: "pi_1".into(),
            },
        );
        assert_eq!(
            settle(&created, "rc1", &Outcome::PaymentFailed(None)),
            created
        );
        let taken = launched(&created, "rc1");
        let failed = settle(&taken, "rc1", &Outcome::PaymentFailed(None));
        assert!(failed.in_flight.is_none());
        assert_eq!(failed.failures_in_a_row, 1);
    }

    #[test]
    fn a_recharge_never_charged_does_not_count_toward_the_days_cap() {
        let bounds = RechargeBounds {
            max_per_day: 1,
            ..bounds()
        };
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds, &state, 100, 10);
        let started = apply(&state, &decision, 10);
        assert_eq!(started.started_today, 1);
        let Decision::Abandon(dropped) = decide(&settings(), &bounds, &started, 900, 20) else {
            panic!("abandon");
        };
        let dropped = apply(&started, &Decision::Abandon(dropped), 20);
        assert_eq!(dropped.started_today, 0);
        assert!(matches!(
            decide(&settings(), &bounds, &dropped, 100, 30),
            Decision::Start(_)
        ));
    }

    #[test]
    fn a_charge_stripe_took_that_nothing_settles_is_checked_after_an_hour() {
        let state = RechargeState::default();
        let decision = decide(&settings(), &bounds(), &state, 100, 0);
        let taken = launched(&apply(&state, &decision, 0), "rc1");
        assert_eq!(
            decide(&settings(), &bounds(), &taken, 100, CHECK_AFTER_SECS - 1),
            Decision::Nothing(Why::InFlight)
        );
        assert!(matches!(
            decide(&settings(), &bounds(), &taken, 100, CHECK_AFTER_SECS),
            Decision::Check(_)
        ));
    }

    #[test]
    fn each_partys_off_is_its_own_and_either_may_lift_only_theirs() {
        let on = change_settings(
            None,
            settings(),
            Some("seti_1".into()),
            Some(&bounds()),
            ChangedBy::User,
        )
        .expect("on");
        let off = RechargeSettings {
            enabled: false,
            ..settings()
        };
        let user_off = change_settings(
            Some(&on),
            off.clone(),
            None,
            Some(&bounds()),
            ChangedBy::User,
        )
        .expect("user off");
        // The developer turning it off too never clears the user's off…
        let both_off = change_settings(
            Some(&user_off),
            off,
            None,
            Some(&bounds()),
            ChangedBy::Developer,
        )
        .expect("developer off");
        // …so the developer lifting theirs leaves it off, said as the user's.
        let developer_lifts = change_settings(
            Some(&both_off),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::Developer,
        )
        .expect("the developer lifts their own");
        assert_eq!(developer_lifts.state.disabled, Some(Disabled::ByUser));
        assert!(matches!(
            decide(&settings(), &bounds(), &developer_lifts.state, 0, 0),
            Decision::Nothing(Why::Off)
        ));
        assert!(change_settings(
            Some(&developer_lifts),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::Developer
        )
        .is_err());
        // After three failures the developer cannot charge the user's card again: only the user.
        let failed = AccountRecharge {
            state: RechargeState {
                disabled: Some(Disabled::ByFailures),
                failures_in_a_row: 3,
                ..RechargeState::default()
            },
            ..on
        };
        let by_developer = change_settings(
            Some(&failed),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::Developer,
        )
        .expect("nothing of the developer's to lift");
        assert_eq!(by_developer.state.disabled, Some(Disabled::ByFailures));
        let by_user = change_settings(
            Some(&failed),
            settings(),
            None,
            Some(&bounds()),
            ChangedBy::User,
        )
        .expect("the user turns it on");
        assert_eq!(by_user.state.disabled, None);
    }

    #[test]
    fn a_payment_names_its_recharge() {
        assert_eq!(
            payment_outcome("recharge:rc4", true, false),
            Some(("rc4", Outcome::Succeeded))
        );
        assert_eq!(
            payment_outcome("recharge:rc4", false, true),
            Some(("rc4", Outcome::PaymentFailed(None)))
        );
        assert_eq!(payment_outcome("recharge:rc4", false, false), None);
        assert_eq!(payment_outcome("pack-1", true, false), None);
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
            (0u8..5).prop_map(Event::Outcome),
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
                        if let Decision::Abandon(recharge) = &decision {
                            // Never charged: it does not count toward its day's cap.
                            if let Some(n) = starts_by_day.get_mut(&recharge.since.div_euclid(86_400)) {
                                *n = n.saturating_sub(1);
                            }
                        }
                        if let Decision::Resume(recharge) = &decision {
                            // Going on with a charge Stripe was not asked for yet is a start too.
                            prop_assert!(settings.enabled && state.disabled.is_none(), "off means off");
                            prop_assert!(!recharge.launched);
                        }
                        state = apply(&state, &decision, now);
                    }
                    Event::Outcome(which) => {
                        let id = ids.last().cloned().unwrap_or_default();
                        let outcome = match which {
                            0 => Outcome::Succeeded,
                            1 => Outcome::ActionRequired {
                                intent: "pi".into(),
                                client_secret: "pi_secret".into(),
                                payment_method: None,
                            },
                            2 => Outcome::Launched { intent: "pi".into() },
                            3 => Outcome::PaymentFailed(None),
                            _ => Outcome::Failed("card_declined".into()),
                        };
                        state = settle(&state, &id, &outcome);
                    }
                    Event::Tick(by) => now += by,
                    Event::TurnOff => settings.enabled = false,
                }
                prop_assert!(starts_by_day.values().all(|n| *n <= bounds.max_per_day));
            }
        }
    }
}
