// Settle's dashboard: an ordinary client of the public API. Queries go to POST /graphql with the
// token the user pasted; the live feed is `subscription { ledgerEvents }` over the WebSocket at
// /graphql (graphql-transport-ws, the token in connection_init). The page never changes money:
// its only mutations are dry-runs (`dryRun: true`), which change nothing (D1).
// docs/dashboard.md explains the choices.
'use strict';

// The token lives in this tab's session storage only: it survives a reload, not the tab.
const TOKEN_KEY = 'settle.dashboard.token';
const API_URL = new URL('graphql', window.location.href);
const WS_URL = new URL(API_URL);
WS_URL.protocol = API_URL.protocol === 'https:' ? 'wss:' : 'ws:';

// The kinds of change the feed shows: money coming in, going back, and records voided.
const FEED_TYPES = ['PAYMENT_RECORDED', 'PAYMENT_REFUNDED', 'REFUND_SETTLED', 'PAYMENT_VOIDED', 'INVOICE_VOIDED', 'CREDIT_NOTE_VOIDED'];
// At sign-in the feed starts this many changes back, so it is not empty.
const FEED_HISTORY = 50;
const FEED_ITEMS_MAX = 100;
const TREND_DAYS = 30;
const OWING_CLIENTS = 10;
const CREDIT_CLIENTS = 20;
// Reconnection waits 0.5 s, 1 s, 2 s, ... up to 15 s, with jitter, until a connection is acknowledged.
const RECONNECT_FIRST_MS = 500;
const RECONNECT_MAX_MS = 15000;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(code, message, requestId) {
    super(message);
    this.code = code;
    this.requestId = requestId;
  }
}

let session = null; // { token, viewer, settings }
let feed = null;
const charts = {};

// ---- the API ----

async function gql(query, variables = {}) {
  if (!session) throw new ApiError('SIGNED_OUT', 'signed out');
  return gqlWith(session.token, query, variables);
}

async function gqlWith(token, query, variables) {
  let response;
  try {
    response = await fetch(API_URL, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ query, variables }),
    });
  } catch (error) {
    throw new ApiError('NO_ANSWER', `Settle did not answer (${error.message})`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new ApiError('NO_ANSWER', `HTTP ${response.status} without a GraphQL answer`);
  }
  if (body.errors && body.errors.length) {
    const error = body.errors[0];
    const extensions = error.extensions || {};
    if (extensions.code === 'UNAUTHENTICATED' && session && session.token === token) {
      signOut('Your token expired or is no longer accepted: sign in again.');
    }
    throw new ApiError(extensions.code || 'ERROR', error.message, extensions.requestId);
  }
  return body.data;
}

// ---- money and days, as strings: amounts are exact decimals and never pass through floats
// except to draw a chart ----

function isZero(amount) {
  return /^-?0*(\.0*)?$/.test(amount);
}

// a - b for decimal strings.
function subtract(a, b) {
  const scale = Math.max(decimals(a), decimals(b));
  const units = (text) => {
    const negative = text.startsWith('-');
    const [whole, fraction = ''] = text.replace('-', '').split('.');
    const value = BigInt(whole + fraction.padEnd(scale, '0'));
    return negative ? -value : value;
  };
  const difference = units(a) - units(b);
  const negative = difference < 0n;
  const digits = (negative ? -difference : difference).toString().padStart(scale + 1, '0');
  const text = scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits;
  return negative ? `-${text}` : text;
}

function decimals(amount) {
  const dot = amount.indexOf('.');
  return dot < 0 ? 0 : amount.length - dot - 1;
}

const symbols = new Map();
function currencySymbol(currency) {
  if (session && currency === session.settings.currency) {
    if (!symbols.has(currency)) {
      let symbol = `${currency} `;
      try {
        const part = new Intl.NumberFormat('en', { style: 'currency', currency, currencyDisplay: 'narrowSymbol' })
          .formatToParts(0).find((p) => p.type === 'currency');
        if (part) symbol = part.value;
      } catch { /* an unknown code is shown as it is */ }
      symbols.set(currency, symbol);
    }
    return symbols.get(currency);
  }
  // Another currency than the practice's is always named, never a bare "$".
  return `${currency} `;
}

function formatMoney(money) {
  const negative = money.amount.startsWith('-');
  const [whole, fraction] = money.amount.replace('-', '').split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return `${negative ? '−' : ''}${currencySymbol(money.currency)}${grouped}${fraction === undefined ? '' : `.${fraction}`}`;
}

// The day in the practice's timezone, "YYYY-MM-DD": what "today" means for takings (R1).
function practiceToday() {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: session.settings.timezone, year: 'numeric', month: '2-digit', day: '2-digit' })
    .formatToParts(new Date());
  const part = (type) => parts.find((p) => p.type === type).value;
  return `${part('year')}-${part('month')}-${part('day')}`;
}

function addDays(day, days) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + days);
  return date.toISOString().slice(0, 10);
}

function formatTime(iso) {
  return new Date(iso).toLocaleString(undefined, { timeZone: session.settings.timezone, dateStyle: 'medium', timeStyle: 'short' });
}

// ---- building the page ----

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('data-') || name.startsWith('aria-') || ['href', 'id', 'type', 'for', 'name', 'value', 'scope', 'datetime', 'role', 'tabindex', 'inputmode', 'autocomplete', 'colspan'].includes(name)) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

