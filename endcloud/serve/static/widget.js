/* endcloud chat widget: one script tag on the shop's site adds a chat box (endcloud/serve/widget.py).
 *
 *   <script src="https://chat.shop.example/widget.js" data-lang="zh" data-token="ect1.…" async></script>
 *   window.EndcloudWidget.setToken("ect1.…")   // the customer logged in (or null: logged out)
 *
 * Plain ES2017, no build step, no dependency; the box lives in a shadow root, so the shop's CSS
 * and ours never meet. Replies stream from /v1/chat/completions (SSE); votes and corrections go
 * to /v1/feedback; the session id and the conversation stay in localStorage for the next visit.
 */
(function () {
  "use strict";
  if (window.EndcloudWidget) return; // the script included twice: one box

  var STRINGS = {
    en: {
      title: "Customer service", launcher: "Chat with us", close: "Close", newChat: "New chat",
      placeholder: "Type your question…", send: "Send", greeting: "Hello! How can I help you?",
      up: "Helpful", down: "Not helpful", correct: "Suggest a better answer",
      correctionPlaceholder: "What should the answer have been?", submit: "Send correction",
      thanks: "Thanks for your feedback", corrected: "Thanks, your correction was sent",
      handoff: "Getting you a better answer…", error: "Sorry, something went wrong: ", typing: "…"
    },
    zh: {
      title: "在线客服", launcher: "联系客服", close: "关闭", newChat: "新对话",
      placeholder: "请输入您的问题…", send: "发送", greeting: "您好！请问有什么可以帮您？",
      up: "有帮助", down: "没帮助", correct: "提供更好的回答",
      correctionPlaceholder: "正确的回答应该是？", submit: "提交更正",
      thanks: "感谢您的反馈", corrected: "感谢，您的更正已提交",
      handoff: "正在为您请更专业的解答…", error: "抱歉，出错了：", typing: "…"
    }
  };
  var MAX_KEPT = 100; // messages kept in localStorage per conversation

  var script = document.currentScript;
  var opt = readOptions();
  var S = STRINGS[opt.lang];
  var state = load();
  var busy = false;

  function readOptions() {
    var o = {};
    var ds = (script && script.dataset) || {};
    ["token", "apiKey", "lang", "model", "server", "title", "open", "mode"].forEach(function (k) {
      if (ds[k]) o[k] = ds[k];
    });
    if (o.mode === "inline" && location.hash.length > 1) {
      // /chat#token=…&lang=en: the part after # never reaches a server, nor its logs
      new URLSearchParams(location.hash.slice(1)).forEach(function (v, k) {
        o[k === "api-key" || k === "key" ? "apiKey" : k] = v;
      });
    }
    var origin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
    o.server = (o.server || origin).replace(/\/+$/, "");
    o.lang = String(o.lang || navigator.language || "en").toLowerCase().indexOf("zh") === 0 ? "zh" : "en";
    o.model = o.model || "endcloud";
    o.token = o.token || null;
    return o;
  }

  // -- who is chatting, and where their conversation is kept ------------------------------
  function customerOf(token) {
    if (!token) return "~anon";
    try { // ect1.<base64url(id)>.<expiry>.<signature>: the id is readable, only the server can check it
      var b = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var raw = atob(b + "===".slice((b.length + 3) % 4));
      return decodeURIComponent(Array.prototype.map.call(raw, function (c) {
        return "%" + ("0" + c.charCodeAt(0).toString(16)).slice(-2);
      }).join(""));
    } catch (e) {
      return "~token";
    }
  }
  function storageKey() { return "endcloud-widget|" + opt.server + "|" + customerOf(opt.token); }
  function load() {
    try {
      var s = JSON.parse(localStorage.getItem(storageKey()) || "null");
      if (s && Array.isArray(s.msgs)) return s;
    } catch (e) { /* storage blocked or corrupt: start afresh */ }
    return { sid: null, msgs: [] };
  }
  function save() {
    try {
      state.msgs = state.msgs.slice(-MAX_KEPT);
      localStorage.setItem(storageKey(), JSON.stringify(state));
    } catch (e) { /* private mode: the conversation lasts as long as the page */ }
  }

  function headers() {
    var h = { "Content-Type": "application/json" };
    if (opt.apiKey) {
      h.Authorization = "Bearer " + opt.apiKey;
      if (opt.token) h["X-Endcloud-Customer"] = opt.token;
    } else if (opt.token) {
      h.Authorization = "Bearer " + opt.token;
    }
    return h;
  }
  async function errorText(r) {
    try { var j = await r.json(); return (j.error && j.error.message) || ("HTTP " + r.status); }
    catch (e) { return "HTTP " + r.status; }
  }

  // -- the box ---------------------------------------------------------------------------
  var CSS = [
    ":host{all:initial;font:14px/1.45 system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;color:#1f2328}",
    ".launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;border:0;border-radius:24px;padding:12px 18px;",
    "background:#2458d6;color:#fff;font:inherit;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.2)}",
    ".panel{display:flex;flex-direction:column;background:#fff;border:1px solid #d0d7de;border-radius:12px;overflow:hidden}",
    ".floating{position:fixed;right:20px;bottom:76px;z-index:2147483000;width:360px;max-width:calc(100vw - 40px);",
    "height:520px;max-height:calc(100vh - 100px);box-shadow:0 8px 28px rgba(0,0,0,.18)}",
    ".inline{position:fixed;inset:0;border:0;border-radius:0}",
    ".panel[hidden]{display:none}",
    "header{display:flex;align-items:center;gap:8px;padding:10px 12px;background:#2458d6;color:#fff}",
    "header .title{flex:1;font-weight:600}",
    "header button{background:transparent;border:1px solid rgba(255,255,255,.5);color:#fff;border-radius:6px;font:inherit;cursor:pointer;padding:2px 8px}",
    ".log{flex:1;overflow-y:auto;margin:0;padding:12px;list-style:none;display:flex;flex-direction:column;gap:8px;background:#f6f8fa}",
    ".msg{max-width:85%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-break:break-word}",
    ".user{align-self:flex-end;background:#2458d6;color:#fff}",
    ".assistant{align-self:flex-start;background:#fff;border:1px solid #d0d7de}",
    ".assistant.error{border-color:#cf222e;color:#cf222e}",
    ".note{font-size:12px;color:#656d76;margin-top:4px}",
    ".actions{display:flex;gap:6px;margin-top:6px}",
    ".actions button{border:1px solid #d0d7de;background:#fff;border-radius:6px;cursor:pointer;font:inherit;font-size:12px;padding:1px 6px}",
    ".actions button[aria-pressed=true]{background:#ddf4ff;border-color:#2458d6}",
    ".correction{display:flex;flex-direction:column;gap:4px;margin-top:6px}",
    ".correction[hidden]{display:none}",
    "textarea{font:inherit;border:1px solid #d0d7de;border-radius:8px;padding:6px;resize:none}",
    "form.ask{display:flex;gap:8px;padding:10px;border-top:1px solid #d0d7de;background:#fff}",
    "form.ask textarea{flex:1}",
    "form.ask button,.correction button{border:0;border-radius:8px;background:#2458d6;color:#fff;font:inherit;cursor:pointer;padding:6px 12px}",
    "button:disabled{opacity:.5;cursor:default}"
  ].join("");

  var inline = opt.mode === "inline";
  var host = document.createElement("div");
  host.id = "endcloud-widget";
  host.setAttribute("lang", opt.lang);
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" + CSS + "</style>" +
    (inline ? "" : "<button class='launcher' type='button'></button>") +
    "<section class='panel " + (inline ? "inline" : "floating") + "' role='dialog'" + (inline ? "" : " hidden") + ">" +
    "<header><span class='title'></span><button class='new' type='button'></button>" +
    (inline ? "" : "<button class='close' type='button'>×</button>") + "</header>" +
    "<ol class='log' aria-live='polite'></ol>" +
    "<form class='ask'><textarea name='q' rows='2' maxlength='4000'></textarea><button class='send' type='submit'></button></form>" +
    "</section>";
  var $ = function (sel) { return root.querySelector(sel); };
  var panel = $(".panel"), log = $(".log"), form = $("form.ask"), input = form.q, sendBtn = $(".send");
  $(".title").textContent = opt.title || S.title;
  panel.setAttribute("aria-label", opt.title || S.title);
  $(".new").textContent = S.newChat;
  input.placeholder = S.placeholder;
  sendBtn.textContent = S.send;
  if (!inline) {
    $(".launcher").textContent = S.launcher;
    $(".launcher").addEventListener("click", function () { toggle(panel.hidden); });
    $(".close").setAttribute("aria-label", S.close);
    $(".close").addEventListener("click", function () { toggle(false); });
  }
  $(".new").addEventListener("click", function () {
    if (busy) return;
    state = { sid: null, msgs: [] };
    save();
    renderAll();
  });
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var q = input.value.trim();
    if (q && !busy) { input.value = ""; ask(q); }
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); form.requestSubmit(); }
  });

  function toggle(open) {
    panel.hidden = !open;
    if (open) { input.focus(); log.scrollTop = log.scrollHeight; }
  }

  function renderAll() {
    log.textContent = "";
    if (!state.msgs.length) {
      var hello = document.createElement("li");
      hello.className = "msg assistant greeting";
      hello.textContent = S.greeting;
      log.appendChild(hello);
    }
    state.msgs.forEach(function (m) { log.appendChild(renderMsg(m)); });
    log.scrollTop = log.scrollHeight;
  }

  function renderMsg(m, li) {
    li = li || document.createElement("li");
    li.textContent = "";
    li.className = "msg " + m.role + (m.error ? " error" : "") + (m.pending ? " pending" : " done");
    if (m.id) li.dataset.messageId = m.id;
    var text = document.createElement("div");
    text.className = "text";
    text.textContent = m.text || (m.pending ? S.typing : "");
    li.appendChild(text);
    if (m.note) {
      var note = document.createElement("div");
      note.className = "note";
      note.textContent = m.note;
      li.appendChild(note);
    }
    if (m.role === "assistant" && m.id && !m.pending && !m.error) li.appendChild(actions(m, li));
    return li;
  }

  function actions(m, li) {
    var box = document.createElement("div");
    var bar = document.createElement("div");
    bar.className = "actions";
    [["up", 1, "👍"], ["down", -1, "👎"]].forEach(function (b) {
      var btn = document.createElement("button");
      btn.type = "button";
      btn.className = b[0];
      btn.textContent = b[2];
      btn.title = S[b[0]];
      btn.setAttribute("aria-label", S[b[0]]);
      btn.setAttribute("aria-pressed", String(m.vote === b[1]));
      btn.addEventListener("click", function () { feedback(m, li, b[1], null); });
      bar.appendChild(btn);
    });
    var fix = document.createElement("button");
    fix.type = "button";
    fix.className = "correct";
    fix.textContent = S.correct;
    bar.appendChild(fix);
    box.appendChild(bar);
    var cf = document.createElement("form");
    cf.className = "correction";
    cf.hidden = true;
    cf.innerHTML = "<textarea rows='3' maxlength='8000'></textarea><button type='submit'></button>";
    cf.querySelector("textarea").placeholder = S.correctionPlaceholder;
    cf.querySelector("button").textContent = S.submit;
    fix.addEventListener("click", function () { cf.hidden = !cf.hidden; if (!cf.hidden) cf.querySelector("textarea").focus(); });
    cf.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var text = cf.querySelector("textarea").value.trim();
      if (text) feedback(m, li, -1, text);
    });
    box.appendChild(cf);
    return box;
  }

  // -- talking to the server -------------------------------------------------------------
  async function ask(question) {
    busy = true;
    sendBtn.disabled = true;
    if (!state.msgs.length) log.textContent = "";
    var u = { role: "user", text: question };
    state.msgs.push(u);
    log.appendChild(renderMsg(u));
    var m = { role: "assistant", text: "", id: null, pending: true };
    state.msgs.push(m);
    var li = renderMsg(m);
    log.appendChild(li);
    log.scrollTop = log.scrollHeight;
    var chunks = 0;
    var body = { model: opt.model, stream: true, messages: [{ role: "user", content: question }] };
    if (state.sid) body.session_id = state.sid;
    try {
      var r = await fetch(opt.server + "/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!r.ok) throw new Error(await errorText(r));
      var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
      for (;;) {
        var step = await reader.read();
        if (step.done) break;
        buf += dec.decode(step.value, { stream: true });
        var events = buf.split("\n\n");
        buf = events.pop();
        events.forEach(function (evText) {
          evText.split("\n").forEach(function (line) {
            if (line.indexOf("data:") !== 0) return;
            var data = line.slice(5).trim();
            if (!data || data === "[DONE]") return;
            var ev = JSON.parse(data);
            if (ev.error) throw new Error(ev.error.message || "error");
            var ext = ev.endcloud || {};
            if (ext.message_id) m.id = ext.message_id;
            if (ext.session_id) state.sid = ext.session_id;
            if (ext.answered_by) m.by = ext.answered_by;
            if (ext.decision && !m.text) m.note = S.handoff;
            var c = ev.choices && ev.choices[0];
            if (c && c.delta && c.delta.content) {
              m.text += c.delta.content;
              chunks += 1;
            }
          });
        });
        li.dataset.chunks = String(chunks);
        renderMsg(m, li);
        log.scrollTop = log.scrollHeight;
      }
    } catch (e) {
      m.error = true;
      m.text = (m.text ? m.text + "\n" : "") + S.error + e.message;
    }
    m.pending = false;
    if (m.note === S.handoff) m.note = null;
    li.dataset.chunks = String(chunks);
    save();
    renderMsg(m, li);
    busy = false;
    sendBtn.disabled = false;
  }

  async function feedback(m, li, rating, correction) {
    var body = { message_id: m.id, rating: rating > 0 ? "up" : "down" };
    if (correction) body.correction = correction;
    try {
      var r = await fetch(opt.server + "/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify(body) });
      if (!r.ok) throw new Error(await errorText(r));
      m.vote = rating;
      m.note = correction ? S.corrected : S.thanks;
      if (correction) m.corrected = true;
    } catch (e) {
      m.note = S.error + e.message;
    }
    save();
    renderMsg(m, li);
  }

  // A named customer's session is theirs to read: the server's record wins over this browser's
  // copy (another device may have added to it). Anonymous chats keep the local copy.
  async function refreshFromServer() {
    if (!opt.token || !state.sid) return;
    try {
      var r = await fetch(opt.server + "/v1/sessions/" + encodeURIComponent(state.sid), { headers: headers() });
      if (!r.ok) return;
      var j = await r.json();
      var old = {};
      state.msgs.forEach(function (m) { if (m.id) old[m.id] = m; });
      state.msgs = (j.messages || []).filter(function (m) { return m.role === "user" || m.role === "assistant"; })
        .map(function (m) {
          var was = old[m.id] || {};
          return { role: m.role, text: m.content, id: m.role === "assistant" ? m.id : null, by: m.answered_by,
                   vote: was.vote, note: was.note };
        });
      save();
      if (!busy) renderAll();
    } catch (e) { /* offline: the local copy stands */ }
  }

  function mount() {
    (inline && document.getElementById("endcloud-chat")) ? document.getElementById("endcloud-chat").appendChild(host)
      : document.body.appendChild(host);
    renderAll();
    if (inline || opt.open === "true") toggle(true);
    refreshFromServer();
  }

  window.EndcloudWidget = {
    open: function () { toggle(true); },
    close: function () { toggle(false); },
    setToken: function (token) { // the customer logged in or out: their own conversation, not the last one's
      opt.token = token || null;
      state = load();
      renderAll();
      refreshFromServer();
    },
    options: function () { return { lang: opt.lang, model: opt.model, server: opt.server, customer: customerOf(opt.token) }; }
  };
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
