// Token logic for the Weavy UIKit's tokenFactory. The remote answers
// POST /resolvers/token with {"access_token":"wyu_…","expires_in":N}.
import { RemoteError } from './errors';
import { bridgeInvoke, callRemote, type InvokeRemote } from './remote';

export { RemoteError, type InvokeRemote };

export const TOKEN_PATH = '/resolvers/token';

/**
 * Checks that a value is a Weavy user access token and returns it.
 * Refuses an API key (wys_…) and anything else: neither may reach the UIKit.
 * The refused value itself is never put in the error message.
 */
export function assertUserToken(token: unknown): string {
  if (typeof token === 'string' && token.startsWith('wys_')) {
    throw new RemoteError('invalid_token', 'the remote answered a Weavy API key (wys_…) instead of a user token; refused');
  }
  if (typeof token !== 'string' || !/^wyu_\S+$/.test(token)) {
    throw new RemoteError('invalid_token', 'the remote did not answer a Weavy user token (wyu_…)');
  }
  return token;
}

/**
 * Asks the remote for a Weavy access token for the signed-in user and returns
 * the bare "wyu_…" string, as the UIKit's tokenFactory must.
 * `refresh` = true asks for a new token (the UIKit does that after a 401/403).
 */
export async function fetchWeavyToken(refresh: boolean, invoke: InvokeRemote = bridgeInvoke): Promise<string> {
  const body = await callRemote(TOKEN_PATH, { refresh: refresh === true }, invoke);
  return assertUserToken(body.access_token);
}
