//! PATCH on a session: trickled candidates and ICE restarts (RFC 9725 §4.3).
//!
//! Entity-tags are checked by the caller; this module applies a parsed
//! fragment to the session's peer connection.

use std::net::IpAddr;

use crate::engine::io::ShardHandle;
use crate::engine::session::advertised;
use crate::engine::shard::{ConnId, RestartError};
use crate::error::{Error, Result};
use crate::http::sdpfrag::{self, SdpFrag};

/// What applying a fragment did.
pub enum Applied {
    /// Candidates were added.
    Trickled,
    /// ICE restarted; this is the answer fragment.
    Restarted {
        /// New ufrag/pwd and candidates, CRLF.
        fragment: String,
    },
}

/// Applies `frag` to connection `conn` of `shard`: a restart when it
/// carries ICE credentials that differ from the current remote ones,
/// otherwise a trickle, which an ICE-lite server has no use for beyond
/// checking that the candidates parse (it learns the client's addresses
/// from its checks). `advertise` are the IPs answers carry.
pub async fn apply_fragment(
    shard: &ShardHandle,
    conn: ConnId,
    frag: &SdpFrag,
    advertise: &[IpAddr],
) -> Result<Applied> {
    let _checked = usable_candidates(frag)?;
    let Some(ufrag) = frag.ice_ufrag.clone() else {
        return Ok(Applied::Trickled);
    };
    let answer = match shard.restart_ice(conn, ufrag, frag.ice_pwd.clone()).await {
        Ok(None) => return Ok(Applied::Trickled),
        Ok(Some(answer)) => advertised(&answer, advertise),
        Err(RestartError::NoSuchConnection) => return Err(Error::SessionNotFound),
        Err(RestartError::Malformed(why)) => return Err(Error::MalformedFragment(why)),
        Err(RestartError::Refused(why)) => {
            return Err(Error::UnsupportedMedia(format!(
                "ICE restart refused: {why}"
            )));
        }
    };
    let (local_ufrag, local_pwd) = ice_credentials(&answer)
        .ok_or_else(|| Error::Internal("restarted answer has no ICE credentials".into()))?;
    let local_candidates: Vec<String> = answer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .map(str::to_owned)
        .collect();
    let (kind, mid) = first_section(&answer);
    let fragment = sdpfrag::restart_answer(
        &local_ufrag,
        &local_pwd,
        answer.contains("a=ice-options:trickle"),
        &kind,
        &mid,
        &local_candidates,
    );
    Ok(Applied::Restarted { fragment })
}

/// The first `a=ice-ufrag`/`a=ice-pwd` of an SDP (session or media level).
pub(crate) fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |key: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(key).map(str::to_owned))
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:").map(str::to_owned))
}

/// Media type and mid of the first m-section.
fn first_section(sdp: &str) -> (String, String) {
    let kind = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m="))
        .and_then(|m| m.split_whitespace().next())
        .unwrap_or("video")
        .to_owned();
    (kind, first_mid(sdp).unwrap_or_else(|| "0".into()))
}

/// The remote description with new ICE credentials and without the old
/// generation's candidates: what the client would have offered for a restart.
pub(crate) fn restart_remote(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
            continue;
        }
        if line.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
        } else {
            out.push_str(line);
        }
        out.push_str("\r\n");
    }
    out
}

/// The fragment's candidates that can be used, each checked to parse.
///
/// RFC 9725 §4.3.2: candidates of an unsupported transport or with an
/// unresolvable address (mDNS `.local`) are dropped silently; a candidate
/// that does not parse makes the whole request a 400 before anything is
/// applied. A component of 0 (a browser library's bug) is read as 1.
fn usable_candidates(frag: &SdpFrag) -> Result<Vec<String>> {
    let mut usable = Vec::new();
    for c in &frag.candidates {
        let mut fields: Vec<&str> = c.candidate.split_whitespace().collect();
        if fields.get(1) == Some(&"0") {
            fields[1] = "1";
        }
        let transport = fields.get(2).copied().unwrap_or_default();
        let address = fields.get(4).copied().unwrap_or_default();
        if !transport.eq_ignore_ascii_case("udp") || address.ends_with(".local") {
            continue;
        }
        let value = fields.join(" ");
        rtc::ice::candidate::unmarshal_candidate(&value)
            .map_err(|e| Error::MalformedFragment(format!("candidate {value:?}: {e}")))?;
        if !usable.contains(&value) {
            usable.push(value);
        }
    }
    Ok(usable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::sdpfrag::FragCandidate;

    fn frag_with(candidates: &[&str]) -> SdpFrag {
        SdpFrag {
            candidates: candidates
                .iter()
                .map(|c| FragCandidate {
                    candidate: (*c).to_owned(),
                    mid: Some("0".into()),
                    mline_index: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn tcp_and_mdns_candidates_are_dropped_and_component_zero_is_read_as_one() {
        let frag = frag_with(&[
            "1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
            "2 1 udp 2130706431 abcd.local 5000 typ host",
            "3 0 udp 2130706431 127.0.0.1 5000 typ host",
            "3 0 udp 2130706431 127.0.0.1 5000 typ host",
        ]);
        assert_eq!(
            usable_candidates(&frag).unwrap(),
            vec!["3 1 udp 2130706431 127.0.0.1 5000 typ host".to_owned()]
        );
    }

    #[test]
    fn an_unparsable_candidate_rejects_the_whole_fragment() {
        let frag = frag_with(&["1 1 udp 1 not-an-address 5000 typ host"]);
        assert!(matches!(
            usable_candidates(&frag),
            Err(Error::MalformedFragment(_))
        ));
    }

    #[test]
    fn restart_offer_swaps_credentials_and_drops_old_candidates() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ice-ufrag:old\r\na=ice-pwd:oldpassword\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\na=end-of-candidates\r\na=mid:0\r\n";
        let out = restart_remote(sdp, "newu", "newpasswordnewpassword");
        assert_eq!(
            ice_credentials(&out),
            Some(("newu".into(), "newpasswordnewpassword".into()))
        );
        assert!(!out.contains("a=candidate") && !out.contains("end-of-candidates"));
        assert_eq!(first_section(&out), ("video".into(), "0".into()));
    }
}
