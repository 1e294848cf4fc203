// Mounts <wy-chat> for the chat the remote chose for this page/space/site.
// Loaded only once the Forge bridge is known to be present (see main.ts).
import { view } from '@forge/bridge';
import { fetchWeavyToken } from './token';
import { openChat } from './chat';
import { bridgeInvoke } from './remote';
import { alertBox, showBusy } from './status';

/** The Weavy environment, fixed at build time (VITE_WEAVY_URL, see vite.config.ts). */
export const WEAVY_URL: string = import.meta.env.VITE_WEAVY_URL;

export async function mountChat(root: HTMLElement): Promise<void> {
  // The UIKit is big: start loading it while the context, the chat and the first token arrive.
  const uikit = import('@weavy/uikit-web/dist/weavy.js');
  uikit.catch(() => undefined); // reported below if it is awaited

  // The chat (which app, decided by the remote) and a first token before
  // anything is mounted: an error answer from the remote becomes a message on
  // the page, not an empty chat, and nothing reaches Weavy. The context goes
  // into the chat call's body; without one the body is {} and the layout a page's.
  const context = view.getContext().catch((err: unknown) => {
    console.warn('forge-remote chat: no Forge context:', err);
    return undefined;
  });
  const [ctx, { token: firstToken, chat: target }] = await Promise.all([
    context,
    openChat(bridgeInvoke, { context, onBusy: (seconds) => showBusy(root, seconds) }),
  ]);
  const { Weavy } = await uikit;

  document.documentElement.classList.add(ctx?.extension?.type === 'macro' ? 'layout-macro' : 'layout-page');

  const banner = document.createElement('div');
  banner.className = 'banner';

  const weavy = new Weavy();
  // Everything the UIKit needs is in our bundle: never import code from the
  // Weavy environment at runtime (Forge's CSP would block it anyway).
  weavy.disableEnvironmentImports = true;
  weavy.url = WEAVY_URL;

  let pending: string | undefined = firstToken;
  weavy.tokenFactory = async (refresh: boolean) => {
    if (!refresh && pending) {
      const token = pending;
      pending = undefined;
      return token;
    }
    pending = undefined;
    try {
      const token = await fetchWeavyToken(refresh);
      banner.replaceChildren();
      return token;
    } catch (err) {
      banner.replaceChildren(alertBox(err));
      throw err;
    }
  };

  // The numeric app id only: with a number the UIKit just GETs the app (see
  // chat.ts). No `name`: the remote named the app when it provisioned it, and
  // the page has nothing to change on it with the user's token.
  const chat = document.createElement('wy-chat');
  chat.setAttribute('uid', target.appId);

  root.replaceChildren(banner, chat);
  root.dataset.state = 'mounted';
  root.dataset.appId = target.appId;
  root.dataset.weavyUrl = WEAVY_URL;
}
