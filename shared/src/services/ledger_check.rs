//! The ledger check (`check-invariants`, and `coffer-dev check`): the whole table in segments,
//! a page at a time, so that memory stays bounded whatever the table's size. Each account a
//! page names is judged on its own reads, strongly consistent: its balance, its entries and the
//! payments they name (`domain::invariants::judge`). A write in flight can make one read not add
//! up; the account is then read again, and only the very same items found twice not adding up
//! are a violation. An account still moving after a few reads is judged again by the next run.
//! The cursor is saved after every page, so a pass that does not fit in one run goes on.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;

use crate::adapters::store::Keys;
use crate::domain::invariants::{judge, CheckCursor, Verdict};
use crate::domain::records::{now_ms, UserId};
use crate::services::budget::Budget;
use crate::services::Failure;
use crate::App;

/// The segments a pass reads in turn.
pub const SEGMENTS: u32 = 8;
/// Items per page of the scan.
const PAGE_ITEMS: i32 = 500;
/// Reads of one account before it is left for the next run.
const READS: usize = 4;
/// Violation sentences kept in a report (each one is logged).
const REPORTED: usize = 100;

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub pages: usize,
    pub items: usize,
    /// Accounts judged in this run.
    pub accounts: usize,
    /// Accounts read again because a read did not add up.
    pub reread: usize,
    /// Accounts still moving after every read, left for the next run.
    pub busy: usize,
    /// What this run found broken (the first hundred; each is logged).
    pub violations: Vec<String>,
    /// How many accounts or items this run found broken.
    pub broken: usize,
    /// The pass finished in this run (the next run starts another).
    pub complete: bool,
    /// Accounts judged and found broken over the whole pass, when it finished.
    pub pass_accounts: u64,
    pub pass_violations: u64,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.broken == 0
    }
}

/// Which pass a check goes on with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The scheduled pass, from its saved cursor (saved again as it goes).
    Resume,
    /// A whole pass of its own, from the table's start, that saves nothing (an operator's).
    Whole,
}

/// Goes on with the ledger check until the pass ends or `budget` is out. `pause` is the time
/// between two reads of an account that did not add up.
pub async fn check_ledger(
    app: &App,
    pass: Pass,
    budget: Budget,
    pause: Duration,
) -> Result<CheckReport, Failure> {
    let fresh = || CheckCursor {
        started_ms: now_ms(),
        ..CheckCursor::default()
    };
    let mut cursor = match pass {
        Pass::Resume => app.store.ledger_check_cursor().await?.unwrap_or_else(fresh),
        Pass::Whole => fresh(),
    };
    let save = |cursor: CheckCursor| async move {
        match pass {
            Pass::Resume => app.store.save_ledger_check_cursor(&cursor).await,
            Pass::Whole => Ok(()),
        }
    };
    let mut report = CheckReport::default();
    let busy = std::mem::take(&mut cursor.busy);
    for (prefix, account) in busy {
        let Some(user) = UserId::parse(&account) else {
            continue;
        };
        if budget.out(report.pages) {
            cursor.busy.push((prefix, account));
            continue;
        }
        judge_account(
            app,
            &prefix,
            &user,
            &BTreeSet::new(),
            pause,
            &mut cursor,
            &mut report,
        )
        .await?;
    }
    'pages: while !budget.out(report.pages) {
        let page = app
            .store
            .scan_segment_page(cursor.segment, SEGMENTS, cursor.after.clone(), PAGE_ITEMS)
            .await?;
        report.pages += 1;
        report.items += page.items;
        for sentence in page.unreadable {
            tracing::error!(violation = %sentence, "ledger invariant broken");
            broken(&mut report, &mut cursor, vec![sentence]);
        }
        let previous = cursor.last_judged.clone();
        for ((prefix, user), intents) in page.accounts {
            let this = (prefix.clone(), user.as_str().to_owned());
            // Its items began on the last page: judged there already.
            if previous.as_ref() == Some(&this) && intents.is_empty() {
                continue;
            }
            if budget.past_deadline() {
                // The page is read again by the next run (its accounts judged again: harmless).
                break 'pages;
            }
            judge_account(
                app,
                &prefix,
                &user,
                &intents,
                pause,
                &mut cursor,
                &mut report,
            )
            .await?;
        }
        // The account whose items may go on in the next page.
        cursor.last_judged = page
            .last_account
            .map(|(prefix, user)| (prefix, user.as_str().to_owned()));
        match page.next {
            Some(key) => cursor.after = Some(key),
            None => {
                cursor.segment += 1;
                cursor.after = None;
            }
        }
        if cursor.segment >= SEGMENTS {
            report.complete = true;
            report.pass_accounts = cursor.accounts;
            report.pass_violations = cursor.violations;
            tracing::info!(
                accounts = cursor.accounts,
                violations = cursor.violations,
                started_ms = cursor.started_ms,
                "a ledger check pass finished"
            );
            cursor = CheckCursor {
                started_ms: now_ms(),
                busy: cursor.busy,
                ..CheckCursor::default()
            };
            break;
        }
        save(cursor.clone()).await?;
    }
    save(cursor).await?;
    Ok(report)
}

fn broken(report: &mut CheckReport, cursor: &mut CheckCursor, violations: Vec<String>) {
    report.broken += 1;
    cursor.violations += 1;
    for violation in violations {
        if report.violations.len() < REPORTED {
            report.violations.push(violation);
        }
    }
}

/// Reads one account until it is judged (or left busy).
async fn judge_account(
    app: &App,
    prefix: &str,
    user: &UserId,
    intents: &BTreeSet<String>,
    pause: Duration,
    cursor: &mut CheckCursor,
    report: &mut CheckReport,
) -> Result<(), Failure> {
    let store = app.store.scoped(Keys::new(prefix));
    let mut reads = Vec::new();
    report.accounts += 1;
    cursor.accounts += 1;
    for attempt in 0..READS {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
        }
        reads.push(store.account_snapshot(user, intents).await?);
        match judge(&reads) {
            Verdict::Holds => return Ok(()),
            Verdict::Broken(violations) => {
                for violation in &violations {
                    tracing::error!(violation = %violation, "ledger invariant broken");
                }
                broken(report, cursor, violations);
                return Ok(());
            }
            Verdict::Busy => {
                if attempt == 0 {
                    report.reread += 1;
                }
            }
        }
    }
    tracing::warn!(
        scope = prefix,
        account = user.as_str(),
        "an account kept moving while it was checked; it is checked again next run"
    );
    report.busy += 1;
    cursor
        .busy
        .push((prefix.to_owned(), user.as_str().to_owned()));
    Ok(())
}
