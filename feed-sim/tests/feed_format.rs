//! Keeps `proto/FEED_FORMAT.md` honest: its worked example must be exactly
//! what the codec produces, and its size tables must match the constants.

use quotecast_proto::feed::{
    Message, Packet, PacketBuilder, SessionId, FORMAT_VERSION, HEADER_LEN, QUOTE_LEN, SNAPSHOT_MARKER_LEN,
    SYMBOL_DIRECTORY_LEN, SYMBOL_SNAPSHOT_LEN, SYSTEM_EVENT_LEN, TRADE_LEN, TRADING_ACTION_LEN,
};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/FEED_FORMAT.md");
    std::fs::read_to_string(path).expect("proto/FEED_FORMAT.md exists")
}

/// The hex bytes of the first code block after "### Example": the leading
/// two-digit hex tokens of each line (the rest is commentary).
fn example_bytes(doc: &str) -> Vec<u8> {
    let after = &doc[doc.find("### Example").expect("example section")..];
    let block = after.split("```").nth(1).expect("example code block");
    block
        .lines()
        .flat_map(|l| {
            l.split_whitespace()
                .take_while(|t| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit()))
                .map(|t| u8::from_str_radix(t, 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn worked_example_is_what_the_codec_encodes() {
    let mut b = PacketBuilder::new(SessionId::from_text("S1"), 42, 1400);
    assert!(b.push(&Message::Trade { locate: 7, symbol_seq: 3, ts: 5, px: 1_234_500, sz: 100 }));
    let want = b.finish().to_vec();
    let got = example_bytes(&doc());
    assert_eq!(got, want, "FEED_FORMAT.md example differs from the codec");
    assert_eq!(got.len(), 49);
    assert!(doc().contains("49 bytes in all"));
    assert_eq!(Packet::decode(&got).unwrap().messages().next().unwrap().0, 42);
}

#[test]
fn size_tables_match_the_constants() {
    let d = doc();
    assert!(d.starts_with(&format!("# quotecast feed wire format, version {FORMAT_VERSION}\n")));
    assert!(d.contains(&format!("This document describes **format version {FORMAT_VERSION}**")));
    assert!(d.contains(&format!("### Packet header ({HEADER_LEN} bytes")));
    assert!(d.contains(&format!("### `R`: symbol directory ({SYMBOL_DIRECTORY_LEN} bytes)")));
    assert!(d.contains(&format!("### `Q`: quote ({QUOTE_LEN} bytes)")));
    assert!(d.contains(&format!("### `T`: trade ({TRADE_LEN} bytes)")));
    assert!(d.contains(&format!("### `H`: trading action ({TRADING_ACTION_LEN} bytes)")));
    assert!(d.contains(&format!("### `S`: system event ({SYSTEM_EVENT_LEN} bytes)")));
    assert!(d.contains(&format!("### `B`: snapshot cycle begin ({SNAPSHOT_MARKER_LEN} bytes)")));
    assert!(d.contains(&format!("### `X`: symbol snapshot ({SYMBOL_SNAPSHOT_LEN} bytes)")));
    assert!(d.contains(&format!("### `E`: snapshot cycle end ({SNAPSHOT_MARKER_LEN} bytes)")));
    // Each layout table's rows are contiguous and add up to the size.
    for (title, len) in [
        ("### Packet header", HEADER_LEN),
        ("### `R`", SYMBOL_DIRECTORY_LEN),
        ("### `Q`", QUOTE_LEN),
        ("### `T`", TRADE_LEN),
        ("### `H`", TRADING_ACTION_LEN),
        ("### `S`", SYSTEM_EVENT_LEN),
        ("### `B`", SNAPSHOT_MARKER_LEN),
        ("### `X`", SYMBOL_SNAPSHOT_LEN),
        ("### `E`", SNAPSHOT_MARKER_LEN),
    ] {
        let section = &d[d.find(title).unwrap()..];
        // Up to the next heading of the same or a higher level.
        let end = ["\n### ", "\n## "].iter().filter_map(|h| section[4..].find(h)).min();
        let section = &section[..end.map_or(section.len(), |i| i + 4)];
        let mut next = 0;
        for row in section.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (Ok(off), Ok(size)) = (cells[1].parse::<usize>(), cells[2].parse::<usize>()) else {
                continue;
            };
            assert_eq!(off, next, "{title}: row {row:?} is not contiguous");
            next = off + size;
        }
        assert_eq!(next, len, "{title}: fields add up to {next}, the codec says {len}");
    }
}
