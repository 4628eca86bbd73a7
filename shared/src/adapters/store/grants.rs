//! Grants through the API and reservations: each one wallet change (see `wallet.rs`), keyed by
//! its entry, so a replay finds the first entry and answers what it recorded.

use super::codec::{get_s, n, s, Fields, Item};
use super::wallet::{BucketMove, WalletDecision};
use super::{Store, StoreError};
use crate::domain::buckets::{BucketKind, Refusal, Terms, Wallet};
pub use crate::domain::grants::{
    GrantOutcome, GrantRequest, GrantState, HoldOutcome, HoldState, HoldStatus,
};
use crate::domain::ledger::EntryKind;
use crate::domain::money::Currency;
use crate::domain::records::UserId;

fn refused(why: Refusal) -> StoreError {
    StoreError::Refused(format!("a wallet change: {why:?}"))
}

fn moves_of(item: &Item) -> Vec<BucketMove> {
    get_s(item, "buckets")
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// What a recorded grant entry says.
fn grant_from(entry: &Item, entry_id: &str, replayed: bool) -> Result<GrantState, StoreError> {
    let f = Fields::of(entry);
    Ok(GrantState {
        grant_id: f.opt_text("grantId")?.unwrap_or(entry_id).to_owned(),
        entry_id: entry_id.to_owned(),
        amount: f.opt_int("grantAmount")?.unwrap_or(f.int("amount")?),
        reason: f.opt_text("reason")?.unwrap_or_default().to_owned(),
        expires_at: f.opt_int("grantExpiresAt")?,
        priority: f.opt_int("priority")?.unwrap_or(0) as i32,
        left: f.opt_int("leftAfter")?.unwrap_or(0),
        balance: f.opt_int("balanceAfter")?.unwrap_or(0),
        replayed,
    })
}

fn int_attr(name: &str, value: i64) -> (String, aws_sdk_dynamodb::types::AttributeValue) {
    (name.to_owned(), n(value))
}

fn text_attr(name: &str, value: &str) -> (String, aws_sdk_dynamodb::types::AttributeValue) {
    (name.to_owned(), s(value))
}

/// The bucket a grant's credits went to (its own, or the one of the same terms it joined at
/// the account's bound).
fn grant_bucket(grant: &Item, grant_id: &str) -> String {
    moves_of(grant)
        .into_iter()
        .next()
        .map_or_else(|| grant_id.to_owned(), |m| m.b)
}

fn left_in(wallet: &Wallet, bucket: &str, now: i64) -> i64 {
    wallet
        .bucket(bucket)
        .filter(|b| b.live_at(now))
        .map_or(0, |b| b.left)
}

impl Store {
    /// Grants promotional credits as the entry `grant_id`, once.
    pub async fn grant_credits(
        &self,
        user: &UserId,
        grant_id: &str,
        request: &GrantRequest<'_>,
        currency: &Currency,
    ) -> Result<GrantOutcome, StoreError> {
        let fingerprint = request.fingerprint();
        let probe = [grant_id.to_owned()];
        self.change_wallet(user, currency, &probe, |wallet, seen| {
            if let Some(first) = seen.entries.get(grant_id) {
                return Ok(WalletDecision::Answer(
                    if get_s(first, "request") == Some(fingerprint.as_str()) {
                        GrantOutcome::Done(grant_from(first, grant_id, true)?)
                    } else {
                        GrantOutcome::KeyConflict
                    },
                ));
            }
            if !seen.same_currency {
                return Ok(WalletDecision::Answer(GrantOutcome::CurrencyMismatch));
            }
            let terms = Terms {
                kind: BucketKind::Promotional,
                priority: request.priority,
                expires_at: request.expires_at,
                rollover_cap: None,
            };
            let step = match wallet.credit_step(
                grant_id,
                EntryKind::Grant,
                terms.bucket(grant_id, seen.now_s, request.amount),
            ) {
                Ok(step) => step,
                Err(Refusal::TooManyBuckets) => {
                    return Ok(WalletDecision::Answer(GrantOutcome::TooManyBuckets))
                }
                Err(other) => return Err(refused(other)),
            };
            let bucket = step
                .moves
                .first()
                .map_or_else(|| grant_id.to_owned(), |(b, _)| b.clone());
            let state = GrantState {
                grant_id: grant_id.to_owned(),
                entry_id: grant_id.to_owned(),
                amount: request.amount,
                reason: request.reason.to_owned(),
                expires_at: request.expires_at,
                priority: request.priority,
                left: left_in(wallet, &bucket, seen.now_s),
                balance: wallet.balance(seen.now_s),
                replayed: false,
            };
            let mut attributes = vec![
                text_attr("request", &fingerprint),
                text_attr("reason", request.reason),
                text_attr("by", request.by),
                text_attr("grantId", grant_id),
                int_attr("grantAmount", request.amount),
                int_attr("priority", i64::from(request.priority)),
                int_attr("leftAfter", state.left),
                int_attr("balanceAfter", state.balance),
                text_attr("gsi1pk", &self.keys.history_pk(user)),
                text_attr("gsi1sk", &super::keys::history_sk(seen.now_ms, grant_id)),
            ];
            if let Some(at) = request.expires_at {
                attributes.push(int_attr("grantExpiresAt", at));
            }
            Ok(WalletDecision::Write {
                steps: vec![step],
                main: grant_id.to_owned(),
                attributes,
                answer: GrantOutcome::Done(state),
            })
        })
        .await
    }

    /// Adjusts a grant by `delta` (negative: taken back, never more than is left of it) as the
    /// entry `entry_id`, once; or with `delta: None`, voids what is left of it.
    #[allow(clippy::too_many_arguments)]
    pub async fn change_grant(
        &self,
        user: &UserId,
        grant_id: &str,
        entry_id: &str,
        delta: Option<i64>,
        reason: &str,
        by: &str,
        currency: &Currency,
    ) -> Result<GrantOutcome, StoreError> {
        let fingerprint = format!(
            "{grant_id}|{}|{reason}",
            delta.map_or("void".into(), |d| d.to_string())
        );
        let probe = [grant_id.to_owned(), entry_id.to_owned()];
        self.change_wallet(user, currency, &probe, |wallet, seen| {
            // Only a grant made through the API (an invoice's included credits, an operator's
            // or a tier's grant are not the developer's to change).
            let Some(grant) = seen.entries.get(grant_id).filter(|g| {
                get_s(g, "kind") == Some(EntryKind::Grant.as_str()) && g.contains_key("grantId")
            }) else {
                return Ok(WalletDecision::Answer(GrantOutcome::NotFound));
            };
            let first = grant_from(grant, grant_id, false)?;
            if let Some(earlier) = seen.entries.get(entry_id) {
                return Ok(WalletDecision::Answer(
                    // A voiding is the same request whatever its reason.
                    if delta.is_none() || get_s(earlier, "request") == Some(fingerprint.as_str()) {
                        GrantOutcome::Done(GrantState {
                            entry_id: entry_id.to_owned(),
                            left: Fields::of(earlier).opt_int("leftAfter")?.unwrap_or(0),
                            balance: Fields::of(earlier).opt_int("balanceAfter")?.unwrap_or(0),
                            replayed: true,
                            ..first
                        })
                    } else {
                        GrantOutcome::KeyConflict
                    },
                ));
            }
            let bucket = grant_bucket(grant, grant_id);
            // A grant that shares its bucket with others (joined at the account's bound) cannot
            // be told apart from them: it is not changed.
            if bucket != grant_id || wallet.bucket(&bucket).is_some_and(|b| b.merged) {
                return Ok(WalletDecision::Answer(GrantOutcome::Shared));
            }
            let live = first.expires_at.is_none_or(|at| seen.now_s < at);
            let step = match delta {
                Some(more) if more > 0 => {
                    if !live {
                        return Ok(WalletDecision::Answer(GrantOutcome::Expired));
                    }
                    let terms = Terms {
                        kind: BucketKind::Promotional,
                        priority: first.priority,
                        expires_at: first.expires_at,
                        rollover_cap: None,
                    };
                    wallet.credit_step(
                        entry_id,
                        EntryKind::GrantAdjusted,
                        terms.bucket(&bucket, seen.now_s, more),
                    )
                }
                Some(less) => {
                    if !live {
                        return Ok(WalletDecision::Answer(GrantOutcome::Expired));
                    }
                    wallet.take_from_step(
                        entry_id,
                        EntryKind::GrantAdjusted,
                        &bucket,
                        Some(less.saturating_neg()),
                    )
                }
                None => {
                    if wallet.bucket(&bucket).is_none() {
                        // Spent, expired or pruned: nothing is left to void.
                        Ok(crate::domain::buckets::Step {
                            entry_id: entry_id.to_owned(),
                            kind: EntryKind::GrantVoided,
                            amount: 0,
                            moves: Vec::new(),
                            debt: 0,
                            hold: None,
                            captured: None,
                            doomed: 0,
                        })
                    } else {
                        let left = left_in(wallet, &bucket, seen.now_s);
                        wallet.take_from_step(entry_id, EntryKind::GrantVoided, &bucket, Some(left))
                    }
                }
            };
            let step = match step {
                Ok(step) => step,
                Err(Refusal::NotEnoughLeft { left }) => {
                    return Ok(WalletDecision::Answer(GrantOutcome::NotEnoughLeft { left }))
                }
                Err(Refusal::TooManyBuckets) => {
                    return Ok(WalletDecision::Answer(GrantOutcome::TooManyBuckets))
                }
                Err(other) => return Err(refused(other)),
            };
            let state = GrantState {
                entry_id: entry_id.to_owned(),
                left: left_in(wallet, &bucket, seen.now_s),
                balance: wallet.balance(seen.now_s),
                replayed: false,
                ..first
            };
            let attributes = vec![
                text_attr("request", &fingerprint),
                text_attr("reason", reason),
                text_attr("by", by),
                text_attr("grantId", grant_id),
                int_attr("leftAfter", state.left),
                int_attr("balanceAfter", state.balance),
            ];
            Ok(WalletDecision::Write {
                steps: vec![step],
                main: entry_id.to_owned(),
                attributes,
                answer: GrantOutcome::Done(state),
            })
        })
        .await
    }

    /// Sets `amount` aside as the reservation `hold_id` until `until`, once per id.
    #[allow(clippy::too_many_arguments)]
    pub async fn hold_credits(
        &self,
        user: &UserId,
        hold_id: &str,
        amount: i64,
        ttl_seconds: i64,
        by: &str,
        currency: &Currency,
    ) -> Result<HoldOutcome, StoreError> {
        let entry = format!("hold:{hold_id}");
        let (captured_entry, released_entry) =
            (format!("capture:{hold_id}"), format!("release:{hold_id}"));
        let probe = [
            entry.clone(),
            captured_entry.clone(),
            released_entry.clone(),
        ];
        let fingerprint = format!("{amount}|{ttl_seconds}");
        self.change_wallet(user, currency, &probe, |wallet, seen| {
            if let Some(first) = seen.entries.get(&entry) {
                if get_s(first, "request") != Some(fingerprint.as_str()) {
                    return Ok(WalletDecision::Answer(HoldOutcome::KeyConflict));
                }
                let f = Fields::of(first);
                // The reservation as it stands now: held, or what became of it.
                let (status, captured) = if let Some(done) = seen.entries.get(&captured_entry) {
                    (HoldStatus::Captured, Fields::of(done).opt_int("captured")?)
                } else if let Some(done) = seen.entries.get(&released_entry) {
                    let status = if get_s(done, "reason") == Some("released") {
                        HoldStatus::Released
                    } else {
                        HoldStatus::Expired
                    };
                    (status, None)
                } else if wallet.holds.contains_key(hold_id) {
                    (HoldStatus::Held, None)
                } else {
                    (HoldStatus::Expired, None)
                };
                return Ok(WalletDecision::Answer(HoldOutcome::Done(HoldState {
                    hold_id: hold_id.to_owned(),
                    amount,
                    captured,
                    status,
                    until: f.int("until")?,
                    balance: f.opt_int("balanceAfter")?.unwrap_or(0),
                    replayed: true,
                })));
            }
            if !seen.same_currency {
                return Ok(WalletDecision::Answer(HoldOutcome::CurrencyMismatch));
            }
            let until = seen.now_s.saturating_add(ttl_seconds);
            let step = match wallet.hold_step(hold_id, amount, seen.now_s, until, &self.spend_order)
            {
                Ok(step) => step,
                Err(Refusal::Short { available }) => {
                    return Ok(WalletDecision::Answer(HoldOutcome::Short { available }))
                }
                Err(Refusal::TooManyHolds) => {
                    return Ok(WalletDecision::Answer(HoldOutcome::TooManyHolds))
                }
                Err(Refusal::Taken) => return Ok(WalletDecision::Answer(HoldOutcome::KeyConflict)),
                Err(other) => return Err(refused(other)),
            };
            let state = HoldState {
                hold_id: hold_id.to_owned(),
                amount,
                captured: None,
                status: HoldStatus::Held,
                until,
                balance: wallet.balance(seen.now_s),
                replayed: false,
            };
            Ok(WalletDecision::Write {
                steps: vec![step],
                main: entry.clone(),
                attributes: vec![
                    text_attr("request", &fingerprint),
                    text_attr("by", by),
                    int_attr("until", until),
                    int_attr("balanceAfter", state.balance),
                ],
                answer: HoldOutcome::Done(state),
            })
        })
        .await
    }

    /// Captures `amount` of a reservation (the rest goes back), or with `None` releases it
    /// whole; once. Only its own caller (`by`) reaches it.
    pub async fn settle_hold(
        &self,
        user: &UserId,
        hold_id: &str,
        capture: Option<i64>,
        by: &str,
        currency: &Currency,
    ) -> Result<HoldOutcome, StoreError> {
        let held_entry = format!("hold:{hold_id}");
        let capture_entry = format!("capture:{hold_id}");
        let release_entry = format!("release:{hold_id}");
        let probe = [
            held_entry.clone(),
            capture_entry.clone(),
            release_entry.clone(),
        ];
        self.change_wallet(user, currency, &probe, |wallet, seen| {
            let Some(held) = seen
                .entries
                .get(&held_entry)
                .filter(|h| get_s(h, "by") == Some(by))
            else {
                return Ok(WalletDecision::Answer(HoldOutcome::NotFound));
            };
            let f = Fields::of(held);
            let amount = -f.int("amount")?;
            let until = f.int("until")?;
            let state = |status, captured, balance, replayed| HoldState {
                hold_id: hold_id.to_owned(),
                amount,
                captured,
                status,
                until,
                balance,
                replayed,
            };
            if let Some(done) = seen.entries.get(&capture_entry) {
                let d = Fields::of(done);
                let captured = d.opt_int("captured")?;
                return Ok(WalletDecision::Answer(
                    if capture.is_some() && captured == capture {
                        HoldOutcome::Done(state(
                            HoldStatus::Captured,
                            captured,
                            d.opt_int("balanceAfter")?.unwrap_or(0),
                            true,
                        ))
                    } else if capture.is_some() {
                        HoldOutcome::KeyConflict
                    } else {
                        HoldOutcome::Over(HoldStatus::Captured)
                    },
                ));
            }
            if let Some(done) = seen.entries.get(&release_entry) {
                let d = Fields::of(done);
                let status = if get_s(done, "reason") == Some("released") {
                    HoldStatus::Released
                } else {
                    HoldStatus::Expired
                };
                return Ok(WalletDecision::Answer(match capture {
                    None if status == HoldStatus::Released => HoldOutcome::Done(state(
                        status,
                        None,
                        d.opt_int("balanceAfter")?.unwrap_or(0),
                        true,
                    )),
                    _ => HoldOutcome::Over(status),
                }));
            }
            if !wallet.holds.contains_key(hold_id) {
                // Settled just now as ended (its release is among this change's steps).
                return Ok(WalletDecision::Answer(HoldOutcome::Over(
                    HoldStatus::Expired,
                )));
            }
            let (step, status) = match capture {
                Some(take) => match wallet.capture_step(hold_id, take, seen.now_s) {
                    Ok(step) => (step, HoldStatus::Captured),
                    Err(Refusal::HoldEnded) => {
                        return Ok(WalletDecision::Answer(HoldOutcome::Over(
                            HoldStatus::Expired,
                        )))
                    }
                    Err(Refusal::MoreThanHeld) => {
                        return Ok(WalletDecision::Answer(HoldOutcome::MoreThanHeld {
                            held: amount,
                        }))
                    }
                    Err(other) => return Err(refused(other)),
                },
                None => match wallet.release_step(hold_id) {
                    Ok(step) => (step, HoldStatus::Released),
                    Err(other) => return Err(refused(other)),
                },
            };
            let balance = wallet.balance(seen.now_s);
            let mut attributes = vec![text_attr("by", by), int_attr("balanceAfter", balance)];
            if status == HoldStatus::Released {
                attributes.push(text_attr("reason", "released"));
            }
            let (main, captured) = step
                .first()
                .map(|s| (s.entry_id.clone(), s.captured))
                .unwrap_or_default();
            Ok(WalletDecision::Write {
                main,
                answer: HoldOutcome::Done(state(status, captured, balance, false)),
                steps: step,
                attributes,
            })
        })
        .await
    }
}
