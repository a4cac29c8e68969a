#!/usr/bin/env python3
"""Adapts the uWebSockets.js peer (../shared/peers/uws/server_quotecast_uws.js,
written for feed format v1) to feed format v2 (proto/FEED_FORMAT.md): `Q` is
39 bytes and `T` 27, both with the symbol's u32 sequence at offset 3 (every
later field moves by 4), and `H`/`S` messages are valid (the peer ignores
them, as it ignores everything but R/Q/T). Nothing else changes: the peer's
own per-symbol seq (+1 per applied Q/T) equals the feed's symbol_seq.

usage: uws_feed_v2.py IN.js OUT.js   (fails if the peer's text has moved)
"""
import sys

EDITS = [
    # validate(): v2 sizes, and H (16) / S (11) are well-formed messages.
    ("if (!((t === 0x52 && len === 11) || (t === 0x51 && len === 35) || (t === 0x54 && len === 23))) return -1;",
     "if (!((t === 0x52 && len === 11) || (t === 0x51 && len === 39) || (t === 0x54 && len === 27)"
     " || (t === 0x48 && len === 16) || (t === 0x53 && len === 11))) return -1;"),
    ("} else if (t === 0x51 && len === 35) { // Q", "} else if (t === 0x51 && len === 39) { // Q"),
    ("} else if (t === 0x54 && len === 23) { // T", "} else if (t === 0x54 && len === 27) { // T"),
    ("s.bidHi = buf.readUInt32BE(off + 11); s.bidLo = buf.readUInt32BE(off + 15); s.bidSz = buf.readUInt32BE(off + 19);",
     "s.bidHi = buf.readUInt32BE(off + 15); s.bidLo = buf.readUInt32BE(off + 19); s.bidSz = buf.readUInt32BE(off + 23);"),
    ("s.askHi = buf.readUInt32BE(off + 23); s.askLo = buf.readUInt32BE(off + 27); s.askSz = buf.readUInt32BE(off + 31);",
     "s.askHi = buf.readUInt32BE(off + 27); s.askLo = buf.readUInt32BE(off + 31); s.askSz = buf.readUInt32BE(off + 35);"),
    ("s.kind = 2; s.lastHi = buf.readUInt32BE(off + 11); s.lastLo = buf.readUInt32BE(off + 15); s.lastSz = buf.readUInt32BE(off + 19);",
     "s.kind = 2; s.lastHi = buf.readUInt32BE(off + 15); s.lastLo = buf.readUInt32BE(off + 19); s.lastSz = buf.readUInt32BE(off + 23);"),
    ("s.evHi = buf.readUInt32BE(off + 3); s.evLo = buf.readUInt32BE(off + 7);",
     "s.evHi = buf.readUInt32BE(off + 7); s.evLo = buf.readUInt32BE(off + 11);"),
]

def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 64
    text = open(sys.argv[1], encoding="utf-8").read()
    for old, new in EDITS:
        if text.count(old) != 1:
            print(f"uws_feed_v2: expected once, found {text.count(old)}: {old[:60]}...", file=sys.stderr)
            return 1
        text = text.replace(old, new)
    # The peer loads its proto relative to the project root and its modules
    # from PEERS_WORK; it runs from a copy, so nothing else needs to move.
    open(sys.argv[2], "w", encoding="utf-8").write(text)
    return 0

if __name__ == "__main__":
    sys.exit(main())
