//! Every idempotency recipe in one place: the `Idempotency-Key` Coffer sends Stripe for each
//! request that makes or changes something, and the id of each ledger entry and billing event.
//! A recipe names what must happen once (the account's customer, a subscription generation, a
//! payment's purchase), never the attempt, so that a retry is answered with the first result.
//! Where every call is meant to make something new, the recipe takes a fresh random `nonce`.

use sha2::{Digest, Sha256};

use super::records::UserId;
use super::scope::Scope;

/// A hash of the parts, separated so that `("a", "bc")` and `("ab", "c")` differ: any text
/// becomes a safe key.
pub fn hash_parts(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0u8]);
        }
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// The first `n` characters of a hash (all of it when shorter).
fn head(hash: &str, n: usize) -> &str {
    hash.get(..n).unwrap_or(hash)
}

/// A client's `Idempotency-Key` of a user, as stored: two users' keys never meet.
pub fn client_key(user: &UserId, key: &str) -> String {
    hash_parts(&[user.as_str(), key])
}

// ---- Stripe's Idempotency-Key ----

/// The account's one customer in a scope.
pub fn customer(scope: &Scope, account: &UserId) -> String {
    format!(
        "coffer-cus-{}",
        hash_parts(&[&scope.to_string(), account.as_str()])
    )
}

/// A card form: each call is a new SetupIntent (a retried call makes a second, unused one).
pub fn card_setup(nonce: &str) -> String {
    format!("coffer-seti-{nonce}")
}

/// A subscription create: the account's subscription generation (the one it had before, if
/// any), the price and the card. The same create asked again (a client's retry after a
/// timeout) gets the subscription the first attempt made.
pub fn subscription_create(
    scope: &Scope,
    account: &UserId,
    generation: &str,
    price: &str,
    setup_intent: Option<&str>,
) -> String {
    format!(
        "coffer-sub-{}",
        hash_parts(&[
            &scope.to_string(),
            account.as_str(),
            generation,
            price,
            setup_intent.unwrap_or("default-card"),
        ])
    )
}

/// A plan change of a subscription, from the state observed when it was asked.
pub fn subscription_change(
    scope: &Scope,
    subscription: &str,
    plan: &str,
    observed_at_ms: i64,
) -> String {
    format!(
        "coffer-subupd-{}",
        hash_parts(&[
            &scope.to_string(),
            subscription,
            plan,
            &observed_at_ms.to_string()
        ])
    )
}

/// A Checkout session: each call is a new session.
pub fn checkout_session(nonce: &str) -> String {
    format!("coffer-cs-{nonce}")
}

/// The scope's customer-portal configuration, made once.
pub fn portal_configuration(scope: &Scope) -> String {
    format!("coffer-portal-config-v1-{scope}")
}

/// A purchase's PaymentIntent: the client's key when it sent one (the same purchase asked
/// again is the same intent), else a fresh one.
pub fn payment_intent(scope: &Scope, client_key_hash: Option<&str>, nonce: &str) -> String {
    match client_key_hash {
        Some(hash) => format!("coffer-pi-{}", hash_parts(&[&scope.to_string(), hash])),
        None => format!("coffer-pi-{nonce}"),
    }
}

/// The confirmation of a PaymentIntent with a saved card: once per intent.
pub fn payment_intent_confirm(intent_id: &str) -> String {
    format!("coffer-pi-confirm-{intent_id}")
}

/// An auto-recharge's PaymentIntent: the account's recharge id in its scope's mark (which names
/// the deployment, so two deployments sharing a Stripe account never share a key), so the
/// stream handing the same balance change over again (or a retry after Stripe's answer was
/// lost) is the same charge.
pub fn recharge(scope_mark: &str, account: &UserId, recharge_id: &str) -> String {
    format!(
        "coffer-recharge-{}",
        hash_parts(&[scope_mark, account.as_str(), recharge_id])
    )
}

/// The off-session confirmation of an auto-recharge's PaymentIntent: once per intent.
pub fn recharge_confirm(intent_id: &str) -> String {
    format!("coffer-recharge-confirm-{intent_id}")
}

/// The refund of the `n`th payment of a duplicate subscription.
pub fn duplicate_refund(subscription: &str, n: usize) -> String {
    format!("coffer-dupsub-refund-{subscription}-{n}")
}

/// A meter event's send: Stripe counts the identifier once; the attempt in the key lets a later
/// attempt be answered afresh rather than with a stored failure.
pub fn meter_event(identifier: &str, attempt: u32) -> String {
    format!("{identifier}-{attempt}")
}

// ---- Ledger entries and billing events ----

/// The credits of a paid purchase.
pub fn purchase_entry(intent_id: &str) -> String {
    format!("purchase:{intent_id}")
}

/// A correction of a purchase's credits, at the payment's next revision.
pub fn adjustment_entry(intent_id: &str, next_rev: i64) -> String {
    format!("adjust:{intent_id}:r{next_rev}")
}

