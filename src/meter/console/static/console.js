// Meter console: the live balance card (Server-Sent Events) and forms that submit once.
// No inline scripts (the Content-Security-Policy forbids them): pages say what they need
// with data- attributes.
"use strict";

function watchBalance(card) {
  const status = document.getElementById("live-status");
  const alerts = document.getElementById("alerts");
  const say = (text, cls) => {
    if (status) { status.textContent = text; status.className = "live " + (cls || ""); }
  };
  const source = new EventSource(card.dataset.live);
  source.addEventListener("open", () => say("live", "on"));
  source.addEventListener("balance", (e) => {
    card.innerHTML = e.data;
    say("live · updated " + new Date().toLocaleTimeString(), "on");
  });
  source.addEventListener("alert", (e) => {
    const p = document.createElement("p");
    p.className = "banner warn";
    p.textContent = e.data;
    alerts.prepend(p);
  });
  source.addEventListener("status", () => say("reconnecting…", "off"));
  source.addEventListener("problem", (e) => {
    source.close();
    say(e.data, "off");
  });
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED) say("reconnecting…", "off");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const card = document.querySelector("[data-live]");
  if (card && window.EventSource) watchBalance(card);
  // A second click while the first submit is on its way would only be a replay (the
  // request id is the form's), but saying "sending" is kinder than a second wait.
  for (const form of document.querySelectorAll("form[data-once]")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) {
        b.disabled = true;
        b.textContent = "Sending…";
      }
    });
  }
});
