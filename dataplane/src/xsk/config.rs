//! What a group is opened with: sizes, the zero-copy preference, and the mode the kernel
//! ends up granting. Validation happens here, before any syscall, so a bad config is reported
//! with the field at fault rather than as an errno from deep inside libxdp.

use std::fmt;

use super::XskError;

/// Sizes and modes for one group's UMEM and sockets.
///
/// Derived sizes (not configurable, because getting them wrong loses packets or deadlocks):
/// each socket's fill ring holds `2 × frame_count` rounded up to a power of two, so refilling
/// never fails for lack of ring space; each completion ring holds `frame_count` rounded up, so
/// the kernel can always post a completion (copy-mode TX stalls when it cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// Frames in the UMEM, shared by all sockets of the group.
    pub frame_count: u32,
    /// Bytes per frame: a power of two from 2048 to 4096 (the kernel's aligned-mode limits).
    /// The first 256 bytes are XDP headroom, so the largest packet is `frame_size - 256`.
    pub frame_size: u32,
    /// RX ring entries per socket (power of two); also the largest batch.
    pub rx_ring: u32,
    /// TX ring entries per socket (power of two).
    pub tx_ring: u32,
    pub zero_copy: ZeroCopy,
    /// Bind with `XDP_USE_NEED_WAKEUP`: the kernel says when it needs a syscall to make
    /// progress, and an idle worker may sleep in `poll()`. Without it the worker kicks TX after
    /// every batch and busy-polls when idle.
    pub need_wakeup: bool,
}

impl Default for XskConfig {
    /// 2048 frames of 2048 bytes: a 4 MiB UMEM, half the common 8 MiB memlock limit, leaving
    /// room for the rings.
    fn default() -> XskConfig {
        XskConfig {
            frame_count: 2048,
            frame_size: 2048,
            rx_ring: 1024,
            tx_ring: 1024,
            zero_copy: ZeroCopy::Auto,
            need_wakeup: true,
        }
    }
}

/// Largest ring the config accepts; bigger rings only add latency and memory.
const MAX_RING: u32 = 1 << 16;
/// Largest UMEM the config accepts (1 Mi frames).
const MAX_FRAMES: u32 = 1 << 20;
/// Bytes the kernel reserves at the start of every frame for the XDP program.
const XDP_HEADROOM: u32 = 256;

impl XskConfig {
    /// Entries in each socket's fill ring.
    pub fn fill_ring(&self) -> u32 {
        (2 * self.frame_count).next_power_of_two()
    }

    /// Entries in each socket's completion ring.
    pub fn comp_ring(&self) -> u32 {
        self.frame_count.next_power_of_two()
    }

    /// Bytes of UMEM.
    pub fn umem_bytes(&self) -> u64 {
        u64::from(self.frame_count) * u64::from(self.frame_size)
    }

    /// Largest packet a frame holds.
    pub fn max_packet(&self) -> u32 {
        self.frame_size.saturating_sub(XDP_HEADROOM)
    }

    pub fn validate(&self) -> Result<(), XskError> {
        let bad = |field: &'static str, reason: String| Err(XskError::Config { field, reason });
        if self.frame_count == 0 || self.frame_count > MAX_FRAMES {
            return bad(
                "frame_count",
                format!("{} not in 1..={MAX_FRAMES}", self.frame_count),
            );
        }
        if !self.frame_size.is_power_of_two() || !(2048..=4096).contains(&self.frame_size) {
            return bad(
                "frame_size",
                format!(
                    "{} is not a power of two from 2048 to 4096",
                    self.frame_size
                ),
            );
        }
        for (field, size) in [("rx_ring", self.rx_ring), ("tx_ring", self.tx_ring)] {
            if !size.is_power_of_two() || size > MAX_RING {
                return bad(
                    field,
                    format!("{size} is not a power of two up to {MAX_RING}"),
                );
            }
        }
        Ok(())
    }
}

/// Whether to ask for zero-copy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroCopy {
    /// Try zero-copy; if the driver does not support it, fall back to copy mode (and log it).
    #[default]
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

/// The mode a socket actually runs in, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XskMode {
    ZeroCopy,
    Copy,
}

impl fmt::Display for XskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XskMode::ZeroCopy => "zero-copy",
            XskMode::Copy => "copy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ring_sizes() {
        let cfg = XskConfig::default();
        assert_eq!(cfg.fill_ring(), 4096);
        assert_eq!(cfg.comp_ring(), 2048);
        assert_eq!(cfg.umem_bytes(), 4 << 20);
        assert_eq!(cfg.max_packet(), 1792);
        let odd = XskConfig {
            frame_count: 3000,
            ..cfg
        };
        assert_eq!(odd.fill_ring(), 8192);
        assert_eq!(odd.comp_ring(), 4096);
        cfg.validate().unwrap();
        odd.validate().unwrap();
    }

    #[test]
    fn default_fits_memlock_with_rings() {
        let cfg = XskConfig::default();
        let rings = 8 * u64::from(cfg.fill_ring() + cfg.comp_ring())
            + 16 * u64::from(cfg.rx_ring + cfg.tx_ring);
        assert!(cfg.umem_bytes() + rings < 8 << 20);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let base = XskConfig::default();
        let cases = [
            (
                XskConfig {
                    frame_count: 0,
                    ..base
                },
                "invalid xsk config: frame_count: 0 not in",
            ),
            (
                XskConfig {
                    frame_size: 3000,
                    ..base
                },
                "invalid xsk config: frame_size: 3000 is not",
            ),
            (
                XskConfig {
                    frame_size: 1024,
                    ..base
                },
                "invalid xsk config: frame_size: 1024 is not",
            ),
            (
                XskConfig {
                    frame_size: 8192,
                    ..base
                },
                "invalid xsk config: frame_size: 8192 is not",
            ),
            (
                XskConfig {
                    rx_ring: 1000,
                    ..base
                },
                "invalid xsk config: rx_ring: 1000 is not",
            ),
            (
                XskConfig { tx_ring: 0, ..base },
                "invalid xsk config: tx_ring: 0 is not",
            ),
            (
                XskConfig {
                    tx_ring: 1 << 17,
                    ..base
                },
                "invalid xsk config: tx_ring: 131072",
            ),
        ];
        for (cfg, msg) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.starts_with(msg), "{err:?} does not start with {msg:?}");
        }
    }

    #[test]
    fn modes_display_and_parse() {
        assert_eq!(XskMode::ZeroCopy.to_string(), "zero-copy");
        assert_eq!(XskMode::Copy.to_string(), "copy");
        assert_eq!(
            serde_json::to_string(&XskMode::ZeroCopy).unwrap(),
            "\"zero-copy\""
        );
        let z: ZeroCopy = serde_json::from_str("\"auto\"").unwrap();
        assert_eq!(z, ZeroCopy::Auto);
        assert_eq!(
            serde_json::from_str::<ZeroCopy>("\"off\"").unwrap(),
            ZeroCopy::Off
        );
        assert!(serde_json::from_str::<ZeroCopy>("\"maybe\"").is_err());
    }
}
