//! Random bytes from the kernel, for secrets.

/// Fills `buffer` from the kernel's random generator (`getrandom(2)`,
/// which waits until the generator is seeded at boot); a system without
/// one cannot run the service safely, so failing stops the process.
pub fn fill(buffer: &mut [u8]) {
    getrandom::fill(buffer).expect("random bytes from the kernel");
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_every_byte_with_fresh_values() {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        super::fill(&mut a);
        super::fill(&mut b);
        // 64 zero bytes, or the same 64 twice, come at odds of 2^-512.
        assert_ne!(a, [0u8; 64]);
        assert_ne!(a, b);
        // Past the kernel's 256-byte answer limit of getentropy.
        let mut big = vec![0u8; 4096];
        super::fill(&mut big);
        assert!(big[3840..].iter().any(|&x| x != 0));
    }
}
