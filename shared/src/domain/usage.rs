//! Usage allowances (groundwork for usage limits and metering): the period an allowance belongs
//! to, how an allowance is split across counter shards so that one hot account never writes
//! one item more than a DynamoDB item takes, and what a usage request is decided as. Pure rules,
//! no I/O.

use time::{Month, OffsetDateTime};

/// The counter shards of one allowance: each holds a share of the limit, so a busy account's
/// writes spread over this many items (5,000 events/s → 250 writes/s per item at 20).
pub const USAGE_SHARDS: usize = 20;

/// The period an allowance counts in: the subscription's billing period, or the calendar month
/// (UTC) on the free plan. A new period is a new set of counters: nothing resets them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// Stable text that names the period in keys: `m2026-11` or `s<period end>`.
    pub id: String,
    /// When the next period begins (Unix seconds).
    pub resets_at: i64,
}

/// The calendar month (UTC) of `now_secs`.
pub fn calendar_month(now_secs: i64) -> Period {
    let now = OffsetDateTime::from_unix_timestamp(now_secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (year, month) = (now.year(), now.month());
    let (next_year, next_month) = match month {
        Month::December => (year + 1, Month::January),
        other => (year, other.next()),
    };
    let resets_at = time::Date::from_calendar_date(next_year, next_month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(now_secs);
    Period {
        id: format!("m{year:04}-{:02}", u8::from(month)),
        resets_at,
    }
}

/// The period of a live subscription ending at `period_end`; the calendar month without one.
/// A stored period that has ended stays the period until the subscription is read again (its
/// renewal's event, or the scheduled re-read): between the period's end and the renewal there is
/// no fresh allowance, since nothing says the renewal was paid.
pub fn period_for(subscription_period_end: Option<i64>, now_secs: i64) -> Period {
    match subscription_period_end {
        Some(end) if end > 0 => Period {
            id: format!("s{end}"),
            resets_at: end,
        },
        _ => calendar_month(now_secs),
    }
}

/// What the usage path needs to know about an account in a scope: its plan now, the period
/// its allowances count in, the Stripe customer a metered plan bills, and every metric the
/// scope's plans know (anything else is a 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageTerms {
    pub plan: crate::domain::plans::Plan,
    pub period: Period,
    pub customer: Option<String>,
    pub known_metrics: Vec<String>,
}

/// Units an instance leases from a shard at a time: its small usages then write only their own
/// records, and the shard is written once per block.
pub const LEASE_BLOCK: i64 = 100;
/// The largest usage served from a lease; larger ones take from the shards directly.
pub const LEASE_MAX_QUANTITY: i64 = LEASE_BLOCK / 4;

/// A block of an allowance this instance holds (the lease item records it in the table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLease {
    pub id: String,
    pub shard: usize,
    /// Units of the block not yet taken here.
    pub left: i64,
    /// The lease ends then (Unix milliseconds): nothing is taken from it after.
    pub until_ms: i64,
}

/// The shard to lease a block from: one (chosen by `seed`) that keeps at least a block after
/// it, so that the last units of an allowance are never leased and are taken exactly.
pub fn lease_shard(remaining: &[i64], block: i64, seed: usize) -> Option<usize> {
    let able: Vec<usize> = (0..remaining.len())
        .filter(|s| remaining[*s] >= block.saturating_mul(2))
        .collect();
    (!able.is_empty()).then(|| able[seed % able.len()])
}

/// `limit` split over `shards`: the first `limit % shards` shards hold one more.
pub fn split_allowance(limit: i64, shards: usize) -> Vec<i64> {
    let count = i64::try_from(shards.max(1)).unwrap_or(1);
    let (share, extra) = (limit.max(0) / count, limit.max(0) % count);
    (0..count).map(|i| share + i64::from(i < extra)).collect()
}

/// How a request for `quantity` is met from shards with these remaining allowances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageDecision {
    /// One shard can take it: decrement that shard.
    FromShard(usize),
    /// Together the shards can: take from several, each conditioned on what was read.
    Spread(Vec<(usize, i64)>),
    /// The allowance cannot cover it: the whole remainder is `short` units.
    Short { short: i64 },
}

