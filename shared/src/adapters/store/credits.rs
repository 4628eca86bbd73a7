//! Balances, spends and grants. A keyed movement reads the balance and the key's earlier entry
//! in one BatchGetItem, asks the rules, and writes the entry (with the balance it leaves) and
//! the new balance in one transaction conditioned on the balance it read: the answer it gives,
//! and gives again for the same key, is exactly what was written.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::codec::{balance_from_item, entry_to_item, get_s, n, s, Fields, Item, NewEntry};
use super::{backoff, keys, Store, StoreError};
use crate::domain::ledger::EntryKind;
use crate::domain::ledger::{decide_move, CreditMove, MoveDecision, RecordedMove};
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
}

impl Store {
    /// The user's balance (one consistent GetItem); `None` when nothing was ever credited.
    pub async fn balance(&self, user: &UserId) -> Result<Option<Balance>, StoreError> {
        let item = self.get(self.keys.balance(user)).await?;
        Ok(item.as_ref().map(balance_from_item).transpose()?)
    }

    /// Moves credits for `user` as the entry `entry_id` of `kind`, exactly once per entry id.
    pub async fn move_credits(
        &self,
        user: &UserId,
        entry_id: &str,
        kind: EntryKind,
        request: &CreditMove,
        currency: &Currency,
    ) -> Result<MoveOutcome, StoreError> {
        self.move_credits_with(user, entry_id, kind, request, currency, &[], MOVE_ATTEMPTS)
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
            let balance = balance_item.map(balance_from_item).transpose()?;
            if balance.as_ref().is_some_and(|b| &b.currency != currency) && earlier.is_none() {
                return Ok(Some(MoveOutcome::CurrencyMismatch));
            }
            let before = balance.as_ref().map_or(0, |b| b.balance);
            let balance_after = match decide_move(earlier.as_ref(), before, request) {
                MoveDecision::Replay(first) => {
                    return Ok(Some(MoveOutcome::Replayed {
                        entry_id: first.entry_id,
                        balance_after: first.balance_after,
                    }))
                }
                MoveDecision::KeyConflict => return Ok(Some(MoveOutcome::KeyConflict)),
                MoveDecision::Insufficient => return Ok(Some(MoveOutcome::Insufficient)),
                MoveDecision::Write { balance_after } => balance_after,
            };
            let now = now_ms();
            let entry = NewEntry {
                user,
                entry_id,
                kind,
                amount: request.delta,
                currency,
                created_at_ms: now,
            };
            let mut items = vec![
                self.move_entry(&entry, &request.reason, balance_after)?,
                self.balance_set(user, balance.as_ref(), balance_after, currency, now)?,
            ];
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

    /// The entry of a keyed movement, with the balance it leaves.
    fn move_entry(
        &self,
        entry: &NewEntry<'_>,
        reason: &str,
        balance_after: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = entry_to_item(&self.keys, entry);
        item.insert("reason".into(), s(reason));
        item.insert("balanceAfter".into(), n(balance_after));
        if entry.amount > 0 {
            // Grants show in history beside payments.
            item.insert("gsi1pk".into(), s(self.keys.history_pk(entry.user)));
            item.insert(
                "gsi1sk".into(),
                s(keys::history_sk(entry.created_at_ms, entry.entry_id)),
            );
        }
        self.put_new(item)
    }

    /// Sets the balance to `after`, only if it still is what was read.
    fn balance_set(
        &self,
        user: &UserId,
        read: Option<&Balance>,
        after: i64,
        currency: &Currency,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.balance(user)))
            .update_expression("SET balance = :after, currency = :currency, updatedAt = :now")
            .expression_attribute_values(":after", n(after))
            .expression_attribute_values(":currency", s(currency.as_str()))
            .expression_attribute_values(":now", n(now));
        let update = match read {
            Some(balance) => update
                .condition_expression("balance = :before AND currency = :currency")
                .expression_attribute_values(":before", n(balance.balance)),
            None => update.condition_expression("attribute_not_exists(pk)"),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(StoreError::build)?)
            .build())
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
