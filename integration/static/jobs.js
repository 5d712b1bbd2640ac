// The Jobs page keeps its rows' state, progress and counts current by polling the JSON list
// (CSP allows no inline script). New jobs appear on the next reload; rows only change in place.
(function () {
  var table = document.querySelector("table[data-jobs-url]");
  if (!table) return;
  var url = table.dataset.jobsUrl;

  function update(job) {
    var row = table.querySelector('tr[data-job="' + job.id + '"]');
    if (!row) return;
    var state = row.querySelector(".job-state span");
    state.textContent = job.state;
    state.className = "status status-" + job.state;
    var bar = row.querySelector("progress");
    bar.max = job.total || 1;
    bar.value = job.total ? job.done : (job.state === "finished" ? 1 : 0);
    row.querySelector(".job-count").textContent = job.done + (job.total !== null ? " / " + job.total : "");
    if (job.kind !== "export") {
      row.querySelector(".job-counts").textContent = job.created + " / " + job.updated + " / " + job.deleted;
    }
    row.querySelector(".job-error").textContent = job.error || "";
    var actions = row.querySelector(".job-actions");
    if (job.downloadable && row.dataset.downloadUrl && !actions.querySelector("a.download")) {
      // A finished export: its download link in place of Cancel.
      actions.textContent = "";
      var link = document.createElement("a");
      link.className = "download";
      link.href = row.dataset.downloadUrl;
      link.textContent = "Download";
      actions.appendChild(link);
    } else if (job.state !== "queued" && job.state !== "running") {
      var cancel = actions.querySelector("form[action$='/cancel']");
      if (cancel) cancel.remove();
    }
  }

  function poll() {
    fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (data) data.jobs.forEach(update);
        var busy = data && data.jobs.some(function (j) { return j.state === "queued" || j.state === "running"; });
        setTimeout(poll, busy ? 1000 : 5000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 1000);
})();
