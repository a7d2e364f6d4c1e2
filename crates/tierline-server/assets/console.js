// tierline agent console (/console): queues, waiting conversations, the handoff packet, replies,
// knowledge-base search and resolution.
'use strict';

(function agentConsole() {
  const AGENT_NAME = 'tierline.agent';
  const state = { queues: [], policy: null, selected: null, openId: null, stopStream: null, poll: null, soon: null, seq: 0 };
  const recent = recentSet();
  const sig = (role, text) => `${role}\u0000${text}`;
  const enc = encodeURIComponent;
  const call = (path, options = {}) => api(path, { ...options, key: session.key() });
  const post = (path, body) => call(path, { method: 'POST', body });

  function showStatus(message) {
    dom.error.textContent = '';
    dom.status.textContent = message;
  }

  /** Any failure: back to sign-in on 401/403, else the message in #error. */
  function fail(err) {
    if (!session.fail(err)) dom.error.textContent = err.message;
  }

  /** Re-renders `container`, then gives the focus back to the element that had it: polling must
   * not throw a keyboard user out of the list. */
  function keepFocus(container, attribute, render) {
    const active = document.activeElement;
    const value = container.contains(active) ? active.getAttribute(attribute) : null;
    render();
    const again = [...container.querySelectorAll(`[${attribute}]`)].find((n) => n.getAttribute(attribute) === value);
    if (value !== null && again) again.focus();
  }

  // Queues: green under half the time-to-human target, amber under it, red past it.

  function level(q) {
    const target = Number(q.target_secs);
    const wait = Number(q.oldest_wait_secs) || 0;
    if (!q.waiting || !target || wait < target / 2) return 'ok';
    return wait < target ? 'warn' : 'late';
  }
  const LEVEL_WORDS = { ok: 'within target', warn: 'nearing target', late: 'over target' };

  function renderQueues() {
    keepFocus(dom.queues, 'data-queue', () => {
      const items = state.queues.map((q) => el('li', null, el('button', {
        type: 'button',
        class: `queue ${level(q)}`,
        dataset: { queue: q.queue },
        'aria-pressed': String(q.queue === state.selected),
        onclick: () => selectQueue(q.queue),
      },
      el('span', { class: 'name' }, humanize(q.queue)),
      el('span', null, el('span', { class: 'count' }, String(q.waiting || 0)), ' waiting'),
      el('span', { class: 'wait' }, q.waiting ? fmtDuration(q.oldest_wait_secs) : '–'),
      el('span', { class: 'sr-only' }, `, ${LEVEL_WORDS[level(q)]}`))));
      dom.queues.replaceChildren(el('h2', null, 'Queues'),
        items.length ? el('ul', null, items) : el('p', { class: 'empty' }, 'No queues'));
    });
  }

  async function refreshQueues() {
    try {
      state.queues = ((await call('/v1/queues')) || {}).queues || [];
      renderQueues();
      fillQueueSelect();
    } catch (err) {
      fail(err);
    }
    if (state.selected && session.key()) refreshWaiting();
  }

  function selectQueue(name) {
    state.selected = name;
    dom.queues.querySelectorAll('.queue').forEach((b) => b.setAttribute('aria-pressed', String(b.dataset.queue === name)));
    refreshWaiting();
  }

  async function refreshWaiting() {
    const queue = state.selected;
    const seq = ++state.seq; // a slow answer for another queue must not overwrite this one
    try {
      const data = await call(`/v1/queues/${enc(queue)}?limit=50`);
      if (seq === state.seq) renderWaiting(queue, (data && data.waiting) || []);
    } catch (err) {
      if (seq === state.seq) fail(err);
    }
  }

  function renderWaiting(queue, waiting) {
    keepFocus(dom.waiting, 'data-id', () => {
      const items = waiting.map((w) => el('li', null, el('button', {
        type: 'button',
        class: 'waiting-item',
        dataset: { id: w.conversation_id },
        'aria-current': String(w.conversation_id === state.openId),
        onclick: () => openConversation(w.conversation_id),
      },
      el('span', { class: 'last-message' }, w.last_customer_message || '(no message)'),
      el('span', null, 'waiting ', el('span', { class: 'wait' }, fmtDuration(w.wait_secs))),
      el('span', { class: 'reason' }, humanize(w.reason || w.tier)),
      accountBadges(w.account || {}))));
      dom.waiting.replaceChildren(el('h2', { id: 'waiting-title', tabindex: '-1' }, `Waiting in ${humanize(queue)}`),
        items.length ? el('ul', null, items) : el('p', { class: 'empty' }, 'No conversations waiting'));
    });
  }

  const accountBadges = (a) => el('span', null,
    a.name || a.id ? el('span', { class: 'tag' }, a.name || a.id) : null,
    a.vip && el('span', { class: 'badge vip' }, 'VIP'), ' ',
    a.churn_risk && el('span', { class: 'badge risk' }, 'Churn risk'));

  // The resolve form's choices: the policy's queues and topics (the live queue list stands in
  // when the policy cannot be read).

  const nameOf = (item) => (typeof item === 'string' ? item : (item && (item.queue || item.name || item.id)) || '');

  async function loadPolicy() {
    try {
      state.policy = await call('/v1/policy/queues');
    } catch (err) {
      if (session.fail(err)) return;
    }
    fillQueueSelect();
    const topics = ((state.policy && state.policy.topics) || []).map(nameOf);
    dom.topics.replaceChildren(...topics.map((t) => el('option', { value: t })));
  }

  function fillQueueSelect() {
    const names = ((state.policy && state.policy.queues) || state.queues).map(nameOf).filter(Boolean);
    const select = dom.correctedQueue;
    // Rebuilding on every live refresh would close an open list and drop the agent's pick.
    const shown = [...select.options].slice(1).map((o) => o.value);
    if (shown.length === names.length && shown.every((n, i) => n === names[i])) return;
    const current = select.value;
    select.replaceChildren(el('option', { value: '' }, 'keep'), ...names.map((n) => el('option', { value: n }, humanize(n))));
    select.value = names.includes(current) ? current : '';
  }

  // The conversation and its handoff packet

  async function openConversation(id) {
    try {
      renderPacket(await call(`/v1/conversations/${enc(id)}/handoff`));
      state.openId = id;
      dom.waiting.querySelectorAll('.waiting-item').forEach((b) => b.setAttribute('aria-current', String(b.dataset.id === id)));
      dom.conversation.hidden = false;
      dom.conversationTitle.focus();
    } catch (err) {
      fail(err);
    }
  }

  function renderPacket(p) {
    const summary = p.summary || {};
    dom.conversationTitle.textContent = `Conversation ${p.conversation_id}`;
    dom.conversationMeta.textContent = [
      p.queue && `Queue: ${humanize(p.queue)}`,
      p.tier && `Tier: ${p.tier}`,
      p.status && `Status: ${p.status}`,
      p.escalation_reason && `Reason: ${humanize(p.escalation_reason)}`,
      p.escalated_at && `Escalated ${fmtTime(p.escalated_at)}`,
    ].filter(Boolean).join(' · ');
    dom.summary.textContent = summary.issue || 'No summary available.';
    fillList(dom.why, (summary.why_escalated || []).map((reason) => el('li', null, reason)), 'No reason recorded.');
    fillList(dom.aiTried, (summary.ai_tried || []).map(attemptItem), 'The AI did not offer an article.');
    fillList(dom.timeline, (p.signal_timeline || []).map(timelineItem), 'No customer messages yet.');
    renderAccount(p.account || {}, p.customer);
    dom.transcript.replaceChildren(...(p.transcript || []).map((line) => messageEl(line, 'Customer')));
    dom.transcript.scrollTop = dom.transcript.scrollHeight;
    dom.reply.value = p.suggested_reply || '';
    dom.kbResults.replaceChildren();
    dom.kbQuery.value = '';
    dom.resolveForm.reset();
    fillQueueSelect();
  }

  function fillList(list, items, emptyText) {
    list.replaceChildren(...(items.length ? items : [el('li', { class: 'empty' }, emptyText)]));
  }

  function link(title, url, attrs = {}) {
    const href = safeUrl(url);
    return href
      ? el('a', { ...attrs, href, target: '_blank', rel: 'noopener noreferrer' }, title)
      : el('strong', attrs, title);
  }

  const attemptItem = (a) => el('li', null, link(a.title, a.url), ' — customer ',
    el('span', { class: 'reaction' }, a.customer_reaction || 'did not react'));

  function timelineItem(entry) {
    const signals = (entry.signals || []).map((s) => el('li', null,
      el('strong', null, humanize(s.kind)),
      isNum(s.score) ? ` (${Math.round(s.score * 100)}%)` : '',
      s.evidence ? `: ${s.evidence} ` : ' ',
      s.sentence && el('q', null, s.sentence)));
    return el('li', null,
      el('time', { class: 'hint' }, fmtTime(entry.at)), ' ', el('q', null, entry.message || ''), ' ',
      entry.sentiment && el('span', { class: 'tag' }, `sentiment: ${entry.sentiment}`),
      entry.topic && el('span', { class: 'tag' }, `topic: ${humanize(entry.topic)}`),
      signals.length ? el('ul', null, signals) : el('div', { class: 'empty' }, 'No signal fired'));
  }

  function renderAccount(a, customer) {
    const yesNo = (v) => (v ? 'Yes' : 'No');
    const facts = [
      ['Account', a.name || a.id || '–'],
      ['Plan', a.plan || '–'],
      ['VIP', yesNo(a.vip)],
      ['Churn risk', yesNo(a.churn_risk)],
      ['Contract value', isNum(a.contract_value) ? Number(a.contract_value).toLocaleString() : '–'],
    ];
    for (const [name, v] of Object.entries(customer && typeof customer === 'object' ? customer : {})) {
      facts.push([`Customer ${humanize(name)}`, typeof v === 'object' ? JSON.stringify(v) : String(v)]);
    }
    dom.account.replaceChildren(...facts.flatMap(([term, detail]) => [el('dt', null, term), el('dd', null, detail)]));
  }

  /** A live message, unless this console already shows it (its own reply, the twin event). */
  function appendTranscript(message, live) {
    if (live && recent.get(sig(message.role, message.text))) return;
    recent.remember(sig(message.role, message.text));
    dom.transcript.append(messageEl(message, 'Customer'));
    dom.transcript.scrollTop = dom.transcript.scrollHeight;
  }

  // Reply, knowledge base, resolve

  async function sendReply() {
    const id = state.openId;
    const text = dom.reply.value.trim();
    if (!id || !text) return dom.reply.focus();
    const agent = dom.agentName.value.trim() || 'Agent';
    sessionStorage.setItem(AGENT_NAME, agent);
    dom.sendReply.disabled = true; // one click, one message
    try {
      await post(`/v1/conversations/${enc(id)}/agent-messages`, { agent, text });
      if (state.openId === id) {
        appendTranscript({ role: 'agent', author: agent, text, at: Date.now() }, false);
        dom.reply.value = '';
      }
      showStatus('Reply sent');
      refreshSoon();
    } catch (err) {
      fail(err);
    }
    dom.sendReply.disabled = false;
  }

  // Search snippets are "HTML with <b> highlights": parsed in an inert document (DOMParser runs
  // no script and loads nothing), and only their text is copied out.
  const snippetParts = (html) => [...new DOMParser().parseFromString(String(html || ''), 'text/html').body.childNodes];
  const stripTags = (html) => snippetParts(html).map((node) => node.textContent).join('');
  /** Highlights rebuilt as new <b> elements; every other tag dropped. */
  const snippetNodes = (html) => snippetParts(html).map((node) => (node.nodeName === 'B' ? el('b', null, node.textContent) : node.textContent));

  async function searchKb() {
    const q = dom.kbQuery.value.trim();
    if (!q) return dom.kbQuery.focus();
    try {
      const data = (await call(`/v1/kb/search?q=${enc(q)}&k=5`)) || {};
      const results = data.results || data.hits || [];
      fillList(dom.kbResults, results.map(kbResult), 'No articles found');
    } catch (err) {
      fail(err);
    }
  }

  function kbResult(hit) {
    const text = stripTags(hit.passage); // the highlights' HTML never reaches the reply
    return el('li', { class: 'kb-result' },
      link(hit.title, hit.url, { class: 'title' }),
      hit.heading && el('div', { class: 'heading hint' }, hit.heading),
      el('p', { class: 'passage' }, snippetNodes(hit.passage)),
      el('button', {
        type: 'button',
        class: 'insert secondary',
        'aria-label': `Insert the passage from ${hit.title} into the reply`,
        onclick: () => {
          const current = dom.reply.value.replace(/\s+$/, '');
          dom.reply.value = current ? `${current}\n\n${text}` : text;
          dom.reply.focus();
        },
      }, 'Insert'));
  }

  async function resolve() {
    const id = state.openId;
    if (!id) return;
    const optional = (v) => v.trim() || undefined; // empty fields keep what the AI decided
    const body = {
      resolved_by: 'human',
      agent: dom.agentName.value.trim() || 'Agent',
      needed_information_ai_lacked: dom.neededInfo.checked,
      corrected_queue: optional(dom.correctedQueue.value),
      corrected_topic: optional(dom.correctedTopic.value),
      approved_answer: optional(dom.approvedAnswer.value),
    };
    dom.resolveButton.disabled = true;
    try {
      await post(`/v1/conversations/${enc(id)}/resolve`, body);
      const item = [...dom.waiting.querySelectorAll('.waiting-item')].find((b) => b.dataset.id === id);
      if (item) item.parentElement.remove();
      const list = dom.waiting.querySelector('ul');
      if (list && !list.children.length) list.replaceWith(el('p', { class: 'empty' }, 'No conversations waiting'));
      state.openId = null;
      dom.conversation.hidden = true;
      showStatus('Resolved');
      dom.waitingTitle.focus();
      refreshQueues();
    } catch (err) {
      fail(err);
    }
    dom.resolveButton.disabled = false;
  }

  // Live updates: new handoffs show up without a reload; polling covers a broken stream.

  function refreshSoon() {
    clearTimeout(state.soon);
    state.soon = setTimeout(refreshQueues, 300); // a burst of events costs one refresh
  }

  function onEvent(type, data) {
    if (!data || typeof data !== 'object') return;
    if (type === 'handoff' || type === 'resolved') refreshSoon();
    if (type === 'alert') showStatus(`Alert: ${data.summary || 'a spike of similar tickets'}`);
    if (!state.openId || data.conversation_id !== state.openId) return;
    if (type === 'message') {
      appendTranscript(data, true);
      if (data.role === 'customer') refreshSoon();
    } else if (type === 'agent_reply') {
      appendTranscript({ role: 'agent', author: data.agent, text: data.text, at: data.at }, true);
    } else if (type === 'resolved') {
      dom.conversationMeta.textContent += ' · Resolved';
    }
  }

  function start() {
    dom.agentName.value = sessionStorage.getItem(AGENT_NAME) || 'Agent';
    loadPolicy();
    refreshQueues();
    state.stopStream = streamEvents('/v1/events', session.key(), onEvent, fail);
    state.poll = setInterval(refreshQueues, 10000);
  }

  function stop() {
    if (state.stopStream) state.stopStream();
    clearInterval(state.poll);
    clearTimeout(state.soon);
    Object.assign(state, { stopStream: null, queues: [], selected: null, openId: null });
    dom.queues.replaceChildren();
    dom.waiting.replaceChildren(el('h2', { id: 'waiting-title', tabindex: '-1' }, 'Waiting'));
    dom.conversation.hidden = true;
    dom.status.textContent = '';
    dom.error.textContent = '';
  }

  const onSubmit = (form, action) => form.addEventListener('submit', (event) => {
    event.preventDefault();
    action();
  });
  onSubmit(dom.replyForm, sendReply);
  onSubmit(dom.kbForm, searchKb);
  onSubmit(dom.resolveForm, resolve);
  // Enter sends the reply; Shift+Enter is a new line.
  dom.reply.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      dom.replyForm.requestSubmit();
    }
  });

  const session = setupSignin({ onSignIn: start, onSignOut: stop });
})();
