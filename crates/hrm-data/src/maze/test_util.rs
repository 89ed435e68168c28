//! Maze literals shared by the maze unit tests.

/// Joins rows into a CSV maze string.
pub(super) fn maze(rows: &[&str]) -> String {
    rows.concat()
}