/// Decides from the shards' remaining allowances (as read) how to take `quantity`: from one
/// shard that can take it, chosen by `seed` among those (so that concurrent requests spread
/// over the shards that have room), else from several.
pub fn take_from_shards(remaining: &[i64], quantity: i64, seed: usize) -> UsageDecision {
    let count = remaining.len();
    if count == 0 {
        return UsageDecision::Short { short: quantity };
    }
    let able: Vec<usize> = (0..count).filter(|s| remaining[*s] >= quantity).collect();
    if !able.is_empty() {
        return UsageDecision::FromShard(able[seed % able.len()]);
    }
    let total: i64 = remaining.iter().map(|r| (*r).max(0)).sum();
    if total < quantity {
        return UsageDecision::Short {
            short: quantity - total,
        };
    }
    let mut left = quantity;
    let mut takes = Vec::new();
    for (shard, available) in remaining.iter().enumerate() {
        if left == 0 {
            break;
        }
        let take = (*available).max(0).min(left);
        if take > 0 {
            takes.push((shard, take));
            left -= take;
        }
    }
    UsageDecision::Spread(takes)
}

/// What `units` beyond the allowance cost at `price` credits each (minor units); `None` when it
/// does not fit (refused, never wrapped).
pub fn overage_cost(units: i64, price: i64) -> Option<i64> {
    units.checked_mul(price).filter(|cost| *cost >= 0)
}

/// The answer to one usage, recorded with it: a replay of its key answers it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageOutcome {
    pub allowed: bool,
    pub used: i64,
    pub limit: i64,
    /// When the period's allowance resets (RFC 3339).
    pub resets_at: String,
    /// Credits taken for units beyond the allowance (overage), in minor units.
    pub paid_with_credits: Option<i64>,
}

/// How an outcome is kept in its usage record: the JSON the first request answered.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedOutcome {
    allowed: bool,
    used: i64,
    limit: i64,
    remaining: i64,
    resets_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    paid_with_credits: Option<serde_json::Value>,
}

impl UsageOutcome {
    pub fn allowed(used: i64, limit: i64, period: &Period, paid_with_credits: Option<i64>) -> Self {
        Self {
            allowed: true,
            used,
            limit,
            resets_at: super::records::rfc3339(period.resets_at.saturating_mul(1000)),
            paid_with_credits,
        }
    }

    pub fn remaining(&self) -> i64 {
        (self.limit - self.used).max(0)
    }

    /// The text kept in the usage record (credits in major units of `currency`).
    pub fn to_record(&self, currency: &super::money::Currency) -> String {
        serde_json::to_string(&RecordedOutcome {
            allowed: self.allowed,
            used: self.used,
            limit: self.limit,
            remaining: self.remaining(),
            resets_at: self.resets_at.clone(),
            paid_with_credits: self.paid_with_credits.map(|minor| currency.to_major(minor)),
        })
        .unwrap_or_default()
    }

