// Live refresh of the instances table: every two seconds while "live" is checked, the page is
// fetched again (same URL, same cookie) and its table body replaces the current one.
(function () {
  var live = document.getElementById("live");
  var body = document.querySelector("#instances tbody");
  if (!live || !body) return;
  function refresh() {
    if (!live.checked) return;
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("#instances tbody");
        var current = document.querySelector("#instances tbody");
        if (fresh && current) current.replaceWith(fresh);
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () {});
  }
  setInterval(refresh, 2000);
})();
