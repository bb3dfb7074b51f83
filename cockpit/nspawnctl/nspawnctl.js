"use strict";

// nspawnctl in Cockpit: everything goes to nspawnd's socket through the bridge, which opens it
// as the logged-in user, so nspawnd's peer-credential roles decide what each action may do.
// The page hides what the user's role cannot do; nspawnd still decides, and its refusals show.
const SOCKET = "/run/nspawnd/nspawnd.sock";
const nspawnd = cockpit.http({ unix: SOCKET, headers: { Host: "localhost" } });

const $ = id => document.getElementById(id);
const table = document.querySelector("#machines tbody");
const state = {
    machines: [],
    flavors: [],
    configs: new Map(),     // name → config (flavor, settings), fetched once per change
    samples: new Map(),     // name → { cpu_seconds, sampled_usec, percent, memory }
    operations: new Map(),  // import id → operation
    ownOperations: new Set(), // imports this page started: the page may forget them in nspawnd
    forgotten: new Set(),   // ids dismissed or cancelled here: later events do not bring them back
    selected: null,
    admin: false,
    listed: false,          // a list has arrived: "no machines" means none, not "not yet"
    detailsShown: null,     // what the details were last drawn from
    operationFocus: false,  // the import list had the keyboard when an item went
};

/// nspawnd's message for a refused or failed request; when the bridge could not even connect,
/// the words `nspawnctl --api` uses for the same errno.
function describe(error, body) {
    const fromDaemon = errorMessage(typeof body === "string" ? body : "");
    if (fromDaemon) return fromDaemon;
    if (error.problem === "access-denied") {
        return `permission denied: cannot connect to nspawnd at ${SOCKET}; join group 'nspawn' or run as root`;
    }
    if (error.problem === "not-found") {
        return `cannot reach nspawnd at ${SOCKET}: nothing listens there; is nspawnd.socket enabled?`;
    }
    return error.message || error.problem || String(error);
}

function showProblem(text, element = $("problem")) {
    element.textContent = text;
    element.hidden = !text;
}

/// One request; resolves to the parsed JSON, or rejects with nspawnd's message as an Error.
function call(method, path, body, params) {
    return new Promise((resolve, reject) => {
        const request = method === "GET"
            ? nspawnd.get(path, params)
            : nspawnd.request({
                method, path, body: body === undefined ? "" : JSON.stringify(body),
                headers: body === undefined ? {} : { "Content-Type": "application/json" },
            });
        // The error body comes as the second argument of the request's own catch; a chained
        // promise would drop it.
        request.catch((error, data) => reject(new Error(describe(error, data))));
        request.then(text => {
            try { resolve(text ? JSON.parse(text) : null) } catch (error) { reject(error) }
        }, () => { /* rejected above */ });
    });
}

const machinePath = (name, verb) => `/v1/machines/${encodeURIComponent(name)}${verb ? "/" + verb : ""}`;

// --- The table ---------------------------------------------------------------------------

/// Rebuilds `container` with `draw`, then puts the keyboard back on the button it was on (the
/// same action for the same machine or import), as a redraw must not move a keyboard user.
function keepingFocus(container, draw) {
    const focused = container.contains(document.activeElement) ? { ...document.activeElement.dataset } : null;
    draw();
    if (!focused || !focused.action) return;
    const same = [...container.querySelectorAll("button")].find(b =>
        b.dataset.action === focused.action && b.dataset.machine === focused.machine && b.dataset.operation === focused.operation);
    const fallback = focused.machine && [...container.querySelectorAll("button")].find(b => b.dataset.machine === focused.machine);
    if (same || fallback) (same || fallback).focus();
}

function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
}

function button(label, name, onClick, className) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", `${label} ${name}`);
    b.dataset.action = label.toLowerCase().replace(/ /g, "-");
    b.dataset.machine = name;
    if (className) b.className = className;
    b.addEventListener("click", onClick);
    return b;
}

