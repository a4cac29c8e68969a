#!/usr/bin/env python3
"""Turns scripts/bench-peer.sh's results.jsonl into Markdown: one table per
scenario, quotecast beside the uWebSockets.js peer (and an older quotecast,
"before", when the run had one), with ratios.

usage: peer_report.py results.jsonl
"""
import json
import sys

NAMES = {"before": "quotecast before", "quotecast": "quotecast", "uws": "uWebSockets.js"}


def load(path):
    rows = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if line:
            r = json.loads(line)
            rows[(r["tag"], r["rate"], r["server"])] = r
    return rows


def ratio(a, b, lower_is_better=True):
    if not a or not b:
        return "n/a"
    x = a / b
    better = x <= 1 if lower_is_better else x >= 1
    return f"{x:.2f}x ({'better' if better else 'worse'})"


def per_frame(r, value):
    fps = r.get("framesPerSec") or 0
    return value / fps if fps else 0


def send_calls(r):
    return sum(r.get(k, 0) for k in ("sys_enter_write", "sys_enter_writev", "sys_enter_sendto", "sys_enter_sendmsg"))


def e2e(r, p):
    return r.get("e2eUs", {}).get(p, 0)


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 64
    rows = load(sys.argv[1])
    servers = [s for s in NAMES if any(k[2] == s for k in rows)]
    out = []
    p = out.append

    def get(tag, rate):
        return {s: rows.get((tag, rate, s)) for s in servers}

    def header(first, cols):
        p("| " + first + " | " + " | ".join(cols) + " |")
        p("|---" * (len(cols) + 1) + "|")

    ratio_cols = []
    if "quotecast" in servers and "uws" in servers:
        ratio_cols.append(("quotecast / uWS", "quotecast", "uws"))
    if "quotecast" in servers and "before" in servers:
        ratio_cols.append(("after / before", "quotecast", "before"))

    def metric_table(title, got, lines):
        p(f"### {title}")
        p("")
        header("", [NAMES[s] for s in servers] + [c[0] for c in ratio_cols])
        for label, f, lower, fmt in lines:
            vals = {s: (f(r) if r else None) for s, r in got.items()}
            cells = [fmt.format(v) if v is not None else "n/a" for v in (vals[s] for s in servers)]
            cells += [ratio(vals[a], vals[b], lower) for _, a, b in ratio_cols]
            p(f"| {label} | " + " | ".join(cells) + " |")
        p("")

    got = get("cpu", 1000)
    if any(got.values()):
        metric_table("1000 connections x 50 symbols, 1000 ticks/s (~167k updates/s)", got, [
            ("delivered updates/s", lambda r: r.get("updatesPerSec", 0), False, "{:,.0f}"),
            ("frames/s", lambda r: r.get("framesPerSec", 0), False, "{:,.0f}"),
            ("server cores", lambda r: r.get("serverCores", 0), True, "{:.2f}"),
            ("server CPU per delivered update (µs)",
             lambda r: r["serverCores"] * 1e6 / (r.get("updatesPerSec") or 1), True, "{:.2f}"),
            ("server CPU per frame (µs)", lambda r: per_frame(r, r["serverCores"] * 1e6), True, "{:.2f}"),
            ("send syscalls per frame", lambda r: per_frame(r, send_calls(r)), True, "{:.2f}"),
            ("all syscalls per frame", lambda r: per_frame(r, r.get("sys_enter", 0)), True, "{:.2f}"),
            ("e2e p50 (µs)", lambda r: e2e(r, "p50"), True, "{:,.0f}"),
            ("e2e p99 (µs)", lambda r: e2e(r, "p99"), True, "{:,.0f}"),
        ])

    rates = sorted({k[1] for k in rows if k[0] == "ladder"})
    if rates:
        p("### By feed rate, 1000 x 50 (e2e in µs; server cores)")
        p("")
        cols = []
        for s in servers:
            cols += [f"{NAMES[s]} updates/s", "p50", "p99", "cores"]
        cols += [f"p99 {c[0]}" for c in ratio_cols] + [f"cores {c[0]}" for c in ratio_cols]
        header("ticks/s", cols)
        for rate in rates:
            got = get("ladder", rate)
            cells = []
            for s in servers:
                r = got[s] or {}
                cells += [f"{r.get('updatesPerSec', 0):,.0f}", f"{e2e(r, 'p50'):,}", f"{e2e(r, 'p99'):,}",
                          f"{r.get('serverCores', 0):.2f}"]
            for _, a, b in ratio_cols:
                cells.append(ratio(e2e(got[a] or {}, "p99"), e2e(got[b] or {}, "p99")))
            for _, a, b in ratio_cols:
                cells.append(ratio((got[a] or {}).get("serverCores"), (got[b] or {}).get("serverCores")))
            p(f"| {rate:,} | " + " | ".join(cells) + " |")
        p("")

    for tag, rate, title in (("max", 150000, "1000 x 10 at 150k ticks/s (saturating)"),
                             ("ingest", 300000, "1000 x 10 at 300k ticks/s: does client load cost feed data?")):
        got = get(tag, rate)
        if not any(got.values()):
            continue
        p(f"### {title}")
        p("")
        header("", ["delivered updates/s", "frames/s", "e2e p50 µs", "e2e p99 µs", "server cores",
                    "feed messages sent", "applied by the server", "gaps", "missed"])
        for s in servers:
            r = got[s]
            if r:
                p(f"| {NAMES[s]} | {r.get('updatesPerSec', 0):,.0f} | {r.get('framesPerSec', 0):,.0f} | "
                  f"{e2e(r, 'p50'):,} | {e2e(r, 'p99'):,} | {r.get('serverCores', 0):.2f} | "
                  f"{r.get('feedMessages', 0):,} | {r.get('srvMessages', 0):,} | {r.get('srvGaps', 0)} | "
                  f"{r.get('srvMissed', 0):,} |")
        for label, a, b in ratio_cols:
            if got[a] and got[b]:
                p("")
                p(f"Delivered updates/s, {label}: {ratio(got[a].get('updatesPerSec'), got[b].get('updatesPerSec'), False)}.")
        p("")

    got = get("idle", 10)
    if any(got.values()):
        p("### Memory per idle subscribed connection (1 symbol each)")
        p("")
        header("", ["connections", "server RSS per connection (B)", "kernel slab per connection (B, both ends)"])
        for s in servers:
            r = got[s]
            if r:
                n = max(r.get("connected", 0), 1)
                rss = (r["serverRssMB"] * 1024 - r["baseRssKB"]) * 1024 / n
                p(f"| {NAMES[s]} | {n:,} | {rss:,.0f} | {r.get('slabKBDelta', 0) * 1024 / n:,.0f} |")
        p("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
