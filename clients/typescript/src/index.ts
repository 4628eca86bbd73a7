// Coffer's typed client: the paths, bodies and answers are the ones `src/schema.d.ts` declares,
// generated from Coffer's OpenAPI document by openapi-typescript (`npm run generate`); requests go
// through openapi-fetch. What is written here only adds the bearer token and reads the envelope.
import createClient, { type Client, type Middleware } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths } from "./schema.js";

/** A wire type of Coffer's API by its schema name (`Schema<"BalanceView">`). */
export type Schema<Name extends keyof components["schemas"]> = components["schemas"][Name];

export interface CofferOptions {
  /** The API's base URL: the stack's ApiUrl output, or `http://127.0.0.1:3000` locally. */
  baseUrl: string;
  /** The user's JWT (or a function that returns a fresh one), sent as `Authorization: Bearer`. */
  token?: string | (() => string | Promise<string>);
  /** Another `fetch` (tests, older runtimes). */
  fetch?: typeof globalThis.fetch;
}

export type CofferClient = Client<paths>;

/** A client for Coffer's API whose every route, body and answer is typed. */
export function createCofferClient(options: CofferOptions): CofferClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const token = options.token;
  if (token !== undefined) {
    const bearer: Middleware = {
      async onRequest({ request }) {
        const value = typeof token === "function" ? await token() : token;
        request.headers.set("Authorization", `Bearer ${value}`);
        return request;
      },
    };
    client.use(bearer);
  }
  return client;
}

/** What `data` holds in a success in the envelope (`{"success": true, "data": …}`). */
export type DataOf<Body> = Body extends { success: true; data: infer Data } ? Data : never;

/** An answer Coffer refused: its status, its sentence and (in the envelope) its code. */
export class CofferError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = "CofferError";
  }
}

function sentence(body: unknown): { message: string; code: string | undefined } {
  if (typeof body === "object" && body !== null) {
    const { error, code } = body as { error?: unknown; code?: unknown };
    return {
      message: typeof error === "string" ? error : "Coffer refused the request.",
      code: typeof code === "string" ? code : undefined,
    };
  }
  return { message: "Coffer refused the request.", code: undefined };
}

/**
 * The `data` of an answer in the envelope, typed by its route; a refusal throws a CofferError
 * with Coffer's sentence. A success in the plain format (a project set so for apps written
 * against another backend) throws a PlainAnswerError carrying the answer: the request was done.
 */
export function dataOf<Body>(result: {
  data?: Body;
  error?: unknown;
  response: Response;
}): DataOf<Body> {
  if (result.data === undefined) {
    const { message, code } = sentence(result.error);
    throw new CofferError(result.response.status, message, code);
  }
  const body: unknown = result.data;
  if (typeof body === "object" && body !== null && (body as { success?: unknown }).success === true) {
    return (body as { data: DataOf<Body> }).data;
  }
  throw new PlainAnswerError(result.response, body);
}

/**
 * A success that is not in the envelope: the project answers in the plain format. The request
 * was done (do not send it again with another key); its answer is `body`.
 */
export class PlainAnswerError extends Error {
  constructor(
    readonly response: Response,
    readonly body: unknown,
  ) {
    super(
      "The request succeeded, but this project answers in the plain format: its answer is this error's body.",
    );
    this.name = "PlainAnswerError";
  }
}
