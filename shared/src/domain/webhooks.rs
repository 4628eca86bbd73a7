//! A project's own webhook endpoints: which events go where, how a delivery is signed (the
//! Standard Webhooks specification), when it is tried again, and which addresses are never
//! called. Pure rules; the sending and the queue are the adapters'.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A signing secret's prefix (`whsec_` and the key's bytes in base64), as the specification has
/// it.
pub const SECRET_PREFIX: &str = "whsec_";
/// How long a rotated-out secret still signs beside the new one.
pub const ROTATION_OVERLAP_SECS: i64 = 24 * 3600;
/// How long a delivery is tried, from its first attempt.
pub const RETRY_FOR_SECS: i64 = 3 * 24 * 3600;
/// An endpoint whose deliveries have failed this long, with none succeeding, is disabled.
pub const DISABLE_AFTER_SECS: i64 = 3 * 24 * 3600;
/// How long an attempt (and an event, for re-sending) is kept.
pub const KEEP_SECS: i64 = 30 * 24 * 3600;
/// How long an endpoint may take to answer.
pub const TIMEOUT_SECS: u64 = 10;
/// How much of an answer is read and kept.
pub const ANSWER_KEPT_BYTES: usize = 1024;
/// Endpoints a project may have in one mode.
pub const MAX_ENDPOINTS: usize = 20;

/// The waits after each failed attempt, in seconds (then the last, again, until
/// `RETRY_FOR_SECS` from the first attempt).
const BACKOFF_SECS: &[i64] = &[5, 300, 1800, 7200, 18_000, 36_000];

/// A signing secret, and until when it signs (`None`: the current one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningSecret {
    pub secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// One endpoint of a project's mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// The event types sent; `None`: all.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    pub enabled: bool,
    /// Why it was disabled, when Coffer disabled it (`gone`, `failing`); `None` when enabled or
    /// turned off by the developer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// The current secret first, then any rotated-out one still signing.
    pub secrets: Vec<SigningSecret>,
    pub created_at: i64,
    /// Since when its deliveries have failed with none succeeding (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// When a delivery last failed (a failure longer ago than the retry window starts a new
    /// streak: the endpoint must fail continuously to be disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_at: Option<i64>,
}

impl Endpoint {
    /// Whether the endpoint takes events of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && self
                .events
                .as_ref()
                .is_none_or(|types| types.iter().any(|t| t == event_type))
    }

    /// The secrets that sign at `now`: the current one and any rotated out less than a day ago.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|until| now < until))
            .map(|s| s.secret.as_str())
            .collect()
    }

    /// The endpoint with `fresh` as its secret; the current one signs beside it for a day. At
    /// most one earlier secret is kept (rotated again, the one before is dropped), so the
    /// signature header stays two signatures long.
    pub fn rotated(mut self, fresh: String, now: i64) -> Self {
        let previous = self
            .secrets
            .into_iter()
            .find(|s| s.expires_at.is_none())
            .map(|mut s| {
                s.expires_at = Some(now + ROTATION_OVERLAP_SECS);
                s
            });
        self.secrets = std::iter::once(SigningSecret {
            secret: fresh,
            expires_at: None,
        })
        .chain(previous)
        .collect();
        self
    }
}

/// One attempt to deliver an event to an endpoint, as the developer's log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first attempt of a delivery (a re-send starts again at 1).
    pub attempt: u32,
    /// When it was made (Unix milliseconds).
    pub at_ms: i64,
    /// The endpoint's status code; `None` when it gave none (timeout, connection error,
    /// an address refused at send time).
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// `delivered`, `retrying` (tried again later), `failed` (not tried again), `gone` (410:
    /// the endpoint is disabled).
    pub outcome: String,
    /// The first `ANSWER_KEPT_BYTES` of the answer (lossy UTF-8), or why there was none.
    pub answer: String,
}

/// A new signing secret from 32 random bytes.
pub fn new_secret(random: &[u8; 32]) -> String {
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(random)
    )
}

/// The key a secret names, or `None` when it is not one.
pub fn secret_key(secret: &str) -> Option<Vec<u8>> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX)?)
        .ok()?;
    (!key.is_empty()).then_some(key)
}

/// The `webhook-signature` header: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one
/// per secret, space-separated.
pub fn signature(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|secret| {
            let key = secret_key(secret)?;
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body);
            Some(format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an attempt's answer (or its failure to get one) means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Timeout, connection error, 429 or 5xx: tried again later.
    Retry,
    /// 410 Gone: the endpoint is disabled.
    Gone,
    /// Any other answer (a redirect, which is never followed, or another 4xx): not tried again.
    Refused,
}

/// The verdict on an answer's status; `None`: no answer (timeout, connection refused).
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(200..=299) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(429) | Some(500..=599) => Verdict::Retry,
        Some(_) => Verdict::Refused,
    }
}