function formatBytes(bytes) {
    if (bytes === undefined || bytes === null) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit++ }
    return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function flavorText(m) {
    const config = state.configs.get(m.name);
    const flavor = m.pending_resize ? m.pending_resize.to : config && config.flavor;
    return (flavor || "") + (m.pending_resize ? " (resize pending)" : "");
}

function render() {
    keepingFocus(table, drawTable);
    if (state.selected) renderDetails();
}

function drawTable() {
    table.replaceChildren();
    $("empty").hidden = state.machines.length > 0 || !state.listed;
    for (const m of state.machines) {
        const row = table.insertRow();
        row.dataset.machine = m.name;
        const name = cell(row, m.name);
        name.setAttribute("scope", "row");
        cell(row, m.state, `state state-${m.state}`);
        cell(row, m.os || "");
        cell(row, flavorText(m), "flavor");
        cell(row, (m.addresses || []).join(", "));
        cell(row, (m.exposed || []).join(", "), "exposed");
        cell(row, m.health ? m.health.status : "");
        const sample = m.state === "running" ? state.samples.get(m.name) : null;
        cell(row, sample && sample.percent !== undefined ? `${sample.percent.toFixed(1)} %` : "", "cpu");
        cell(row, sample ? formatBytes(sample.memory) : "", "memory");
        const actions = cell(row, "", "actions");
        actions.append(...lifecycleButton(m), button("Details", m.name, () => select(m.name)));
    }
}

let refreshing = null;
function refresh() {
    // One list request at a time; events that arrive meanwhile fold into one more.
    if (refreshing) { refreshing.again = true; return; }
    refreshing = { again: false };
    call("GET", "/v1/machines")
        .then(machines => {
            state.machines = machines;
            state.listed = true;
            const names = new Set(state.machines.map(m => m.name));
            for (const name of state.configs.keys()) if (!names.has(name)) state.configs.delete(name);
            if (state.selected && !names.has(state.selected)) closeDetails();
            render();
            for (const m of state.machines) if (!state.configs.has(m.name) && m.image_type) loadConfig(m.name);
        })
        .catch(error => showProblem(error.message))
        .finally(() => {
            const again = refreshing.again;
            refreshing = null;
            if (again) refresh();
        });
}

/// A failed read is kept as its message (shown in the details) until the next event about the
/// machine, rather than asked again on every refresh.
function loadConfig(name) {
    state.configs.set(name, state.configs.get(name) || null);
    return call("GET", machinePath(name, "config"))
        .then(config => { state.configs.set(name, config); render(); })
        .catch(error => { state.configs.set(name, { error: error.message }); render(); });
}

/// CPU use comes from two samples' cpu_seconds over their sampled_usec, as `nspawnctl stats`.
function sampleStats() {
    if (document.visibilityState !== "visible" || !state.machines.some(m => m.state === "running")) return;
    call("GET", "/v1/stats").then(samples => {
        const next = new Map();
        for (const s of samples) {
            const previous = state.samples.get(s.name);
            const entry = { cpu_seconds: s.cpu_seconds, sampled_usec: s.sampled_usec, memory: s.memory_bytes };
            // A restart begins cpu_seconds again: such a pair gives no percentage.
            if (previous && s.cpu_seconds !== undefined && s.sampled_usec > previous.sampled_usec && s.cpu_seconds >= previous.cpu_seconds) {
                entry.percent = 100 * (s.cpu_seconds - previous.cpu_seconds) / ((s.sampled_usec - previous.sampled_usec) / 1e6);
            }
            next.set(s.name, entry);
        }
        state.samples = next;
        render();
    }).catch(() => { /* stats are a bonus: the list shows its own problems */ });
}

// --- Actions -----------------------------------------------------------------------------

function act(name, verb, body) {
    showProblem("");
    return call("POST", machinePath(name, verb), body || {})
        .catch(error => showProblem(error.message))
        .finally(() => { state.configs.delete(name); refresh() });
}

function loadFlavors() {
    call("GET", "/v1/flavors")
        .then(flavors => { state.flavors = flavors; if (state.selected) renderDetails() })
        .catch(error => showProblem(`flavors: ${error.message}`));
}

