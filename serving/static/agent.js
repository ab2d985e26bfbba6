// The agent inbox: the queue, one conversation, and claim / reply / note / release, over the agent API.
// Customer text is only ever set as textContent: it can never become markup or script.
(function () {
  "use strict";
  var token = sessionStorage.getItem("supportbot-agent-token") || "";
  var openId = null;
  var me = null;
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = String(text);
    return node;
  }

  function say(text) { $("status").textContent = text; }

  function api(method, path, body) {
    var init = { method: method, headers: { Authorization: "Bearer " + token }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch("/api/agent" + path, init).then(function (res) {
      return res.json().catch(function () { return {}; }).then(function (data) {
        if (res.status === 401) signOut("That token was not accepted.");
        if (!res.ok) throw new Error(data.detail || ("HTTP " + res.status));
        return data;
      });
    });
  }

  function waited(since) {
    if (!since) return "";
    var s = Math.max(0, Math.round(Date.now() / 1000 - since));
    return s < 60 ? s + " s" : s < 3600 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
  }

  function loadList() {
    var state = $("state").value;
    return api("GET", "/conversations?state=" + encodeURIComponent(state)).then(function (items) {
      var list = $("list");
      list.textContent = "";
      if (!items.length) list.appendChild(el("li", "meta", "Nothing here."));
      items.forEach(function (c) {
        var button = el("button");
        button.type = "button";
        button.dataset.id = c.id;
        if (c.id === openId) button.setAttribute("aria-current", "true");
        button.appendChild(el("span", "meta", c.channel + " · " + (c.trigger || "") + " · waiting " +
          waited(c.waiting_since) + (c.owner ? " · " + c.owner : "")));
        button.appendChild(el("span", "last", c.last_text || ""));
        button.addEventListener("click", function () { openConversation(c.id); });
        var item = el("li");
        item.appendChild(button);
        list.appendChild(item);
      });
    }).catch(function (err) { say(err.message); });
  }

  function openConversation(id) {
    openId = id;
    $("view").hidden = false;
    return api("GET", "/conversations/" + encodeURIComponent(id)).then(function (c) {
      if (openId !== id) return;
      $("summary").textContent = c.summary + (Object.keys(c.slots || {}).length ?
        "\nSlots: " + JSON.stringify(c.slots) : "");
      var log = $("transcript");
      log.textContent = "";
      c.turns.forEach(function (t) {
        var who = t.role === "user" ? "Customer" : t.role === "bot" ? "Bot" :
          t.role === "note" ? "Note by " + t.author : t.author;
        var turn = el("div", "turn " + t.role);
        turn.appendChild(el("div", "who", who));
        turn.appendChild(el("div", "text", t.text));
        if (t.citations && t.citations.length) {
          turn.appendChild(el("div", "cites", "Sources: " + t.citations.map(function (x) {
            return x.title + " (" + x.source + ":" + x.line + ")";
          }).join("; ")));
        }
        log.appendChild(turn);
      });
      log.scrollTop = log.scrollHeight;
      var mine = c.state === "agent" && c.owner === me;
      $("owner").textContent = c.state === "agent" ? "Owned by " + c.owner : c.state === "queued" ?
        "Waiting for a person" : "With the bot";
      $("claim").hidden = mine;
      $("claim").textContent = c.state === "bot" ? "Take over from the bot" : "Claim";
      $("release").hidden = c.state === "bot" || (c.state === "agent" && !mine);
      $("send").disabled = !mine;
      var buttons = $("list").querySelectorAll("button");
      for (var i = 0; i < buttons.length; i++) {
        buttons[i].setAttribute("aria-current", buttons[i].dataset.id === id ? "true" : "false");
      }
    }).catch(function (err) { say(err.message); });
  }

  function act(method, path, body, done) {
    if (!openId) return;
    var id = openId;
    api(method, "/conversations/" + encodeURIComponent(id) + path, body).then(function (result) {
      say(done(result));
      return Promise.all([loadList(), openConversation(id)]);
    }).catch(function (err) { say(err.message); });
  }

  // Live: the server-sent events feed, read with fetch so the token goes in a header, not the URL.
  function follow() {
    fetch("/api/agent/events", { headers: { Authorization: "Bearer " + token }, cache: "no-store" })
      .then(function (res) {
        if (!res.ok || !res.body) throw new Error("feed refused");
        var reader = res.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) throw new Error("feed closed");
            buffer += decoder.decode(chunk.value, { stream: true });
            var events = buffer.split("\n\n");
            buffer = events.pop();
            var changed = events.some(function (e) { return e.indexOf("data:") === 0; });
            if (changed) {
              loadList();
              if (openId) openConversation(openId);
            }
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { if (token) setTimeout(follow, 2000); });
  }

  function signIn() {
    return api("GET", "/me").then(function (who) {
      me = who.agent;
      sessionStorage.setItem("supportbot-agent-token", token);
      document.body.classList.remove("signed-out");
      $("signin").hidden = true;
      $("whoami").hidden = false;
      $("whoami").textContent = "Signed in as " + me;
      $("state").hidden = $("state-label").hidden = false;
      $("queue").hidden = false;
      follow();
      return loadList();
    });
  }

  function signOut(why) {
    token = "";
    sessionStorage.removeItem("supportbot-agent-token");
    say(why);
    $("signin").hidden = false;
  }

  $("signin").addEventListener("submit", function (ev) {
    ev.preventDefault();
    token = $("token").value.trim();
    signIn().catch(function (err) { say(err.message); });
  });
  $("state").addEventListener("change", loadList);
  $("claim").addEventListener("click", function () {
    act("POST", "/claim", undefined, function () { return "You own this conversation."; });
  });
  $("approve").addEventListener("click", function () {
    act("POST", "/approve", {}, function (result) {
      return result.new ? "Approved for training." : "Already approved for training.";
    });
  });
  $("release").addEventListener("click", function () {
    act("POST", "/release", undefined, function () { return "Back with the bot."; });
  });
  $("actions").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = $("compose").value;
    if (!text.trim()) return;
    act("POST", "/messages", { text: text }, function (r) {
      $("compose").value = "";
      return r.delivered ? "Sent." : "Stored; it goes out when the customer's channel is back.";
    });
  });
  $("note").addEventListener("click", function () {
    var text = $("compose").value;
    if (!text.trim()) return;
    act("POST", "/notes", { text: text }, function () { $("compose").value = ""; return "Note added."; });
  });
  if (token) signIn().catch(function () { signOut("Please sign in."); });
})();
