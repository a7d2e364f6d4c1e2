// tierline: helpers shared by the chat, the agent console and the dashboard. Plain scripts (no
// modules, no build step): every function here is a global the page scripts use.
'use strict';

const byId = (id) => document.getElementById(id);
/** Elements by id in camelCase: `dom.replyForm` is `#reply-form`. */
const dom = new Proxy({}, { get: (_, name) => byId(String(name).replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)) });
const isNum = (v) => v !== null && v !== undefined && v !== '' && Number.isFinite(Number(v));

/** The Authorization header for `{key}`, `{token}` or a bare string; null without one. */
function bearer(auth) {
  const credential = typeof auth === 'string' ? auth : auth && (auth.key || auth.token);
  return credential ? `Bearer ${credential}` : null;
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    return undefined; // not JSON (a proxy's HTML error page, a plain-text event)
  }
}

/** An Error with the API's `{"error": {code, message, field}}` and the HTTP status. */
function apiError(status, data, fallback) {
  const detail = (data && data.error) || {};
  return Object.assign(new Error(detail.message || fallback || `Request failed (${status})`),
    { status, code: detail.code, field: detail.field });
}

/** Fetches JSON (`options`: {method, body, key | token}); a non-2xx rejects with the server's message. */
async function api(path, options = {}) {
  const headers = { Accept: 'application/json' };
  const auth = bearer(options);
  if (auth) headers.Authorization = auth;
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method: options.method || (body ? 'POST' : 'GET'), headers, body, cache: 'no-store' });
  } catch (_) {
    throw apiError(0, null, 'Cannot reach the server. Check your connection and try again.');
  }
  const text = await response.text();
  const data = text ? parseJson(text) ?? null : null;
  if (!response.ok) throw apiError(response.status, data, `${response.status} ${response.statusText}`.trim());
  return data;
}

/**
 * Server-sent events over fetch (EventSource cannot send an Authorization header): calls
 * `onEvent(type, data)` per event, data parsed as JSON; reconnects 2 s after the stream ends or
 * fails. A 401/403 stops it and calls `onAuthError(err)` (retrying cannot help). Returns stop().
 */
function streamEvents(path, auth, onEvent, onAuthError) {
  let stopped = false;
  let controller = null;
  let timer = null;

  function dispatch(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (!line || line.startsWith(':')) continue; // a comment: keep-alive
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      else if (field === 'data') data.push(value);
    }
    if (!data.length) return;
    const raw = data.join('\n');
    try {
      onEvent(type, parseJson(raw) ?? raw);
    } catch (err) {
      console.error('event handler failed', err); // one bad event must not end the stream
    }
  }

  async function connect() {
    controller = new AbortController();
    const headers = { Accept: 'text/event-stream' };
    if (bearer(auth)) headers.Authorization = bearer(auth);
    try {
      const response = await fetch(path, { headers, signal: controller.signal, cache: 'no-store' });
      if (response.status === 401 || response.status === 403) {
        stopped = true;
        const data = parseJson(await response.text());
        if (onAuthError) onAuthError(apiError(response.status, data));
        return;
      }
      if (response.ok && response.body) {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            dispatch(buffer.slice(0, end));
            buffer = buffer.slice(end + 2);
          }
        }
      }
    } catch (_) {
      // network failure or stop(): reconnect below unless stopped
    }
    if (!stopped) timer = setTimeout(connect, 2000);
  }

  connect();
  return function stop() {
    stopped = true;
    clearTimeout(timer);
    if (controller) controller.abort();
  };
}

// DOM building. Text only ever goes in as text nodes, never through innerHTML, so nothing the
// API returns can inject markup.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'hidden']);

function build(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.setAttribute('class', value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name) && !(node instanceof SVGElement)) node[name] = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** `el('p', {class: 'x', onclick: fn}, 'text', node, [more])`: an HTML element. */
function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// Formatting

/** "45 s", "4 min", "2 h 5 min", "3 d 4 h"; "–" when unknown. */
function fmtDuration(secs) {
  if (!isNum(secs)) return '–';
  const s = Math.max(0, Number(secs));
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  const [big, unit, rest, restUnit] = s < 86400 ? [3600, 'h', 60, 'min'] : [86400, 'd', 3600, 'h'];
  const small = Math.floor((s % big) / rest);
  return `${Math.floor(s / big)} ${unit}${small ? ` ${small} ${restUnit}` : ''}`;
}

