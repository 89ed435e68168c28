//! ARC grids, colour maps, augmentations (colour map, then dihedral) and augmented puzzle names.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::dihedral::Dihedral;
/// Number of ARC colours (0..=9).
pub const NUM_COLORS: usize = 10;
/// A rectangular grid of colours (0..=9), row-major. A 0x0 grid is allowed (an empty crop).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grid {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) cells: Vec<u8>,
}

impl Grid {
    /// A grid of shape `h x w` from row-major cells (`None` if `cells.len() != h * w` or a
    /// dimension is 0 while the other is not).
    pub fn new(h: usize, w: usize, cells: Vec<u8>) -> Option<Grid> {
        let consistent = cells.len() == h * w && ((h == 0) == (w == 0));
        consistent.then_some(Grid { h, w, cells })
    }

    /// A grid from rows (`None` if ragged).
    pub fn from_rows(rows: &[Vec<u8>]) -> Option<Grid> {
        let w = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != w) {
            return None;
        }
        Grid::new(rows.len(), w, rows.concat())
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.h
    }

    /// Columns.
    pub fn width(&self) -> usize {
        self.w
    }

    /// Row-major cells.
    pub fn cells(&self) -> &[u8] {
        &self.cells
    }

    /// Cell `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> u8 {
        self.cells[r * self.w + c]
    }

    /// The rows as vectors (the ARC JSON layout).
    pub fn to_rows(&self) -> Vec<Vec<u8>> {
        if self.w == 0 {
            return Vec::new();
        }
        self.cells.chunks(self.w).map(<[u8]>::to_vec).collect()
    }

    /// The grid under dihedral transform `t`.
    pub fn transformed(&self, t: Dihedral) -> Grid {
        let (h, w) = t.output_shape(self.h, self.w);
        Grid {
            h,
            w,
            cells: t.apply(&self.cells, self.h, self.w),
        }
    }

    /// The grid with every colour `c` replaced by `map[c]`.
    pub fn recolored(&self, map: &ColorMap) -> Grid {
        Grid {
            h: self.h,
            w: self.w,
            cells: self.cells.iter().map(|&c| map.apply(c)).collect(),
        }
    }
}

impl Serialize for Grid {
    /// A list of rows, as in ARC task files and submissions.
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_rows().serialize(s)
    }
}

/// A permutation of the 10 colours: `map[old] = new` (the reference's `mapping` array; its
/// 10-digit string is the suffix of augmented puzzle names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColorMap([u8; NUM_COLORS]);

impl ColorMap {
    /// The identity map.
    pub fn identity() -> ColorMap {
        ColorMap([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    }

    /// A map from its table (`None` unless a permutation of 0..=9).
    pub fn from_table(table: [u8; NUM_COLORS]) -> Option<ColorMap> {
        let mut seen = [false; NUM_COLORS];
        for &c in &table {
            let slot = seen.get_mut(usize::from(c))?;
            if std::mem::replace(slot, true) {
                return None;
            }
        }
        Some(ColorMap(table))
    }

    /// Parses the 10-digit form (`"0123456789"` = identity).
    pub fn from_digits(s: &str) -> Option<ColorMap> {
        let bytes = s.as_bytes();
        if bytes.len() != NUM_COLORS || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut table = [0u8; NUM_COLORS];
        for (t, b) in table.iter_mut().zip(bytes) {
            *t = b - b'0';
        }
        ColorMap::from_table(table)
    }

    /// The 10-digit form (index = old colour, digit = new colour).
    pub fn digits(&self) -> String {
        self.0.iter().map(|&c| char::from(b'0' + c)).collect()
    }

    /// The table.
    pub fn table(&self) -> [u8; NUM_COLORS] {
        self.0
    }

    /// A random map that keeps 0 (black) and permutes 1..=9 (reference augmentation).
    pub fn random(rng: &mut impl Rng) -> ColorMap {
        let mut table = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
        table[1..].shuffle(rng);
        ColorMap(table)
    }

    /// The inverse permutation (the reference's `argsort` of the digit string).
    pub fn inverse(&self) -> ColorMap {
        let mut inv = [0u8; NUM_COLORS];
        for (old, &new) in self.0.iter().enumerate() {
            inv[usize::from(new)] = old as u8;
        }
        ColorMap(inv)
    }

    /// New colour of `c` (colours >= 10 are returned unchanged; valid grids have none).
    #[inline]
    pub fn apply(&self, c: u8) -> u8 {
        self.0.get(usize::from(c)).copied().unwrap_or(c)
    }
}

/// One augmentation: a colour map applied first, then a dihedral transform (the reference's
/// `dihedral_transform(mapping[grid], trans_id)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Augmentation {
    /// The dihedral transform.
    pub transform: Dihedral,
    /// The colour permutation.
    pub colors: ColorMap,
}

impl Augmentation {
    /// No change.
    pub fn identity() -> Augmentation {
        Augmentation {
            transform: Dihedral::Identity,
            colors: ColorMap::identity(),
        }
    }

