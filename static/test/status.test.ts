import { describe as group, expect, it } from 'vitest';
import { TokenError } from '../src/errors';
import { UNAVAILABLE, describe } from '../src/status';

group('describe', () => {
  it('gives code — message (HTTP status) for a remote error', () => {
    const line = UNAVAILABLE + describe(new TokenError('weavy_unavailable', 'Weavy answered 500', 502));
    expect(line).toBe('Chat is unavailable: weavy_unavailable — Weavy answered 500 (HTTP 502)');
  });

  it('gives the message of any other error', () => {
    expect(describe(new TokenError('remote_call_failed', 'timed out'))).toBe('remote_call_failed — timed out');
    expect(describe(new Error('  boom '))).toBe('boom');
    expect(describe('plain')).toBe('plain');
  });
});
