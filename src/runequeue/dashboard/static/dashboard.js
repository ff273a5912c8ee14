// runequeue dashboard: refresh the page's content in place every few seconds, unless the
// person is in the middle of something (a box ticked, a field focused, a selection).
"use strict";
(function () {
  const seconds = parseFloat(document.body.dataset.refresh || "0");
  const busy = () =>
    document.querySelector("[data-holds-input] input[type=checkbox]:checked") !== null ||
    (document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) ||
    String(window.getSelection()) !== "";

  async function refresh() {
    if (document.hidden || busy()) return;
    try {
      const response = await fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (response.status === 401) { window.location.reload(); return; }
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("content");
      if (fresh && !busy()) document.getElementById("content").replaceChildren(...fresh.childNodes);
    } catch (err) {
      // The dashboard is away for a moment: keep what is shown, try again at the next tick.
    }
  }

  document.addEventListener("change", (event) => {
    if (event.target.matches("[data-check-all]")) {
      const form = event.target.closest("form");
      form.querySelectorAll("input[name=id]").forEach((box) => { box.checked = event.target.checked; });
    }
  });
  if (seconds > 0) window.setInterval(refresh, seconds * 1000);
})();
