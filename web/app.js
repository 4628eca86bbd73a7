// The storefront's script: plain JavaScript over Coffer's API, no build step. It reads its
// settings from ./config.json (the API's base URL, Stripe's publishable key and where Stripe.js
// is), signs in with a local token (local stack only), buys packages with Stripe.js and a card
// form, spends credits, subscribes, cancels and resumes a plan, and sets auto-recharge (and
// confirms a recharge the bank asks the user to authenticate).
'use strict';

const state = {
  token: sessionStorage.getItem('coffer.token'),
  name: sessionStorage.getItem('coffer.name'),
  config: { apiBase: '', publishableKey: '', stripeJsUrl: '' },
  stripe: null,
  card: null,
  cardProblem: 'Card payments are still loading. Try again in a moment.',
  currency: 'usd',
  plans: [],
  subscription: null,
  recharge: null,
  busy: false,
};
const $ = (id) => document.getElementById(id);

// How long the page watches for a payment's webhook: every half second at first, then slower.
const WATCH_FAST_MS = 20000;
const WATCH_MAX_MS = 120000;

// ---- words ------------------------------------------------------------------------------

// Amounts come from the API in major units of their currency.
function money(amount, currency = state.currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency.toUpperCase() }).format(amount);
  } catch (_) {
    return `${amount} ${currency}`;
  }
}

function credits(amount) {
  return new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 }).format(amount);
}

function day(iso) {
  const date = iso ? new Date(iso) : null;
  if (!date || Number.isNaN(date.getTime())) return null;
  return new Intl.DateTimeFormat(undefined, { dateStyle: 'long' }).format(date);
}

function say(text, isError) {
  const box = $('message');
  box.textContent = text || '';
  box.className = isError ? 'error' : '';
}

// What to say when an answer carries no sentence of its own.
const STATUS_WORDS = {
  400: 'The request was not accepted. Check what you entered and try again.',
  401: 'Your sign-in has expired. Sign in again.',
  402: 'The payment was declined.',
  403: 'You are not allowed to do that.',
  404: 'That was not found.',
  409: 'That is already under way or done.',
  429: 'Too many requests. Wait a moment and try again.',
};

// Sentences of the page's own for answers whose API sentence is terse.
const CODE_WORDS = {
  insufficient_credits: 'You do not have enough credits for that. Buy a package first, or spend less.',
};

// A Stripe.js error in words (a script error of the card form is not shown as it is).
function stripeWords(error) {
  if (error && typeof error.message === 'string' && error.message && !(error instanceof Error)) {
    return error.message;
  }
  return 'The card could not be checked. Enter its number, expiry date and security code.';
}

function freshKey() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  const bytes = window.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// One idempotency key per attempt of one thing (a purchase of a package, a spend of an amount
// for a reason), kept for this tab until the server gives a definite answer. A retry after a
// timeout, a lost connection or a 5xx (the first request may have gone through: the card may
// be charged) sends the same key, so the server answers with what the first one did instead
// of doing it twice. A definite answer (2xx or 4xx) ends the attempt: the next click is new.
function attemptKey(what) {
  const name = `coffer.attempt.${what}`;
  let key = sessionStorage.getItem(name);
  if (!key) {
    key = freshKey();
    sessionStorage.setItem(name, key);
  }
  return key;
}

async function withAttempt(what, call) {
  try {
    const answer = await call(attemptKey(what));
    sessionStorage.removeItem(`coffer.attempt.${what}`);
    return answer;
  } catch (error) {
    if (!error.uncertain) sessionStorage.removeItem(`coffer.attempt.${what}`);
    throw error;
  }
}

// ---- the API ------------------------------------------------------------------------------

