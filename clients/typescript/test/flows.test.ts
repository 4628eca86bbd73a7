// The client against a running local stack (scripts/check-openapi.sh starts one and sets these
// variables): buy a package, subscribe, spend and record usage, each through the typed routes.
// Stripe.js's part (paying with a card) is done at localstripe, as the storefront's tests do.
import assert from "node:assert/strict";
import { test } from "node:test";

import { CofferError, createCofferClient, dataOf } from "../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: these tests run against a local stack (scripts/check-openapi.sh)`);
  }
  return value;
}

const baseUrl = required("COFFER_CLIENT_URL");
const user = required("COFFER_CLIENT_USER");
const coffer = createCofferClient({ baseUrl, token: required("COFFER_CLIENT_TOKEN") });
const backend = createCofferClient({ baseUrl, token: required("COFFER_CLIENT_SERVICE_TOKEN") });
const stripeUrl = required("COFFER_CLIENT_STRIPE_URL");

/** A form POST to localstripe (any key is accepted there). */
async function stripe(path: string, form: Record<string, string>): Promise<Record<string, unknown>> {
  const response = await fetch(`${stripeUrl}${path}`, {
    method: "POST",
    headers: { Authorization: "Bearer sk_test_typescript_client" },
    body: new URLSearchParams(form),
  });
  const body = (await response.json()) as Record<string, unknown>;
  assert.equal(response.status, 200, `${path}: ${JSON.stringify(body)}`);
  return body;
}

async function card(): Promise<string> {
  const method = await stripe("/v1/payment_methods", {
    type: "card",
    "card[number]": "4242424242424242",
    "card[exp_month]": "12",
    "card[exp_year]": "2034",
    "card[cvc]": "123",
  });
  return String(method.id);
}

async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  for (let attempt = 0; attempt < 60; attempt += 1) {
    const found = await check();
    if (found !== undefined) {
      return found;
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`${what}: not within 30 s`);
}

async function balance(): Promise<number> {
  return dataOf(await coffer.GET("/api/stripe/balance")).balance;
}

test("buys a credit package and sees its credits once paid", async () => {
  const packages = dataOf(await coffer.GET("/api/stripe/credit-packages"));
  const cheapest = packages[0];
  assert.ok(cheapest, "the local stack has sample packages");
  const before = await balance();
  const intent = dataOf(
    await coffer.POST("/api/stripe/create-payment-intent", {
      body: { creditPackageId: cheapest.id },
      headers: { "Idempotency-Key": `ts-buy-${user}` },
    }),
  );
  assert.match(intent.clientSecret, /^pi_/);
  await stripe(`/v1/payment_intents/${intent.paymentIntentId}`, { payment_method: await card() });
  await stripe(`/v1/payment_intents/${intent.paymentIntentId}/confirm`, {});
  const after = await until("the credits", async () => {
    const now = await balance();
    return now >= before + Number(cheapest.creditAmount) ? now : undefined;
  });
  assert.equal(after, before + Number(cheapest.creditAmount));
});

test("subscribes to a plan with a saved card", async () => {
  const plans = dataOf(await coffer.GET("/api/stripe/plans"));
  const recurring = plans.find((plan) => plan.kind === "recurring");
  assert.ok(recurring, "the local stack has a recurring plan");
  const setup = dataOf(await coffer.POST("/api/stripe/setup-intent", { body: {} }));
  await stripe(`/v1/setup_intents/${setup.setupIntentId}/confirm`, { payment_method: await card() });
  const made = dataOf(
    await coffer.POST("/api/stripe/create-subscription", {
      body: { planId: recurring.id, setupIntentId: setup.setupIntentId },
    }),
  );
  assert.match(made.subscriptionId, /^sub_/);
  const mine = await until("the subscription", async () => {
    const now = dataOf(await coffer.GET("/api/v1/payments/stripe/my-subscription"));
    return now.planId === recurring.id && now.status === "active" ? now : undefined;
  });
  assert.equal(mine.plan.id, recurring.id);
});

test("spends credits once per idempotency key, and refuses more than the balance in words", async () => {
  const before = await balance();
  const key = `ts-spend-${user}`;
  const spent = dataOf(
    await coffer.POST("/api/credits/consume", {
      body: { amount: 1, reason: "typescript client test", idempotencyKey: key },
    }),
  );
  assert.equal(spent.balance, before - 1);
  const again = dataOf(
    await coffer.POST("/api/credits/consume", {
      body: { amount: 1, reason: "typescript client test", idempotencyKey: key },
    }),
  );
  assert.equal(again.entryId, spent.entryId);
  await assert.rejects(
    async () =>
      dataOf(
        await coffer.POST("/api/credits/consume", {
          body: { amount: 1_000_000, reason: "too much", idempotencyKey: `ts-much-${user}` },
        }),
      ),
    (error: unknown) =>
      error instanceof CofferError && error.status === 402 && error.code === "insufficient_credits",
  );
});

test("records usage from the app's backend and reads it as the user", async () => {
  const recorded = dataOf(
    await backend.POST("/internal/usage", {
      body: { userId: user, metric: "requests", quantity: 3, idempotencyKey: `ts-usage-${user}` },
    }),
  );
  assert.equal(recorded.allowed, true);
  assert.ok(recorded.used >= 3);
  const usage = dataOf(await coffer.GET("/api/usage"));
  const requests = usage.metrics.find((metric) => metric.metric === "requests");
  assert.ok(requests && requests.used >= 3, JSON.stringify(usage));
});