/// Stop for a running machine, Start for one that can start, else nothing: as a list to spread.
function lifecycleButton(m) {
    if (m.state === "running") return [button("Stop", m.name, () => confirmed(stopAction(m.name)))];
    if (m.state === "stopped" || m.state === "listening") return [button("Start", m.name, () => act(m.name, "start"), "primary")];
    return [];
}

const stopAction = name => ({
    title: `Stop ${name}?`, text: `The machine is shut down cleanly; its programs end.`, label: "Stop",
    run: () => act(name, "stop"),
});

/// Asks before an action that ends programs or deletes data, in a modal dialog (Escape cancels).
/// The button that asked may have been redrawn meanwhile: focus returns to its successor.
function confirmed({ title, text, label, run }) {
    const dialog = $("confirm");
    const opener = document.activeElement ? { ...document.activeElement.dataset } : {};
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = label;
    dialog.returnValue = "";
    dialog.onclose = () => {
        if (dialog.returnValue === "ok") run();
        const again = [...document.querySelectorAll("button[data-action]")].find(b =>
            b.dataset.action === opener.action && b.dataset.machine === opener.machine);
        if (again) again.focus();
    };
    dialog.showModal();
    dialog.querySelector('button[value="cancel"]').focus();
}

function destructiveActions(m) {
    const name = m.name;
    const list = [];
    if (m.state === "running") {
        list.push(["Reboot", { title: `Reboot ${name}?`, text: "The guest reboots cleanly.", label: "Reboot", run: () => act(name, "reboot", { hard: false }) }]);
        list.push(["Hard reboot", { title: `Hard reboot ${name}?`, text: "A power reset: the machine is terminated at once and started again. Unsaved data in it is lost.", label: "Hard reboot", run: () => act(name, "reboot", { hard: true }) }]);
        list.push(["Terminate", { title: `Terminate ${name}?`, text: "Every process in the machine is killed at once, without a clean shutdown.", label: "Terminate", run: () => act(name, "terminate") }]);
    }
    if (state.admin && m.image_type) {
        list.push(["Remove", {
            title: `Remove ${name}?`,
            text: `The image ${name} is deleted with its settings, sockets and flavor${m.state === "running" ? "; the machine is stopped first" : ""}. This cannot be undone.`,
            label: "Remove",
            run: () => {
                showProblem("");
                return call("DELETE", `/v1/images/${encodeURIComponent(name)}`, { force: m.state === "running" })
                    .catch(error => showProblem(error.message))
                    .finally(refresh);
            },
        }]);
    }
    return list;
}

// --- Details -----------------------------------------------------------------------------

let terminal = null;

function select(name) {
    if (state.selected !== name) closeTerminal();
    state.selected = name;
    state.detailsShown = null;
    $("details").hidden = false;
    $("logs").textContent = "";
    renderDetails();
    loadConfig(name);
    loadLogs();
    $("details-title").focus();
}

function closeDetails() {
    closeTerminal();
    state.selected = null;
    $("details").hidden = true;
}

function renderDetails() {
    const m = state.machines.find(x => x.name === state.selected);
    if (!m) return;
    // Drawn again only when what it shows changed, so focus and a half-made choice stay put.
    const shown = JSON.stringify([m, state.configs.get(m.name), state.flavors, state.admin]);
    if (shown === state.detailsShown) return;
    state.detailsShown = shown;
    $("details-title").textContent = m.name;
    $("details-state").textContent = m.state;
    const actions = $("details-actions");
    keepingFocus(actions, () => {
        actions.replaceChildren(...lifecycleButton(m),
            ...destructiveActions(m).map(([label, action]) => button(label, m.name, () => confirmed(action), "danger")));
    });

    const config = state.configs.get(m.name);
    const view = $("settings-view");
    view.replaceChildren();
    const entries = [];
    if (config && config.error) {
        view.textContent = config.error;
    } else if (config) {
        for (const [key, values] of Object.entries(config.settings.settings)) entries.push([key, values.join(" ")]);
        for (const other of config.settings.other) entries.push([`${other.section}.${other.key}`, other.value]);
        if (config.flavor) entries.push(["flavor", config.flavor]);
    }
    for (const [key, value] of entries) {
        const dt = document.createElement("dt"); dt.textContent = key;
        const dd = document.createElement("dd"); dd.textContent = value;
        view.append(dt, dd);
    }
    if (!entries.length && !(config && config.error)) view.textContent = config ? "No settings." : "";

    const pending = m.pending_resize;
    $("resize-pending").hidden = !pending;
    if (pending) {
        $("resize-pending-text").textContent =
            `Resized from ${pending.from || "no flavor"} to ${pending.to}; confirms itself at ${new Date(pending.confirms_at).toLocaleString()}.`;
    }
    fillFlavors($("resize-flavor"), config && config.flavor, false, m.name);
    $("unexpose").disabled = !(m.exposed && m.exposed.length);
    $("terminal-open").disabled = m.state !== "running";
}

