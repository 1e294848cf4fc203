// Kept apart from token.ts so the entry chunk (main.ts → status.ts) never
// pulls in @forge/bridge, which throws on load outside a Forge iframe.

/** An error with the remote's error code; message is "<code> — <message>". */
export class TokenError extends Error {
  readonly code: string;
  readonly status?: number;
  readonly detail: string;

  constructor(code: string, detail: string, status?: number) {
    super(`${code} — ${detail}`);
    this.name = 'TokenError';
    this.code = code;
    this.detail = detail;
    this.status = status;
  }
}
