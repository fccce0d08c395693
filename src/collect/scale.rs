//! `raw × scale + offset` in decimal, shared by every collector that scales raw numbers (SNMP
//! profiles, Modbus register maps).
//!
//! Multiplying by the binary float 0.1 turns 14 into 1.4000000000000001; dividing by the exact
//! 10 gives the nearest float to 1.4, which prints as `1.4`. So a `scale` written in a profile
//! or map is taken apart into its decimal digits once, at load (`raw × mul / div`, `div` a
//! power of ten), and an offset is brought onto the same denominator:
//! `(raw × mul + offset × div) / div`.

/// A decimal scale and offset, built once at load and applied per value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    mul: f64,
    div: f64,
    offset: f64,
}

impl Scale {
    pub const IDENTITY: Scale = Scale {
        mul: 1.0,
        div: 1.0,
        offset: 0.0,
    };

    /// From the scale written in the file; `None` for 0, NaN or an infinity.
    pub fn from_f64(s: f64) -> Option<Scale> {
        if !s.is_finite() || s == 0.0 {
            return None;
        }
        // `{:e}` prints the shortest digits that read back as `s`: "1e-1", "2.5e-1", "6e1".
        let text = format!("{s:e}");
        let (mantissa, exp) = text.split_once('e')?;
        let exp: i32 = exp.parse().ok()?;
        let (negative, mantissa) = match mantissa.strip_prefix('-') {
            Some(m) => (true, m),
            None => (false, mantissa),
        };
        let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits: f64 = format!("{int_part}{frac_part}").parse().ok()?;
        let exp = exp - frac_part.len() as i32;
        let sign = if negative { -1.0 } else { 1.0 };
        let (mul, div) = if exp >= 0 {
            (sign * digits * 10f64.powi(exp), 1.0)
        } else {
            (sign * digits, 10f64.powi(-exp))
        };
        Some(Scale {
            mul,
            div,
            offset: 0.0,
        })
    }

    /// A scale and an offset; `None` if either is unusable (scale 0, NaN, infinities).
    pub fn with_offset(scale: f64, offset: f64) -> Option<Scale> {
        if !offset.is_finite() {
            return None;
        }
        let mut s = Scale::from_f64(scale)?;
        s.offset = offset;
        Some(s)
    }

    /// This scale followed by a division (`divide = 60`: seconds to minutes).
    pub fn divided_by(self, d: f64) -> Scale {
        Scale {
            div: self.div * d,
            // The offset stays in output units: bring it onto the new denominator.
            ..self
        }
    }

    pub fn apply(self, x: f64) -> f64 {
        if self.offset == 0.0 {
            x * self.mul / self.div
        } else if self.div == 1.0 {
            x * self.mul + self.offset
        } else {
            (x * self.mul + self.offset * self.div) / self.div
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_scale_gives_the_devices_decimal() {
        let s = Scale::from_f64(0.1).unwrap();
        assert_eq!(s.apply(14.0), 1.4);
        assert_eq!(format!("{}", s.apply(14.0)), "1.4");
        assert_eq!(format!("{}", s.apply(2345.0)), "234.5");
        assert_eq!(s.apply(2301.0), 230.1);
        let s = Scale::from_f64(0.01).unwrap();
        assert_eq!(format!("{}", s.apply(4999.0)), "49.99");
        assert_eq!(Scale::from_f64(10.0).unwrap().apply(34.0), 340.0);
        assert_eq!(Scale::from_f64(60.0).unwrap().apply(7.0), 420.0);
        assert_eq!(Scale::from_f64(1000.0).unwrap().apply(3.0), 3000.0);
        assert_eq!(
            format!("{}", Scale::from_f64(0.25).unwrap().apply(3.0)),
            "0.75"
        );
        assert_eq!(Scale::from_f64(-0.1).unwrap().apply(5.0), -0.5);
        assert_eq!(Scale::IDENTITY.apply(7.0), 7.0);
        assert!(Scale::from_f64(0.0).is_none());
        assert!(Scale::from_f64(f64::NAN).is_none());
    }

    #[test]
    fn offsets_and_divisions() {
        assert_eq!(Scale::with_offset(0.1, -40.0).unwrap().apply(655.0), 25.5);
        assert!(Scale::with_offset(0.0, 0.0).is_none());
        assert!(Scale::with_offset(1.0, f64::INFINITY).is_none());
        // TimeTicks of runtime (seconds after the /100) to minutes.
        let s = Scale::from_f64(1.0).unwrap().divided_by(60.0);
        assert_eq!(s.apply(720.0), 12.0);
    }

    proptest! {
        #[test]
        fn scale_matches_decimal_division(raw in -1_000_000i64..1_000_000, k in 0u32..4) {
            let s = Scale::from_f64(10f64.powi(-(k as i32))).unwrap();
            let expected: f64 = format!("{raw}e-{k}").parse().unwrap();
            prop_assert_eq!(s.apply(raw as f64), expected);
        }
    }
}