/// A choice made in `select` is kept while it shows the same machine; another machine starts
/// from its own flavor.
function fillFlavors(select, current, withNone, machine = "") {
    const value = (select.dataset.machine === machine && select.value) || current || "";
    select.dataset.machine = machine;
    select.replaceChildren();
    // Create may have no flavor; resize needs one, so without a current one it asks for a choice.
    if (withNone) select.append(new Option("none", ""));
    else if (!value) select.append(Object.assign(new Option("choose a flavor", ""), { disabled: true }));
    for (const f of state.flavors) {
        const limits = [f.memory_max && `${formatBytes(f.memory_max)} memory`, f.cpu_quota_percent && `${f.cpu_quota_percent / 100} CPU`,
            f.disk_max && `${formatBytes(f.disk_max)} disk`].filter(Boolean).join(", ");
        select.append(new Option(limits ? `${f.name} (${limits})` : f.name, f.name));
    }
    select.value = value;
}

function loadLogs() {
    const name = state.selected;
    const pre = $("logs");
    const request = nspawnd.get(machinePath(name, "logs"), { lines: "200" });
    request.catch((error, data) => { if (state.selected === name) pre.textContent = describe(error, data) });
    request.then(text => {
        if (state.selected !== name) return;
        const lines = text.split("\n").filter(Boolean).map(line => {
            const entry = JSON.parse(line);
            if (entry.error) return `error: ${entry.error.message}`;
            return `${entry.time.replace("T", " ").slice(0, 19)} ${entry.identifier || entry.unit || entry.source}: ${entry.message}`;
        });
        pre.textContent = lines.length ? lines.join("\n") : "No log entries.";
        pre.scrollTop = pre.scrollHeight;
    }, () => { /* shown above */ });
}

function lines(text) { return text.split("\n").map(s => s.trim()).filter(Boolean) }

function changeSettings(event) {
    event.preventDefault();
    const name = state.selected;
    const change = { set: lines($("settings-set").value), unset: lines($("settings-unset").value) };
    if (!change.set.length) delete change.set;
    if (!change.unset.length) delete change.unset;
    showProblem("");
    call("POST", machinePath(name, "config"), change)
        .then(config => {
            state.configs.set(name, config);
            $("settings-set").value = "";
            $("settings-unset").value = "";
            render();
        })
        .catch(error => showProblem(error.message));
}

function resize(event) {
    event.preventDefault();
    act(state.selected, "resize", { flavor: $("resize-flavor").value });
}

function expose(event) {
    event.preventDefault();
    const listen = $("expose-listen").value.split(/\s+/).filter(Boolean);
    const command = $("expose-exec").value.split(/\s+/).filter(Boolean);
    // One of the two, as the route takes it: a command when given, else the unit.
    act(state.selected, "expose", command.length ? { listen, exec: command } : { listen, unit: $("expose-unit").value.trim() });
}

function openTerminal() {
    closeTerminal();
    const pre = $("terminal");
    pre.hidden = false;
    $("terminal-close").hidden = false;
    terminal = new MachineTerminal(SOCKET, pre, text => {
        pre.textContent += `\n[${text}]`;
        $("terminal-close").hidden = true;
    });
    terminal.open(state.selected);
    pre.focus();
}

