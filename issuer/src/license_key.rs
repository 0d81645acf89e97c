//! License keys: 95 random bits in Crockford base32 plus a Luhn mod 32 check character, grouped for typing.
//!
//! A key looks like `7KQ3M-9XW2T-H4RVD-PNC8J`: 19 random characters and one check character, in four groups of five.
//! The alphabet has no `I`, `L`, `O` or `U`, so look-alike characters cannot be confused; on input `I` and `L` read as
//! `1` and `O` as `0`. The check character catches every single mistyped character and every swap of two adjacent
//! characters except `0` with `Z` (the one blind spot of Luhn mod N: the two code points whose doubled digit sums
//! differ from themselves by the same amount), so a typo is reported before any store lookup.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};

/// The 32 characters of a key, in code point order (Crockford's base32).
pub const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Random characters in a key (5 bits each: 95 bits of entropy).
pub const RANDOM_CHARS: usize = 19;

/// Characters in a key without the dashes: the random ones and the check character.
pub const KEY_CHARS: usize = RANDOM_CHARS + 1;

const GROUP: usize = 5;
const N: u32 = 32;

/// Why text is not a license key. Every variant means the key was mistyped or incompletely copied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseKeyError {
    /// The key does not have 20 characters (dashes and spaces not counted).
    #[error(
        "the license key looks mistyped: it has {found} characters, a key has {KEY_CHARS} (XXXXX-XXXXX-XXXXX-XXXXX)"
    )]
    WrongLength {
        /// How many characters the input had after normalisation.
        found: usize,
    },
    /// A character is not one a key can contain.
    #[error("the license key looks mistyped: `{found}` cannot appear in a key (letters and digits only, no U)")]
    BadCharacter {
        /// The offending character.
        found: char,
    },
    /// The check character does not match: a character was mistyped or two were swapped.
    #[error("the license key looks mistyped: its check character does not match; compare it with the original")]
    CheckFailed,
}

/// A well-formed license key, in its canonical grouped form `XXXXX-XXXXX-XXXXX-XXXXX`.
///
/// Only [`LicenseKey::generate`] and [`LicenseKey::parse`] make one, so holding a `LicenseKey` means its check
/// character matched. It is a credential: `Debug` shows only its first group.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LicenseKey(String);

impl LicenseKey {
    /// A new random key from the operating system's random source.
    pub fn generate() -> Result<Self, rand_core::Error> {
        let mut bytes = [0u8; RANDOM_CHARS];
        OsRng.try_fill_bytes(&mut bytes)?;
        // 32 divides 256, so the low five bits of a uniform byte are uniform.
        let points: Vec<u32> = bytes.iter().map(|b| u32::from(b & 31)).collect();
        Ok(LicenseKey::from_points(&points))
    }

    /// Normalises and checks typed input: surrounding whitespace, case, inner spaces and dashes do not matter, and
    /// `I`/`L` read as `1`, `O` as `0`.
    pub fn parse(input: &str) -> Result<Self, LicenseKeyError> {
        let mut points = Vec::with_capacity(KEY_CHARS);
        let mut count = 0usize;
        for c in input.trim().chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            count += 1;
            let c = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                other => other,
            };
            match code_point(c) {
                Some(p) => points.push(p),
                None => return Err(LicenseKeyError::BadCharacter { found: c }),
            }
        }
        if count != KEY_CHARS {
            return Err(LicenseKeyError::WrongLength { found: count });
        }
        if !check_passes(&points) {
            return Err(LicenseKeyError::CheckFailed);
        }
        Ok(LicenseKey::grouped(&points))
    }

    /// The canonical grouped form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_points(random: &[u32]) -> Self {
        let mut points = random.to_vec();
        points.push(check_point(random));
        LicenseKey::grouped(&points)
    }

    fn grouped(points: &[u32]) -> Self {
        let mut s = String::with_capacity(KEY_CHARS + KEY_CHARS / GROUP);
        for (i, &p) in points.iter().enumerate() {
            if i > 0 && i % GROUP == 0 {
                s.push('-');
            }
            s.push(char::from(ALPHABET[p as usize % ALPHABET.len()]));
        }
        LicenseKey(s)
    }
}

impl fmt::Display for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LicenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LicenseKey({}-...)", &self.0[..GROUP.min(self.0.len())])
    }
}

impl FromStr for LicenseKey {
    type Err = LicenseKeyError;

    fn from_str(s: &str) -> Result<Self, LicenseKeyError> {
        LicenseKey::parse(s)
    }
}

fn code_point(c: char) -> Option<u32> {
    let byte = u8::try_from(c).ok()?;
    ALPHABET.iter().position(|&a| a == byte).and_then(|p| u32::try_from(p).ok())
}

/// Luhn mod N: from the right, every second code point (starting with the rightmost payload point) is doubled and its
/// base-N digits summed; the check point makes the total a multiple of N.
fn check_point(payload: &[u32]) -> u32 {
    let mut factor = 2;
    let mut sum = 0;
    for &p in payload.iter().rev() {
        let addend = factor * p;
        sum += addend / N + addend % N;
        factor = if factor == 2 { 1 } else { 2 };
    }
    (N - sum % N) % N
}

