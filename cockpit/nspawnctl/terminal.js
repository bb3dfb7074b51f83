"use strict";

// A terminal into a machine over nspawnd's exec stream (POST /v1/machines/NAME/exec with
// Upgrade: nspawnctl-exec.v1, then frames; units/openapi.yaml). The bridge opens the socket as
// the logged-in user, so nspawnd's own check decides who may run commands.
//
// The screen is a small line renderer, not a VT emulator: Cockpit 287 keeps its xterm inside
// its own terminal page and Debian's libjs-xterm is a stub. It keeps text, carriage returns,
// backspace and erase-line, and drops other escape sequences, so line-oriented shells work and
// full-screen programs do not. TERM=dumb tells the guest's programs as much.

const MAX_PAYLOAD = 65536;
const FRAME = { stdin: 0, stdout: 1, stderr: 2, exit: 3, error: 4, stdinEnd: 5, resize: 6, signal: 7 };

class TerminalScreen {
    constructor(element, maxLines = 2000) {
        this.element = element;
        this.maxLines = maxLines;
        this.clear();
    }

    clear() {
        this.lines = [""];
        this.column = 0;
        this.escape = null; // null, "esc", "csi" (with this.parameters) or "osc"
        this.render();
    }

    get text() { return this.lines.join("\n"); }

    write(text) {
        for (const ch of text) this.feed(ch);
        if (this.lines.length > this.maxLines) this.lines.splice(0, this.lines.length - this.maxLines);
        this.render();
    }

    feed(ch) {
        if (this.escape === "esc") {
            // ESC ( B and its kin (character sets) take one more character.
            this.escape = ch === "[" ? "csi" : ch === "]" ? "osc" : "()*+#%".includes(ch) ? "designate" : null;
            this.parameters = "";
            return;
        }
        if (this.escape === "designate") {
            this.escape = null;
            return;
        }
        if (this.escape === "csi") {
            if (ch >= "@" && ch <= "~") { this.escape = null; this.control(ch, this.parameters); } else this.parameters += ch;
            return;
        }
        if (this.escape === "osc") {
            // Ends with BEL or ESC \ (whose backslash the "esc" state then drops).
            if (ch === "\x07") this.escape = null; else if (ch === "\x1b") this.escape = "esc";
            return;
        }
        const row = this.lines.length - 1;
        switch (ch) {
        case "\x1b": this.escape = "esc"; return;
        case "\r": this.column = 0; return;
        case "\n": this.lines.push(""); this.column = 0; return;
        case "\b": this.column = Math.max(0, this.column - 1); return;
        case "\x07": return;
        case "\t": this.put(row, " ".repeat(8 - (this.column % 8))); return;
        default:
            if (ch < " " || ch === "\x7f") return;
            this.put(row, ch);
        }
    }

    put(row, text) {
        const line = this.lines[row].padEnd(this.column);
        this.lines[row] = line.slice(0, this.column) + text + line.slice(this.column + text.length);
        this.column += text.length;
    }

    control(final, parameters) {
        const row = this.lines.length - 1;
        const count = Math.max(1, parseInt(parameters, 10) || 1);
        switch (final) {
        case "K": // erase in line: 0 to the end, 1 to the start, 2 all
            if (parameters === "" || parameters === "0") this.lines[row] = this.lines[row].slice(0, this.column);
            else if (parameters === "2") this.lines[row] = "";
            break;
        case "C": this.column += count; break;
        case "D": this.column = Math.max(0, this.column - count); break;
        case "J": if (parameters === "2" || parameters === "3") { this.lines = [""]; this.column = 0; } break;
        default: break; // colours, modes, cursor addressing: not rendered
        }
    }

    render() {
        this.element.textContent = this.text;
        this.element.scrollTop = this.element.scrollHeight;
    }
}

function frame(type, payload = new Uint8Array(0)) {
    const bytes = new Uint8Array(5 + payload.length);
    bytes[0] = type;
    new DataView(bytes.buffer).setUint32(1, payload.length);
    bytes.set(payload, 5);
    return bytes;
}

function concat(a, b) {
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    return joined;
}

function headerEnd(bytes) {
    for (let i = 0; i + 3 < bytes.length; i++) {
        if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
    }
    return -1;
}

/// One shell session: opens the stream, renders output, sends keys. `onEnd(text)` receives
/// how it ended (an exit status, or nspawnd's message).
class MachineTerminal {
    constructor(socketPath, element, onEnd) {
        this.socketPath = socketPath;
        this.screen = new TerminalScreen(element);
        this.element = element;
        this.onEnd = onEnd;
        this.encoder = new TextEncoder();
        this.keyHandler = event => this.key(event);
        this.pasteHandler = event => {
            event.preventDefault();
            this.send(event.clipboardData.getData("text").replace(/\r?\n/g, "\r"));
        };
    }

