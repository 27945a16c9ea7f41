//! The generation id: one per client request.

use std::fmt;
use std::sync::Arc;

/// The id of one client request: `gen-<unix seconds>-<20 characters>`, as OpenRouter's.
///
/// The 20 characters are 4 that encode the microsecond within the second, then 16 random
/// ones (95 bits), all from `0-9A-Za-z`, whose ASCII order is their value's: ids sort by the
/// time they were made. That keeps the state store's record inserts near the right edge of
/// its B-tree (a few dirty pages per batch) instead of scattered over every page of the
/// current second (`cargo bench --bench usage` measures the difference).
///
/// It is the completion's `id` and the `X-Generation-Id` header. Inserted by the decode step
/// when absent; every later layer reads it from the request extensions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct GenerationId(Arc<str>);

/// The characters of a generation id's last part, in ASCII order.
const ID_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl GenerationId {
    /// A fresh id: made now, random in its last 16 characters.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        // Written on the stack, then copied once into the `Arc` (a `String` would be a second
        // allocation): "gen-", at most 20 digits of seconds, "-", 20 characters.
        let mut id = [0u8; 45];
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            id[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        push(b"gen-");
        push(itoa::Buffer::new().format(now.as_secs()).as_bytes());
        push(b"-");
        push(&sortable_micros(now.subsec_micros()));
        // Eight base-62 digits from each of two random words: 62^8 is under 2^48, so the
        // digits are uniform to within one part in 80,000, and two draws replace sixteen.
        for _ in 0..2 {
            let mut word = fastrand::u64(..);
            for _ in 0..8 {
                push(&[ID_ALPHABET[(word % 62) as usize]]);
                word /= 62;
            }
        }
        let id = std::str::from_utf8(&id[..len]).expect("an id is ASCII");
        GenerationId(Arc::from(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The microsecond within a second as four base-62 digits, most significant first
/// (62^4 > 10^6), so their ASCII order is the order of time.
fn sortable_micros(micros: u32) -> [u8; 4] {
    let mut rest = micros as usize;
    let mut digits = [0u8; 4];
    for d in digits.iter_mut().rev() {
        *d = ID_ALPHABET[rest % 62];
        rest /= 62;
    }
    digits
}

impl Default for GenerationId {
    fn default() -> Self {
        GenerationId::new()
    }
}

impl fmt::Display for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GenerationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_ids_sort_by_the_time_they_were_made() {
        assert_eq!(&sortable_micros(0), b"0000");
        assert_eq!(&sortable_micros(61), b"000z");
        assert_eq!(&sortable_micros(62), b"0010");
        assert_eq!(&sortable_micros(999_999), b"4C91");
        let mut last = sortable_micros(0);
        for micros in (1..1_000_000).step_by(7) {
            let d = sortable_micros(micros);
            assert!(d > last, "{micros}: {d:?} <= {last:?}");
            last = d;
        }
        let id = GenerationId::new();
        let (secs, rest) = id.as_str()["gen-".len()..].split_once('-').unwrap();
        assert!(secs.len() == 10 && secs.bytes().all(|b| b.is_ascii_digit()));
        assert!(rest.len() == 20 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
        let ids: Vec<_> = (0..50).map(|_| GenerationId::new()).collect();
        let (a, b) = (&ids[0], &ids[49]);
        assert!(a.as_str()[..19] <= b.as_str()[..19], "{a} then {b}");
    }
}
