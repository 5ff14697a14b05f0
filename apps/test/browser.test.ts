// The chat page in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core):
// two people pick names, join a room, see each other online, chat through the page, a POST
// /broadcast shows up live and on the "Measured" panel; and a page whose connection the server
// kills gets every message it missed, once each, in order. Screenshots go to test-artifacts/. Without Chromium the test is skipped, unless
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
      for (const context of contexts) context.setDefaultTimeout(15_000);
      const errors: string[] = [];
      try {
        const alice = await contexts[0]!.newPage();
        const bob = await contexts[1]!.newPage();
        for (const page of [alice, bob]) page.on('pageerror', (error) => errors.push(error.message));
        await join(alice, running.url, 'alice', 'lobby');
        await join(bob, running.url, 'bob', 'lobby');
        // Online, from presence: bob's join reached alice as an event; bob's list came from presence(room).
        await alice.locator('#online ul[data-room="lobby"] button[data-user="bob"]').waitFor();
        expect(await bob.locator('#online ul[data-room="lobby"] button').allTextContents()).toEqual(['alice', 'bob (you)']);
        await alice.fill('#text', 'Hello lobby from alice');
        await alice.click('#send');
        await bob.locator('#log .msg', { hasText: 'Hello lobby from alice' }).waitFor();
        expect(await bob.locator('#log .msg', { hasText: 'Hello lobby from alice' }).locator('.badge').textContent()).toBe('# lobby');

        await bob.locator('#online button[data-user="alice"]').click(); // picks "to one user: alice"
        await bob.fill('#text', 'a private word');
        await bob.click('#send');
        await alice.locator('#log .msg.private', { hasText: 'a private word' }).waitFor();

        const posted = await postJson(`${running.url}/broadcast`, { target: 'room', room: 'lobby', message: { type: 'announcement', text: 'Deploy at 18:00' } });
        expect(posted.body.result).toMatchObject({ recipients: 2, delivered: 2, failed: 0, dropped: 0, removed: 0 });
        const shown = alice.locator('#log .msg.server', { hasText: 'Deploy at 18:00' });
        await shown.waitFor();
        expect(await shown.locator('.badge').textContent()).toBe('announcement');
        await bob.locator('#log .msg.server', { hasText: 'Deploy at 18:00' }).waitFor();

        // The "Measured" panel (polls /dashboard.json every second): that broadcast's counts,
        // then the deliveries-per-second chart with the deliveries of this test in it.
        await alice.locator('#last-what', { hasText: 'room · announcement · 2 recipients' }).waitFor();
        expect(await alice.locator('#last dd').allTextContents()).toEqual(['2', '0', '0', '0', expect.stringMatching(/^\d+(\.\d+)? ms$/)]);
        expect(await alice.locator('#health').textContent()).toBe('healthy');
        await alice.locator('#rate-chart .bar:not([data-value="0"])').first().waitFor();
        expect(Number(await alice.locator('#rate-chart').getAttribute('data-max'))).toBeGreaterThan(0);
        expect(await alice.locator('#rate-chart .bar').count()).toBe(60);
        // In process there is no OpenTelemetry SDK, so no trace to link (otlp.test.ts checks the link).
        expect(await alice.locator('#last-trace-none').textContent()).toContain('no trace');
        await alice.screenshot({ path: `${ARTIFACTS}${app.name}.png` });
        expect(errors).toEqual([]);
      } finally {
        await Promise.all(contexts.map((c) => c.close()));
      }
    }, 60_000);

    it('recovers what a page missed while its connection was down: every message once, in order', async () => {
      const context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
      context.setDefaultTimeout(15_000);
      const errors: string[] = [];
      try {
        const page = await context.newPage();
        page.on('pageerror', (error) => errors.push(error.message));
        // The page's timers run on a clock the test holds, so that its reconnect waits for the test.
        await page.clock.install();
        await join(page, running.url, 'carol', 'news');
        const post = (text: string) => postJson(`${running.url}/broadcast`, { target: 'room', room: 'news', message: { type: 'news', text } });
        expect((await post('seen live')).body.result).toMatchObject({ delivered: 1 });
        await page.locator('#log .msg', { hasText: 'seen live' }).waitFor();

        await page.clock.pauseAt((await page.evaluate(() => Date.now())) + 1_000);
        const carol = [...running.broadcaster.connections.entries()].find((e) => e.userId === 'carol');
        expect(carol).toBeDefined();
        expect(running.broadcaster.disconnect(carol!.id, 1012, 'service restart')).toBe(true);
        await page.locator('#status', { hasText: 'reconnecting' }).waitFor();
        for (let i = 1; i <= 5; i++) {
          // Nobody in the room now: recorded in its history, delivered to no one.
          expect((await post(`missed ${i}`)).body.result).toMatchObject({ recipients: 0, delivered: 0 });
        }
        await page.clock.resume(); // the client reconnects, rejoins with its last position, recovers

        await page.locator('#status.online').waitFor();
        await page.locator('#log .system', { hasText: 'Back in # news: 5 missed messages recovered.' }).waitFor();
        expect((await post('live again')).body.result).toMatchObject({ delivered: 1 });
        await page.locator('#log .msg', { hasText: 'live again' }).waitFor();
        expect(await page.locator('#log .msg .text').allTextContents()).toEqual(['seen live', 'missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5', 'live again']);
        expect(await page.locator('#log .msg.recovered .text').allTextContents()).toEqual(['missed 1', 'missed 2', 'missed 3', 'missed 4', 'missed 5']);
        await page.screenshot({ path: `${ARTIFACTS}${app.name}-recovered.png` });
        expect(errors).toEqual([]);
      } finally {
        await context.close();
      }
    }, 60_000);
  });
});
