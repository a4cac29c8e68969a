#!/usr/bin/env python3
"""Turns scripts/bench-peer.sh's results.jsonl into Markdown: one table per
scenario, quotecast beside the uWebSockets.js peer, with ratios.

usage: peer_report.py results.jsonl
"""
import json
import sys


def load(path):
    rows = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        rows[(r["tag"], r["rate"], r["server"])] = r
    return rows


def ratio(q, u, lower_is_better=True):
    if not q or not u:
        return "n/a"
    x = q / u
    word = ("better" if x <= 1 else "worse") if lower_is_better else ("better" if x >= 1 else "worse")
    return f"{x:.2f}x ({word})"


def per_frame_cpu_us(r):
    fps = r.get("framesPerSec") or 0
    return r["serverCores"] * 1e6 / fps if fps else 0


def syscalls_per_frame(r):
    fps = r.get("framesPerSec") or 0
    return r.get("sys_enter", 0) / fps if fps else 0


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 64
    rows = load(sys.argv[1])
    out = []
    p = out.append

    def both(tag, rate):
        return rows.get((tag, rate, "quotecast")), rows.get((tag, rate, "uws"))

    q, u = both("cpu", 1000)
    if q:
        p("### 1000 connections x 50 symbols, 1000 ticks/s (~167k updates/s)")
        p("")
        p("| | quotecast | uWebSockets.js | quotecast / uWS |")
        p("|---|---:|---:|---:|")
        u = u or {}
        def line(label, f, lower=True, fmt="{:.2f}"):
            a, b = f(q), f(u) if u else None
            p(f"| {label} | {fmt.format(a)} | {fmt.format(b) if b is not None else 'n/a'} | {ratio(a, b, lower)} |")
        line("delivered updates/s", lambda r: r.get("updatesPerSec", 0), False, "{:,.0f}")
        line("frames/s", lambda r: r.get("framesPerSec", 0), False, "{:,.0f}")
        line("server cores", lambda r: r.get("serverCores", 0))
        line("server CPU per frame (µs)", per_frame_cpu_us)
        line("send syscalls per frame (write+writev+sendto+sendmsg)",
             lambda r: sum(r.get(k, 0) for k in ("sys_enter_write", "sys_enter_writev", "sys_enter_sendto",
                                                 "sys_enter_sendmsg")) / (r.get("framesPerSec") or 1))
        line("all syscalls per frame", syscalls_per_frame)
        line("epoll_wait per frame", lambda r: r.get("sys_enter_epoll_wait", 0) / (r.get("framesPerSec") or 1))
        line("e2e p50 (µs)", lambda r: r.get("e2eUs", {}).get("p50", 0), True, "{:,.0f}")
        line("e2e p99 (µs)", lambda r: r.get("e2eUs", {}).get("p99", 0), True, "{:,.0f}")
        p("")

    rates = sorted({k[1] for k in rows if k[0] == "ladder"})
    if rates:
        p("### e2e latency by rate, 1000 x 50 (C client)")
        p("")
        p("| ticks/s | updates/s (qc / uWS) | qc p50 µs | qc p99 µs | uWS p50 µs | uWS p99 µs | p99 qc / uWS | server cores (qc / uWS) |")
        p("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for rate in rates:
            q, u = both("ladder", rate)
            q, u = q or {}, u or {}
            qe, ue = q.get("e2eUs", {}), u.get("e2eUs", {})
            p(f"| {rate:,} | {q.get('updatesPerSec', 0):,.0f} / {u.get('updatesPerSec', 0):,.0f} | "
              f"{qe.get('p50', 0):,} | {qe.get('p99', 0):,} | {ue.get('p50', 0):,} | {ue.get('p99', 0):,} | "
              f"{ratio(qe.get('p99'), ue.get('p99'))} | {q.get('serverCores', 0):.2f} / {u.get('serverCores', 0):.2f} |")
        p("")

    for tag, rate, title in (("max", 150000, "1000 x 10 at 150k ticks/s (saturating)"),
                             ("ingest", 300000, "1000 x 10 at 300k ticks/s: does client load cost feed data?")):
        q, u = both(tag, rate)
        if not q and not u:
            continue
        p(f"### {title}")
        p("")
        p("| | delivered updates/s | frames/s | e2e p50 µs | e2e p99 µs | server cores | feed messages sent | applied by the server | gaps | missed |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, r in (("quotecast", q), ("uWebSockets.js", u)):
            if not r:
                continue
            e = r.get("e2eUs", {})
            p(f"| {name} | {r.get('updatesPerSec', 0):,.0f} | {r.get('framesPerSec', 0):,.0f} | {e.get('p50', 0):,} | "
              f"{e.get('p99', 0):,} | {r.get('serverCores', 0):.2f} | {r.get('feedMessages', 0):,} | "
              f"{r.get('srvMessages', 0):,} | {r.get('srvGaps', 0)} | {r.get('srvMissed', 0):,} |")
        if q and u:
            p("")
            p(f"Delivered updates/s, quotecast / uWS: {ratio(q.get('updatesPerSec'), u.get('updatesPerSec'), False)}.")
        p("")

    q, u = both("idle", 10)
    if q:
        p("### Memory per idle subscribed connection")
        p("")
        p("| | connections | server RSS per connection (B) | kernel slab per connection (B, both ends) |")
        p("|---|---:|---:|---:|")
        for name, r in (("quotecast", q), ("uWebSockets.js", u)):
            if not r:
                continue
            n = max(r.get("connected", 0), 1)
            per = (r["serverRssMB"] * 1024 - r["baseRssKB"]) * 1024 / n
            kern = r.get("slabKBDelta", 0) * 1024 / n
            p(f"| {name} | {n:,} | {per:,.0f} | {kern:,.0f} |")
        p("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
