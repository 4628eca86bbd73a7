//! Where a scope's reconciliation stands: the pass under way with its cursor, and where the last
//! finished pass ended. One item per scope, written after every page, so that a run cut short
//! by its deadline is resumed by the next.
//!
//! | item     | pk                     | sk         | notes                                  |
//! |----------|------------------------|------------|----------------------------------------|
//! | coverage | `<scope>RECONCILE`     | `COVERAGE` | `coverage`: `domain::reconcile::Coverage` as JSON |

use super::codec::{n, s, Fields};
use super::{Store, StoreError};
use crate::domain::reconcile::Coverage;
use crate::domain::records::now_ms;

impl Store {
    pub async fn reconcile_coverage(&self) -> Result<Coverage, StoreError> {
        let Some(item) = self.get(self.keys.reconcile_coverage()).await? else {
            return Ok(Coverage::default());
        };
        match Fields::of(&item).opt_text("coverage")? {
            None => Ok(Coverage::default()),
            Some(text) => serde_json::from_str(text).map_err(|_| {
                StoreError::Refused("a reconciliation coverage is not readable".into())
            }),
        }
    }

    /// Saves the coverage (one reconciliation runs at a time; a second one at once would only
    /// check the same intents again, which changes nothing).
    pub async fn save_reconcile_coverage(&self, coverage: &Coverage) -> Result<(), StoreError> {
        let text = serde_json::to_string(coverage)
            .map_err(|e| StoreError::Refused(format!("coverage could not be written: {e}")))?;
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.keys.reconcile_coverage()))
            .update_expression("SET coverage = :coverage, updatedAt = :now")
            .expression_attribute_values(":coverage", s(text))
            .expression_attribute_values(":now", n(now_ms()))
            .send()
            .await
            .map_err(StoreError::from_sdk)?;
        Ok(())
    }
}
