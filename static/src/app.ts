// Mounts <wy-chat> for the current Confluence page/space/site. Loaded only
// once the Forge bridge is known to be present (see main.ts).
import { view } from '@forge/bridge';
import { fetchWeavyToken } from './token';
import { chatTarget } from './uid';
import { alertBox, describe } from './status';

/** The Weavy environment, fixed at build time (VITE_WEAVY_URL, see vite.config.ts). */
export const WEAVY_URL: string = import.meta.env.VITE_WEAVY_URL;

export async function mountChat(root: HTMLElement): Promise<void> {
  // The UIKit is big: start loading it while the context and the first token arrive.
  const uikit = import('@weavy/uikit-web/dist/weavy.js');
  uikit.catch(() => undefined); // reported below if it is awaited

  // A first token before anything is mounted: an error answer from the remote
  // becomes a message on the page, not an empty chat.
  const [ctx, firstToken] = await Promise.all([view.getContext(), fetchWeavyToken(false)]);
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
      banner.replaceChildren(alertBox(describe(err)));
      throw err;
    }
  };

  const target = chatTarget(ctx);
  const chat = document.createElement('wy-chat');
  chat.setAttribute('uid', target.uid);
  chat.setAttribute('name', target.name);

  root.replaceChildren(banner, chat);
  root.dataset.state = 'mounted';
  root.dataset.uid = target.uid;
  root.dataset.weavyUrl = WEAVY_URL;
}
