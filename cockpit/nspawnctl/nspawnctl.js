"use strict";

// nspawnctl in Cockpit: everything goes to nspawnd's socket through the bridge, which opens it
// as the logged-in user, so nspawnd's peer-credential roles decide what each action may do.
const nspawnd = cockpit.http({ unix: "/run/nspawnd/nspawnd.sock", headers: { Host: "localhost" } });

const table = document.querySelector("#machines tbody");
const problem = document.getElementById("problem");

/// nspawnd's own message for a refused or failed request, else the transport's.
function describe(error, body) {
    try {
        const parsed = JSON.parse(body);
        if (parsed && parsed.error && parsed.error.message) return parsed.error.message;
    } catch (_) { /* not JSON: the transport's problem */ }
    return error.message || error.problem || String(error);
}

function showProblem(text) {
    problem.textContent = text;
    problem.hidden = !text;
}

function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
}

function button(label, name, onClick, primary) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", `${label} ${name}`);
    b.dataset.action = label.toLowerCase();
    b.dataset.machine = name;
    if (primary) b.className = "primary";
    b.addEventListener("click", onClick);
    return b;
}

function act(name, verb, body) {
    showProblem("");
    return new Promise(resolve => {
        nspawnd.post(`/v1/machines/${encodeURIComponent(name)}/${verb}`, body || {})
            .then(() => { refresh(); resolve(); })
            .catch((error, data) => { showProblem(describe(error, data)); refresh(); resolve(); });
    });
}

function render(machines) {
    table.replaceChildren();
    document.getElementById("empty").hidden = machines.length > 0;
    for (const m of machines) {
        const row = table.insertRow();
        row.dataset.machine = m.name;
        cell(row, m.name).setAttribute("scope", "row");
        cell(row, m.state, `state-${m.state}`);
        cell(row, m.os || "");
        cell(row, (m.addresses || []).join(", "));
        cell(row, (m.exposed || []).join(", "));
        cell(row, m.health ? m.health.status : "");
        const actions = cell(row, "", "actions");
        if (m.state === "running") {
            actions.append(button("Stop", m.name, () => act(m.name, "stop")));
        } else if (m.state === "stopped" || m.state === "listening") {
            actions.append(button("Start", m.name, () => act(m.name, "start"), true));
        }
    }
}

let refreshing = null;
function refresh() {
    // One list request at a time; events that arrive meanwhile fold into one more.
    if (refreshing) { refreshing.again = true; return; }
    refreshing = { again: false };
    nspawnd.get("/v1/machines", { all: "true" })
        .then(text => render(JSON.parse(text).filter(m => m.name !== ".host")))
        .catch((error, data) => showProblem(describe(error, data)))
        .finally(() => {
            const again = refreshing.again;
            refreshing = null;
            if (again) refresh();
        });
}

/// Follows /v1/events (server-sent events); any machine event refreshes the list. A dropped
/// stream is opened again after a second.
function follow() {
    let buffer = "";
    // An empty body: the bridge sends a request once its body is done.
    nspawnd.request({ method: "GET", path: "/v1/events", headers: { Accept: "text/event-stream" }, body: "" })
        .stream(chunk => {
            buffer += chunk;
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
                const event = buffer.slice(0, end);
                buffer = buffer.slice(end + 2);
                if (/^event: (machine_|resize_)/m.test(event)) {
                    // machined reports a machine gone before its unit has settled: look again.
                    refresh();
                    window.setTimeout(refresh, 1500);
                }
            }
            return chunk.length;
        })
        .catch((error, data) => showProblem(`live updates stopped: ${describe(error, data)}`))
        .finally(() => window.setTimeout(follow, 1000));
}

cockpit.user().then(user => {
    document.getElementById("who").textContent = user.id === 0 ? "as root: every action" : `as ${user.name}: what nspawnd grants`;
});
refresh();
follow();
