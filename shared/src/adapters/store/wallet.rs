//! An account's wallet: its buckets, debt and holds, kept in its balance item beside the
//! `balance` the entries add up to, with a version. Every change reads the item, asks the bucket
//! rules, and writes the item on the version it read together with one entry per step, in one
//! transaction. An item written before buckets existed has a balance and no wallet: it reads as
//! one paid bucket (or debt), and its next write stores the wallet.

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

use super::codec::{entry_to_item, n, s, Fields, Item, NewEntry};
use super::{Store, StoreError};
use crate::domain::buckets::{Step, Wallet};
use crate::domain::ledger::EntryKind;
use crate::domain::money::Currency;
use crate::domain::records::UserId;

/// Expiries and ended holds settled inside another change's transaction, at most (the rest
/// is settled by the next change or the scheduled job; reads never count them either way).
pub(super) const SETTLE_INLINE: usize = 20;

/// Partitions of gsi2 that list what the scheduled job must do, by time.
pub const DUE_SHARDS: usize = 4;

/// How long before a bucket expires its account is told (`credits.expiring`).
pub const WARN_AHEAD_SECS: i64 = 7 * 24 * 3600;

/// The gsi2 sort key of a note due at `at` (Unix seconds): ordered by time.
pub fn due_sort_key(at: i64, id: &str) -> String {
    format!("{:012}#{id}", at.max(0))
}

/// An account's balance item as read.
#[derive(Clone, Debug)]
pub struct WalletRead {
    pub wallet: Wallet,
    /// The wallet's version; `None` for an item with no wallet yet (or no item).
    pub version: Option<i64>,
    /// The `balance` the item had (what its entries add up to); `None`: no item.
    pub stored: Option<i64>,
    pub currency: Option<Currency>,
}

impl WalletRead {
    /// The version the next write stores.
    pub fn next_version(&self) -> i64 {
        self.version.unwrap_or(0) + 1
    }
}

/// How an entry records the buckets it moved: bucket id, what it gained or lost, and the
/// bucket's expiry (so the checker can tell a spend after an expiry from its entries alone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMove {
    pub b: String,
    pub d: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<i64>,
}

pub fn wallet_from_item(item: Option<&Item>) -> Result<WalletRead, StoreError> {
    decode_wallet(item, true)
}

/// The wallet exactly as stored, nothing folded in (for the checker, which must see a balance
/// that moved without its wallet).
pub fn stored_wallet(item: &Item) -> Result<WalletRead, StoreError> {
    decode_wallet(Some(item), false)
}

fn decode_wallet(item: Option<&Item>, fold: bool) -> Result<WalletRead, StoreError> {
    let Some(item) = item else {
        return Ok(WalletRead {
            wallet: Wallet::default(),
            version: None,
            stored: None,
            currency: None,
        });
    };
    let f = Fields::of(item);
    let stored = f.int("balance")?;
    let currency = match f.opt_text("currency")? {
        Some(_) => Some(f.currency("currency")?),
        None => None,
    };
    let (wallet, version) = match f.opt_text("wallet")? {
        Some(text) => {
            let wallet: Wallet = serde_json::from_str(text).map_err(|_| {
                StoreError::Malformed(super::codec::DecodeError {
                    key: "balance".into(),
                    attribute: "wallet",
                    problem: "not a wallet",
                })
            })?;
            let mut wallet = wallet;
            let moved = if fold {
                wallet.fold_outside_change(stored, f.opt_int("updatedAt")?.unwrap_or(0) / 1000)
            } else {
                0
            };
            if moved != 0 {
                tracing::warn!(
                    moved,
                    "a balance moved without its wallet (a write of the version before buckets); folded in"
                );
            }
            (wallet, Some(f.int("wver")?))
        }
        None => {
            let created = f.opt_int("updatedAt")?.unwrap_or(0) / 1000;
            (Wallet::from_stored_balance(stored, created), None)
        }
    };
    Ok(WalletRead {
        wallet,
        version,
        stored: Some(stored),
        currency,
    })
}

impl Store {
    /// The account's wallet (one consistent read).
    pub async fn wallet(&self, user: &UserId) -> Result<WalletRead, StoreError> {
        let item = self.get(self.keys.balance(user)).await?;
        wallet_from_item(item.as_ref())
    }

