//! Parser for `application/trickle-ice-sdpfrag` bodies (RFC 8840) as carried
//! by WHIP/WHEP PATCH requests (RFC 9725 §4.3), and writer for the body of the
//! 200 response to an ICE restart.
//!
//! The body is attacker-controlled, so parsing never panics and is bounded in
//! lines and line length. It is deliberately lenient about what real clients
//! send: CRLF or bare LF line endings, ufrag/pwd at session level (medooze
//! whip.js, meetecho simple-whip-client) or inside an m-section, `RTP/AVP` as
//! well as `UDP/TLS/RTP/SAVPF` m-lines, candidates with component 0 (Eyevinn),
//! and stray whole-SDP lines such as `v=` or `o=`, which are ignored.

/// Longest accepted line in bytes, excluding its line terminator.
const MAX_LINE_LEN: usize = 4096;
/// Most lines accepted in one body, blank lines included.
const MAX_LINES: usize = 1000;

/// A parsed trickle-ice-sdpfrag body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag` (session level or in any m-section; the first one wins).
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, same rule.
    pub ice_pwd: Option<String>,
    /// Candidates in order, each tagged with the mid and m-line index of the section they appeared in.
    pub candidates: Vec<FragCandidate>,
    /// True when `a=end-of-candidates` appeared anywhere.
    pub end_of_candidates: bool,
}

/// One `a=candidate` line of a fragment and the m-section it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragCandidate {
    /// The candidate attribute value WITHOUT the leading "candidate:" (e.g. "1 1 udp 2130706431 10.0.0.1 5000 typ host").
    pub candidate: String,
    /// `a=mid` of the m-section it was in; None if it appeared at session level or the section had no mid.
    pub mid: Option<String>,
    /// 0-based index of the m-section it was in (0 when at session level).
    pub mline_index: u16,
}

/// Why a fragment was rejected (maps to HTTP 400).
///
/// Variants carry the 1-based line number rather than line content so that the
/// message can be logged or echoed to the client without reflecting input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragError {
    /// The body has more than 1000 lines.
    #[error("sdpfrag has more than {MAX_LINES} lines")]
    TooManyLines,
    /// A line is longer than 4096 bytes.
    #[error("sdpfrag line {0} is longer than {MAX_LINE_LEN} bytes")]
    LineTooLong(usize),
    /// A line is not of the form `x=...` with a single ASCII letter before `=`.
    #[error("sdpfrag line {0} is not an SDP line of the form x=value")]
    MalformedLine(usize),
    /// An `m=` line has fewer than four fields.
    #[error("sdpfrag line {0}: m= line needs <media> <port> <proto> <fmt>")]
    MalformedMediaLine(usize),
    /// An `a=ice-ufrag` value is empty or contains non-ICE characters.
    #[error("sdpfrag line {0}: ice-ufrag must be non-empty ALPHA / DIGIT / + / /")]
    InvalidIceUfrag(usize),
    /// An `a=ice-pwd` value is empty or contains non-ICE characters.
    #[error("sdpfrag line {0}: ice-pwd must be non-empty ALPHA / DIGIT / + / /")]
    InvalidIcePwd(usize),
    /// An `a=mid` value is empty.
    #[error("sdpfrag line {0}: mid is empty")]
    EmptyMid(usize),
    /// An `a=candidate` value does not have the RFC 8839 shape; the second
    /// field says which part is wrong.
    #[error("sdpfrag line {0}: invalid candidate ({1})")]
    InvalidCandidate(usize, &'static str),
}

/// RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/".
fn is_ice_chars(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Non-empty ASCII digits only; `str::parse` alone would also accept a sign.
fn is_digits(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// Checks the fixed prefix of an RFC 8839 candidate value. Transport and
/// address are left alone: the caller discards unsupported transports and
/// mDNS names silently (RFC 9725 §4.3.2) instead of failing the request.
fn check_candidate(value: &str) -> Result<(), &'static str> {
    let f: Vec<&str> = value.split_ascii_whitespace().take(8).collect();
    if f.len() < 8 {
        return Err("fewer than 8 fields");
    }
    if !is_digits(f[1]) || f[1].parse::<u16>().is_err() {
        return Err("bad component");
    }
    // ABNF is 1*10DIGIT; not range-checked further since it is only relayed.
    if !is_digits(f[3]) || f[3].len() > 10 {
        return Err("bad priority");
    }
    match f[5].parse::<u16>() {
        Ok(_) if !is_digits(f[5]) => return Err("bad port"),
        // Nothing can be sent to port 0 (TCP active candidates use 9).
        Ok(0) => return Err("port 0"),
        Ok(_) => {}
        Err(_) => return Err("bad port"),
    }
    if f[6] != "typ" {
        return Err("missing typ");
    }
    Ok(())
}

impl SdpFrag {
    /// Parses a fragment body.
    pub fn parse(body: &str) -> Result<SdpFrag, FragError> {
        let mut frag = SdpFrag::default();
        // None until the first m= line: candidates before it are session level.
        let mut section: Option<u16> = None;
        let mut section_mid: Option<String> = None;
        // Index into `frag.candidates` where the current section starts, so a
        // mid that follows its candidates can still be applied to them.
        let mut section_first_candidate = 0;

        for (idx, raw) in body.lines().enumerate() {
            let line = idx + 1;
            if idx >= MAX_LINES {
                return Err(FragError::TooManyLines);
            }
            if raw.len() > MAX_LINE_LEN {
                return Err(FragError::LineTooLong(line));
            }
            let text = raw.trim_end();
            if text.is_empty() {
                continue;
            }
            let bytes = text.as_bytes();
            if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b'=' {
                return Err(FragError::MalformedLine(line));
            }
            // Both checked bytes are ASCII, so index 2 is a char boundary.
            let value = &text[2..];
            match bytes[0] {
                b'm' => {
                    if value.split_ascii_whitespace().nth(3).is_none() {
                        return Err(FragError::MalformedMediaLine(line));
                    }
                    // At most MAX_LINES sections, so this cannot overflow u16.
                    section = Some(section.map_or(0, |s| s.saturating_add(1)));
                    section_mid = None;
                    section_first_candidate = frag.candidates.len();
                }
                b'a' => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, v),
                        None => (value, ""),
                    };
                    match name {
                        "ice-ufrag" => {
                            if !is_ice_chars(val) {
                                return Err(FragError::InvalidIceUfrag(line));
                            }
                            frag.ice_ufrag.get_or_insert_with(|| val.to_owned());
                        }
                        "ice-pwd" => {
                            if !is_ice_chars(val) {
                                return Err(FragError::InvalidIcePwd(line));
                            }
                            frag.ice_pwd.get_or_insert_with(|| val.to_owned());
                        }
                        "mid" => {
                            let mid = val.trim();
                            if mid.is_empty() {
                                return Err(FragError::EmptyMid(line));
                            }
                            // A session-level mid names no section; a repeated
                            // mid in one section keeps the first.
                            if section.is_some() && section_mid.is_none() {
                                for c in frag.candidates.iter_mut().skip(section_first_candidate) {
                                    c.mid = Some(mid.to_owned());
                                }
                                section_mid = Some(mid.to_owned());
                            }
                        }
                        "candidate" => {
                            let cand = val.trim();
                            check_candidate(cand)
                                .map_err(|reason| FragError::InvalidCandidate(line, reason))?;
                            frag.candidates.push(FragCandidate {
                                candidate: cand.to_owned(),
                                mid: section_mid.clone(),
                                mline_index: section.unwrap_or(0),
                            });
                        }
                        "end-of-candidates" => frag.end_of_candidates = true,
                        // ice-options, group:BUNDLE and anything else carry
                        // nothing the gateway acts on in a PATCH.
                        _ => {}
                    }
                }
                // Some clients copy v=/o=/s=/c=/t= lines from their full SDP.
                _ => {}
            }
        }
        Ok(frag)
    }
}

