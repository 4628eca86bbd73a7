// Baseline only (not part of Coffer): the balance route as a typical Node.js Lambda would write
// it, loading the same three clients as Coffer's functions and reading the same item.
import Stripe from "stripe";
import { DynamoDBClient, GetItemCommand } from "@aws-sdk/client-dynamodb";
import { SecretsManagerClient } from "@aws-sdk/client-secrets-manager";

const dynamodb = new DynamoDBClient({});
export const secretsManager = new SecretsManagerClient({});
export const stripe = new Stripe("sk_test_placeholder_for_the_peer", {
  host: "127.0.0.1",
  protocol: "http",
});

const json = (statusCode, body) => ({
  statusCode,
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

export async function handler(event) {
  const sub = event?.requestContext?.authorizer?.jwt?.claims?.sub;
  if (!sub) {
    return json(401, { success: false, error: "authentication required", code: "unauthorized" });
  }
  const out = await dynamodb.send(
    new GetItemCommand({
      TableName: process.env.TABLE_NAME,
      Key: { pk: { S: `USER#${sub}` }, sk: { S: "BALANCE" } },
      ConsistentRead: true,
    }),
  );
  const minor = Number(out.Item?.balance?.N ?? "0");
  const currency = out.Item?.currency?.S ?? "usd";
  return json(200, { success: true, data: { balance: minor / 100, currency } });
}
