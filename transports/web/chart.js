// A small bar chart of per-turn figures drawn on a canvas: turn latency and barge-in latency in
// milliseconds, the most recent MAX_POINTS, in the order they came.

const MAX_POINTS = 24;
const COLORS = { turn: "#2f6fdf", barge: "#d9822b" };
const NICE_STEPS = [100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000];

/** The smallest "nice" axis top at or above `value` milliseconds. */
function niceTop(value) {
  for (const step of NICE_STEPS) {
    if (value <= step) return step;
  }
  return Math.ceil(value / 10000) * 10000;
}

export class LatencyChart {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    /** @type {{kind: "turn" | "barge", ms: number}[]} */
    this.points = [];
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /** Adds a figure: kind "turn" (turn latency) or "barge" (barge-in latency). */
  add(kind, ms) {
    this.points.push({ kind, ms });
    if (this.points.length > MAX_POINTS) this.points.shift();
    this.draw();
  }

  clear() {
    this.points = [];
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    const style = getComputedStyle(canvas);
    const ink = style.color || "#444";
    g.font = "12px system-ui, sans-serif";
    g.fillStyle = ink;
    if (!this.points.length) {
      g.textAlign = "center";
      g.textBaseline = "middle";
      g.fillText("No turns yet", width / 2, height / 2);
      return;
    }
    const left = 44;
    const right = 8;
    const top = 22;
    const bottom = 20;
    const plotW = width - left - right;
    const plotH = height - top - bottom;
    const max = niceTop(Math.max(...this.points.map((p) => p.ms), 1));

    // Axis: four grid lines with their values.
    g.strokeStyle = ink;
    g.globalAlpha = 0.25;
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      g.beginPath();
      g.moveTo(left, Math.round(y) + 0.5);
      g.lineTo(width - right, Math.round(y) + 0.5);
      g.stroke();
    }
    g.globalAlpha = 1;
    for (let i = 0; i <= 4; i++) {
      const y = top + plotH - (plotH * i) / 4;
      g.fillText(`${Math.round((max * i) / 4)}`, left - 6, y);
    }
    g.textAlign = "left";
    g.textBaseline = "top";
    g.fillText("ms", 2, 0);

    const slot = plotW / MAX_POINTS;
    const barW = Math.max(3, slot * 0.7);
    g.textAlign = "center";
    g.textBaseline = "bottom";
    this.points.forEach((point, i) => {
      const h = (plotH * Math.min(point.ms, max)) / max;
      const x = left + i * slot + (slot - barW) / 2;
      g.fillStyle = COLORS[point.kind];
      g.fillRect(x, top + plotH - h, barW, h);
      if (barW >= 22) {
        g.fillStyle = ink;
        g.fillText(`${Math.round(point.ms)}`, x + barW / 2, top + plotH - h - 2);
      }
    });
  }
}