/// Writes the body of a 200 response to an ICE restart: session-level ufrag/pwd, then
/// `a=ice-options:trickle` if `trickle` is true, then for the first m-section
/// (`m=<kind> 9 UDP/TLS/RTP/SAVPF 0`, `a=mid:<mid>`) every candidate as `a=candidate:<value>`
/// and finally `a=end-of-candidates`. Every line ends in CRLF (clients regex-parse `\r\n`).
pub fn restart_answer(
    ufrag: &str,
    pwd: &str,
    trickle: bool,
    kind: &str,
    mid: &str,
    candidates: &[String],
) -> String {
    use std::fmt::Write;
    // Writing to a String cannot fail, so the fmt::Results are discarded.
    let mut out = String::new();
    let _ = write!(out, "a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    if trickle {
        out.push_str("a=ice-options:trickle\r\n");
    }
    let _ = write!(out, "m={kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n");
    for c in candidates {
        // ICE agents often render candidates with the attribute name included;
        // tolerate that rather than emit "a=candidate:candidate:".
        let c = c.trim();
        let _ = write!(
            out,
            "a=candidate:{}\r\n",
            c.strip_prefix("candidate:").unwrap_or(c)
        );
    }
    out.push_str("a=end-of-candidates\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(f: &SdpFrag) -> Vec<(Option<&str>, u16)> {
        f.candidates
            .iter()
            .map(|c| (c.mid.as_deref(), c.mline_index))
            .collect()
    }

    #[test]
    fn rfc8840_example() {
        let body = "a=ice-options:trickle ice2\r\n\
                    a=group:BUNDLE sdparta_0 sdparta_1\r\n\
                    m=audio 9 RTP/AVP 0\r\n\
                    a=mid:sdparta_0\r\n\
                    a=ice-pwd:asd88fgpdd777uzjYhagZg\r\n\
                    a=ice-ufrag:8hhY\r\n\
                    a=candidate:1 1 UDP 1658497328 198.51.100.33 5000 typ host\r\n\
                    m=video 9 RTP/AVP 0\r\n\
                    a=mid:sdparta_1\r\n\
                    a=candidate:2 1 UDP 1658497328 198.51.100.33 5002 typ host\r\n\
                    a=end-of-candidates\r\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("8hhY"));
        assert_eq!(f.ice_pwd.as_deref(), Some("asd88fgpdd777uzjYhagZg"));
        assert_eq!(tags(&f), [(Some("sdparta_0"), 0), (Some("sdparta_1"), 1)]);
        assert_eq!(
            f.candidates[1].candidate,
            "2 1 UDP 1658497328 198.51.100.33 5002 typ host"
        );
        assert!(f.end_of_candidates);
    }

    #[test]
    fn medooze_whipjs_then_end_of_candidates() {
        let body = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                    a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
                    a=candidate:3471623853 1 udp 2122194687 198.51.100.1 61765 typ host generation 0 ufrag EsAw network-id 2\r\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(tags(&f), [(Some("0"), 0), (Some("0"), 0)]);
        assert!(f.candidates[1].candidate.starts_with("3471623853 1 udp"));
        assert!(!f.end_of_candidates);

        let eoc = SdpFrag::parse("a=end-of-candidates\r\n").unwrap();
        assert_eq!(
            eoc,
            SdpFrag {
                end_of_candidates: true,
                ..SdpFrag::default()
            }
        );
    }

    #[test]
    fn eyevinn_rtp_avp_per_mid_component_zero() {
        let body = "a=ice-ufrag:a1b2\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n\
                    m=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:842163049 0 udp 1677729535 203.0.113.7 51234 typ srflx raddr 0.0.0.0 rport 0\r\n\
                    m=video 9 RTP/AVP 0\r\na=mid:1\r\n\
                    a=candidate:842163049 0 udp 1677729535 203.0.113.7 51234 typ srflx raddr 0.0.0.0 rport 0\r\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(tags(&f), [(Some("0"), 0), (Some("1"), 1)]);
        assert!(f.candidates[1].candidate.starts_with("842163049 0 udp"));
    }

    #[test]
    fn meetecho_lf_only() {
        let body = "a=ice-ufrag:Xy+/\na=ice-pwd:QWERTYuiop1234567890ab\n\
                    m=video 9 RTP/AVP 0\na=mid:0\n\
                    a=candidate:1 1 UDP 2015363327 10.0.0.5 40000 typ host\n\
                    a=candidate:2 1 TCP 1015021823 10.0.0.5 9 typ host tcptype active\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("Xy+/"));
        assert_eq!(tags(&f), [(Some("0"), 0), (Some("0"), 0)]);
        assert_eq!(
            f.candidates[1].candidate,
            "2 1 TCP 1015021823 10.0.0.5 9 typ host tcptype active"
        );
    }

    #[test]
    fn ice_restart_body_with_copied_sdp_lines() {
        // Stray full-SDP lines, blank lines, trailing spaces, session-level
        // candidate, mid after candidate, and a later ufrag that must not win.
        let body = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\r\n\
                    a=ice-ufrag:new1  \r\na=ice-pwd:newpwdnewpwdnewpwdnewpw\r\n\
                    a=candidate:9 1 udp 100 192.0.2.9 9 typ host\r\n\
                    m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
                    a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\na=mid:a\r\n\
                    a=ice-ufrag:other\r\n\
                    m=video 9 UDP/TLS/RTP/SAVPF 96\r\n\
                    a=candidate:2 1 udp 2130706431 10.0.0.1 5002 typ host\r\n";
        let f = SdpFrag::parse(body).unwrap();
        assert_eq!(f.ice_ufrag.as_deref(), Some("new1"));
        assert_eq!(f.ice_pwd.as_deref(), Some("newpwdnewpwdnewpwdnewpw"));
        assert_eq!(tags(&f), [(None, 0), (Some("a"), 0), (None, 1)]);
    }

    #[test]
    fn mdns_candidate_and_empty_body_accepted() {
        let body = "a=candidate:3 1 udp 2113937151 4b2f6e0a-8a1f-4c5e-9d0e-1a2b3c4d5e6f.local 54321 typ host";
        let f = SdpFrag::parse(body).unwrap();
        assert!(f.candidates[0].candidate.contains(".local"));
        assert_eq!(SdpFrag::parse("").unwrap(), SdpFrag::default());
        assert_eq!(
            SdpFrag::parse("a=ice-options:trickle\r\n").unwrap(),
            SdpFrag::default()
        );
    }

    #[test]
    fn rejects_bad_input() {
        use FragError::*;
        let few = InvalidCandidate(1, "fewer than 8 fields");
        let cases = [
            ("a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ", few),
            (
                "a=candidate:1 x udp 1 10.0.0.1 5000 typ host",
                InvalidCandidate(1, "bad component"),
            ),
            (
                "a=candidate:1 1 udp +1 10.0.0.1 5000 typ host",
                InvalidCandidate(1, "bad priority"),
            ),
            (
                "a=candidate:1 1 udp 1 10.0.0.1 65536 typ host",
                InvalidCandidate(1, "bad port"),
            ),
            (
                "a=candidate:1 1 udp 1 10.0.0.1 0 typ host",
                InvalidCandidate(1, "port 0"),
            ),
            (
                "a=candidate:1 1 udp 1 10.0.0.1 5000 type host",
                InvalidCandidate(1, "missing typ"),
            ),
            ("a=ice-ufrag:bad-frag", InvalidIceUfrag(1)),
            ("a=ice-ufrag:", InvalidIceUfrag(1)),
            ("a=ice-ufrag:ok\na=ice-pwd:p w", InvalidIcePwd(2)),
            ("a=end-of-candidates\nhello", MalformedLine(2)),
            ("ab=c", MalformedLine(1)),
            ("\u{e9}=x", MalformedLine(1)),
            ("m=audio 9 RTP/AVP", MalformedMediaLine(1)),
            ("m=audio 9 RTP/AVP 0\na=mid:", EmptyMid(2)),
        ];
        for (body, want) in cases {
            assert_eq!(SdpFrag::parse(body), Err(want), "{body:?}");
        }
    }

    #[test]
    fn bounds() {
        let ok_line = format!("a=x-pad:{}", "p".repeat(MAX_LINE_LEN - 8));
        assert!(SdpFrag::parse(&format!("{ok_line}\r\n")).is_ok());
        assert_eq!(
            SdpFrag::parse(&format!("v=0\r\n{ok_line}p\r\n")),
            Err(FragError::LineTooLong(2))
        );
        assert!(SdpFrag::parse(&"\r\n".repeat(MAX_LINES)).is_ok());
        assert_eq!(
            SdpFrag::parse(&"a=end-of-candidates\n".repeat(MAX_LINES + 1)),
            Err(FragError::TooManyLines)
        );
    }

    #[test]
    fn restart_answer_exact() {
        let cands = [
            "1 1 udp 2130706431 10.0.0.1 5000 typ host".to_string(),
            "candidate:2 1 udp 1694498815 203.0.113.1 5000 typ srflx raddr 10.0.0.1 rport 5000"
                .to_string(),
        ];
        assert_eq!(
            restart_answer("uF1", "pw+/pw", true, "video", "0", &cands),
            "a=ice-ufrag:uF1\r\na=ice-pwd:pw+/pw\r\na=ice-options:trickle\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n\
             a=candidate:2 1 udp 1694498815 203.0.113.1 5000 typ srflx raddr 10.0.0.1 rport 5000\r\n\
             a=end-of-candidates\r\n"
        );
        assert_eq!(
            restart_answer("u", "p", false, "audio", "a0", &[]),
            "a=ice-ufrag:u\r\na=ice-pwd:p\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a0\r\na=end-of-candidates\r\n"
        );
        // The answer must itself be a valid fragment.
        let f =
            SdpFrag::parse(&restart_answer("uF1", "pw+/pw", true, "video", "0", &cands)).unwrap();
        assert_eq!(f.candidates.len(), 2);
        assert!(f.end_of_candidates);
    }
}
