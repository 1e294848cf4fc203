import { afterAll, beforeAll, describe as group, expect, it, vi } from 'vitest';
import { RemoteError } from '../src/errors';
import { PLAIN, UNAVAILABLE, busyNote, canRetry, describe, explain, showBusy, showError } from '../src/status';

group('describe', () => {
  it('gives code — message (HTTP status) for a remote error', () => {
    const line = UNAVAILABLE + describe(new RemoteError('weavy_unavailable', 'Weavy answered 500', 502));
    expect(line).toBe('Chat is unavailable: weavy_unavailable — Weavy answered 500 (HTTP 502)');
  });

  it('gives the message of any other error', () => {
    expect(describe(new RemoteError('remote_call_failed', 'timed out'))).toBe('remote_call_failed — timed out');
    expect(describe(new Error('  boom '))).toBe('boom');
    expect(describe('plain')).toBe('plain');
  });
});

group('explain', () => {
  it.each([
    ['anonymous', 403, 'Chat is unavailable: you are not logged in. Log in to Confluence to use this chat.'],
    ['license_inactive', 403, "Chat is unavailable: this app's licence is not active on this Confluence site. Ask a site admin to renew it."],
    ['no_access', 403, "You can't view this page, so you can't join its chat."],
    ['confluence_busy', 503, 'Confluence is busy right now. Try again in a moment.'],
    ['uninstalled', 410, 'Chat is unavailable: this app has just been uninstalled from this Confluence site.'],
  ])('gives plain words for %s and keeps the technical line as detail', (code, status, text) => {
    const got = explain(new RemoteError(code, 'server words', status));
    expect(got.text).toBe(text);
    expect(got.detail).toBe(`${code} — server words (HTTP ${status})`);
  });

  it('tells the admin when the manifest lacks appUserToken', () => {
    const got = explain(new RemoteError('user_token_missing', 'no user token', 403));
    expect(got.text).toMatch(/^This app is misconfigured: /);
    expect(got.text).toContain('appUserToken');
    expect(got.detail).toBe('user_token_missing — no user token (HTTP 403)');
  });

  it('gives the technical line for everything else', () => {
    expect(explain(new RemoteError('no_user', 'no principal', 403))).toEqual({ text: 'Chat is unavailable: no_user — no principal (HTTP 403)' });
    expect(explain(new RemoteError('weavy_unavailable', 'down', 502))).toEqual({ text: 'Chat is unavailable: weavy_unavailable — down (HTTP 502)' });
    expect(explain(new Error('this page only works inside Confluence'))).toEqual({ text: 'Chat is unavailable: this page only works inside Confluence' });
  });

  it('does not treat inherited property names as codes', () => {
    expect(explain(new RemoteError('toString', 'x', 500)).text).toBe('Chat is unavailable: toString — x (HTTP 500)');
    expect(Object.keys(PLAIN).sort()).toEqual(
      ['anonymous', 'confluence_busy', 'confluence_unavailable', 'license_inactive', 'no_access', 'uninstalled', 'user_token_missing'].sort(),
    );
  });
});

group('canRetry', () => {
  it.each([
    ['confluence_busy', 503],
    ['confluence_unavailable', 503],
    ['weavy_unavailable', 502],
    ['weavy_timeout', 504],
    ['store_unavailable', 503],
    ['refresh_rate_limited', 429],
    ['http_500', 500],
  ])('offers a retry for %s (HTTP %i)', (code, status) => {
    expect(canRetry(new RemoteError(code, 'x', status))).toBe(true);
  });

  it('offers a retry when the bridge call itself failed', () => {
    expect(canRetry(new RemoteError('remote_call_failed', 'Remote invocation timed out'))).toBe(true);
  });

  it.each([
    ['no_access', 403],
    ['user_token_missing', 403],
    ['anonymous', 403],
    ['license_inactive', 403],
    ['no_user', 403],
    ['bad_request', 400],
    ['weavy_not_configured', 503],
    ['uninstalled', 410],
  ])('offers no retry for %s (HTTP %i)', (code, status) => {
    expect(canRetry(new RemoteError(code, 'x', status))).toBe(false);
  });

  it('offers no retry for answers the page refused or for plain errors', () => {
    expect(canRetry(new RemoteError('invalid_response', 'no app id', 200))).toBe(false);
    expect(canRetry(new RemoteError('invalid_token', 'an API key'))).toBe(false);
    expect(canRetry(new Error('this page only works inside Confluence'))).toBe(false);
  });
});