// A cell (or span) showing an amount, with the exact figure in data attributes.
function moneyCell(money, tag = 'td', attributes = {}) {
  return el(tag, { class: `num${money.amount.startsWith('-') ? ' negative' : ''}`, 'data-amount': money.amount, 'data-currency': money.currency, ...attributes }, formatMoney(money));
}

function paymentLink(payment) {
  return el('a', { href: `#payment=${encodeURIComponent(payment.id)}`, 'data-payment-id': payment.id, 'data-payment-number': payment.number || '' }, payment.number || 'a payment');
}

function invoiceLink(invoice) {
  return el('a', { href: `#invoice=${encodeURIComponent(invoice.id)}`, 'data-invoice-id': invoice.id, 'data-invoice-number': invoice.number || '' }, invoice.number || 'an invoice');
}

function emptyRow(columns, text) {
  return el('tr', { class: 'empty' }, el('td', { colspan: String(columns) }, text));
}

// ---- sign-in ----

async function signIn(rawToken) {
  const token = rawToken.trim().replace(/^bearer\s+/i, '');
  if (!token) throw new ApiError('UNAUTHENTICATED', 'Paste a token first.');
  const data = await gqlWith(token, '{ viewer { subject tenant role } settings { currency timezone } }', {});
  session = { token, viewer: data.viewer, settings: data.settings };
  sessionStorage.setItem(TOKEN_KEY, token);
  $('sign-in').hidden = true;
  $('main').hidden = false;
  $('who').hidden = false;
  $('who').textContent = `${data.viewer.tenant} · ${data.viewer.role} · ${data.settings.currency}, ${data.settings.timezone}`;
  $('sign-out').hidden = false;
  await refreshFigures();
  startFeed();
  openDetailFromHash();
}

function signOut(message = '') {
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (feed) feed.stop();
  feed = null;
  for (const chart of Object.values(charts)) chart.destroy();
  for (const key of Object.keys(charts)) delete charts[key];
  $('detail').open && $('detail').close();
  for (const id of ['today-rows', 'today-totals', 'trend-rows', 'aged-buckets', 'owing-rows', 'credit-rows', 'feed-items']) $(id).replaceChildren();
  $('main').hidden = true;
  $('who').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in').hidden = false;
  $('sign-in-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

// ---- figures: today's takings, 30 days, aged receivables, credit ----

const OVERVIEW = `query Overview($today: Date!, $from: Date!, $owing: Int!, $credit: Int!) {
  today: takings(from: $today, to: $today, groupBy: METHOD) {
    rows { method { id name } currency received { amount currency } refunded { amount currency } net { amount currency } }
    totals { currency received { amount currency } refunded { amount currency } net { amount currency } }
  }
  trend: takings(from: $from, to: $today, groupBy: DAY) {
    rows { day currency received { amount currency } refunded { amount currency } net { amount currency } }
  }
  agedReceivables {
    asOf currency
    total { current { amount currency } days1To30 { amount currency } days31To60 { amount currency } days61To90 { amount currency } over90 { amount currency } total { amount currency } }
    clients(first: $owing) { edges { node { client { id name } buckets { current { amount currency } total { amount currency } invoiceCount } } } }
  }
  clientAccounts(orderBy: CREDIT_DESC, first: $credit) { edges { node { client { id name } unallocatedCredit { amount currency } } } }
}`;

let refreshing = null;
let refreshAgain = false;

// Loads every figure again; calls made while one runs fold into one more run after it.
async function refreshFigures() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      const today = practiceToday();
      try {
        const data = await gql(OVERVIEW, { today, from: addDays(today, 1 - TREND_DAYS), owing: OWING_CLIENTS, credit: CREDIT_CLIENTS });
        $('load-error').textContent = '';
        showToday(today, data.today);
        showTrend(today, data.trend.rows);
        showAged(data.agedReceivables);
        showCredit(data.clientAccounts.edges.map((edge) => edge.node));
        document.body.dataset.figuresDay = today;
      } catch (error) {
        if (session) $('load-error').textContent = `The figures could not be loaded: ${error.message} (${error.code})`;
      }
    } while (refreshAgain && session);
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
  }
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshFigures, 300);
}

function showToday(today, report) {
  $('today-day').textContent = today;
  $('today-day').setAttribute('datetime', today);
  const rows = report.rows.map((row) => el('tr', { 'data-method': row.method ? row.method.name : '', 'data-currency': row.currency },
    el('th', { scope: 'row' }, row.method ? row.method.name : '—'),
    moneyCell(row.received, 'td', { 'data-figure': 'received' }),
    moneyCell(row.refunded, 'td', { 'data-figure': 'refunded' }),
    moneyCell(row.net, 'td', { 'data-figure': 'net' })));
  $('today-rows').replaceChildren(...(rows.length ? rows : [emptyRow(4, 'Nothing taken yet today.')]));
  $('today-totals').replaceChildren(...report.totals.map((row) => el('tr', { 'data-currency': row.currency },
    el('th', { scope: 'row' }, report.totals.length > 1 ? `Total ${row.currency}` : 'Total'),
    moneyCell(row.received, 'td', { 'data-figure': 'received' }),
    moneyCell(row.refunded, 'td', { 'data-figure': 'refunded' }),
    moneyCell(row.net, 'td', { 'data-figure': 'net' }))));
}

