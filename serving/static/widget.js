/*
 * supportbot web chat widget.
 *
 * Embed with one tag (see docs/WIDGET.md):
 *   <script src="https://BOT-HOST/widget.js" data-title="Northwind support" async></script>
 *
 * Plain JavaScript, no dependencies. Everything is rendered inside a Shadow DOM so the host page's
 * CSS cannot reach in and ours cannot leak out. All dynamic text (user, bot, citations, quick
 * replies, server notices) is inserted with textContent/createTextNode, never parsed as HTML.
 */
(function () {
  "use strict";

  // Loaded twice (two tags, or a tag plus a tag-manager copy)? Keep the first one.
  if (window.SupportBotWidget) return;

  var script = document.currentScript || document.querySelector('script[src*="widget.js"]');
  if (!script || !script.src) return;

  // ---------------------------------------------------------------------------------------------
  // Configuration from the script tag
  // ---------------------------------------------------------------------------------------------

  // The bot lives where this script was served from, not on the embedding page's host.
  var srcUrl = new URL(script.src, document.baseURI);
  var BASE = srcUrl.origin + srcUrl.pathname.replace(/\/widget\.js$/, "").replace(/\/+$/, "");
  var WS_URL = BASE.replace(/^http/, "ws") + "/api/ws";
  var STORAGE_KEY = "supportbot.conversation:" + BASE;

  var STRINGS = {
    en: { open: "Open chat", close: "Close chat", input: "Type your message", send: "Send",
      human: "Talk to a person", typing: "Typing…", handoff: "A person from our team will reply here.",
      reconnecting: "Reconnecting…", notSent: "Not sent", you: "You", sources: "Sources",
      greeting: "Hi! How can we help you today?" },
    de: { open: "Chat öffnen", close: "Chat schließen", input: "Nachricht eingeben", send: "Senden",
      human: "Mit einem Menschen sprechen", typing: "Schreibt…",
      handoff: "Eine Person aus unserem Team antwortet Ihnen hier.",
      reconnecting: "Verbindung wird wiederhergestellt…", notSent: "Nicht gesendet", you: "Sie",
      sources: "Quellen", greeting: "Hallo! Wie können wir Ihnen helfen?" },
    fr: { open: "Ouvrir le chat", close: "Fermer le chat", input: "Saisissez votre message",
      send: "Envoyer", human: "Parler à une personne", typing: "En train d’écrire…",
      handoff: "Une personne de notre équipe vous répondra ici.", reconnecting: "Reconnexion…",
      notSent: "Non envoyé", you: "Vous", sources: "Sources",
      greeting: "Bonjour ! Comment pouvons-nous vous aider ?" },
    es: { open: "Abrir chat", close: "Cerrar chat", input: "Escribe tu mensaje", send: "Enviar",
      human: "Hablar con una persona", typing: "Escribiendo…",
      handoff: "Una persona de nuestro equipo te responderá aquí.", reconnecting: "Reconectando…",
      notSent: "No enviado", you: "Tú", sources: "Fuentes",
      greeting: "¡Hola! ¿En qué podemos ayudarte?" },
    nl: { open: "Chat openen", close: "Chat sluiten", input: "Typ je bericht", send: "Verzenden",
      human: "Met een medewerker praten", typing: "Aan het typen…",
      handoff: "Iemand van ons team antwoordt je hier.", reconnecting: "Opnieuw verbinden…",
      notSent: "Niet verzonden", you: "Jij", sources: "Bronnen",
      greeting: "Hallo! Waarmee kunnen we je helpen?" },
  };

  function pickLang(requested) {
    var candidates = [requested, (navigator.language || "")];
    for (var i = 0; i < candidates.length; i++) {
      var code = String(candidates[i] || "").toLowerCase().split(/[-_]/)[0];
      if (Object.prototype.hasOwnProperty.call(STRINGS, code)) return code;
    }
    return "en";
  }

  var data = script.dataset;
  var LANG = pickLang(data.lang);
  var T = STRINGS[LANG];
  var TITLE = data.title || "Support";
  var GREETING = data.greeting != null ? data.greeting : T.greeting;
  var POSITION = data.position === "left" ? "left" : "right";
  // Validate the colour instead of pasting it into CSS text: setProperty ignores invalid values,
  // but an unchecked string would also silently drop our fallback.
  var COLOR = data.color && window.CSS && CSS.supports("color", data.color) ? data.color : "#2563eb";

  // ---------------------------------------------------------------------------------------------
  // Styles (static; live only inside the shadow root)
  // ---------------------------------------------------------------------------------------------

  var CSS_TEXT = [
    ".root{all:initial;--sb-accent:#2563eb;position:fixed;bottom:20px;z-index:2147483000;",
    "font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;color:#111827}",
    ".root.right{right:20px}.root.left{left:20px}",
    ".root *,.root *::before,.root *::after{box-sizing:border-box}",
    "[hidden]{display:none!important}",
    "button,textarea{font:inherit;color:inherit;margin:0}",
    "button{cursor:pointer}",
    ":focus-visible{outline:3px solid var(--sb-accent);outline-offset:2px}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    ".launcher{display:flex;align-items:center;justify-content:center;position:relative;width:56px;",
    "height:56px;padding:0;border:0;border-radius:50%;background:var(--sb-accent);color:#fff;",
    "box-shadow:0 6px 20px rgba(0,0,0,.25);transition:transform .15s ease}",
    ".launcher:hover{transform:scale(1.06)}",
    ".launcher svg{width:26px;height:26px;fill:none;stroke:currentColor;stroke-width:2;",
    "stroke-linecap:round;stroke-linejoin:round}",
    ".badge{position:absolute;top:2px;right:2px;width:12px;height:12px;border-radius:50%;",
    "background:#ef4444;border:2px solid #fff}",
    ".panel{position:absolute;bottom:72px;width:370px;height:560px;max-height:calc(100vh - 110px);",
    "display:flex;flex-direction:column;background:#fff;border-radius:14px;overflow:hidden;",
    "box-shadow:0 12px 40px rgba(0,0,0,.25);animation:sb-in .18s ease-out}",
    ".right .panel{right:0}.left .panel{left:0}",
    // Transform only: an opacity fade can be caught half-way by screenshots in headless browsers.
    "@keyframes sb-in{from{transform:translateY(10px)}to{transform:none}}",
    ".header{display:flex;align-items:center;gap:8px;padding:12px 12px 12px 16px;",
    "background:var(--sb-accent);color:#fff}",
    ".title{flex:1;margin:0;font-size:16px;font-weight:600;color:inherit;overflow:hidden;",
    "text-overflow:ellipsis;white-space:nowrap}",
    ".close{width:32px;height:32px;padding:0;border:0;border-radius:8px;background:transparent;",
    "color:#fff;font-size:22px;line-height:1}",
    ".close:hover{background:rgba(255,255,255,.18)}",
    ".close:focus-visible{outline-color:#fff;outline-offset:-3px}",
    ".scroll{flex:1;overflow-y:auto;padding:14px 12px;background:#f8fafc}",
    ".log{display:flex;flex-direction:column;gap:8px}",
    ".msg{display:flex;flex-direction:column;max-width:85%}",
    ".msg.user{align-self:flex-end;align-items:flex-end}",
    ".msg.bot{align-self:flex-start;align-items:flex-start}",
    ".bubble{padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere;",
    "word-break:break-word}",
    ".user .bubble{background:var(--sb-accent);color:#fff;border-bottom-right-radius:4px}",
    ".bot .bubble{background:#fff;color:#111827;border:1px solid #e5e7eb;border-bottom-left-radius:4px}",
    ".msg.failed .bubble{background:#e5e7eb;color:#6b7280}",
    ".state{font-size:11px;color:#b91c1c;margin-top:2px}",
    ".chips{display:flex;flex-wrap:wrap;gap:4px;margin-top:4px}",
    ".chip{font-size:11px;padding:2px 8px;border-radius:999px;background:#eef2ff;color:#374151;",
    "border:1px solid #e0e7ff;max-width:100%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}",
    ".chip .src{color:#6b7280}",
    ".note{font-size:12px;color:#4b5563;margin-top:4px;font-style:italic}",
    ".who{font-size:12px;font-weight:600;color:#374151;margin-bottom:2px}",
    ".quick{display:flex;flex-wrap:wrap;gap:6px;align-self:flex-start}",
    ".quick button{padding:6px 12px;border-radius:999px;border:1px solid var(--sb-accent);",
    "background:#fff;color:var(--sb-accent);font-size:13px}",
    ".quick button:hover{background:#f1f5f9}",
    ".system{align-self:center;font-size:12px;color:#6b7280;text-align:center;max-width:90%;",
    "white-space:pre-wrap}",
    ".banner{padding:6px 12px;font-size:12px;text-align:center;background:#fef3c7;color:#92400e}",
    ".typing{display:flex;align-items:center;gap:8px;margin-top:8px;font-size:12px;color:#6b7280}",
    ".dots{display:inline-flex;gap:3px;padding:8px 10px;background:#fff;border:1px solid #e5e7eb;",
    "border-radius:14px}",
    ".dots i{width:6px;height:6px;border-radius:50%;background:#9ca3af;animation:sb-dot 1s infinite}",
    ".dots i:nth-child(2){animation-delay:.15s}.dots i:nth-child(3){animation-delay:.3s}",
    "@keyframes sb-dot{0%,60%,100%{opacity:.3}30%{opacity:1}}",
    ".footer{border-top:1px solid #e5e7eb;padding:8px 10px 10px;background:#fff}",
    ".human{border:0;background:transparent;padding:2px 4px;margin-bottom:6px;font-size:12px;",
    "color:var(--sb-accent);text-decoration:underline}",
    ".row{display:flex;align-items:flex-end;gap:8px}",
    "textarea{flex:1;resize:none;min-height:38px;max-height:118px;overflow-y:auto;padding:8px 10px;",
    "border:1px solid #d1d5db;border-radius:10px;background:#fff;line-height:20px}",
    ".send{width:38px;height:38px;flex:none;display:flex;align-items:center;justify-content:center;",
    "padding:0;border:0;border-radius:10px;background:var(--sb-accent);color:#fff}",
    ".send svg{width:18px;height:18px;fill:currentColor}",
    // Small screens: the open panel is the whole screen.
    "@media (max-width:479.98px){.panel{position:fixed;inset:0;width:100vw;height:100vh;",
    "height:100dvh;max-height:none;border-radius:0}.open .launcher{display:none}}",
    "@media (prefers-reduced-motion:reduce){*,*::before,*::after{animation:none!important;",
    "transition:none!important}}",
  ].join("\n");

  // ---------------------------------------------------------------------------------------------
  // DOM helpers (static structure only; text always through textContent)
  // ---------------------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] != null) node.setAttribute(k, attrs[k]);
    if (text != null) node.textContent = String(text);
    return node;
  }

  function icon(pathD) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", pathD);
    svg.appendChild(path);
    return svg;
  }

  // Host is a custom element name so page rules like `div {…}` don't match it; inline
  // `all: initial !important` beats even !important page rules aimed at it.
  var host = document.createElement("supportbot-widget");
  host.id = "supportbot-widget";
  host.style.setProperty("all", "initial", "important");
  var shadow = host.attachShadow({ mode: "open" });

  // Constructable stylesheets are not blocked by a page CSP without 'unsafe-inline'; <style> is
  // the fallback for older browsers.
  try {
    var sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS_TEXT);
    shadow.adoptedStyleSheets = [sheet];
  } catch (e) {
    shadow.appendChild(el("style", null, CSS_TEXT));
  }

  var root = el("div", { class: "root " + POSITION, lang: LANG });
  root.style.setProperty("--sb-accent", COLOR);

  var launcher = el("button", { type: "button", class: "launcher", "aria-label": T.open,
    "aria-expanded": "false", "aria-controls": "sb-panel" });
  launcher.appendChild(icon("M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z"));
  var badge = el("span", { class: "badge", "aria-hidden": "true", hidden: "" });
  launcher.appendChild(badge);

  var panel = el("div", { id: "sb-panel", class: "panel", role: "dialog", "aria-modal": "false",
    "aria-label": TITLE, hidden: "" });
  var header = el("div", { class: "header" });
  header.appendChild(el("h2", { class: "title" }, TITLE));
  var closeBtn = el("button", { type: "button", class: "close", "aria-label": T.close }, "×");
  header.appendChild(closeBtn);

  var banner = el("div", { class: "banner", role: "status", hidden: "" }, T.reconnecting);
  var scroller = el("div", { class: "scroll" });
  var log = el("div", { class: "log", role: "log", "aria-live": "polite",
    "aria-relevant": "additions" });
  // The typing row is a live status region that stays in the DOM; it is filled and emptied so
  // screen readers announce "Typing…" when it appears.
  var typing = el("div", { class: "typing", role: "status" });
  scroller.appendChild(log);
  scroller.appendChild(typing);

  var footer = el("div", { class: "footer" });
  var humanBtn = el("button", { type: "button", class: "human" }, T.human);
  var row = el("div", { class: "row" });
  var input = el("textarea", { rows: "1", "aria-label": T.input, placeholder: T.input + "…" });
  var sendBtn = el("button", { type: "button", class: "send", "aria-label": T.send });
  sendBtn.appendChild(icon("M3.4 20.4 21 12 3.4 3.6 3.4 10.1 15 12 3.4 13.9z"));
  row.appendChild(input);
  row.appendChild(sendBtn);
  footer.appendChild(humanBtn);
  footer.appendChild(row);

  panel.appendChild(header);
  panel.appendChild(banner);
  panel.appendChild(scroller);
  panel.appendChild(footer);
  // Launcher first: Tab goes from it straight into the open panel.
  root.appendChild(launcher);
  root.appendChild(panel);
  shadow.appendChild(root);

  // ---------------------------------------------------------------------------------------------
  // Conversation state
  // ---------------------------------------------------------------------------------------------

  function storageGet() {
    try { return localStorage.getItem(STORAGE_KEY); } catch (e) { return null; }
  }
  function storageSet(id) {
    try { if (id) localStorage.setItem(STORAGE_KEY, id); else localStorage.removeItem(STORAGE_KEY); }
    catch (e) { /* storage blocked (privacy mode, sandbox): the conversation lasts one page view */ }
  }

  var conversationId = storageGet();
  var renderedTurns = new Set();   // turn ids already on screen (history and live frames)
  var maxTurnId = 0;               // highest rendered turn id: `after=` for catch-up fetches
  var userBubbles = new Map();     // client_message_id -> user message element
  var pending = new Map();         // client_message_id -> text; until its reply arrives
  var provisional = new Map();     // client_message_id -> streaming bot bubble (from deltas)
  var historyChain = Promise.resolve();

  function markRendered(id) {
    if (typeof id !== "number") return;
    renderedTurns.add(id);
    if (id > maxTurnId) maxTurnId = id;
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    var bytes = new Uint8Array(16);
    if (window.crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
    else for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  }

  function scrollDown() { scroller.scrollTop = scroller.scrollHeight; }

  // ---------------------------------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------------------------------

  function clearQuickReplies() {
    var rows = log.querySelectorAll(".quick");
    for (var i = 0; i < rows.length; i++) rows[i].remove();
  }

  function addUserBubble(text, cid) {
    clearQuickReplies();
    var msg = el("div", { class: "msg user" });
    msg.appendChild(el("span", { class: "sr" }, T.you + ": "));
    msg.appendChild(el("div", { class: "bubble" }, text));
    if (cid) { msg.dataset.cid = cid; userBubbles.set(cid, msg); }
    log.appendChild(msg);
    scrollDown();
    return msg;
  }

  function markNotSent(cid) {
    var msg = userBubbles.get(cid);
    pending.delete(cid);
    if (!msg || msg.classList.contains("failed")) return;
    msg.classList.add("failed");
    msg.appendChild(el("div", { class: "state" }, T.notSent));
  }

  function addSystemNotice(text) {
    log.appendChild(el("div", { class: "system" }, text));
    scrollDown();
  }

  // turn: {id?, text, citations, quick_replies, handoff}; `before` lets a final reply take the
  // place of its provisional streaming bubble.
  function addBotBubble(turn, before) {
    clearQuickReplies();
    // A reply written by a person shows their name (turn.author) instead of the bot's.
    var person = typeof turn.author === "string" && turn.author ? turn.author : null;
    var msg = el("div", { class: person ? "msg bot agent" : "msg bot" });
    if (person) msg.appendChild(el("div", { class: "who" }, person));
    msg.appendChild(el("span", { class: "sr" }, (person || TITLE) + ": "));
    msg.appendChild(el("div", { class: "bubble" }, turn.text || ""));
    var cites = Array.isArray(turn.citations) ? turn.citations : [];
    if (cites.length) {
      var chips = el("div", { class: "chips", role: "list", "aria-label": T.sources });
      cites.forEach(function (c) {
        if (!c || typeof c !== "object") return;
        var where = c.source ? String(c.source) + (c.line != null ? ":" + c.line : "") : "";
        var chip = el("span", { class: "chip", role: "listitem", title: where || null },
          c.title || c.id || where);
        if (where && (c.title || c.id)) chip.appendChild(el("span", { class: "src" }, " · " + where));
        chips.appendChild(chip);
      });
      msg.appendChild(chips);
    }
    if (turn.handoff) msg.appendChild(el("div", { class: "note" }, T.handoff));
    if (typeof turn.id === "number") msg.dataset.turn = String(turn.id);
    log.insertBefore(msg, before || null);

    var replies = Array.isArray(turn.quick_replies) ? turn.quick_replies : [];
    if (replies.length) {
      var quick = el("div", { class: "quick" });
      replies.forEach(function (text) {
        var b = el("button", { type: "button" }, text);
        b.addEventListener("click", function () {
          quick.remove();
          send(String(text));
          input.focus();
        });
        quick.appendChild(b);
      });
      log.insertBefore(quick, msg.nextSibling);
    }
    scrollDown();
    return msg;
  }

  function setTyping(on) {
    while (typing.firstChild) typing.firstChild.remove();
    if (!on) return;
    var dots = el("span", { class: "dots", "aria-hidden": "true" });
    dots.appendChild(el("i"));
    dots.appendChild(el("i"));
    dots.appendChild(el("i"));
    typing.appendChild(dots);
    typing.appendChild(el("span", null, T.typing));
    scrollDown();
  }

  // One turn from history or from a live frame; dedupes by turn id and client_message_id.
  function renderTurn(turn) {
    if (!turn || typeof turn.id !== "number" || renderedTurns.has(turn.id)) return;
    var cid = turn.client_message_id;
    if (turn.role === "user") {
      var existing = cid && userBubbles.get(cid);
      // Our own optimistic bubble (the message was stored before a drop) or a new one.
      (existing || addUserBubble(turn.text || "", cid)).dataset.turn = String(turn.id);
      markRendered(turn.id);
    } else {
      showBotTurn(turn);
    }
  }

  // A final bot turn; it takes the place of the streaming bubble for the same message, if any.
  function showBotTurn(turn) {
    var cid = turn.client_message_id;
    var stream = cid && provisional.get(cid);
    addBotBubble(turn, stream || null);
    dropStream(cid);
    // A bot turn carrying the user's client_message_id answers that message.
    if (cid) pending.delete(cid);
    markRendered(turn.id);
  }

  function dropStream(cid) {
    var stream = cid && provisional.get(cid);
    if (stream) { stream.remove(); provisional.delete(cid); }
  }

  function greet() {
    if (GREETING) addBotBubble({ text: GREETING });
  }

  // ---------------------------------------------------------------------------------------------
  // History (REST)
  // ---------------------------------------------------------------------------------------------

  // Serialized so two catch-ups never race; each computes `after` when it actually runs.
  function loadHistory() {
    historyChain = historyChain.then(function () { return fetchHistory(0); });
    return historyChain;
  }

  // The server caps turns per response; keep asking with a higher `after` until a page brings
  // nothing new (one extra, empty request in the common case).
  function fetchHistory(page) {
    var id = conversationId;
    if (!id) return null;
    var before = maxTurnId;
    var url = BASE + "/api/conversations/" + encodeURIComponent(id) + "?after=" + maxTurnId;
    return fetch(url, { credentials: "omit", cache: "no-store" }).then(function (res) {
      if (res.status === 404) {
        // Unknown (expired or deleted) conversation: forget it and start fresh.
        if (conversationId === id) forgetConversation();
        return null;
      }
      if (!res.ok) return null;
      return res.json().then(function (body) {
        if (conversationId !== id || !body || !Array.isArray(body.turns)) return null;
        var turns = body.turns.filter(function (t) { return t && typeof t.id === "number"; });
        turns.sort(function (a, b) { return a.id - b.id; }).forEach(renderTurn);
        if (turns.length && maxTurnId > before && page < 50) return fetchHistory(page + 1);
        return null;
      });
    }).catch(function () { /* offline: the live channel's reconnect will try again */ });
  }

  function forgetConversation() {
    conversationId = null;
    storageSet(null);
    renderedTurns.clear();
    maxTurnId = 0;
  }

  // ---------------------------------------------------------------------------------------------
  // Live channel (WebSocket)
  // ---------------------------------------------------------------------------------------------

  var ws = null;
  var wsReady = false;          // true after `ready` and the catch-up/flush that follows it
  // Frames sent on this socket that have had neither `ack` nor `error` yet, oldest first. The
  // server answers frames in order, so an error without a client_message_id (a frame too large
  // to parse) belongs to the oldest of these.
  var unanswered = [];
  var attempts = 0;             // consecutive failed connections, for backoff
  var reconnectTimer = null;
  var unloading = false;

  function connect() {
    if (ws || unloading) return;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    var url = WS_URL + (conversationId ? "?conversation_id=" + encodeURIComponent(conversationId) : "");
    var sock;
    try { sock = new WebSocket(url); } catch (e) { scheduleReconnect(); return; }
    ws = sock;
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      var frame;
      try { frame = JSON.parse(ev.data); } catch (e) { return; }
      if (frame && typeof frame === "object") handleFrame(frame, sock);
    };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null;
      wsReady = false;
      unanswered = [];
      setTyping(false);
      if (!unloading) scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (reconnectTimer) return;
    banner.hidden = false;
    // 0.5 s, 1 s, 2 s … capped at 10 s, with ±25 % jitter so many tabs don't reconnect in step.
    var delay = Math.min(10000, 500 * Math.pow(2, attempts)) * (0.75 + Math.random() * 0.5);
    attempts++;
    reconnectTimer = setTimeout(function () { reconnectTimer = null; connect(); }, delay);
  }

  function transmit(cid) {
    if (!ws || !wsReady || !pending.has(cid)) return;
    try {
      ws.send(JSON.stringify({ type: "message", text: pending.get(cid), client_message_id: cid }));
      unanswered.push(cid);
    } catch (e) { /* socket closing: the message stays pending and is re-sent after reconnect */ }
  }

  function settle(cid) {
    var i = unanswered.indexOf(cid);
    if (i >= 0) unanswered.splice(i, 1);
  }

  function handleFrame(f, sock) {
    switch (f.type) {
      case "ready":
        var previous = conversationId;
        if (f.conversation_id && f.conversation_id !== previous) {
          // The server did not know our id (or we had none): a new conversation begins. Turn
          // ids of the old one mean nothing any more.
          if (previous) forgetConversation();
          conversationId = String(f.conversation_id);
          storageSet(conversationId);
        }
        attempts = 0;
        banner.hidden = true;
        // Catch up on what we missed (only for a conversation that existed before), then
        // (re-)send everything still pending, oldest first, with the original ids; the server
        // de-duplicates by client_message_id.
        var catchUp = previous && previous === conversationId ? loadHistory() : Promise.resolve();
        catchUp.then(function () {
          if (ws !== sock) return;
          wsReady = true;
          pending.forEach(function (_text, cid) { transmit(cid); });
        });
        break;
      case "ack":
        settle(f.client_message_id);
        var msg = userBubbles.get(f.client_message_id);
        if (msg && typeof f.turn_id === "number") msg.dataset.turn = String(f.turn_id);
        markRendered(f.turn_id);
        break;
      case "typing":
        setTyping(!!f.state);
        break;
      case "delta":
        var cid = f.client_message_id;
        if (!cid || !pending.has(cid)) return;  // late delta for an already final reply
        var stream = provisional.get(cid);
        if (!stream) {
          stream = addBotBubble({ text: "" });
          stream.classList.add("streaming");
          provisional.set(cid, stream);
        }
        stream.querySelector(".bubble").appendChild(document.createTextNode(String(f.text || "")));
        scrollDown();
        break;
      case "reply":
        var rcid = f.client_message_id || null;
        if (rcid) pending.delete(rcid);
        if (typeof f.turn_id === "number" && renderedTurns.has(f.turn_id)) {
          dropStream(rcid);  // already shown (history caught it, or a re-send echoed it)
        } else {
          showBotTurn({ id: f.turn_id, text: f.reply, citations: f.citations, handoff: f.handoff,
            quick_replies: f.quick_replies, client_message_id: rcid, author: f.author });
          if (!panelOpen()) badge.hidden = false;  // unread reply while the panel is closed
        }
        if (!pending.size) setTyping(false);
        break;
      case "held":
        // A person owns the conversation: the message is kept for them and the bot says nothing. Their
        // reply arrives as its own "reply" frame.
        if (f.client_message_id) pending.delete(f.client_message_id);
        if (!pending.size) setTyping(false);
        break;
      case "error":
        if (f.message) addSystemNotice(String(f.message));
        if (f.code === "unknown_conversation") {
          // The conversation vanished server-side: start a new one and re-send what's pending.
          forgetConversation();
          wsReady = false;
          ws = null;
          unanswered = [];
          sock.close();
          connect();
        } else {
          // rate_limited / too_large / invalid: keep the bubble, mark it, never auto-resend.
          var failed = f.client_message_id || unanswered[0];
          settle(failed);
          if (failed) markNotSent(failed);
        }
        break;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Actions
  // ---------------------------------------------------------------------------------------------

  function send(text) {
    text = String(text == null ? "" : text);
    if (!text.trim()) return;
    var cid = newId();
    addUserBubble(text, cid);
    pending.set(cid, text);
    if (ws && wsReady) transmit(cid);
    else connect();  // lazily opens the channel; `ready` flushes the queue
  }

  function panelOpen() { return !panel.hidden; }

  function open() {
    if (panelOpen()) return;
    panel.hidden = false;
    root.classList.add("open");
    badge.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    connect();
    scrollDown();
    input.focus();
  }

  function close() {
    if (!panelOpen()) return;
    var hadFocus = panel.contains(shadow.activeElement);
    panel.hidden = true;
    root.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    if (hadFocus) launcher.focus();
  }

  function submitInput() {
    var text = input.value;
    if (!text.trim()) return;
    input.value = "";
    autoGrow();
    send(text);
  }

  function autoGrow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 118) + "px";  // ~5 lines, then scroll
  }

  launcher.addEventListener("click", function () { if (panelOpen()) close(); else open(); });
  closeBtn.addEventListener("click", function () { close(); launcher.focus(); });
  sendBtn.addEventListener("click", function () { submitInput(); input.focus(); });
  humanBtn.addEventListener("click", function () { send(T.human); input.focus(); });
  input.addEventListener("input", autoGrow);
  input.addEventListener("keydown", function (e) {
    // Enter sends; Shift+Enter is a newline; never send mid-composition (IME users).
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submitInput();
    }
  });
  root.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && panelOpen()) {
      e.stopPropagation();
      close();
      launcher.focus();
    }
  });

  // Don't treat the browser tearing the socket down on navigation as a drop to recover from;
  // a page restored from the back/forward cache reconnects.
  window.addEventListener("pagehide", function () { unloading = true; });
  window.addEventListener("pageshow", function (e) {
    unloading = false;
    if (e.persisted && (pending.size || panelOpen())) connect();
  });
  window.addEventListener("online", function () {
    if (reconnectTimer) { clearTimeout(reconnectTimer); reconnectTimer = null; connect(); }
  });

  // ---------------------------------------------------------------------------------------------
  // Start
  // ---------------------------------------------------------------------------------------------

  window.SupportBotWidget = Object.freeze({ open: open, close: close, send: send });

  greet();
  if (conversationId) loadHistory();  // render the stored conversation; the socket waits for open

  function mount() {
    document.body.appendChild(host);
    if (data.open === "true") open();
  }
  if (document.body) mount();
  else document.addEventListener("DOMContentLoaded", mount);
})();
