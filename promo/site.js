// Chapter lists: a click seeks its video to the chapter, and playback marks the chapter
// showing now (aria-current, styled by site.css).
"use strict";
for (const list of document.querySelectorAll("ol[data-video]")) {
  const video = document.getElementById(list.dataset.video);
  const buttons = [...list.querySelectorAll("button[data-start]")];
  const mark = () => {
    const t = video.currentTime;
    const last = buttons.length - 1;
    buttons.forEach((b, i) => {
      const now = t >= Number(b.dataset.start) && (i === last || t < Number(b.dataset.end));
      b.setAttribute("aria-current", now ? "true" : "false");
    });
  };
  list.addEventListener("click", (event) => {
    const b = event.target.closest("button[data-start]");
    if (!b) return;
    video.currentTime = Number(b.dataset.start);
    mark();
    // a browser that refuses to start (no audio output, a policy) still shows the frame
    video.play().catch(() => {});
  });
  video.addEventListener("timeupdate", mark);
  video.addEventListener("seeked", mark);
  mark();
}
