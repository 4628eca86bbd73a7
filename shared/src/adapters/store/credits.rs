//! Balances, spends and grants. A keyed movement reads the balance and the key's earlier entry
//! in one BatchGetItem, asks the rules, and writes the entry (with the balance it leaves) and
//! the new balance in one transaction conditioned on the balance it read: the answer it gives,
//! and gives again for the same key, is exactly what was written.

use aws_sdk_dynamodb::types::TransactWriteItem;

use super::codec::{get_s, n, s, Fields, Item};
use super::wallet::{wallet_from_item, SETTLE_INLINE};
use super::{backoff, keys, Store, StoreError};
use crate::domain::buckets::{Refusal, Step, Terms};
use crate::domain::ledger::EntryKind;
use crate::domain::ledger::{CreditMove, RecordedMove};
use crate::domain::money::Currency;
use crate::domain::records::{now_ms, Balance, UserId};

/// Attempts of a keyed movement whose balance changed between its read and its write. Many
/// concurrent spends of one user each land within a few rounds; this bounds the worst case.
const MOVE_ATTEMPTS: u32 = 60;

/// The result of a spend or a grant.
#[derive(Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// Written now.
    Done {
        entry_id: String,
        balance_after: i64,
    },
    /// The same key, amount and reason were used before: the first result, nothing more moved.
    /// `balance_after` is `None` only for entries written before it was recorded.
    Replayed {
        entry_id: String,
        balance_after: Option<i64>,
    },
    /// The same key was used before with another amount or reason.
    KeyConflict,
    /// Not enough credits; nothing taken.
    Insufficient,
    /// The user's balance is held in another currency.
    CurrencyMismatch,
    /// The account has as many buckets as it may, none of these terms.
    TooManyBuckets,
}

impl Store {
    /// The user's balance now (one consistent GetItem); `None` when nothing was ever credited.
    /// It is computed at the time of reading: an expired bucket never counts and an ended hold
    /// is back, whether or not the scheduled job has written them yet.
    pub async fn balance(&self, user: &UserId) -> Result<Option<Balance>, StoreError> {
        let read = self.wallet(user).await?;
        let Some(currency) = read.currency.clone() else {
            return Ok(None);
        };
        let now = now_ms() / 1000;
        let mut wallet = read.wallet;
        for hold in wallet.ended_holds(now) {
            let _ = wallet.release(&hold);
        }
        let (live, next_expiry) = wallet.live_buckets(now);
        Ok(Some(Balance {
            balance: wallet.balance(now),
            currency,
            buckets: live.into_iter().cloned().collect(),
            next_expiry,
            held: wallet.held(),
        }))
    }