function closeTerminal() {
    if (terminal) terminal.close();
    terminal = null;
    $("terminal").hidden = true;
    $("terminal-close").hidden = true;
}

// --- Create and import -------------------------------------------------------------------

function openDialog(id) {
    const dialog = $(id);
    showProblem("", dialog.querySelector(".problem"));
    dialog.showModal();
}

function createMachine(event) {
    event.preventDefault();
    const dialog = $("create");
    const body = { name: $("create-name").value.trim(), image: $("create-image").value, start: $("create-start").checked };
    if ($("create-flavor").value) body.settings = { flavor: $("create-flavor").value };
    call("POST", "/v1/machines", body)
        .then(() => { dialog.close(); refresh() })
        .catch(error => showProblem(error.message, dialog.querySelector(".problem")));
}

function startImport(event) {
    event.preventDefault();
    const dialog = $("import");
    const body = { url: $("import-url").value.trim(), name: $("import-name").value.trim() };
    if ($("import-checksum").value.trim()) body.checksum = $("import-checksum").value.trim();
    call("POST", "/v1/images", body)
        .then(operation => { dialog.close(); state.ownOperations.add(operation.id); track(operation) })
        .catch(error => showProblem(error.message, dialog.querySelector(".problem")));
}

function track(operation) {
    if (operation.kind !== "import" || state.forgotten.has(operation.id)) return;
    // Events and the POST's answer may arrive in either order: an ended state is never undone.
    const known = state.operations.get(operation.id);
    if (known && known.state !== "running" && operation.state === "running") return;
    state.operations.set(operation.id, operation);
    renderOperations();
    if (operation.state === "succeeded") refresh();
}

function renderOperations() {
    const list = $("operation-list");
    keepingFocus(list, () => drawOperations(list));
    if (!list.contains(document.activeElement) && state.operationFocus) {
        // The item whose button had the focus is gone: keep the keyboard in the page.
        state.operationFocus = false;
        $("import-open").focus();
    }
}

/// Cancel stops a running import in nspawnd and waits for its cleanup. Dismiss forgets a
/// finished import in nspawnd only when this page started it: another client (nspawnctl --api
/// import, Ansible) may still be reading its result.
function settleImport(op) {
    state.operationFocus = $("operation-list").contains(document.activeElement);
    const forget = op.state === "running" || state.ownOperations.has(op.id);
    const gone = ended => {
        state.forgotten.add(op.id);
        state.ownOperations.delete(op.id);
        if (ended && op.state === "running") {
            // The final state of a cancel stays in view until dismissed.
            state.operations.set(op.id, ended);
        } else {
            state.operations.delete(op.id);
        }
        renderOperations();
    };
    if (!forget) { gone(null); return; }
    call("DELETE", `/v1/operations/${encodeURIComponent(op.id)}`)
        .then(ended => gone(ended))
        .catch(error => {
            // Already forgotten (another client, or a race with its own event): it is gone either way.
            if (/^no operation /.test(error.message)) gone(null); else showProblem(error.message);
        });
}

function drawOperations(list) {
    list.replaceChildren();
    $("operations").hidden = state.operations.size === 0;
    for (const op of state.operations.values()) {
        const item = document.createElement("li");
        item.dataset.operation = op.id;
        item.dataset.state = op.state;
        const p = op.progress;
        const percent = op.state === "succeeded" ? 100 : p && p.total_bytes ? Math.floor(100 * p.bytes / p.total_bytes) : null;
        const label = document.createElement("span");
        label.textContent = `Import of ${op.name} from ${op.source}: ${op.state}` +
            (percent !== null ? ` (${percent} %)` : p ? ` (${formatBytes(p.bytes)})` : "") +
            (op.error ? ` — ${op.error.message}` : "");
        const bar = document.createElement("progress");
        bar.max = 100;
        if (percent !== null) bar.value = percent;
        else if (op.state !== "running") bar.value = 0;
        bar.setAttribute("aria-label", `Import of ${op.name}`);
        const control = document.createElement("button");
        control.type = "button";
        control.textContent = op.state === "running" ? "Cancel" : "Dismiss";
        control.dataset.action = op.state === "running" ? "cancel-import" : "dismiss-import";
        control.setAttribute("aria-label", `${control.textContent} import of ${op.name}`);
        control.dataset.operation = op.id;
        control.addEventListener("click", () => settleImport(op));
        item.append(label, bar, control);
        list.append(item);
    }
}

