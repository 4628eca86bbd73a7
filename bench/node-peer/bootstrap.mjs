// Baseline only: a minimal Lambda Runtime API loop for the Node peer (what the managed Node.js
// runtime does around a handler), so that both sides are started and invoked the same way.
// `node bootstrap.mjs [balance|webhook]` picks the handler (balance by default).
const { handler } = await import(
  process.argv[2] === "webhook" ? "./webhook.mjs" : "./handler.mjs"
);

const base = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation`;

for (;;) {
  const next = await fetch(`${base}/next`);
  const id = next.headers.get("lambda-runtime-aws-request-id");
  const event = await next.json();
  try {
    const result = await handler(event);
    await fetch(`${base}/${id}/response`, { method: "POST", body: JSON.stringify(result) });
  } catch (err) {
    await fetch(`${base}/${id}/error`, {
      method: "POST",
      body: JSON.stringify({ errorMessage: String(err?.message ?? err), errorType: "Error" }),
    });
  }
}
