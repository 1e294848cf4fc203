// The Weavy app uid (and display name) for the chat, derived from the Forge
// context so that the same page/space always opens the same conversation.
//
// The cloudId (the Confluence site) is part of the uid: content ids and space
// keys are only unique within a site, and one Weavy environment may serve many
// customers. Weavy uid rules: no whitespace, at least one non-digit, ≤ 256 chars.

export interface ChatTarget {
  uid: string;
  name: string;
}

/** The parts of @forge/bridge's FullContext this module reads. */
export interface ContextLike {
  cloudId?: string;
  localId?: string;
  extension?: Record<string, unknown>;
}

const clean = (v: string) => v.trim().replace(/[^A-Za-z0-9_.:~@-]+/g, '-');

function str(v: unknown): string | undefined {
  if (typeof v === 'string' && v.trim() !== '') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
}

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null ? (obj as Record<string, unknown>)[key] : undefined;
}

export function chatTarget(ctx: ContextLike | undefined): ChatTarget {
  const ext = ctx?.extension;
  const site = str(ctx?.cloudId);
  const prefix = site ? `confluence-${clean(site)}` : 'confluence';

  const contentId = str(field(field(ext, 'content'), 'id'));
  const spaceKey = str(field(field(ext, 'space'), 'key'));

  let target: ChatTarget;
  if (contentId) {
    target = { uid: `${prefix}-page-${clean(contentId)}`, name: `Confluence page ${contentId}` };
  } else if (spaceKey) {
    target = { uid: `${prefix}-space-${clean(spaceKey)}`, name: `Confluence space ${spaceKey}` };
  } else {
    target = { uid: `${prefix}-global`, name: 'Confluence' };
  }
  target.uid = target.uid.slice(0, 256);
  return target;
}