// --- Live updates ------------------------------------------------------------------------

/// Follows /v1/events (server-sent events). The stream is opened again a second after it ends,
/// however it ended, and each new subscription lists the machines again, so nothing that
/// happened in between is missed.
function follow() {
    let buffer = "";
    const request = nspawnd.request({ method: "GET", path: "/v1/events", headers: { Accept: "text/event-stream" }, body: "" });
    request.stream(chunk => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            const type = (/^event: (.*)$/m.exec(event) || [])[1];
            const data = (/^data: (.*)$/m.exec(event) || [])[1];
            if (!type) continue; // a heartbeat comment
            if (type === "subscribed") {
                if ($("problem").textContent.startsWith("live updates")) showProblem("");
                refresh();
            } else if (type === "error") {
                showProblem(`live updates stopped: ${errorMessage(data) || data}`);
            } else if (type === "operation" && data) {
                const operation = JSON.parse(data);
                if (state.admin || state.operations.has(operation.id)) track(operation);
            } else {
                if (data) state.configs.delete(JSON.parse(data).name);
                // machined reports a machine gone before its unit has settled: look again.
                refresh();
                window.setTimeout(refresh, 1500);
            }
        }
        return chunk.length;
    });
    request.then(() => window.setTimeout(follow, 1000), () => { /* handled below */ });
    request.catch((error, data) => {
        // A refusal is the list's to explain, in nspawnd's words; asking again would not help.
        if (error.status === 403 || error.problem === "access-denied") return;
        if ($("problem").hidden) showProblem(`live updates stopped: ${describe(error, data)}`);
        window.setTimeout(follow, 1000);
    });
}

function start() {
    $("details-close").addEventListener("click", closeDetails);
    $("settings-form").addEventListener("submit", changeSettings);
    $("resize-form").addEventListener("submit", resize);
    $("resize-confirm").addEventListener("click", () => act(state.selected, "resize/confirm"));
    $("resize-revert").addEventListener("click", () => act(state.selected, "resize/revert"));
    $("expose-form").addEventListener("submit", expose);
    $("unexpose").addEventListener("click", () => act(state.selected, "unexpose"));
    $("logs-refresh").addEventListener("click", loadLogs);
    $("terminal-open").addEventListener("click", openTerminal);
    $("terminal-close").addEventListener("click", closeTerminal);
    $("create-open").addEventListener("click", () => {
        loadFlavors();
        const images = $("create-image");
        images.replaceChildren(...state.machines.filter(m => m.image_type).map(m => new Option(m.name, m.name)));
        fillFlavors($("create-flavor"), "", true);
        openDialog("create");
    });
    $("import-open").addEventListener("click", () => openDialog("import"));
    $("create-form").addEventListener("submit", createMachine);
    $("import-form").addEventListener("submit", startImport);
    for (const cancel of document.querySelectorAll("dialog .cancel")) {
        cancel.addEventListener("click", () => cancel.closest("dialog").close());
    }

    cockpit.user().then(user => {
        state.admin = user.id === 0;
        const member = (user.groups || []).includes("nspawn");
        $("who").textContent = state.admin ? "as root: every action"
            : member ? `as ${user.name} (group nspawn): read, start and stop` : `as ${user.name}: what nspawnd grants`;
        for (const element of document.querySelectorAll(".admin-only")) element.hidden = !state.admin;
        render();
    });
    loadFlavors();
    refresh();
    follow();
    window.setInterval(sampleStats, 3000);
}

start();