function showTrend(today, rows) {
  $('trend-rows').replaceChildren(...(rows.length ? rows.map((row) => el('tr', { 'data-day': row.day, 'data-currency': row.currency },
    el('th', { scope: 'row' }, el('time', { datetime: row.day }, row.currency === session.settings.currency ? row.day : `${row.day} (${row.currency})`)),
    moneyCell(row.received, 'td', { 'data-figure': 'received' }),
    moneyCell(row.refunded, 'td', { 'data-figure': 'refunded' }),
    moneyCell(row.net, 'td', { 'data-figure': 'net' }))) : [emptyRow(4, 'No takings in the last 30 days.')]));
  const days = Array.from({ length: TREND_DAYS }, (_, i) => addDays(today, i + 1 - TREND_DAYS));
  const currencies = [...new Set([session.settings.currency, ...rows.map((row) => row.currency)])];
  const datasets = currencies.map((currency, index) => {
    const net = new Map(rows.filter((row) => row.currency === currency).map((row) => [row.day, row.net.amount]));
    return {
      label: `Net takings (${currency})`,
      // Number() only to draw: the figures themselves are in the table as exact strings.
      data: days.map((day) => Number(net.get(day) || '0')),
      backgroundColor: PALETTE[index % PALETTE.length],
    };
  });
  drawChart('trend', 'trend-chart', { type: 'bar', labels: days.map((day) => day.slice(5)), datasets });
}

const BUCKETS = [['current', 'Current'], ['days1To30', '1–30 days'], ['days31To60', '31–60 days'], ['days61To90', '61–90 days'], ['over90', 'Over 90 days']];
// Colours that keep at least 3:1 contrast against the white card (WCAG non-text contrast).
const PALETTE = ['#1f5f8b', '#b3541e', '#2e7d32', '#6a1b9a', '#8d6e00'];
const AGE_COLOURS = ['#2e7d32', '#8d6e00', '#b3541e', '#b71c1c', '#6a1b1b'];

function showAged(aged) {
  $('aged-as-of').textContent = aged.asOf;
  $('aged-as-of').setAttribute('datetime', aged.asOf);
  $('aged-buckets').replaceChildren(...[...BUCKETS, ['total', 'Total']].map(([key, label]) => el('tr', { class: key === 'total' ? 'total' : null },
    el('th', { scope: 'row' }, label), moneyCell(aged.total[key], 'td', { 'data-bucket': key }))));
  drawChart('aged', 'aged-chart', {
    type: 'bar',
    labels: BUCKETS.map(([, label]) => label),
    datasets: [{ label: `Owing (${aged.currency})`, data: BUCKETS.map(([key]) => Number(aged.total[key].amount)), backgroundColor: AGE_COLOURS }],
  });
  const clients = aged.clients.edges.map((edge) => edge.node);
  $('owing-rows').replaceChildren(...(clients.length ? clients.map((row) => el('tr', { 'data-client-id': row.client.id },
    el('th', { scope: 'row' }, row.client.name),
    moneyCell(row.buckets.total, 'td', { 'data-figure': 'owing' }),
    moneyCell({ amount: subtract(row.buckets.total.amount, row.buckets.current.amount), currency: row.buckets.total.currency }, 'td', { 'data-figure': 'past-due' }),
    el('td', { class: 'num', 'data-figure': 'invoices' }, String(row.buckets.invoiceCount)))) : [emptyRow(4, 'No open invoices.')]));
}

function drawChart(key, canvasId, { type, labels, datasets }) {
  if (typeof Chart === 'undefined') return; // the figures are in the tables all the same
  if (charts[key]) {
    charts[key].data.labels = labels;
    charts[key].data.datasets = datasets;
    charts[key].update('none');
    return;
  }
  charts[key] = new Chart($(canvasId), {
    type,
    data: { labels, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      plugins: { legend: { display: datasets.length > 1 } },
      scales: { y: { beginAtZero: true, ticks: { color: '#333' } }, x: { ticks: { color: '#333', autoSkip: true, maxRotation: 0 } } },
    },
  });
}

function showCredit(accounts) {
  const holding = accounts.filter((account) => !isZero(account.unallocatedCredit.amount));
  if (!holding.length) {
    $('credit-rows').replaceChildren(el('li', { class: 'empty' }, 'No client holds unallocated credit.'));
    return;
  }
  $('credit-rows').replaceChildren(...holding.map((account) => {
    const list = el('ul', { class: 'plain payments' });
    const details = el('details', { 'data-client-id': account.client.id },
      el('summary', {}, el('span', { class: 'name' }, account.client.name), ' ', moneyCell(account.unallocatedCredit, 'span', { 'data-figure': 'credit' })),
      list);
    details.addEventListener('toggle', () => {
      if (details.open && !list.dataset.loaded) loadCreditPayments(account.client.id, list);
    });
    return el('li', { 'data-client-id': account.client.id }, details);
  }));
}

