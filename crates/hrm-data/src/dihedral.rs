//! The 8 symmetries of a rectangle grid (the dihedral group D4) and their inverses.
//!
//! Mirrors sapientinc/HRM:dataset/common.py (`dihedral_transform`, `inverse_dihedral_transform`,
//! `DIHEDRAL_INVERSE`): the same id numbering, so puzzle names such as `<task>_t3_0123456789`
//! written by either implementation mean the same transform. Used by the Maze builder (`--aug`)
//! and by the ARC builder and ARC voting (docs/data.md, "ARC").
//!
//! Grids are row-major slices with an explicit shape `(h, w)`. For an `h x w` input `A` the
//! output `out` (shape given in the table) is, with `i` the output row and `j` the output column:
//!
//! | id | name                                    | out shape | `out[i][j] =`          | inverse |
//! |----|-----------------------------------------|-----------|------------------------|---------|
//! | 0  | identity                                | h x w     | `A[i][j]`              | 0       |
//! | 1  | rot90 counter-clockwise (`np.rot90` k=1)| w x h     | `A[j][w-1-i]`          | 3       |
//! | 2  | rot180                                  | h x w     | `A[h-1-i][w-1-j]`      | 2       |
//! | 3  | rot270 (= rot90 clockwise)              | w x h     | `A[h-1-j][i]`          | 1       |
//! | 4  | flip left-right                         | h x w     | `A[i][w-1-j]`          | 4       |
//! | 5  | flip up-down                            | h x w     | `A[h-1-i][j]`          | 5       |
//! | 6  | transpose                               | w x h     | `A[j][i]`              | 6       |
//! | 7  | anti-transpose (flip-lr of rot90)       | w x h     | `A[h-1-j][w-1-i]`      | 7       |

/// One of the 8 dihedral transforms, numbered exactly as the reference's `dihedral_transform`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dihedral {
    /// id 0: no change.
    Identity = 0,
    /// id 1: rotate 90 degrees counter-clockwise (NumPy `rot90`, k = 1).
    Rot90 = 1,
    /// id 2: rotate 180 degrees.
    Rot180 = 2,
    /// id 3: rotate 270 degrees counter-clockwise (90 clockwise).
    Rot270 = 3,
    /// id 4: mirror columns (NumPy `fliplr`).
    FlipLr = 4,
    /// id 5: mirror rows (NumPy `flipud`).
    FlipUd = 5,
    /// id 6: reflect on the main diagonal (`arr.T`).
    Transpose = 6,
    /// id 7: reflect on the anti-diagonal (`fliplr(rot90(arr))`).
    AntiTranspose = 7,
}

/// Reference table `DIHEDRAL_INVERSE`: index = transform id, value = id of its inverse.
pub const DIHEDRAL_INVERSE: [u8; 8] = [0, 3, 2, 1, 4, 5, 6, 7];

impl Dihedral {
    /// All 8 transforms in id order (the order of the Maze `--aug` variants).
    pub const ALL: [Dihedral; 8] = [
        Dihedral::Identity,
        Dihedral::Rot90,
        Dihedral::Rot180,
        Dihedral::Rot270,
        Dihedral::FlipLr,
        Dihedral::FlipUd,
        Dihedral::Transpose,
        Dihedral::AntiTranspose,
    ];

    /// The transform with reference id `id` (0..8), or `None` for any other value.
    pub fn from_id(id: u8) -> Option<Dihedral> {
        Dihedral::ALL.get(usize::from(id)).copied()
    }

    /// The reference id (0..8).
    pub fn id(self) -> u8 {
        self as u8
    }

    /// The transform that undoes `self` (reference `DIHEDRAL_INVERSE`).
    pub fn inverse(self) -> Dihedral {
        // Rotations by 90 and 270 degrees undo each other; every other element of D4 is its own
        // inverse (the reflections and the half turn have order 2).
        Dihedral::ALL[usize::from(DIHEDRAL_INVERSE[self as usize])]
    }

    /// Whether the transform swaps the two dimensions (ids 1, 3, 6, 7).
    pub fn swaps_shape(self) -> bool {
        matches!(
            self,
            Dihedral::Rot90 | Dihedral::Rot270 | Dihedral::Transpose | Dihedral::AntiTranspose
        )
    }

    /// Output shape `(rows, cols)` for an `h x w` input.
    pub fn output_shape(self, h: usize, w: usize) -> (usize, usize) {
        if self.swaps_shape() {
            (w, h)
        } else {
            (h, w)
        }
    }

    /// For output cell `(i, j)` of an `h x w` input, the input cell `(r, c)` it copies
    /// (the index formulas of the module table).
    #[inline]
    pub fn source_cell(self, h: usize, w: usize, i: usize, j: usize) -> (usize, usize) {
        match self {
            Dihedral::Identity => (i, j),
            Dihedral::Rot90 => (j, w - 1 - i),
            Dihedral::Rot180 => (h - 1 - i, w - 1 - j),
            Dihedral::Rot270 => (h - 1 - j, i),
            Dihedral::FlipLr => (i, w - 1 - j),
            Dihedral::FlipUd => (h - 1 - i, j),
            Dihedral::Transpose => (j, i),
            Dihedral::AntiTranspose => (h - 1 - j, w - 1 - i),
        }
    }

