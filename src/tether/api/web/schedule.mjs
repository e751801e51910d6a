// Drawing the page: `render()` now, or `scheduleRender()` once per frame however many
// events arrive. render.mjs registers the drawing function, so the modules that change
// what is shown (the session, the inspector, the message views) ask for a redraw
// without importing the renderer that imports them.

let draw = () => {};

export function drawWith(fn) {
  draw = fn;
}

export function render() {
  draw();
}

let renderQueued = false;

export function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  // requestAnimationFrame pauses in hidden tabs; the timer keeps them current.
  const run = () => {
    if (!renderQueued) return;
    renderQueued = false;
    render();
  };
  requestAnimationFrame(run);
  setTimeout(run, 100);
}