async function loadCreditPayments(clientId, list) {
  list.replaceChildren(el('li', {}, 'Loading…'));
  try {
    const data = await gql(`query($id: ID!) { unallocatedPayments(clientId: $id) { id number date methodName unallocated { amount currency } } }`, { id: clientId });
    list.dataset.loaded = 'yes';
    list.replaceChildren(...data.unallocatedPayments.map((payment) => el('li', {},
      paymentLink(payment), ` ${payment.date || ''} ${payment.methodName}: `, moneyCell(payment.unallocated, 'span'), ' unallocated')));
  } catch (error) {
    list.replaceChildren(el('li', { class: 'error' }, `Could not load the payments: ${error.message}`));
  }
}

// ---- the live feed ----

const LEDGER_EVENTS = `subscription Feed($after: Int, $types: [LedgerEventType!]) {
  ledgerEvents(afterPosition: $after, types: $types) {
    position at actor action
    events {
      type
      ... on PaymentRecordedEvent { paymentId clientId amount { amount currency } }
      ... on PaymentAllocatedEvent { paymentId invoiceId amount { amount currency } }
      ... on PaymentRefundedEvent { refundId paymentId amount { amount currency } outcome }
      ... on RefundSettledEvent { refundId paymentId outcome }
      ... on PaymentVoidedEvent { paymentId }
      ... on InvoiceVoidedEvent { invoiceId }
      ... on CreditNoteVoidedEvent { creditNoteId invoiceId }
    }
  }
}`;

// One subscription to the practice's ledger events over graphql-transport-ws that reconnects by
// itself and resumes after the last position it got, so it misses nothing and repeats nothing
// (E2). It ends only when stopped or when the token is refused.
class LedgerFeed {
  constructor(token, after, { onRecord, onStatus, onRefused }) {
    this.token = token;
    this.after = after;
    this.onRecord = onRecord;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.stopped = false;
    this.attempt = 0;
    this.subscriptionId = 0;
    this.socket = null;
    this.timer = null;
    this.connect();
  }

  connect() {
    if (this.stopped) return;
    this.onStatus(this.attempt ? 'reconnecting' : 'connecting');
    const socket = new WebSocket(WS_URL, 'graphql-transport-ws');
    this.socket = socket;
    socket.onopen = () => socket.send(JSON.stringify({ type: 'connection_init', payload: { Authorization: `Bearer ${this.token}` } }));
    socket.onmessage = (message) => this.receive(socket, JSON.parse(message.data));
    socket.onclose = (event) => this.closed(socket, event);
  }

  subscribe(socket) {
    this.subscriptionId += 1;
    socket.send(JSON.stringify({
      id: String(this.subscriptionId),
      type: 'subscribe',
      // After the last position received: what committed while disconnected comes first.
      payload: { query: LEDGER_EVENTS, variables: { after: this.after, types: FEED_TYPES } },
    }));
  }

  receive(socket, message) {
    if (socket !== this.socket) return;
    switch (message.type) {
      case 'connection_ack':
        this.attempt = 0;
        this.onStatus('live');
        this.subscribe(socket);
        break;
      case 'ping':
        socket.send(JSON.stringify({ type: 'pong' }));
        break;
      case 'next': {
        if (message.id !== String(this.subscriptionId)) break;
        const { data, errors } = message.payload;
        if (errors && errors.length) {
          const code = errors[0].extensions && errors[0].extensions.code;
          // A subscriber that fell behind subscribes again after its last position, on `complete`.
          if (code !== 'SUBSCRIBER_TOO_SLOW') {
            this.onStatus('error', `${code}: ${errors[0].message}`);
            this.refusedSubscription = true;
          }
          break;
        }
        const record = data.ledgerEvents;
        // Never twice: a record at or before the last position was already shown.
        if (record.position <= this.after) break;
        this.after = record.position;
        this.onRecord(record);
        break;
      }
      case 'error':
        this.onStatus('error', JSON.stringify(message.payload));
        break;
      case 'complete':
        if (message.id === String(this.subscriptionId) && !this.refusedSubscription) this.subscribe(socket);
        break;
      default:
        break;
    }
  }

  closed(socket, event) {
    if (socket !== this.socket || this.stopped) return;
    this.socket = null;
    if (event.code === 4403) {
      this.stopped = true;
      this.onRefused(event.reason);
      return;
    }
    this.attempt += 1;
    const wait = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** (this.attempt - 1)) * (0.5 + Math.random() / 2);
    this.onStatus('reconnecting', `connection lost (${event.code}); trying again in ${Math.ceil(wait / 1000)} s`);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, 'signed out');
    this.socket = null;
  }
}

const FEED_STATUS = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', error: 'Stopped', closed: 'Not connected' };

async function startFeed() {
  let last;
  try {
    last = (await gql('{ lastLedgerPosition }')).lastLedgerPosition;
  } catch (error) {
    showFeedStatus('error', error.message);
    return;
  }
  if (!session) return;
  feed = new LedgerFeed(session.token, Math.max(0, last - FEED_HISTORY), {
    onRecord: queueRecord,
    onStatus: showFeedStatus,
    onRefused: (reason) => signOut(`The live feed was refused (${reason}): sign in again.`),
  });
}

function showFeedStatus(status, detail) {
  const node = $('feed-status');
  node.dataset.status = status;
  node.textContent = detail ? `${FEED_STATUS[status]} (${detail})` : FEED_STATUS[status];
}

// Records are shown in batches, so the names and numbers of a burst are looked up in one request.
let pendingRecords = [];
let feedChain = Promise.resolve();

