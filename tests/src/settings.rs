//! The harness's fixed keys and settings, the options a test app is spawned with, and the
//! servers' addresses that `scripts/test.sh` exports.

/// The Stripe key used with localstripe (it accepts any `sk_` key).
pub const STRIPE_KEY: &str = "sk_test_coffer_local";
pub const JWT_SECRET: &str = "integration-test-jwt-secret";
/// The IAM role allowed on `/internal/*` in tests (`service_token("app-backend")` is a session
/// of it).
pub const BACKEND_ROLE: &str = "arn:aws:iam::000000000000:role/app-backend";
/// An origin the test routers allow by CORS (a storefront served from another host).
pub const TEST_PAGE_ORIGIN: &str = "https://shop.example.test";
/// Test apps re-read a rotated webhook secret at most this often.
pub const SECRET_REFRESH_SECS: u64 = 2;

/// A test project whose Stripe is the test double (billing meters), with no localstripe of its
/// own: a test gives it a secret when it needs one.
pub const METERED_PROJECT: &str = "metered";

pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests through scripts/test.sh")
    })
}

/// Options for a test app whose secret is deliberately broken.
#[derive(Default, Clone)]
pub struct SecretSetup {
    /// Store no secret at all (the id points at nothing).
    pub missing: bool,
    /// Do not register the webhook with localstripe (a webhook that is unreachable).
    pub no_webhook: bool,
    /// Put a fault proxy in front of DynamoDB, Secrets Manager and Stripe.
    pub proxied: bool,
    /// Store an empty webhook secret.
    pub empty_webhook_secret: bool,
    /// Store the placeholder a deploy creates: no Stripe key and no webhook secret.
    pub placeholder: bool,
    /// Store a Stripe key that Stripe (the test double) refuses as rolled.
    pub rolled_stripe_key: bool,
    /// Talk to Stripe's real test mode with this `sk_test_` key (the opt-in suite): no
    /// localstripe, no test double, no webhook registration (Stripe cannot reach a local machine;
    /// tests deliver events built from Stripe's real objects, signed locally).
    pub real_stripe_key: Option<String>,
    /// Publish billing events to a bus of the test's own in moto, with a rule that fills a
    /// queue the test reads (`TestApp::billing_events`).
    pub events: bool,
    /// Projects' own webhooks: a deliveries queue of the test's own in moto, read as the
    /// deliverer's event source mapping reads it; endpoints may be on this machine, and the
    /// retry schedule runs 3600 times faster (5 s, 5 min, 30 min, 2 h, 5 h become 1.4 ms, 83 ms,
    /// 0.5 s, 2 s, 5 s; three days, 72 s).
    pub webhooks: bool,
    /// Usage leases that end after 300 ms and are settled 500 ms later (to see them settle).
    pub short_usage_leases: bool,
    /// The deployment's name (`COFFER_DEPLOYMENT`), which marks the Stripe objects it makes.
    pub deployment: Option<&'static str>,
    /// Serve the API under this path of its URL (a custom domain's API mapping, `/billing`):
    /// `PUBLIC_BASE_URL` is the router's URL with it.
    pub base_path: Option<&'static str>,
}

/// How long a usage block lasts with `short_usage_leases`, and the margin before it is settled:
/// short enough that a test sees several blocks taken in turn, long enough that a block taken
/// just before a check is still live on a slow machine.
pub const SHORT_USAGE_LEASE_MS: u64 = 1_500;
pub const SHORT_USAGE_LEASE_MARGIN_MS: u64 = 500;

/// The test projects and the Stripe each talks to: `alpha` and `beta` their own localstripe
/// processes, `down` a port where nothing answers (Stripe unreachable).
pub fn project_stripe_bases() -> Vec<(&'static str, String)> {
    let mut bases = vec![("down", "http://127.0.0.1:9".to_owned())];
    for (id, variable) in [
        ("alpha", "TEST_STRIPE_ALPHA_BASE"),
        ("beta", "TEST_STRIPE_BETA_BASE"),
    ] {
        bases.push((id, required_env(variable)));
    }
    bases
}

/// The Stripe base URL of a test project.
pub fn project_stripe_base(project: &str) -> String {
    project_stripe_bases()
        .into_iter()
        .find(|(id, _)| *id == project)
        .map(|(_, url)| url)
        .unwrap_or_else(|| panic!("no localstripe for project {project}"))
}
