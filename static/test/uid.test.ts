import { describe, expect, it } from 'vitest';
import { chatTarget } from '../src/uid';

describe('chatTarget', () => {
  const cloudId = 'a436116f-02ce-4520-8fbb-7301462a1674';

  it('uses the page (content id) when there is one, scoped by site', () => {
    const t = chatTarget({ cloudId, extension: { type: 'macro', content: { id: '98307', type: 'page' }, space: { key: 'DEV' } } });
    expect(t.uid).toBe(`confluence-${cloudId}-page-98307`);
    expect(t.name).toBe('Confluence page 98307');
  });

  it('is stable: the same context gives the same uid', () => {
    const ctx = { cloudId, extension: { content: { id: 42 } } };
    expect(chatTarget(ctx).uid).toBe(chatTarget(ctx).uid);
    expect(chatTarget(ctx).uid).toBe(`confluence-${cloudId}-page-42`);
  });

  it('falls back to the space, then to the site', () => {
    expect(chatTarget({ cloudId, extension: { space: { key: '~5b10ac8d82e05b22cc7d4ef5' } } }).uid).toBe(
      `confluence-${cloudId}-space-~5b10ac8d82e05b22cc7d4ef5`,
    );
    expect(chatTarget({ cloudId, extension: { type: 'confluence:globalPage' } }).uid).toBe(`confluence-${cloudId}-global`);
    expect(chatTarget(undefined).uid).toBe('confluence-global');
  });

  it('follows Weavy uid rules: no whitespace, a non-digit, at most 256 chars', () => {
    const t = chatTarget({ cloudId: 'x y', extension: { space: { key: 'A B\tC' } } });
    expect(t.uid).toBe('confluence-x-y-space-A-B-C');
    const long = chatTarget({ extension: { content: { id: '9'.repeat(400) } } });
    expect(long.uid.length).toBe(256);
    expect(long.uid).toMatch(/\D/);
  });
});
