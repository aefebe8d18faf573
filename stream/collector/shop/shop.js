// The sample shop's one helper: send a step with the tracker, then go on.
// The tracker keeps the step queued if the page changes before it is sent.
function after(type, fields, next) {
  window.funnel = window.funnel || {};
  var go = function () { location.href = next; };
  if (window.funnel.track) { window.funnel.track(type, fields); setTimeout(go, 150); }
  else setTimeout(function () { after(type, fields, next); }, 50);
}
