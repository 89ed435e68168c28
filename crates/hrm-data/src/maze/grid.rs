//! The Maze-Hard cell alphabet (`# SGo` = tokens 1..=5, PAD 0) and square maze grids.

use std::fmt;

use crate::dihedral::Dihedral;
/// The reference's character set; character `CHARSET[k]` has token id `k + 1` (PAD = 0).
pub const CHARSET: &[u8; 5] = b"# SGo";

/// Vocabulary size of the encoded maze (PAD + 5 characters), as in the reference.
pub const VOCAB_SIZE: usize = CHARSET.len() + 1;

/// The padding token (never produced by a valid maze).
pub const PAD_ID: u8 = 0;
/// One maze cell; the discriminant is the token id of the reference's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cell {
    /// `#` (token 1).
    Wall = 1,
    /// space (token 2).
    Open = 2,
    /// `S` (token 3).
    Start = 3,
    /// `G` (token 4).
    Goal = 4,
    /// `o` (token 5): a cell of the path; only in answers and predictions.
    Path = 5,
}

impl Cell {
    /// The cell for a CSV character, or `None` outside `# SGo`.
    pub fn from_char(c: char) -> Option<Cell> {
        match c {
            '#' => Some(Cell::Wall),
            ' ' => Some(Cell::Open),
            'S' => Some(Cell::Start),
            'G' => Some(Cell::Goal),
            'o' => Some(Cell::Path),
            _ => None,
        }
    }

    /// The CSV character of the cell.
    pub fn to_char(self) -> char {
        char::from(CHARSET[self as usize - 1])
    }

    /// The token id (1..=5).
    pub fn token(self) -> u8 {
        self as u8
    }

    /// The cell for a token id, or `None` for PAD (0) and ids >= 6.
    pub fn from_token(t: u8) -> Option<Cell> {
        match t {
            1 => Some(Cell::Wall),
            2 => Some(Cell::Open),
            3 => Some(Cell::Start),
            4 => Some(Cell::Goal),
            5 => Some(Cell::Path),
            _ => None,
        }
    }
}

/// A square maze, row-major.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MazeGrid {
    pub(super) n: usize,
    pub(super) cells: Vec<Cell>,
}

/// The side `n` of a sequence of `len` cells, if `len = n * n` with `n >= 1`.
fn square_side(len: usize) -> Option<usize> {
    let n = (len as f64).sqrt().round() as usize;
    (n >= 1 && n * n == len).then_some(n)
}

impl MazeGrid {
    /// A grid from its cells; `cells.len()` must be a perfect square.
    pub fn from_cells(cells: Vec<Cell>) -> std::result::Result<MazeGrid, String> {
        let n = square_side(cells.len()).ok_or_else(|| {
            format!(
                "{} cells is not a square grid (N*N for some N >= 1)",
                cells.len()
            )
        })?;
        Ok(MazeGrid { n, cells })
    }