fn check_passes(points: &[u32]) -> bool {
    let mut factor = 1;
    let mut sum = 0;
    for &p in points.iter().rev() {
        let addend = factor * p;
        sum += addend / N + addend % N;
        factor = if factor == 2 { 1 } else { 2 };
    }
    sum % N == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ungrouped(key: &LicenseKey) -> Vec<u8> {
        key.as_str().bytes().filter(|&b| b != b'-').collect()
    }

    fn regroup(chars: &[u8]) -> String {
        chars.chunks(GROUP).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect::<Vec<_>>().join("-")
    }

    #[test]
    fn generated_keys_are_grouped_and_parse_back() {
        for _ in 0..200 {
            let key = LicenseKey::generate().unwrap();
            let s = key.as_str();
            assert_eq!(s.len(), 23);
            assert!(s.split('-').all(|g| g.len() == 5), "{s}");
            assert_eq!(LicenseKey::parse(s).unwrap(), key);
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = LicenseKey::generate().unwrap();
        let b = LicenseKey::generate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn input_is_normalised_for_case_spaces_dashes_and_look_alikes() {
        let key = LicenseKey::from_points(&[1, 0, 1, 0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        let canonical = key.as_str().to_string();
        assert!(canonical.starts_with("1010"), "{canonical}");
        let typed =
            format!("  {} ", canonical.to_lowercase().replace('-', " ").replacen('1', "l", 1).replacen('0', "o", 1));
        assert_eq!(LicenseKey::parse(&typed).unwrap().as_str(), canonical);
        let undashed: String = canonical.chars().filter(|&c| c != '-').collect();
        assert_eq!(LicenseKey::parse(&undashed).unwrap().as_str(), canonical);
        assert_eq!(LicenseKey::parse(&canonical.replacen('1', "I", 1)).unwrap().as_str(), canonical);
    }

    #[test]
    fn wrong_length_and_foreign_characters_are_refused() {
        let key = LicenseKey::generate().unwrap();
        let short = &key.as_str()[..22];
        assert_eq!(LicenseKey::parse(short).unwrap_err(), LicenseKeyError::WrongLength { found: 19 });
        assert_eq!(LicenseKey::parse("").unwrap_err(), LicenseKeyError::WrongLength { found: 0 });
        let with_u = format!("U{}", &key.as_str()[1..]);
        assert_eq!(LicenseKey::parse(&with_u).unwrap_err(), LicenseKeyError::BadCharacter { found: 'U' });
        assert!(matches!(LicenseKey::parse("ÄÄÄÄÄ-ÄÄÄÄÄ-ÄÄÄÄÄ-ÄÄÄÄÄ"), Err(LicenseKeyError::BadCharacter { .. })));
        assert!(LicenseKey::parse(&format!("{}X", key.as_str())).is_err());
    }

    #[test]
    fn every_single_character_substitution_is_caught() {
        for _ in 0..20 {
            let key = LicenseKey::generate().unwrap();
            let chars = ungrouped(&key);
            for i in 0..chars.len() {
                for &other in ALPHABET.iter().filter(|&&c| c != chars[i]) {
                    let mut typo = chars.clone();
                    typo[i] = other;
                    let err = LicenseKey::parse(&regroup(&typo)).unwrap_err();
                    assert_eq!(err, LicenseKeyError::CheckFailed, "{} -> {}", key, regroup(&typo));
                }
            }
        }
    }

    #[test]
    fn every_adjacent_transposition_is_caught_except_zero_with_z() {
        let mut keys: Vec<LicenseKey> = (0..50).map(|_| LicenseKey::generate().unwrap()).collect();
        // Keys with the blind-spot pair next to each other, in both orders.
        keys.push(LicenseKey::from_points(&[0, 31, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]));
        keys.push(LicenseKey::from_points(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 0]));
        let mut blind_spots = 0;
        for key in &keys {
            let chars = ungrouped(key);
            for i in 0..chars.len() - 1 {
                if chars[i] == chars[i + 1] {
                    continue;
                }
                let mut swapped = chars.clone();
                swapped.swap(i, i + 1);
                let result = LicenseKey::parse(&regroup(&swapped));
                let pair = [chars[i], chars[i + 1]];
                if pair == *b"0Z" || pair == *b"Z0" {
                    assert!(result.is_ok(), "the 0/Z swap is Luhn mod 32's known blind spot");
                    blind_spots += 1;
                } else {
                    assert_eq!(result.unwrap_err(), LicenseKeyError::CheckFailed, "{key}: swap at {i}");
                }
            }
        }
        assert!(blind_spots >= 2, "the blind spot was exercised");
    }

    #[test]
    fn zero_z_swap_is_the_only_undetected_transposition_of_any_pair() {
        // Exhaustive over every ordered pair of different code points at every position of a fixed payload.
        let base: Vec<u32> = (0..RANDOM_CHARS as u32).map(|i| (i * 7 + 3) % 32).collect();
        for pos in 0..KEY_CHARS - 1 {
            for a in 0..32u32 {
                for b in (0..32u32).filter(|&b| b != a) {
                    let mut payload = base.clone();
                    let mut points;
                    if pos + 1 < RANDOM_CHARS {
                        payload[pos] = a;
                        payload[pos + 1] = b;
                        points = payload.clone();
                        points.push(check_point(&payload));
                    } else {
                        // The swap involves the check character: choose the payload so the check point is `b`.
                        payload[pos] = a;
                        points = payload.clone();
                        points.push(check_point(&payload));
                        if points[pos + 1] != b {
                            continue;
                        }
                    }
                    let mut swapped = points.clone();
                    swapped.swap(pos, pos + 1);
                    let undetected = check_passes(&swapped);
                    let zero_z = (a == 0 && b == 31) || (a == 31 && b == 0);
                    assert_eq!(undetected, zero_z, "pos {pos}, {a} <-> {b}");
                }
            }
        }
    }

    #[test]
    fn debug_hides_most_of_the_key() {
        let key = LicenseKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.as_str()[6..]), "{shown}");
    }
}