    /// Applies the augmentation to a grid.
    pub fn apply(&self, g: &Grid) -> Grid {
        g.recolored(&self.colors).transformed(self.transform)
    }

    /// Undoes [`Augmentation::apply`]: inverse dihedral, then inverse colours.
    pub fn invert(&self, g: &Grid) -> Grid {
        g.transformed(self.transform.inverse())
            .recolored(&self.colors.inverse())
    }

    /// The name suffix `t<id>_<10 digits>`.
    pub fn suffix(&self) -> String {
        format!("t{}_{}", self.transform.id(), self.colors.digits())
    }
}

/// The puzzle name of a task variant: `<task>` for the original, `<task>_t<id>_<digits>` else.
pub fn puzzle_name(task_id: &str, aug: Option<&Augmentation>) -> String {
    match aug {
        None => task_id.to_string(),
        Some(a) => format!("{task_id}_{}", a.suffix()),
    }
}

/// Splits a puzzle name into its task id and augmentation (`None` for an original). The suffix
/// is parsed from the right and must be exactly `_t<0-7>_<permutation of 0-9>`; any other name
/// is an original task id (task ids may contain `_`).
pub fn parse_puzzle_name(name: &str) -> (&str, Option<Augmentation>) {
    let parsed = (|| {
        let (rest, digits) = name.rsplit_once('_')?;
        let (task, t) = rest.rsplit_once('_')?;
        let t = t.strip_prefix('t')?;
        if t.len() != 1 || task.is_empty() {
            return None;
        }
        let transform = Dihedral::from_id(t.parse().ok()?)?;
        let colors = ColorMap::from_digits(digits)?;
        Some((task, Augmentation { transform, colors }))
    })();
    match parsed {
        Some((task, aug)) => (task, Some(aug)),
        None => (name, None),
    }
}
#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::arc::test_util::random_grid;

    #[test]
    fn colour_maps_parse_invert_and_keep_black() {
        let m = ColorMap::from_digits("0947382615").unwrap();
        assert_eq!(m.digits(), "0947382615");
        assert_eq!(m.apply(1), 9);
        // Inverse = argsort of the digit string: new colour 9 came from old colour 1.
        assert_eq!(m.inverse().apply(9), 1);
        assert_eq!(m.inverse().inverse(), m);
        assert_eq!(ColorMap::from_digits("0123456788"), None); // not a permutation
        assert_eq!(ColorMap::from_digits("012345678"), None); // 9 digits
        assert_eq!(ColorMap::from_digits("01234567a9"), None);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let r = ColorMap::random(&mut rng);
            assert_eq!(r.apply(0), 0);
            assert!(ColorMap::from_table(r.table()).is_some());
        }
    }

    #[test]
    fn property_inverse_augmentation_recovers_every_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(2024);
        for _ in 0..200 {
            let grid = random_grid(&mut rng, 30);
            for t in Dihedral::ALL {
                let aug = Augmentation {
                    transform: t,
                    colors: ColorMap::random(&mut rng),
                };
                let out = aug.apply(&grid);
                let swapped = (out.height(), out.width()) == (grid.width(), grid.height());
                if t.swaps_shape() {
                    assert!(swapped);
                } else {
                    assert_eq!((out.height(), out.width()), (grid.height(), grid.width()));
                }
                assert_eq!(aug.invert(&out), grid, "{aug:?}");
                // The colour map alone and the dihedral alone invert too.
                assert_eq!(
                    grid.recolored(&aug.colors).recolored(&aug.colors.inverse()),
                    grid
                );
                let moved = grid.transformed(t);
                assert_eq!(moved.transformed(t.inverse()), grid);
            }
        }
    }

    #[test]
    fn puzzle_names_round_trip_and_allow_underscores() {
        let aug = Augmentation {
            transform: Dihedral::Rot270,
            colors: ColorMap::from_digits("0947382615").unwrap(),
        };
        let name = puzzle_name("Tetris_l6ab7fu64lvutswrtbk", Some(&aug));
        assert_eq!(name, "Tetris_l6ab7fu64lvutswrtbk_t3_0947382615");
        assert_eq!(
            parse_puzzle_name(&name),
            ("Tetris_l6ab7fu64lvutswrtbk", Some(aug))
        );
        assert_eq!(parse_puzzle_name("007bbfc7"), ("007bbfc7", None));
        assert_eq!(parse_puzzle_name("a_b_c"), ("a_b_c", None));
        assert_eq!(
            parse_puzzle_name("x_t8_0123456789"),
            ("x_t8_0123456789", None)
        );
        assert_eq!(
            parse_puzzle_name("x_t1_0123456788"),
            ("x_t1_0123456788", None)
        );
        assert_eq!(
            parse_puzzle_name("_t1_0123456789"),
            ("_t1_0123456789", None)
        );
        assert_eq!(puzzle_name("abc", None), "abc");
    }
}
