//! The last touches on an SDP answer before it goes out.

/// Adds `a=rtcp-mux-only` after each `a=rtcp-mux` (RFC 9725 §4.4.1 asks for
/// it in every bundled m-section) and guarantees CRLF line endings, which
/// OBS and medooze's client rely on.
pub fn finish_answer(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    let has_mux_only = sdp.contains("a=rtcp-mux-only");
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        out.push_str(line);
        out.push_str("\r\n");
        if line == "a=rtcp-mux" && !has_mux_only {
            out.push_str("a=rtcp-mux-only\r\n");
        }
    }
    out
}

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
}