/** Milliseconds since the epoch as a local time, with the date when not today. */
function fmtTime(ms) {
  if (!isNum(ms) || ms <= 0) return '–';
  const date = new Date(ms < 1e11 ? ms * 1000 : Number(ms)); // small values are seconds
  const time = { hour: '2-digit', minute: '2-digit' };
  return date.toDateString() === new Date().toDateString()
    ? date.toLocaleTimeString([], time)
    : date.toLocaleString([], { month: 'short', day: 'numeric', ...time });
}

/** 0..1 as "25%" or "33.3%"; "–" for null. */
function fmtPercent(rate) {
  return isNum(rate) ? `${Math.round(Number(rate) * 1000) / 10}%` : '–';
}

/** `account_management` → "account management". */
function humanize(code) {
  return code === null || code === undefined ? '' : String(code).replace(/_/g, ' ');
}

/** `url` if it is http(s) or mailto, else null: a `javascript:` URL must never become a link. */
function safeUrl(url) {
  try {
    const parsed = new URL(String(url), location.href);
    return url && ['http:', 'https:', 'mailto:'].includes(parsed.protocol) ? parsed.href : null;
  } catch (_) {
    return null;
  }
}

/** Help-center Markdown's `**bold**` as <strong> nodes; everything else stays plain text. */
function richText(text) {
  return text.split('**').map((part, i) => (i % 2 === 1 ? el('strong', null, part) : part));
}

/** One `.msg` ({role, author, text, at, citations}); `customerName`: "You" or "Customer". */
function messageEl(message, customerName) {
  const role = ['customer', 'ai', 'agent', 'system'].includes(message.role) ? message.role : 'system';
  const author = { customer: customerName, ai: 'Assistant', agent: message.author || 'Agent', system: 'Notice' }[role];
  const citations = (message.citations || []).filter((c) => c && c.title);
  return el('div', { class: `msg ${role}` },
    el('div', { class: 'msg-meta' },
      role === 'ai' && el('span', { class: 'badge', title: 'Written by an AI assistant' }, 'AI'),
      el('span', { class: 'author' }, author),
      message.at ? el('time', null, fmtTime(message.at)) : null),
    el('div', { class: 'msg-text' }, richText(message.text || '')),
    citations.length > 0 && el('div', { class: 'citations' },
      el('span', { class: 'label' }, 'Sources:'), citations.map(citationLink)));
}

function citationLink(citation) {
  const href = safeUrl(citation.url);
  return el('a', {
    class: 'citation',
    href: href || '#',
    target: href && '_blank',
    rel: href && 'noopener noreferrer',
    title: citation.heading,
    onclick: !href && ((event) => event.preventDefault()), // no URL: names the article, goes nowhere
  }, citation.title);
}

/** What the page showed lately, so live events echoing it (its own message; an agent reply
 * sent as both `message` and `agent_reply`) are not shown twice. */
function recentSet(ttlMs = 15000) {
  const seen = new Map();
  return {
    remember: (key, node) => seen.set(key, { at: Date.now(), node }),
    get(key) {
      const entry = seen.get(key);
      return entry && Date.now() - entry.at < ttlMs ? entry : null;
    },
  };
}

/**
 * The console's and dashboard's sign-in (`#signin`; `#app` hidden until signed in), the key
 * kept in sessionStorage (`tierline.key`). Returns {key(), signOut(message), fail(err)}:
 * `fail` signs out on a 401/403, showing why, and returns whether it did.
 */
function setupSignin({ onSignIn, onSignOut }) {
  const STORAGE = 'tierline.key';
  const [form, input, error, app, signout] = ['signin', 'key-input', 'signin-error', 'app', 'signout'].map(byId);
  let current = null;

  function show(signedIn, message) {
    app.hidden = !signedIn;
    form.hidden = signedIn;
    if (signout) signout.hidden = !signedIn;
    error.textContent = message || '';
  }

  function enter(key) {
    current = key;
    show(true);
    onSignIn(key);
  }

  function signOut(message) {
    sessionStorage.removeItem(STORAGE);
    const was = current;
    current = null;
    if (was) onSignOut();
    show(false, message);
    input.value = '';
    input.focus();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = 'Enter your API key.';
      input.focus();
      return;
    }
    sessionStorage.setItem(STORAGE, key);
    enter(key);
  });
  if (signout) signout.addEventListener('click', () => signOut(''));

  // On the next microtask, so `onSignIn` can already use the handle returned below.
  const stored = sessionStorage.getItem(STORAGE);
  queueMicrotask(() => (stored ? enter(stored) : signOut('')));

  return {
    key: () => current,
    signOut,
    fail(err) {
      const refused = !!err && (err.status === 401 || err.status === 403);
      if (refused) signOut(err.message);
      return refused;
    },
  };
}
