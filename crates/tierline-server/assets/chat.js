// tierline customer chat (/chat): one conversation per browser, resumed from localStorage.
'use strict';

(function chat() {
  const STORAGE = 'tierline.chat';
  const WITH_PERSON = ['waiting', 'human'];

  const ui = {
    scroll: byId('chat-scroll'),
    hint: byId('chat-hint'),
    messages: byId('messages'),
    typing: byId('typing'),
    error: byId('error'),
    handoff: byId('handoff-notice'),
    csat: byId('csat'),
    composer: byId('composer'),
    input: byId('message-input'),
    talk: byId('talk-to-person'),
  };

  const state = {
    conv: null, // {conversation_id, token}
    account: null, // from the widget's data-account
    creating: null, // the pending create, so two quick sends open one conversation
    inFlight: 0,
    buffered: [], // message events that arrived while a turn was in flight
    stopStream: null,
    csatDone: false,
  };
  const recent = recentSet();

  // Storage can be unavailable (a sandboxed iframe, private mode): the chat still works, it
  // just does not survive a reload.
  function loadStored() {
    try {
      const stored = JSON.parse(localStorage.getItem(STORAGE) || 'null');
      return stored && stored.conversation_id && stored.token ? stored : null;
    } catch (_) {
      return null;
    }
  }

  function store(conv) {
    state.conv = conv;
    try {
      if (conv) localStorage.setItem(STORAGE, JSON.stringify(conv));
      else localStorage.removeItem(STORAGE);
    } catch (_) {
      // see loadStored
    }
  }

  const path = (suffix = '') => `/v1/conversations/${encodeURIComponent(state.conv.conversation_id)}${suffix}`;

  function showError(message) {
    ui.error.textContent = message;
  }

  function clearError() {
    ui.error.textContent = '';
  }

  // Messages

  const signature = (role, text) => `${role}\u0000${text}`;

  function scrollToEnd() {
    ui.scroll.scrollTop = ui.scroll.scrollHeight;
  }

  function addMessage(message) {
    const node = messageEl(message, 'You');
    ui.messages.append(node);
    recent.remember(signature(message.role, message.text), node);
    ui.hint.hidden = true;
    scrollToEnd();
    return node;
  }

  /** A message from the live stream, unless this page already shows it. */
  function addLive(message) {
    const shown = recent.get(signature(message.role, message.text));
    if (shown) {
      // The `agent_reply` twin of a `message` event carries the agent's name.
      const author = shown.node && shown.node.querySelector('.author');
      if (message.role === 'agent' && message.author && author) author.textContent = message.author;
      return;
    }
    addMessage(message);
  }

  function citationsOf(message) {
    return (message.decision && message.decision.citations) || message.citations || [];
  }

  // Notices

  function showHandoff(queue) {
    const team = humanize(queue || 'support');
    ui.handoff.textContent = `A person from our ${team} team will reply here. ` +
      "They can see this whole conversation, so you won't need to repeat anything.";
  }

  function showCsat(done) {
    state.csatDone = done;
    ui.csat.hidden = false;
    const body = done
      ? el('p', { id: 'csat-thanks', tabindex: '-1' }, 'Thank you for your feedback.')
      : el('div', { class: 'csat-buttons' }, [1, 2, 3, 4, 5].map((score) =>
        el('button', {
          type: 'button',
          class: 'secondary',
          dataset: { score: String(score) },
          'aria-label': `${score} out of 5`,
          onclick: () => rate(score),
        }, String(score))));
    ui.csat.replaceChildren(el('h2', { id: 'csat-question' }, 'How did we do?'), body);
  }

  function applyStatus(status, queue) {
    if (WITH_PERSON.includes(status)) showHandoff(queue);
    if (status === 'resolved') {
      if (ui.csat.hidden) showCsat(state.csatDone);
    } else if (status && !state.csatDone) {
      ui.csat.hidden = true; // written to again after a resolution: not over yet
    }
  }

  // Conversation

  async function ensureConversation() {
    if (state.conv) return state.conv;
    if (!state.creating) {
      state.creating = (async () => {
        const body = state.account ? { account: state.account } : {};
        const created = await api('/v1/chat/conversations', { method: 'POST', body });
        store({ conversation_id: created.conversation_id || created.id, token: created.token });
        startStream();
        return state.conv;
      })().finally(() => {
        state.creating = null;
      });
    }
    return state.creating;
  }

  async function resume(fromUrl) {
    try {
      const view = await api(path(), { token: state.conv.token });
      ui.messages.replaceChildren();
      for (const m of view.messages || []) {
        addMessage({ role: m.role, author: m.author, text: m.text, at: m.created_at, citations: citationsOf(m) });
      }
      state.csatDone = view.csat !== null && view.csat !== undefined;
      applyStatus(view.status, view.queue);
    } catch (err) {
      if (!fromUrl && [401, 403, 404].includes(err.status)) {
        store(null); // an old conversation that is gone: the next message starts a new one
        return;
      }
      showError(err.message);
    }
    startStream();
  }

  function beginTurn() {
    state.inFlight += 1;
    ui.typing.hidden = false;
    scrollToEnd();
  }

  function endTurn() {
    state.inFlight -= 1;
    if (state.inFlight > 0) return;
    ui.typing.hidden = true;
    const events = state.buffered.splice(0);
    events.forEach(([type, data]) => handleEvent(type, data));
  }

  function applyTurn(turn) {
    if (!turn) return;
    if (turn.reply && turn.reply.text) {
      addMessage({ role: 'ai', text: turn.reply.text, at: Date.now(), citations: turn.reply.citations });
    }
    const queue = (turn.decision && turn.decision.queue) || turn.queue;
    if (turn.handoff) showHandoff(queue);
    applyStatus(turn.status, queue);
  }

  async function send(text) {
    clearError();
    const node = addMessage({ role: 'customer', text, at: Date.now() });
    beginTurn();
    try {
      const conv = await ensureConversation();
      applyTurn(await api(path('/messages'), { method: 'POST', body: { text }, token: conv.token }));
    } catch (err) {
      node.classList.add('failed');
      node.append(el('div', { class: 'failed-note' }, 'Not sent'));
      if (!ui.input.value.trim()) ui.input.value = text; // ready to retry
      showError(err.message);
    } finally {
      endTurn();
    }
  }

  async function talkToPerson() {
    clearError();
    try {
      const conv = await ensureConversation();
      const turn = await api(path('/escalate'), { method: 'POST', body: {}, token: conv.token });
      applyTurn(turn);
      showHandoff((turn && turn.decision && turn.decision.queue) || (turn && turn.queue));
    } catch (err) {
      showError(err.message);
    }
  }

  async function rate(score) {
    clearError();
    const buttons = ui.csat.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api(path('/csat'), { method: 'POST', body: { csat: score }, token: state.conv.token });
      showCsat(true);
      byId('csat-thanks').focus();
    } catch (err) {
      buttons.forEach((b) => { b.disabled = false; });
      showError(err.message);
    }
  }

  // Live events

  function startStream() {
    if (state.stopStream || !state.conv) return;
    state.stopStream = streamEvents('/v1/events', state.conv.token, onEvent, (err) => {
      state.stopStream = null;
      showError(err.message);
    });
  }

  function onEvent(type, data) {
    if (type === 'ping' || !data || typeof data !== 'object') return;
    const own = state.conv && state.conv.conversation_id;
    if (data.conversation_id && own && data.conversation_id !== own) return;
    // The turn's own reply renders when the request returns; held events are then deduplicated
    // against it instead of racing it.
    if (type === 'message' && state.inFlight > 0) {
      state.buffered.push([type, data]);
      return;
    }
    handleEvent(type, data);
  }

  function handleEvent(type, data) {
    if (type === 'message') {
      addLive({ role: data.role, author: data.author, text: data.text, at: data.at, citations: data.citations });
    } else if (type === 'agent_reply') {
      addLive({ role: 'agent', author: data.agent, text: data.text, at: data.at });
    } else if (type === 'handoff') {
      showHandoff(data.queue);
    } else if (type === 'resolved') {
      applyStatus('resolved');
    }
  }

  // Wiring

  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.input.value.trim();
    if (!text) {
      ui.input.focus();
      return;
    }
    ui.input.value = '';
    send(text);
  });

  ui.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });

  ui.talk.addEventListener('click', talkToPerson);

  function start() {
    const params = new URLSearchParams(location.search);
    const account = params.get('account');
    if (account) {
      try {
        state.account = JSON.parse(account);
      } catch (_) {
        showError('The account details passed to this chat are not valid JSON; they were ignored.');
      }
    }
    const token = params.get('token');
    const id = params.get('conversation_id');
    if (token && id) {
      store({ conversation_id: id, token }); // the host page's conversation wins over a stored one
      resume(true);
      return;
    }
    if (token) showError('This chat link has a token but no conversation id; a new conversation will start.');
    state.conv = loadStored();
    if (state.conv) resume(false);
  }

  start();
})();
