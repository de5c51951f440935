//! Amounts of money in renminbi, held in fen, written the way Chinese agreements write them:
//! in figures and, against alteration, in capital numerals (大写).

use serde::{Deserialize, Serialize};

/// An amount in renminbi, in fen (0.01 yuan). Integer, so that no amount is ever rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cny(pub u64);

/// The largest amount [`Cny::capital`] writes: 9,999 亿 9,999 万 9,999.99 yuan.
pub const MAX_FEN: u64 = 1_000_000_000_000 * 100 - 1;

impl Cny {
    /// The whole yuan.
    pub fn yuan(self) -> u64 {
        self.0 / 100
    }

    /// In figures with thousands separators and two decimals: `1,234.50`.
    pub fn figures(self) -> String {
        let yuan = self.yuan().to_string();
        let mut grouped = String::new();
        for (i, c) in yuan.chars().enumerate() {
            if i > 0 && (yuan.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{grouped}.{:02}", self.0 % 100)
    }

    /// In capital numerals as cheques and contracts write them: 1,005.20 is
    /// 壹仟零伍元贰角整. `None` above [`MAX_FEN`].
    pub fn capital(self) -> Option<String> {
        const DIGITS: [char; 10] = ['零', '壹', '贰', '叁', '肆', '伍', '陆', '柒', '捌', '玖'];
        const PLACES: [&str; 4] = ["", "拾", "佰", "仟"];
        const GROUPS: [&str; 3] = ["亿", "万", ""];
        if self.0 > MAX_FEN {
            return None;
        }
        let yuan = self.yuan();
        let (jiao, fen) = ((self.0 / 10 % 10) as usize, (self.0 % 10) as usize);

        // The yuan, in groups of four digits (亿, 万, units). A run of zeros inside the number
        // reads as one 零; zeros at the end of a group are silent.
        let groups = [yuan / 100_000_000, yuan / 10_000 % 10_000, yuan % 10_000];
        let mut out = String::new();
        let mut pending_zero = false;
        for (g, &value) in groups.iter().enumerate() {
            if value == 0 {
                pending_zero |= !out.is_empty();
                continue;
            }
            if !out.is_empty() && value < 1000 {
                pending_zero = true;
            }
            for place in (0..4).rev() {
                let digit = (value / 10u64.pow(place as u32) % 10) as usize;
                if digit == 0 {
                    pending_zero |= !out.is_empty();
                    continue;
                }
                if pending_zero {
                    out.push('零');
                    pending_zero = false;
                }
                out.push(DIGITS[digit]);
                out.push_str(PLACES[place]);
            }
            out.push_str(GROUPS[g]);
            pending_zero = false;
        }
        if !out.is_empty() {
            out.push('元');
        }

        // Jiao and fen: 零 stands for a missing jiao between yuan and fen; 整 closes an amount
        // that has no fen.
        if jiao == 0 && fen == 0 {
            if out.is_empty() {
                out.push_str("零元");
            }
            out.push('整');
            return Some(out);
        }
        if jiao > 0 {
            out.push(DIGITS[jiao]);
            out.push('角');
        } else if !out.is_empty() {
            out.push('零');
        }
        if fen > 0 {
            out.push(DIGITS[fen]);
            out.push('分');
        } else {
            out.push('整');
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_group_thousands() {
        assert_eq!(Cny(0).figures(), "0.00");
        assert_eq!(Cny(5).figures(), "0.05");
        assert_eq!(Cny(120_050).figures(), "1,200.50");
        assert_eq!(Cny(12_345_678_900).figures(), "123,456,789.00");
    }

    #[test]
    fn capital_numerals_follow_the_cheque_rules() {
        let cases = [
            (0, "零元整"),
            (5, "伍分"),
            (50, "伍角整"),
            (100, "壹元整"),
            (1_000, "壹拾元整"),
            (1_005, "壹拾元零伍分"),
            (120_050, "壹仟贰佰元伍角整"),
            (100_500, "壹仟零伍元整"),
            (123_456, "壹仟贰佰叁拾肆元伍角陆分"),
            (1_000_000, "壹万元整"),
            (10_000_500, "壹拾万零伍元整"),
            (10_100_000, "壹拾万壹仟元整"),
            (100_100_000, "壹佰万壹仟元整"),
            (10_000_000_000, "壹亿元整"),
            (10_000_000_100, "壹亿零壹元整"),
            (10_001_000_000, "壹亿零壹万元整"),
            (10_010_000_000, "壹亿零壹拾万元整"),
            (12_003_004_000, "壹亿贰仟零叁万零肆拾元整"),
            (
                MAX_FEN,
                "玖仟玖佰玖拾玖亿玖仟玖佰玖拾玖万玖仟玖佰玖拾玖元玖角玖分",
            ),
        ];
        for (fen, want) in cases {
            assert_eq!(Cny(fen).capital().as_deref(), Some(want), "{fen} fen");
        }
        assert_eq!(Cny(MAX_FEN + 1).capital(), None);
    }
}
