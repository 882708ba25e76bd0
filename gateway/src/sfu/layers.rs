//! Simulcast: which of a track's encodings ("layers") each viewer gets.
//!
//! A simulcast publisher (browsers, OBS 32+) sends one m-section with
//! several RTP streams, each named by a rid (RFC 8851/8853). Names are the
//! publisher's choice (`q`/`h`/`f`, `0`/`1`/`2`, `low`/`high`...), so Vigil
//! ranks layers by what they carry: the picture size of their latest
//! keyframe, largest first, when every active layer's is known (VP8 and
//! H.264, see `picture_size`); otherwise the measured byte rate, highest
//! first, with hysteresis so that two close layers do not trade places on
//! every keyframe. A layer that stopped (a browser pauses its top layer when
//! its uplink shrinks) leaves the ranking until it sends again.
//!
//! A viewer asks for a layer by rank (`high`, `mid`, `low`) or by rid; that
//! is its ceiling. Receiver reports with heavy loss step it one layer down;
//! after a quiet period it steps back up one layer at a time. A track
//! without simulcast is a single layer and none of this changes anything.

use std::time::{Duration, Instant};

use crate::sfu::picture_size::Size;

/// A layer that sent nothing for this long is out of the ranking.
pub const INACTIVE_AFTER: Duration = Duration::from_secs(1);

/// Fraction lost (of 256, as in RTCP reception reports) from which a
/// viewer steps down a layer: about 10 %.
pub const LOSS_STEP_DOWN: u8 = 26;

/// Quiet time after the last heavy loss before a viewer steps back up.
pub const STEP_UP_AFTER: Duration = Duration::from_secs(8);

/// A layer never ranked before joins a ranking that has layers only after
/// sending this long: a browser starts a simulcast layer small and ramps
/// it up, and ranked by its first tick a 640x360 layer would briefly rank
/// below the 320x180 one (a `?layer=low` viewer got 640x360 for 1.3 s in
/// the Chromium simulcast test). A layer that was ranked before (a paused
/// layer resuming) comes back at once.
pub const NEW_LAYER_PROBATION: Duration = Duration::from_millis(500);

/// A lower-ranked layer must carry this much more (as a ratio) than the
/// one above it before they trade places.
const RANK_HYSTERESIS: f64 = 1.25;

/// Weight of the newest sample in the rate average (sampled every tick).
const RATE_SMOOTHING: f64 = 0.2;

/// Which layer a viewer wants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LayerChoice {
    /// The best one the publisher sends (the default).
    #[default]
    High,
    /// The middle one (with two layers, the lower).
    Mid,
    /// The lowest one.
    Low,
    /// The one with this rid (the best one while it is not being sent).
    Rid(String),
}

impl LayerChoice {
    /// Parses `high`, `mid`, `low` or a rid (RFC 8851: letters, digits,
    /// `-`, `_`; at most 32 characters here).
    pub fn parse(value: &str) -> Option<LayerChoice> {
        match value {
            "high" => Some(LayerChoice::High),
            "mid" => Some(LayerChoice::Mid),
            "low" => Some(LayerChoice::Low),
            rid if !rid.is_empty()
                && rid.len() <= 32
                && rid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                Some(LayerChoice::Rid(rid.to_owned()))
            }
            _ => None,
        }
    }
}

/// One encoding of a published track.
#[derive(Debug)]
pub struct Layer {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its rid, for simulcast.
    pub rid: Option<String>,
    bytes_since_tick: u64,
    rate: f64,
    last_packet: Option<Instant>,
    /// When it started sending, this time (it was inactive before).
    active_since: Option<Instant>,
    /// It has been in the ranking before.
    ranked_before: bool,
    /// The picture size of its latest keyframe, where the codec tells.
    size: Option<Size>,
}

impl Layer {
    /// A layer not yet heard from.
    pub fn new(ssrc: u32, rid: Option<String>) -> Self {
        Layer {
            ssrc,
            rid,
            bytes_since_tick: 0,
            rate: 0.0,
            last_packet: None,
            active_since: None,
            ranked_before: false,
            size: None,
        }
    }