    /// The outcome a usage record keeps; `None` when the text is not one.
    pub fn from_record(text: &str, currency: &super::money::Currency) -> Option<Self> {
        let recorded: RecordedOutcome = serde_json::from_str(text).ok()?;
        let paid_with_credits = match recorded.paid_with_credits {
            None => None,
            Some(major) => Some(currency.parse_major(&major.to_string(), i64::MAX).ok()?),
        };
        Some(Self {
            allowed: recorded.allowed,
            used: recorded.used,
            limit: recorded.limit,
            resets_at: recorded.resets_at,
            paid_with_credits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_reset_at_the_first_of_the_next_month_and_december_rolls_over() {
        // 2026-11-22T12:00:00Z
        let november = calendar_month(1_795_348_800);
        assert_eq!(november.id, "m2026-11");
        assert_eq!(november.resets_at, 1_796_083_200); // 2026-12-01
        let december = calendar_month(1_796_083_200 + 86_400);
        assert_eq!(december.id, "m2026-12");
        assert_eq!(december.resets_at, 1_798_761_600); // 2027-01-01
        assert_eq!(
            period_for(Some(1_900_000_000), 1_800_000_000).id,
            "s1900000000"
        );
        // Past its end and not yet renewed: still the last known period, not a fresh month.
        assert_eq!(period_for(Some(1_000), 1_800_000_000).id, "s1000");
        assert_eq!(
            period_for(None, 1_800_000_000).id,
            calendar_month(1_800_000_000).id
        );
        assert_eq!(
            period_for(Some(0), 1_800_000_000).id,
            calendar_month(1_800_000_000).id
        );
    }

    #[test]
    fn blocks_are_leased_only_from_shards_that_keep_a_block() {
        assert_eq!(lease_shard(&[199, 200, 500], 100, 0), Some(1));
        assert_eq!(lease_shard(&[199, 200, 500], 100, 1), Some(2));
        assert_eq!(lease_shard(&[199, 150, 0], 100, 3), None);
        assert_eq!(lease_shard(&[], 100, 0), None);
    }

    #[test]
    fn an_allowance_splits_exactly() {
        let shares = split_allowance(25_003, 20);
        assert_eq!(shares.iter().sum::<i64>(), 25_003);
        assert_eq!(shares[0], 1_251);
        assert_eq!(shares[19], 1_250);
        assert_eq!(split_allowance(0, 20).iter().sum::<i64>(), 0);
    }

    #[test]
    fn shards_are_taken_one_if_possible_spread_if_needed_and_never_beyond_the_total() {
        assert_eq!(
            take_from_shards(&[0, 5, 5], 3, 0),
            UsageDecision::FromShard(1)
        );
        assert_eq!(
            take_from_shards(&[0, 5, 5], 3, 1),
            UsageDecision::FromShard(2)
        );
        assert_eq!(
            take_from_shards(&[5, 5, 5], 3, 2),
            UsageDecision::FromShard(2)
        );
        assert_eq!(
            take_from_shards(&[2, 2, 2], 5, 0),
            UsageDecision::Spread(vec![(0, 2), (1, 2), (2, 1)])
        );
        assert_eq!(
            take_from_shards(&[2, 2, 2], 7, 0),
            UsageDecision::Short { short: 1 }
        );
        assert_eq!(
            take_from_shards(&[], 1, 0),
            UsageDecision::Short { short: 1 }
        );
    }

    #[test]
    fn an_outcome_reads_back_from_its_record_as_it_was_answered() {
        let usd = crate::domain::money::Currency::parse("usd").expect("usd");
        let period = calendar_month(1_767_225_600);
        for paid in [None, Some(0), Some(250), Some(1500), Some(7)] {
            let outcome = UsageOutcome::allowed(120, 100, &period, paid);
            let text = outcome.to_record(&usd);
            assert_eq!(
                UsageOutcome::from_record(&text, &usd),
                Some(outcome.clone())
            );
            let json: serde_json::Value = serde_json::from_str(&text).expect("json");
            assert_eq!(json["remaining"], 0);
            assert_eq!(json.get("paidWithCredits").is_some(), paid.is_some());
        }
        // A record written by an earlier version (the same JSON) reads the same.
        let earlier = r#"{"allowed":true,"used":3,"limit":10,"remaining":7,"resetsAt":"2027-01-01T00:00:00Z","paidWithCredits":2.5}"#;
        let read = UsageOutcome::from_record(earlier, &usd).expect("earlier record");
        assert_eq!((read.used, read.paid_with_credits), (3, Some(250)));
        assert!(UsageOutcome::from_record("not json", &usd).is_none());
    }

    proptest::proptest! {
        #[test]
        fn overage_costs_exactly_units_times_price_or_nothing(units in 0i64..i64::MAX, price in 0i64..i64::MAX) {
            match overage_cost(units, price) {
                Some(cost) => proptest::prop_assert_eq!(i128::from(cost), i128::from(units) * i128::from(price)),
                None => proptest::prop_assert!(i128::from(units) * i128::from(price) > i128::from(i64::MAX)),
            }
        }
    }
}
