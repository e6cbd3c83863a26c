//! Which log partition a click belongs to.

/// The partition of `visitor_id` among `partitions`: FNV-1a (64-bit) of its UTF-8 bytes, modulo
/// `partitions`. Fixed by this definition, so the collector, replay and every process agree, and
/// a visitor's clicks stay in order in one partition.
///
/// # Examples
/// ```
/// use clickpulse_events::partition_for;
/// assert_eq!(partition_for("v1", 4), partition_for("v1", 4));
/// assert!(partition_for("anyone", 3) < 3);
/// assert_eq!(partition_for("anything", 0), 0);
/// ```
pub fn partition_for(visitor_id: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let hash = visitor_id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_vectors() {
        // FNV-1a 64 of "" and "a" from the FNV reference test vectors.
        assert_eq!(
            u64::from(partition_for("", u32::MAX)),
            0xcbf2_9ce4_8422_2325 % u64::from(u32::MAX)
        );
        assert_eq!(
            u64::from(partition_for("a", u32::MAX)),
            0xaf63_dc4c_8601_ec8c % u64::from(u32::MAX)
        );
    }
}
