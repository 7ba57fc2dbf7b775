// Small line charts drawn as inline SVG from the last samples the page polled.

import { svg } from "./dom.js";

const WIDTH = 100, HEIGHT = 24;

/** A polyline of `values` scaled to `max` (or to their own maximum). */
export function sparkline(values, max, label) {
  // Against the limit when there is one, else with headroom above the highest sample.
  const top = max || Math.max(...values, 1e-9) * 1.25;
  const step = values.length > 1 ? WIDTH / (values.length - 1) : WIDTH;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(HEIGHT - 1 - (v / top) * (HEIGHT - 2)).toFixed(1)}`);
  return svg("svg", { class: "spark", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img", "aria-label": label },
    svg("title", {}, label),
    points.length > 1
      ? svg("polyline", { points: points.join(" "), "vector-effect": "non-scaling-stroke" })
      : svg("line", { x1: 0, x2: WIDTH, y1: HEIGHT - 1, y2: HEIGHT - 1, class: "empty" }));
}

/** Samples kept per CT: the last `size` values of each series. */
export class History {
  constructor(size = 40) { this.size = size; this.series = new Map(); }
  push(key, value) {
    const list = this.series.get(key) || [];
    list.push(value);
    if (list.length > this.size) list.shift();
    this.series.set(key, list);
  }
  of(key) { return this.series.get(key) || []; }
  forget(keep) { for (const key of this.series.keys()) if (!keep(key)) this.series.delete(key); }
}
