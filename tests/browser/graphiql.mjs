// Drives Settle's GraphiQL (/graphiql) in Debian's chromium (headless) for tests/api/graphiql.rs,
// which starts the server and decides what is right: this script does what a person does in
// GraphiQL (put the token in the Headers tab, write a query, run it, open the docs) and reports
// what the page shows. The editors are CodeMirror 5; text goes in through the editor's own API,
// as a paste would put it, since typing would meet the editor's bracket auto-closing.
//
// Protocol: driver.mjs.
import { openPage, problems, serve } from './driver.mjs';

let page = null;

// The value of the CodeMirror editor inside `selector`.
const editorValue = (selector) => page.evaluate((s) => document.querySelector(`${s} .CodeMirror`).CodeMirror.getValue(), selector);
const setEditorValue = (selector, text) =>
  page.evaluate(([s, t]) => document.querySelector(`${s} .CodeMirror`).CodeMirror.setValue(t), [selector, text]);

const QUERY_EDITOR = '.graphiql-query-editor';
const RESULT = '.result-window';

// The headers editor: of the two editor tools (variables, headers), the one shown.
async function headersEditor() {
  const index = await page.evaluate(() => {
    const editors = [...document.querySelectorAll('.graphiql-editor-tool .graphiql-editor')];
    return editors.findIndex((editor) => !editor.classList.contains('hidden'));
  });
  if (index < 0) throw new Error('no editor tool is shown');
  return `.graphiql-editor-tool .graphiql-editor:nth-of-type(${index + 1})`;
}

const commands = {
  // Opens GraphiQL; answers the page's status and what the Headers tab holds at first.
  async open({ url }) {
    page = await openPage({ width: 1280, height: 900 });
    const response = await page.goto(`${url}/graphiql`);
    await page.waitForSelector(`${QUERY_EDITOR} .CodeMirror`, { timeout: 15000 });
    const headers = await editorValue(await headersEditor());
    return { status: response.status(), headers };
  },

  // Replaces what the Headers tab holds.
  async headers({ text }) {
    await setEditorValue(await headersEditor(), text);
    return { headers: await editorValue(await headersEditor()) };
  },

  // Writes `query` into the query editor and presses the run button, with the result pane
  // cleared; answers at once (a subscription shows its messages as they come: `result`).
  async submit({ query }) {
    await setEditorValue(QUERY_EDITOR, query);
    await setEditorValue(RESULT, '');
    // GraphiQL parses the edited query a moment after each change (debounced), and picks HTTP or
    // the WebSocket from that parse: a person never presses run within that moment.
    await page.waitForTimeout(500);
    await page.click('.graphiql-execute-button');
    return {};
  },

  // `submit`, then the result pane as JSON once it shows one.
  async run({ query }) {
    await commands.submit({ query });
    return commands.result({});
  },

  // The result pane as JSON, once it holds text containing `contains` (any text when left out).
  async result({ contains = '' }) {
    const shown = () => editorValue(RESULT);
    const handle = await page.waitForFunction(
      ([selector, wanted]) => {
        const text = document.querySelector(`${selector} .CodeMirror`).CodeMirror.getValue();
        return text.trim() && text.includes(wanted) ? text : null;
      },
      [RESULT, contains],
      { timeout: 15000 },
    ).catch(async (error) => {
      throw new Error(`${error.message}; the result pane shows: ${await shown()}; the page: ${problems.join(' | ')}`);
    });
    return JSON.parse(await handle.jsonValue());
  },

  // Asks GraphiQL to fetch the schema again (as after pasting a token), opens the documentation
  // explorer and answers what it shows: its root types, or its error.
  async docs() {
    await page.click('button[aria-label="Re-fetch GraphQL schema"]');
    const explorer = page.locator('.graphiql-doc-explorer');
    if (!(await explorer.isVisible())) await page.click('button[aria-label*="Documentation Explorer"]');
    await page.waitForSelector('.graphiql-doc-explorer-root-type, .graphiql-doc-explorer-error', { timeout: 15000 });
    return page.evaluate(() => ({
      rootTypes: [...document.querySelectorAll('.graphiql-doc-explorer-root-type')].map((node) => node.parentElement.textContent.trim()),
      error: [...document.querySelectorAll('.graphiql-doc-explorer-error')].map((node) => node.textContent.trim()).join(' '),
    }));
  },

};

await serve(commands);