// Calls the API; an error answer becomes an Error carrying the API's own sentence.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(`${state.config.apiBase}${path}`, Object.assign({}, options, { headers }));
  } catch (_) {
    const lost = new Error('The server could not be reached. Check your connection and try again.');
    lost.uncertain = true;
    throw lost;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok || body.success === false) {
    if (response.status === 401 && state.token) {
      signOut();
      showSignedIn();
    }
    const fallback = STATUS_WORDS[response.status]
      || (response.status >= 500 ? 'Something went wrong on our side. Try again shortly.' : 'The request failed.');
    const failed = new Error(CODE_WORDS[body.code] || (typeof body.error === 'string' && body.error ? body.error : fallback));
    // A 5xx (or a gateway's timeout) may come after the work was done.
    failed.uncertain = response.status >= 500;
    throw failed;
  }
  return body.data === undefined ? body : body.data;
}

const post = (path, body, headers) => api(path, { method: 'POST', body: JSON.stringify(body), headers });

// ---- settings and Stripe.js ---------------------------------------------------------------

async function loadConfig() {
  try {
    const response = await fetch('./config.json', { cache: 'no-store' });
    if (!response.ok) return;
    const config = await response.json();
    state.config = {
      apiBase: typeof config.apiBase === 'string' ? config.apiBase.replace(/\/+$/, '') : '',
      publishableKey: typeof config.publishableKey === 'string' ? config.publishableKey : '',
      stripeJsUrl: typeof config.stripeJsUrl === 'string' ? config.stripeJsUrl : '',
    };
  } catch (_) {
    // No settings: the API is on this origin and card payments are off.
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error('Stripe.js could not be loaded, so card payments are off.'));
    document.head.append(script);
  });
}

// Names for the inputs of localstripe's stand-in card form, which has only placeholders (the
// real Stripe.js draws its own labelled fields in a frame, and has no such inputs here).
const STAND_IN_FIELDS = {
  number: ['Card number', '4242 4242 4242 4242'],
  exp_month: ['Expiry month', 'MM'],
  exp_year: ['Expiry year', 'YY'],
  cvc: ['Security code', 'CVC'],
  postal_code: ['Postal code', 'ZIP'],
};

function labelStandInFields() {
  for (const input of $('card-element').querySelectorAll('input')) {
    const field = STAND_IN_FIELDS[input.getAttribute('placeholder')];
    if (!field) continue;
    input.setAttribute('aria-label', field[0]);
    input.setAttribute('placeholder', field[1]);
    input.setAttribute('inputmode', 'numeric');
    input.setAttribute('autocomplete', 'off');
  }
}

async function setUpStripe() {
  const { publishableKey, stripeJsUrl } = state.config;
  if (!publishableKey || !stripeJsUrl) {
    state.cardProblem = 'Card payments are off: this page has no Stripe settings (config.json).';
    $('card-error').textContent = state.cardProblem;
    return;
  }
  if (publishableKey.startsWith('pk_test_')) {
    $('card-hint').textContent = 'Used to buy a package or to subscribe. Test mode: card 4242 4242 4242 4242, '
      + 'any future date and any security code; 4000 0000 0000 0341 is declined.';
  }
  try {
    if (typeof window.Stripe !== 'function') await loadScript(stripeJsUrl);
    state.stripe = window.Stripe(publishableKey);
    state.card = state.stripe.elements().create('card');
    state.card.mount('#card-element');
    labelStandInFields();
    state.card.on('change', (event) => {
      $('card-error').textContent = event && event.error ? event.error.message : '';
    });
    state.cardProblem = null;
  } catch (error) {
    state.cardProblem = error.message || 'Card payments are off: Stripe.js did not start.';
    $('card-error').textContent = state.cardProblem;
  }
}

// The card in the form, saved with a SetupIntent of the account's customer (Stripe.js confirms
// it with the card): the SetupIntent's id, which pays a package or a subscription, and the
// card's PaymentMethod id.
async function saveCard() {
  if (!state.stripe || !state.card) throw new Error(state.cardProblem || 'Card payments are off.');
  const setup = await post('/api/stripe/setup-intent', {});
  const result = await state.stripe.confirmCardSetup(setup.clientSecret, { payment_method: { card: state.card } });
  if (!result || result.error) throw new Error(stripeWords(result && result.error));
  const method = result.setupIntent && result.setupIntent.payment_method;
  const paymentMethodId = typeof method === 'string' ? method : method && method.id;
  if (!paymentMethodId) throw new Error('The card could not be saved. Try again.');
  return { setupIntentId: setup.setupIntentId, paymentMethodId };
}

