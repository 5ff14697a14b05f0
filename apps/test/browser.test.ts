// The chat page in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// two people pick names, join a room, chat through the page, and a POST /broadcast shows up live.
// Screenshots go to test-artifacts/. Without Chromium the test is skipped, unless
// BCAST_REQUIRE_BROWSER is set (CI), where it fails.
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APPS, postJson, quietLogger, type RunningApp } from './helpers.js';
import { guardProcess } from '../../tests/support/processGuard.js';

guardProcess();

const CHROMIUM = process.env.BCAST_CHROMIUM ?? '/usr/bin/chromium';
const available = existsSync(CHROMIUM);
const required = Boolean(process.env.BCAST_REQUIRE_BROWSER);
if (!available && !required) console.warn(`[browser.test] skipped: ${CHROMIUM} not found (run .ci/install-browser.sh, or set BCAST_CHROMIUM)`);

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

describe.skipIf(!available && !required)('the chat page in Chromium', () => {
  let browser: Browser;

  beforeAll(async () => {
    if (!available) throw new Error(`BCAST_REQUIRE_BROWSER is set but ${CHROMIUM} is missing: run .ci/install-browser.sh`);
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-gpu', '--disable-component-update', '--no-first-run', '--disable-sync'],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
  });

  const join = async (page: Page, url: string, name: string, room: string): Promise<void> => {
    await page.goto(url);
    await page.fill('#name', name);
    await page.click('#connect');
    await page.locator('#status.online').waitFor();
    await page.fill('#room', room);
    await page.click('#join');
    await page.locator('#rooms .chip', { hasText: room }).waitFor();
  };

  describe.each(APPS)('$name', (app) => {
    let running: RunningApp;
    beforeAll(async () => {
      running = await app.start({ port: 0, logger: quietLogger });
    });
    afterAll(async () => {
      await running?.close();
    });

    it('chats in a room, sends privately, and shows a POST /broadcast live', async () => {
      // One browser context (window) per person: a second tab in the same window would be a
      // background tab, whose timers Chromium throttles.
      const contexts = [await browser.newContext({ viewport: { width: 1200, height: 720 } }), await browser.newContext({ viewport: { width: 1200, height: 720 } })];
      const errors: string[] = [];
      try {
        const alice = await contexts[0]!.newPage();
        const bob = await contexts[1]!.newPage();
        for (const page of [alice, bob]) page.on('pageerror', (error) => errors.push(error.message));
        await join(alice, running.url, 'alice', 'lobby');
        await join(bob, running.url, 'bob', 'lobby');
        await alice.locator('#users button', { hasText: 'bob' }).waitFor();
        await alice.fill('#text', 'Hello lobby from alice');
        await alice.click('#send');
        await bob.locator('#log .msg', { hasText: 'Hello lobby from alice' }).waitFor();
        expect(await bob.locator('#log .msg', { hasText: 'Hello lobby from alice' }).locator('.badge').textContent()).toBe('# lobby');

        await bob.locator('#users button', { hasText: 'alice' }).click(); // picks "to one user: alice"
        await bob.fill('#text', 'a private word');
        await bob.click('#send');
        await alice.locator('#log .msg.private', { hasText: 'a private word' }).waitFor();

        const posted = await postJson(`${running.url}/broadcast`, { target: 'room', room: 'lobby', message: { type: 'announcement', text: 'Deploy at 18:00' } });
        expect(posted.body.result).toMatchObject({ successful: 2, totalConnections: 2 });
        const shown = alice.locator('#log .msg.server', { hasText: 'Deploy at 18:00' });
        await shown.waitFor();
        expect(await shown.locator('.badge').textContent()).toBe('announcement');
        await bob.locator('#log .msg.server', { hasText: 'Deploy at 18:00' }).waitFor();
        await alice.screenshot({ path: `${ARTIFACTS}${app.name}.png` });
        expect(errors).toEqual([]);
      } finally {
        await Promise.all(contexts.map((c) => c.close()));
      }
    }, 60_000);
  });
});
