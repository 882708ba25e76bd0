//! The last touches on an SDP answer before it goes out.

/// Adds `a=rtcp-mux-only` after each `a=rtcp-mux` (RFC 9725 §4.4.1 asks for
/// it in every bundled m-section), `a=inactive` to a rejected m-section
/// (port 0) that has no direction (rtc writes none; str0m refuses an answer
/// with a section without one), and guarantees CRLF line endings, which
/// OBS and medooze's client rely on.
pub fn finish_answer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    let has_mux_only = sdp.contains("a=rtcp-mux-only");
    // The current m-section is rejected and has not said its direction.
    let mut undirected_rejection = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("m=") {
            if undirected_rejection {
                out.push_str("a=inactive\r\n");
            }
            undirected_rejection = line.split(' ').nth(1) == Some("0");
        } else if DIRECTIONS.contains(&line) {
            undirected_rejection = false;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" && !has_mux_only {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    if undirected_rejection {
        out.push_str("a=inactive\r\n");
    }
    out
}

const DIRECTIONS: [&str; 4] = ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"];

#[cfg(test)]
mod tests {
    use super::finish_answer;

    #[test]
    fn answer_gets_rtcp_mux_only_and_crlf() {
        let out = finish_answer(
            "v=0\nm=audio 9 UDP/TLS/RTP/SAVPF 111\na=rtcp-mux\nm=video 9 x 96\r\na=rtcp-mux\r\n",
        );
        assert_eq!(out.matches("a=rtcp-mux-only\r\n").count(), 2);
        assert!(!out.replace("\r\n", "").contains('\n'));
    }

    #[test]
    fn a_rejected_section_says_it_is_inactive() {
        let out = finish_answer(
            "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\na=sendonly\r\nm=audio 0 x 0\r\na=mid:2\r\na=inactive\r\nm=video 0 x 0\r\n",
        );
        assert_eq!(
            out,
            "v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=inactive\r\nm=video 9 x 96\r\na=mid:1\r\na=sendonly\r\nm=audio 0 x 0\r\na=mid:2\r\na=inactive\r\nm=video 0 x 0\r\na=inactive\r\n"
        );
    }
}