/// A refund's or dispute's movement of a payment, at the payment's next revision.
pub fn charge_entry(kind: super::ledger::EntryKind, intent_id: &str, next_rev: i64) -> String {
    format!("{kind}:{intent_id}:r{next_rev}")
}

/// The included credits of an invoice: once per invoice.
pub fn included_entry(invoice_id: &str) -> String {
    format!("included:{invoice_id}")
}

/// Who asks for a spend: the user, or a backend principal for them.
pub enum Spender<'a> {
    User,
    Service(&'a str),
}

/// A spend of a user for a client key: a user's key and a backend's key never meet.
pub fn spend_entry(user: &UserId, spender: &Spender<'_>, key: &str) -> String {
    let hash = match spender {
        Spender::User => hash_parts(&[user.as_str(), key]),
        Spender::Service(principal) => hash_parts(&[user.as_str(), "iam", principal, key]),
    };
    format!("spend:{}", head(&hash, 32))
}

/// An operator's grant for a key.
pub fn grant_entry(user: &UserId, key: &str) -> String {
    format!("grant:{}", head(&client_key(user, key), 32))
}

/// A grant through the API, by a developer or an allowlisted backend (`by`), for a key.
pub fn api_grant_entry(user: &UserId, by: &str, key: &str) -> String {
    format!(
        "grant:{}",
        head(&hash_parts(&[user.as_str(), "grant", by, key]), 32)
    )
}

/// An adjustment of a grant, for a key (the same key on another grant is another
/// adjustment).
pub fn grant_adjust_entry(user: &UserId, by: &str, grant_id: &str, key: &str) -> String {
    format!(
        "adjust:{}",
        head(
            &hash_parts(&[user.as_str(), "adjust", by, grant_id, key]),
            32
        )
    )
}

/// The voiding of a grant: once per grant.
pub fn grant_void_entry(grant_id: &str) -> String {
    format!("void:{grant_id}")
}

/// A reservation's id, for its caller and key.
pub fn hold_id(user: &UserId, by: &str, key: &str) -> String {
    format!(
        "h_{}",
        head(&hash_parts(&[user.as_str(), "hold", by, key]), 32)
    )
}

/// A usage record's key: the caller, the account and the client's key.
pub fn usage_key(caller: &str, account: &UserId, key: &str) -> String {
    hash_parts(&["usage", caller, account.as_str(), key])
}

/// The overage credits a usage record paid.
pub fn overage_entry(usage_key: &str) -> String {
    format!("usage:{}", head(usage_key, 32))
}

/// A billing event made from a change of the table: the same change always gives the same id.
pub fn billing_event(change_id: &str, name: &str, index: usize) -> String {
    format!(
        "evt_{}",
        head(&hash_parts(&[change_id, name, &index.to_string()]), 32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scope::{Mode, ProjectId};

    fn scope(project: &str) -> Scope {
        Scope {
            project: ProjectId::parse(project).expect("project"),
            mode: Mode::Test,
        }
    }

    #[test]
    fn a_recipe_names_what_happens_once_and_never_mixes_two_things() {
        let ada = UserId::parse("ada").expect("user");
        let bob = UserId::parse("bob").expect("user");
        let (a, b) = (scope("alpha"), scope("beta"));
        assert_eq!(customer(&a, &ada), customer(&a, &ada));
        assert_ne!(customer(&a, &ada), customer(&b, &ada));
        assert_ne!(customer(&a, &ada), customer(&a, &bob));
        assert_ne!(hash_parts(&["a", "bc"]), hash_parts(&["ab", "c"]));
        let first = subscription_create(&a, &ada, "first", "price_1", None);
        assert_eq!(
            first,
            subscription_create(&a, &ada, "first", "price_1", None)
        );
        assert_ne!(
            first,
            subscription_create(&a, &ada, "sub_1", "price_1", None)
        );
        assert_ne!(
            first,
            subscription_create(&a, &ada, "first", "price_1", Some("seti_1"))
        );
        assert_ne!(
            spend_entry(&ada, &Spender::User, "k"),
            spend_entry(&ada, &Spender::Service("arn:aws:iam::1:role/x"), "k")
        );
        assert_ne!(
            spend_entry(&ada, &Spender::User, "k"),
            spend_entry(&bob, &Spender::User, "k")
        );
        let hash = client_key(&ada, "k");
        assert_eq!(
            payment_intent(&a, Some(&hash), "n1"),
            payment_intent(&a, Some(&hash), "n2")
        );
        assert_ne!(
            payment_intent(&a, None, "n1"),
            payment_intent(&a, None, "n2")
        );
        assert_eq!(overage_entry("short"), "usage:short");
        assert_eq!(billing_event("e", "x", 0), billing_event("e", "x", 0));
        assert_ne!(billing_event("e", "x", 0), billing_event("e", "x", 1));
    }
}