function queueRecord(record) {
  pendingRecords.push(record);
  if (pendingRecords.length === 1) {
    setTimeout(() => {
      const batch = pendingRecords;
      pendingRecords = [];
      feedChain = feedChain.then(() => showRecords(batch));
    }, 20);
  }
}

async function showRecords(records) {
  const paymentIds = new Set();
  const invoiceIds = new Set();
  for (const record of records) {
    for (const event of record.events) {
      if (event.paymentId) paymentIds.add(event.paymentId);
      if (event.invoiceId) invoiceIds.add(event.invoiceId);
    }
  }
  // Shown at once with what the events say; numbers and names follow after one look-up.
  const list = $('feed-items');
  const unnamed = { payments: new Map(), invoices: new Map() };
  const items = records.map((record) => {
    const item = feedItem(record, unnamed);
    list.prepend(item);
    return item;
  });
  while (list.children.length > FEED_ITEMS_MAX) list.lastElementChild.remove();
  refreshSoon();
  const names = await lookUp([...paymentIds], [...invoiceIds]);
  if (!session) return;
  records.forEach((record, index) => {
    if (items[index].isConnected) items[index].replaceWith(feedItem(record, names));
  });
}

// Numbers and client names of payments and invoices, in one request.
async function lookUp(paymentIds, invoiceIds) {
  const found = { payments: new Map(), invoices: new Map() };
  if (!paymentIds.length && !invoiceIds.length) return found;
  const fields = [];
  const variables = {};
  const parameters = [];
  paymentIds.forEach((id, i) => {
    parameters.push(`$p${i}: ID!`);
    variables[`p${i}`] = id;
    fields.push(`p${i}: payment(id: $p${i}) { id number methodName client { name } }`);
  });
  invoiceIds.forEach((id, i) => {
    parameters.push(`$i${i}: ID!`);
    variables[`i${i}`] = id;
    fields.push(`i${i}: invoice(id: $i${i}) { id number client { name } }`);
  });
  try {
    const data = await gql(`query(${parameters.join(', ')}) { ${fields.join(' ')} }`, variables);
    for (const [alias, record] of Object.entries(data)) {
      if (record) found[alias.startsWith('p') ? 'payments' : 'invoices'].set(record.id, record);
    }
  } catch { /* the feed still shows what happened, without names */ }
  return found;
}

function feedItem(record, names) {
  const payment = (id) => names.payments.get(id) || { id, number: null };
  const invoice = (id) => names.invoices.get(id) || { id, number: null };
  const lines = [];
  const allocations = record.events.filter((event) => event.type === 'PAYMENT_ALLOCATED');
  for (const event of record.events) {
    switch (event.type) {
      case 'PAYMENT_RECORDED': {
        const p = payment(event.paymentId);
        const applied = allocations.filter((a) => a.paymentId === event.paymentId);
        lines.push(el('span', { class: 'kind received', 'data-kind': 'payment' }, 'Payment'), ' ', paymentLink(p), ' ',
          moneyCell(event.amount, 'span'), p.methodName ? ` by ${p.methodName}` : '', p.client ? ` from ${p.client.name}` : '',
          ...applied.flatMap((a, i) => [i ? ', ' : ', applied to ', invoiceLink(invoice(a.invoiceId))]));
        break;
      }
      case 'PAYMENT_REFUNDED':
        lines.push(el('span', { class: 'kind refunded', 'data-kind': 'refund' }, 'Refund'), ' ', moneyCell(event.amount, 'span'),
          ' of ', paymentLink(payment(event.paymentId)), ` (${event.outcome.toLowerCase()})`);
        break;
      case 'REFUND_SETTLED':
        lines.push(el('span', { class: 'kind refunded', 'data-kind': 'refund-settled' }, 'Refund settled'), ' on ',
          paymentLink(payment(event.paymentId)), `: ${event.outcome.toLowerCase()}`);
        break;
      case 'PAYMENT_VOIDED':
        lines.push(el('span', { class: 'kind voided', 'data-kind': 'payment-void' }, 'Void'), ' payment ', paymentLink(payment(event.paymentId)));
        break;
      case 'INVOICE_VOIDED':
        lines.push(el('span', { class: 'kind voided', 'data-kind': 'invoice-void' }, 'Void'), ' invoice ', invoiceLink(invoice(event.invoiceId)));
        break;
      case 'CREDIT_NOTE_VOIDED':
        lines.push(el('span', { class: 'kind voided', 'data-kind': 'credit-note-void' }, 'Void'), ' a credit note of ', invoiceLink(invoice(event.invoiceId)));
        break;
      default:
        break;
    }
  }
  return el('li', { 'data-position': String(record.position), class: 'fresh' },
    el('time', { datetime: record.at }, formatTime(record.at)), ' ',
    el('span', { class: 'what' }, ...lines));
}

// ---- the detail panel: a payment or an invoice, opened by its link (#payment=ID, #invoice=ID) ----

const PREVIEW_FIELDS = `preview { replay action pluginNotAsked
  invoices { invoiceId number statusBefore statusAfter balanceBefore { amount currency } balanceAfter { amount currency } }
  payments { paymentId statusBefore statusAfter unallocatedBefore { amount currency } unallocatedAfter { amount currency } } }`;

