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
export function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

// Answers the commands read from stdin with `commands[cmd](command)`, one at a time, until
// `close` (which every driver has) or the end of input.
export async function serve(commands) {
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