    /// The writes of a wallet change: one entry per step (with `annotate`'s attributes), then
    /// the balance item on the version that was read. The wallet is pruned here, after the
    /// entries took the expiries of the buckets they moved.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wallet_items(
        &self,
        user: &UserId,
        read: &WalletRead,
        wallet: &mut Wallet,
        steps: &[Step],
        currency: &Currency,
        now_ms: i64,
        annotate: &dyn Fn(&Step, &mut Item),
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut items = Vec::with_capacity(steps.len() + 1);
        for step in steps {
            let mut item = entry_to_item(
                &self.keys,
                &NewEntry {
                    user,
                    entry_id: &step.entry_id,
                    kind: step.kind,
                    amount: step.amount,
                    currency,
                    created_at_ms: now_ms,
                },
            );
            let moves: Vec<BucketMove> = step
                .moves
                .iter()
                .map(|(b, d)| BucketMove {
                    b: b.clone(),
                    d: *d,
                    x: wallet.bucket(b).and_then(|bucket| bucket.expires_at),
                })
                .collect();
            let moves = serde_json::to_string(&moves)
                .map_err(|e| StoreError::Refused(format!("bucket moves: {e}")))?;
            item.insert("buckets".into(), s(moves));
            if step.debt != 0 {
                item.insert("debt".into(), n(step.debt));
            }
            if let Some(hold) = &step.hold {
                item.insert("hold".into(), s(hold));
            }
            if let Some(captured) = step.captured {
                item.insert("captured".into(), n(captured));
            }
            if step.doomed > 0 {
                item.insert("doomedInHolds".into(), n(step.doomed));
            }
            annotate(step, &mut item);
            if step.kind.shows_in_history() && !item.contains_key("gsi1pk") {
                item.insert("gsi1pk".into(), s(self.keys.history_pk(user)));
                item.insert(
                    "gsi1sk".into(),
                    s(super::keys::history_sk(now_ms, &step.entry_id)),
                );
            }
            items.push(self.put_new(item)?);
            items.extend(self.due_items(user, step, wallet, currency)?);
        }
        wallet.prune(now_ms / 1000);
        items.push(self.wallet_put(user, read, wallet, currency, now_ms)?);
        Ok(items)
    }

    /// The job's notes a step needs: a hold's end, and the expiry (warning first) of a bucket
    /// that got credits. Upserts: a bucket's note keeps the stage it reached.
    fn due_items(
        &self,
        user: &UserId,
        step: &Step,
        wallet: &Wallet,
        currency: &Currency,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut notes = Vec::new();
        match step.kind {
            EntryKind::Hold => {
                if let Some((id, hold)) = step
                    .hold
                    .as_ref()
                    .and_then(|id| wallet.holds.get(id).map(|h| (id, h)))
                {
                    notes.push(("H", id.clone(), hold.until, hold.until));
                }
            }
            EntryKind::Release | EntryKind::Capture | EntryKind::Expire => {}
            _ => {
                for (bucket, gained) in &step.moves {
                    if *gained <= 0 {
                        continue;
                    }
                    if let Some(at) = wallet.bucket(bucket).and_then(|b| b.expires_at) {
                        notes.push(("B", bucket.clone(), at, at.saturating_sub(WARN_AHEAD_SECS)));
                    }
                }
            }
        }
        let mut items = Vec::with_capacity(notes.len());
        for (what, id, at, first) in notes {
            let shard = super::keys::hash_parts(&[user.as_str(), &id])
                .bytes()
                .map(usize::from)
                .sum::<usize>()
                % DUE_SHARDS;
            let what_char = if what == "H" { 'H' } else { 'B' };
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(self.keys.due(user, what_char, &id)))
                .update_expression(
                    "SET dueAccount = :account, dueWhat = :what, dueRef = :ref, dueAt = :at, \
                     currency = :currency, gsi2pk = :index, \
                     gsi2sk = if_not_exists(gsi2sk, :first)",
                )
                .expression_attribute_values(":account", s(user.as_str()))
                .expression_attribute_values(":what", s(what))
                .expression_attribute_values(":ref", s(&id))
                .expression_attribute_values(":at", n(at))
                .expression_attribute_values(":currency", s(currency.as_str()))
                .expression_attribute_values(":index", s(format!("DUE#{shard}")))
                .expression_attribute_values(":first", s(due_sort_key(first, &id)))
                .build()
                .map_err(StoreError::build)?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(items)
    }

    /// Writes the wallet (and the balance its entries add up to), only on the version read.
    fn wallet_put(
        &self,
        user: &UserId,
        read: &WalletRead,
        wallet: &Wallet,
        currency: &Currency,
        now_ms: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let text = serde_json::to_string(wallet)
            .map_err(|e| StoreError::Refused(format!("wallet: {e}")))?;
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(self.keys.balance(user)))
            .update_expression(
                "SET balance = :total, currency = :currency, updatedAt = :now, \
                 wallet = :wallet, wver = :next",
            )
            .expression_attribute_values(":total", n(wallet.total()))
            .expression_attribute_values(":currency", s(currency.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":wallet", s(text))
            .expression_attribute_values(":next", n(read.next_version()));
        let update = match (read.version, read.stored) {
            // The balance too: a write of the version before buckets (during an upgrade) adds to
            // it without the version, and must not be overwritten.
            (Some(version), stored) => update
                .condition_expression("wver = :version AND balance = :before")
                .expression_attribute_values(":version", n(version))
                .expression_attribute_values(":before", n(stored.unwrap_or(0))),
            (None, Some(stored)) => update
                .condition_expression("attribute_not_exists(wver) AND balance = :before")
                .expression_attribute_values(":before", n(stored)),
            (None, None) => update.condition_expression("attribute_not_exists(pk)"),
        };
        Ok(TransactWriteItem::builder()
            .update(update.build().map_err(StoreError::build)?)
            .build())
    }
}