const PAYMENT_DETAIL = `query Payment($id: ID!, $record: String!) {
  payment(id: $id) {
    id number date status allocationState methodName description externalReference voidedAt voidReason
    client { id name } location { name }
    amount { amount currency } allocated { amount currency } refunded { amount currency } unallocated { amount currency }
    allocations { id number active createdAt removedAt amount { amount currency } invoice { id number status balance { amount currency } } }
    refunds { id date outcome outcomeReason description externalReference amount { amount currency } }
  }
  auditEvents(first: 50, recordId: $record) { totalCount edges { node { id at actor action reason } } }
}`;

const INVOICE_DETAIL = `query Invoice($id: ID!, $record: String!) {
  invoice(id: $id) {
    id number status issueDate dueDate currency client { id name }
    total { amount currency } amountPaid { amount currency } amountCredited { amount currency } balance { amount currency }
    allocations { id number active createdAt removedAt amount { amount currency } payment { id number methodName refunded { amount currency } } }
    creditNotes { id number date reason status total { amount currency } }
  }
  auditEvents(first: 50, recordId: $record) { totalCount edges { node { id at actor action reason } } }
}`;

let detailRequest = 0;

function openDetailFromHash() {
  const match = /^#(payment|invoice)=(.+)$/.exec(window.location.hash);
  if (!match || !session) return;
  const [, kind, id] = match;
  showDetail(kind, decodeURIComponent(id));
}

async function showDetail(kind, id) {
  const dialog = $('detail');
  const request = ++detailRequest;
  $('detail-title').textContent = kind === 'payment' ? 'Payment' : 'Invoice';
  $('detail-body').replaceChildren(el('p', {}, 'Loading…'));
  dialog.dataset.kind = kind;
  dialog.dataset.loaded = '';
  if (!dialog.open) dialog.showModal();
  try {
    const data = await gql(kind === 'payment' ? PAYMENT_DETAIL : INVOICE_DETAIL, { id, record: `${kind}:${id}` });
    if (request !== detailRequest) return;
    const record = data[kind];
    if (!record) {
      $('detail-body').replaceChildren(el('p', { class: 'error' }, `No such ${kind} in this practice.`));
      return;
    }
    const events = data.auditEvents.edges.map((edge) => edge.node);
    if (kind === 'payment') await showPayment(record, events);
    else await showInvoice(record, events);
    dialog.dataset.loaded = 'yes';
  } catch (error) {
    if (request === detailRequest) $('detail-body').replaceChildren(el('p', { class: 'error' }, `Could not load it: ${error.message} (${error.code})`));
  }
}

function facts(pairs) {
  return el('dl', { class: 'facts' }, ...pairs.filter(([, value]) => value !== null && value !== undefined && value !== '')
    .flatMap(([term, value, figure]) => [el('dt', {}, term), typeof value === 'object' && 'amount' in value
      ? moneyCell(value, 'dd', { 'data-figure': figure }) : el('dd', { 'data-figure': figure }, value)]));
}

function table(caption, headers, rows, emptyText, id) {
  return el('div', { class: 'scroll', tabindex: '0', role: 'region', 'aria-label': caption },
    el('table', { id },
      el('caption', {}, caption),
      el('thead', {}, el('tr', {}, ...headers.map((header) => el('th', { scope: 'col' }, header)))),
      el('tbody', {}, ...(rows.length ? rows : [emptyRow(headers.length, emptyText)]))));
}

function auditTable(events) {
  return table('Audit events', ['When', 'Who', 'What', 'Reason'], events.map((event) => el('tr', { 'data-audit-id': event.id },
    el('td', {}, el('time', { datetime: event.at }, formatTime(event.at))), el('td', {}, event.actor), el('td', {}, event.action), el('td', {}, event.reason || ''))),
  'No audit events.', 'detail-audit');
}

async function showPayment(payment, events) {
  $('detail-title').textContent = `Payment ${payment.number || ''}`;
  const allocations = table('Allocations', ['Allocation', 'Invoice', 'Amount', 'State'], payment.allocations.map((a) => el('tr', { 'data-allocation-id': a.id, 'data-active': String(a.active) },
    el('td', {}, a.number || ''), el('td', {}, a.invoice ? invoiceLink(a.invoice) : a.invoiceId), moneyCell(a.amount), el('td', {}, a.active ? 'active' : `removed ${formatTime(a.removedAt)}`))),
  'Not applied to any invoice.', 'detail-allocations');
  const refunds = table('Refunds', ['Date', 'Amount', 'Outcome', 'Reference'], payment.refunds.map((r) => el('tr', { 'data-refund-id': r.id, 'data-outcome': r.outcome },
    el('td', {}, r.date || ''), moneyCell(r.amount), el('td', {}, r.outcomeReason ? `${r.outcome} (${r.outcomeReason})` : r.outcome), el('td', {}, r.externalReference || ''))),
  'No refunds.', 'detail-refunds');
  const body = [
    facts([['Client', payment.client.name], ['Date', payment.date], ['Method', payment.methodName], ['Location', payment.location.name],
      ['Amount', payment.amount, 'amount'], ['Allocated', payment.allocated, 'allocated'], ['Refunded', payment.refunded, 'refunded'],
      ['Unallocated', payment.unallocated, 'unallocated'], ['Status', payment.status, 'status'], ['Allocation', payment.allocationState],
      ['Description', payment.description], ['Reference', payment.externalReference], ['Voided', payment.voidedAt && `${formatTime(payment.voidedAt)} ${payment.voidReason || ''}`]]),
    allocations, refunds, auditTable(events),
  ];
  if (payment.status !== 'VOID' && !isZero(payment.unallocated.amount)) {
    body.push(refundPreviewForm(payment));
    const open = await openInvoicesOf(payment.client.id, payment.currency || payment.amount.currency);
    body.push(applyPreviewForm({ from: 'payment', payments: [payment], invoices: open }));
  }
  $('detail-body').replaceChildren(...body);
}

