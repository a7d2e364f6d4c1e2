// tierline lead dashboard (/dashboard): support metrics and charts, calibration, alerts, accounts
// at risk and the label review list. Each panel loads on its own, so one failing call leaves the
// others working.
'use strict';

(function dashboard() {
  const state = { pending: new Set(), seq: {} };
  const call = (path, options = {}) => api(path, { ...options, key: session.key() });
  const fixed = (digits) => (v) => (isNum(v) ? Number(v).toFixed(digits) : '–');
  const [fmtCount, fmtCsat, fmtThreshold] = [fixed(0), fixed(1), fixed(2)];

  const COLUMNS = {
    conversations: ['Conversations', fmtCount],
    escalation_rate: ['Escalation rate', fmtPercent],
    ai_resolution_rate: ['AI resolution rate', fmtPercent],
    time_to_human_p50_secs: ['Time to human p50', fmtDuration],
    time_to_human_p90_secs: ['Time to human p90', fmtDuration],
    csat_ai_resolved: ['CSAT AI-resolved', fmtCsat],
    csat_escalated: ['CSAT escalated', fmtCsat],
    re_escalation_rate: ['Re-escalation rate', fmtPercent],
    first_contact_resolution_after_escalation: ['First-contact resolution after escalation', fmtPercent],
    over_escalation_rate: ['Over-escalation rate', fmtPercent],
  };
  const HEADLINE = ['conversations', 'escalation_rate', 'ai_resolution_rate', 'time_to_human_p50_secs',
    'csat_ai_resolved', 'csat_escalated', 'over_escalation_rate'];

  // Each panel: the element it renders into (and errors go to), its renderer, its API path.
  const PANELS = {
    metrics: ['headline', renderMetrics, () => `/v1/metrics/support?window=${encodeURIComponent(dom.window.value)}`],
    calibration: ['calibration', renderCalibration, () => '/v1/calibration?window=all'],
    alerts: ['alerts', renderAlerts, () => '/v1/alerts?active=true&limit=20'],
    atRisk: ['atRisk', renderAtRisk, () => '/v1/accounts/at-risk'],
    feedback: ['feedback', renderFeedback, () => '/v1/feedback?status=pending&limit=50'],
  };

  /** Loads one panel; `automatic` refreshes skip the review list while a label is being typed. */
  async function refresh(name, automatic) {
    const [id, render, path] = PANELS[name];
    const target = dom[id];
    if (automatic && name === 'feedback' && (target.contains(document.activeElement) || target.querySelector('.relabel-input'))) return;
    const seq = (state.seq[name] = (state.seq[name] || 0) + 1); // the newest answer wins
    try {
      const data = await call(path());
      if (seq !== state.seq[name]) return;
      render(data || {});
    } catch (err) {
      if (seq !== state.seq[name] || session.fail(err)) return;
      target.replaceChildren(el('p', { class: 'notice error' }, `Could not load: ${err.message}`));
    }
  }

  const refreshAll = (automatic) => Object.keys(PANELS).forEach((name) => refresh(name, automatic));

  // Metrics: cards, table, charts

  function renderMetrics(report) {
    const overall = report.overall || {};
    const byQueue = Object.entries(report.by_queue || {});
    dom.headline.replaceChildren(...HEADLINE.map((metric) => el('div', { class: 'card', dataset: { metric } },
      el('div', { class: 'value' }, COLUMNS[metric][1](overall[metric])),
      el('div', { class: 'label' }, COLUMNS[metric][0]))));

    const row = (name, queue, m) => el('tr', { dataset: { queue } }, el('th', { scope: 'row' }, name),
      Object.entries(COLUMNS).map(([metric, [, fmt]]) => el('td', { class: 'num', dataset: { metric } }, fmt(m[metric]))));
    dom.metrics.replaceChildren(
      el('caption', null, `Support metrics, ${dom.window.selectedOptions[0].text.toLowerCase()}`),
      el('thead', null, el('tr', null, el('th', { scope: 'col' }, 'Queue'),
        Object.values(COLUMNS).map(([title]) => el('th', { scope: 'col', class: 'num' }, title)))),
      el('tbody', null, row('Overall', 'overall', overall), byQueue.map(([q, m]) => row(humanize(q), q, m || {}))));

    [[dom.chartEscalation, 'Escalation rate', 'escalation_rate'], [dom.chartResolution, 'AI resolution rate', 'ai_resolution_rate']]
      .forEach(([svg, name, rate]) => lineChart(svg, `${name} over time`, name, (report.series || []).map((p) => ({ ...p, value: p[rate] }))));

    const groups = byQueue.map(([queue, m]) => ({
      label: humanize(queue),
      bars: [['p50', m.time_to_human_p50_secs], ['p90', m.time_to_human_p90_secs]]
        .map(([name, value], i) => ({ name, value, text: fmtDuration(value), series: i + 1 })),
    })).filter((g) => g.bars.some((b) => isNum(b.value)));
    const max = 1.15 * Math.max(60, ...groups.flatMap((g) => g.bars.map((b) => Number(b.value) || 0)));
    barChart(dom.chartTimeToHuman, 'Time to a person by queue (p50 and p90)', 'Time to a person', 'Queue', groups, max,
      [0, 0.5, 1].map((f) => ({ value: max * f, label: fmtDuration(max * f) })), ['p50', 'p90']);

    const csat = [['AI-resolved', overall.csat_ai_resolved], ['Escalated', overall.csat_escalated]]
      .map(([label, value], i) => ({ label, bars: [{ name: 'mean', value, text: fmtCsat(value), series: i + 1 }] }));
    barChart(dom.chartCsat, 'CSAT: AI-resolved vs escalated', 'Mean CSAT (1-5)', 'Conversations', csat, 5,
      [0, 1, 2, 3, 4, 5].map((v) => ({ value: v, label: String(v) })), []);
  }

  // Inline SVG charts. Each plot area is a nested <svg> viewport, so marks use local coordinates.

  const svgEl = (tag, attrs, ...children) => build(document.createElementNS('http://www.w3.org/2000/svg', tag), attrs, children);
  const W = 480;
  const H = 250;
  const M = { l: 56, r: 14, t: 26, b: 46 };
  const PW = W - M.l - M.r;
  const PH = H - M.t - M.b;

  /** Clears `svg` for a new drawing; false (after writing "No data yet") when there is no data. */
  function frame(svg, title, summary) {
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('aria-label', `${title}: ${summary || 'No data yet'}`);
    svg.replaceChildren(svgEl('title', null, title));
    if (!summary) svg.append(svgEl('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No data yet'));
    return !!summary;
  }

  /** Grid lines and labels for `ticks` ({at: 0..1, label}), the axes and their titles; returns the plot area. */
  function axes(svg, ticks, yTitle, xTitle) {
    for (const tick of ticks) {
      const y = M.t + PH - tick.at * PH;
      svg.append(svgEl('line', { x1: M.l, x2: M.l + PW, y1: y, y2: y, class: 'grid' }),
        svgEl('text', { x: M.l - 6, y: y + 4, 'text-anchor': 'end' }, tick.label));
    }
    const area = svgEl('svg', { x: M.l, y: M.t, width: PW, height: PH, overflow: 'visible' });
    svg.append(
      svgEl('line', { x1: M.l, x2: M.l, y1: M.t, y2: M.t + PH, class: 'axis' }),
      svgEl('line', { x1: M.l, x2: M.l + PW, y1: M.t + PH, y2: M.t + PH, class: 'axis' }),
      svgEl('text', { x: 12, y: M.t + PH / 2, 'text-anchor': 'middle', class: 'axis-title', transform: `rotate(-90 12 ${M.t + PH / 2})` }, yTitle),
      svgEl('text', { x: M.l + PW / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-title' }, xTitle),
      area);
    return area;
  }

  /** An x-axis label; a shortened one keeps the full text as its tooltip. */
  const label = (x, text, anchor = 'middle', full = text) =>
    svgEl('text', { x, y: M.t + PH + 16, 'text-anchor': anchor }, text, full !== text && svgEl('title', null, full));

  function lineChart(svg, title, yTitle, points) {
    const known = points.filter((p) => isNum(p.value));
    if (!frame(svg, title, known.length && `latest ${fmtPercent(known[known.length - 1].value)}, ${points.length} periods`)) return;
    const area = axes(svg, [0, 0.25, 0.5, 0.75, 1].map((at) => ({ at, label: fmtPercent(at) })), yTitle, 'Time');
    const n = points.length;
    const x = (i) => (n === 1 ? PW / 2 : (i / (n - 1)) * PW).toFixed(1);
    const y = (v) => (PH - Math.max(0, Math.min(1, Number(v))) * PH).toFixed(1);
    // A period without conversations has no rate: the line breaks there instead of dropping to 0.
    let run = [];
    const flush = () => {
      if (run.length > 1) area.append(svgEl('polyline', { points: run.join(' '), class: 'line' }));
      run = [];
    };
    points.forEach((p, i) => {
      if (!isNum(p.value)) return flush();
      run.push(`${x(i)},${y(p.value)}`);
      area.append(svgEl('circle', { cx: x(i), cy: y(p.value), r: 3.5, class: 'dot' },
        svgEl('title', null, `${fmtTime(p.from)}: ${fmtPercent(p.value)}`)));
    });
    flush();
    svg.append(label(M.l, fmtTime(points[0].from), 'start'), label(M.l + PW, fmtTime(points[n - 1].to), 'end'));
  }

  /** groups: [{label, bars: [{name, value, text, series}]}]; ticks: [{value, label}] up to `max`. */
  function barChart(svg, title, yTitle, xTitle, groups, max, ticks, legend) {
    const summary = groups.some((g) => g.bars.some((b) => isNum(b.value)))
      && groups.map((g) => `${g.label} ${g.bars.map((b) => `${b.name} ${b.text}`).join(', ')}`).join('; ');
    if (!frame(svg, title, summary)) return;
    const area = axes(svg, ticks.map((t) => ({ at: t.value / max, label: t.label })), yTitle, xTitle);
    const groupWidth = PW / groups.length;
    const perGroup = Math.max(...groups.map((g) => g.bars.length));
    const barWidth = Math.min(48, (groupWidth * 0.75) / perGroup);
    groups.forEach((group, gi) => {
      const left = gi * groupWidth + (groupWidth - barWidth * perGroup) / 2;
      group.bars.forEach((bar, bi) => {
        const bx = left + bi * barWidth;
        const height = isNum(bar.value) ? (Math.min(Number(bar.value), max) / max) * PH : 0;
        area.append(svgEl('rect', { x: bx + 1, y: PH - height, width: barWidth - 2, height, class: `series-${bar.series}` },
          svgEl('title', null, `${group.label}, ${bar.name}: ${bar.text}`)));
        // The value over its bar while it fits; narrow bars keep it in the tooltip.
        if (barWidth >= 30) area.append(svgEl('text', { x: bx + barWidth / 2, y: PH - height - 4, 'text-anchor': 'middle' }, bar.text));
      });
      const room = Math.max(3, Math.floor(groupWidth / 7));
      const text = group.label.length > room ? `${group.label.slice(0, room - 1)}…` : group.label;
      svg.append(label(M.l + (gi + 0.5) * groupWidth, text, 'middle', group.label));
    });
    legend.forEach((name, i) => {
      const lx = W - M.r - (legend.length - i) * 60;
      svg.append(svgEl('rect', { x: lx, y: 6, width: 12, height: 12, class: `series-${i + 1}` }),
        svgEl('text', { x: lx + 16, y: 16 }, name));
    });
  }

  // Calibration, alerts, accounts

  function renderCalibration(report) {
    const signals = report.signals || [];
    dom.calibration.replaceChildren(signals.length
      ? el('div', { class: 'table-wrap' }, el('table', null,
        el('caption', null, `Replayed over ${fmtCount(report.conversations)} conversations (${fmtCount(report.with_verdict)} with a known outcome)`),
        el('thead', null, el('tr', null, ['Signal', 'Current threshold', 'Suggested threshold', 'Suggestion']
          .map((t) => el('th', { scope: 'col' }, t)))),
        el('tbody', null, signals.map((s) => el('tr', { class: 'signal', dataset: { signal: s.signal } },
          el('th', { scope: 'row' }, humanize(s.signal)),
          el('td', { class: 'num current' }, fmtThreshold(s.current_threshold)),
          el('td', { class: 'num suggested' }, fmtThreshold(s.suggested_threshold)),
          el('td', { class: 'suggestion' }, s.suggestion || ''))))))
      : el('p', { class: 'empty' }, 'Not enough decisions to calibrate yet.'));
  }

  const list = (items, render, emptyText) =>
    (items.length ? el('ul', { class: 'plain' }, items.map(render)) : el('p', { class: 'empty' }, emptyText));
  const tags = (name, items) => items && items.length > 0
    && el('p', { class: name.toLowerCase() }, `${name}: `, items.map((t) => el('span', { class: 'tag' }, t)));

  function renderAlerts(data) {
    dom.alerts.replaceChildren(list(data.alerts || [], (a) => el('li', { class: 'alert-item' },
      el('h3', { class: 'summary' }, a.summary || 'A spike of similar tickets'),
      el('p', { class: 'count' }, `${fmtCount(a.count)} tickets vs a baseline of ${fixed(1)(a.baseline)}`,
        a.raised_at ? ` · since ${fmtTime(a.raised_at)}` : ''),
      tags('Accounts', a.accounts),
      tags('Terms', a.terms),
      (a.examples || []).length > 0 && el('ul', { class: 'examples' }, a.examples.slice(0, 3).map((x) => el('li', null,
        el('q', null, x.text || ''), ' ',
        el('span', { class: 'hint' }, [x.ticket_id, x.account, x.at_ms && fmtTime(x.at_ms)].filter(Boolean).join(' · '))))),
    ), 'No active alerts'));
  }

  function renderAtRisk(data) {
    dom.atRisk.replaceChildren(list(data.accounts || [], (a) => el('li', { class: 'account-item' },
      el('strong', { class: 'name' }, a.account), ' ',
      el('span', { class: 'score' }, `health ${fmtCount(a.score)}/100`),
      (a.reasons || []).length > 0 && el('ul', { class: 'reasons' }, a.reasons.map((r) => el('li', null, r))),
      a.last_contact_at ? el('p', { class: 'hint' }, `Last contact ${fmtTime(a.last_contact_at)}`) : null,
    ), 'No accounts at risk'));
  }

  // Label review: accept, reject, or relabel (accepted with a new label). Reviewed rows leave.

  function renderFeedback(data) {
    dom.feedback.replaceChildren(list(data.examples || [], feedbackRow, 'Nothing to review'));
  }

  function feedbackRow(example) {
    const id = String(example.id);
    const textId = `feedback-text-${id}`;
    const button = (cls, text, onclick) => el('button', { type: 'button', class: cls, 'aria-describedby': textId, onclick }, text);
    const row = el('li', { class: 'feedback-row', dataset: { id } },
      el('p', { class: 'text', id: textId }, example.text || ''),
      el('p', { class: 'hint' },
        'Label: ', el('strong', { class: 'label' }, example.label || '–'),
        ' · Predicted: ', el('span', { class: 'predicted' }, example.predicted || '–'),
        ' · ', el('span', { class: 'kind' }, humanize(example.kind)),
        example.head ? ` (${example.head})` : ''),
      el('div', { class: 'actions' },
        button('accept', 'Accept', () => review(row, { status: 'accepted' })),
        button('reject secondary', 'Reject', () => review(row, { status: 'rejected' })),
        button('relabel secondary', 'Relabel', () => openRelabel(row, example))));
    return row;
  }

  function openRelabel(row, example) {
    if (row.querySelector('.relabel-input')) return row.querySelector('.relabel-input').focus();
    const inputId = `relabel-${row.dataset.id}`;
    const input = el('input', { type: 'text', id: inputId, class: 'relabel-input', value: example.label || '', autocomplete: 'off' });
    // A form, so Enter in the input saves.
    const box = el('form', { class: 'relabel-form inline-row' },
      el('label', { for: inputId, class: 'sr-only' }, 'New label'), input,
      el('button', { type: 'submit', class: 'relabel-save' }, 'Save'));
    box.addEventListener('submit', (event) => {
      event.preventDefault();
      if (input.value.trim()) review(row, { status: 'accepted', label: input.value.trim() });
      else input.focus();
    });
    input.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      box.remove();
      row.querySelector('.relabel').focus();
    });
    row.append(box);
    input.focus();
    input.select();
  }

  async function review(row, body) {
    const buttons = row.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await call(`/v1/feedback/${encodeURIComponent(row.dataset.id)}`, { method: 'POST', body });
      const next = row.nextElementSibling || row.previousElementSibling;
      const parent = row.parentElement;
      row.remove();
      if (!parent.children.length) renderFeedback({});
      if (next) next.querySelector('.accept').focus(); // keep keyboard users in the list
    } catch (err) {
      buttons.forEach((b) => { b.disabled = false; });
      if (!session.fail(err)) dom.error.textContent = err.message;
    }
  }

  // Live: events refresh the panels they affect (debounced), and everything every 30 s.

  const AFFECTED = { alert: ['alerts'], handoff: ['metrics'], resolved: ['metrics', 'atRisk', 'feedback'] };

  function onEvent(type) {
    (AFFECTED[type] || []).forEach((name) => state.pending.add(name));
    if (!state.pending.size) return;
    clearTimeout(state.debounce);
    state.debounce = setTimeout(() => {
      const names = [...state.pending];
      state.pending.clear();
      names.forEach((name) => refresh(name, true));
    }, 1000);
  }

  function start() {
    refreshAll(false);
    state.stopStream = streamEvents('/v1/events', session.key(), onEvent, (err) => session.fail(err));
    state.timer = setInterval(() => refreshAll(true), 30000);
  }

  function stop() {
    if (state.stopStream) state.stopStream();
    clearInterval(state.timer);
    clearTimeout(state.debounce);
    state.pending.clear();
    dom.error.textContent = '';
  }

  dom.window.addEventListener('change', () => {
    dom.error.textContent = '';
    refreshAll(false);
  });

  const session = setupSignin({ onSignIn: start, onSignOut: stop });
})();
