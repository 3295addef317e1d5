// The console works without this script. With it, times are shown in the reader's locale and
// time zone: each <time datetime> the server wrote (relative when recent, else UTC) becomes
// "3 minutes ago" or the local date and time, with the exact local time on hover.
"use strict";
(() => {
  const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  const exact = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const show = () => {
    for (const el of document.querySelectorAll("time[datetime]")) {
      const t = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(t.getTime())) continue;
      const s = (t.getTime() - Date.now()) / 1000;
      const a = Math.abs(s);
      let text;
      if (a < 45) text = relative.format(0, "second");
      else if (a < 45 * 60) text = relative.format(Math.round(s / 60), "minute");
      else if (a < 22 * 3600) text = relative.format(Math.round(s / 3600), "hour");
      else text = exact.format(t);
      el.textContent = text;
      el.title = exact.format(t);
    }
  };
  show();
  setInterval(show, 30000);
})();
