"""deploy/grafana/socket-snoop.json, the Grafana dashboard. Grafana is not at hand, so: its structure as Grafana
reads it (schema version, panels placed on the grid without overlap, unique ids, the data source variable and the
job and instance variables, every query filtered by them), every panel's PromQL (template variables substituted
as Grafana does) checked by promtool, then run against the real prometheus scraping two real monitors under real
traffic (conversations, connects refused by a closed port, connections reset, retransmissions under an nftables
drop, events lost by a stopped monitor): each query must parse and return data, and the panels the traffic is
about show it."""

import json
import math
import re
import signal
import subprocess
import time
import urllib.error
from pathlib import Path

import pytest
from test_metrics import private_loopback

from support.net import free_port, nft_drop
from support.procs import conversation, run_client, spawn, start_server
from support.prom import Prometheus

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "socket-snoop.json"
CONTRACTS = ROOT / "docs" / "contracts.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
FILTER = 'job=~"$job",instance=~"$instance"'
# Grafana's $__rate_interval is max($__interval + scrape interval, 4 x scrape interval): 4 s over the last
# minutes with the data source's scrape interval set to prometheus' 1 s. The test takes 10 s (ten scrapes: a
# window still holds two when a loaded machine delays a scrape or two).
RATE_INTERVAL = "10s"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load():
    return json.loads(DASHBOARD.read_text())


def all_panels(dash):
    """Every panel, rows included, and the panels a collapsed row holds."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def queries(dash):
    """[(panel, target)] of every panel that queries."""
    return [(p, t) for p in all_panels(dash) if p["type"] != "row" for t in p["targets"]]


def expand(expr, range_s, instance=None):
    """A panel's expression as Grafana sends it: $__rate_interval and $__range as durations, job and instance
    at All (their allValue, .*) or instance at one value (a multi-value variable's value regex-escaped, as
    Grafana's prometheus data source escapes it inside a PromQL string)."""
    values = {"__rate_interval": RATE_INTERVAL, "__range": f"{range_s}s", "job": ".*",
              "instance": re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", instance) if instance else ".*"}

    def value(m):
        name = m.group(1) or m.group(2)
        assert name in values, f"a template variable the test does not know: {m.group(0)} in {expr}"
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def metric_names(expr):
    return re.findall(r"\b(socketsnoop_\w+|process_\w+|up)\b(?:\{([^}]*)\})?", expr)


def contract_name(name):
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.endswith("_seconds" + suffix):
            return name[:-len(suffix)]
    return name


# -- the JSON, as Grafana reads it -----------------------------------------------------------------------

def test_dashboard_structure():
    dash = load()
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36  # Grafana 9 and later
    assert dash["uid"] == "socket-snoop" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DATASOURCE, v
        assert v["includeAll"] and v["multi"] and v["allValue"] == ".*", v
        assert re.fullmatch(r"label_values\(socketsnoop_\w+(\{.*\})?, %s\)" % name, v["query"]["query"]), v
        assert v["definition"] == v["query"]["query"]
    assert '{job=~"$job"}' in variables["instance"]["query"]["query"]
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    boxes = []
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["w"] > 0 and g["h"] > 0, p["title"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["y"] >= 0, p["title"]
        for title, (x, y, w, h) in boxes:
            assert (g["x"] >= x + w or x >= g["x"] + g["w"] or g["y"] >= y + h or y >= g["y"] + g["h"]), \
                f"{p['title']!r} overlaps {title!r}"
        boxes.append((p["title"], (g["x"], g["y"], g["w"], g["h"])))
    contract = CONTRACTS.read_text()
    assert len(queries(dash)) >= 20
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == DATASOURCE and p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DATASOURCE and t["expr"].strip(), p["title"]
            names = metric_names(t["expr"])
            assert names, t["expr"]
            for name, matchers in names:  # every selector filtered by the variables
                assert matchers == FILTER, (p["title"], name, matchers)
                # a metric the contract names (process_*: prometheus_client's; up: prometheus')
                assert name == "up" or name.startswith("process_") or f"`{contract_name(name)}`" in contract, name


def test_every_query_passes_promtool(tmp_path):
    """Each panel's expression, expanded, as a recording rule: promtool parses them all (and says so when one
    is wrong)."""
    exprs = [expand(t["expr"], 3600) for _, t in queries(load())]

    def check(exprs):
        rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e}
                                                            for i, e in enumerate(exprs)]}]}
        path = tmp_path / "dashboard-rules.yml"
        path.write_text(json.dumps(rules))  # YAML reads JSON
        return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    r = check(exprs)
    assert r.returncode == 0 and f"SUCCESS: {len(exprs)} rules found" in r.stdout, r.stdout + r.stderr
    assert check([exprs[0].replace("rate(", "rate[", 1)]).returncode != 0