async function showInvoice(invoice, events) {
  $('detail-title').textContent = `Invoice ${invoice.number || '(draft)'}`;
  const allocations = table('Allocations', ['Allocation', 'Payment', 'Amount', 'State'], invoice.allocations.map((a) => el('tr', { 'data-allocation-id': a.id, 'data-active': String(a.active) },
    el('td', {}, a.number || ''), el('td', {}, a.payment ? paymentLink(a.payment) : a.paymentId), moneyCell(a.amount), el('td', {}, a.active ? 'active' : `removed ${formatTime(a.removedAt)}`))),
  'No payments applied.', 'detail-allocations');
  const creditNotes = table('Credit notes', ['Credit note', 'Date', 'Reason', 'Total', 'Status'], invoice.creditNotes.map((c) => el('tr', { 'data-credit-note-id': c.id, 'data-status': c.status },
    el('td', {}, c.number), el('td', {}, c.date || ''), el('td', {}, c.reason), moneyCell(c.total), el('td', {}, c.status))),
  'No credit notes.', 'detail-credit-notes');
  const body = [
    facts([['Client', invoice.client.name], ['Status', invoice.status, 'status'], ['Issued', invoice.issueDate], ['Due', invoice.dueDate],
      ['Total', invoice.total, 'total'], ['Paid', invoice.amountPaid, 'paid'], ['Credited', invoice.amountCredited, 'credited'], ['Balance', invoice.balance, 'balance']]),
    allocations, creditNotes, auditTable(events),
  ];
  if ((invoice.status === 'OPEN' || invoice.status === 'OVERDUE') && !isZero(invoice.balance.amount)) {
    const data = await gql(`query($id: ID!) { unallocatedPayments(clientId: $id) { id number currency methodName unallocated { amount currency } } }`, { id: invoice.client.id });
    const payments = data.unallocatedPayments.filter((p) => p.currency === invoice.currency);
    body.push(applyPreviewForm({ from: 'invoice', payments, invoices: [invoice] }));
  }
  $('detail-body').replaceChildren(...body);
}

// The client's invoices that can take a payment: OPEN, overdue or not (P4).
async function openInvoicesOf(clientId, currency) {
  const data = await gql(`query($id: ID!) {
    open: invoices(first: 50, filter: {clientId: $id, status: OPEN}) { edges { node { id number currency balance { amount currency } } } }
    overdue: invoices(first: 50, filter: {clientId: $id, status: OVERDUE}) { edges { node { id number currency balance { amount currency } } } } }`, { id: clientId });
  return [...data.open.edges, ...data.overdue.edges].map((edge) => edge.node).filter((invoice) => invoice.currency === currency);
}

let formCount = 0;

function refundPreviewForm(payment) {
  const n = ++formCount;
  const amount = el('input', { id: `refund-amount-${n}`, name: 'amount', inputmode: 'decimal', autocomplete: 'off', value: payment.unallocated.amount });
  const output = el('div', { class: 'preview', 'aria-live': 'polite', 'data-preview': 'refund' });
  const form = el('form', { class: 'preview-form', 'data-form': 'refund' },
    el('h3', {}, 'Preview a refund'),
    el('p', { class: 'help' }, 'Shows what refunding this payment would do, and changes nothing.'),
    el('label', { for: amount.id }, `Amount (${payment.unallocated.currency})`), amount,
    el('button', { type: 'submit' }, 'Preview refund'), output);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    runPreview(output, `mutation PreviewRefund($id: ID!, $amount: Amount!, $key: String!) {
      refundPayment(id: $id, input: {amount: $amount}, idempotencyKey: $key, dryRun: true) { ${PREVIEW_FIELDS} } }`,
    { id: payment.id, amount: amount.value.trim() }, 'refundPayment');
  });
  return form;
}