/// What a wallet change decided, given the account's wallet (settled to now) and the entries
/// it asked for.
pub(super) enum WalletDecision<T> {
    /// Nothing to write: this answer.
    Answer(T),
    /// Write these steps after the settling ones; `attributes` go on the entry `main`.
    Write {
        steps: Vec<Step>,
        main: String,
        attributes: Vec<(String, aws_sdk_dynamodb::types::AttributeValue)>,
        answer: T,
    },
}

/// What a wallet change sees besides the wallet.
pub(super) struct WalletSeen<'a> {
    pub now_s: i64,
    pub now_ms: i64,
    /// The entries asked for that exist, by entry id.
    pub entries: &'a std::collections::HashMap<String, Item>,
    /// The account's balance is in this currency, or has none yet.
    pub same_currency: bool,
}

/// Attempts of a wallet change that lost its race.
const WALLET_ATTEMPTS: u32 = 40;

impl Store {
    /// Reads the wallet and the entries `probe` names, settles what is due (within the
    /// transaction's bound), asks `decide`, and writes its steps with the wallet on the
    /// version read, in one transaction; a lost race reads again.
    pub(super) async fn change_wallet<T>(
        &self,
        user: &UserId,
        currency: &Currency,
        probe: &[String],
        mut decide: impl FnMut(&mut Wallet, &WalletSeen<'_>) -> Result<WalletDecision<T>, StoreError>,
    ) -> Result<T, StoreError> {
        for attempt in 1..=WALLET_ATTEMPTS {
            let mut keys = vec![self.keys.balance(user)];
            keys.extend(probe.iter().map(|id| self.keys.entry(user, id)));
            let found = self.get_many(keys).await?;
            let balance_item = found
                .iter()
                .find(|i| super::codec::get_s(i, "sk") == Some("BALANCE"));
            let entries: std::collections::HashMap<String, Item> = found
                .iter()
                .filter_map(|i| {
                    super::codec::get_s(i, "entryId").map(|id| (id.to_owned(), i.clone()))
                })
                .collect();
            let read = wallet_from_item(balance_item)?;
            let now_ms = crate::domain::records::now_ms();
            let now_s = now_ms / 1000;
            let mut wallet = read.wallet.clone();
            let mut steps = wallet.settle(now_s, read.next_version(), SETTLE_INLINE);
            let seen = WalletSeen {
                now_s,
                now_ms,
                entries: &entries,
                same_currency: read.currency.as_ref().is_none_or(|c| c == currency),
            };
            let (more, main, attributes, answer) = match decide(&mut wallet, &seen)? {
                WalletDecision::Answer(answer) => return Ok(answer),
                WalletDecision::Write {
                    steps,
                    main,
                    attributes,
                    answer,
                } => (steps, main, attributes, answer),
            };
            steps.extend(more);
            let annotate = move |step: &Step, item: &mut Item| {
                if step.entry_id == main {
                    item.extend(attributes.iter().cloned());
                }
            };
            let items = self.wallet_items(
                user,
                &read,
                &mut wallet,
                &steps,
                currency,
                now_ms,
                &annotate,
            )?;
            match self.transact(items).await? {
                Ok(()) => return Ok(answer),
                Err(_) => super::backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!(
            "the balance of {} kept changing",
            user.as_str()
        )))
    }

    /// Settles an account: every ended hold back and every expired bucket out, in as many
    /// transactions as it takes. The number of entries written.
    pub async fn settle_wallet(&self, user: &UserId) -> Result<usize, StoreError> {
        let mut written = 0;
        let mut lost = 0;
        loop {
            let read = self.wallet(user).await?;
            let Some(currency) = read.currency.clone() else {
                return Ok(written);
            };
            let now_ms = crate::domain::records::now_ms();
            let mut wallet = read.wallet.clone();
            let steps = wallet.settle(now_ms / 1000, read.next_version(), SETTLE_BATCH);
            if steps.is_empty() {
                return Ok(written);
            }
            let items = self.wallet_items(
                user,
                &read,
                &mut wallet,
                &steps,
                &currency,
                now_ms,
                &|_, _| {},
            )?;
            if self.transact(items).await?.is_ok() {
                written += steps.len();
            } else {
                lost += 1;
                if lost >= WALLET_ATTEMPTS {
                    return Err(StoreError::Contention(format!(
                        "the balance of {} kept changing",
                        user.as_str()
                    )));
                }
                super::backoff(lost).await;
            }
        }
    }
}

/// Expiries and ended holds settled per transaction by the scheduled job (each writes an
/// entry; a transaction takes at most 100 items).
const SETTLE_BATCH: usize = 45;

/// What a note asks of the scheduled job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueWhat {
    /// Warn of a bucket's expiry, then expire it.
    Bucket,
    /// End a hold.
    Hold,
}

