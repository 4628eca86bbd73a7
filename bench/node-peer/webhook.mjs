// Baseline only (not part of Coffer): Stripe's payment_intent.succeeded webhook as a typical
// Node.js Lambda would write it, for the benchmark's side-by-side rows. It reads the webhook
// secret from Secrets Manager once per cold start, checks the signature with the stripe
// package (HMAC-SHA256 over the raw body, five minutes' tolerance), and credits the user in one
// DynamoDB TransactWriteItems: the event recorded once (a replay is acknowledged and changes
// nothing) and the balance increased. It does less than Coffer's webhook (no other event
// types, no ledger entry, no package or currency checks): a floor for Node, not a port.
import Stripe from "stripe";
import {
  DynamoDBClient,
  TransactWriteItemsCommand,
  TransactionCanceledException,
} from "@aws-sdk/client-dynamodb";
import { SecretsManagerClient, GetSecretValueCommand } from "@aws-sdk/client-secrets-manager";

const dynamodb = new DynamoDBClient({});
const secretsManager = new SecretsManagerClient({});
const stripe = new Stripe("sk_test_placeholder_for_the_peer", {
  host: "127.0.0.1",
  protocol: "http",
});
let webhookSecret;

const json = (statusCode, body) => ({
  statusCode,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

export async function handler(event) {
  if (webhookSecret === undefined) {
    const secret = await secretsManager.send(
      new GetSecretValueCommand({ SecretId: process.env.STRIPE_SECRET_ID }),
    );
    webhookSecret = JSON.parse(secret.SecretString).webhookSecret;
  }
  const body = event.isBase64Encoded
    ? Buffer.from(event.body ?? "", "base64").toString("utf8")
    : event.body ?? "";
  let stripeEvent;
  try {
    stripeEvent = stripe.webhooks.constructEvent(
      body,
      event.headers?.["stripe-signature"] ?? "",
      webhookSecret,
    );
  } catch {
    return json(400, { success: false, error: "bad signature", code: "bad_signature" });
  }
  if (stripeEvent.type !== "payment_intent.succeeded") {
    return json(200, { success: true, data: { received: true } });
  }
  const intent = stripeEvent.data.object;
  const user = intent.metadata?.coffer_user_id;
  const credits = Number(intent.metadata?.coffer_credits ?? "0");
  if (!user || !(credits > 0)) {
    return json(200, { success: true, data: { received: true } });
  }
  const table = process.env.TABLE_NAME;
  try {
    await dynamodb.send(
      new TransactWriteItemsCommand({
        TransactItems: [
          {
            Put: {
              TableName: table,
              Item: { pk: { S: `PEER#EVENT#${stripeEvent.id}` }, sk: { S: "EVENT" } },
              ConditionExpression: "attribute_not_exists(pk)",
            },
          },
          {
            Update: {
              TableName: table,
              Key: { pk: { S: `PEER#USER#${user}` }, sk: { S: "BALANCE" } },
              UpdateExpression: "ADD balance :credits",
              ExpressionAttributeValues: { ":credits": { N: String(credits) } },
            },
          },
        ],
      }),
    );
  } catch (err) {
    const replay =
      err instanceof TransactionCanceledException &&
      err.CancellationReasons?.[0]?.Code === "ConditionalCheckFailed";
    if (!replay) throw err;
  }
  return json(200, { success: true, data: { received: true } });
}
