// A terminal in the page: xterm.js (served by the daemon from npm's node_modules under
// /vendor/xterm/) on the console websocket. Binary frames carry the terminal's bytes both
// ways; a text frame {"resize": [columns, rows]} follows the window size. Whatever the CT
// prints only ever reaches xterm.js's buffer, never the page's HTML.

import { el, clear, button } from "./dom.js";

const XTERM = "/vendor/xterm/xterm/lib/xterm.mjs";
const FIT = "/vendor/xterm/addon-fit/lib/addon-fit.mjs";

// xterm.js's DOM renderer writes its computed CSS (cell sizes, theme colours) into <style>
// elements, which the page's Content-Security-Policy (style-src 'self') refuses to apply.
// The same text is put into constructed style sheets instead, which the policy leaves to
// the page's own scripts. Only xterm.js writes those elements, from its options: nothing a
// CT sends can reach them.
function mirrorStyles(container) {
  const sheets = new Map();
  const sync = () => {
    const present = new Set(container.querySelectorAll("style"));
    for (const style of present) {
      let entry = sheets.get(style);
      if (!entry) {
        entry = { sheet: new CSSStyleSheet(), text: null };
        sheets.set(style, entry);
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, entry.sheet];
      }
      if (entry.text !== style.textContent) {
        entry.text = style.textContent;
        entry.sheet.replaceSync(entry.text);
      }
    }
    for (const [style, entry] of sheets) {
      if (!present.has(style)) {
        sheets.delete(style);
        document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== entry.sheet);
      }
    }
  };
  const observer = new MutationObserver(sync);
  observer.observe(container, { childList: true, subtree: true, characterData: true });
  sync();
  return () => {
    observer.disconnect();
    const ours = new Set([...sheets.values()].map((e) => e.sheet));
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => !ours.has(s));
  };
}

export class Console {
  constructor(ctid) {
    this.ctid = ctid;
    this.box = el("div", { class: "terminal", id: "terminal" });
    this.state = el("span", { class: "muted", id: "terminal-state" }, "not connected");
    this.mode = el("select", { name: "mode", "aria-label": "attach to" },
      el("option", { value: "1" }, "root shell (vzctl enter)"),
      el("option", { value: "0" }, "console (vzctl console)"));
    this.connectButton = button("Connect", () => this.connect(), { class: "primary", id: "terminal-connect" });
    this.closeButton = button("Disconnect", () => this.close(), { disabled: true });
    this.node = el("div", { class: "console" },
      el("div", { class: "toolbar" }, this.mode, this.connectButton, this.closeButton, this.state), this.box);
    this.term = null;
    this.socket = null;
    this.cleanup = [];
  }

  async ensureTerminal() {
    if (this.term) return this.term;
    let xterm, fit;
    try {
      [xterm, fit] = await Promise.all([import(XTERM), import(FIT)]);
    } catch {
      throw new Error("xterm.js is not installed on the host (make install runs npm ci)");
    }
    this.cleanup.push(mirrorStyles(this.box));
    const term = new xterm.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 2000, convertEol: false });
    this.fit = new fit.FitAddon();
    term.loadAddon(this.fit);
    term.open(this.box);
    this.fit.fit();
    const resize = () => { try { this.fit.fit(); } catch { /* hidden */ } };
    window.addEventListener("resize", resize);
    this.cleanup.push(() => window.removeEventListener("resize", resize));
    const encoder = new TextEncoder();
    term.onData((data) => this.send(encoder.encode(data)));
    term.onBinary((data) => this.send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    term.onResize(({ cols, rows }) => this.send(JSON.stringify({ resize: [cols, rows] })));
    this.term = term;
    window.pyvzConsole = { terminal: term }; // for the browser tests: read term.buffer
    return term;
  }

  send(data) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(data);
  }

  async connect() {
    this.close();
    let term;
    try { term = await this.ensureTerminal(); } catch (error) { this.state.textContent = String(error.message); return; }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/v1/cts/${encodeURIComponent(this.ctid)}/console?shell=${this.mode.value}`;
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.state.textContent = "connecting…";
    socket.addEventListener("open", () => {
      this.state.textContent = "connected";
      this.connectButton.disabled = true;
      this.closeButton.disabled = false;
      socket.send(JSON.stringify({ resize: [term.cols, term.rows] }));
      term.focus();
    });
    socket.addEventListener("message", (event) => {
      term.write(typeof event.data === "string" ? event.data : new Uint8Array(event.data));
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.state.textContent = "disconnected";
      this.connectButton.disabled = false;
      this.closeButton.disabled = true;
      this.socket = null;
    });
  }

  close() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close();
    }
    this.connectButton.disabled = false;
    this.closeButton.disabled = true;
  }

  dispose() {
    this.close();
    if (this.term) this.term.dispose();
    for (const undo of this.cleanup) undo();
    this.cleanup = [];
    clear(this.box);
  }
}