// Opened `from` a payment, it offers the client's open invoices; from an invoice, the client's
// payments holding credit.
function applyPreviewForm({ from, payments, invoices }) {
  const n = ++formCount;
  const onPayment = from === 'payment';
  const choices = onPayment ? invoices : payments;
  const form = el('form', { class: 'preview-form', 'data-form': 'apply' }, el('h3', {}, onPayment ? 'Preview applying it to an invoice' : 'Preview applying a payment'));
  if (!choices.length) {
    form.append(el('p', { class: 'help' }, onPayment ? 'The client has no open invoice in this currency.' : 'The client holds no unallocated payment in this currency.'));
    return form;
  }
  const select = el('select', { id: `apply-choice-${n}`, name: 'choice' }, ...choices.map((choice) => el('option', { value: choice.id },
    onPayment ? `${choice.number} (balance ${formatMoney(choice.balance)})` : `${choice.number} ${choice.methodName} (${formatMoney(choice.unallocated)} unallocated)`)));
  const amount = el('input', { id: `apply-amount-${n}`, name: 'amount', inputmode: 'decimal', autocomplete: 'off' });
  const suggest = () => {
    const payment = onPayment ? payments[0] : payments.find((p) => p.id === select.value);
    const invoice = onPayment ? invoices.find((i) => i.id === select.value) : invoices[0];
    // The most that can be applied: the smaller of what the payment holds and what the invoice owes (P5).
    amount.value = subtract(payment.unallocated.amount, invoice.balance.amount).startsWith('-') ? payment.unallocated.amount : invoice.balance.amount;
  };
  select.addEventListener('change', suggest);
  suggest();
  const output = el('div', { class: 'preview', 'aria-live': 'polite', 'data-preview': 'apply' });
  form.append(el('p', { class: 'help' }, 'Shows what applying the payment would do, and changes nothing.'),
    el('label', { for: select.id }, onPayment ? 'Invoice' : 'Payment'), select,
    el('label', { for: amount.id }, 'Amount'), amount,
    el('button', { type: 'submit' }, 'Preview'), output);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const paymentId = onPayment ? payments[0].id : select.value;
    const invoiceId = onPayment ? select.value : invoices[0].id;
    runPreview(output, `mutation PreviewApply($id: ID!, $invoiceId: ID!, $amount: Amount!, $key: String!) {
      applyPayment(id: $id, invoiceId: $invoiceId, amount: $amount, idempotencyKey: $key, dryRun: true) { ${PREVIEW_FIELDS} } }`,
    { id: paymentId, invoiceId, amount: amount.value.trim() }, 'applyPayment');
  });
  return form;
}

// A dry-run needs an idempotency key like the real request; a dry-run stores none (D1), so a
// fresh one each time is right. getRandomValues works outside secure contexts too.
function previewKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `dashboard-preview-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

async function runPreview(output, mutation, variables, field) {
  output.dataset.state = 'loading';
  output.replaceChildren(el('p', {}, 'Asking Settle…'));
  try {
    const data = await gql(mutation, { ...variables, key: previewKey() });
    const preview = data[field].preview;
    const rows = [
      ...preview.invoices.map((i) => el('tr', { 'data-invoice-id': i.invoiceId },
        el('th', { scope: 'row' }, `Invoice ${i.number || ''} balance`), el('td', {}, `${i.statusBefore || ''} → ${i.statusAfter || ''}`),
        i.balanceBefore ? moneyCell(i.balanceBefore, 'td', { 'data-figure': 'balance-before' }) : el('td'),
        i.balanceAfter ? moneyCell(i.balanceAfter, 'td', { 'data-figure': 'balance-after' }) : el('td'))),
      ...preview.payments.map((p) => el('tr', { 'data-payment-id': p.paymentId },
        el('th', { scope: 'row' }, 'Payment unallocated'), el('td', {}, `${p.statusBefore || ''} → ${p.statusAfter || ''}`),
        p.unallocatedBefore ? moneyCell(p.unallocatedBefore, 'td', { 'data-figure': 'unallocated-before' }) : el('td'),
        p.unallocatedAfter ? moneyCell(p.unallocatedAfter, 'td', { 'data-figure': 'unallocated-after' }) : el('td'))),
    ];
    output.replaceChildren(
      el('p', {}, `Would record ${preview.action || 'nothing new (a repeat)'}; nothing was changed.`,
        preview.pluginNotAsked ? ` The ${preview.pluginNotAsked} plugin was not asked.` : ''),
      table('What would change', ['Record', 'Status', 'Before', 'After'], rows, 'Nothing would change.'));
    output.dataset.state = 'done';
  } catch (error) {
    const hint = error.code === 'FORBIDDEN' ? ' Previews need a BILLING or ADMIN token.' : '';
    output.replaceChildren(el('p', { class: 'error', 'data-code': error.code }, `Settle would refuse it: ${error.message} (${error.code}).${hint}`));
    output.dataset.state = 'refused';
  }
}

// ---- wiring ----

function start() {
  $('sign-in-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    $('sign-in-error').textContent = '';
    try {
      await signIn($('token').value);
      $('main').focus();
    } catch (error) {
      session = null;
      $('sign-in-error').textContent = `That token was not accepted: ${error.message}`;
    }
  });
  // Enter signs in (a token has no line breaks); Shift+Enter is left alone.
  $('token').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      $('sign-in-form').requestSubmit();
    }
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('detail-close').addEventListener('click', () => $('detail').close());
  $('detail').addEventListener('close', () => {
    detailRequest += 1;
    if (/^#(payment|invoice)=/.test(window.location.hash)) {
      history.replaceState(null, '', window.location.pathname + window.location.search);
    }
  });
  window.addEventListener('hashchange', openDetailFromHash);
  // At midnight in the practice's timezone "today" moves on, even when no money does.
  setInterval(() => {
    if (session && document.body.dataset.figuresDay && practiceToday() !== document.body.dataset.figuresDay) refreshFigures();
  }, 60000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((error) => signOut(`Sign in again: ${error.message}`));
  } else {
    $('token').focus();
  }
}

start();