    /// Notes the picture size a keyframe of this layer announced.
    pub fn saw_keyframe_size(&mut self, size: Size) {
        self.size = Some(size);
    }

    /// Pixels per picture, if known.
    fn area(&self) -> Option<u64> {
        self.size.map(|(w, h)| u64::from(w) * u64::from(h))
    }

    /// Counts a packet of `bytes` payload. Packets without payload
    /// (padding: browsers probe bandwidth with it on a paused layer's SSRC
    /// when RTX is not negotiated) do not make a layer active.
    pub fn saw_packet(&mut self, bytes: usize, now: Instant) {
        if bytes == 0 {
            return;
        }
        if !self.active(now) {
            self.active_since = Some(now);
        }
        self.bytes_since_tick += bytes as u64;
        self.last_packet = Some(now);
    }

    fn active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|at| now.saturating_duration_since(at) < INACTIVE_AFTER)
    }
}

/// A track's layers and their ranking.
#[derive(Debug, Default)]
pub struct Layers {
    layers: Vec<Layer>,
    /// Indexes into `layers`, best first; only active layers.
    ranked: Vec<usize>,
}

impl Layers {
    /// The layer sending as `ssrc`, learning it if new.
    pub fn get_or_add(&mut self, ssrc: u32) -> &mut Layer {
        let index = match self.layers.iter().position(|l| l.ssrc == ssrc) {
            Some(index) => index,
            None => {
                self.layers.push(Layer::new(ssrc, None));
                self.layers.len() - 1
            }
        };
        &mut self.layers[index]
    }

    /// Whether any layer has a rid: the track is simulcast.
    pub fn named(&self) -> bool {
        self.layers.iter().any(|l| l.rid.is_some())
    }

    /// Whether the layer sending as `ssrc` is known yet.
    pub fn knows(&self, ssrc: u32) -> bool {
        self.layers.iter().any(|l| l.ssrc == ssrc)
    }

    /// Names a layer's rid (when the track reports it).
    pub fn set_rid(&mut self, ssrc: u32, rid: Option<String>) {
        self.get_or_add(ssrc).rid = rid;
    }

    /// How many layers are being sent now.
    pub fn active_count(&self) -> usize {
        self.ranked.len()
    }

    /// Updates the rates from the bytes seen since the last call, `elapsed`
    /// ago, and re-ranks.
    pub fn tick(&mut self, elapsed: Duration, now: Instant) {
        let seconds = elapsed.as_secs_f64().max(1e-3);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let sample = layer.bytes_since_tick as f64 / seconds;
            if self.ranked.contains(&i) {
                layer.rate += RATE_SMOOTHING * (sample - layer.rate);
            } else {
                // A layer (re)appearing starts from what it sends now, not
                // from an average that decayed while it was silent.
                layer.rate = sample;
            }
            layer.bytes_since_tick = 0;
        }
        self.rank(now);
    }

    /// Ranks the active layers, best first: by picture size when every
    /// active layer's is known, else by rate.
    fn rank(&mut self, now: Instant) {
        let layers = &self.layers;
        let by_size = layers
            .iter()
            .filter(|l| l.active(now))
            .all(|l| l.size.is_some());
        // Keep the previous order and drop the silent; a newcomer goes in
        // at the place its first rate gives it.
        self.ranked.retain(|&i| layers[i].active(now));
        // With nothing ranked, every active layer settles at once (not
        // just the first one looked at, which would leave the others on
        // probation and a viewer on whichever layer that was).
        let was_empty = self.ranked.is_empty();
        for (i, layer) in layers.iter().enumerate() {
            let settled = layer.ranked_before
                || was_empty
                || by_size
                || layer.active_since.is_some_and(|since| {
                    now.saturating_duration_since(since) >= NEW_LAYER_PROBATION
                });
            if layer.active(now) && settled && !self.ranked.contains(&i) {
                let at = self
                    .ranked
                    .iter()
                    .position(|&j| layer.rate > layers[j].rate)
                    .unwrap_or(self.ranked.len());
                self.ranked.insert(at, i);
            }
        }
        if by_size {
            // Stable: layers of one size keep their order.
            self.ranked
                .sort_by_key(|&i| std::cmp::Reverse(layers[i].area()));
        } else {
            // Insertion sort with hysteresis: a layer moves above another
            // only if it carries clearly more.
            for k in 1..self.ranked.len() {
                let mut j = k;
                while j > 0
                    && layers[self.ranked[j]].rate
                        > RANK_HYSTERESIS * layers[self.ranked[j - 1]].rate
                {
                    self.ranked.swap(j, j - 1);
                    j -= 1;
                }
            }
        }
        for &i in &self.ranked {
            self.layers[i].ranked_before = true;
        }
    }

    /// The SSRC a viewer with `choice`, stepped down `steps` layers for
    /// loss, should get; `None` while nothing is being sent.
    pub fn pick(&self, choice: &LayerChoice, steps: usize) -> Option<u32> {
        let last = self.ranked.len().checked_sub(1)?;
        let ceiling = match choice {
            LayerChoice::High => 0,
            LayerChoice::Mid => self.ranked.len() / 2,
            LayerChoice::Low => last,
            LayerChoice::Rid(rid) => self
                .ranked
                .iter()
                .position(|&i| self.layers[i].rid.as_deref() == Some(rid.as_str()))
                .unwrap_or(0),
        };
        Some(self.layers[self.ranked[(ceiling + steps).min(last)]].ssrc)
    }
}