/// When (Unix milliseconds) the delivery whose first attempt was at `first` (Unix seconds) is
/// tried again after its `attempt`th attempt (1-based) failed at `now_ms`: the schedule's wait
/// (times `scale`, for tests) with up to a fifth of jitter either way (`jitter` in 0..1).
/// No sooner than the receiver asked (`retry_after_secs`, its `Retry-After` on a 429 or 503,
/// at most the schedule's longest wait). `None`: that is past the three days.
pub fn next_attempt(
    first: i64,
    attempt: u32,
    now_ms: i64,
    scale: f64,
    jitter: f64,
    retry_after_secs: Option<i64>,
) -> Option<i64> {
    let step = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    let base = BACKOFF_SECS
        .get(step)
        .or(BACKOFF_SECS.last())
        .copied()
        .unwrap_or(5);
    let jittered = base as f64 * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)) * scale.max(0.0);
    let wait_ms = (jittered * 1000.0).round() as i64;
    // Up to a fifth more than asked, so that deliveries told the same wait spread out.
    let longest_ms = BACKOFF_SECS
        .last()
        .copied()
        .unwrap_or(0)
        .saturating_mul(1000);
    let asked_ms = retry_after_secs
        .map(|secs| secs.clamp(0, longest_ms / 1000) as f64 * 1000.0)
        .map(|ms| ((ms * (1.0 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64).min(longest_ms))
        .unwrap_or(0);
    let due_ms = now_ms.saturating_add(wait_ms.max(0).max(asked_ms));
    let limit_ms = first
        .saturating_mul(1000)
        .saturating_add((RETRY_FOR_SECS as f64 * 1000.0 * scale.max(0.0)) as i64);
    (due_ms <= limit_ms).then_some(due_ms)
}

/// An endpoint after an attempt's verdict at `now`: a success clears its failing time; a 410
/// disables it; a failure starts (or keeps) its failing time and disables it once it has
/// failed for `DISABLE_AFTER_SECS` (times `scale`). Whether it was disabled by this attempt.
pub fn after_attempt(
    mut endpoint: Endpoint,
    verdict: &Verdict,
    now: i64,
    scale: f64,
) -> (Endpoint, bool) {
    let was_enabled = endpoint.enabled;
    match verdict {
        Verdict::Delivered => {
            endpoint.failing_since = None;
            endpoint.last_failed_at = None;
        }
        Verdict::Gone => {
            endpoint.enabled = false;
            endpoint.disabled_reason = Some("gone".into());
        }
        Verdict::Retry | Verdict::Refused => {
            let limit = (DISABLE_AFTER_SECS as f64 * scale.max(0.0)) as i64;
            let window = (RETRY_FOR_SECS as f64 * scale.max(0.0)) as i64;
            // A quiet gap longer than the retry window: an old streak is over.
            if endpoint
                .last_failed_at
                .is_some_and(|last| now.saturating_sub(last) > window.max(1))
            {
                endpoint.failing_since = None;
            }
            endpoint.last_failed_at = Some(now);
            let since = *endpoint.failing_since.get_or_insert(now);
            if now.saturating_sub(since) >= limit.max(1) {
                endpoint.enabled = false;
                endpoint.disabled_reason = Some("failing".into());
            }
        }
    }
    let disabled_now = was_enabled && !endpoint.enabled;
    (endpoint, disabled_now)
}

/// Why a URL may not be an endpoint, in words; `Ok` with its host and port when it may.
/// `https` only; plain `http` only to a loopback host when `local` (the local stack).
pub fn check_url(url: &str, local: bool) -> Result<(String, u16), String> {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("url must be an https URL of at most 2048 characters.".into());
    }
    let (scheme, rest) = url.split_once("://").ok_or("url must be an https URL.")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err("url must name a host, with no user or password.".into());
    }
    let (host, port) = split_authority(authority).ok_or("url's host or port is malformed.")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        "http" if local && is_loopback_host(&host) => 80,
        "http" => {
            return Err(
                "url must be https (plain http only to this machine on the local stack).".into(),
            )
        }
        _ => return Err("url must be an https URL.".into()),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        if !address_allowed(ip, local) {
            return Err(format!("{host} is a private, loopback, link-local or metadata address: webhooks never go there."));
        }
    } else if is_internal_name(&host) && !(local && is_loopback_host(&host)) {
        return Err(format!(
            "{host} names this machine or a private network: webhooks never go there."
        ));
    }
    Ok((host, port.unwrap_or(default_port)))
}

