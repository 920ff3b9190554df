// limpet status page: refresh the live part every few seconds without
// reloading the page (and without touching the lookup form being typed in).
// The server renders and escapes everything; DOMParser documents run no
// script, so nothing fetched here executes.
(function () {
  "use strict";
  var every = Math.max(1, Number(document.body.dataset.refresh) || 5) * 1000;
  var state = document.getElementById("refresh-state");
  function show(text, cls) {
    state.textContent = text;
    state.className = cls;
  }
  function tick() {
    fetch(location.href, { cache: "no-store", credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        if (!next) { throw new Error("no live section in the answer"); }
        document.getElementById("live").replaceWith(document.adoptNode(next));
        show("updated " + new Date().toLocaleTimeString(), "muted");
      })
      .catch(function (e) { show("refresh failed: " + e.message, "bad"); })
      .finally(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
