//! Opus packets out of an Ogg file (RFC 7845), for the publisher's audio.

#[derive(Debug, thiserror::Error)]
pub enum OggError {
    /// A page does not start with `OggS` or is cut short.
    #[error("malformed Ogg page at byte {0}")]
    Page(usize),
    /// The first packet is not an `OpusHead`.
    #[error("not an Ogg Opus stream")]
    NotOpus,
}

/// The audio packets of an Ogg Opus stream, without its two header packets.
pub fn opus_packets(file: &[u8]) -> Result<Vec<Vec<u8>>, OggError> {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    while at < file.len() {
        let header = file.get(at..at + 27).ok_or(OggError::Page(at))?;
        if &header[..4] != b"OggS" {
            return Err(OggError::Page(at));
        }
        let segments = header[26] as usize;
        let lacing = file
            .get(at + 27..at + 27 + segments)
            .ok_or(OggError::Page(at))?;
        let mut body = at + 27 + segments;
        for &len in lacing {
            let len = len as usize;
            partial.extend_from_slice(file.get(body..body + len).ok_or(OggError::Page(at))?);
            body += len;
            // A lacing value of 255 continues the packet in the next segment.
            if len < 255 {
                packets.push(std::mem::take(&mut partial));
            }
        }
        at = body;
    }
    if !packets.first().is_some_and(|p| p.starts_with(b"OpusHead")) {
        return Err(OggError::NotOpus);
    }
    // OpusHead and OpusTags.
    Ok(packets.split_off(2.min(packets.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_is_four_seconds_of_20ms_packets() {
        let packets = opus_packets(include_bytes!("../../tests/fixtures/audio.ogg")).unwrap();
        assert!((199..=201).contains(&packets.len()), "{}", packets.len());
        // One 20 ms frame each (RFC 6716 TOC: a 20 ms configuration, code 0):
        // the publisher spaces them 20 ms apart.
        let twenty_ms = [1, 5, 9, 13, 15, 19, 23, 27, 31];
        assert!(
            packets
                .iter()
                .all(|p| twenty_ms.contains(&(p[0] >> 3)) && p[0] & 3 == 0)
        );
    }

    #[test]
    fn truncated_page_is_an_error() {
        let file = include_bytes!("../../tests/fixtures/audio.ogg");
        assert!(matches!(opus_packets(&file[..100]), Err(OggError::Page(_))));
        assert!(matches!(opus_packets(b"nope"), Err(OggError::Page(0))));
    }
}