# -- every query against the real prometheus scraping real monitors --------------------------------------------

REFUSER = """
import ctypes, socket, time
ctypes.CDLL(None).prctl(15, b"ss-drefuse", 0, 0, 0)
for _ in range({count}):
    try:
        socket.create_connection(({addr!r}, {port}), timeout=5)
    except ConnectionRefusedError:
        print("refused", flush=True)
    time.sleep(0.5)  # spread over scrapes: a series with the process' name must be seen at 0 before it grows
"""

RESETTER = """
import ctypes, socket, struct
ctypes.CDLL(None).prctl(15, b"ss-dreset", 0, 0, 0)
srv = socket.socket()
srv.bind(({addr!r}, {port}))
srv.listen()
for _ in range({count}):
    c = socket.create_connection(({addr!r}, {port}), timeout=5)
    s, _ = srv.accept()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends a reset
    s.close()
    try:
        c.recv(1)
    except ConnectionResetError:
        print("reset", flush=True)
    c.close()
"""


def make_traffic(addr, lossy):
    """Conversations, refused connects, resets, retransmissions; then a flood while `lossy` is stopped."""
    conversation(addr, free_port(), "ss-dsrv", "ss-dcli", count=5)
    for code, port, word in ((REFUSER, free_port(), "refused"), (RESETTER, free_port(), "reset")):
        out, err = spawn(code, addr=addr, port=port, count=5).communicate(timeout=60)
        assert out.count(word) == 5, err
    port = free_port()
    srv = start_server(addr, port, "ss-dlossy", count=6)
    try:
        with nft_drop(port, 30, syn_percent=5):
            run_client(addr, port, "ss-dretx", count=6, size=100000, timeout=60)
        srv.communicate(timeout=60)
    finally:
        srv.kill()
    port = free_port()
    srv = start_server(addr, port, "ss-dflood", count=400)
    lossy.proc.send_signal(signal.SIGSTOP)
    try:
        run_client(addr, port, "ss-dflooder", count=400, size=1)
        srv.communicate(timeout=60)
    finally:
        lossy.proc.send_signal(signal.SIGCONT)
        srv.kill()


def run_query(prom, expr, start, end, ranged):
    """(result, None), or (None, what is wrong): an error from prometheus, no series, or (a range) no number."""
    try:
        if ranged:
            result = prom.api("query_range", query=expr, start=start, end=end, step="1s")["result"]
        else:
            result = prom.api("query", query=expr, time=end)["result"]
    except urllib.error.HTTPError as e:
        return None, f"prometheus refused it: {e.read().decode(errors='replace')}"
    if not result:
        return None, "no series"
    values = [float(v) for r in result for _, v in (r["values"] if ranged else [r["value"]])]
    if ranged and not any(math.isfinite(v) for v in values):
        return None, "no number in any series"
    return result, None


def problems(prom, dash, start, end):
    """What is wrong with each query of the dashboard, and the results: ({(title, refId): problem}, results)."""
    wrong, results = {}, {}
    range_s = math.ceil(end - start) + 5
    for panel, target in queries(dash):
        expr = expand(target["expr"], range_s)
        kinds = [False] + ([True] if target.get("range", True) else [])  # instant always; range as Grafana asks
        for ranged in kinds:
            result, problem = run_query(prom, expr, start, end, ranged)
            if problem:
                wrong[(panel["title"], target["refId"], "range" if ranged else "instant")] = f"{problem}: {expr}"
            else:
                results[(panel["title"], target["refId"], ranged)] = result
    return wrong, results


def peak(results, title, ref="A", **labels):
    """The largest value of a panel's range result, over the series whose labels include `labels`."""
    return max((float(v) for r in results[(title, ref, True)] if labels.items() <= r["metric"].items()
                for _, v in r["values"] if math.isfinite(float(v))), default=0)