/// `host[:port]` (an IPv6 host in brackets), the host lowercased.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port.parse().ok()?)),
            None => (authority.to_owned(), None),
        }
    };
    let host = host.to_ascii_lowercase();
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    valid.then_some((host, port))
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| canonical(ip).is_loopback())
}

/// Names that resolve to this machine or a cloud's metadata service whatever DNS says.
fn is_internal_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".internal")
        || host.ends_with(".local")
        || host == "metadata"
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a delivery may connect to `ip`: a public address (loopback too when `local`). Checked
/// when a URL is saved and on every address its host resolves to at send time.
pub fn address_allowed(ip: IpAddr, local: bool) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            if v4.is_loopback() {
                return local;
            }
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..=127).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..=19).contains(&b))
                || a >= 240
                || v4 == Ipv4Addr::new(169, 254, 169, 254))
        }
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                return local;
            }
            let seg = v6.segments();
            // Only global unicast (2000::/3), less the ranges that carry or translate an IPv4
            // address (6to4, Teredo) or are set aside (documentation, ORCHID).
            (seg[0] & 0xe000) == 0x2000
                && seg[0] != 0x2002
                && !(seg[0] == 0x2001
                    && (seg[1] == 0
                        || seg[1] == 0xdb8
                        || (seg[1] & 0xfff0) == 0x0010
                        || (seg[1] & 0xfff0) == 0x0020))
        }
    }
}

