// What every page driver here shares (dashboard.mjs, graphiql.mjs): starting Debian's chromium
// headless through playwright-core, and the protocol the Rust tests speak (tests/api/browser.rs):
// one JSON command per line on stdin ({"cmd": "...", ...}), one JSON answer per line on stdout
// ({"ok": ...} or {"error": "..."}); diagnostics go to stderr.
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.SETTLE_CHROMIUM || '/usr/bin/chromium';

// Playwright starts chromium with a fresh, empty profile of its own (it refuses --user-data-dir
// here) and removes it on close. The background-networking flags keep chromium from calling out,
// which the machines that run these tests refuse.
function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

let browser = null;

// What went wrong in the pages opened so far: script errors and console errors, for the
// `problems` command.
export const problems = [];

// A new page of `viewport` size in a fresh context (chromium started on first use), its script
// and console errors collected in `problems`.
export async function openPage(viewport) {
  if (!browser) browser = await launch();
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
  });
  return page;
}

// The commands every driver answers besides its own.
const shared = {
  async problems() {
    return { problems };
  },

  async close() {
    if (browser) await browser.close();
    browser = null;
    return {};
  },
};

// Answers the commands read from stdin with `own[cmd](command)` (or a shared one: `problems`,
// `close`), one at a time, until `close` or the end of input.
export async function serve(own) {
  const commands = { ...shared, ...own };
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let command;
    try {
      command = JSON.parse(line);
      const run = commands[command.cmd];
      if (!run) throw new Error(`unknown command ${command.cmd}`);
      const ok = await run(command);
      process.stdout.write(`${JSON.stringify({ ok })}\n`);
    } catch (error) {
      process.stdout.write(`${JSON.stringify({ error: `${command ? command.cmd : 'input'}: ${error.message}` })}\n`);
    }
    if (command && command.cmd === 'close') break;
  }
  await commands.close();
}