/// A viewer's loss-driven step-down: how many layers below its choice it
/// is held, and since when it has been quiet.
#[derive(Debug, Default, Clone)]
pub struct StepDown {
    steps: usize,
    last_loss: Option<Instant>,
}

impl StepDown {
    /// Layers below the viewer's choice.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Takes a receiver report's fraction lost. Returns whether the viewer
    /// stepped down (only while there is a lower layer than where it is).
    pub fn report(&mut self, fraction_lost: u8, lower_exists: bool, now: Instant) -> bool {
        if fraction_lost < LOSS_STEP_DOWN {
            return false;
        }
        self.last_loss = Some(now);
        if lower_exists {
            self.steps += 1;
            true
        } else {
            false
        }
    }

    /// Called every tick: after a quiet period, one step back up. Returns
    /// whether it stepped up.
    pub fn poll_step_up(&mut self, now: Instant) -> bool {
        let quiet = self
            .last_loss
            .is_none_or(|at| now.saturating_duration_since(at) >= STEP_UP_AFTER);
        if self.steps > 0 && quiet {
            self.steps -= 1;
            // The next step up waits for another quiet period.
            self.last_loss = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Layers that have sent `rates` (bytes per 100 ms tick) for the 4 s
    /// up to `now`: long enough for the averages to settle and past any
    /// newcomer's probation.
    fn layers(rates: &[(u32, &str, u64)], now: Instant) -> Layers {
        let start = now.checked_sub(Duration::from_secs(4)).expect("uptime");
        let mut layers = Layers::default();
        for &(ssrc, rid, bytes) in rates {
            layers.set_rid(ssrc, Some(rid.to_owned()));
            layers.get_or_add(ssrc).saw_packet(bytes as usize, start);
        }
        for k in 1..=40u32 {
            let at = start + Duration::from_millis(100) * k;
            for &(ssrc, _, bytes) in rates {
                layers.get_or_add(ssrc).saw_packet(bytes as usize, at);
            }
            layers.tick(Duration::from_millis(100), at);
        }
        layers
    }

    #[test]
    fn layers_rank_by_rate_whatever_their_names() {
        let now = Instant::now();
        let l = layers(&[(1, "f", 10_000), (2, "q", 1_000), (3, "h", 4_000)], now);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1));
        assert_eq!(l.pick(&LayerChoice::Mid, 0), Some(3));
        assert_eq!(l.pick(&LayerChoice::Low, 0), Some(2));
        assert_eq!(l.pick(&LayerChoice::Rid("h".into()), 0), Some(3));
        assert_eq!(
            l.pick(&LayerChoice::Rid("x".into()), 0),
            Some(1),
            "unknown rid: the best layer"
        );
    }

