import { describe as group, expect, it } from 'vitest';
import { RemoteError } from '../src/errors';
import { REFUSALS, UNAVAILABLE, describe, explain } from '../src/status';

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
    ['anonymous', 'you are not logged in. Log in to Confluence to use this chat.'],
    ['license_inactive', "this app's licence is not active on this Confluence site. Ask a site admin to renew it."],
    ['no_access', 'you do not have permission to view the page or space this chat belongs to.'],
  ])('gives plain words for %s and keeps the technical line as detail', (code, text) => {
    const got = explain(new RemoteError(code, 'server words', 403));
    expect(got.text).toBe(text);
    expect(got.detail).toBe(`${code} — server words (HTTP 403)`);
  });

  it('gives the technical line for everything else', () => {
    expect(explain(new RemoteError('no_user', 'no principal', 403))).toEqual({ text: 'no_user — no principal (HTTP 403)' });
    expect(explain(new RemoteError('weavy_unavailable', 'down', 502))).toEqual({ text: 'weavy_unavailable — down (HTTP 502)' });
    expect(explain(new Error('this page only works inside Confluence'))).toEqual({ text: 'this page only works inside Confluence' });
  });

  it('does not treat inherited property names as refusal codes', () => {
    expect(explain(new RemoteError('toString', 'x', 500)).text).toBe('toString — x (HTTP 500)');
    expect(Object.keys(REFUSALS).sort()).toEqual(['anonymous', 'license_inactive', 'no_access']);
  });
});
