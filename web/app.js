// The storefront's script: plain JavaScript over Coffer's API, no build step. This first slice
// signs in with a local token, lists packages and plans, and shows the balance and history.
'use strict';

const state = { token: sessionStorage.getItem('coffer.token'), name: sessionStorage.getItem('coffer.name') };
const $ = (id) => document.getElementById(id);

// Amounts come from the API in major units of their currency.
function money(amount, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency.toUpperCase() }).format(amount);
  } catch (_) {
    return `${amount} ${currency}`;
  }
}

function say(text, isError) {
  const box = $('message');
  box.textContent = text || '';
  box.className = isError ? 'error' : '';
}

// Calls the API; an error answer becomes an Error carrying the API's words.
async function api(path, options = {}) {
  const headers = Object.assign({ 'Content-Type': 'application/json' }, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = await response.json().catch(() => ({}));
  if (!response.ok || body.success === false) {
    throw new Error(body.error || `The request failed (${response.status}).`);
  }
  return body.data === undefined ? body : body.data;
}

async function signIn(name) {
  const answer = await api('/_local/token', { method: 'POST', body: JSON.stringify({ name }) });
  state.token = answer.token;
  state.name = name;
  sessionStorage.setItem('coffer.token', state.token);
  sessionStorage.setItem('coffer.name', name);
}

function signOut() {
  state.token = null;
  state.name = null;
  sessionStorage.removeItem('coffer.token');
  sessionStorage.removeItem('coffer.name');
}

function showSignedIn() {
  const signedIn = Boolean(state.token);
  $('sign-in-form').hidden = signedIn;
  $('signed-in').hidden = !signedIn;
  $('account').hidden = !signedIn;
  $('history-section').hidden = !signedIn;
  $('who').textContent = state.name || '';
}

async function loadCatalog() {
  const packages = await api('/api/stripe/credit-packages');
  $('packages').replaceChildren(...packages.map((p) => {
    const item = document.createElement('li');
    item.innerHTML = '<h3></h3><p class="price"></p><p class="what"></p>';
    item.querySelector('h3').textContent = p.name;
    item.querySelector('.price').textContent = money(p.amount, p.currency);
    item.querySelector('.what').textContent = `${p.credits} credits — ${p.description}`;
    return item;
  }));
  if (!state.token) return;
  const plans = await api('/api/stripe/plans');
  $('plans').replaceChildren(...plans.map((plan) => {
    const item = document.createElement('li');
    item.innerHTML = '<h3></h3><p class="limits"></p>';
    item.querySelector('h3').textContent = plan.name;
    item.querySelector('.limits').textContent = Object.entries(plan.limits || {})
      .map(([metric, limit]) => `${limit.toLocaleString()} ${metric}`).join(', ');
    return item;
  }));
}

async function loadAccount() {
  if (!state.token) return;
  const balance = await api('/api/stripe/balance');
  $('balance').textContent = money(balance.balance, balance.currency);
  const history = await api('/api/stripe/payment-history');
  const rows = (history.items || history || []).map((line) => {
    const row = document.createElement('tr');
    for (const text of [new Date(line.createdAt).toLocaleString(), line.description || line.kind || '',
      line.amount === undefined ? '' : money(line.amount, line.currency || balance.currency), line.status || '']) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $('history').replaceChildren(...rows);
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
});

refresh();
