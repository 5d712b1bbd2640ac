// Ask before destructive form posts (Unlink). Without JavaScript the form still works.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Are you sure?")) {
    event.preventDefault();
  }
});

// Times arrive as UTC (and say so); show them in the browser's own zone, named, with the UTC
// text kept as the tooltip. Without JavaScript the UTC text stays.
document.querySelectorAll("time[datetime]").forEach(function (el) {
  var date = new Date(el.getAttribute("datetime"));
  if (isNaN(date.getTime())) return;
  var withSeconds = /:\d\d:\d\d UTC$/.test(el.textContent);
  var parts = {};
  new Intl.DateTimeFormat("en-US", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
    hourCycle: "h23", timeZoneName: "short"
  }).formatToParts(date).forEach(function (p) { parts[p.type] = p.value; });
  el.title = el.textContent;
  el.textContent = parts.year + "-" + parts.month + "-" + parts.day + " " + parts.hour + ":" + parts.minute +
    (withSeconds ? ":" + parts.second : "") + " " + parts.timeZoneName;
});