    /// Applies the transform to the row-major `h x w` grid `cells`; returns the row-major output,
    /// whose shape is [`Dihedral::output_shape`].
    ///
    /// # Panics
    /// If `cells.len() != h * w` (a programming error: callers build grids with their shape).
    pub fn apply<T: Copy>(self, cells: &[T], h: usize, w: usize) -> Vec<T> {
        assert_eq!(
            cells.len(),
            h * w,
            "grid of {} cells is not {h} x {w}",
            cells.len()
        );
        let (oh, ow) = self.output_shape(h, w);
        let mut out = Vec::with_capacity(oh * ow);
        for i in 0..oh {
            for j in 0..ow {
                let (r, c) = self.source_cell(h, w, i, j);
                out.push(cells[r * w + c]);
            }
        }
        out
    }

    /// Undoes [`Dihedral::apply`]: `t.unapply(&t.apply(x, h, w), h, w) == x`, where `(h, w)` is
    /// the shape of the ORIGINAL grid (the transformed one has `output_shape(h, w)`).
    pub fn unapply<T: Copy>(self, cells: &[T], h: usize, w: usize) -> Vec<T> {
        let (th, tw) = self.output_shape(h, w);
        self.inverse().apply(cells, th, tw)
    }
}

impl std::fmt::Display for Dihedral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t{}", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A 2 x 3 grid with distinct values: `[[0, 1, 2], [3, 4, 5]]`.
    const A: [u8; 6] = [0, 1, 2, 3, 4, 5];

    #[test]
    fn matches_numpy_on_a_2x3_grid() {
        // Expected values written out from NumPy semantics:
        // rot90(A)        = [[2, 5], [1, 4], [0, 3]]
        // rot90(A, 2)     = [[5, 4, 3], [2, 1, 0]]
        // rot90(A, 3)     = [[3, 0], [4, 1], [5, 2]]
        // fliplr(A)       = [[2, 1, 0], [5, 4, 3]]
        // flipud(A)       = [[3, 4, 5], [0, 1, 2]]
        // A.T             = [[0, 3], [1, 4], [2, 5]]
        // fliplr(rot90 A) = [[5, 2], [4, 1], [3, 0]]
        let expected: [&[u8]; 8] = [
            &[0, 1, 2, 3, 4, 5],
            &[2, 5, 1, 4, 0, 3],
            &[5, 4, 3, 2, 1, 0],
            &[3, 0, 4, 1, 5, 2],
            &[2, 1, 0, 5, 4, 3],
            &[3, 4, 5, 0, 1, 2],
            &[0, 3, 1, 4, 2, 5],
            &[5, 2, 4, 1, 3, 0],
        ];
        for t in Dihedral::ALL {
            assert_eq!(
                t.apply(&A, 2, 3),
                expected[t.id() as usize],
                "transform {t}"
            );
            let shape = t.output_shape(2, 3);
            assert_eq!(shape, if t.swaps_shape() { (3, 2) } else { (2, 3) });
        }
    }

    #[test]
    fn inverse_table_is_the_group_inverse() {
        for t in Dihedral::ALL {
            assert_eq!(Dihedral::from_id(t.id()), Some(t));
            let inv = t.inverse();
            assert_eq!(inv.id(), DIHEDRAL_INVERSE[t.id() as usize]);
            let (h2, w2) = t.output_shape(2, 3);
            // Composing with the inverse gives the identity on a grid with distinct values.
            assert_eq!(inv.apply(&t.apply(&A, 2, 3), h2, w2), A.to_vec(), "{t}");
        }
        assert_eq!(Dihedral::from_id(8), None);
        let swapping: Vec<u8> = Dihedral::ALL
            .iter()
            .filter(|t| t.swaps_shape())
            .map(|t| t.id())
            .collect();
        assert_eq!(swapping, vec![1, 3, 6, 7]);
    }

    #[test]
    fn property_inverse_of_transform_is_identity_on_random_grids() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..300 {
            let h = rng.random_range(1..=30);
            let w = rng.random_range(1..=30);
            let grid: Vec<u8> = (0..h * w).map(|_| rng.random_range(0..10)).collect();
            for t in Dihedral::ALL {
                let out = t.apply(&grid, h, w);
                assert_eq!(out.len(), h * w);
                assert_eq!(t.unapply(&out, h, w), grid, "t={t} shape {h}x{w}");
            }
        }
    }

    #[test]
    fn the_eight_transforms_are_distinct_elements_of_d4() {
        // On a square grid with distinct values the 8 images are pairwise different, and the
        // set is closed under composition (it is a group).
        let n = 4usize;
        let grid: Vec<usize> = (0..n * n).collect();
        let images: Vec<Vec<usize>> = Dihedral::ALL.iter().map(|t| t.apply(&grid, n, n)).collect();
        for a in 0..8 {
            for b in 0..a {
                assert_ne!(images[a], images[b]);
            }
        }
        for s in Dihedral::ALL {
            for t in Dihedral::ALL {
                let composed = t.apply(&s.apply(&grid, n, n), n, n);
                assert!(images.contains(&composed), "{s} then {t} left the group");
            }
        }
    }
}