    /// Parses a CSV maze string (`N*N` characters of `# SGo`, row-major).
    pub fn parse(text: &str) -> std::result::Result<MazeGrid, String> {
        let chars: Vec<char> = text.chars().collect();
        let n = square_side(chars.len()).ok_or_else(|| {
            format!(
                "length {} is not N*N for any N >= 1 (30x30 mazes have 900)",
                chars.len()
            )
        })?;
        let cells = chars
            .iter()
            .enumerate()
            .map(|(i, &ch)| {
                Cell::from_char(ch).ok_or_else(|| {
                    format!(
                        "character {ch:?} at row {}, col {} is not one of \"# SGo\"",
                        i / n,
                        i % n
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MazeGrid { n, cells })
    }

    /// Parses a maze drawn as text: N non-empty lines of N characters of `# SGo` each (blank
    /// lines are skipped). A row of another length is an error naming it, never reflowed into
    /// other rows.
    pub fn parse_rows(text: &str) -> std::result::Result<MazeGrid, String> {
        let rows: Vec<&str> = text
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty())
            .collect();
        let n = rows.len();
        if let Some((i, r)) = rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.chars().count() != n)
        {
            return Err(format!(
                "row {} has {} characters, but a maze of {n} rows needs {n} in every row",
                i + 1,
                r.chars().count()
            ));
        }
        Self::parse(&rows.concat())
    }

    /// Decodes token ids (1..=5, row-major); PAD or unknown ids are an error naming the cell.
    pub fn from_tokens(tokens: &[u8]) -> std::result::Result<MazeGrid, String> {
        let n = square_side(tokens.len())
            .ok_or_else(|| format!("{} tokens is not a square grid", tokens.len()))?;
        let cells = tokens
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                Cell::from_token(t).ok_or_else(|| {
                    format!(
                        "token {t} at row {}, col {} is not a maze cell (1..=5)",
                        i / n,
                        i % n
                    )
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(MazeGrid { n, cells })
    }

    /// Side length `n`.
    pub fn side(&self) -> usize {
        self.n
    }

    /// The cells, row-major.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The CSV string (`N*N` characters).
    pub fn to_text(&self) -> String {
        self.cells.iter().map(|c| c.to_char()).collect()
    }

    /// The token ids (row-major), as stored in `all__inputs.npy` / `all__labels.npy`.
    pub fn to_tokens(&self) -> Vec<u8> {
        self.cells.iter().map(|c| c.token()).collect()
    }

    /// Indices of every cell equal to `kind`.
    pub fn positions(&self, kind: Cell) -> Vec<usize> {
        (0..self.cells.len())
            .filter(|&i| self.cells[i] == kind)
            .collect()
    }

    /// Which cells can be walked on (everything but walls).
    pub fn passable(&self) -> Vec<bool> {
        self.cells.iter().map(|&c| c != Cell::Wall).collect()
    }

    /// The grid under dihedral transform `t` (square, so the shape is kept).
    pub fn transformed(&self, t: Dihedral) -> MazeGrid {
        MazeGrid {
            n: self.n,
            cells: t.apply(&self.cells, self.n, self.n),
        }
    }
}

impl fmt::Display for MazeGrid {
    /// One text row per maze row (for humans; the CSV format is [`MazeGrid::to_text`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for row in self.cells.chunks(self.n) {
            let line: String = row.iter().map(|c| c.to_char()).collect();
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Checks a question (exactly one `S`, one `G`, no `o`) and returns `(start, goal)` indices.
pub fn validate_question(q: &MazeGrid) -> std::result::Result<(usize, usize), String> {
    let starts = q.positions(Cell::Start);
    let goals = q.positions(Cell::Goal);
    if starts.len() != 1 {
        return Err(format!(
            "question has {} `S` cells, expected exactly 1",
            starts.len()
        ));
    }
    if goals.len() != 1 {
        return Err(format!(
            "question has {} `G` cells, expected exactly 1",
            goals.len()
        ));
    }
    if let Some(&p) = q.positions(Cell::Path).first() {
        let n = q.side();
        return Err(format!(
            "question has an `o` at row {}, col {} (path marks belong in the answer only)",
            p / n,
            p % n
        ));
    }
    Ok((starts[0], goals[0]))
}

/// Checks that `answer` equals `question` except for `o` placed on open cells.
pub fn validate_answer(question: &MazeGrid, answer: &MazeGrid) -> std::result::Result<(), String> {
    if question.side() != answer.side() {
        return Err(format!(
            "answer is {0}x{0} but question is {1}x{1}",
            answer.side(),
            question.side()
        ));
    }
    let n = question.side();
    for (i, (&q, &a)) in question.cells().iter().zip(answer.cells()).enumerate() {
        let ok = q == a || (q == Cell::Open && a == Cell::Path);
        if !ok {
            return Err(format!(
                "answer has {:?} at row {}, col {} where the question has {:?} (the answer may \
                 only add `o` on open cells)",
                a.to_char(),
                i / n,
                i % n,
                q.to_char()
            ));
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_matches_the_reference_encoding() {
        for (k, ch) in "# SGo".chars().enumerate() {
            let cell = Cell::from_char(ch).unwrap();
            assert_eq!(cell.token() as usize, k + 1);
            assert_eq!(cell.to_char(), ch);
            assert_eq!(Cell::from_token(cell.token()), Some(cell));
        }
        assert_eq!(Cell::from_token(PAD_ID), None);
        assert_eq!(Cell::from_token(6), None);
        assert_eq!(Cell::from_char('.'), None);
        assert_eq!(VOCAB_SIZE, 6);
    }

    #[test]
    fn parse_rows_needs_n_characters_in_every_row() {
        let g = MazeGrid::parse_rows("S #\r\n   \n\n  G\n").unwrap();
        assert_eq!((g.side(), g.to_tokens().len()), (3, 9));
        // 36 characters in all, but ragged rows: an error, not another maze
        let ragged = "#####\n#S    #\n#    #\n#   G #\n#####\n#######\n";
        let e = MazeGrid::parse_rows(ragged).unwrap_err();
        assert!(
            e.contains("row 1 has 5 characters") && e.contains("needs 6"),
            "{e}"
        );
    }

    #[test]
    fn parse_rejects_bad_strings() {
        let e = MazeGrid::parse("S  G ").unwrap_err();
        assert!(e.contains("length 5"), "{e}");
        let e = MazeGrid::parse("S  x").unwrap_err();
        assert!(e.contains("'x'") && e.contains("row 1, col 1"), "{e}");
        let q = MazeGrid::parse("S  S").unwrap();
        assert!(validate_question(&q).unwrap_err().contains("2 `S`"));
        let q = MazeGrid::parse("S o ").unwrap();
        assert!(validate_question(&q).unwrap_err().contains("0 `G`"));
        let q = MazeGrid::parse("S oG").unwrap();
        assert!(validate_question(&q)
            .unwrap_err()
            .contains("`o` at row 1, col 0"));
        let q = MazeGrid::parse("S #G").unwrap();
        let a = MazeGrid::parse("So#G").unwrap();
        assert!(validate_answer(&q, &a).is_ok());
        let a = MazeGrid::parse("S oG").unwrap();
        let e = validate_answer(&q, &a).unwrap_err();
        assert!(e.contains("row 1, col 0") && e.contains("'#'"), "{e}");
    }
}
