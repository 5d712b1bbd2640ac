// The pop-up's countdown of Magento's activation window (templates/identity/_window.html). The server
// rendered the seconds left; at zero the expired notice replaces the clock (the server refuses to try then).
document.querySelectorAll(".window[data-seconds-left]").forEach(function (box) {
  var ends = Date.now() + Number(box.dataset.secondsLeft) * 1000;
  var left = box.querySelector(".window-left"), clock = box.querySelector(".window-clock");
  var expired = box.querySelector(".window-expired");
  function tick() {
    var seconds = Math.max(0, Math.ceil((ends - Date.now()) / 1000));
    clock.textContent = Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
    if (seconds === 0) {
      left.hidden = true;
      expired.hidden = false;
      clearInterval(timer);
    }
  }
  var timer = setInterval(tick, 1000);
  tick();
});
