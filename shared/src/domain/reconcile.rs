//! Which PaymentIntents a reconciliation pass covers. A pass lists the intents created in a
//! fixed window `[from, to)`, page by page, and may take several runs (it is resumed from its
//! cursor). A new pass reaches back to where the last finished pass ended, so that passes that
//! took long leave no gap, but never further than a bound.

use serde::{Deserialize, Serialize};

/// The furthest back a pass reaches (Unix seconds): 30 days.
pub const MAX_LOOKBACK_SECS: i64 = 30 * 24 * 3600;

/// A pass over the intents created in `[from, to)` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pass {
    pub from: i64,
    pub to: i64,
    /// The last intent handled (the next page starts after it); `None` before the first page.
    #[serde(default)]
    pub after: Option<String>,
    /// When the pass began (Unix seconds).
    pub started: i64,
}

/// A scope's reconciliation: the pass under way, and where the last finished pass ended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    #[serde(default)]
    pub pass: Option<Pass>,
    /// Every intent created before this (Unix seconds) and within a pass's window was checked.
    #[serde(default)]
    pub covered_to: Option<i64>,
}

impl Coverage {
    /// The pass to go on with: the one under way, or a new one over the last `window` seconds
    /// that reaches back to where the last pass ended (at most `MAX_LOOKBACK_SECS`).
    pub fn pass_at(&self, now: i64, window: i64) -> Pass {
        if let Some(pass) = &self.pass {
            return pass.clone();
        }
        let recent = now.saturating_sub(window);
        let floor = now.saturating_sub(MAX_LOOKBACK_SECS);
        let from = match self.covered_to {
            Some(covered) => recent.min(covered).max(floor),
            None => recent,
        };
        Pass {
            from,
            // Through the current second (`to` is exclusive).
            to: now.saturating_add(1),
            after: None,
            started: now,
        }
    }

    /// The pass finished: what it covered is recorded, and the next run starts a new one.
    pub fn finish(&mut self, pass: &Pass) {
        self.covered_to = Some(self.covered_to.unwrap_or(pass.to).max(pass.to));
        self.pass = None;
    }

    /// Whether some intent may have gone unchecked for longer than `window`: the pass under
    /// way began more than a window ago, or the last pass ended so long ago that a new one
    /// cannot reach back to it.
    pub fn behind(&self, now: i64, window: i64) -> bool {
        let late_pass = self
            .pass
            .as_ref()
            .is_some_and(|p| p.started < now.saturating_sub(window));
        let gap = self
            .covered_to
            .is_some_and(|c| c < now.saturating_sub(MAX_LOOKBACK_SECS));
        late_pass || gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn a_new_pass_covers_the_window_and_reaches_back_to_the_last_one() {
        let now = 1_800_000_000;
        let first = Coverage::default().pass_at(now, 72 * HOUR);
        assert_eq!(
            (first.from, first.to, first.after),
            (now - 72 * HOUR, now + 1, None)
        );
        // The last pass ended 100 hours ago: the new one reaches back to it.
        let late = Coverage {
            pass: None,
            covered_to: Some(now - 100 * HOUR),
        };
        assert_eq!(late.pass_at(now, 72 * HOUR).from, now - 100 * HOUR);
        assert!(!late.behind(now, 72 * HOUR));
        // Ended within the window: the window itself.
        let recent = Coverage {
            pass: None,
            covered_to: Some(now - HOUR),
        };
        assert_eq!(recent.pass_at(now, 72 * HOUR).from, now - 72 * HOUR);
        // Never further back than the bound, and that is a gap.
        let lost = Coverage {
            pass: None,
            covered_to: Some(now - 40 * 24 * HOUR),
        };
        assert_eq!(lost.pass_at(now, 72 * HOUR).from, now - MAX_LOOKBACK_SECS);
        assert!(lost.behind(now, 72 * HOUR));
    }

    #[test]
    fn a_pass_under_way_is_resumed_and_is_late_once_older_than_the_window() {
        let now = 1_800_000_000;
        let pass = Pass {
            from: now - 80 * HOUR,
            to: now - 8 * HOUR,
            after: Some("pi_1".into()),
            started: now - 8 * HOUR,
        };
        let mut coverage = Coverage {
            pass: Some(pass.clone()),
            covered_to: Some(now - 9 * HOUR),
        };
        assert_eq!(coverage.pass_at(now, 72 * HOUR), pass);
        assert!(!coverage.behind(now, 72 * HOUR));
        assert!(coverage.behind(now, 4 * HOUR));
        coverage.finish(&pass);
        assert_eq!(
            coverage,
            Coverage {
                pass: None,
                covered_to: Some(now - 8 * HOUR)
            }
        );
    }
}