    #[test]
    fn steps_down_stop_at_the_lowest_layer() {
        let now = Instant::now();
        let l = layers(&[(1, "f", 10_000), (2, "q", 1_000), (3, "h", 4_000)], now);
        assert_eq!(l.pick(&LayerChoice::High, 1), Some(3));
        assert_eq!(l.pick(&LayerChoice::High, 2), Some(2));
        assert_eq!(l.pick(&LayerChoice::High, 9), Some(2));
        assert_eq!(l.pick(&LayerChoice::Rid("h".into()), 1), Some(2));
    }

    #[test]
    fn close_layers_keep_their_order() {
        let now = Instant::now();
        let mut l = layers(&[(1, "a", 1_000), (2, "b", 900)], now);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1));
        let feed = |l: &mut Layers, a: usize, b: usize| {
            for _ in 0..40 {
                l.get_or_add(1).saw_packet(a, now);
                l.get_or_add(2).saw_packet(b, now);
                l.tick(Duration::from_millis(100), now);
            }
        };
        feed(&mut l, 1_000, 1_100);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1), "10 % is not enough");
        feed(&mut l, 1_000, 2_000);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(2), "twice as much is");
    }

    #[test]
    fn a_silent_layer_leaves_the_ranking() {
        let t0 = Instant::now();
        let mut l = layers(&[(1, "f", 10_000), (2, "q", 1_000)], t0);
        let later = t0 + Duration::from_secs(2);
        l.get_or_add(2).saw_packet(1_000, later);
        l.tick(Duration::from_millis(100), later);
        assert_eq!(l.active_count(), 1);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(2));
        assert_eq!(l.pick(&LayerChoice::Rid("f".into()), 0), Some(2));
    }

    #[test]
    fn a_paused_layer_sending_only_padding_is_not_the_lowest_layer() {
        let t0 = Instant::now();
        let mut l = layers(&[(1, "f", 10_000), (2, "q", 1_000), (3, "h", 4_000)], t0);
        // f pauses; its SSRC carries only padding (empty payloads).
        let mut now = t0;
        for _ in 0..20 {
            now += Duration::from_millis(100);
            l.get_or_add(1).saw_packet(0, now);
            l.get_or_add(2).saw_packet(1_000, now);
            l.get_or_add(3).saw_packet(4_000, now);
            l.tick(Duration::from_millis(100), now);
        }
        assert_eq!(l.active_count(), 2);
        assert_eq!(l.pick(&LayerChoice::Low, 0), Some(2));
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(3));
        // f comes back: it ranks first from its first tick, not last.
        now += Duration::from_millis(100);
        l.get_or_add(1).saw_packet(10_000, now);
        l.get_or_add(2).saw_packet(1_000, now);
        l.get_or_add(3).saw_packet(4_000, now);
        l.tick(Duration::from_millis(100), now);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1));
        assert_eq!(l.pick(&LayerChoice::Low, 0), Some(2));
    }

    #[test]
    fn nothing_sent_nothing_picked() {
        assert_eq!(Layers::default().pick(&LayerChoice::High, 0), None);
    }

    #[test]
    fn heavy_loss_steps_down_and_quiet_steps_back_up() {
        let t0 = Instant::now();
        let mut s = StepDown::default();
        assert!(!s.report(10, true, t0), "4 % loss is tolerated");
        assert!(s.report(64, true, t0));
        assert_eq!(s.steps(), 1);
        assert!(!s.report(64, false, t0), "already at the lowest layer");
        assert_eq!(s.steps(), 1);
        assert!(!s.poll_step_up(t0 + Duration::from_secs(1)), "too soon");
        assert!(s.poll_step_up(t0 + STEP_UP_AFTER));
        assert_eq!(s.steps(), 0);
        assert!(!s.poll_step_up(t0 + STEP_UP_AFTER * 3), "nothing to undo");
    }

    #[test]
    fn layer_choices_parse() {
        assert_eq!(LayerChoice::parse("low"), Some(LayerChoice::Low));
        assert_eq!(LayerChoice::parse("q"), Some(LayerChoice::Rid("q".into())));
        assert_eq!(LayerChoice::parse("0"), Some(LayerChoice::Rid("0".into())));
        assert_eq!(LayerChoice::parse(""), None);
        assert_eq!(LayerChoice::parse("a b"), None);
        assert_eq!(LayerChoice::parse(&"x".repeat(33)), None);
    }

    /// A new layer that starts small (a browser ramping it up) does not
    /// rank below the established one for its first ticks: it joins after
    /// its probation, at the place its rate then gives it.
    #[test]
    fn a_new_layer_ramping_up_waits_for_its_probation() {
        let now = Instant::now();
        let mut l = layers(&[(1, "q", 2_000)], now);
        // h appears with a trickle, then carries twice q.
        let mut at = now;
        for bytes in [300, 900, 4_000, 4_000, 4_000, 4_000, 4_000] {
            at += Duration::from_millis(100);
            l.get_or_add(1).saw_packet(2_000, at);
            l.get_or_add(2).saw_packet(bytes, at);
            l.tick(Duration::from_millis(100), at);
            if at.duration_since(now) < NEW_LAYER_PROBATION {
                assert_eq!(l.active_count(), 1, "h is on probation");
                assert_eq!(l.pick(&LayerChoice::Low, 0), Some(1));
            }
        }
        assert_eq!(l.active_count(), 2);
        assert_eq!(l.pick(&LayerChoice::Low, 0), Some(1), "q stays the lowest");
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(2));
    }

    /// What failed in CI (the Chromium simulcast test): Chromium enabled
    /// `h` (640x360) while lowering `q` (320x180), and for 1.6 s `h` carried
    /// no more than `q`, so by rate a `?layer=low` viewer got 640x360. With
    /// both keyframes' sizes known, the ranking follows the pictures.
    #[test]
    fn keyframe_sizes_rank_layers_whatever_their_rates() {
        let now = Instant::now();
        let mut l = layers(&[(1, "q", 2_000)], now);
        l.get_or_add(1).saw_keyframe_size((320, 180));
        let mut at = now;
        for (k, h_bytes) in [
            1_200, 1_500, 1_800, 1_900, 2_000, 2_100, 2_200, 2_300, 2_400,
        ]
        .into_iter()
        .enumerate()
        {
            at += Duration::from_millis(100);
            l.get_or_add(1).saw_packet(2_000, at);
            l.get_or_add(2).saw_packet(h_bytes, at);
            if k == 0 {
                l.get_or_add(2).saw_keyframe_size((640, 360));
            }
            l.tick(Duration::from_millis(100), at);
            assert_eq!(l.active_count(), 2, "a sized newcomer needs no probation");
            assert_eq!(l.pick(&LayerChoice::Low, 0), Some(1), "tick {k}");
            assert_eq!(l.pick(&LayerChoice::High, 0), Some(2), "tick {k}");
        }
        // A layer the encoder scales below another (CPU or bandwidth
        // adaptation) swaps with it at its next keyframe.
        l.get_or_add(2).saw_keyframe_size((160, 90));
        l.tick(Duration::from_millis(100), at + Duration::from_millis(100));
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1));
    }

    /// While one active layer's size is unknown, the rate decides.
    #[test]
    fn an_unsized_layer_falls_back_to_rates() {
        let now = Instant::now();
        let mut l = layers(&[(1, "f", 10_000), (2, "q", 1_000)], now);
        l.get_or_add(2).saw_keyframe_size((1280, 720));
        l.tick(Duration::from_millis(100), now);
        assert_eq!(l.pick(&LayerChoice::High, 0), Some(1));
    }
}