    /// The account's `shown` newest ledger entries, newest first, and whether that is all of
    /// them. Entries are listed by time in gsi2; an account whose entries there are fewer than
    /// `shown` may have entries written before they were listed, so its partition is read too
    /// (at most `read_at_most` items, in key order) and merged.
    pub async fn ledger_entries(
        &self,
        user: &UserId,
        shown: usize,
        read_at_most: usize,
    ) -> Result<(Vec<crate::domain::records::EntryLine>, bool), StoreError> {
        let ask = i32::try_from(shown.saturating_add(1)).unwrap_or(i32::MAX);
        let listed = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(keys::GSI2)
            .key_condition_expression("gsi2pk = :pk")
            .expression_attribute_values(":pk", s(self.keys.ledger_pk(user)))
            .scan_index_forward(false)
            .limit(ask)
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        let mut items: Vec<Item> = listed.items().to_vec();
        let mut complete = items.len() <= shown;
        if complete {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :entry)")
                .expression_attribute_values(":pk", s(self.keys.user_pk(user)))
                .expression_attribute_values(":entry", s("ENTRY#"))
                .into_paginator()
                .send();
            let mut read = 0usize;
            while let Some(page) = pages.next().await {
                let page = page.map_err(StoreError::from_sdk)?;
                read = read.saturating_add(page.items().len());
                items.extend(page.items().iter().cloned());
                if read >= read_at_most {
                    complete = page.last_evaluated_key().is_none();
                    break;
                }
            }
        }
        let mut lines: Vec<crate::domain::records::EntryLine> = Vec::with_capacity(items.len());
        for item in &items {
            let f = Fields::of(item);
            let line = crate::domain::records::EntryLine {
                entry_id: f.text("entryId")?.to_owned(),
                kind: f.text("kind")?.to_owned(),
                amount: f.int("amount")?,
                currency: f.currency("currency")?,
                created_at_ms: f.opt_int("createdAt")?.unwrap_or(0),
                reason: f.opt_text("reason")?.map(str::to_owned),
            };
            if !lines.iter().any(|l| l.entry_id == line.entry_id) {
                lines.push(line);
            }
        }
        lines.sort_by(|a, b| (b.created_at_ms, &b.entry_id).cmp(&(a.created_at_ms, &a.entry_id)));
        complete = complete && lines.len() <= shown;
        lines.truncate(shown);
        Ok((lines, complete))
    }

    /// Moves credits for `user` as the entry `entry_id` of `kind`, exactly once per entry id: a
    /// negative move is a spend from the live buckets in the spend order, a positive one a
    /// bucket of `terms` (promotional, never expiring, when `None`).
    pub async fn move_credits(
        &self,
        user: &UserId,
        entry_id: &str,
        kind: EntryKind,
        request: &CreditMove,
        currency: &Currency,
        terms: Option<&Terms>,
    ) -> Result<MoveOutcome, StoreError> {
        self.move_credits_with(
            user,
            entry_id,
            kind,
            request,
            currency,
            terms,
            &[],
            MOVE_ATTEMPTS,
        )
        .await?
        .ok_or_else(|| {
            StoreError::Contention(format!("the balance of {} kept changing", user.as_str()))
        })
    }

    /// The same, with `extra` items written in the same transaction (their conditions included).
    /// `None`: the transaction lost its race `attempts` times (the extra items' conditions may be
    /// what failed: the caller reads them again).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn move_credits_with(
        &self,
        user: &UserId,
        entry_id: &str,
        kind: EntryKind,
        request: &CreditMove,
        currency: &Currency,
        terms: Option<&Terms>,
        extra: &[TransactWriteItem],
        attempts: u32,
    ) -> Result<Option<MoveOutcome>, StoreError> {
        let entry_key = self.keys.entry(user, entry_id);
        for attempt in 1..=attempts {
            let found = self
                .get_many(vec![self.keys.balance(user), entry_key.clone()])
                .await?;
            let balance_item = found.iter().find(|i| get_s(i, "sk") == Some("BALANCE"));
            let earlier = found
                .iter()
                .find(|i| get_s(i, "sk") != Some("BALANCE"))
                .map(recorded_move)
                .transpose()?;
            let read = wallet_from_item(balance_item)?;
            if let Some(first) = earlier {
                return Ok(Some(
                    if first.delta == request.delta && first.reason == request.reason {
                        MoveOutcome::Replayed {
                            entry_id: first.entry_id,
                            balance_after: first.balance_after,
                        }
                    } else {
                        MoveOutcome::KeyConflict
                    },
                ));
            }
            if read.currency.as_ref().is_some_and(|c| c != currency) {
                return Ok(Some(MoveOutcome::CurrencyMismatch));
            }
            let now = now_ms();
            let now_s = now / 1000;
            let mut wallet = read.wallet.clone();
            let mut steps = wallet.settle(now_s, read.next_version(), SETTLE_INLINE);
            let step = if request.delta < 0 {
                let amount = request
                    .delta
                    .checked_neg()
                    .ok_or(StoreError::Refused("a move of an impossible amount".into()))?;
                wallet.spend_step(entry_id, amount, now_s, &self.spend_order)
            } else {
                let terms = terms.cloned().unwrap_or_else(Terms::promotional);
                if let Some(cap) = terms.rollover_cap {
                    // Included credits: what earlier periods' hold beyond the cap expires first.
                    steps.extend(wallet.cap_rollover(cap, now_s, &format!("rollover:{entry_id}")));
                }
                wallet.credit_step(entry_id, kind, terms.bucket(entry_id, now_s, request.delta))
            };
            let mut step = match step {
                Ok(step) => step,
                Err(Refusal::Short { .. }) => return Ok(Some(MoveOutcome::Insufficient)),
                Err(Refusal::TooManyBuckets) => return Ok(Some(MoveOutcome::TooManyBuckets)),
                Err(other) => return Err(StoreError::Refused(format!("a credit move: {other:?}"))),
            };
            step.kind = kind;
            let balance_after = wallet.balance(now_s);
            steps.push(step);
            let reason = request.reason.clone();
            let history_pk = self.keys.history_pk(user);
            let own = entry_id.to_owned();
            let annotate = move |step: &Step, item: &mut Item| {
                if step.entry_id != own {
                    return;
                }
                item.insert("reason".into(), s(&reason));
                item.insert("balanceAfter".into(), n(balance_after));
                if step.amount > 0 {
                    // Grants show in history beside payments.
                    item.insert("gsi1pk".into(), s(&history_pk));
                    item.insert("gsi1sk".into(), s(keys::history_sk(now, &step.entry_id)));
                }
            };
            let mut items =
                self.wallet_items(user, &read, &mut wallet, &steps, currency, now, &annotate)?;
            items.extend(extra.iter().cloned());
            match self.transact(items).await? {
                Ok(()) => {
                    return Ok(Some(MoveOutcome::Done {
                        entry_id: entry_id.to_owned(),
                        balance_after,
                    }))
                }
                // The key was written or the balance changed meanwhile: read both again.
                Err(_) => backoff(attempt).await,
            }
        }
        Ok(None)
    }
}

fn recorded_move(item: &Item) -> Result<RecordedMove, StoreError> {
    let f = Fields::of(item);
    Ok(RecordedMove {
        entry_id: f.text("entryId")?.to_owned(),
        delta: f.int("amount")?,
        reason: f.opt_text("reason")?.unwrap_or_default().to_owned(),
        balance_after: f.opt_int("balanceAfter")?,
    })
}