/// An event type list as a developer gives it: known names only, at least one; `None`: all.
pub fn valid_event_types(types: &[String], known: &[&str]) -> Result<(), String> {
    if types.is_empty() || types.len() > known.len() {
        return Err("events must name at least one event type (or be left out for all).".into());
    }
    match types.iter().find(|t| !known.contains(&t.as_str())) {
        Some(unknown) => Err(format!(
            "{unknown} is not an event type; known: {}.",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            id: "ep_1".into(),
            url: "https://example.com/hook".into(),
            events: None,
            enabled: true,
            disabled_reason: None,
            secrets: vec![SigningSecret {
                secret: new_secret(&[7; 32]),
                expires_at: None,
            }],
            created_at: 0,
            failing_since: None,
            last_failed_at: None,
        }
    }

    #[test]
    fn the_signature_is_the_specifications() {
        // The specification's published example (standard-webhooks, "Signature scheme").
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_for_a_day() {
        let old = endpoint();
        let rotated = old.clone().rotated(new_secret(&[9; 32]), 1_000);
        assert_eq!(rotated.signing_secrets(1_000).len(), 2);
        assert_eq!(rotated.signing_secrets(1_000)[0], new_secret(&[9; 32]));
        assert_eq!(
            rotated.signing_secrets(1_000 + ROTATION_OVERLAP_SECS),
            vec![new_secret(&[9; 32]).as_str()]
        );
        let header = signature(&rotated.signing_secrets(1_000), "m", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2);
        // Rotated again: the one before is dropped; only the last one signs beside the new.
        let twice = rotated.rotated(new_secret(&[3; 32]), 2_000);
        assert_eq!(twice.secrets.len(), 2);
        assert_eq!(twice.secrets[1].secret, new_secret(&[9; 32]));
        assert_eq!(
            twice.secrets[1].expires_at,
            Some(2_000 + ROTATION_OVERLAP_SECS)
        );
        let many = (0..200).fold(twice, |e, n| e.rotated(new_secret(&[n as u8; 32]), 3_000));
        assert_eq!(many.signing_secrets(3_000).len(), 2);
    }

    #[test]
    fn only_timeouts_429_and_5xx_are_tried_again_and_410_disables() {
        assert_eq!(verdict(Some(204)), Verdict::Delivered);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(429)), Verdict::Retry);
        assert_eq!(verdict(Some(503)), Verdict::Retry);
        assert_eq!(verdict(Some(410)), Verdict::Gone);
        assert_eq!(verdict(Some(302)), Verdict::Refused);
        assert_eq!(verdict(Some(400)), Verdict::Refused);
        let (gone, disabled) = after_attempt(endpoint(), &Verdict::Gone, 10, 1.0);
        assert!(disabled && !gone.enabled);
    }

    #[test]
    fn retries_back_off_with_jitter_and_stop_after_three_days() {
        let mut at = 0;
        let mut waits = Vec::new();
        for attempt in 1.. {
            match next_attempt(0, attempt, at * 1000, 1.0, 0.5, None) {
                Some(due_ms) => {
                    waits.push(due_ms / 1000 - at);
                    at = due_ms / 1000;
                }
                None => break,
            }
        }
        assert_eq!(&waits[..6], &[5, 300, 1800, 7200, 18_000, 36_000]);
        assert!(at <= RETRY_FOR_SECS && at > RETRY_FOR_SECS - 36_000, "{at}");
        // Jitter stays within a fifth either way.
        assert_eq!(next_attempt(0, 2, 0, 1.0, 0.0, None), Some(240_000));
        assert_eq!(next_attempt(0, 2, 0, 1.0, 1.0, None), Some(360_000));
    }

    #[test]
    fn a_receivers_retry_after_is_a_floor_capped_by_the_schedule_and_the_window() {
        let after = |attempt, now, jitter, asked| next_attempt(0, attempt, now, 1.0, jitter, asked);
        // Asked for a minute after the first failure: a minute (and up to a fifth), not 5 s.
        assert_eq!(after(1, 0, 0.0, Some(60)), Some(60_000));
        assert_eq!(after(1, 0, 0.5, Some(60)), Some(66_000));
        assert_eq!(after(1, 0, 1.0, Some(60)), Some(72_000));
        // Asking for less than the schedule changes nothing.
        assert_eq!(after(3, 0, 0.5, Some(60)), Some(1_800_000));
        // A day is capped at the longest wait (10 h), jitter included.
        assert_eq!(after(1, 0, 1.0, Some(86_400)), Some(36_000_000));
        // Past the three days: given up.
        let late = (RETRY_FOR_SECS - 30) * 1000;
        assert_eq!(after(1, late, 0.5, Some(60)), None);
        assert_eq!(after(1, late, 0.5, None), Some(late + 5_000));
        assert_eq!(after(1, 0, 0.5, Some(-5)), Some(5_000));
    }

    #[test]
    fn failing_for_three_days_disables_and_a_success_forgives() {
        let (failing, off) = after_attempt(endpoint(), &Verdict::Retry, 100, 1.0);
        assert!(!off && failing.failing_since == Some(100));
        let (ok, _) = after_attempt(failing.clone(), &Verdict::Delivered, 200, 1.0);
        assert_eq!(ok.failing_since, None);
        // Failing on and off for three days, never quiet longer than the retry window.
        let mut streak = failing;
        for day in 1..=2 {
            let (next, off) = after_attempt(streak, &Verdict::Retry, 100 + day * 86_400, 1.0);
            assert!(!off);
            streak = next;
        }
        let (late, off) = after_attempt(
            streak.clone(),
            &Verdict::Retry,
            100 + DISABLE_AFTER_SECS,
            1.0,
        );
        assert!(off && !late.enabled);
        assert_eq!(late.disabled_reason.as_deref(), Some("failing"));
        // One failure weeks after the last one starts a new streak: not disabled.
        let weeks = 100 + 2 * 86_400 + 30 * 86_400;
        let (fresh, off) = after_attempt(streak, &Verdict::Retry, weeks, 1.0);
        assert!(!off && fresh.enabled);
        assert_eq!(fresh.failing_since, Some(weeks));
    }

    #[test]
    fn no_private_loopback_link_local_or_metadata_address() {
        for url in [
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/x",
            "https://192.168.1.1/",
            "https://172.16.0.1/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[fe80::1]/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://localhost/",
            "https://metadata.google.internal/",
            "http://example.com/",
            "ftp://example.com/",
            "https://user:pw@example.com/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
        }
        assert_eq!(
            check_url("https://hooks.example.com/in?x=1", false),
            Ok(("hooks.example.com".into(), 443))
        );
        assert_eq!(
            check_url("http://127.0.0.1:8099/hook", true),
            Ok(("127.0.0.1".into(), 8099))
        );
        assert!(check_url("http://127.0.0.1:8099/hook", false).is_err());
        assert!(check_url("https://169.254.169.254/", true).is_err());
        assert!(address_allowed("93.184.216.34".parse().expect("ip"), false));
        assert!(
            address_allowed("192.0.78.9".parse().expect("ip"), false),
            "WordPress.com"
        );
        assert!(address_allowed(
            "2606:4700::6810:85e5".parse().expect("ip"),
            false
        ));
        for embedded in [
            "::a9fe:a9fe",
            "::ffff:0:a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "2001::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "fec0::1",
            "fd00:ec2::254",
        ] {
            assert!(
                !address_allowed(embedded.parse().expect("ip"), false),
                "{embedded}"
            );
        }
        assert!(!address_allowed(
            "169.254.169.254".parse().expect("ip"),
            true
        ));
    }
}