/// A note the scheduled job found due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueNote {
    pub scope_prefix: String,
    pub account: UserId,
    pub what: DueWhat,
    /// The bucket's or the hold's id.
    pub id: String,
    /// When the bucket expires or the hold ends (Unix seconds).
    pub at: i64,
    pub warned: bool,
}

fn due_note(item: &Item) -> Result<DueNote, StoreError> {
    let f = Fields::of(item);
    let pk = super::codec::get_s(item, "pk").unwrap_or_default();
    Ok(DueNote {
        scope_prefix: super::keys::split_scope(pk).0.to_owned(),
        account: f.user("dueAccount")?,
        what: if f.text("dueWhat")? == "H" {
            DueWhat::Hold
        } else {
            DueWhat::Bucket
        },
        id: f.text("dueRef")?.to_owned(),
        at: f.int("dueAt")?,
        warned: f.opt_int("warnedAt")?.is_some(),
    })
}

impl Store {
    /// Up to `limit` notes of one index partition due before `now` (Unix seconds), soonest
    /// first, from after `start`; and where the next page starts.
    pub async fn due_notes(
        &self,
        shard: usize,
        now: i64,
        limit: i32,
        start: Option<Item>,
    ) -> Result<(Vec<DueNote>, Option<Item>), StoreError> {
        let (items, next) = self
            .index_before(
                format!("DUE#{shard}"),
                format!("{:012}$", now.max(0)),
                limit,
                start,
            )
            .await?;
        let notes = items
            .iter()
            .filter_map(|item| match due_note(item) {
                Ok(note) => Some(note),
                Err(err) => {
                    // One malformed note never stops the others.
                    tracing::error!(cause = %err, "a credit note cannot be read; skipped");
                    None
                }
            })
            .collect();
        Ok((notes, next))
    }

    fn due_key(&self, note: &DueNote) -> Item {
        let what = match note.what {
            DueWhat::Bucket => 'B',
            DueWhat::Hold => 'H',
        };
        self.keys.due(&note.account, what, &note.id)
    }

    /// Marks a bucket's note warned (with what was left, for the `credits.expiring` event the
    /// stream makes of it), or with `left: None` passes the warning (nothing left to warn of),
    /// and moves it to the bucket's expiry. `true`: this call marked it.
    pub async fn warn_due(&self, note: &DueNote, left: Option<i64>) -> Result<bool, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.due_key(note)))
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(warnedAt)")
            .expression_attribute_values(":sk", s(due_sort_key(note.at, &note.id)));
        let update = match left {
            Some(left) => update
                .update_expression("SET gsi2sk = :sk, warnedAt = :now, warnedLeft = :left")
                .expression_attribute_values(":now", n(crate::domain::records::now_ms()))
                .expression_attribute_values(":left", n(left)),
            None => update.update_expression("SET gsi2sk = :sk"),
        };
        super::written(update.send().await)
    }

    /// Removes a note once its account was settled past it.
    pub async fn forget_due(&self, note: &DueNote) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.due_key(note)))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}

