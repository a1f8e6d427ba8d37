// Live updates: the server sends the re-rendered page body whenever it changes.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var body = document.getElementById("body");
  if (!window.EventSource || !body) { return; }
  var es = new EventSource("/ui/events");
  es.addEventListener("body", function (e) {
    body.innerHTML = e.data;
    live.textContent = "live";
    live.className = "on";
  });
  es.onerror = function () {
    live.textContent = "reconnecting…";
    live.className = "off";
  };
})();
