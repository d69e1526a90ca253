//! `memcmp` for the component, eight bytes a turn, in place of
//! wasi-libc's, which compares byte by byte.
//!
//! Every comparison of strings or byte slices in a component (`==`,
//! `starts_with`, a `match` on a string) is a call to `memcmp`. Compiled
//! to WebAssembly, wasi-libc's loop paid some 20 instructions a byte: the
//! largest single item of a listing hit's code in the component
//! (BENCHMARKS.md, "a tenth run"). Defined here, it is linked in place of
//! wasi-libc's (an archive's member is linked only for a symbol nothing
//! else defines).

/// Compares `n` bytes at `a` and `b`: negative, zero or positive as the
/// first differing byte (unsigned) of `a` is less than, equal to or
/// greater than `b`'s.
///
/// # Safety
///
/// `a` and `b` must be valid for reads of `n` bytes (`memcmp`'s contract).
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY (of every read below): the words read lie within the first
    // `n` bytes of both, by the bounds checked before each.
    // Read little-endian (WebAssembly is; `from_le` keeps the tests right
    // on any host, and costs nothing here).
    let word =
        |p: *const u8, at: usize| u64::from_le(unsafe { p.add(at).cast::<u64>().read_unaligned() });
    let half =
        |p: *const u8, at: usize| u32::from_le(unsafe { p.add(at).cast::<u32>().read_unaligned() });
    // The order of the first differing byte of two little-endian words
    // read at `at` (the lowest differing bit is in it).
    let order = |x: u64, y: u64, at: usize| {
        let at = at + (x ^ y).trailing_zeros() as usize / 8;
        unsafe { i32::from(*a.add(at)) - i32::from(*b.add(at)) }
    };
    if n >= 8 {
        let mut at = 0;
        while at + 8 <= n {
            let (x, y) = (word(a, at), word(b, at));
            if x != y {
                return order(x, y, at);
            }
            at += 8;
        }
        // The last few bytes, as the last word: those it shares with the
        // word before are equal.
        if at < n {
            let (x, y) = (word(a, n - 8), word(b, n - 8));
            if x != y {
                return order(x, y, n - 8);
            }
        }
        0
    } else if n >= 4 {
        // The first four bytes and the last four (overlapping).
        for at in [0, n - 4] {
            let (x, y) = (half(a, at), half(b, at));
            if x != y {
                return order(u64::from(x), u64::from(y), at);
            }
        }
        0
    } else {
        for at in 0..n {
            // SAFETY: `at < n`.
            let (x, y) = unsafe { (*a.add(at), *b.add(at)) };
            if x != y {
                return i32::from(x) - i32::from(y);
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::memcmp;

    fn sign(a: &[u8], b: &[u8]) -> i32 {
        assert_eq!(a.len(), b.len());
        unsafe { memcmp(a.as_ptr(), b.as_ptr(), a.len()) }.signum()
    }

    #[test]
    fn orders_as_byte_slices_do() {
        let words: &[&[u8]] = &[
            b"",
            b"a",
            b"b",
            b"ab",
            b"popular",
            b"popularz",
            b"category",
            b"categorz",
            b"0123456789abcdef0",
            b"0123456789abcdeg0",
            b"\xff\x00",
            b"\x00\xff",
            b"trending",
            b"trendinG",
        ];
        for a in words {
            for b in words {
                let n = a.len().min(b.len());
                let expected = a[..n].cmp(&b[..n]) as i32;
                assert_eq!(sign(&a[..n], &b[..n]), expected, "{a:?} {b:?}");
            }
        }
        // Every position of a difference, at every length from 0 to 20:
        // whole words, the overlapping last word, the halves, single bytes.
        for n in 0..=20 {
            let base = vec![7u8; n];
            assert_eq!(sign(&base, &base.clone()), 0, "length {n}");
            for at in 0..n {
                let mut other = base.clone();
                other[at] = 9;
                assert_eq!(sign(&base, &other), -1, "length {n}, at {at}");
                assert_eq!(sign(&other, &base), 1, "length {n}, at {at}");
                // A later, opposite difference does not decide.
                if at + 1 < n {
                    other[n - 1] = 1;
                    assert_eq!(sign(&base, &other), -1, "length {n}, at {at}");
                }
            }
        }
    }
}
