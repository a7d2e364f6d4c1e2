// tierline chat widget: one line on the host page,
//   <script src="https://HOST/widget.js" data-token="ct_..." data-conversation-id="conv_..."
//           data-account='{"id": "acme", "plan": "enterprise"}' defer></script>
// adds a floating "Chat with us" button (bottom right) that opens /chat from HOST in an iframe.
// Styles are inline so the host page's CSS neither breaks the widget nor is touched by it.
(function tierlineWidget() {
  'use strict';
  const script = document.currentScript;
  if (!script || window.__tierlineWidget) return; // included twice: one button is enough
  window.__tierlineWidget = true;

  const origin = new URL(script.src, location.href).origin;
  const params = new URLSearchParams();
  const data = script.dataset;
  if (data.token) params.set('token', data.token);
  const conversation = data.conversationId || data.conversation;
  if (conversation) params.set('conversation_id', conversation);
  if (data.account) params.set('account', data.account);
  const query = params.toString();
  const src = `${origin}/chat${query ? `?${query}` : ''}`;

  const style = (node, rules) => Object.assign(node.style, rules);
  let panel = null;
  let open = false;

  const button = document.createElement('button');
  button.type = 'button';
  button.id = 'tierline-chat-button';
  button.textContent = 'Chat with us';
  button.setAttribute('aria-expanded', 'false');
  button.setAttribute('aria-controls', 'tierline-chat-panel');
  style(button, {
    position: 'fixed',
    right: '16px',
    bottom: '16px',
    zIndex: '2147483000',
    padding: '12px 18px',
    border: '0',
    borderRadius: '999px',
    background: '#1d4ed8',
    color: '#ffffff',
    font: '600 15px/1.2 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif',
    boxShadow: '0 4px 14px rgba(0, 0, 0, .25)',
    cursor: 'pointer',
  });
  // A focus ring the host page cannot remove.
  button.addEventListener('focus', () => { button.style.outline = '3px solid #f59e0b'; });
  button.addEventListener('blur', () => { button.style.outline = 'none'; });

  function buildPanel() {
    panel = document.createElement('div');
    panel.id = 'tierline-chat-panel';
    style(panel, {
      position: 'fixed',
      right: '16px',
      bottom: '76px',
      zIndex: '2147483000',
      width: 'min(380px, calc(100vw - 32px))',
      height: 'min(600px, calc(100vh - 100px))',
      borderRadius: '12px',
      overflow: 'hidden',
      boxShadow: '0 8px 30px rgba(0, 0, 0, .3)',
      background: '#ffffff',
    });
    const frame = document.createElement('iframe');
    frame.src = src; // loaded on first open only: no cost to pages where nobody chats
    frame.title = 'Chat with us';
    frame.setAttribute('allow', 'clipboard-write');
    style(frame, { width: '100%', height: '100%', border: '0', display: 'block' });
    panel.append(frame);
    document.body.append(panel);
  }

  function setOpen(next) {
    open = next;
    if (open && !panel) buildPanel();
    if (panel) panel.style.display = open ? 'block' : 'none';
    // The label stays "Chat with us"; aria-expanded says whether the chat is open.
    button.setAttribute('aria-expanded', String(open));
  }

  button.addEventListener('click', () => setOpen(!open));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && open) {
      setOpen(false);
      button.focus();
    }
  });

  const mount = () => document.body.append(button);
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount);
})();
