//! Integers in decimal, formatted on the stack: RESP replies and the values INCR writes.

/// The decimal digits of an integer, without an allocation.
pub(crate) struct Decimal {
    digits: [u8; 20],
    start: usize,
}

impl Decimal {
    /// `n`'s digits.
    pub(crate) fn of_u64(mut n: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    /// `n`'s digits, after a `-` if it is negative.
    pub(crate) fn of(n: i64) -> Self {
        let mut d = Self::of_u64(n.unsigned_abs());
        if n < 0 {
            // 19 digits at most for an i64's magnitude: room for the sign.
            d.start -= 1;
            d.digits[d.start] = b'-';
        }
        d
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_integers_are_written_as_rust_writes_them() {
        for n in [0, 9, 10, u64::MAX] {
            assert_eq!(Decimal::of_u64(n).as_bytes(), n.to_string().as_bytes());
        }
    }
}