/// An account's low-balance alert as stored: its own threshold (over its project's), and whether
/// the alert is armed (it is until `credits.low` is said, and again after `credits.recovered`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountAlert {
    pub threshold: Option<i64>,
    pub armed: bool,
}

impl Default for AccountAlert {
    fn default() -> Self {
        Self {
            threshold: None,
            armed: true,
        }
    }
}

impl Store {
    /// The account's alert (armed, with no threshold of its own, when never set).
    pub async fn account_alert(&self, user: &UserId) -> Result<AccountAlert, StoreError> {
        let Some(item) = self.get(self.keys.alerts(user)).await? else {
            return Ok(AccountAlert::default());
        };
        let f = Fields::of(&item);
        Ok(AccountAlert {
            threshold: f.opt_int("lowThreshold")?,
            armed: get_bool(&item, "armed").unwrap_or(true),
        })
    }

    /// Records whether the account's alert is armed (after the events that say so went out).
    pub async fn save_alert_armed(&self, user: &UserId, armed: bool) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.alerts(user)))
            .update_expression("SET armed = :armed")
            .expression_attribute_values(
                ":armed",
                aws_sdk_dynamodb::types::AttributeValue::Bool(armed),
            )
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }

    /// Sets (or with `None` removes) the account's own low-balance threshold; the alert is
    /// armed again.
    pub async fn set_account_threshold(
        &self,
        user: &UserId,
        threshold: Option<i64>,
    ) -> Result<AccountAlert, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.alerts(user)))
            .expression_attribute_values(
                ":armed",
                aws_sdk_dynamodb::types::AttributeValue::Bool(true),
            );
        let update = match threshold {
            Some(at) => update
                .update_expression("SET lowThreshold = :at, armed = :armed")
                .expression_attribute_values(":at", n(at)),
            None => update.update_expression("SET armed = :armed REMOVE lowThreshold"),
        };
        update.send().await.map_err(StoreError::from_sdk)?;
        Ok(AccountAlert {
            threshold,
            armed: true,
        })
    }
}

fn get_bool(item: &Item, name: &str) -> Option<bool> {
    item.get(name).and_then(|v| v.as_bool().ok()).copied()
}

impl Store {
    /// The account's auto-recharge and its version; `None`: never set.
    pub async fn recharge(
        &self,
        user: &UserId,
    ) -> Result<Option<(crate::domain::recharge::AccountRecharge, i64)>, StoreError> {
        let Some(item) = self.get(self.keys.recharge(user)).await? else {
            return Ok(None);
        };
        let f = Fields::of(&item);
        let doc: crate::domain::recharge::AccountRecharge = serde_json::from_str(f.text("doc")?)
            .map_err(|_| {
                StoreError::Malformed(super::codec::DecodeError {
                    key: "RECHARGE".into(),
                    attribute: "doc",
                    problem: "not an auto-recharge",
                })
            })?;
        Ok(Some((doc, f.int("rver")?)))
    }

    /// Writes the account's auto-recharge on the version read (`None`: none was). `false`:
    /// it changed meanwhile; read it again.
    pub async fn put_recharge(
        &self,
        user: &UserId,
        recharge: &crate::domain::recharge::AccountRecharge,
        read: Option<i64>,
    ) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(recharge)
            .map_err(|e| StoreError::Refused(format!("auto-recharge: {e}")))?;
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.recharge(user)))
            .update_expression("SET doc = :doc, rver = :next, updatedAt = :now")
            .expression_attribute_values(":doc", s(doc))
            .expression_attribute_values(":next", n(read.unwrap_or(0) + 1))
            .expression_attribute_values(":now", n(crate::domain::records::now_ms()));
        let update = match read {
            Some(version) => update
                .condition_expression("rver = :read")
                .expression_attribute_values(":read", n(version)),
            None => update.condition_expression("attribute_not_exists(pk)"),
        };
        super::written(update.send().await)
    }
}
