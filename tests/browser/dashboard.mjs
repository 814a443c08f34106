// Drives Settle's dashboard in Debian's chromium (headless) for tests/api/dashboard.rs, which
// starts the server, seeds it through the API and decides what is right: this script only does
// what a person would (sign in, read, click, type) and reports what the page shows.
//
// Protocol: driver.mjs.
import { openPage, serve } from './driver.mjs';

let page = null;

const commands = {
  // Opens the dashboard and signs in with the keyboard only: type the token, press Enter.
  async open({ url, token, width = 1280, height = 900 }) {
    page = await openPage({ width, height });
    const response = await page.goto(`${url}/dashboard`);
    const status = response.status();
    const signInVisible = await page.locator('#sign-in').isVisible();
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    await page.keyboard.insertText(token);
    await page.keyboard.press('Enter');
    await page.waitForSelector('body[data-figures-day]', { timeout: 15000 });
    await page.waitForSelector('#feed-status[data-status="live"]', { timeout: 15000 });
    const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('settle.dashboard.token'), local: localStorage.length }));
    return { status, signInVisible, focusedAtStart: focused, tokenInSessionStorage: stored.session === token, localStorageEntries: stored.local };
  },

  // Everything the page shows as figures, read from the page's own tables.
  async figures() {
    return page.evaluate(() => {
      const amount = (node) => node && { amount: node.dataset.amount, currency: node.dataset.currency };
      const takingsRow = (tr) => ({
        method: tr.dataset.method, day: tr.dataset.day, currency: tr.dataset.currency,
        received: amount(tr.querySelector('[data-figure="received"]')),
        refunded: amount(tr.querySelector('[data-figure="refunded"]')),
        net: amount(tr.querySelector('[data-figure="net"]')),
      });
      const rows = (id) => [...document.querySelectorAll(`#${id} tr:not(.empty)`)];
      return {
        day: document.getElementById('today-day').getAttribute('datetime'),
        today: rows('today-rows').map(takingsRow),
        todayTotals: rows('today-totals').map(takingsRow),
        trend: rows('trend-rows').map(takingsRow),
        trendBars: window.Chart ? Chart.getChart('trend-chart')?.data.datasets.map((d) => d.data) : null,
        agedAsOf: document.getElementById('aged-as-of').getAttribute('datetime'),
        aged: Object.fromEntries([...document.querySelectorAll('#aged-buckets [data-bucket]')].map((td) => [td.dataset.bucket, amount(td)])),
        agedBars: window.Chart ? Chart.getChart('aged-chart')?.data.datasets[0].data : null,
        owing: rows('owing-rows').map((tr) => ({
          clientId: tr.dataset.clientId, name: tr.querySelector('th').textContent,
          owing: amount(tr.querySelector('[data-figure="owing"]')), pastDue: amount(tr.querySelector('[data-figure="past-due"]')),
          invoices: Number(tr.querySelector('[data-figure="invoices"]').textContent),
        })),
        credit: [...document.querySelectorAll('#credit-rows > li[data-client-id]')].map((li) => ({
          clientId: li.dataset.clientId, name: li.querySelector('.name').textContent, credit: amount(li.querySelector('[data-figure="credit"]')),
        })),
        loadError: document.getElementById('load-error').textContent,
      };
    });
  },

  // From now on notes the moment each payment first appears in the feed, by the page's clock
  // (the machine's, as the test's is), so that how long a payment took to be shown does not
  // include the time this driver and the test take to ask.
  async watchFeed() {
    await page.evaluate(() => {
      window.feedShownAt = {};
      const note = () => {
        for (const node of document.querySelectorAll('#feed-items [data-payment-id]')) window.feedShownAt[node.dataset.paymentId] ??= Date.now();
      };
      new MutationObserver(note).observe(document.getElementById('feed-items'), { childList: true, subtree: true });
      note();
    });
    return {};
  },

  // Waits until the feed shows a link to the payment with `paymentId` or `paymentNumber` (its
  // number comes a moment after the item); answers how long that took, and when watchFeed saw
  // the payment appear (milliseconds since 1970, null if it was not watching).
  async waitFeed({ paymentId, paymentNumber, timeoutMs = 10000 }) {
    const started = Date.now();
    const selector = paymentId ? `[data-payment-id="${paymentId}"]` : `[data-payment-number="${paymentNumber}"]`;
    await page.waitForSelector(`#feed-items ${selector}`, { timeout: timeoutMs });
    const shownAt = paymentId ? await page.evaluate((id) => (window.feedShownAt ? window.feedShownAt[id] ?? null : null), paymentId) : null;
    return { ms: Date.now() - started, shownAt };
  },

  // Waits until the feed shows the change at `position`.
  async waitFeedPosition({ position, timeoutMs = 10000 }) {
    await page.waitForSelector(`#feed-items > li[data-position="${position}"]`, { timeout: timeoutMs });
    return {};
  },

  async waitFeedStatus({ status, timeoutMs = 10000 }) {
    await page.waitForSelector(`#feed-status[data-status="${status}"]`, { timeout: timeoutMs });
    return { text: await page.locator('#feed-status').textContent() };
  },

  // The feed's items, newest first.
  async feed() {
    return page.evaluate(() => [...document.querySelectorAll('#feed-items > li')].map((li) => ({
      position: Number(li.dataset.position),
      kinds: [...li.querySelectorAll('[data-kind]')].map((node) => node.dataset.kind),
      payments: [...li.querySelectorAll('[data-payment-number]')].map((node) => node.dataset.paymentNumber),
      invoices: [...li.querySelectorAll('[data-invoice-number]')].map((node) => node.dataset.invoiceNumber),
      amounts: [...li.querySelectorAll('[data-amount]')].map((node) => node.dataset.amount),
      text: li.textContent,
    })));
  },

  // Follows the first link to payment or invoice `number` in the feed or the open panel, and
  // reads the panel it opens.
  async openDetail({ kind, number, within = 'body' }) {
    const attribute = kind === 'payment' ? 'data-payment-number' : 'data-invoice-number';
    const link = page.locator(`${within} a[${attribute}="${number}"]`).first();
    await link.focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector(`dialog#detail[open][data-kind="${kind}"][data-loaded="yes"]`, { timeout: 10000 });
    return commands.detail();
  },

  async detail() {
    return page.evaluate(() => {
      const dialog = document.getElementById('detail');
      const amount = (node) => node && node.dataset.amount !== undefined ? { amount: node.dataset.amount, currency: node.dataset.currency } : node && node.textContent;
      const tableRows = (id) => [...dialog.querySelectorAll(`#${id} tbody tr:not(.empty)`)];
      return {
        title: document.getElementById('detail-title').textContent,
        facts: Object.fromEntries([...dialog.querySelectorAll('dl.facts dd[data-figure]')].map((dd) => [dd.dataset.figure, amount(dd)])),
        allocations: tableRows('detail-allocations').map((tr) => ({ id: tr.dataset.allocationId, active: tr.dataset.active === 'true', amount: amount(tr.querySelector('[data-amount]')) })),
        refunds: tableRows('detail-refunds').map((tr) => ({ id: tr.dataset.refundId, outcome: tr.dataset.outcome, amount: amount(tr.querySelector('[data-amount]')) })),
        creditNotes: tableRows('detail-credit-notes').map((tr) => ({ id: tr.dataset.creditNoteId, status: tr.dataset.status, total: amount(tr.querySelector('[data-amount]')) })),
        auditEvents: tableRows('detail-audit').map((tr) => tr.dataset.auditId),
        forms: [...dialog.querySelectorAll('form[data-form]')].map((form) => form.dataset.form),
      };
    });
  },

  // Fills the panel's preview form (`refund` or `apply`) with `amount`, submits it with Enter
  // and reads what the page shows.
  async preview({ form, amount }) {
    const selector = `dialog#detail form[data-form="${form}"]`;
    const input = page.locator(`${selector} input[name="amount"]`);
    if (amount !== undefined) await input.fill(amount);
    const asked = await input.inputValue();
    await input.press('Enter');
    await page.waitForSelector(`${selector} .preview[data-state="done"], ${selector} .preview[data-state="refused"]`, { timeout: 10000 });
    return page.evaluate((selector) => {
      const output = document.querySelector(`${selector} .preview`);
      const figure = (tr, name) => {
        const node = tr.querySelector(`[data-figure="${name}"]`);
        return node ? node.dataset.amount : null;
      };
      const choice = document.querySelector(`${selector} select`);
      return {
        state: output.dataset.state,
        choice: choice ? choice.value : null,
        code: output.querySelector('[data-code]')?.dataset.code ?? null,
        invoices: [...output.querySelectorAll('tr[data-invoice-id]')].map((tr) => ({
          invoiceId: tr.dataset.invoiceId, balanceBefore: figure(tr, 'balance-before'), balanceAfter: figure(tr, 'balance-after'),
        })),
        payments: [...output.querySelectorAll('tr[data-payment-id]')].map((tr) => ({
          paymentId: tr.dataset.paymentId, unallocatedBefore: figure(tr, 'unallocated-before'), unallocatedAfter: figure(tr, 'unallocated-after'),
        })),
        text: output.textContent,
      };
    }, selector).then((shown) => ({ ...shown, amount: asked }));
  },

  async closeDetail() {
    await page.keyboard.press('Escape');
    await page.waitForSelector('dialog#detail:not([open])', { state: 'attached', timeout: 5000 });
    return { hash: await page.evaluate(() => window.location.hash) };
  },

  // Basics a person with a keyboard or a screen reader needs: every form control has a label,
  // every button a name, every image-like chart a text alternative; and whether the page is
  // wider than the window (it must not be, on a phone either).
  async accessibility() {
    return page.evaluate(() => {
      const named = (node) => (node.labels && node.labels.length) || node.getAttribute('aria-label') || node.getAttribute('aria-labelledby');
      const controls = [...document.querySelectorAll('input, select, textarea')].filter((node) => node.type !== 'hidden');
      return {
        unlabelled: controls.filter((node) => !named(node)).map((node) => node.outerHTML.slice(0, 120)),
        unnamedButtons: [...document.querySelectorAll('button')].filter((node) => !node.textContent.trim() && !node.getAttribute('aria-label')).map((node) => node.outerHTML.slice(0, 120)),
        chartsWithoutText: [...document.querySelectorAll('canvas')].filter((node) => !node.getAttribute('aria-label')).map((node) => node.id),
        overflowX: document.documentElement.scrollWidth - document.documentElement.clientWidth,
        lowContrast: lowContrastText(),
      };

      // Visible text whose colour against the background behind it is below WCAG AA: 4.5:1, or
      // 3:1 for large text (24 px, or 18.66 px bold).
      function lowContrastText() {
        const rgb = (text) => (text.match(/[\d.]+/g) || []).map(Number);
        const luminance = ([r, g, b]) => {
          const channel = (c) => { const v = c / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
          return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
        };
        const background = (node) => {
          for (let at = node; at; at = at.parentElement) {
            const [r, g, b, a = 1] = rgb(getComputedStyle(at).backgroundColor);
            if (a > 0) return [r, g, b];
          }
          return [255, 255, 255];
        };
        const found = [];
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let text = walker.nextNode(); text; text = walker.nextNode()) {
          const node = text.parentElement;
          if (!text.textContent.trim() || !node || !node.offsetParent) continue;
          const style = getComputedStyle(node);
          const [fg, bg] = [luminance(rgb(style.color)), luminance(background(node))];
          const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
          const size = parseFloat(style.fontSize);
          const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
          if (ratio < (large ? 3 : 4.5)) found.push(`${text.textContent.trim().slice(0, 40)} (${ratio.toFixed(2)}:1)`);
        }
        return [...new Set(found)];
      }
    });
  },

  // Writes a full-page PNG at the given window size.
  async screenshot({ path, width, height }) {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(300); // the charts redraw for the new size
    await page.screenshot({ path, fullPage: true });
    return { path, overflowX: await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth) };
  },

};

await serve(commands);