def show_the_traffic(results, ia, ib):
    """The panels the test's traffic is about show it (ia: the monitor with comm labels, ib: the lossy one)."""
    results_seen = {r["metric"]["result"] for r in results[("Connections by result", "A", True)]}
    assert {"closed", "refused", "reset-sent", "reset-received"} <= results_seen, results_seen
    assert peak(results, "Failed connects by cause", cause="refused") > 0
    rows = {(r["metric"]["instance"], r["metric"].get("comm"), r["metric"]["cause"])
            for r in results[("Failed connects by host, process and cause", "A", False)]}
    assert {(ia, "ss-drefuse", "refused"), (ib, None, "refused")} <= rows, rows
    assert peak(results, "Resets", "A") > 0 and peak(results, "Resets", "B") > 0
    assert peak(results, "Retransmissions") > 0
    assert peak(results, "Events lost by where", instance=ib, where="kernel_ring") > 0
    assert float(results[("Events lost", "A", False)][0]["value"][1]) > 0
    assert {r["metric"]["instance"] for r in results[("Connections by host", "A", True)]} == {ia, ib}
    for title in ("Handshake time", "Round-trip time", "Connection duration"):
        for ref in "ABC":
            assert peak(results, title, ref) > 0, (title, ref)


def variables_list_and_filter(prom, dash, ia, ib, start, end):
    """label_values(metric{...}, label), as Grafana asks prometheus for a variable's values, lists the job and
    both monitors; one instance picked filters a panel to it."""
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name, want in (("job", ["socket-snoop"]), ("instance", sorted([ia, ib]))):
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["query"]["query"])
        series = m.group(1).replace("$job", "socket-snoop")
        assert prom.api(f"label/{m.group(2)}/values", **{"match[]": series}) == want
    expr = expand(next(t["expr"] for p, t in queries(dash) if p["title"] == "Connections by host"), 60, ia)
    assert {r["metric"]["instance"] for r in run_query(prom, expr, start, end, True)[0]} == {ia}, expr


def broken_queries_are_caught(prom, dash, start, end):
    """A misspelled metric (no series) and an expression prometheus cannot parse are each reported."""
    broken = json.loads(json.dumps(dash).replace("socketsnoop_connections_total", "socketsnoop_conections_total")
                        .replace("process_resident_memory_bytes{", "process_resident_memory_bytes{{"))
    wrong, _ = problems(prom, broken, start, end)
    assert {k[0] for k in wrong} == {"Connections / s", "Connections by result", "Connections by host",
                                     "Monitor memory"}, wrong
    assert all("no series" in v for k, v in wrong.items() if k[0] != "Monitor memory"), wrong
    assert "prometheus refused it" in wrong[("Monitor memory", "A", "instant")], wrong


@pytest.mark.bpf
def test_every_panel_query_returns_data(monitor, tmp_path):
    """Two monitors (one with --metrics-labels comm; one with a tiny buffer, stopped during a flood, so it loses
    events), the real prometheus scraping both every second, real traffic; then every panel's query, as Grafana
    would send it with All selected: each parses and returns series (range queries: numbers), the panels show
    the traffic, the variables' label_values list both monitors and one instance picked filters to it; and a
    misspelled metric or a broken expression is caught."""
    addr = private_loopback()
    pa, pb = free_port(), free_port()
    a = monitor("--metrics", str(pa), "--metrics-labels", "comm", "-a", addr, "-q", "--no-log-file", "--no-report")
    # b: a log file, so that its events cross to user space, where its stopped reader loses them
    b = monitor("--metrics", str(pb), "--buffer-size", "64K", "-a", addr, "-q", "--no-report", log_name="lossy.log")
    ia, ib = f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"
    dash = load()
    started = time.monotonic()
    with Prometheus(tmp_path, [ia, ib]) as prom:
        start = time.time() - 5
        make_traffic(addr, b)
        lost = f'socketsnoop_events_lost_total{{instance="{ib}",where="kernel_ring"}} > 0'
        deadline = time.monotonic() + 30
        while not prom.query(lost) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # the last counts in three more scrapes
        end = time.time()
        wrong, results = problems(prom, dash, start, end)
        assert not wrong, "\n".join(f"{k}: {v}" for k, v in wrong.items())
        show_the_traffic(results, ia, ib)
        variables_list_and_filter(prom, dash, ia, ib, start, end)
        broken_queries_are_caught(prom, dash, start, end)
    a.stop()
    b.stop()
    assert b.totals()["lost"] > 0
    print(f"dashboard test: {len(queries(dash))} queries, {time.monotonic() - started:.0f} s")