// ---- sign-in ------------------------------------------------------------------------------

async function signIn(name) {
  const answer = await post('/_local/token', { name });
  state.token = answer.token;
  state.name = name;
  sessionStorage.setItem('coffer.token', state.token);
  sessionStorage.setItem('coffer.name', name);
}

function signOut() {
  state.token = null;
  state.name = null;
  state.subscription = null;
  sessionStorage.removeItem('coffer.token');
  sessionStorage.removeItem('coffer.name');
}

function showSignedIn() {
  const signedIn = Boolean(state.token);
  $('sign-in-form').hidden = signedIn;
  $('sign-in-title').hidden = signedIn;
  $('signed-in').hidden = !signedIn;
  $('account').hidden = !signedIn;
  $('spend-section').hidden = !signedIn;
  $('recharge-section').hidden = !signedIn;
  $('history-section').hidden = !signedIn;
  $('who').textContent = state.name || '';
}

// ---- what the page shows ------------------------------------------------------------------

function actionButton(text, onClick) {
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = text;
  button.dataset.action = '';
  button.disabled = state.busy;
  button.addEventListener('click', onClick);
  return button;
}

function card(title, lines) {
  const item = document.createElement('li');
  const heading = document.createElement('h3');
  heading.textContent = title;
  item.append(heading);
  for (const [className, text] of lines) {
    const line = document.createElement('p');
    line.className = className;
    line.textContent = text;
    item.append(line);
  }
  return item;
}

const LIVE = ['active', 'trialing', 'past_due', 'incomplete'];

async function loadCatalog() {
  // The catalog is per signed-in user (the API wants a token for it).
  if (!state.token) {
    $('packages').replaceChildren(card('Sign in to see the credit packages', []));
    $('plans').replaceChildren(card('Sign in to see the plans', []));
    return;
  }
  const packages = await api('/api/stripe/credit-packages');
  $('packages').replaceChildren(...packages.map((p) => {
    const item = card(p.name, [['price', money(p.amount, p.currency)],
      ['what', `${credits(p.creditAmount)} credits — ${p.description}`]]);
    if (state.token) item.append(actionButton(`Buy ${p.name} for ${money(p.amount, p.currency)}`, () => buy(p)));
    return item;
  }));
  state.plans = await api('/api/stripe/plans');
  showPlans();
}

function showPlans() {
  const current = state.subscription;
  const live = current && LIVE.includes(current.status);
  $('plans').replaceChildren(...state.plans.map((plan) => {
    const lines = [];
    if (plan.amount) lines.push(['price', money(plan.amount, plan.currency)]);
    if (plan.description) lines.push(['what', plan.description]);
    const limits = Object.entries(plan.limits || {}).map(([metric, limit]) => `${credits(limit)} ${metric}`).join(', ');
    if (limits) lines.push(['limits', limits]);
    const item = card(plan.name, lines);
    if (current && (current.subscribedPlanId || current.planId) === plan.id && (live || plan.kind === 'free')) {
      const badge = document.createElement('p');
      badge.className = 'badge';
      badge.textContent = 'Your plan';
      item.append(badge);
    } else if (plan.kind === 'recurring' && !live) {
      item.append(actionButton(`Subscribe to ${plan.name}`, () => subscribe(plan)));
    }
    return item;
  }));
}

function showBalance(balance) {
  state.currency = balance.currency || state.currency;
  $('balance').textContent = money(balance.balance, state.currency);
  // An answer without buckets (a spend's) leaves the expiry line as it was.
  if (balance.buckets) {
    const words = expiryWords(balance);
    $('expiry').textContent = words;
    $('expiry').hidden = !words;
  }
}