group('busyNote', () => {
  it('says Confluence is busy and when the page tries again', () => {
    expect(busyNote(7)).toBe('Confluence is busy right now; trying again in 7 s…');
  });
});

// A minimal stand-in for the DOM calls status.ts makes (the tests run in Node).
class FakeElement {
  children: FakeElement[] = [];
  attrs: Record<string, string> = {};
  dataset: Record<string, string> = {};
  className = '';
  type = '';
  textContent = '';
  listeners: Record<string, () => void> = {};
  constructor(readonly tag: string) {}
  setAttribute(name: string, value: string) {
    this.attrs[name] = value;
  }
  append(...els: FakeElement[]) {
    this.children.push(...els);
  }
  replaceChildren(...els: FakeElement[]) {
    this.children = els;
  }
  addEventListener(type: string, fn: () => void) {
    this.listeners[type] = fn;
  }
  find(tag: string): FakeElement | undefined {
    for (const c of this.children) {
      if (c.tag === tag) return c;
      const inner = c.find(tag);
      if (inner) return inner;
    }
    return undefined;
  }
  text(): string {
    return this.textContent + this.children.map((c) => c.text()).join('');
  }
}

group('showError', () => {
  beforeAll(() => vi.stubGlobal('document', { createElement: (tag: string) => new FakeElement(tag) }));
  afterAll(() => vi.unstubAllGlobals());

  it('shows no_access in plain words without a retry button', () => {
    const root = new FakeElement('div');
    const retry = vi.fn();
    showError(root as unknown as HTMLElement, new RemoteError('no_access', 'you cannot view page 98307', 403), retry);
    expect(root.dataset).toEqual({ state: 'error', errorCode: 'no_access' });
    expect(root.children[0].attrs.role).toBe('alert');
    expect(root.text()).toContain("You can't view this page, so you can't join its chat.");
    expect(root.find('button')).toBeUndefined();
  });

  it('shows user_token_missing for the admin without a retry button', () => {
    const root = new FakeElement('div');
    showError(root as unknown as HTMLElement, new RemoteError('user_token_missing', 'no user token', 403), vi.fn());
    expect(root.text()).toContain('This app is misconfigured: ');
    expect(root.find('button')).toBeUndefined();
  });

  it('gives a transient error a "Try again" button that calls back once', () => {
    const root = new FakeElement('div');
    const retry = vi.fn();
    showError(root as unknown as HTMLElement, new RemoteError('confluence_unavailable', 'Confluence timed out', 503), retry);
    const button = root.find('button');
    expect(button?.textContent).toBe('Try again');
    expect(button?.type).toBe('button');
    button?.listeners.click();
    expect(retry).toHaveBeenCalledTimes(1);
  });

  it('shows no button when nobody can retry', () => {
    const root = new FakeElement('div');
    showError(root as unknown as HTMLElement, new RemoteError('weavy_unavailable', 'down', 502));
    expect(root.find('button')).toBeUndefined();
  });

  it('shows the busy note as a status, not an alert', () => {
    const root = new FakeElement('div');
    showBusy(root as unknown as HTMLElement, 3);
    expect(root.dataset.state).toBe('busy');
    expect(root.children[0].attrs.role).toBe('status');
    expect(root.text()).toBe('Confluence is busy right now; trying again in 3 s…');
  });
});