    open(machine, size = { rows: 24, columns: 100 }) {
        this.decoder = new TextDecoder();
        this.buffer = new Uint8Array(0);
        this.switched = false;
        this.ended = false;
        this.screen.clear();
        const body = this.encoder.encode(JSON.stringify({
            command: [], interactive: true, tty: true, terminal: "dumb", size,
        }));
        const head = `POST /v1/machines/${encodeURIComponent(machine)}/exec HTTP/1.1\r\nHost: localhost\r\n` +
            "Connection: Upgrade\r\nUpgrade: nspawnctl-exec.v1\r\nContent-Type: application/json\r\n" +
            `Content-Length: ${body.length}\r\n\r\n`;
        this.channel = cockpit.channel({ payload: "stream", unix: this.socketPath, binary: true });
        this.channel.addEventListener("message", (_event, data) => this.receive(data));
        this.channel.addEventListener("close", (_event, options) => {
            if (!this.ended) this.finish(options && options.problem ? `connection closed: ${options.problem}` : "connection closed");
        });
        this.channel.send(concat(this.encoder.encode(head), body));
        this.element.addEventListener("keydown", this.keyHandler);
        this.element.addEventListener("paste", this.pasteHandler);
    }

    close() {
        if (this.channel && !this.ended) {
            this.ended = true;
            this.channel.close();
        }
        this.detach();
    }

    detach() {
        this.element.removeEventListener("keydown", this.keyHandler);
        this.element.removeEventListener("paste", this.pasteHandler);
    }

    finish(text) {
        this.ended = true;
        this.detach();
        if (this.channel) this.channel.close();
        this.onEnd(text);
    }

    receive(data) {
        this.buffer = concat(this.buffer, data instanceof Uint8Array ? data : this.encoder.encode(data));
        if (!this.switched) {
            const end = headerEnd(this.buffer);
            if (end < 0) return;
            const head = new TextDecoder().decode(this.buffer.slice(0, end));
            const status = parseInt(head.split(" ")[1], 10);
            if (status !== 101) {
                // A JSON error answered before the switch: wait for all of its body.
                const length = parseInt((/^content-length:\s*(\d+)/mi.exec(head) || [])[1] || "0", 10);
                if (this.buffer.length < end + 4 + length) return;
                const body = new TextDecoder().decode(this.buffer.slice(end + 4, end + 4 + length));
                this.finish(errorMessage(body) || `nspawnd answered HTTP ${status}`);
                return;
            }
            this.switched = true;
            this.buffer = this.buffer.slice(end + 4);
        }
        while (this.buffer.length >= 5) {
            const length = new DataView(this.buffer.buffer, this.buffer.byteOffset).getUint32(1);
            if (this.buffer.length < 5 + length) return;
            const type = this.buffer[0];
            const payload = this.buffer.slice(5, 5 + length);
            this.buffer = this.buffer.slice(5 + length);
            if (type === FRAME.stdout || type === FRAME.stderr) {
                this.screen.write(this.decoder.decode(payload, { stream: true }));
            } else if (type === FRAME.exit) {
                if (payload.length !== 5) {
                    this.finish("nspawnd sent an exit frame of the wrong length");
                    return;
                }
                const view = new DataView(payload.buffer, payload.byteOffset);
                const value = view.getUint32(1);
                this.finish(payload[0] === 0 ? `the shell exited with status ${value}` : `the shell was killed by signal ${value}`);
                return;
            } else if (type === FRAME.error) {
                this.finish(errorMessage(new TextDecoder().decode(payload)) || "nspawnd ended the stream with an error");
                return;
            }
        }
    }

    /// Stdin in frames of at most 64 KiB, the protocol's limit (a larger one ends the session).
    send(text) {
        if (this.ended || !this.switched || !text) return;
        const bytes = this.encoder.encode(text);
        for (let offset = 0; offset < bytes.length; offset += MAX_PAYLOAD) {
            this.channel.send(frame(FRAME.stdin, bytes.subarray(offset, offset + MAX_PAYLOAD)));
        }
    }

    key(event) {
        const named = {
            Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", Delete: "\x1b[3~",
            ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F",
        };
        let text = null;
        // Shift+Tab leaves the terminal, so the keyboard is never trapped; Tab completes in the shell.
        if (event.key === "Tab" && event.shiftKey) return;
        if (event.ctrlKey && !event.altKey && event.key.length === 1 && /[a-z@\[\\\]^_]/i.test(event.key)) {
            // Ctrl-C and friends: the terminal's own control characters, as a keyboard sends them.
            if (event.key.toLowerCase() === "v") return; // leave paste to the browser
            text = String.fromCharCode(event.key.toUpperCase().charCodeAt(0) & 0x1f);
        } else if (named[event.key]) {
            text = named[event.key];
        } else if (event.key.length === 1 && !event.ctrlKey && !event.metaKey) {
            text = (event.altKey ? "\x1b" : "") + event.key;
        }
        if (text === null) return;
        event.preventDefault();
        this.send(text);
    }
}

/// nspawnd's message from an error body (`{"error": {"code", "message"}}`), else null.
function errorMessage(body) {
    try {
        const parsed = JSON.parse(body);
        if (parsed && parsed.error && parsed.error.message) return parsed.error.message;
    } catch (_) { /* not JSON */ }
    return null;
}