// "3.00 credits expire on 31 Dec": what the soonest-expiring live buckets hold, and when.
function expiryWords(balance) {
  if (!balance.nextExpiry) return '';
  const soon = balance.buckets
    .filter((b) => b.expiresAt === balance.nextExpiry)
    .reduce((sum, b) => sum + Number(b.amount), 0);
  const amount = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 }).format(soon);
  const on = new Intl.DateTimeFormat('en-GB', { day: 'numeric', month: 'short', timeZone: 'UTC' })
    .format(new Date(balance.nextExpiry));
  return `${amount} credits expire on ${on}`;
}

function planName(id, fallback) {
  const plan = state.plans.find((p) => p.id === id);
  return plan ? plan.name : fallback || id;
}

// The subscription in words: "Pro — renews on 1 May 2026", "Pro — ends on …".
function subscriptionWords(s) {
  if (!s || s.status === 'none' || !s.subscriptionId) {
    return `${s && s.plan ? s.plan.name : 'Free'} plan — no subscription.`;
  }
  const name = planName(s.subscribedPlanId || s.planId, s.plan && s.plan.name);
  const until = day(s.currentPeriodEnd);
  switch (s.status) {
    case 'active':
    case 'trialing':
      if (s.cancelAtPeriodEnd) return until ? `${name} — ends on ${until}.` : `${name} — ends at the end of this period.`;
      return until ? `${name} — renews on ${until}.` : `${name} — renews each period.`;
    case 'incomplete':
      return `${name} — waiting for the first payment.`;
    case 'past_due':
    case 'unpaid':
      return `${name} — the last payment failed. Subscribe again or use another card.`;
    default:
      return `${name} — the subscription has ended.`;
  }
}

function showSubscription(s) {
  state.subscription = s;
  $('subscription').textContent = subscriptionWords(s);
  const running = s && ['active', 'trialing', 'past_due'].includes(s.status);
  $('cancel-subscription').hidden = !running || s.cancelAtPeriodEnd;
  $('resume-subscription').hidden = !running || !s.cancelAtPeriodEnd;
  showPlans();
}

