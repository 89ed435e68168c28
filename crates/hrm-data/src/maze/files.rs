//! Maze-Hard CSV files (`source,question,answer,rating`): the header and the validating reader.

use super::grid::{validate_answer, validate_question, MazeGrid};
use crate::error::{DataError, Result};
/// The header of every Maze-Hard CSV.
pub const CSV_HEADER: [&str; 4] = ["source", "question", "answer", "rating"];

/// The `source` column written by [`super::generate_maze_csvs`].
pub const GENERATED_SOURCE: &str = "hrm-maze-generate";

/// One validated CSV row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MazeRecord {
    /// 1-based line in the CSV file.
    pub line: usize,
    /// The question grid.
    pub question: MazeGrid,
    /// The answer grid.
    pub answer: MazeGrid,
}

pub(super) const CSV_HINT: &str = "a maze input folder holds train.csv and test.csv with the \
                                   header `source,question,answer,rating` (make one with `hrm data \
                                   maze-generate`)";

/// Reads and validates a Maze-Hard CSV: header, 4 fields per row, `N*N` characters of `# SGo`,
/// one `S` and one `G`, answer = question plus `o` on open cells, the same `N` on every row.
/// Errors name the file and line.
pub fn read_maze_csv(path: &std::path::Path) -> Result<Vec<MazeRecord>> {
    let mut reader = crate::csv::CsvReader::open(path, CSV_HINT)?;
    reader.expect_header(&CSV_HEADER)?;
    let mut rows: Vec<MazeRecord> = Vec::new();
    while let Some(rec) = reader.next_record()? {
        reader.expect_fields(&rec, 4)?;
        let at = |msg: String| DataError::line(path, rec.line, msg);
        let question = MazeGrid::parse(&rec.fields[1]).map_err(|m| at(format!("question: {m}")))?;
        let answer = MazeGrid::parse(&rec.fields[2]).map_err(|m| at(format!("answer: {m}")))?;
        validate_question(&question).map_err(at)?;
        validate_answer(&question, &answer).map_err(at)?;
        if let Some(first) = rows.first() {
            if first.question.side() != question.side() {
                return Err(at(format!(
                    "maze is {0}x{0} but line {1} is {2}x{2} (all mazes of a file must have one \
                     size)",
                    question.side(),
                    first.line,
                    first.question.side()
                )));
            }
        }
        rows.push(MazeRecord {
            line: rec.line,
            question,
            answer,
        });
    }
    if rows.is_empty() {
        return Err(DataError::line(path, 2, "no maze rows after the header"));
    }
    Ok(rows)
}