async function loadHistory() {
  const history = await api('/api/stripe/payment-history');
  const rows = (history.items || history || []).map((line) => {
    const row = document.createElement('tr');
    const currency = line.currency || state.currency;
    for (const text of [new Date(line.createdAt).toLocaleString(), line.description || line.kind || '',
      line.amount === undefined ? '' : money(line.amount, currency),
      line.creditAmount === undefined ? '' : `+${credits(line.creditAmount)}`, line.status || '']) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  if (!rows.length) {
    const row = document.createElement('tr');
    const cell = document.createElement('td');
    cell.colSpan = 5;
    cell.textContent = 'No payments yet.';
    row.append(cell);
    rows.push(row);
  }
  $('history').replaceChildren(...rows);
}

// ---- auto-recharge ------------------------------------------------------------------------

const DISABLED_WORDS = {
  user: 'Off.',
  developer: 'Off: turned off by the shop.',
  bounds: 'Off: your settings are past what the shop allows now. Turn it on again with new amounts.',
  failures: 'Off: the last three payments failed. Check your card and turn it on again.',
};

function showRecharge(view) {
  state.recharge = view;
  let words;
  if (view.enabled) {
    words = `On: below ${money(view.threshold)}, buys credits for ${money(view.amount)}.`;
    if (view.inFlight && !view.awaitingAuthentication) words += ' A recharge is under way.';
  } else {
    words = view.disabledBy ? DISABLED_WORDS[view.disabledBy] || 'Off.' : 'Off.';
  }
  $('recharge-state').textContent = words;
  const last = view.lastRecharge;
  let lastWords = '';
  if (last && last.status === 'succeeded') lastWords = `The last recharge, ${money(last.amount)}, was paid.`;
  if (last && last.status === 'failed') lastWords = `The last recharge, ${money(last.amount)}, failed: ${last.reason || 'the payment failed.'}`;
  $('recharge-last').textContent = lastWords;
  const asked = view.authentication;
  $('recharge-action').hidden = !asked;
  if (asked) {
    $('recharge-action-words').textContent = `Your bank asks you to confirm the recharge of ${money(asked.amount)}.`;
  }
  if (view.threshold !== null && view.threshold !== undefined && document.activeElement !== $('recharge-threshold')) {
    $('recharge-threshold').value = view.threshold;
  }
  if (view.amount !== null && view.amount !== undefined && document.activeElement !== $('recharge-amount')) {
    $('recharge-amount').value = view.amount;
  }
  $('recharge-off').hidden = !view.enabled;
}

async function loadRecharge() {
  showRecharge(await api('/api/credits/auto-recharge'));
}

// After a spend: a recharge starts from the committed balance a moment later, so the page looks
// again until it settles or asks the user for something.
function watchRecharge(before) {
  if (!state.recharge || !state.recharge.enabled) return;
  const settled = (view) => view.awaitingAuthentication
    || (!view.inFlight && JSON.stringify(view.lastRecharge) !== JSON.stringify(before && before.lastRecharge));
  watch(() => api('/api/credits/auto-recharge'), settled, (view) => {
    showRecharge(view);
    loadAccount().catch(() => {});
  }).then((view) => {
    if (!view) return;
    showRecharge(view);
    if (view.awaitingAuthentication) say(`Your bank asks you to confirm the recharge of ${money(view.authentication.amount)}.`);
    loadAccount().catch(() => {});
  });
}

function rechargeAmounts() {
  const threshold = Number($('recharge-threshold').value);
  const amount = Number($('recharge-amount').value);
  if (!($('recharge-threshold').value !== '' && threshold >= 0)) {
    $('recharge-threshold').focus();
    throw new Error('Enter the balance below which to recharge (zero or more).');
  }
  if (!(amount > 0)) {
    $('recharge-amount').focus();
    throw new Error('Enter how much one recharge buys (more than zero).');
  }
  return { threshold, amount };
}

async function turnRechargeOn() {
  await act('Turning auto-recharge on: checking your card…', async () => {
    const amounts = rechargeAmounts();
    const saved = await saveCard();
    const view = await api('/api/credits/auto-recharge', {
      method: 'PUT',
      body: JSON.stringify({ enabled: true, threshold: amounts.threshold, amount: amounts.amount, setupIntentId: saved.setupIntentId }),
    });
    showRecharge(view);
    say(`Auto-recharge is on: when your balance falls below ${money(view.threshold)}, your card buys credits for ${money(view.amount)}.`);
  });
}

async function turnRechargeOff() {
  await act('Turning auto-recharge off…', async () => {
    const now = state.recharge || {};
    const view = await api('/api/credits/auto-recharge', {
      method: 'PUT',
      body: JSON.stringify({ enabled: false, threshold: now.threshold || 0, amount: now.amount || 0 }),
    });
    showRecharge(view);
    say('Auto-recharge is off. No new payment will be started.');
  });
}

// The bank asked the user to authenticate a recharge: Stripe.js shows its dialog, and the credits
// come with the payment's webhook.
async function confirmRecharge() {
  const asked = state.recharge && state.recharge.authentication;
  if (!asked) return;
  await act(`Confirming the recharge of ${money(asked.amount)}…`, async () => {
    if (!state.stripe) throw new Error(state.cardProblem || 'Card payments are off.');
    const before = await api('/api/stripe/balance');
    const options = asked.paymentMethodId ? { payment_method: asked.paymentMethodId } : undefined;
    const result = await state.stripe.confirmCardPayment(asked.clientSecret, options);
    if (!result || result.error) throw new Error(stripeWords(result && result.error));
    $('recharge-action').hidden = true;
    say(`Recharge of ${money(asked.amount)} confirmed. Waiting for it to reach your balance…`);
    const received = (now) => {
      showBalance(now);
      say(`Recharge received: +${credits(now.balance - before.balance)} credits. Your balance is ${money(now.balance, now.currency)}.`);
      loadHistory().catch(() => {});
      // The recharge is settled just after its credits land.
      watch(() => api('/api/credits/auto-recharge'), (view) => !view.inFlight, showRecharge)
        .then((view) => view && showRecharge(view));
    };
    const after = await watch(() => api('/api/stripe/balance'), (now) => now.balance !== before.balance, received);
    if (after) received(after);
    else say('Your payment was confirmed. The balance will change here as soon as Stripe confirms it.');
  });
}

async function loadAccount() {
  if (!state.token) return;
  showBalance(await api('/api/stripe/balance'));
  showSubscription(await api('/api/v1/payments/stripe/my-subscription'));
  await loadRecharge().catch(() => {});
  await loadHistory();
}

async function refresh() {
  showSignedIn();
  try {
    await loadCatalog();
    await loadAccount();
  } catch (error) {
    say(error.message, true);
  }
}

// ---- actions ------------------------------------------------------------------------------

function setBusy(busy) {
  state.busy = busy;
  $('main').setAttribute('aria-busy', String(busy));
  for (const button of document.querySelectorAll('[data-action]')) button.disabled = busy;
}

// The current watch (see `watch`): each action and each watch takes a new number.
let watching = 0;

// Runs one action at a time; its failure is shown in words.
async function act(startText, work) {
  if (state.busy) return;
  watching += 1; // a new action ends what an earlier one still watched
  setBusy(true);
  say(startText);
  try {
    await work();
  } catch (error) {
    say(error.message, true);
    await loadAccount().catch(() => {});
  } finally {
    setBusy(false);
  }
}

// Polls `read` until `done(value)`: every 500 ms for WATCH_FAST_MS, then every 2 s up to
// WATCH_MAX_MS. Resolves with the value, or with null once the fast phase is over (the slow
// phase goes on and calls `late` if the value arrives then). A newer watch ends an older one.
function watch(read, done, late) {
  const id = ++watching;
  const started = Date.now();
  return new Promise((resolve) => {
    let answered = false;
    const tick = async () => {
      if (id !== watching) return resolve(null);
      const elapsed = Date.now() - started;
      try {
        const value = await read();
        if (id !== watching) return resolve(null);
        if (done(value)) {
          if (answered && late) late(value);
          return resolve(value);
        }
      } catch (_) {
        // A failed poll is tried again.
      }
      if (elapsed > WATCH_FAST_MS && !answered) {
        answered = true;
        resolve(null);
      }
      if (elapsed < WATCH_MAX_MS) setTimeout(tick, elapsed > WATCH_FAST_MS ? 2000 : 500);
    };
    tick();
  });
}

async function buy(pkg) {
  await act(`Buying ${pkg.name}: checking your card…`, async () => {
    const before = await api('/api/stripe/balance');
    showBalance(before);
    const saved = await saveCard();
    say(`Paying ${money(pkg.amount, pkg.currency)}…`);
    // Coffer charges the saved card and confirms the PaymentIntent itself.
    const intent = await withAttempt(`buy.${pkg.id}`, (key) => post('/api/stripe/create-payment-intent',
      { creditPackageId: pkg.id, setupIntentId: saved.setupIntentId }, { 'Idempotency-Key': key }));
    if (intent.status === 'requires_action') {
      const result = await state.stripe.confirmCardPayment(intent.clientSecret);
      if (!result || result.error) throw new Error(stripeWords(result && result.error));
    } else if (intent.status && !['succeeded', 'processing'].includes(intent.status)) {
      throw new Error('The payment was not completed. Try again or use another card.');
    }
    say(`Payment of ${money(pkg.amount, pkg.currency)} accepted. Waiting for it to reach your balance…`);
    await loadHistory();
    const received = (now) => {
      showBalance(now);
      say(`Payment received: +${credits(now.balance - before.balance)} credits. Your balance is ${money(now.balance, now.currency)}.`);
      loadHistory().catch(() => {});
    };
    const after = await watch(() => api('/api/stripe/balance'), (now) => now.balance !== before.balance, received);
    if (after) {
      received(after);
    } else {
      say('Your payment was accepted. The balance will change here as soon as Stripe confirms it.');
    }
  });
}

async function subscribe(plan) {
  await act(`Subscribing to ${plan.name}: checking your card…`, async () => {
    const before = await api('/api/stripe/balance');
    const saved = await saveCard();
    say(`Subscribing to ${plan.name}…`);
    // Coffer makes the saved card the customer's default before it creates the subscription.
    const created = await post('/api/stripe/create-subscription', { planId: plan.id, setupIntentId: saved.setupIntentId });
    if (created.status === 'incomplete' && created.clientSecret) {
      const result = await state.stripe.confirmCardPayment(created.clientSecret, { payment_method: saved.paymentMethodId });
      if (!result || result.error) throw new Error(stripeWords(result && result.error));
    }
    say(`Payment accepted. Waiting for ${plan.name} to start…`);
    const started = (now) => {
      showSubscription(now);
      say(`You are subscribed to ${plan.name}. ${subscriptionWords(now)}`);
      loadHistory().catch(() => {});
      if (!(plan.includedCredits > 0)) return;
      // The plan's included credits arrive with the first invoice's webhook.
      const credited = (b) => {
        showBalance(b);
        say(`You are subscribed to ${plan.name}, which includes ${credits(b.balance - before.balance)} credits. `
          + `Your balance is ${money(b.balance, b.currency)}.`);
        loadHistory().catch(() => {});
      };
      watch(() => api('/api/stripe/balance'), (b) => b.balance !== before.balance, credited)
        .then((b) => b && credited(b));
    };
    const now = await watch(() => api('/api/v1/payments/stripe/my-subscription'),
      (s) => s.subscriptionId === created.subscriptionId && ['active', 'trialing'].includes(s.status), started);
    if (now) {
      started(now);
    } else {
      say(`Your payment was accepted. ${plan.name} will show here as soon as Stripe confirms it.`);
    }
  });
}

async function cancelOrResume(resume) {
  const name = planName(state.subscription && state.subscription.subscribedPlanId, 'Your plan');
  await act(resume ? `Resuming ${name}…` : `Cancelling ${name}…`, async () => {
    const answer = await post('/api/v1/payments/stripe/cancel-subscription', resume ? { resume: true } : {});
    const until = day(answer.currentPeriodEnd);
    if (resume) {
      say(until ? `${name} is back on: it renews on ${until}.` : `${name} is back on.`);
    } else {
      say(until ? `${name} is cancelled: you keep it until ${until}, and it will not renew.`
        : `${name} is cancelled at the end of this period.`);
    }
    showSubscription(await api('/api/v1/payments/stripe/my-subscription'));
  });
}

async function spend(amount, reason) {
  await act(`Spending ${money(amount)}…`, async () => {
    const answer = await withAttempt(`spend.${amount}.${reason}`,
      (key) => post('/api/credits/consume', { amount, reason, idempotencyKey: key }));
    showBalance({ balance: answer.balance, currency: state.currency });
    say(`Spent ${money(amount)} on “${reason}”. Your balance is ${money(answer.balance)}.`);
    $('spend-form').reset();
    await loadHistory();
    watchRecharge(state.recharge);
  });
}

// ---- wiring -------------------------------------------------------------------------------

$('sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    await signIn($('name').value.trim());
    say(`Welcome, ${state.name}.`);
  } catch (error) {
    say(error.message, true);
  }
  await refresh();
});
$('sign-out').addEventListener('click', async () => {
  signOut();
  say('Signed out.');
  await refresh();
  $('name').focus();
});
$('cancel-subscription').addEventListener('click', () => cancelOrResume(false));
$('resume-subscription').addEventListener('click', () => cancelOrResume(true));
$('recharge-form').addEventListener('submit', (event) => {
  event.preventDefault();
  turnRechargeOn();
});
$('recharge-off').addEventListener('click', () => turnRechargeOff());
$('recharge-confirm').addEventListener('click', () => confirmRecharge());
$('spend-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const amount = Number($('spend-amount').value);
  const reason = $('spend-reason').value.trim();
  if (!(amount > 0)) {
    say('Enter an amount greater than zero.', true);
    $('spend-amount').focus();
    return;
  }
  if (!reason) {
    say('Say what the credits are for.', true);
    $('spend-reason').focus();
    return;
  }
  spend(amount, reason);
});

(async () => {
  await loadConfig();
  await setUpStripe();
  await refresh();
})();
